"""Formatting helpers of the dashboard (pure functions: no Textual, easy to test)."""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any

#: The environment colours used everywhere rf shows an environment.
ENV_COLORS = {"staging": "#f59e0b", "production": "#10b981"}


def short(commit: str | None, n: int = 8) -> str:
    """A commit id shortened for tables ("—" for none)."""
    if commit is None:
        return "—"
    if commit.startswith("working-copy"):
        return "working-copy"
    return commit[:n]


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def parse_time(iso: str) -> _dt.datetime | None:
    """A naive UTC datetime from rf's ISO strings ("…Z"), None when empty or malformed."""
    if not iso:
        return None
    try:
        return _dt.datetime.fromisoformat(iso.rstrip("Z")).replace(tzinfo=None)
    except ValueError:
        return None


def when(iso: str | None) -> str:
    """'2026-11-26 03:04:05' (UTC) from an ISO timestamp."""
    return iso.replace("T", " ")[:19] if iso else "—"


def ago(iso: str | None, now: _dt.datetime) -> str:
    """'12s ago', '5m ago', '3h ago', '2d ago', else the date."""
    t = parse_time(iso or "")
    if t is None:
        return "—"
    seconds = (now - t).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    if seconds < 86400 * 30:
        return f"{int(seconds // 86400)}d ago"
    return t.strftime("%Y-%m-%d")


def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60_000:.1f} min"


def pretty_json(value: Any) -> str:
    """Indented JSON (strings as they are) for detail panes."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def one_line(value: Any, width: int = 60) -> str:
    """A value squeezed onto one line for a table cell."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def state_label(value: Any) -> str:
    """A release item's before/after state, short: a commit prefix, 'v3', a hash prefix, '(none)'."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"v{value}"
    if isinstance(value, str):
        return value[:12] if len(value) >= 20 else value
    return one_line(value, 40)


_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*(ago)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_before(text: str, now: _dt.datetime) -> _dt.datetime | None:
    """A time filter: '' (none), '15m'/'2h'/'3d' (that long ago) or an ISO date/time (UTC).

    Raises ValueError with a message fit for an inline form error.
    """
    text = text.strip()
    if not text:
        return None
    m = _RELATIVE.match(text)
    if m:
        return now - _dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        return _dt.datetime.fromisoformat(text.rstrip("Z").replace(" ", "T")).replace(tzinfo=None)
    except ValueError:
        raise ValueError("use 15m, 2h, 3d (ago) or a date such as 2026-01-31 12:00") from None


def id_at(prefix: str, moment: _dt.datetime) -> str:
    """The smallest id created at ``moment``: ``before=id_at(...)`` means "older than moment"."""
    from rf import ids

    return ids.id_at(prefix, moment)
