"""A side-by-side text diff for Rich: two columns that fit the terminal.

Used by ``rf prompts diff``/``publish`` and by the dashboard's releases and
prompts screens (rf/tui/diff.py, with its own colours): it returns a Rich
renderable (a :class:`~rich.table.Table`), so a CLI prints it and a Textual
widget shows it as is. Rich and difflib only: no CLI or TUI import.

Lines are aligned with :mod:`difflib`; inside a changed pair of lines the
changed *words* are highlighted, because a prompt edit is usually a few
words in a long paragraph, and a whole-line highlight hides them. Every
changed row also carries a ``-``/``+`` marker next to its line number, so
the diff stays readable without colour (``NO_COLOR``, pipes).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from rich import box
from rich.table import Table
from rich.text import Text

REMOVED_LINE = "red"
ADDED_LINE = "green"
REMOVED_WORD = "bold white on #7f1d1d"
ADDED_WORD = "bold white on #14532d"


@dataclass(frozen=True)
class Palette:
    """The styles of removed and added lines, and of the changed words inside them."""

    removed_line: str = REMOVED_LINE
    added_line: str = ADDED_LINE
    removed_word: str = REMOVED_WORD
    added_word: str = ADDED_WORD


TERMINAL = Palette()

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")

Row = tuple[int | None, Text, int | None, Text, str]  # left no., left, right no., right, kind


def _tokens(line: str) -> list[str]:
    return _TOKENS.findall(line)


def _word_diff(old: str, new: str, palette: Palette = TERMINAL) -> tuple[Text, Text]:
    """Two lines with the words that differ highlighted on each side."""
    a, b = _tokens(old), _tokens(new)
    left, right = Text(style=palette.removed_line), Text(style=palette.added_line)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old_part, new_part = "".join(a[i1:i2]), "".join(b[j1:j2])
        if tag == "equal":
            left.append(old_part)
            right.append(new_part)
        else:
            left.append(old_part, style=palette.removed_word)
            right.append(new_part, style=palette.added_word)
    return left, right


def diff_rows(old: str, new: str, *, context: int | None = None, palette: Palette = TERMINAL) -> Iterator[Row]:
    """Aligned rows of a side-by-side diff.

    ``context`` limits unchanged lines to that many around each change (an
    elided stretch becomes one ``…`` row); None shows everything.
    """
    a, b = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    groups: list[list[tuple[str, int, int, int, int]]] = (
        [list(matcher.get_opcodes())] if context is None else list(matcher.get_grouped_opcodes(context))
    )
    for index, group in enumerate(groups):
        if index and context is not None:
            yield None, Text("…", style="dim"), None, Text("…", style="dim"), "skip"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for k in range(i2 - i1):
                    yield i1 + k + 1, Text(a[i1 + k], style="dim"), j1 + k + 1, Text(b[j1 + k], style="dim"), "equal"
                continue
            n = max(i2 - i1, j2 - j1)
            for k in range(n):
                li = i1 + k if i1 + k < i2 else None
                rj = j1 + k if j1 + k < j2 else None
                if li is not None and rj is not None:
                    left, right = _word_diff(a[li], b[rj], palette)
                    yield li + 1, left, rj + 1, right, "changed"
                elif li is not None:
                    yield li + 1, Text(a[li], style=palette.removed_line), None, Text(""), "removed"
                elif rj is not None:
                    yield None, Text(""), rj + 1, Text(b[rj], style=palette.added_line), "added"


def side_by_side(old: str | None, new: str, *, old_title: str, new_title: str,
                 context: int | None = None, palette: Palette = TERMINAL) -> Table:
    """A two-column diff of ``old`` (left) and ``new`` (right) as a Rich table.

    ``old`` None means "nothing yet" (e.g. a prompt never published): the left
    column says so and every line on the right counts as added. The table
    expands to the console width; long lines wrap inside their column.
    """
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("", justify="right", style="dim", no_wrap=True, width=5)
    table.add_column(old_title, ratio=1, overflow="fold")
    table.add_column("", justify="right", style="dim", no_wrap=True, width=5)
    table.add_column(new_title, ratio=1, overflow="fold")
    if old is None:
        lines = new.splitlines() or [""]
        for number, line in enumerate(lines, 1):
            left = Text("(nothing)", style="dim italic") if number == 1 else Text("")
            table.add_row("", left, f"+{number:>3}", Text(line, style=palette.added_line))
        return table
    for left_no, left, right_no, right, kind in diff_rows(old, new, context=context, palette=palette):
        left_mark = "-" if kind in ("changed", "removed") else " "
        right_mark = "+" if kind in ("changed", "added") else " "
        table.add_row(
            "" if left_no is None else f"{left_mark}{left_no:>3}", left,
            "" if right_no is None else f"{right_mark}{right_no:>3}", right,
        )
    return table


def unified(old: str | None, new: str, *, old_title: str, new_title: str) -> str:
    """A plain unified diff (for ``--unified``, pipes and patches)."""
    lines = difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=old_title, tofile=new_title)
    # A missing final newline is not worth a "\ No newline" line in a prompt diff.
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
