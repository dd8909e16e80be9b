"""Host methods: what agent code reaches through ``ctx`` over the worker channel.

A worker never opens the database. When agent code calls, say,
``ctx.prompts.render(...)``, the worker sends ``call_host("prompts.render",
...)`` to the host; the pool calls the host handler built by
:meth:`Services.host_handler`, which dispatches to the method decorated with
``@host_method("prompts.render")`` — of the facade's own domains or of one of its
domain services (:func:`host_table`). Each such method receives
a :class:`HostCall` first — the environment, agent and execution it serves —
so every lookup resolves *for that execution's environment*.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rf.evals.tape import Tape

F = TypeVar("F", bound=Callable[..., Any])
#: ``{host method name: the bound method serving it}``
HostTable = Mapping[str, Callable[..., Any]]

HOST_ATTR = "_rf_host_method"


@dataclass
class HostCall:
    """Who is calling: one execution of one agent in one environment."""

    env: str
    agent: str
    execution_id: str
    session_id: str | None = None
    commit: str = ""
    source: str = ""
    #: per-execution scratch space for services (e.g. the open trace span stack)
    state: dict[str, Any] = field(default_factory=dict)
    #: when the execution times out (``time.monotonic()``), once its worker has started it
    deadline: float | None = None
    #: the execution whose agent called this one (``ctx.agents.invoke``); None when called from outside
    parent_id: str | None = None
    #: the agents whose calls led here, outermost first (empty when called from outside): a call
    #: back into one of them is a cycle, and their number is the depth
    chain: tuple[str, ...] = ()
    #: recorded connector answers this execution is served from (a replay, a replay-only eval:
    #: rf.evals.tape.Tape); None: connector calls go out as configured
    tape: Tape | None = None
    #: production: the release and arm it runs (``rf.services.canary.Arm``: a running canary's
    #: agents, prompts and connectors over production's on its canary arm); None in staging
    arm: Any = None

    def start(self, deadline: float) -> None:
        """The worker started the execution; it times out at ``deadline`` (``time.monotonic()``)."""
        self.deadline = deadline

    def time_left(self, limit: float) -> tuple[float, bool]:
        """How long a host call may take: ``limit`` seconds, or less when the execution's own
        timeout comes first; and whether that timeout is what bounds it."""
        if self.deadline is None:
            return limit, False
        left = self.deadline - time.monotonic()
        if left < limit:
            return max(left, 0.001), True
        return limit, False

    def annotate(self, **attributes: Any) -> None:
        """Add attributes to the span of the host call being served (e.g. token usage)."""
        self.state.setdefault("span_attributes", {}).update(attributes)

    def secret(self, value: str) -> str:
        """Register a secret value used by this execution: it is scrubbed from spans and logs."""
        if value:
            self.state.setdefault("secrets", set()).add(value)
        return value


def host_method(name: str) -> Callable[[F], F]:
    """Mark a Services method as reachable from agent code as ``name``."""

    def mark(fn: F) -> F:
        setattr(fn, HOST_ATTR, name)
        return fn

    return mark


def collect(cls: type) -> dict[str, str]:
    """``{host method name: attribute name}`` for a class (a method the facade only forwards to
    a domain service is that service's: not collected here)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            name = getattr(value, HOST_ATTR, None)
            if isinstance(name, str) and not getattr(value, "__rf_delegate__", None):
                found[name] = attr
    return found


def host_table(*servers: object) -> dict[str, Callable[..., Any]]:
    """What agent code may call, served by *servers* (the facade and its domain services):
    ``{host method name: bound method}``. Two servers of one name is a programming error."""
    table: dict[str, Callable[..., Any]] = {}
    for server in servers:
        for name, attr in collect(type(server)).items():
            if name in table:
                raise TypeError(f"host method {name!r} is served twice ({type(server).__name__}.{attr})")
            table[name] = getattr(server, attr)
    return table
