"Every chapter runs top to bottom in a real Jupyter kernel; its exercises pass with the solutions and fail without them."
import shutil

import nbformat
import pytest

from mlops_course.exercises import SOLUTION_BEGIN, collect_checks
from mlops_course.notebooks import execute_notebooks, find_chapters
from conftest import ROOT, run_cli

CHAPTERS = [p for p in find_chapters(ROOT/"nbs") if not p.name.startswith("00_")]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    "All chapters executed once through the real `mlops-course chapters` command."
    import os
    out = tmp_path_factory.mktemp("executed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_COURSE_")}
    env["MLOPS_COURSE_WORK_DIR"] = str(out/"work")
    before = _files(ROOT/"nbs")
    r = run_cli("chapters", *[p.stem for p in CHAPTERS], "--out", out, env=env)
    return r, out, _files(ROOT/"nbs") - before


def _files(folder):
    return {p.relative_to(folder) for p in folder.rglob("*") if ".ipynb_checkpoints" not in p.parts}


def test_every_chapter_runs_in_a_real_kernel(executed):
    r, out, written = executed
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(CHAPTERS)} passed, 0 failed" in r.stdout
    for p in CHAPTERS: assert (out/p.name).is_file()
    assert not written, f"chapters wrote beside the notebooks (e.g. an MLflow ./mlruns): {sorted(map(str, written))[:5]}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_exercises_pass_with_solutions(executed, chapter):
    _, out, _ = executed
    src = nbformat.read(chapter, as_version=4)
    if not any(SOLUTION_BEGIN in c.source for c in src.cells if c.cell_type == "code"): pytest.skip("no exercises")
    checks = collect_checks(out/chapter.name)
    assert len({c["exercise"] for c in checks}) >= 3, f"{chapter.name} has fewer than three exercises"
    assert all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]


def test_student_copies_run_and_fail_every_check(tmp_path, work_env, monkeypatch):
    "The stripped copies hold no solution, still run to the end, and every check says ✗."
    names = [p.stem for p in CHAPTERS]
    r = run_cli("exercises", *names, "--out", tmp_path/"student", env=work_env)
    assert r.returncode == 0, r.stderr
    with_exercises = []
    for chapter in CHAPTERS:
        student = tmp_path/"student"/chapter.name
        lines = [ln.strip() for c in nbformat.read(student, as_version=4).cells for ln in c.source.splitlines()]
        assert SOLUTION_BEGIN not in lines
        src = nbformat.read(chapter, as_version=4)
        if any(SOLUTION_BEGIN in c.source for c in src.cells if c.cell_type == "code"): with_exercises.append(student)
    monkeypatch.setenv("MLOPS_COURSE_WORK_DIR", work_env["MLOPS_COURSE_WORK_DIR"])  # the kernels inherit it
    for run in execute_notebooks(with_exercises, tmp_path/"executed", cwd=ROOT/"nbs", workers=2):
        assert run.status == "ok", f"{run.notebook.name}: {run.error} at cell {run.cell}"
        checks = collect_checks(run.output)
        assert checks and not any(c["passed"] for c in checks), run.notebook.name


def test_a_failing_chapter_is_reported_with_its_cell(tmp_path, work_env):
    nbs = tmp_path/"nbs"
    nbs.mkdir()
    shutil.copy(ROOT/"nbs"/"00_core.ipynb", nbs/"01_fine.ipynb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('the data is gone')")],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}})
    nbformat.write(nb, nbs/"02_broken.ipynb")
    r = run_cli("chapters", "--nbs", nbs, "--out", tmp_path/"out", env=work_env)
    assert r.returncode == 1
    assert "1 passed, 1 failed" in r.stdout
    assert "02_broken" in r.stdout and "In [2]" in r.stdout and "ValueError: the data is gone" in r.stdout
    # the executed copy keeps the traceback for the student to read
    executed = nbformat.read(tmp_path/"out"/"02_broken.ipynb", as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code" and any(o.get("ename") == "ValueError" for o in c.outputs)]
    assert [c.execution_count for c in failed] == [2]
