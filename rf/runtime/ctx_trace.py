"""``ctx.trace`` inside the worker (built on ``Context.call_host``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rf.runtime.context import Context


class Trace:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
