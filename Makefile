# The commands a person types. Each creates or reuses the virtual environment .venv first.
#   make run      the main job: the course pipeline, tracked in MLflow
#   make test     the whole test suite (what CI runs)
#   make ui       the MLflow UI on 127.0.0.1:5000
#   make chapters every chapter executed in a real Jupyter kernel
#   make lab      JupyterLab on the chapters
#   make readme README.md from nbs/index.ipynb
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test ui chapters lab readme export

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlops-course run

ui: $(STAMP)
	$(BIN)/mlops-course ui

chapters: $(STAMP)
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
