"""Workspace discovery, ``rf.toml`` and ``agent.toml``, and working-copy snapshots.

A workspace is a directory holding ``rf.toml``; its state lives in ``.rf/``.
Commands find it by walking up from the current directory, like git. This
module only touches files: it imports nothing heavy, so every command can use
it before deciding whether it needs the store.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rf.errors import InvalidAgent, RfError, UsageError, WorkspaceError

WORKSPACE_FILE = "rf.toml"
STATE_DIR = ".rf"
DEFAULT_PORT = 7410
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0
ENVIRONMENTS = ("staging", "production")
TRACE_MODES = ("full", "standard", "minimal")
#: The trace mode of an environment agent.toml says nothing about.
DEFAULT_TRACE = "standard"
DEFAULT_TRACE_MAX_CHARS = 2000
#: The input/output field a session keeps as the message (the whole value when it has none).
DEFAULT_MESSAGE_FIELD = "message"

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: The naming rule of agents, prompts, connectors, resources, credentials, providers, keys,
#: knowledge bases and data sources: said by :func:`check_name`, the one check of all of them.
NAME_RULE = "use lowercase letters, digits, '-' and '_' (starting with a letter or digit, at most 63 characters)"

#: Paths never included in an agent snapshot.
ALWAYS_IGNORED = ("__pycache__", ".venv", ".rf", "*.pyc", ".git", ".DS_Store", "*.egg-info")


def check_name(kind: str, name: str, *, where: str = "", error: type[RfError] = UsageError) -> str:
    """Validate a slug-like name (agents, prompts, connectors...): the one check, with the one
    message (``invalid KIND name 'X'``, the rule as the hint) wherever a name is given.
    ``where`` prefixes the message (e.g. the file), ``error`` is the class raised."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise error(f"{where}invalid {kind} name {name!r}", NAME_RULE)
    return name


