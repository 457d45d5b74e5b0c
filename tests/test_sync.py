"The notebooks are the source: CI fails when they are not clean or the package is out of sync with them."
import shutil
import subprocess

import nbformat

from conftest import BIN, ROOT


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for d in ("nbs", "mlops_course") for p in sorted((root/d).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
            and p.name != ".last_checked"}


def test_export_and_clean_change_nothing(tmp_path):
    "nbdev-export and nbdev-clean, run on a copy of the repo, leave every file as committed."
    for d in ("nbs", "mlops_course"):
        shutil.copytree(ROOT/d, tmp_path/d, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT/"pyproject.toml", tmp_path)
    before = _snapshot(tmp_path)
    for cmd in ("nbdev-export", "nbdev-clean"):
        subprocess.run([str(BIN/cmd)], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    after = _snapshot(tmp_path)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, ("out of sync or not clean (run `make export` and commit): " + ", ".join(changed))


def test_notebooks_are_committed_without_outputs():
    "Executed outputs never enter the repository."
    for p in sorted((ROOT/"nbs").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in p.parts: continue
        nb = nbformat.read(p, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{p.name}: cells {dirty} hold outputs; clear them before committing"


def test_readme_is_generated_from_index():
    r = subprocess.run([str(BIN/"python"), "tools/readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def readme_table(heading):
    "The rows (lists of cells) of the table under `## heading` in README.md."
    section = (ROOT/"README.md").read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if line.startswith("| ") and "`" in line]


def names(cell): return [c.strip("` ") for c in cell.split(",") if c.strip("` —")]


def test_syllabus_status_is_true():
    "A topic is marked as running exactly when every chapter it names exists (and so runs in CI), and its modules exist."
    rows = readme_table("Syllabus")
    assert len(rows) >= 21
    for number, pt, en, chapters, modules, status in rows:
        exists = all((ROOT/"nbs"/f"{c}.ipynb").is_file() for c in names(chapters))
        assert ("✅" in status) == exists, f"syllabus row {number} ({pt}): status says {status}"
        if exists: assert all((ROOT/"mlops_course"/f"{m}.py").is_file() for m in names(modules)), f"syllabus row {number}: {modules}"


def test_glossary_points_at_chapters_that_exist():
    rows = readme_table("Glossary: Portuguese → English")
    assert len(rows) >= 30
    for pt, en, chapters in rows:
        assert pt and en and all((ROOT/"nbs"/f"{c}.ipynb").is_file() for c in names(chapters)), (pt, chapters)
