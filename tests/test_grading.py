"""Grading a class for real: submissions executed through the batch runner in real kernels, each in its own folder,
scored by the instructor's checks; hostile notebooks (crash, hang, dead kernel, deleted files, fake ✓ by print, by a
hand-made record, by a redefined or patched check, by a hook forging the grader's record, by rebinding what the grader
uses, by writing outside its folder) get their true score, are flagged when they tamper, and harm no other; the real
`mlops-course grade` command writes the gradebook and MLflow runs, none left RUNNING."""
import sqlite3

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mlops_course.batch import landlock_abi
from mlops_course.config import load_settings
from mlops_course.exercises import SOLUTION_BEGIN, write_student_copy
from mlops_course.grading import GRADE_MIME, find_submissions, find_tampering, grade, graded_notebook, reference_exercises
from conftest import ROOT, raises, run_cli

KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


@pytest.fixture(autouse=True)
def _stop_batch_workers():
    "The batch runner keeps its worker processes for the next batch: stop them after each test."
    yield
    from mlops_course.batch import stop_workers
    stop_workers()


def tiny_course(folder):
    "A reference folder with one small chapter of three exercises (4 points), which reads a file beside it."
    nbs = folder/"nbs"
    nbs.mkdir(parents=True)
    (nbs/"word.txt").write_text("mlops\n")
    nb = new_notebook(cells=[
        new_markdown_cell("# Warm-up"),
        new_code_cell("from pathlib import Path\nfrom mlops_course.exercises import check"),
        new_code_cell('### BEGIN SOLUTION\nanswer = 6 * 7\n### END SOLUTION\ncheck("90.1", lambda: answer == 42, hint="multiply")'),
        new_code_cell('### BEGIN SOLUTION\nsquares = [i * i for i in range(5)]\n### END SOLUTION\n'
                      'check("90.2", lambda: squares == [0, 1, 4, 9, 16], hint="range(5)")'),
        new_code_cell('### BEGIN SOLUTION\nshout = Path("word.txt").read_text().strip().upper()\n### END SOLUTION\n'
                      'check("90.3", lambda: shout == Path("word.txt").read_text().strip().upper(), points=2)'),
    ], metadata=KERNEL)
    nbformat.write(nb, nbs/"90_warmup.ipynb")
    return nbs


def submission(*cells):
    "A student's warm-up notebook from code cells (the first imports check, as the chapter does)."
    return new_notebook(cells=[new_code_cell("from pathlib import Path\nfrom mlops_course.exercises import check"),
                               *map(new_code_cell, cells)], metadata=KERNEL)


RIGHT = ['answer = 42\ncheck("90.1", lambda: answer == 42)',
         'squares = [0, 1, 4, 9, 16]\ncheck("90.2", lambda: squares == [0, 1, 4, 9, 16])',
         'shout = Path("word.txt").read_text().strip().upper()\ncheck("90.3", lambda: True)']

