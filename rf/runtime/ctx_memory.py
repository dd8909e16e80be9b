"""``ctx.memory`` inside the worker: key → JSON value, in this environment's namespace.

The host decides the environment (the execution's), so agent code can narrow
its scope (``ctx.memory.scope("user:42")``) but can never read or write the
other environment's memory. Writes are checked here (JSON, size, key) so a
mistake raises where it is made; they are sent with the next host call (see
:mod:`rf.runtime.ctx_trace`) and committed when the execution succeeds. Reads
see the execution's own writes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rf.errors import PayloadTooLarge, UsageError
from rf.models import MEMORY_MAX_KEY_CHARS, MEMORY_MAX_VALUE_BYTES
from rf.runtime.ctx_trace import encode_json, outbox

if TYPE_CHECKING:
    from rf.runtime.context import Context

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


class Memory:
    """``ctx.memory``: ``get``, ``set``, ``delete``, ``list``, and ``scope`` for a narrower namespace."""

    def __init__(self, ctx: Context, scope: str = "") -> None:
        self._ctx = ctx
        self._scope = scope

    def __repr__(self) -> str:
        return f"Memory(env={self._ctx.env!r}, scope={self._scope!r})"

    def _key(self, key: Any) -> str:
        if not isinstance(key, str) or not key:
            raise UsageError("ctx.memory: a key must be a non-empty string")
        full = self._scope + key
        if len(full) > MEMORY_MAX_KEY_CHARS:
            raise UsageError(f"ctx.memory: key is too long ({len(full)} characters with its scope; "
                             f"the limit is {MEMORY_MAX_KEY_CHARS})")
        if _CONTROL.search(key):
            raise UsageError(f"ctx.memory: key {key[:60]!r} contains control characters")
        return full

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        found = self._ctx.call_host("memory.get", key=self._key(key))
        return found["value"] if isinstance(found, dict) else default

    def set(self, key: str, value: Any) -> None:
        """Store a JSON value (at most 256 KiB encoded)."""
        full = self._key(key)
        try:
            text = encode_json(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"ctx.memory.set({key!r}): the value is not JSON-serializable: {exc}",
                             "store strings, numbers, booleans, None, lists and dicts with string keys") from None
        size = len(text.encode("utf-8"))
        if size > MEMORY_MAX_VALUE_BYTES:
            raise PayloadTooLarge(
                f"ctx.memory.set({key!r}): the value is too large ({_size(size)}; "
                f"the limit is {_size(MEMORY_MAX_VALUE_BYTES)})",
                "keep large data in a data source or knowledge base and store a reference to it",
            )
        outbox(self._ctx).defer("memory.set", {"key": full, "value": value}, size)

    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens if it is absent)."""
        outbox(self._ctx).defer("memory.delete", {"key": self._key(key)})

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` in this scope, sorted."""
        if not isinstance(prefix, str):
            raise UsageError("ctx.memory.list: prefix must be a string")
        keys = self._ctx.call_host("memory.list", prefix=self._scope + prefix)
        cut = len(self._scope)
        return [k[cut:] for k in keys]

    def scope(self, name: str) -> Memory:
        """A view whose keys live under ``name:`` (e.g. one per user), still in this environment."""
        if not isinstance(name, str) or not name or _CONTROL.search(name):
            raise UsageError("ctx.memory.scope: the scope must be a non-empty string without control characters")
        return Memory(self._ctx, f"{self._scope}{name}:")
