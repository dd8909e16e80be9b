"""The ``ctx`` object an agent handler receives: ``handle(input, ctx)``.

It lives inside the worker subprocess. Workers never open the database or
hold secrets, so everything ``ctx`` offers beyond plain fields is a request to
the host over the worker's channel (:meth:`Context.call_host`). Later features
(prompts, connectors, llm, memory, session, trace) become small objects built
on ``call_host`` and hung off the context with :meth:`Context._service`, so
they cost nothing until a handler uses them.

Importing this module has no side effects and pulls in nothing heavy; agent
code can ``from rf import Context`` for type hints, and tests can build a
``Context`` directly with a fake ``host`` callable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rf.errors import RfError

if TYPE_CHECKING:
    import logging

    from rf.runtime.ctx_agents import Agents
    from rf.runtime.ctx_connectors import Connectors
    from rf.runtime.ctx_data import DataSource
    from rf.runtime.ctx_kb import KnowledgeBase
    from rf.runtime.ctx_llm import LLM
    from rf.runtime.ctx_memory import Memory
    from rf.runtime.ctx_prompts import Prompts
    from rf.runtime.ctx_session import Session
    from rf.runtime.ctx_trace import Trace

HostCall = Callable[[str, dict[str, Any]], Any]


class LogStream(Protocol):
    """Where ``ctx.logger`` writes (the worker's per-execution capture)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


_T = TypeVar("_T")

_LOGGER_PREFIX = "rf.agent"


class Context:
    """Per-execution context passed to agent handlers.

    Attributes:
        env: ``"staging"`` or ``"production"``.
        agent: the agent's name.
        execution_id: id of this execution (as shown by ``executions show``).
        session_id: the conversation/session id, if the caller gave one.
    """

    env: str
    agent: str
    execution_id: str
    session_id: str | None

    def __init__(
        self,
        *,
        env: str,
        agent: str,
        execution_id: str,
        session_id: str | None = None,
        host: HostCall | None = None,
        log_stream: LogStream | None = None,
    ) -> None:
        self.env = env
        self.agent = agent
        self.execution_id = execution_id
        self.session_id = session_id
        self._host = host
        self._log_stream = log_stream
        self._logger: logging.Logger | None = None
        self._services: dict[str, Any] = {}
        self._active = True
        #: Set by the worker: deferred calls still pending when the handler returns
        #: go in its "done" message (see rf.runtime.ctx_trace.Outbox).
        self._final_ops_ok = False
        self._final_ops: list[list[Any]] | None = None
        #: Custom spans likewise (span rows, see rf.services.span_rows).
        self._final_spans: list[list[Any]] | None = None
        self._final_spans_error: str | None = None  #: spans that could not be encoded: fails the run
        #: The root span of this execution's trace (set by the worker): the parent of
        #: custom spans opened outside any other.
        self._trace_root: str | None = None

    def __repr__(self) -> str:
        return (
            f"Context(env={self.env!r}, agent={self.agent!r}, "
            f"execution_id={self.execution_id!r}, session_id={self.session_id!r})"
        )

    @property
    def logger(self) -> logging.Logger:
        """A logger whose lines land in this execution's logs as ``LEVEL message``.

        Built on first use: ``logging`` costs a few milliseconds to import
        and most handlers never log, so worker start-up does not pay for it.
        """
        if self._logger is None:
            self._logger = _agent_logger(self.agent, self._log_stream)
        return self._logger

    # ---- capabilities, each built on call_host in its own module (lazy) ----
    @property
    def prompts(self) -> Prompts:
        """Prompts resolved for this environment: draft in staging, published in production."""
        found = self._services.get("prompts")
        if found is None:
            found = self._services["prompts"] = _service_class("prompts")(self)
        return found  # type: ignore[no-any-return]

    @property
    def connectors(self) -> Connectors:
        """This environment's connector instances: ``ctx.connectors.call(slug, resource, **params)``."""
        found = self._services.get("connectors")
        if found is None:
            found = self._services["connectors"] = _service_class("connectors")(self)
        return found  # type: ignore[no-any-return]

    @property
    def agents(self) -> Agents:
        """The other agents of this environment: ``ctx.agents.invoke("other", input)``."""
        found = self._services.get("agents")
        if found is None:
            found = self._services["agents"] = _service_class("agents")(self)
        return found  # type: ignore[no-any-return]

    @property
    def llm(self) -> LLM:
        """The LLM providers (shared): ``ctx.llm.chat(messages, model=None, tools=None)``."""
        found = self._services.get("llm")
        if found is None:
            found = self._services["llm"] = _service_class("llm")(self)
        return found  # type: ignore[no-any-return]

    @property
    def session(self) -> Session:
        """This execution's session (thread) in this environment."""
        found = self._services.get("session")
        if found is None:
            found = self._services["session"] = _service_class("session")(self)
        return found  # type: ignore[no-any-return]

    @property
    def memory(self) -> Memory:
        """Key/value memory scoped to this environment's namespace."""
        found = self._services.get("memory")
        if found is None:
            found = self._services["memory"] = _service_class("memory")(self)
        return found  # type: ignore[no-any-return]

    @property
    def trace(self) -> Trace:
        """Custom spans: ``with ctx.trace.span("name", **attrs): ...``."""
        found = self._services.get("trace")
        if found is None:
            found = self._services["trace"] = _service_class("trace")(self)
        return found  # type: ignore[no-any-return]

    def kb(self, name: str) -> KnowledgeBase:
        """A knowledge base (shared by both environments): ``ctx.kb("docs").search(query, k=5)``."""
        from rf.runtime.ctx_kb import KnowledgeBase

        return self._service(f"kb:{name}", lambda ctx: KnowledgeBase(ctx, name))

    def data(self, name: str) -> DataSource:
        """A data source (shared by both environments): ``ctx.data("sales").query("SELECT ...")``."""
        from rf.runtime.ctx_data import DataSource

        return self._service(f"data:{name}", lambda ctx: DataSource(ctx, name))

    def call_host(self, method: str, **params: Any) -> Any:
        """Ask the host to run service *method* with JSON-able *params*.

        Synchronous request/response over the worker's channel. Errors the
        host reports come back as the same :class:`rf.errors.RfError`
        subclass, so agent code can catch e.g. ``NotFound``.
        """
        if not self._active:
            raise RfError(
                f"ctx.call_host({method!r}) was called after execution {self.execution_id} ended",
                "use ctx only while the handler runs (not from leftover threads or tasks)",
            )
        if self._host is None:
            raise RfError("no host services in this run")
        return self._host(method, params)

    def _service(self, name: str, factory: Callable[[Context], _T]) -> _T:
        """Return the sub-object *name*, building it with *factory* on first use.

        The hook for later attributes, e.g.::

            @property
            def prompts(self) -> Prompts:
                return self._service("prompts", Prompts)
        """
        service = self._services.get(name)
        if service is None:
            service = self._services[name] = factory(self)
        return service  # type: ignore[no-any-return]

    def _end(self) -> None:
        """Mark the execution over; later host calls fail clearly instead of
        desynchronising the channel."""
        self._active = False

    def _release(self) -> None:
        """Let go of the services once the worker has sent what they left (after :meth:`_end`).

        They point back at this context (and the outbox hooks itself into it),
        so without this every execution would leave a reference cycle for the
        garbage collector: a collection every few dozen runs, each walking
        hundreds of dead objects. Agent code that kept ``ctx`` still gets the
        clear "called after execution ended" error from a later call.
        """
        self._services.clear()
        self.__dict__.pop("_end", None)  # the outbox's hooks (see rf.runtime.ctx_trace.Outbox)
        self._host = None
        self._final_ops = self._final_spans = None


#: ctx.<name> -> (module, class). Each module is imported on first use in this worker
#: (most agents use few of them); its class is then kept here, so a later execution's
#: first ``ctx.trace`` costs a dict lookup, not the import machinery.
_SERVICE_CLASSES = {
    "prompts": ("rf.runtime.ctx_prompts", "Prompts"),
    "connectors": ("rf.runtime.ctx_connectors", "Connectors"),
    "llm": ("rf.runtime.ctx_llm", "LLM"),
    "session": ("rf.runtime.ctx_session", "Session"),
    "memory": ("rf.runtime.ctx_memory", "Memory"),
    "trace": ("rf.runtime.ctx_trace", "Trace"),
    "agents": ("rf.runtime.ctx_agents", "Agents"),
}
_loaded: dict[str, Any] = {}


def _service_class(name: str) -> Any:
    cls = _loaded.get(name)
    if cls is None:
        import importlib

        module, attr = _SERVICE_CLASSES[name]
        cls = _loaded[name] = getattr(importlib.import_module(module), attr)
    return cls


def _agent_logger(agent: str, stream: LogStream | None) -> logging.Logger:
    import logging

    logger = logging.getLogger(f"{_LOGGER_PREFIX}.{agent}")
    if not getattr(logger, "_rf_configured", False):
        handler = logging.StreamHandler(stream) if stream is not None else logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger._rf_configured = True  # type: ignore[attr-defined]
    return logger