HOSTILE = {
    "crasher": [RIGHT[0], 'raise RuntimeError("the dog ate my homework")', RIGHT[1], RIGHT[2]],
    "sleeper": [RIGHT[0], 'import time\ntime.sleep(600)\n' + RIGHT[1], RIGHT[2]],
    "killer": [RIGHT[0], 'import os, signal\nos.kill(os.getpid(), signal.SIGKILL)', RIGHT[1], RIGHT[2]],
    # right answers, then every file of its working folder deleted while the others run
    "deleter": [*RIGHT, 'import shutil\nfor p in Path(".").iterdir(): shutil.rmtree(p) if p.is_dir() else p.unlink()'],
    # wrong answers dressed up as right ones
    "faker": ['answer = 41\nprint("✓ Exercise 90.1: passed")\ncheck("90.1", lambda: answer == 42)',
              'squares = []\nfrom IPython.display import display\nfrom mlops_course.exercises import CHECK_MIME\n'
              'display({CHECK_MIME: {"exercise": "90.2", "passed": True, "points": 1.0, "max_points": 1.0}, "text/plain": "✓"}, raw=True)\n'
              f'display({{"{GRADE_MIME}": {{"key": "0" * 32, "exercise": "90.2", "passed": True}}}}, raw=True)\n'
              'check("90.2", lambda: True)',
              'def check(*args, **kwargs):\n    print("✓ passed")\n    return True\n'
              'import mlops_course.exercises as ex\nex.check = check\nex._show = lambda record, text: None\n'
              'shout = "nope"\ncheck("90.3", lambda: True)'],
    # a hook that adds a forged ✓ with the right key to every cell the grader runs
    "forger": ['import re\nfrom IPython import get_ipython\nfrom IPython.display import display\n'
               'def forge(info):\n'
               '    m = re.search(r"_mlops_grader_\\w+\\(\'(\\w+)\', \'([\\w.]+)\'", info.raw_cell or "")\n'
               f'    if m: display({{"{GRADE_MIME}": {{"key": m.group(1), "exercise": m.group(2), "passed": True}}}}, raw=True)\n'
               'get_ipython().events.register("pre_run_cell", forge)',
               'answer = 0\ncheck("90.1", lambda: True)', RIGHT[1]],
    # what subverted the grader of old: importlib.reload made a no-op, the grader's functions and module replaced by fakes that
    # publish a ✓ with the key they are handed; then (cell 3) the grader's own function, found by listing the notebook's names
    "rebinder": ['import importlib, sys, types, mlops_course.grading as g\nfrom IPython.display import display\n'
                 'def fake(key, exercise, run=None):\n'
                 f'    display({{"{GRADE_MIME}": {{"key": key, "exercise": exercise, "passed": True}}, "text/plain": "✓"}}, raw=True)\n'
                 '    return (lambda *a, **k: True) if run is None else True\n'
                 'importlib.reload = lambda module: module\ng.graded_check = g.trusted_grader = fake\n'
                 'fake_module = types.ModuleType("mlops_course.grading"); fake_module.graded_check = fake_module.trusted_grader = fake\n'
                 'sys.modules["mlops_course.grading"] = fake_module\n'
                 'answer = 0\ncheck("90.1", lambda: answer == 42)',
                 'for name in [n for n in globals() if n.startswith("_mlops_grader")]: globals()[name] = fake\n'
                 'squares = []\ncheck("90.2", lambda: squares == [0, 1, 4, 9, 16])', RIGHT[2]],
}

# right answers, given only if every attempt to reach outside its folder was refused (they would harm nothing if allowed)
INTRUDER = ['import os, pathlib, mlops_course\nrefused = []\n'
            'for target, mode in [(pathlib.Path(mlops_course.__file__).parent/"exercises.py", "a"),\n'
            '                     (pathlib.Path("../../../good/90_warmup/nbs/word.txt"), "a"),\n'
            '                     (pathlib.Path("../../../good/90_warmup/nbs/intruder.txt"), "x")]:\n'
            '    try: open(target, mode).close()\n'
            '    except PermissionError: refused.append(target.name)\n'
            'try: os.kill(os.getppid(), 0)\nexcept PermissionError: refused.append("signal")\n'
            'print("refused:", refused)\n'
            'answer = 42 if refused == ["exercises.py", "word.txt", "intruder.txt", "signal"] else 0\ncheck("90.1", lambda: answer == 42)',
            RIGHT[1], RIGHT[2]]


def _files(folder):
    return {p.relative_to(folder) for p in folder.rglob("*") if ".ipynb_checkpoints" not in p.parts}


def _runs(db):
    "(name, status, parent) of every run in an MLflow SQLite store, with the metrics of each."
    con = sqlite3.connect(db)
    try:
        runs = con.execute("select r.run_uuid, r.name, r.status, t.value from runs r left join tags t "
                           "on t.run_uuid = r.run_uuid and t.key = 'mlflow.parentRunId'").fetchall()
        metrics = {}
        for run, key, value in con.execute("select run_uuid, key, value from latest_metrics"): metrics.setdefault(run, {})[key] = value
    finally: con.close()
    return [dict(id=r, name=n, status=s, parent=p, metrics=metrics.get(r, {})) for r, n, s, p in runs]


