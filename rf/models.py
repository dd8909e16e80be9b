"""The domain model, as plain dataclasses shared by every layer.

These are what the Backend protocol returns, whether the backend is the store
in-process or the server over HTTP: both build them with :func:`from_dict` on
the same JSON shape, so a caller cannot tell them apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
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


def require_staging(env: str, what: str, instead: str) -> None:
    """Refuse a mutation aimed at production (the heart of the environment rules: the service
    layer calls it on every surface; the CLI may call it early, before an editor opens)."""
    check_env(env)
    if env == "production":
        from rf.errors import ProductionReadOnly

        raise ProductionReadOnly(f"production is read-only: cannot {what}", instead)


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
    #: the trace mode each environment runs, from its head commit's agent.toml ``[trace]``
    #: (``{"staging": "full", "production": "standard"}``; an environment without a commit is
    #: absent): filled by ``get_agent``, empty from ``list_agents``, which reads no commit
    trace: dict[str, str] = field(default_factory=dict)


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
    #: the plan's warnings: dependencies production lacks, removals still in use (see ReleasePlan)
    warnings: list[str] = field(default_factory=list)
    #: every item the release published (the agent, and its dependencies with ``with_deps``)
    items: list[ReleaseItem] = field(default_factory=list)


@dataclass
class DeleteResult:
    """What a delete did in staging (at once), and what waits for production (a release item)."""

    kind: str  #: agent | prompt | connector | resource | trigger
    name: str
    env: str = "staging"  #: where it took effect at once
    #: production still has it: removing it there is this pending release item (before → None)
    item: ReleaseItem | None = None
    warnings: list[str] = field(default_factory=list)  #: e.g. staging agents/triggers that still use it


@dataclass
class Execution:
    """One run of an agent in one environment."""

    id: str
    env: str
    agent: str
    commit: str  #: commit id, or "working-copy" for ``rf test``
    source: str  #: endpoint | openai | test | invoke | trigger:<id> | replay | agent:<calling agent>
    #: succeeded | failed | running (still in progress) | interrupted (the server stopped during it)
    status: str
    input: Any = None
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    logs: str = ""
    started_at: str = ""  #: when the request arrived
    ended_at: str = ""  #: "" while it runs
    #: from the moment a worker started it to its end (so far, while it runs);
    #: ``ended_at - started_at = queued_ms + duration_ms``
    duration_ms: float = 0.0
    session_id: str | None = None
    #: from its arrival to a worker starting it: waiting for a free worker, or for a new one to start
    queued_ms: float = 0.0
    #: the execution whose agent called this one with ``ctx.agents.invoke`` (None: called from outside)
    parent_id: str | None = None
    #: production: the release whose state it ran (a running canary's own release on its canary arm);
    #: None in staging (and for production executions recorded before releases were recorded on them)
    release_id: str | None = None
    #: ``stable`` or ``canary`` when it ran while a canary release ran in production; None otherwise
    arm: str | None = None


@dataclass
class AgentStatus:
    name: str
    description: str
    staging_commit: str | None
    production_commit: str | None
    commits_ahead: int


@dataclass
class Replica:
    """An ``rf serve`` whose heartbeat is alive on the same PostgreSQL store (``rf status``)."""

    id: str  #: the process (pid and a random part)
    url: str  #: where it serves
    host: str  #: the machine's name
    pid: int
    started_at: str = ""  #: ISO-8601 UTC
    heartbeat_at: str = ""  #: ISO-8601 UTC (the database's clock)
    heartbeat_age_s: float = 0.0  #: seconds since its last heartbeat (the database's clock)


@dataclass
class Status:
    workspace: str
    workspace_path: str
    server_url: str | None  #: None when no server runs
    backend: str  #: "local" or "http"
    agents: list[AgentStatus] = field(default_factory=list)
    schema_version: int = 0
    #: The store: ``duckdb PATH`` or ``postgresql URL (vectors: pgvector|float4-bytea)``, never a password.
    store: str = ""
    #: The servers sharing the store whose heartbeat is alive (PostgreSQL; always empty on DuckDB).
    replicas: list[Replica] = field(default_factory=list)


# ------------------------------------------------------------ prompts (issue 3)


@dataclass
class PromptVersion:
    """One immutable version of a prompt (versions are numbered 1..n per prompt)."""

    name: str  #: the prompt's name
    version: int
    text: str
    variables: list[str] = field(default_factory=list)  #: ``{{names}}`` in the text, in order of first use
    author: str = ""
    message: str = ""
    created_at: str = ""  #: ISO-8601 UTC
    draft: bool = False  #: staging points at this version
    published: bool = False  #: production points at this version
    env: str | None = None  #: the environment it was resolved for (None when asked for by number)


@dataclass
class Prompt:
    """A prompt in listings: its draft (staging) and published (production) versions."""

    name: str
    draft_version: int | None  #: None once deleted in staging (archived: its versions stay readable)
    published_version: int | None  #: None until the first publish
    variables: list[str] = field(default_factory=list)  #: of the draft
    versions: int = 0  #: how many versions exist
    created_at: str = ""
    updated_at: str = ""  #: last new version or publish
    archived: bool = False  #: deleted in both environments (listed only when asked for)


@dataclass
class PromptSaveResult:
    """What ``create_prompt``/``set_prompt`` did (like :class:`DeployResult`)."""

    name: str
    version: PromptVersion  #: the draft after the call
    created: bool  #: False when the text equalled the draft: no version was made
    published_version: int | None = None  #: production's version (a save never moves it)


@dataclass
class PromptDiff:
    """What publishing a prompt would change in production (published → draft)."""

    name: str
    published_version: int | None
    draft_version: int | None  #: None when deleted in staging (publishing removes it from production)
    published_text: str | None  #: None when never published
    draft_text: str  #: "" when deleted in staging
    changed: bool  #: the draft is not the published version
    deleted: bool = False  #: deleted in staging: the change is "remove from production"


@dataclass
class PromptPublishResult:
    """What ``publish_prompt`` did (like :class:`PromoteResult`)."""

    name: str
    before: int | None  #: the published version before
    after: int  #: the published version now
    changed: bool  #: False when the draft was already published
    release_id: str | None = None


# ------------------------------------------------------------ connectors (issue 3)


@dataclass
class ConnectorResource:
    """One operation of a connector: ``METHOD base_url + path``, its inputs and a mock answer."""

    slug: str
    name: str = ""  #: human name (defaults to the slug)
    description: str = ""
    method: str = "GET"
    path: str = "/"  #: may hold ``{params}``, filled from the call's parameters (URL-encoded)
    params_schema: dict[str, Any] | None = None  #: JSON Schema (object) of the call's parameters
    mock_response: Any = None  #: returned in mock mode; None = no mock response


#: The configuration fields of a connector instance (what a diff compares besides resources).
CONNECTOR_CONFIG_FIELDS = ("kind", "base_url", "auth", "credential", "api_key_header", "api_key_query", "headers",
                           "timeout_s", "retries", "mock")
#: The per-environment *settings* of a connector (never carried to the other environment by a
#: publish of its resources); ``kind`` and the resources are shared and released from staging.
CONNECTOR_SETTINGS_FIELDS = ("base_url", "auth", "credential", "api_key_header", "api_key_query", "headers",
                             "timeout_s", "retries", "mock")


@dataclass
class ConnectorSettings:
    """A connector's settings in each environment, side by side.

    Staging's are edited directly. Production's are *prepared* in staging
    (``edit_connector(..., target="production")``) and reach production as
    their own release item (``connector:SLUG@production``).
    """

    slug: str
    staging: dict[str, Any] | None = None  #: the staging instance's settings (None: no staging instance)
    production: dict[str, Any] | None = None  #: production's live settings (None: no production instance)
    prepared: dict[str, Any] | None = None  #: production settings prepared in staging (None: none yet)
    pending: bool = False  #: prepared differs from production's live settings: a release item
    changes: list[FieldChange] = field(default_factory=list)  #: production (live) → prepared
    summary: str = ""


@dataclass
class Connector:
    """A connector *instance*: one per environment, same slug, possibly different config.

    ``credential`` is a credential NAME; the secret itself never leaves the
    host process's keyring lookup.
    """

    slug: str
    env: str
    base_url: str
    kind: str = "http"
    auth: str = "none"  #: none | api-key | bearer | basic
    credential: str | None = None
    api_key_header: str | None = None  #: api-key auth: send the key in this header...
    api_key_query: str | None = None  #: ...or in this query parameter
    headers: dict[str, str] = field(default_factory=dict)  #: default headers (never secrets)
    timeout_s: float = 30.0
    retries: int = 2  #: extra attempts for idempotent methods on connect errors / 5xx
    mock: bool = False  #: answer every call with the resource's mock response
    resources: list[ConnectorResource] = field(default_factory=list)
    content_hash: str = ""  #: hash of config + resources (what a release compares)
    created_at: str = ""
    updated_at: str = ""
    #: both environments' settings (filled by get_connector / list_connectors)
    settings: ConnectorSettings | None = None


@dataclass
class FieldChange:
    """One field that differs between production (before) and staging (after)."""

    name: str
    before: Any = None
    after: Any = None


@dataclass
class ResourceChange:
    slug: str
    status: Literal["added", "removed", "modified"]
    changes: list[FieldChange] = field(default_factory=list)  #: for "modified": method, path, schema, mock...


@dataclass
class ConnectorDiff:
    """What publishing a connector would change in production (production → staging)."""

    slug: str
    production: str | None  #: content hash of the production instance (None: none yet)
    staging: str | None  #: content hash of the staging instance (None: deleted in staging)
    changed: bool
    summary: str  #: e.g. "+1 resource, 1 modified, base URL changed"
    config: list[FieldChange] = field(default_factory=list)
    resources: list[ResourceChange] = field(default_factory=list)
    #: both environments' settings; a resources publish never changes them (a new connector's
    #: first publish uses the prepared production settings, else copies staging's)
    settings: ConnectorSettings | None = None


@dataclass
class ConnectorPublishResult:
    """What ``publish_connector`` did (like :class:`PromoteResult`)."""

    slug: str
    before: str | None  #: production content hash before
    after: str | None  #: production content hash now (None: removed from production)
    changed: bool
    summary: str = ""
    release_id: str | None = None


@dataclass
class OpenAPIImportResult:
    """What ``import_openapi`` did to a staging instance."""

    slug: str
    env: str
    created: bool  #: the connector did not exist and was created from ``servers[0].url``
    base_url: str
    added: list[str] = field(default_factory=list)  #: resource slugs
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass
class ConnectorRefreshResult:
    """What ``refresh_connector`` did to the staging instance of an MCP connector: its resources
    made the tools its (staging) MCP server lists now."""

    slug: str
    env: str
    added: list[str] = field(default_factory=list)  #: resource slugs
    updated: list[str] = field(default_factory=list)  #: description or input schema changed
    removed: list[str] = field(default_factory=list)  #: tools the server no longer lists
    unchanged: list[str] = field(default_factory=list)


# ------------------------------------------------------------ credentials (issue 3)


@dataclass
class Credential:
    """A shared credential's metadata. The value is never part of any model."""

    name: str
    description: str = ""
    storage: str = ""  #: where the value lives, e.g. "OS keyring (SecretService)"
    created_at: str = ""
    rotated_at: str = ""
    used_by: list[str] = field(default_factory=list)  #: e.g. "connector crm (production)", "provider openai"


