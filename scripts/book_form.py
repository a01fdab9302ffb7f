"""How much of each chapter's code a reader sees: code lines per cell, hidden or visible, and the widest line.

A cell is hidden when its tags include remove-cell, remove-input, hide-cell or hide-input (Jupyter Book's tags;
"hide" still renders a click-to-show toggle, but a reader of the page does not see the code). The parameters cell
counts as visible. Code lines: non-blank lines of the cell source, the ``:tags:`` options excluded.

    .venv/bin/python scripts/book_form.py            # a table for every notebooks/*.md
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HIDING = {"remove-cell", "remove-input", "hide-cell", "hide-input"}
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


@dataclass
class Cell:
    tags: set
    lines: list

    @property
    def hidden(self) -> bool:
        return bool(self.tags & HIDING) and "parameters" not in self.tags


def _hides_source(options) -> bool:
    """Whether myst-nb options (a page's front matter or a cell's) say ``mystnb: {remove_code_source: true}``."""
    return bool(((options or {}).get("mystnb") or {}).get("remove_code_source"))


def cells(text: str) -> list[Cell]:
    """The code cells of a MyST notebook's text, with their tags and non-blank code lines.

    Hiding is read wherever Jupyter Book takes it from: ``:tags:`` lines, a cell's YAML options block (``tags:`` as
    a flow list or a block list), and ``mystnb: remove_code_source: true`` in the cell's options or in the page's
    front matter (all code of the page hidden; reported as the tag ``remove-input``)."""
    front = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    page_hides = _hides_source(yaml.safe_load(front.group(1)) if front else None)
    out = []
    for body in CELL.findall(text):
        tags, lines = set(), body.splitlines()
        if lines and lines[0].strip() == "---":  # a YAML options block
            end = lines.index("---", 1)
            options = yaml.safe_load("\n".join(lines[1:end])) or {}
            found = options.get("tags") or []
            tags |= {found} if isinstance(found, str) else set(found)
            tags |= {"remove-input"} if _hides_source(options) else set()
            lines = lines[end + 1:]
        while lines and lines[0].startswith(":"):
            if lines[0].startswith(":tags:"):
                tags |= set(re.findall(r"[\w-]+", lines[0][len(":tags:"):]))
            lines = lines[1:]
        out.append(Cell(tags | ({"remove-input"} if page_hides else set()), [l for l in lines if l.strip()]))
    return out


def form(path: Path) -> dict:
    """hidden/visible code lines, the hidden share, the largest hidden cell and the widest visible line."""
    cs = cells(path.read_text())
    hidden = sum(len(c.lines) for c in cs if c.hidden)
    visible = sum(len(c.lines) for c in cs if not c.hidden)
    return {"chapter": path.stem, "hidden": hidden, "visible": visible,
            "hidden_share": hidden / max(1, hidden + visible),
            "largest_hidden_cell": max([len(c.lines) for c in cs if c.hidden] or [0]),
            "widest_visible_line": max([len(l) for c in cs if not c.hidden for l in c.lines] or [0])}


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    paths = [Path(a) for a in (argv or [])] or sorted((root / "notebooks").glob("*.md"))
    print(f"{'chapter':24} {'hidden':>6} {'visible':>7} {'hidden %':>8} {'largest hidden':>14} {'widest':>6}")
    for p in paths:
        f = form(p)
        print(f"{f['chapter']:24} {f['hidden']:6d} {f['visible']:7d} {100 * f['hidden_share']:7.0f}% "
              f"{f['largest_hidden_cell']:14d} {f['widest_visible_line']:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