def check_limit(limit: Any, most: int, what: str = "limit") -> int:
    """A list's row limit: a whole number from 1 to *most* (the one check and message of every
    list method, so nothing else reaches the database), else UsageError stating the range."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        given = repr(limit)
        given = given if len(given) <= 24 else given[:24] + "…"
        raise UsageError(f"{what} must be a whole number between 1 and {most}, not {given}")
    return limit


# ---------------------------------------------------------------- declared keys
#
# Every key rf reads from rf.toml and agent.toml, per table: "" is the top level,
# "a.b" the table [a.b], "a.b[]" each table of the array [[a.b]]. A table that is
# not listed (agent.toml's [env], a mock rule's tool_call arguments) holds names of
# the user's choosing. A new setting is added here, then read where it is used;
# any other key is an error that names the file, the key and the closest known one.

#: ``[runtime.ENV]``: that environment's worker budget (rf.runtime.pool.PoolLimits).
RUNTIME_KEYS = ("max_workers_per_agent", "max_workers", "max_waiting")

#: ``[retention]``: how often the server applies it, and how long unpublished release plans stay.
RETENTION_KEYS = ("staging", "production", "interval_minutes", "plan_days")
#: ``[retention.ENV]``: how much execution history (executions, spans, session messages) is kept.
RETENTION_ENV_KEYS = ("days", "max_executions")

RF_TOML_KEYS: dict[str, tuple[str, ...]] = {
    "": ("workspace", "server", "llm", "runtime", "retention", "releases", "store"),
    # the PostgreSQL store instead of the workspace's DuckDB file (rf.store.pg; see store_settings)
    "store": ("url", "password_env",
              # connections of one rf process to the database (rf.store.pg_pool; see store_max_connections)
              "max_connections"),
    # approvals of a release plan a publish needs (rf.services.users); require_evals: every agent a
    # release changes must have an eval suite (rf.services.releases, the eval gate)
    "releases": ("approvals", "require_evals", "canary"),
    # a running canary: the server aborts it by itself on a worse failure rate (rf.services.canary)
    "releases.canary": ("auto_abort", "max_failure_rate_delta", "min_executions",
                        # live eval scoring of a sample of both arms' executions (rf.services.canary_scoring),
                        # and the server's abort on a worse live score
                        "score_sample", "max_score_delta", "min_scored"),
    "workspace": ("name", "id"),
    "server": ("host", "port", "max_body_bytes", "max_upload_bytes", "allowed_hosts", "require_keys",
               # read (and checked) by rf.server.connections when the server starts
               "header_timeout_s", "body_timeout_s", "keep_alive_s", "max_connections"),
    "runtime": ("staging", "production"),
    "runtime.staging": RUNTIME_KEYS,
    "runtime.production": RUNTIME_KEYS,
    "retention": RETENTION_KEYS,  # read by rf.services.retention
    "retention.staging": RETENTION_ENV_KEYS,
    "retention.production": RETENTION_ENV_KEYS,
    "llm": ("default", "timeout_s", "mock"),  # read by rf.services.providers
    "llm.mock": ("rules",),  # rf.llm.mock
    "llm.mock.rules[]": ("match", "regex", "reply", "tool_call"),
    "llm.mock.rules[].tool_call": ("name", "arguments"),
}

AGENT_TOML_KEYS: dict[str, tuple[str, ...]] = {
    "": ("description", "entrypoint", "timeout_s", "prompts", "connectors", "trace", "trace_max_chars",
         "session", "env", "input", "uses"),
    "trace": ("staging", "production"),
    "uses": ("agents",),  # the agents it calls (ctx.agents.invoke)
    "session": ("input", "output"),
    "input": ("schema",),  # rf.agent_input
}


class UnknownKey(NamedTuple):
    path: str  #: its table in the schema ("" for the top level)
    where: str  #: its table as the user sees it: ``[server]``, ``[[llm.mock.rules]] #2`` ("": the top level)
    what: str  #: ``key 'prot'`` or ``table [releases]``
    suggestion: str  #: a did-you-mean, or what to do instead ("" when nothing is close)


def unknown_keys(data: Mapping[str, Any], schema: Mapping[str, tuple[str, ...]],
                 table: str = "") -> list[UnknownKey]:
    """Every key of *data* that *schema* does not declare, in file order. A table of the
    schema given as something else (``server = 5``) is left to its parser. *data* is the
    table *table* of the schema (``"llm"``: the ``[llm]`` table alone; "": the whole file)."""
    found: list[UnknownKey] = []

    def walk(table: Mapping[str, Any], path: str, where: str) -> None:
        known = schema[path]
        for key, value in table.items():
            child = f"{path}.{key}" if path else key
            if key in known:
                if isinstance(value, dict) and child in schema:
                    walk(value, child, f"{where} {key}" if path.endswith("[]") else f"[{child}]")
                elif isinstance(value, list) and child + "[]" in schema:
                    for i, item in enumerate(value, start=1):
                        if isinstance(item, dict):
                            walk(item, child + "[]", f"[[{child}]] #{i}")
                continue
            what = f"table [{child}]" if isinstance(value, dict) and "[]" not in path else f"key {key!r}"
            if path and key in schema[""]:
                suggestion = f"{key} belongs at the top of the file: move it above the first [table] line"
            else:
                import difflib  # only when there is an unknown key: start-up never pays for it

                close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
                suggestion = f"did you mean {close[0]!r}?" if close else ""
            found.append(UnknownKey(path, where, what, suggestion))

    walk(data, table, f"[{table}]" if table else "")
    return found


def check_keys(data: Mapping[str, Any], schema: Mapping[str, tuple[str, ...]], source: str,
               file_label: str, error: type[RfError], table: str = "") -> None:
    """Raise *error*: *source*, each unknown key (up to 5) with its did-you-mean, and as the
    hint what the first one's table takes (see :func:`unknown_keys`; *table*: *data* is that
    table of the file, e.g. ``"llm"`` for what rf.services.providers re-reads)."""
    found = unknown_keys(data, schema, table)
    if not found:
        return
    parts = [f"unknown {k.what}" + (f" in {k.where}" if k.where else "") + (f" ({k.suggestion})" if k.suggestion else "")
             for k in found[:5]]
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    first = found[0]
    raise error(f"{source}: " + "; ".join(parts) + more,
                f"{first.where or file_label} takes: {', '.join(schema[first.path])}")


@dataclass
class Workspace:
    """A workspace directory and its parsed ``rf.toml``."""

    root: Path
    name: str
    id: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY
    #: Host names the server answers to besides loopback and its bind address ([server] allowed_hosts).
    allowed_hosts: list[str] = field(default_factory=list)
    #: Endpoint keys required on /{env}/ routes ([server] require_keys; forced off loopback).
    require_keys: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    #: ``[runtime.staging]`` / ``[runtime.production]``: the worker limits set (checked) per environment.
    runtime: dict[str, dict[str, int]] = field(default_factory=dict)
    #: ``[retention]`` as set (checked): ``{"interval_minutes": 10, "staging": {"days": 14}, ...}``;
    #: rf.services.retention fills in the defaults.
    retention: dict[str, Any] = field(default_factory=dict)
    #: ``[releases] approvals``: approvals of a plan (by publishers other than its author) a publish needs.
    release_approvals: int = 0
    #: ``[releases] require_evals``: an agent a release changes must have an eval suite (the eval gate).
    release_require_evals: bool = False
    #: ``[releases.canary]``: when the server aborts a running canary by itself.
    canary: CanaryConfig = field(default_factory=lambda: CanaryConfig())
    #: ``[store] url`` (or ``RF_STORE_URL``): a PostgreSQL store; None: the DuckDB file ``.rf/rf.duckdb``.
    store_url: str | None = None
    #: ``[store] password_env``: the environment variable holding the PostgreSQL password (else libpq's own:
    #: PGPASSWORD, ~/.pgpass).
    store_password_env: str | None = None
    #: ``[store] max_connections``: connections one rf process opens to the PostgreSQL store, at most
    #: (None: rf.store.pg_pool.DEFAULT_MAX_CONNECTIONS).
    store_max_connections: int | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        return self.state_dir / "rf.duckdb"

    @property
    def server_file(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def agents_dir(self) -> Path:
        return self.root / "agents"

    def ensure_state_dir(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir


def find_workspace(start: str | os.PathLike[str] | None = None) -> Workspace:
    """Find the workspace containing ``start`` (default: ``$RF_WORKSPACE`` or cwd)."""
    if start is None:
        start = os.environ.get("RF_WORKSPACE") or os.getcwd()
    here = Path(start).resolve()
    if here.is_file():
        here = here.parent
    if not here.exists():
        raise WorkspaceError(f"directory {str(start)!r} does not exist", "pass an existing directory to --workspace")
    for candidate in (here, *here.parents):
        if (candidate / WORKSPACE_FILE).is_file():
            return load_workspace(candidate)
    raise WorkspaceError(
        f"no rf workspace found in {here} or any parent directory",
        "run `rf init` to create one here, or pass --workspace DIR",
    )


def load_workspace(root: Path) -> Workspace:
    path = root / WORKSPACE_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise WorkspaceError(f"{path} is not valid TOML: {exc}", "fix the file and try again") from None
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror}") from None
    for table in ("workspace", "server", "llm"):
        if not isinstance(data.get(table, {}), dict):
            raise WorkspaceError(f"{path}: {table} must be a table ([{table}])", "fix rf.toml")
    check_keys(data, RF_TOML_KEYS, str(path), WORKSPACE_FILE, WorkspaceError)
    ws = data.get("workspace", {})
    server = data.get("server", {})
    port = server.get("port", DEFAULT_PORT)
    if not isinstance(port, int) or not (0 <= port < 65536):
        raise WorkspaceError(f"{path}: [server] port must be an integer between 0 and 65535", "fix rf.toml")
    max_body = server.get("max_body_bytes", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or max_body <= 0:
        raise WorkspaceError(f"{path}: [server] max_body_bytes must be a positive integer", "fix rf.toml")
    allowed = server.get("allowed_hosts", [])
    if not isinstance(allowed, list) or not all(isinstance(h, str) and h.strip() for h in allowed):
        raise WorkspaceError(f'{path}: [server] allowed_hosts must be a list of host names, e.g. ["rf.internal"]',
                             "fix rf.toml")
    require_keys = server.get("require_keys", False)
    if not isinstance(require_keys, bool):
        raise WorkspaceError(f"{path}: [server] require_keys must be true or false", "fix rf.toml")
    runtime: dict[str, dict[str, int]] = {}
    for env, table in (data.get("runtime") or {}).items():
        if not isinstance(table, dict):
            raise WorkspaceError(f"{path}: [runtime] {env} must be a table: [runtime.{env}]", "fix rf.toml")
        for key, value in table.items():
            least = 0 if key == "max_waiting" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise WorkspaceError(f"{path}: [runtime.{env}] {key} must be a whole number of at least {least}",
                                     "fix rf.toml")
        runtime[env] = dict(table)
    retention = check_retention(data.get("retention", {}), str(path))
    approvals = (data.get("releases") or {}).get("approvals", 0)
    if not isinstance(approvals, int) or isinstance(approvals, bool) or approvals < 0:
        raise WorkspaceError(f"{path}: [releases] approvals must be a whole number of at least 0", "fix rf.toml")
    require_evals = (data.get("releases") or {}).get("require_evals", False)
    if not isinstance(require_evals, bool):
        raise WorkspaceError(f"{path}: [releases] require_evals must be true or false", "fix rf.toml")
    canary = check_canary((data.get("releases") or {}).get("canary", {}), str(path))
    store_url, store_password_env = store_settings(data, str(path))
    store_connections = store_max_connections(data, str(path), has_url=store_url is not None)
    ws_id = str(ws.get("id") or hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16])
    return Workspace(
        root=root.resolve(),
        name=str(ws.get("name") or root.resolve().name),
        id=ws_id,
        host=str(server.get("host", "127.0.0.1")),
        port=port,
        max_body_bytes=max_body,
        allowed_hosts=[h.strip().lower() for h in allowed],
        require_keys=require_keys,
        raw=data,
        runtime=runtime,
        retention=retention,
        release_approvals=approvals,
        release_require_evals=require_evals,
        canary=canary,
        store_url=store_url,
        store_password_env=store_password_env,
        store_max_connections=store_connections,
    )


@dataclass(frozen=True)
class CanaryConfig:
    """``[releases.canary]`` in rf.toml: the server aborts a running canary by itself
    (``auto_abort``) once its arm has ``min_executions`` ended executions and its failure rate
    exceeds stable's by more than ``max_failure_rate_delta`` (0.05: five percentage points), or
    (with ``max_score_delta``) once its live score is worse than stable's by more than that."""

    auto_abort: bool = False
    max_failure_rate_delta: float = 0.05
    min_executions: int = 20
    #: the fraction (0 to 1) of both arms' succeeded executions scored by the live entry of the
    #: agent's eval suite while a canary runs (0: no live scoring)
    score_sample: float = 0.0
    #: with ``auto_abort``: abort when the canary's mean live score is below stable's by more than
    #: this (0 to 1; None: scores never abort), once each arm has ``min_scored`` scored executions
    #: and the 95 % interval of the difference lies below zero
    max_score_delta: float | None = None
    min_scored: int = 20