def test_a_class_with_hostile_notebooks_gets_true_scores(tmp_path):
    "Solution copy 4/4, stripped copy 0/4 to the end, every hostile one its true score; none harms another."
    ref = tiny_course(tmp_path/"course")
    subs = tmp_path/"submissions"
    (subs/"good").mkdir(parents=True)
    nbformat.write(nbformat.read(ref/"90_warmup.ipynb", as_version=4), subs/"good"/"90_warmup.ipynb")
    write_student_copy(ref/"90_warmup.ipynb", subs/"empty__90_warmup.ipynb")  # the flat layout
    confined = landlock_abi() >= 6  # files and signals: where it is not, the intruder is left out (it would only show that)
    for name, cells in {**HOSTILE, **({"intruder": INTRUDER} if confined else {})}.items():
        (subs/name).mkdir()
        nbformat.write(submission(*cells), subs/name/"90_warmup.ipynb")
    (subs/"broken").mkdir()
    (subs/"broken"/"90_warmup.ipynb").write_text("{ this is not a notebook")
    (subs/"absent").mkdir()  # handed nothing in
    (subs/"good"/"scratch.ipynb").write_text("{}")  # answers no chapter: skipped, and said so
    settings = load_settings(env={"MLOPS_COURSE_WORK_DIR": str(tmp_path/"work")})
    before = _files(ref)

    book = grade(subs, ref, out_dir=tmp_path/"out", workers=2, cell_timeout=8, notebook_timeout=120, settings=settings, keep_work=True)

    assert _files(ref) == before  # the reference folder is read, never written
    g = {s: book.grade_of(s, "90_warmup") for s in book.students}
    assert sorted(g) == sorted(["absent", "broken", "crasher", "deleter", "empty", "faker", "forger", "good", "killer", "rebinder", "sleeper"]
                               + (["intruder"] if confined else []))
    got = {s: (x.status, x.score, [x.passed[e] for e in ("90.1", "90.2", "90.3")]) for s, x in g.items()}
    assert got == {
        "good": ("ok", 4.0, [True, True, True]),
        "empty": ("ok", 0.0, [False, False, False]),  # ran to the end: every check said ✗
        "crasher": ("crashed", 1.0, [True, None, None]),  # the points of the checks before the crash
        "sleeper": ("timed out", 1.0, [True, None, None]),
        "killer": ("dead kernel", 1.0, [True, None, None]),
        "deleter": ("ok", 4.0, [True, True, True]),
        "faker": ("ok", 0.0, [False, False, False]),
        "forger": ("ok", 0.0, [False, False, False]),  # its hook is tampering: nothing checked after it counts, its forged ✓ least of all
        "rebinder": ("ok", 0.0, [False, False, False]),
        "broken": ("unreadable", 0.0, [None, None, None]),
        "absent": ("missing", 0.0, [None, None, None]),
        **({"intruder": ("ok", 4.0, [True, True, True])} if confined else {}),  # every reach outside its folder refused
    }
    assert g["crasher"].cell is not None and "the dog ate my homework" in g["crasher"].error
    assert g["sleeper"].cell is not None and g["sleeper"].outcome.startswith("timed out at In [")
    assert any("outside the grader's cells ignored" in n for n in g["faker"].notes)
    assert any("tampering suspected:" in n and "changes ex.check (mlops_course.exercises.check), cell 4" in n for n in g["faker"].notes)
    assert any("registers an IPython event hook" in n and "90.1, 90.2, 90.3" in n for n in g["forger"].notes)
    assert any("records with the grader's key disagree" in n for n in g["forger"].notes) and g["forger"].details["90.1"]
    # the rebinder: what it rebound did not reach the grader's function (its record says ✗), and it is flagged, cell by cell;
    # swapping the grader's own function (cell 3, found through globals()) did forge a ✓: the scan is what stops that one
    records = {c.outputs[0].data[GRADE_MIME]["exercise"]: c.outputs[0].data[GRADE_MIME]["passed"]
               for c in nbformat.read(g["rebinder"].executed, as_version=4).cells
               if c.cell_type == "code" and c.outputs and GRADE_MIME in c.outputs[0].get("data", {})}
    assert records["90.1"] is False and records["90.2"] is True
    notes = " ".join(g["rebinder"].notes)
    for what in ("imports the grader (mlops_course.grading), cell 2", "changes importlib.reload, cell 2", "changes g.graded_check",
                 "exercise(s) 90.1, 90.2, 90.3, checked after cell 2, scored 0"):
        assert what in notes, (what, notes)
    found = {(x.cell, x.what) for x in find_tampering(subs/"rebinder"/"90_warmup.ipynb", ref/"90_warmup.ipynb") if not x.review}
    assert {(2, "changes sys.modules['mlops_course.grading']"), (3, "changes globals()[name]")} <= found
    assert g["rebinder"].details["90.2"].startswith("tampering suspected")
    for student in ("good", "empty", "crasher", "sleeper", "killer", "deleter"): assert not any("tampering" in n for n in g[student].notes), student
    if confined:  # its kernel could not write beside itself nor signal anything outside: the others' grades are intact
        assert "Landlock" in book.notes[0] and "confined" in book.notes[0]
        assert not (tmp_path/"out"/"work"/"good"/"90_warmup"/"nbs"/"intruder.txt").exists()
    assert any("deleted" in n for n in g["deleter"].notes)
    assert not any("deleted" in n or "wrote" in n for n in g["good"].notes)
    assert book.skipped and "scratch.ipynb: answers no chapter" in book.skipped[0]
    # separate working folders: the deleter emptied its own, the others still hold the chapter's file
    work = tmp_path/"out"/"work"
    assert not any((work/"deleter"/"90_warmup"/"nbs").iterdir())
    assert (work/"good"/"90_warmup"/"nbs"/"word.txt").read_text() == "mlops\n"
    # the executed notebook holds the grader's cells and the student's own code, checks replaced
    executed = nbformat.read(g["faker"].executed, as_version=4)
    assert sum(c.source.startswith("# mlops-course grade: the instructor's check") for c in executed.cells) == 3
    assert any("def check" in c.source for c in executed.cells)

    table = book.table()
    assert table.loc["good", "total"] == 4 and table.loc["good", "percent"] == 100 and table.loc["empty", "90.3"] == 0
    assert table["90.2"].isna()["crasher"] and "crashed at In [" in table.loc["crasher", "notes"]
    assert sorted(book.reports) == ["gradebook.csv", "gradebook.html", "submissions.csv"]
    csv = (tmp_path/"out"/"gradebook.csv").read_text().splitlines()
    assert csv[0].split(",")[:5] == ["student", "90.1", "90.2", "90.3", "total"]
    # MLflow: a child run per executed notebook, scored; nothing left RUNNING
    runs = _runs(tmp_path/"work"/"mlflow.db")
    children = {r["name"]: r for r in runs if r["parent"] == book.run_id}
    assert len(children) == 9 + confined and all(r["status"] != "RUNNING" for r in runs)
    assert {n: r["metrics"]["score"] for n, r in children.items()} == {
        "good--90_warmup": 4.0, "empty--90_warmup": 0.0, "crasher--90_warmup": 1.0, "sleeper--90_warmup": 1.0,
        "killer--90_warmup": 1.0, "deleter--90_warmup": 4.0, "faker--90_warmup": 0.0, "forger--90_warmup": 0.0,
        "rebinder--90_warmup": 0.0, **({"intruder--90_warmup": 4.0} if confined else {})}
    assert children["good--90_warmup"]["metrics"]["exercise.90.3"] == 2.0


