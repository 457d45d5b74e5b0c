"""Render README.md from nbs/index.ipynb.

nbdev-readme renders through Quarto, whose installer downloads a binary; where that is not
possible this does the same job for an index notebook of markdown and code cells.
`python tools/readme.py --check` exits 1 when README.md is out of date."""
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def render(nb_path: Path = ROOT/"nbs"/"index.ipynb") -> str:
    "README text for the index notebook: markdown as it is, code in fenced blocks."
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for cell in nb.cells:
        src = cell.source.strip()
        if not src or src.startswith("#|"): continue
        parts.append(src if cell.cell_type == "markdown" else f"```python\n{src}\n```")
    note = "<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then `make readme` -->"
    return note + "\n\n" + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text, dest = render(), ROOT/"README.md"
    if "--check" in sys.argv[1:]:
        ok = dest.exists() and dest.read_text(encoding="utf-8") == text
        print("README.md is up to date" if ok else "README.md is out of date: run `make readme`")
        sys.exit(0 if ok else 1)
    dest.write_text(text, encoding="utf-8")
    print(f"wrote {dest}")