def check_canary(table: Any, source: str) -> CanaryConfig:
    """``[releases.canary]`` checked (keys by :func:`check_keys`, values here)."""
    if not isinstance(table, dict):
        raise WorkspaceError(f"{source}: [releases] canary must be a table: [releases.canary]", "fix rf.toml")
    auto_abort = table.get("auto_abort", False)
    if not isinstance(auto_abort, bool):
        raise WorkspaceError(f"{source}: [releases.canary] auto_abort must be true or false", "fix rf.toml")
    def number(key: str, default: float | None, meaning: str, example: str, *, to_one: bool = False,
               hint: str = "") -> float | None:
        value = table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 <= value <= 1 if to_one else 0 <= value < 1):
            raise WorkspaceError(f"{source}: [releases.canary] {key} must be a number from 0 to "
                                 f"{'1' if to_one else 'below 1'} ({meaning})",
                                 f"fix rf.toml, e.g. {key} = {example}{hint}")
        return float(value)

    def whole(key: str, least: int) -> int:
        value = table.get(key, 20)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise WorkspaceError(f"{source}: [releases.canary] {key} must be a whole number of at least {least}",
                                 f"fix rf.toml, e.g. {key} = 20")
        return value

    delta = number("max_failure_rate_delta", 0.05,
                   "a difference of failure rates: 0.05 is five percentage points", "0.05")
    least = whole("min_executions", 1)
    sample = number("score_sample", 0.0, "the fraction of a canary's executions scored by the live entry of the "
                    "agent's eval suite; 0: none", "0.1", to_one=True)
    score_delta = number("max_score_delta", None, "a difference of mean live scores: 0.1 is a tenth of the scorers",
                         "0.1", hint=" (or remove it: scores never abort)")
    scored = whole("min_scored", 2)
    if score_delta is not None and sample == 0:
        raise WorkspaceError(f"{source}: [releases.canary] max_score_delta needs live scores, but score_sample "
                             "is 0 (nothing is scored)", "set score_sample, e.g. score_sample = 0.1")
    assert delta is not None and sample is not None  # (they have defaults)
    return CanaryConfig(auto_abort=auto_abort, max_failure_rate_delta=delta, min_executions=least,
                        score_sample=sample, max_score_delta=score_delta, min_scored=scored)


