"""Printing: data on stdout (plain JSON with --json), messages on stderr.

Rich respects ``NO_COLOR`` and non-terminal output by itself; we never print
decorations in JSON mode.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.theme import Theme

THEME = Theme({
    "staging": "bold #f59e0b",
    "production": "bold #10b981",
    "ok": "green",
    "fail": "bold red",
    "dim": "dim",
    "commit": "yellow",
    "hint": "cyan",
})

out = Console(theme=THEME, highlight=False, soft_wrap=False, emoji=False)
err = Console(theme=THEME, stderr=True, highlight=False, emoji=False)


def env_label(env: str) -> str:
    return f"[{env}]{env}[/{env}]"


def short(commit: str | None, n: int = 8) -> str:
    if commit is None:
        return "—"
    if commit.startswith("working-copy"):
        return "working-copy"
    return commit[:n]


def fit_table(table: Any, console: Console | None = None, *, flex: tuple[str, ...] = (),
              optional: tuple[str, ...] = (), last_resort: tuple[str, ...] = ()) -> Any:
    """Lay out a list table (no box) for the terminal's width: every column keeps the
    width of its content, except that, when the table is too wide, the columns that may
    be cut (those with a ``max_width`` or named in ``flex``, e.g. an error or a
    description) give way first: left out if they are empty, else cut down to 24
    characters (the last such column first),
    then the ``optional`` columns (named by header) are left out, in that order, then
    the flexible columns go down to 8 characters, then the ``last_resort`` columns are
    left out, then the flexible ones. Rich alone would squeeze or drop any column, the
    ids and statuses included."""
    from rich.cells import cell_len
    from rich.errors import MarkupError
    from rich.text import Text

    console = console or out
    columns = table.columns
    if not columns or table.box is not None:
        return table

    def width_of(cell: Any) -> int:
        if isinstance(cell, str):
            try:
                cell = Text.from_markup(cell)
            except MarkupError:
                return max((cell_len(line) for line in cell.splitlines()), default=0)
        if isinstance(cell, Text):
            return max((cell_len(line) for line in cell.plain.splitlines()), default=0)
        return int(console.measure(cell).maximum)

    widths = []
    for column in columns:
        width = max([width_of(column.header), *(width_of(cell) for cell in column._cells)])
        if column.max_width:
            width = min(width, column.max_width)
        widths.append(max(width, column.min_width or 0))
    _, right, _, left = table.padding
    last = len(columns) - 1
    total = sum(widths) + sum((left if i or table.pad_edge else 0) + (right if i < last or table.pad_edge else 0)
                              for i in range(len(columns)))
    over = total - console.width
    if over <= 0:
        return table
    natural = {id(column): width for column, width in zip(columns, widths, strict=True)}
    flexible = [column for column in columns if column.max_width is not None or column.header in flex]

    def index_of(column: Any) -> int | None:  # (by identity: columns compare by their fields)
        return next((i for i, c in enumerate(columns) if c is column), None)

    def cut_flexible(down_to: int) -> None:
        nonlocal over
        for column in reversed(flexible):
            i = index_of(column)
            if over <= 0 or i is None:
                continue
            cut = min(over, max(0, widths[i] - down_to))
            widths[i] -= cut
            over -= cut

    def leave_out(headers: tuple[str, ...]) -> None:
        nonlocal over
        for header in headers:
            i = next((i for i, c in enumerate(columns) if c.header == header), None)
            if over <= 0 or i is None:
                continue
            over -= widths[i] + left + right
            del columns[i], widths[i]
            for index, kept in enumerate(columns):
                kept._index = index

    leave_out(tuple(c.header for c in flexible if not any(width_of(cell) for cell in c._cells)))  # empty ones
    cut_flexible(24)  # first to a readable width
    leave_out(optional)
    cut_flexible(8)
    leave_out(last_resort)
    leave_out(tuple(column.header for column in reversed(flexible)))  # a very narrow terminal: them too
    for column in flexible:  # what leaving out a column freed beyond the need goes back to them
        i = index_of(column)
        if over >= 0 or i is None:
            continue
        back = min(-over, natural[id(column)] - widths[i])
        widths[i] += back
        over += back
    for column, width in zip(columns, widths, strict=True):
        column.width = width
        column.no_wrap = True
        column.overflow = "ellipsis"  # (cuts anything only when the terminal is narrower than even that)
    return table


def print_json(data: Any) -> None:
    """JSON to stdout, nothing else (for --json)."""
    from rf.models import to_dict

    sys.stdout.write(json.dumps(to_dict(data), indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    err.print(message)


def success(message: str) -> None:
    err.print(f"[ok]✓[/ok] {message}")


def warn(message: str) -> None:
    err.print(f"[yellow]![/yellow] {message}")


def duration(ms: float) -> str:
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def when(iso: str) -> str:
    """'2026-11-26 03:04:05' from an ISO timestamp (UTC)."""
    return iso.replace("T", " ")[:19] if iso else "—"