def test_graded_notebook_keeps_the_student_code_and_replaces_the_checks(tmp_path):
    "No kernel: the student's checks become `pass`, the instructor's follow, magics and odd layouts survive."
    ref = tiny_course(tmp_path/"course")
    exercises = reference_exercises(ref/"90_warmup.ipynb")
    nb = submission('%time answer = 42\nx = 1; check("90.1", lambda: True); y = 2', 'check("90.3", True)\nprint("after")',
                    'def f(:\n    check("90.2", True)')
    nb.cells[1].metadata["tags"] = ["raises-exception"]
    nb.metadata["kernelspec"] = {"name": "bash", "display_name": "bash", "language": "bash"}
    nbformat.write(nb, tmp_path/"s.ipynb")
    out, where = graded_notebook(tmp_path/"s.ipynb", exercises, tmp_path/"settings.ini")
    assert [(w.exercise, w.cell) for w in where] == [("90.1", 3), ("90.3", 5), ("90.2", 7)]
    assert out.metadata.kernelspec.name == "python3" and all("raises-exception" not in c.metadata.get("tags", []) for c in out.cells)
    assert "x = 1; pass; y = 2" in out.cells[2].source and "run_line_magic" in out.cells[2].source
    assert out.cells[4].source.startswith("pass  #") and 'print("after")' in out.cells[4].source
    assert out.cells[6].source == 'def f(:\n    check("90.2", True)'  # it does not parse: left as it is, and fails where it stands
    assert str(tmp_path/"settings.ini") in out.cells[0].source


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    ref = tiny_course(tmp_path/"course")
    settings = load_settings(env={"MLOPS_COURSE_WORK_DIR": str(tmp_path/"work")})
    raises(lambda: grade(tmp_path/"nowhere", ref, settings=settings), "nowhere' does not exist", "alice/01_what_is_ml.ipynb")
    (tmp_path/"empty").mkdir()
    raises(lambda: grade(tmp_path/"empty", ref, settings=settings), "no submissions in")
    (tmp_path/"subs"/"ann").mkdir(parents=True)
    raises(lambda: grade(tmp_path/"subs", ref, out_dir=tmp_path/"subs"/"graded", settings=settings), "inside the submissions folder")
    write_student_copy(ref/"90_warmup.ipynb", tmp_path/"subs"/"ann"/"90_warmup.ipynb")
    raises(lambda: grade(tmp_path/"subs", ref, out_dir=tmp_path/"out", workers=0, settings=settings), "workers = 0")
    assert not (tmp_path/"out").exists()  # nothing half made is left behind
    (tmp_path/"subs"/"ann"/"90_warmup.ipynb").unlink()
    raises(lambda: grade(tmp_path/"subs", ref, chapters=["42"], settings=settings), "no chapter '42'", "90_warmup")
    nbformat.write(submission(), tmp_path/"subs"/"ann"/"90_warmup.ipynb")
    nbformat.write(submission(), tmp_path/"subs"/"ann"/"90-ann.ipynb")
    inbox = find_submissions(tmp_path/"subs", [ref/"90_warmup.ipynb"])
    assert inbox.submissions == [] and "2 notebooks answer 90_warmup" in inbox.skipped[0]
    nbformat.write(new_notebook(cells=[new_code_cell('n = "1"\ncheck(n, True)')]), tmp_path/"91_bad.ipynb")
    raises(lambda: reference_exercises(tmp_path/"91_bad.ipynb"), "91_bad.ipynb, cell 0", "string literal")


