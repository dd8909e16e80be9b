"""What every domain service shares: :class:`ServiceContext` (store, workspace, cache, pool).

The domain services (:mod:`rf.services.keys`, :mod:`rf.services.credentials`, ...) are plain
classes: each ``__init__`` receives this context and the other services it calls, so the
dependencies between domains are written in their constructors, not found at run time on a
shared ``self`` (see docs/architecture.md "Services").
"""

from __future__ import annotations

import functools
import operator
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast, overload

if TYPE_CHECKING:
    from rf.config import Workspace
    from rf.evals.tape import Tape
    from rf.models import Execution, Release, Trace
    from rf.runtime.pool import WorkerKey, WorkerPool, WorkerSetup
    from rf.store import Store


class ServiceContext:
    """The store, the workspace (None: in-memory), the server's URL (once one serves), the cache
    directory (commit code, working copies, uploads) and the worker pool (started on first use)."""

    def __init__(self, store: Store, workspace: Workspace | None, *, pool: WorkerPool | None = None,
                 server_url: str | None = None) -> None:
        self.store = store
        self.workspace = workspace
        self.server_url = server_url
        self._pool = pool
        self._pool_lock = threading.Lock()
        #: how a worker is prepared for its code (set by AgentsService: ``_prepare_worker``)
        self.prepare: Callable[[WorkerKey, str], WorkerSetup] | None = None
        #: one check (and repair) of a code directory at a time (AgentsService, RetentionService)
        self.code_lock = threading.Lock()
        self.owns_cache = workspace is None
        self.cache_dir = (
            workspace.cache_dir if workspace is not None else Path(tempfile.mkdtemp(prefix="rf-cache-"))
        )

    @property
    def pool(self) -> WorkerPool:
        """The worker pool, started on first use with the workspace's ``[runtime]`` limits."""
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from rf.config import ENVIRONMENTS
                    from rf.runtime.pool import PoolLimits, WorkerPool

                    runtime = self.workspace.runtime if self.workspace is not None else {}
                    self._pool = WorkerPool(prepare=self.prepare,
                                            limits={env: PoolLimits(**runtime.get(env, {})) for env in ENVIRONMENTS})
        return self._pool

    @property
    def started_pool(self) -> WorkerPool | None:
        """The worker pool if one was started (None: nothing ran in this process)."""
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self.owns_cache:
            from rf.runtime.pool import remove_tree

            remove_tree(self.cache_dir)  # commit directories are read-only


class AgentRuns(Protocol):
    """What evals, eval suites and replays need of the agents domain
    (:class:`rf.services.agents.AgentsService`): commits, and running them."""

    @property
    def pool(self) -> WorkerPool: ...

    def target(self, env: str, name: str) -> str: ...

    def commit_tree(self, commit_id: str) -> dict[str, str]: ...

    def commit_files(self, tree: dict[str, str]) -> dict[str, bytes]: ...

    def invoke(self, env: str, name: str, input: Any = None, session_id: str | None = None,
               source: str = "invoke", on_chunk: Callable[[Any], None] | None = None,
               tape: Tape | None = None) -> Execution: ...

    def run_working_copy(self, name: str, files: dict[str, bytes], input: Any = None, session_id: str | None = None,
                         on_chunk: Callable[[Any], None] | None = None, source: str = "test",
                         tape: Tape | None = None) -> Execution: ...

    def get_execution(self, execution_id: str, env: str | None = None) -> Execution: ...


class ReleaseReads(Protocol):
    """What sessions and traces need of the releases domain
    (:class:`rf.services.releases.ReleasesService`): a release by id or id prefix."""

    def get_release(self, release_id: str) -> Release: ...


class TraceReads(Protocol):
    """What evals and replays need of the traces domain (:class:`rf.services.traces.TracesService`)."""

    def get_trace(self, execution_id: str, env: str | None = None) -> Trace: ...


P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class Forwarded(Protocol, Generic[P, R]):
    """A facade method forwarding to a domain service's (what :func:`forward` makes): typed
    like the service's method, bound to the facade."""

    __name__: str

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Callable[Concatenate[Any, P], R]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Any: ...


def forward(attr: str, fn: Callable[Concatenate[Any, P], R]) -> Forwarded[P, R]:
    """A method of the :class:`rf.services.Services` facade calling ``self.<attr>.<fn's name>``.

    Its signature, annotations and host method name are *fn*'s (the server builds a route's
    request type from them; the host table finds ``@host_method`` names on the facade)."""
    target = operator.attrgetter(f"{attr}.{fn.__name__}")

    @functools.wraps(fn)
    def forwarding(self: Any, *args: Any, **kwargs: Any) -> Any:
        return target(self)(*args, **kwargs)

    forwarding.__rf_delegate__ = attr  # type: ignore[attr-defined]
    return cast("Forwarded[P, R]", forwarding)


def forwarded(facade: type) -> dict[str, tuple[type, tuple[str, ...]]]:
    """``{attribute: (domain service class, names of the methods the facade forwards to it)}``."""
    found: dict[str, tuple[type, list[str]]] = {}
    for name, value in vars(facade).items():
        attr = getattr(value, "__rf_delegate__", None)
        if attr is None:
            continue
        wrapped = value.__wrapped__
        cls = getattr(sys.modules[wrapped.__module__], wrapped.__qualname__.split(".")[0])
        found.setdefault(attr, (cls, []))[1].append(name)
    return {attr: (cls, tuple(names)) for attr, (cls, names) in found.items()}
