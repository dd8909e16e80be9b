"""Ids and timestamps.

Execution and release ids sort by creation time (a millisecond timestamp in
base 32 followed by random bits), so "newest first" is an ORDER BY on the id
and ids stay short enough to type.
"""

from __future__ import annotations

import datetime as _dt
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base 32, lowercase


def _b32(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A time-sortable id such as ``ex_01jd3k8m2q7w9x4c5v6b``."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(8), "big")
    return f"{prefix}_{_b32(ms, 9)}{_b32(rand, 12)}"


def id_at(prefix: str, when: _dt.datetime) -> str:
    """The smallest id of ``prefix`` created at ``when`` (naive UTC): a bound for "before/after" filters."""
    ms = int(when.replace(tzinfo=_dt.UTC).timestamp() * 1000)
    return f"{prefix}_{_b32(ms, 9)}"


def utcnow() -> _dt.datetime:
    """Now, UTC, without tzinfo (how the store keeps times)."""
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


def iso(value: _dt.datetime | None) -> str:
    """ISO-8601 with a Z (times are stored as naive UTC)."""
    if value is None:
        return ""
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_iso(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=None)