@dataclass
class EndpointKey:
    """An endpoint key's metadata (``rf keys``). The key itself is shown once, at creation."""

    id: str
    env: str
    name: str
    prefix: str = ""  #: the key's first characters, to recognise it
    created_at: str = ""
    created_by: str = ""
    revoked_at: str = ""


@dataclass
class KeyCreated:
    """A new endpoint key: its metadata and the key itself (never stored, never shown again)."""

    key: EndpointKey
    secret: str


@dataclass
class CredentialUser:
    kind: str  #: connector | provider | data source
    name: str
    env: str | None = None  #: the connector instance's environment; None for shared things (providers, data sources)
    #: production settings prepared in staging (not published yet): production does not use it until then
    prepared: bool = False


@dataclass
class CredentialUsage:
    """Who uses a credential; ``production`` lists what changing it affects at once."""

    name: str
    exists: bool
    users: list[CredentialUser] = field(default_factory=list)
    production: list[str] = field(default_factory=list)  #: labels of the production users


# ------------------------------------------------------------ providers and llm (issue 3)


@dataclass
class ProviderUse:
    """An agent that called a provider from one environment (recorded by ``ctx.llm``)."""

    env: str
    agent: str
    last_used_at: str


@dataclass
class Provider:
    """An LLM provider (shared by both environments)."""

    name: str
    kind: str  #: mock | openai | anthropic
    base_url: str | None = None  #: None for mock
    credential: str | None = None  #: credential NAME (the secret lives in the keyring)
    model: str | None = None  #: default model when a call names none
    created_at: str | None = None  #: None for the built-in mock
    builtin: bool = False  #: the built-in mock (always there, cannot be removed)
    default: bool = False  #: used when ``ctx.llm.chat`` names no provider (``[llm] default``)
    used_by: list[ProviderUse] = field(default_factory=list)


