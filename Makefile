# The commands a person types. Each creates or reuses the virtual environment .venv first.
#   make run    the main job: execute the course in a real Jupyter kernel
#   make test   the whole test suite (what CI runs)
#   make lab    JupyterLab on the chapters
#   make readme README.md from nbs/index.ipynb
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lab readme export clean-nbs

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlops-course chapters

test: $(STAMP)
	MLOPS_COURSE_CHECKS=strict $(BIN)/nbdev-test --n-workers 2
	$(BIN)/pytest

lab: $(STAMP)
	$(BIN)/jupyter lab nbs

export: $(STAMP)
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

readme: $(STAMP)
	$(BIN)/python tools/readme.py