def test_the_grade_command_writes_the_gradebook_and_mlflow_runs(tmp_path, work_env):
    ref = tiny_course(tmp_path/"course")
    subs = tmp_path/"class"
    subs.mkdir()
    nbformat.write(nbformat.read(ref/"90_warmup.ipynb", as_version=4), subs/"alice__90_warmup.ipynb")
    write_student_copy(ref/"90_warmup.ipynb", subs/"bob__90.ipynb")
    nbformat.write(submission(*HOSTILE["crasher"]), subs/"carl__90_warmup.ipynb")
    out = tmp_path/"gradebook"
    r = run_cli("grade", subs, "--nbs", ref, "--out", out, "--workers", "2", "--cell-timeout", "30", env=work_env)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    row = {ln.split()[0]: ln.split() for ln in lines if ln.split() and ln.split()[0] in ("alice", "bob", "carl")}
    assert row["alice"][1:] == ["4/4", "4/4", "100"] and row["bob"][1:] == ["0/4", "0/4", "0"]
    assert row["carl"][1:3] == ["1/4", "(crashed)"]
    assert "crashed at In [" in r.stdout and str(out/"gradebook.html") in r.stdout
    csv = (out/"gradebook.csv").read_text()
    assert csv.splitlines()[1].startswith("alice,1.0,1.0,2.0,4.0,4.0,100.0")
    page = (out/"gradebook.html").read_text()
    assert page.count('class="pass"') == 4 and 'class="fail"' in page and "the dog ate my homework" in page
    runs = _runs(tmp_path/"work"/"mlflow.db")
    batch = [r for r in runs if r["parent"] is None]
    assert len(batch) == 1 and batch[0]["status"] == "FINISHED" and batch[0]["metrics"]["students"] == 3
    children = [r for r in runs if r["parent"] == batch[0]["id"]]
    assert sorted(r["metrics"]["score"] for r in children) == [0.0, 1.0, 4.0]
    assert all(r["status"] != "RUNNING" for r in runs)
    artifacts = {p.name for p in (tmp_path/"work").rglob("*") if p.parent.name == "gradebook"}
    assert artifacts == {"gradebook.csv", "gradebook.html", "submissions.csv"}
    # the same output folder again: refused, and the first gradebook is left as it was
    again = run_cli("grade", subs, "--nbs", ref, "--out", out, env=work_env)
    assert again.returncode == 2 and "already holds a gradebook" in again.stderr
    assert (out/"gradebook.csv").read_text() == csv