@dataclass
class ProviderChange:
    """What ``add``/``remove``/``set default`` did, and what it means for production."""

    action: str  #: added | removed | default
    provider: Provider
    warnings: list[str] = field(default_factory=list)


@dataclass
class ProviderTest:
    """One real round trip to a provider (``rf providers test``)."""

    provider: str
    kind: str
    model: str
    latency_ms: float
    text: str
    usage: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------ sessions and memory (issue 4)

#: Session ids are chosen by the caller: 1–128 of these characters.
SESSION_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
#: Roles a session message may have.
SESSION_ROLES = ("user", "assistant", "system", "tool")
#: Limits shared by ``ctx.memory``/``ctx.session`` (checked in the worker, again in the host).
MEMORY_MAX_KEY_CHARS = 512
MEMORY_MAX_VALUE_BYTES = 256 * 1024


@dataclass
class SessionMessage:
    """One message of a session (thread): what the user said, what the agent answered."""

    role: str  #: user | assistant | system | tool
    content: Any  #: usually a string; any JSON value
    execution_id: str | None = None  #: the execution that added it
    created_at: str = ""  #: ISO-8601 UTC


@dataclass
class SessionSummary:
    """A session in listings. Sessions are per (environment, agent, id)."""

    id: str
    env: str
    agent: str
    messages: int
    started_at: str
    updated_at: str
    last_message: str = ""  #: a one-line preview of the newest message
    #: production: the release and arm of its latest execution (a session keeps its arm while a canary runs)
    release_id: str | None = None
    arm: str | None = None