# ---------------------------------------------------------------- [store]
#: The environment variable that overrides ``[store] url`` (CI, a container's settings).
STORE_URL_ENV = "RF_STORE_URL"
STORE_SCHEMES = ("postgresql", "postgres")


def check_store_url(url: Any, source: str) -> str:
    """*url* if it is a PostgreSQL url; WorkspaceError naming *source* otherwise (never showing a password)."""
    if not isinstance(url, str) or not url.strip():
        raise WorkspaceError(f'{source}: [store] url must be text, e.g. "postgresql://rf@localhost:5432/rf"',
                             "fix it, or remove [store] to keep the workspace's DuckDB file")
    url = url.strip()
    import urllib.parse

    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise WorkspaceError(f"{source}: [store] url is not a valid url: {shown_store_url(url)}",
                             'write url = "postgresql://USER@HOST:PORT/DATABASE"') from None
    if parsed.scheme not in STORE_SCHEMES:
        shown = parsed.scheme or url.split(":", 1)[0][:20]
        raise WorkspaceError(f"{source}: [store] url must start with postgresql:// (not {shown!r}): PostgreSQL is"
                             " the only other store; without a url rf uses the workspace's DuckDB file",
                             'write url = "postgresql://USER@HOST:PORT/DATABASE", or remove [store] for DuckDB')
    if not parsed.hostname and "host=" not in parsed.query:
        raise WorkspaceError(f"{source}: [store] url names no host: {shown_store_url(url)}",
                             'write url = "postgresql://USER@HOST:PORT/DATABASE"')
    return url


def shown_store_url(url: str) -> str:
    """*url* without its password (``postgresql://ada:***@host/db``): what messages and ``rf status`` show."""
    import urllib.parse

    try:
        parsed = urllib.parse.urlsplit(url)
        password = parsed.password
    except ValueError:
        return "(an invalid url)"
    netloc = parsed.netloc
    if password:
        user, _, host = netloc.rpartition("@")
        netloc = user.split(":", 1)[0] + ":***@" + host
    query = [(k, "***" if k == "password" else v) for k, v in urllib.parse.parse_qsl(parsed.query, True)]
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc, query=urllib.parse.urlencode(query, safe="*")))