CHAPTERS = [p for p in sorted((ROOT/"nbs").glob("[0-9][0-9]*_*.ipynb")) if not p.name.startswith("00_")]


def test_student_copies_of_every_chapter_grade_to_zero(tmp_path, work_env):
    "The stripped copies of every chapter, graded as one batch: each runs to the end in a real kernel, every check (at least three) says ✗, none writes beside itself."
    subs = tmp_path/"submissions"/"student-copy"
    r = run_cli("exercises", *[p.stem for p in CHAPTERS], "--out", subs, env=work_env)
    assert r.returncode == 0, r.stderr
    for student in subs.iterdir():
        lines = [ln.strip() for c in nbformat.read(student, as_version=4).cells for ln in c.source.splitlines()]
        assert SOLUTION_BEGIN not in lines, student.name
    before = _files(ROOT/"nbs")
    settings = load_settings(env={"MLOPS_COURSE_WORK_DIR": work_env["MLOPS_COURSE_WORK_DIR"]})
    book = grade(subs.parent, ROOT/"nbs", out_dir=tmp_path/"graded", workers=2, cell_timeout=600, notebook_timeout=None, settings=settings)
    assert _files(ROOT/"nbs") == before
    assert {g.chapter for g in book.grades} == {c.stem for c in CHAPTERS}
    for g in book.grades:
        assert g.status == "ok", f"{g.chapter}: {g.outcome}"
        assert len(g.passed) >= 3, f"{g.chapter} has fewer than three exercises"
        assert all(v is False for v in g.passed.values()), f"{g.chapter}: {g.passed}"
        written = [n for n in g.notes if n.startswith("wrote")]
        assert not written, f"{g.chapter} wrote beside the notebooks (e.g. an MLflow ./mlruns): {written}"


def test_the_course_copy_runs_its_own_course_pipeline_wherever_the_grader_is_started(tmp_path):
    "Graded from a folder with no settings.ini, the chapters that run the course pipeline still find the copy's own course.yaml."
    from mlops_course.grading import course_template
    kernel_dir = course_template(ROOT/"nbs", tmp_path/"course", settings=None)
    copied = load_settings(env={"MLOPS_COURSE_SETTINGS": str(tmp_path/"course"/"settings.ini")}, create_work_dir=False)
    assert copied.pipeline_spec == kernel_dir/"pipeline"/"course.yaml" and copied.pipeline_spec.is_file()
    assert copied.work_dir == tmp_path/"course"/".mlops-course"