@dataclass
class SessionThread:
    """A whole session: its messages, oldest first."""

    id: str
    env: str
    agent: str
    messages: list[SessionMessage] = field(default_factory=list)


@dataclass
class MemoryItem:
    """One memory key of an environment's namespace (``staging:`` or ``production:``)."""

    key: str  #: without the environment namespace
    env: str
    value: Any = None
    size: int = 0  #: bytes of the JSON value
    updated_at: str = ""
    agent: str | None = None  #: the agent whose execution wrote it last
    execution_id: str | None = None


@dataclass
class MemoryChange:
    """What ``delete_memory``/``clear_memory`` removed (staging only)."""

    env: str
    deleted: int
    keys: list[str] = field(default_factory=list)


# ------------------------------------------------------------ traces (issue 4)


@dataclass
class Span:
    """One timed operation of an execution; the root span (kind ``agent``) has no parent."""

    span_id: str  #: 16 hex digits
    trace_id: str  #: 32 hex digits, one per execution
    parent_id: str | None
    execution_id: str
    env: str
    agent: str
    kind: str  #: agent | prompt | llm | connector | memory | session | kb | data | custom
    name: str
    start_ns: int  #: Unix time in nanoseconds
    end_ns: int
    status: str  #: ok | error
    error: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass
class TraceSummary:
    """One execution's trace in listings (its root span)."""

    execution_id: str
    trace_id: str
    env: str
    agent: str
    status: str  #: ok | error
    started_at: str  #: ISO-8601 UTC
    duration_ms: float
    error: str | None = None
    #: production: the release it ran, and its arm while a canary ran
    release_id: str | None = None
    arm: str | None = None


@dataclass
class Trace:
    """The span tree of one execution (spans ordered by start time; the root first)."""

    execution_id: str
    trace_id: str
    env: str
    agent: str
    status: str
    spans: list[Span] = field(default_factory=list)


# ------------------------------------------------------------ triggers (issue 7)


@dataclass
class Trigger:
    """Runs an agent without a caller; bound to exactly one environment."""

    id: str
    env: str
    name: str
    kind: str  #: schedule | webhook | watch
    agent: str
    schedule: str | None = None  #: cron expression
    timezone: str | None = None
    watch_path: str | None = None
    input: Any = None  #: input template
    headers: list[str] = field(default_factory=list)  #: webhook request headers passed to the agent
    accept: str = "json"  #: webhook body: json | text
    overlap: str = "skip"  #: skip | allow
    catch_up: str = "none"  #: none | last
    enabled: bool = True
    live: bool = True  #: False for a production copy staged until published
    source_id: str | None = None
    created_at: str = ""
    updated_at: str = ""
    last_scheduled_at: str | None = None
    next_fire_at: str | None = None  #: schedule triggers: the next slot (UTC)
    url: str | None = None  #: webhook triggers: path of the endpoint
    secret: str | None = None  #: webhook secret — only in the answer that creates it
    #: a live production trigger: the change staged for it (its state once published), a release item
    staged_change: dict[str, Any] | None = None
    staged_summary: str = ""  #: e.g. "pause", "schedule */5 * * * * → 0 * * * *"
    # Read through the server (kept in its memory): the last error of this trigger's watcher, or of
    # the scheduler (schedule triggers), and its restarts. None/0 when it never failed, or no server runs.
    error: str | None = None  #: one line, secrets redacted
    error_at: str | None = None  #: when it failed (UTC)
    restarts: int = 0  #: times the server started the watcher / scheduler again after an error
    retry_at: str | None = None  #: while it is down: when the server tries again (UTC); None once running

    def failure(self, now: dt.datetime | None = None) -> str:
        """While the server retries: ``watcher failed: … (retrying in 4 s)``; else ``""``."""
        if not self.error or not self.retry_at:
            return ""
        now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        try:
            left = (dt.datetime.fromisoformat(self.retry_at.removesuffix("Z")) - now).total_seconds()
        except ValueError:
            left = 0.0
        retry = f"retrying in {math.ceil(left)} s" if left > 0 else "retrying now"
        return f"{'watcher' if self.kind == 'watch' else 'scheduler'} failed: {self.error} ({retry})"


@dataclass
class TriggerChangeResult:
    """What ``edit_trigger`` did: a staging trigger changes at once; a live production
    trigger's change is staged as a release item, or published at once (``now``)."""

    trigger: Trigger  #: the trigger as it is now
    changed: bool  #: False when the trigger already was in that state
    staged: bool = False  #: a production change waits as a release item (trigger:ID)
    summary: str = ""
    item: ReleaseItem | None = None  #: the release item (staged, or published with ``now``)
    release_id: str | None = None  #: the one-item release that published it (``now``)


# ------------------------------------------------------------ knowledge and data (issue 7)


@dataclass
class ResourceUse:
    """An agent that used a shared KB or data source from one environment (recorded at most once a minute)."""

    env: str
    agent: str
    last_used_at: str


