"""Ids and timestamps.

Execution and release ids sort by creation time (a millisecond timestamp in
base 32 followed by random bits), so "newest first" is an ORDER BY on the id
and ids stay short enough to type.
"""

from __future__ import annotations

import datetime as _dt
import random
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base 32, lowercase


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters
#: Ids must be unique, not secret: a PRNG seeded from the OS, no system call per id.
_random = random.Random()


def _b32(value: int, width: int) -> str:
    """The low ``width * 5`` bits of ``value`` in base 32, most significant first."""
    pairs = _PAIRS
    out = []
    if width & 1:
        out.append(_ALPHABET[value & 31])
        value >>= 5
    for _ in range(width >> 1):
        out.append(pairs[value & 1023])
        value >>= 10
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    """A time-sortable id such as ``ex_01jd3k8m2q7w9x4c5v6b``."""
    ms = time.time_ns() // 1_000_000
    return f"{prefix}_{_b32(ms, 9)}{_b32(_random.getrandbits(60), 12)}"


def id_at(prefix: str, when: _dt.datetime) -> str:
    """The smallest id of ``prefix`` created at ``when`` (naive UTC): a bound for "before/after" filters."""
    ms = int(when.replace(tzinfo=_dt.UTC).timestamp() * 1000)
    return f"{prefix}_{_b32(ms, 9)}"


_EPOCH = _dt.datetime(1970, 1, 1)


def now_ns() -> int:
    """Now, as Unix nanoseconds (executions are timed with this)."""
    return time.time_ns()


def datetime_of_ns(ns: int) -> _dt.datetime:
    """A Unix time in nanoseconds as a naive UTC datetime (microsecond precision)."""
    return _EPOCH + _dt.timedelta(microseconds=ns // 1000)


_MICROSECOND = _dt.timedelta(microseconds=1)


def micros_of(when: _dt.datetime) -> int:
    """A naive UTC datetime as Unix microseconds."""
    return (when - _EPOCH) // _MICROSECOND


def datetime_of_micros(us: int) -> _dt.datetime:
    """Unix microseconds as a naive UTC datetime."""
    return _EPOCH + _dt.timedelta(microseconds=us)


def utcnow() -> _dt.datetime:
    """Now, UTC, without tzinfo (how the store keeps times)."""
    return _EPOCH + _dt.timedelta(microseconds=time.time_ns() // 1000)


def iso(value: _dt.datetime | None) -> str:
    """ISO-8601 with a Z (times are stored as naive UTC)."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


_iso_second: tuple[int, str] = (-1, "")


def iso_of_ns(ns: int) -> str:
    """``iso(datetime_of_ns(ns))``, without making a datetime: the date and time to the
    second are kept from the previous call (executions start and end within the same
    second, many per second)."""
    global _iso_second
    second, rest = divmod(ns, 1_000_000_000)
    cached, prefix = _iso_second
    if second != cached:
        prefix = (_EPOCH + _dt.timedelta(seconds=second)).isoformat()
        _iso_second = (second, prefix)  # one tuple: threads see the pair or the old one
    return f"{prefix}.{rest // 1_000_000:03d}Z"


def parse_iso(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=None)
