"""The domain model, as plain dataclasses shared by every layer.

These are what the Backend protocol returns, whether the backend is the store
in-process or the server over HTTP: both build them with :func:`from_dict` on
the same JSON shape, so a caller cannot tell them apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_type_hints

ENVIRONMENTS: tuple[str, ...] = ("staging", "production")
Env = Literal["staging", "production"]

#: The commit label of an execution that ran the working copy (``rf test``).
WORKING_COPY = "working-copy"

T = TypeVar("T")


def check_env(env: str) -> str:
    """Return ``env`` if it names an environment, else raise a UsageError."""
    if env not in ENVIRONMENTS:
        from rf.errors import UsageError

        raise UsageError(
            f"unknown environment {env!r}",
            "use one of: staging, production",
        )
    return env


@dataclass
class Commit:
    """An immutable snapshot of an agent directory (content-addressed)."""

    id: str  #: sha256 of (parent, tree, message, author, time)
    agent: str
    parent: str | None
    message: str
    author: str
    created_at: str  #: ISO-8601 UTC
    tree: dict[str, str] = field(default_factory=dict)  #: path -> blob sha256


@dataclass
class Agent:
    """An agent: shared metadata plus one head commit per environment."""

    name: str
    description: str = ""
    staging_commit: str | None = None
    production_commit: str | None = None
    commits_ahead: int = 0  #: commits in staging that production does not have
    created_at: str | None = None
    updated_at: str | None = None


@dataclass
class DeployResult:
    agent: str
    commit: Commit | None  #: None when nothing changed
    created: bool  #: False when the working copy matched staging's commit
    warnings: list[str] = field(default_factory=list)


@dataclass
class FileDiff:
    path: str
    status: Literal["added", "removed", "modified"]
    diff: str  #: unified diff text ("" for binary files)
    binary: bool = False


@dataclass
class AgentDiff:
    """What promoting an agent would change in production."""

    agent: str
    base: str | None  #: production commit
    head: str | None  #: staging commit
    commits: list[Commit] = field(default_factory=list)  #: newest first
    files: list[FileDiff] = field(default_factory=list)


@dataclass
class PromoteResult:
    agent: str
    before: str | None
    after: str
    changed: bool
    release_id: str | None = None


@dataclass
class Execution:
    """One run of an agent in one environment."""

    id: str
    env: str
    agent: str
    commit: str  #: commit id, or "working-copy" for ``rf test``
    source: str  #: endpoint | test | invoke | trigger:<id> | replay
    status: str  #: succeeded | failed
    input: Any = None
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    logs: str = ""
    started_at: str = ""
    ended_at: str = ""
    duration_ms: float = 0.0
    session_id: str | None = None


@dataclass
class AgentStatus:
    name: str
    description: str
    staging_commit: str | None
    production_commit: str | None
    commits_ahead: int


@dataclass
class Status:
    workspace: str
    workspace_path: str
    server_url: str | None  #: None when no server runs
    backend: str  #: "local" or "http"
    agents: list[AgentStatus] = field(default_factory=list)
    schema_version: int = 0


# ------------------------------------------------------------ prompts (issue 3)
# (models of this capability go here)


# ------------------------------------------------------------ connectors (issue 3)
# (models of this capability go here)


# ------------------------------------------------------------ credentials (issue 3)
# (models of this capability go here)


# ------------------------------------------------------------ providers and llm (issue 3)
# (models of this capability go here)


# ------------------------------------------------------------ sessions and memory (issue 4)
# (models of this capability go here)


# ------------------------------------------------------------ traces (issue 4)
# (models of this capability go here)


# ------------------------------------------------------------ releases (issue 5)


@dataclass
class ReleaseItem:
    """One difference between staging and production, publishable by a release.

    ``before``/``after`` are small JSON values that identify production's
    current state and the state publishing would give it (a commit id, a
    version number, a content hash...). A plan id hashes them all, so a
    publish can refuse when anything moved since the review.
    """

    kind: str  #: agent | prompt | connector | trigger
    name: str
    summary: str  #: one line, e.g. "3 commits ahead, 2 files changed"
    before: Any = None
    after: Any = None


# ------------------------------------------------------------ conversion


def to_dict(obj: Any) -> Any:
    """Turn a model (or a list/dict of models) into JSON-able data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


_HINTS: dict[type, dict[str, Any]] = {}


def from_dict(cls: type[T], data: Any) -> T:
    """Build model ``cls`` from :func:`to_dict` output (nested models too)."""
    if not dataclasses.is_dataclass(cls):
        return data  # type: ignore[no-any-return]
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            continue
        kwargs[key] = _convert(hints.get(key), value)
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if value is None or hint is None:
        return value
    origin = getattr(hint, "__origin__", None)
    args = getattr(hint, "__args__", ())
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value)  # type: ignore[arg-type]
    if origin is list and args and isinstance(value, list):
        return [_convert(args[0], v) for v in value]
    if args and origin is not dict and origin is not Literal:
        # Optional[X] / X | None
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)  # type: ignore[arg-type]
    return value