@dataclass
class KnowledgeBase:
    """A knowledge base: documents cut into chunks, searchable. Shared by both environments."""

    name: str
    embedder: str  #: "default" (offline) or "provider:NAME:MODEL"
    embedder_description: str = ""  #: what that embedder is, in words
    dim: int | None = None  #: vector size (None before the first document)
    chunk_size: int = 1000  #: characters
    overlap: int = 200  #: characters
    description: str = ""
    documents: int = 0
    chunks: int = 0
    size_bytes: int = 0  #: total size of the uploaded files
    created_at: str = ""
    updated_at: str = ""
    used_by: list[ResourceUse] = field(default_factory=list)


@dataclass
class KBDocument:
    """One uploaded file of a knowledge base."""

    path: str
    kind: str  #: text | markdown | html | csv | json | jsonl | pdf
    sha256: str
    size: int
    chars: int
    chunks: int
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


@dataclass
class KBFileResult:
    """What an upload did with one file."""

    path: str
    status: str  #: added | updated | unchanged | metadata (only the metadata changed)
    kind: str = ""
    chunks: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class KBUploadResult:
    kb: str
    batch: str | None = None  #: the upload batch (multi-call uploads commit it at the end)
    committed: bool = True  #: False while a batch is still open
    files: list[KBFileResult] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class KBHit:
    """One search result: a chunk, where it comes from, and why it ranked."""

    text: str
    path: str  #: the document it belongs to
    chunk: int  #: its index in the document
    score: float  #: the combined score, used for ranking
    vector_score: float  #: cosine similarity of the embeddings
    lexical_score: float  #: BM25, divided by the best BM25 of this query (0..1)
    metadata: dict[str, Any] = field(default_factory=dict)  #: document metadata + page/row of the chunk


@dataclass
class KBSearchResult:
    kb: str
    query: str
    k: int
    embedder: str
    hits: list[KBHit] = field(default_factory=list)
    took_ms: float = 0.0


@dataclass
class KBChange:
    """What create / delete / set-embedder / remove-document did, and what it means for production."""

    action: str
    kb: KnowledgeBase
    warnings: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  #: document paths removed
    reembedded: int = 0  #: chunks re-embedded (set-embedder)
    seconds: float = 0.0


@dataclass
class DataSource:
    """Where some data lives, queryable with SQL. Shared by both environments."""

    name: str
    kind: str  #: csv | parquet | json | duckdb | postgres
    location: str  #: absolute file path, or a PostgreSQL DSN without password
    credential: str | None = None  #: the credential NAME holding the password (postgres)
    description: str = ""
    created_at: str = ""
    updated_at: str = ""
    columns: list[str] = field(default_factory=list)  #: columns (files) or tables (DuckDB) when known
    used_by: list[ResourceUse] = field(default_factory=list)


@dataclass
class DataSourceChange:
    action: str  #: added | removed
    source: DataSource
    warnings: list[str] = field(default_factory=list)


@dataclass
class DataQueryResult:
    source: str
    columns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    row_count: int = 0
    truncated: bool = False  #: more rows existed than the limit
    took_ms: float = 0.0


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


