"""Diff renderables for the dashboard: side-by-side text, unified file diffs.

The side-by-side diff is rf.textdiff's (the one ``rf prompts diff`` prints),
in the dashboard's colours. Rich renderables drop straight into a Textual
``Static``. Changed rows carry ``-``/``+`` markers next to the line
numbers, so a diff stays readable without colour.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rf import textdiff
from rf.textdiff import Palette

REMOVED = "#f87171"
ADDED = "#4ade80"
REMOVED_WORD = "bold #fecaca on #7f1d1d"
ADDED_WORD = "bold #dcfce7 on #14532d"
HUNK = "#60a5fa"

#: The dashboard's colours for rf.textdiff's side-by-side diff.
PALETTE = Palette(removed_line=REMOVED, added_line=ADDED, removed_word=REMOVED_WORD, added_word=ADDED_WORD)


def side_by_side(old: str | None, new: str, *, old_title: str, new_title: str) -> Table:
    """``old`` (left) and ``new`` (right) aligned line by line; None on the left means "nothing yet"."""
    return textdiff.side_by_side(old, new, old_title=old_title, new_title=new_title, palette=PALETTE)


def unified(diff_text: str) -> Text:
    """A unified diff coloured line by line (headers dim, hunks blue, -/+ red/green).

    Long lines fold onto the next screen line: a reviewer sees all of what they publish."""
    text = Text(overflow="fold")
    for line in diff_text.rstrip("\n").splitlines():
        if line.startswith(("---", "+++")):
            style = "dim"
        elif line.startswith("@@"):
            style = HUNK
        elif line.startswith("+"):
            style = ADDED
        elif line.startswith("-"):
            style = REMOVED
        else:
            style = ""
        text.append(line + "\n", style=style)
    return text


def stack(*parts: RenderableType | None) -> Group:
    """Renderables one under the other (None skipped)."""
    return Group(*(p for p in parts if p is not None))
