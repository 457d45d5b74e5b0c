"""Every chapter runs top to bottom in a real Jupyter kernel, and its exercises check what they should.

Each chapter is executed twice in the suite: with its solutions by `nbdev-test` (the Makefile sets
MLOPS_COURSE_CHECKS=strict, so a check that fails fails the notebook), and here as the student copy, solutions
stripped, graded as one class by `mlops-course grade`'s engine (tests/test_grading.py), where every check must say ✗.
The `chapters` command itself is exercised on two chapters and on a broken one."""
import shutil

import nbformat

from mlops_course.exercises import SOLUTION_BEGIN, collect_checks
from mlops_course.notebooks import find_chapters
from conftest import ROOT, run_cli

CHAPTERS = [p for p in find_chapters(ROOT/"nbs") if not p.name.startswith("00_")]


def _has_exercises(chapter) -> bool:
    return any(SOLUTION_BEGIN in c.source for c in nbformat.read(chapter, as_version=4).cells if c.cell_type == "code")


def test_every_chapter_has_exercises():
    assert [c.name for c in CHAPTERS if not _has_exercises(c)] == []


def test_chapters_command_runs_chapters_side_by_side(tmp_path, work_env):
    r = run_cli("chapters", "01", "14", "--workers", "2", "--out", tmp_path/"out", env=work_env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed, 0 failed" in r.stdout and "2 at a time" in r.stdout
    for name in ("01_what_is_ml", "14_cli"):
        checks = collect_checks(tmp_path/"out"/f"{name}.ipynb")
        assert len({c["exercise"] for c in checks}) >= 3 and all(c["passed"] for c in checks), name


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