@dataclass
class ReleasePlan:
    """Exactly what a publish would change, identified by a plan id."""

    id: str  #: hash of every (kind, name, before, after) in the plan
    items: list[ReleaseItem] = field(default_factory=list)
    #: pending items the batch depends on but does not include (agent.toml declares them)
    missing_dependencies: list[ReleaseItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: what the batch's agents use that production lacks and no release item provides, e.g.
    #: "knowledge base faq" (shared things that do not exist, a prompt or connector nowhere)
    unavailable: list[str] = field(default_factory=list)
    #: removals that production still uses after this release, each naming its users
    still_used: list[str] = field(default_factory=list)
    #: eval evidence per agent the plan changes (directly, or through a prompt/connector it uses);
    #: empty when no such agent has a suite. A publish refuses regressions unless accepted.
    evals: list[AgentEvalEvidence] = field(default_factory=list)
    #: agents the plan changes that have no eval suite while ``[releases] require_evals = true``
    missing_suites: list[str] = field(default_factory=list)


@dataclass
class Release:
    """A recorded change of production (append-only history)."""

    id: str
    created_at: str
    author: str
    message: str
    plan_id: str
    #: publish | rollback | canary (started as a canary: production unchanged) | canary-promote
    #: (the canary became production) | canary-weight | canary-abort (no items: production unchanged)
    kind: str
    items: list[ReleaseItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the plan's eval evidence, as reviewed (see ReleasePlan.evals)
    evals: list[AgentEvalEvidence] = field(default_factory=list)
    #: why regressions were published anyway (``--accept-regressions -m WHY``); None: none were
    accepted_regressions: str | None = None
    #: the canary release it started, changed or ended (kinds canary, canary-*); None otherwise
    canary: str | None = None
    #: a canary's share of production traffic (percent) it set (kinds canary, canary-weight)
    weight: float | None = None
    #: the canary's per-arm figures when it was promoted or aborted (an auto-abort's cause)
    figures: dict[str, Any] | None = None


#: Release kinds that change production; the others record a canary's life (production unchanged).
PRODUCTION_RELEASE_KINDS = ("publish", "rollback", "canary-promote")


@dataclass
class CanaryArm:
    """One arm of a running canary: what its executions did since the canary started."""

    arm: str  #: stable | canary
    release_id: str | None  #: the release it runs
    executions: int = 0  #: ended executions (those still running are not counted)
    failures: int = 0  #: executions that did not succeed (failed, interrupted)
    failure_rate: float = 0.0
    #: Wilson 95 % interval of the failure rate
    failure_rate_low: float = 0.0
    failure_rate_high: float = 0.0
    p50_ms: float | None = None  #: median duration
    p95_ms: float | None = None
    #: executions scored by the live entry of their agent's eval suite ([releases.canary] score_sample)
    scored: int = 0
    score_mean: float | None = None  #: their mean score (0 to 1: the share of live scorers passed)
    #: 95 % interval of the mean score
    score_low: float | None = None
    score_high: float | None = None
    score_passed: int = 0  #: scored executions that passed every live scorer


@dataclass
class Canary:
    """A canary release: a share of production traffic on release N+1 beside release N."""

    id: str  #: the canary's release (kind ``canary``); its arm's executions record it
    status: str  #: running | promoted | aborted
    weight: float  #: percentage of production traffic on the canary arm
    stable_release_id: str | None
    started_at: str
    started_by: str
    items: list[ReleaseItem] = field(default_factory=list)
    ended_at: str | None = None
    ended_by: str | None = None
    end_release_id: str | None = None  #: the canary-promote or canary-abort release
    arms: list[CanaryArm] = field(default_factory=list)  #: stable first
    #: canary's failure rate minus stable's, with its 95 % interval (Newcombe's hybrid score method)
    failure_rate_delta: float = 0.0
    delta_low: float = 0.0
    delta_high: float = 0.0
    #: canary worse | no difference yet | canary better
    verdict: str = "no difference yet"
    #: ``[releases.canary]`` as in effect: auto_abort, max_failure_rate_delta, min_executions
    auto_abort: dict[str, Any] = field(default_factory=dict)
    #: the figures recorded when it ended (an auto-abort's cause)
    figures: dict[str, Any] | None = None
    message: str = ""
    #: ``[releases.canary] score_sample``: the fraction of executions scored live (0: none)
    score_sample: float = 0.0
    #: canary's mean live score minus stable's, with its 95 % interval (None: not both arms scored)
    score_delta: float | None = None
    score_delta_low: float | None = None
    score_delta_high: float | None = None
    #: sampled for scoring but dropped (the scoring queue was full)
    score_dropped: int = 0
    #: what the verdict rests on, one line per measure (failure rate, live score)
    reasons: list[str] = field(default_factory=list)
    #: the newest scored executions that missed a live scorer: execution_id, arm, agent, score, scores
    score_misses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CanaryRunning:
    """The running canary at a glance (the dashboard's production badge): no figures."""

    id: str  #: the canary's release
    weight: float  #: percentage of production traffic on the canary arm
    started_at: str


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


@dataclass
class GcFreed:
    """What ``rf gc`` (or the server's retention) freed of one kind, or would free (dry run)."""

    #: executions, spans, session_messages, release_plans, eval_runs, canary_scores, commits, blobs,
    #: working_copies, commit_dirs, upload_spools
    kind: str
    count: int  #: items of that kind (spans and session messages: each one, not rows)
    bytes: int  #: their stored size: row text and blob sizes inside the database, file sizes on disk


@dataclass
class GcResult:
    """One garbage collection: what it freed per kind, under which retention."""

    dry_run: bool  #: True: nothing was deleted; ``freed`` is what would have been
    freed: list[GcFreed] = field(default_factory=list)
    bytes: int = 0  #: total of ``freed``
    #: the database file's size afterwards (DuckDB reuses freed space for new rows; the file does not shrink)
    store_bytes: int = 0
    #: the retention applied: ``{"staging": {"days": 14, "max_executions": 50000}, ..., "plan_days": 30}``
    retention: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0


# ------------------------------------------------------------ the store itself (rf store)


@dataclass
class StoreTable:
    """One table of a store and its rows (``rf store info``, ``rf store copy``)."""

    name: str
    rows: int


@dataclass
class StoreInfo:
    """``rf store info``: what the workspace's store is and holds."""

    kind: str  #: duckdb | postgresql
    store: str  #: as ``rf status`` shows it (never a password)
    schema_version: int
    bytes: int  #: the DuckDB file's size, or the PostgreSQL database's
    tables: list[StoreTable] = field(default_factory=list)  #: schema order; knowledge-base tables last
    rows: int = 0  #: total of ``tables``
    #: PostgreSQL: ``[store] max_connections`` and this process's pool (size, open, idle, busy, opened, waits)
    max_connections: int | None = None
    pool: dict[str, int] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)  #: PostgreSQL: the live servers on it


@dataclass
class StoreCopy:
    """``rf store copy``: a DuckDB store copied into an empty PostgreSQL database."""

    source: str  #: the DuckDB file
    target: str  #: the PostgreSQL url (never a password)
    schema_version: int
    tables: list[StoreTable] = field(default_factory=list)  #: in the order they were copied
    rows: int = 0  #: total of ``tables``
    vectors: str = ""  #: how the target holds knowledge-base vectors: pgvector | float4-bytea
    #: tables of the DuckDB file that are no part of rf's schema (e.g. an interrupted re-embedding's), not copied
    skipped: list[str] = field(default_factory=list)
    duration_ms: float = 0.0


# ------------------------------------------------------------ evals (issue 18)


@dataclass
class EvalScore:
    """One scorer's verdict on one attempt of an eval case (``expect: {scorer: argument}``)."""

    scorer: str  #: equals | contains | not_contains | regex | json_schema | number | max_ms | calls | similar | judge | status
    passed: bool
    detail: str = ""  #: what was compared, or why it failed
    score: float | None = None  #: a measured value where there is one (similarity, latency, judge score)


@dataclass
class EvalAttempt:
    """One run of a case: every turn's execution, then each scorer on the last turn's output."""

    passed: bool
    execution_ids: list[str] = field(default_factory=list)  #: one per turn, in order (source ``eval``)
    output: Any = None  #: the last turn's output
    error: str | None = None  #: a failed execution's error, or why the case could not run
    duration_ms: float = 0.0  #: the slowest turn's duration (what ``max_ms`` checks)
    session_id: str | None = None  #: the session of a multi-turn case
    scores: list[EvalScore] = field(default_factory=list)


@dataclass
class EvalCaseResult:
    """One case of a suite: its attempts (``repeat``) and the rule that combines them (``pass``)."""

    id: str
    file: str  #: the suite file, relative to the agent directory (``evals/smoke.yaml``)
    line: int  #: where the case starts in that file
    passed: bool
    pass_rule: str = "all"  #: all: every attempt must pass (all-k); any: one is enough (pass@k)
    repeat: int = 1
    passes: int = 0  #: attempts that passed
    duration_ms: float = 0.0  #: the slowest attempt
    attempts: list[EvalAttempt] = field(default_factory=list)


@dataclass
class EvalResult:
    """``rf eval``: one run of an agent's eval suite against one environment's state."""

    id: str  #: this eval run (its executions' sessions are named after it)
    agent: str
    env: str
    commit: str  #: the commit the suite ran (``working-copy`` with ``--local``)
    files: list[str] = field(default_factory=list)  #: the suite files read
    cases: list[EvalCaseResult] = field(default_factory=list)
    total: int = 0
    passed: int = 0
    failed: int = 0
    pass_rate: float = 0.0  #: passed / total (a run always has at least one case)
    started_at: str = ""
    duration_ms: float = 0.0  #: wall time of the whole run
    workers: int = 1  #: cases run at a time
    #: how connector calls were answered: replay (from each case's recording; an unrecorded call
    #: fails its case), live (unrecorded calls reach the instances), record (``rf eval --record``)
    connectors: str = "replay"
    #: ``--record``: what each case's calls answered, by recordings file
    #: (``{"evals/x.recordings.json": {case id: [call, ...]}}``; see rf.evals.tape)
    recordings: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


@dataclass
class OutputChange:
    """One difference between a recorded output and its replay, at a JSON path."""

    path: str  #: where, e.g. ``message``, ``items[2]``, ``total.amount`` ("" : the whole output)
    kind: str  #: changed | added | removed
    before: Any = None
    after: Any = None


@dataclass
class ReplayedExecution:
    """One recorded execution run again (``rf replay``): what it did then, what it does now."""

    execution_id: str  #: the recorded execution (production's)
    #: same | changed (both succeeded, other output; or both failed, other error) |
    #: newly_failing (succeeded then, fails now) | fixed (failed then, succeeds now)
    outcome: str
    before_status: str
    after_status: str  #: succeeded | failed (failed too when it was refused before it ran)
    replay_execution_id: str | None = None  #: the new execution (source replay), None if it never ran
    input: Any = None
    session_id: str | None = None  #: the recorded execution's session (its history up to that turn was replayed)
    before_output: Any = None
    after_output: Any = None
    before_error: str | None = None
    after_error: str | None = None
    before_ms: float = 0.0
    after_ms: float = 0.0
    delta_ms: float = 0.0  #: after_ms - before_ms
    changes: list[OutputChange] = field(default_factory=list)  #: output differences (JSON-aware)
    replayed_calls: int = 0  #: connector calls answered from the recording
    live_calls: int = 0  #: connector calls that reached staging's instances (--live-connectors)
    unmatched: list[str] = field(default_factory=list)  #: calls the recording did not hold (they fail the run)
    not_recorded: list[str] = field(default_factory=list)  #: recorded calls the trace kept too little of


@dataclass
class ReplayResult:
    """``rf replay``: recorded executions of one environment run again on staging's state."""

    id: str  #: this replay (its executions' sessions are named after it)
    agent: str
    from_env: str  #: whose recorded executions (production)
    against: str  #: the state they ran on (staging)
    commit: str  #: the commit they ran
    llm: str = "configured"  #: configured (the providers as set up) | mock (the built-in mock)
    live_connectors: bool = False
    executions: list[ReplayedExecution] = field(default_factory=list)  #: oldest first
    total: int = 0
    same: int = 0
    changed: int = 0
    newly_failing: int = 0
    fixed: int = 0
    unmatched: int = 0  #: executions with at least one unmatched connector call
    started_at: str = ""
    duration_ms: float = 0.0
    workers: int = 1


@dataclass
class EvalCaseSpec:
    """One case of a suite as written (``rf.evals.suite.Case``): what the dashboard shows next
    to a run's output. ``expect`` holds each scorer's checked argument as JSON (a regex as its
    pattern, ``number`` with every key)."""

    id: str
    file: str  #: the suite file, relative to the agent directory
    line: int
    inputs: list[Any] = field(default_factory=list)  #: one input per turn
    expect: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1
    pass_rule: str = "all"
    multi_turn: bool = False
    description: str = ""


@dataclass
class EvalSuite:
    """An agent's eval suite in one commit (``GET /api/agents/{name}/evals``; the Evals screen)."""

    agent: str
    env: str
    commit: str  #: the commit the suite was read from
    files: list[str] = field(default_factory=list)
    cases: list[EvalCaseSpec] = field(default_factory=list)


@dataclass
class AgentEvalEvidence:
    """A release plan's eval evidence for one agent it changes: the agent's suite on staging's
    state (the commit the release publishes) against the same on production's state (the commit
    production runs now, with its own suite). Case ids compare the two runs."""

    agent: str
    after_commit: str  #: staging's commit (what the release publishes)
    before_commit: str | None = None  #: production's commit (None: the agent is new in production)
    #: evaluated | no-suite (staging's commit has none: no gate) | not-evaluated (see ``note``)
    status: str = "evaluated"
    after_passed: int = 0
    after_total: int = 0
    #: production's run; None when production has no commit or its commit has no suite
    before_passed: int | None = None
    before_total: int | None = None
    regressions: list[str] = field(default_factory=list)  #: case ids passing in production, failing in staging
    new_failures: list[str] = field(default_factory=list)  #: failing case ids production's suite lacks
    still_failing: list[str] = field(default_factory=list)  #: failing in both
    fixed: list[str] = field(default_factory=list)  #: failing in production, passing in staging
    after_run: str | None = None  #: the eval run ids (their executions have source ``eval``)
    before_run: str | None = None
    #: why the evidence is what it is, e.g. "affected through prompt greeting" or why it was not run
    note: str = ""


# ---------------------------------------------------------------- users, roles, audit (rf users / tokens / audit)
#: Roles, least to most: each may do what the ones before it may.
ROLES: tuple[str, ...] = ("viewer", "developer", "publisher", "admin")


@dataclass
class User:
    """A person who may use this rf server (``rf users``); the workspace owner is listed with ``owner``."""

    name: str
    role: str  #: viewer | developer | publisher | admin
    created_at: str = ""
    created_by: str = ""
    tokens: int = 0  #: live personal tokens
    owner: bool = False  #: the workspace owner (the server's own token, or in-process): always admin


@dataclass
class UserToken:
    """A personal token's metadata. The token itself is shown once, at creation; rf keeps its SHA-256."""

    id: str
    user: str
    name: str
    prefix: str = ""  #: the token's first characters, to recognise it
    created_at: str = ""
    created_by: str = ""
    revoked_at: str = ""


@dataclass
class TokenCreated:
    """A new personal token: its metadata and the token itself (never stored, never shown again)."""

    token: UserToken
    secret: str


@dataclass
class UserCreated:
    """``rf users add``: the new user and their first token (shown once)."""

    name: str
    role: str
    token: str


@dataclass
class Whoami:
    """Who the caller is to this server: the name its changes are recorded under, and its role."""

    name: str
    role: str
    owner: bool = False
    token_id: str = ""  #: the personal token used ("" for the owner)


@dataclass
class AuditEntry:
    """One recorded change (append-only): who (from the token, never the request), what, when."""

    id: str
    at: str
    actor: str
    role: str
    action: str  #: the operation, e.g. deploy, publish_release, set_credential, add_user
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Approval:
    """One publisher's approval of a release plan (``rf releases approve``)."""

    plan_id: str
    approver: str
    message: str = ""
    created_at: str = ""


@dataclass
class PlanApprovals:
    """The approvals of a release plan, and how many a publish needs (``[releases] approvals``)."""

    plan_id: str
    author: str = ""
    required: int = 0
    approvals: list[Approval] = field(default_factory=list)
    stale: bool = False  #: staging or production moved since the plan: its approvals no longer count
