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