def store_settings(data: Mapping[str, Any], source: str,
                   environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """``(url, password_env)`` of rf.toml's ``[store]`` (checked), ``RF_STORE_URL`` winning over its url;
    ``(None, None)``: the DuckDB file. The password is never read from rf.toml: libpq takes
    PGPASSWORD or ~/.pgpass, or ``password_env`` names the variable that holds it."""
    environ = os.environ if environ is None else environ
    table = data.get("store", {})
    if not isinstance(table, dict):
        raise WorkspaceError(f"{source}: store must be a table ([store])", "fix rf.toml")
    password_env = table.get("password_env")
    if password_env is not None and (not isinstance(password_env, str)
                                     or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", password_env)):
        raise WorkspaceError(f"{source}: [store] password_env must be the name of an environment variable",
                             'e.g. password_env = "RF_PG_PASSWORD" (or leave it out and set PGPASSWORD)')
    url = environ.get(STORE_URL_ENV) or None
    if url is not None:
        return check_store_url(url, STORE_URL_ENV), password_env
    if "url" not in table:
        if password_env is not None:
            raise WorkspaceError(f"{source}: [store] password_env is set but there is no url",
                                 'add url = "postgresql://USER@HOST:PORT/DATABASE", or remove [store]')
        return None, None
    return check_store_url(table["url"], source), password_env


#: ``[store] max_connections``: the smallest value (the pool needs two besides the writer's and the
#: replica listener's: rf.store.pg_pool) and a sanity ceiling.
STORE_CONNECTIONS_RANGE = (4, 10_000)


def store_max_connections(data: Mapping[str, Any], source: str, *, has_url: bool) -> int | None:
    """``[store] max_connections`` (checked): the most connections one rf process opens to the
    PostgreSQL store; None when not set (the default, 20)."""
    table = data.get("store", {})
    if not isinstance(table, dict) or "max_connections" not in table:
        return None
    value = table["max_connections"]
    least, most = STORE_CONNECTIONS_RANGE
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise WorkspaceError(f"{source}: [store] max_connections must be a whole number from {least} to {most}",
                             "e.g. max_connections = 20 (per rf process: keep the sum of all rf processes on the"
                             " database below the PostgreSQL server's max_connections)")
    if not has_url:
        raise WorkspaceError(f"{source}: [store] max_connections is set but there is no url",
                             'add url = "postgresql://USER@HOST:PORT/DATABASE", or remove [store]')
    return value


def check_retention(table: Any, source: str) -> dict[str, Any]:
    """``[retention]`` checked (keys by :func:`check_keys`, values here): whole numbers of at
    least 0 (0 = no limit of that kind; ``interval_minutes = 0``: the server never applies it)."""
    if not isinstance(table, dict):
        raise WorkspaceError(f"{source}: retention must be a table ([retention])", "fix rf.toml")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in ENVIRONMENTS:
            if not isinstance(value, dict):
                raise WorkspaceError(f"{source}: [retention] {key} must be a table: [retention.{key}]", "fix rf.toml")
            for name, number in value.items():
                _check_count(number, f"{source}: [retention.{key}] {name}")
            out[key] = dict(value)
        else:
            _check_count(value, f"{source}: [retention] {key}")
            out[key] = value
    return out


def _check_count(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WorkspaceError(f"{what} must be a whole number of at least 0 (0: no limit)", "fix rf.toml")


RF_TOML_TEMPLATE = """\
# rf workspace: agents live in agents/NAME/, state in .rf/ (see `rf --help`)
[workspace]
name = "{name}"
id = "{id}"

[server]
# The embedded server (rf serve / rf ui) binds here. Keep 127.0.0.1 unless you
# put an authenticating proxy in front of it.
host = "127.0.0.1"
port = {port}
# Request bodies above this size are refused with 413. Deploys, `rf test` and
# OpenAPI imports send a larger body ahead in chunks instead, up to
# max_upload_bytes (all uploads in progress together; 200 MiB by default).
max_body_bytes = {max_body}
# max_upload_bytes = 209715200
# Host names (besides localhost and the bind address) the server answers to;
# any other Host header is refused (421), which stops DNS-rebinding pages.
# allowed_hosts = ["rf.internal"]
# Endpoint keys (rf keys create --env ENV) on every /staging and /production
# route; always on when host is not a loopback address.
# require_keys = true
# Slow or idle clients: seconds to send complete request headers, longest pause
# in a request body, idle keep-alive; above max_connections requests get 503.
# header_timeout_s = 10
# body_timeout_s = 10
# keep_alive_s = 5
# max_connections = 1000

# Execution history (executions, their spans and session messages) older than
# `days`, or beyond the newest `max_executions`, is deleted by the server every
# `interval_minutes` and by `rf gc` (0 = no limit). Memory, commits that a release
# or an environment uses, and release history are never deleted.
# [retention]
# interval_minutes = 10
# plan_days = 30
# [retention.staging]
# days = 14
# max_executions = 50000
# [retention.production]
# days = 90
# max_executions = 1000000
"""


def init_workspace(root: Path, *, name: str | None = None, port: int = DEFAULT_PORT) -> Workspace:
    """Create ``rf.toml``, ``agents/``, ``.rf/`` and ``.gitignore`` in ``root``."""
    root = root.resolve()
    if (root / WORKSPACE_FILE).exists():
        raise WorkspaceError(f"{root} is already an rf workspace", "use it as it is, or pick another directory")
    root.mkdir(parents=True, exist_ok=True)
    ws_name = name or root.name or "workspace"
    (root / WORKSPACE_FILE).write_text(
        RF_TOML_TEMPLATE.format(name=ws_name, id=secrets.token_hex(8), port=port, max_body=DEFAULT_MAX_BODY),
        encoding="utf-8",
    )
    (root / "agents").mkdir(exist_ok=True)
    (root / STATE_DIR).mkdir(exist_ok=True)
    gitignore = root / ".gitignore"
    lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.exists() else []
    if ".rf/" not in lines:
        lines.append(".rf/")
        gitignore.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_workspace(root)


# ---------------------------------------------------------------- agent.toml


@dataclass
class AgentConfig:
    """Parsed ``agent.toml``."""

    name: str
    description: str = ""
    entrypoint: str = "agent:handle"
    timeout_s: float = DEFAULT_TIMEOUT_S
    prompts: list[str] = field(default_factory=list)
    connectors: list[str] = field(default_factory=list)
    #: Trace mode per environment: ``trace = "mode"`` (both) or ``[trace] staging/production``.
    trace: dict[str, str] = field(default_factory=lambda: dict.fromkeys(ENVIRONMENTS, DEFAULT_TRACE))
    trace_max_chars: int = DEFAULT_TRACE_MAX_CHARS  #: how much of each input/output a "standard" trace keeps
    #: ``[session] input``: the input field that is the user's message in the session.
    session_input: str = DEFAULT_MESSAGE_FIELD
    #: ``[session] output``: the output field that is the agent's message in the session.
    session_output: str = DEFAULT_MESSAGE_FIELD
    #: ``[env] pass = [...]``: variables copied from rf's own environment (when set there).
    env_pass: list[str] = field(default_factory=list)
    #: ``[env] NAME = "value"``: variables set to the literal value.
    env_set: dict[str, str] = field(default_factory=dict)
    #: ``[input] schema``: the JSON Schema the input must match (None: any input; rf.agent_input).
    input_schema: dict[str, Any] | None = None
    #: ``[uses] agents``: the agents it calls (``ctx.agents.invoke``), for the release dependency check.
    uses_agents: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def env_values(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables ``[env]`` adds to the worker's allow-listed environment: the passed
        names that are set in *environ* (default ``os.environ``), then the literal values."""
        source = os.environ if environ is None else environ
        values = {name: source[name] for name in self.env_pass if name in source}
        values.update(self.env_set)
        return values


ENTRYPOINT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Names ``[env]`` may not name: rf's own variables (configuration, ``RF_SECRET_*``
#: credentials, the server's token) and what rf sets for the worker itself.
ENV_RESERVED = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")


def _env_name(source: str, name: Any, where: str) -> str:
    if not isinstance(name, str) or not ENV_NAME_RE.match(name):
        raise InvalidAgent(
            f"{source}: [env] {where}{name!r} is not an environment variable name",
            "use letters, digits and '_' (not starting with a digit), e.g. MY_API_URL",
        )
    if name.upper().startswith("RF_"):
        raise InvalidAgent(
            f"{source}: [env] cannot give agent code {name}: RF_* variables are rf's own "
            "(configuration, RF_SECRET_* credentials) and never reach agent code",
            "rename the variable (e.g. MY_" + name[3:] + "), or store a secret with `rf credentials set` "
            "and use it through a connector or an LLM provider",
        )
    if name in ENV_RESERVED:
        raise InvalidAgent(
            f"{source}: [env] cannot set {name}: rf sets it for the worker",
            "put the modules the agent imports in its directory (it is first on sys.path)",
        )
    return name


def _parse_env(source: str, value: Any, *, strict: bool = True) -> tuple[list[str], dict[str, str]]:
    """Validate the ``[env]`` table: ``pass = ["NAME", ...]`` and ``NAME = "literal"`` entries.

    ``strict``: a name that is one of agent.toml's own keys (``description = "..."`` written
    below ``[env]``, which TOML puts in that table) is refused, saying where it belongs."""
    if not isinstance(value, dict):
        raise InvalidAgent(
            f"{source}: env must be a table",
            'write it as a table: [env] with pass = ["NAME", ...] (copied from rf\'s environment) '
            'and NAME = "value" lines (set as given)',
        )
    passed = value.get("pass", [])
    if not isinstance(passed, list) or not all(isinstance(n, str) for n in passed):
        raise InvalidAgent(f"{source}: [env] pass must be a list of variable names", 'e.g. pass = ["HTTPS_PROXY"]')
    env_pass = list(dict.fromkeys(_env_name(source, n, "pass: ") for n in passed))
    env_set: dict[str, str] = {}
    for name, literal in value.items():
        if name == "pass":
            continue
        if strict and name in AGENT_TOML_KEYS[""]:
            raise InvalidAgent(
                f"{source}: [env] {name}: {name} is an agent.toml key, and below [env] it would be an "
                "environment variable",
                f"move {name} above the first [table] line of agent.toml",
            )
        _env_name(source, name, "")
        if not isinstance(literal, str):
            raise InvalidAgent(
                f"{source}: [env] {name} must be a string, not {type(literal).__name__}",
                f'quote the value: {name} = "..." (or list the name in pass = [...] to copy it from rf\'s environment)',
            )
        if "\0" in literal:
            raise InvalidAgent(f"{source}: [env] {name} contains a NUL character")
        if name in env_pass:
            raise InvalidAgent(f"{source}: [env] {name} is both in pass and set to a value", "keep one of the two")
        env_set[name] = literal
    return env_pass, env_set


def _parse_trace(source: str, value: Any) -> dict[str, str]:
    """``trace = "mode"`` (both environments) or ``[trace] staging = "..."``, ``production = "..."``
    (an environment not named gets the default): the mode of each environment."""
    modes = ", ".join(TRACE_MODES)
    if isinstance(value, dict):
        trace = {env: value.get(env, DEFAULT_TRACE) for env in ENVIRONMENTS}
        for env, mode in trace.items():
            if mode not in TRACE_MODES:
                raise InvalidAgent(f"{source}: [trace] {env} must be one of {modes}, not {mode!r}",
                                   f'e.g. [trace] staging = "full", production = "minimal" (default {DEFAULT_TRACE})')
        return trace
    if isinstance(value, str) and value in TRACE_MODES:
        return dict.fromkeys(ENVIRONMENTS, value)
    raise InvalidAgent(f"{source}: trace must be one of {modes}, or a [trace] table, not {value!r}",
                       'trace = "full" sets both environments; [trace] staging = "full" and '
                       'production = "minimal" set each')


def _parse_session(source: str, value: Any) -> tuple[str, str]:
    """``[session] input = "field"``, ``output = "field"``: which input and output fields are the
    messages a session keeps (default ``message``; a value without that field is kept whole)."""
    if not isinstance(value, dict):
        raise InvalidAgent(f"{source}: session must be a table",
                           '[session] with input = "message" and output = "reply" (the fields that hold the messages)')
    fields = []
    for side in ("input", "output"):
        chosen = value.get(side, DEFAULT_MESSAGE_FIELD)
        if not isinstance(chosen, str) or not chosen:
            raise InvalidAgent(f"{source}: [session] {side} must be the name of a field of the {side}",
                               f'e.g. [session] {side} = "{"message" if side == "input" else "reply"}"')
        fields.append(chosen)
    return fields[0], fields[1]


def parse_agent_toml(name: str, text: str, *, source: str = "agent.toml", strict: bool = True) -> AgentConfig:
    """Parse and validate the text of an ``agent.toml``.

    ``strict`` (deploy, ``rf test``): a key rf does not know (:data:`AGENT_TOML_KEYS`) and an
    invalid prompt or connector name are errors. Commits already deployed are read with
    ``strict=False``: what an older rf accepted keeps running."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidAgent(f"{source} is not valid TOML: {exc}", "fix the file and deploy again") from None
    if strict:
        check_keys(data, AGENT_TOML_KEYS, source, "agent.toml", InvalidAgent)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InvalidAgent(f"{source}: description must be a string")
    entrypoint = data.get("entrypoint", "agent:handle")
    if not isinstance(entrypoint, str) or not ENTRYPOINT_RE.match(entrypoint):
        raise InvalidAgent(
            f"{source}: entrypoint {entrypoint!r} is not of the form 'module:function'",
            'for example: entrypoint = "agent:handle"',
        )
    timeout = data.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (0 < timeout <= 3600):
        raise InvalidAgent(f"{source}: timeout_s must be a number of seconds between 0 and 3600")
    lists: dict[str, list[str]] = {}
    for key, kind in (("prompts", "prompt"), ("connectors", "connector")):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidAgent(f"{source}: {key} must be a list of names", f'e.g. {key} = ["support-{kind}"]')
        if strict:
            for item in value:
                check_name(kind, item, where=f"{source}: {key}: ", error=InvalidAgent)
        lists[key] = value
    trace = _parse_trace(source, data.get("trace", DEFAULT_TRACE))
    trace_max_chars = data.get("trace_max_chars", DEFAULT_TRACE_MAX_CHARS)
    if isinstance(trace_max_chars, bool) or not isinstance(trace_max_chars, int) or not (
        10 <= trace_max_chars <= 1_000_000
    ):
        raise InvalidAgent(f"{source}: trace_max_chars must be a whole number between 10 and 1000000")
    session_input, session_output = _parse_session(source, data.get("session", {}))
    env_pass, env_set = _parse_env(source, data.get("env", {}), strict=strict)
    input_schema = None
    if "input" in data:
        from rf.agent_input import parse_input_table

        input_schema = parse_input_table(source, data["input"])
    uses = data.get("uses", {})
    uses_agents = uses.get("agents", []) if isinstance(uses, dict) else None
    if not isinstance(uses_agents, list) or not all(isinstance(a, str) for a in uses_agents):
        raise InvalidAgent(f"{source}: uses.agents must be a list of agent names", '[uses] agents = ["other-agent"]')
    if strict:
        for agent in uses_agents:
            check_name("agent", agent, where=f"{source}: uses.agents: ", error=InvalidAgent)
    return AgentConfig(
        name=name,
        description=description,
        entrypoint=entrypoint,
        timeout_s=float(timeout),
        prompts=lists["prompts"],
        connectors=lists["connectors"],
        trace=trace,
        trace_max_chars=trace_max_chars,
        session_input=session_input,
        session_output=session_output,
        env_pass=env_pass,
        env_set=env_set,
        input_schema=input_schema,
        uses_agents=uses_agents,
        raw=data,
    )


def resolve_agent_dir(ws: Workspace, name_or_path: str | None) -> tuple[str, Path]:
    """Map ``NAME``, a ``PATH`` to ``agents/NAME``, or (``None``) the agent directory the cwd
    is in, to ``(name, agents/NAME)``. Agents live in the workspace's ``agents/`` directory,
    one directory each, named after the agent: a path anywhere else is refused, saying so."""
    agents = ws.agents_dir
    if name_or_path is None:
        cwd = Path.cwd()
        for candidate in (cwd, *cwd.parents):
            if candidate.parent in (agents, agents.resolve()):
                return _agent_dir(ws, candidate.name, str(candidate))
            if candidate in (ws.root, agents):
                break
        if (cwd / "agent.toml").is_file():
            raise _outside_agents(ws, str(cwd), cwd)
        raise UsageError("which agent?", "name it: rf agents deploy NAME (or run the command inside agents/NAME)")
    if "/" not in name_or_path and os.sep not in name_or_path and name_or_path not in (".", ".."):
        return _agent_dir(ws, name_or_path, None)
    given = Path(os.path.abspath(name_or_path))  # ".." taken literally, links kept: agents/x may be one
    if given.parent != agents and given.resolve().parent != agents.resolve():
        raise _outside_agents(ws, name_or_path, given)
    return _agent_dir(ws, given.name, name_or_path)


def _outside_agents(ws: Workspace, shown: str, path: Path) -> UsageError:
    name = path.name if NAME_RE.match(path.name) else "NAME"
    return UsageError(
        f"{shown} is not a directory of this workspace's agents/ ({ws.agents_dir}): "
        "rf deploys and tests agents/NAME only",
        f"move it there (mv {shown} {ws.agents_dir / name}), then: rf agents deploy {name}",
    )


def _agent_dir(ws: Workspace, name: str, given: str | None) -> tuple[str, Path]:
    """``(name, agents/NAME)`` once the name is valid and the directory holds an agent.toml."""
    check_name("agent", name)
    directory = ws.agents_dir / name
    if not directory.is_dir():
        known = list_agent_dirs(ws)
        hint = (f"known agents: {', '.join(known)}" if known
                else "create agents/<name>/agent.toml (or `rf init --example hello`)")
        if given is None and Path(name).is_dir() and (Path(name) / "agent.toml").is_file():
            hint = f"./{name} is not in agents/: move it there (mv {name} {directory}), then: rf agents deploy {name}"
        raise InvalidAgent(f"no agent directory agents/{name} in {ws.root}", hint)
    if not (directory / "agent.toml").is_file():
        raise InvalidAgent(
            f"agents/{name} has no agent.toml",
            'add agent.toml with at least: entrypoint = "agent:handle"',
        )
    return name, directory


def list_agent_dirs(ws: Workspace) -> list[str]:
    if not ws.agents_dir.is_dir():
        return []
    return sorted(p.name for p in ws.agents_dir.iterdir() if (p / "agent.toml").is_file())


def _ignore_patterns(directory: Path) -> list[str]:
    patterns = list(ALWAYS_IGNORED)
    ignore_file = directory / ".rfignore"
    if ignore_file.is_file():
        for line in ignore_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.rstrip("/"))
    return patterns


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        if "/" in pattern:
            if fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


#: Snapshots bigger than this are refused: agent directories hold code, not data.
MAX_SNAPSHOT_BYTES = 50 * 1024 * 1024


def snapshot_dir(directory: Path) -> dict[str, bytes]:
    """Read an agent directory into ``{relative posix path: bytes}`` (ignores applied)."""
    patterns = _ignore_patterns(directory)
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        rel_dir = Path(dirpath).relative_to(directory).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not _ignored(rel_dir + d, patterns))
        for filename in sorted(filenames):
            rel = rel_dir + filename
            if _ignored(rel, patterns):
                continue
            path = Path(dirpath) / filename
            if path.is_symlink() and not path.resolve().is_relative_to(directory.resolve()):
                continue  # never pull files from outside the agent dir into a commit
            data = path.read_bytes()
            total += len(data)
            if total > MAX_SNAPSHOT_BYTES:
                raise InvalidAgent(
                    f"{directory} holds more than {MAX_SNAPSHOT_BYTES // (1024 * 1024)} MiB of files",
                    "list data files and build outputs in .rfignore",
                )
            files[rel] = data
    return files


def git_author() -> str:
    """The commit author: git's user.name, else $USER, else the OS login name."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, timeout=2, check=False
        ).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    name = os.environ.get("USER") or os.environ.get("USERNAME") or os.environ.get("LOGNAME")
    if name:
        return name
    try:  # no $USER (a container, cron, a service): the OS account's login name
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name or "unknown"
    except (ImportError, KeyError, OSError):
        return "unknown"
