"""Diff renderables for the dashboard: side-by-side text, unified file diffs.

Built on :mod:`difflib` and Rich only (Rich renderables drop straight into a
Textual ``Static``). Changed rows carry ``-``/``+`` markers next to the line
numbers, so a diff stays readable without colour.
"""

from __future__ import annotations

import difflib
import re

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

REMOVED = "#f87171"
ADDED = "#4ade80"
REMOVED_WORD = "bold #fecaca on #7f1d1d"
ADDED_WORD = "bold #dcfce7 on #14532d"
HUNK = "#60a5fa"

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")


def _word_diff(old: str, new: str) -> tuple[Text, Text]:
    """Two lines with the words that differ highlighted (prompt edits are usually a few words)."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    left, right = Text(style=REMOVED), Text(style=ADDED)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            left.append("".join(a[i1:i2]))
            right.append("".join(b[j1:j2]))
        else:
            left.append("".join(a[i1:i2]), style=REMOVED_WORD)
            right.append("".join(b[j1:j2]), style=ADDED_WORD)
    return left, right


def side_by_side(old: str | None, new: str, *, old_title: str, new_title: str) -> Table:
    """``old`` (left) and ``new`` (right) aligned line by line; None on the left means "nothing yet"."""
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("", justify="right", style="dim", no_wrap=True, width=5)
    table.add_column(old_title, ratio=1, overflow="fold")
    table.add_column("", justify="right", style="dim", no_wrap=True, width=5)
    table.add_column(new_title, ratio=1, overflow="fold")
    if old is None:
        for number, line in enumerate(new.splitlines() or [""], 1):
            left = Text("(nothing)", style="dim italic") if number == 1 else Text("")
            table.add_row("", left, f"+{number:>3}", Text(line, style=ADDED))
        return table
    a, b = old.splitlines(), new.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                table.add_row(
                    f" {i1 + k + 1:>3}", Text(a[i1 + k], style="dim"), f" {j1 + k + 1:>3}", Text(b[j1 + k], style="dim")
                )
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            li = i1 + k if i1 + k < i2 else None
            rj = j1 + k if j1 + k < j2 else None
            if li is not None and rj is not None:
                left, right = _word_diff(a[li], b[rj])
                table.add_row(f"-{li + 1:>3}", left, f"+{rj + 1:>3}", right)
            elif li is not None:
                table.add_row(f"-{li + 1:>3}", Text(a[li], style=REMOVED), "", Text(""))
            elif rj is not None:
                table.add_row("", Text(""), f"+{rj + 1:>3}", Text(b[rj], style=ADDED))
    return table


def unified(diff_text: str) -> Text:
    """A unified diff coloured line by line (headers dim, hunks blue, -/+ red/green)."""
    text = Text(no_wrap=True)
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
