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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rf.errors import InvalidAgent, UsageError, WorkspaceError

WORKSPACE_FILE = "rf.toml"
STATE_DIR = ".rf"
DEFAULT_PORT = 7410
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_TIMEOUT_S = 60.0

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

#: Paths never included in an agent snapshot.
ALWAYS_IGNORED = ("__pycache__", ".venv", ".rf", "*.pyc", ".git", ".DS_Store", "*.egg-info")


def check_name(kind: str, name: str) -> str:
    """Validate a slug-like name (agents, prompts, connectors...)."""
    if not NAME_RE.match(name or ""):
        raise UsageError(
            f"invalid {kind} name {name!r}",
            "use lowercase letters, digits, '-' and '_' (starting with a letter or digit, at most 63 characters)",
        )
    return name


@dataclass
class Workspace:
    """A workspace directory and its parsed ``rf.toml``."""

    root: Path
    name: str
    id: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY
    raw: dict[str, Any] = field(default_factory=dict)

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
    ws = data.get("workspace", {}) if isinstance(data.get("workspace"), dict) else {}
    server = data.get("server", {}) if isinstance(data.get("server"), dict) else {}
    port = server.get("port", DEFAULT_PORT)
    if not isinstance(port, int) or not (0 <= port < 65536):
        raise WorkspaceError(f"{path}: [server] port must be an integer between 0 and 65535", "fix rf.toml")
    max_body = server.get("max_body_bytes", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or max_body <= 0:
        raise WorkspaceError(f"{path}: [server] max_body_bytes must be a positive integer", "fix rf.toml")
    ws_id = str(ws.get("id") or hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16])
    return Workspace(
        root=root.resolve(),
        name=str(ws.get("name") or root.resolve().name),
        id=ws_id,
        host=str(server.get("host", "127.0.0.1")),
        port=port,
        max_body_bytes=max_body,
        raw=data,
    )


RF_TOML_TEMPLATE = """\
# rf workspace — https://example.invalid/rf (see README)
[workspace]
name = "{name}"
id = "{id}"

[server]
# The embedded server (rf serve / rf ui) binds here. Keep 127.0.0.1 unless you
# put an authenticating proxy in front of it.
host = "127.0.0.1"
port = {port}
# Request bodies above this size are refused with 413.
max_body_bytes = {max_body}
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
    trace: str = "standard"
    trace_max_chars: int = 2000  #: how much of each input/output a "standard" trace keeps
    raw: dict[str, Any] = field(default_factory=dict)


ENTRYPOINT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def parse_agent_toml(name: str, text: str, *, source: str = "agent.toml") -> AgentConfig:
    """Parse and validate the text of an ``agent.toml``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidAgent(f"{source} is not valid TOML: {exc}", "fix the file and deploy again") from None
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
    for key in ("prompts", "connectors"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidAgent(f"{source}: {key} must be a list of names")
        lists[key] = value
    trace = data.get("trace", "standard")
    if trace not in ("full", "standard", "minimal"):
        raise InvalidAgent(f"{source}: trace must be one of full, standard, minimal")
    trace_max_chars = data.get("trace_max_chars", 2000)
    if isinstance(trace_max_chars, bool) or not isinstance(trace_max_chars, int) or not (
        10 <= trace_max_chars <= 1_000_000
    ):
        raise InvalidAgent(f"{source}: trace_max_chars must be a whole number between 10 and 1000000")
    return AgentConfig(
        name=name,
        description=description,
        entrypoint=entrypoint,
        timeout_s=float(timeout),
        prompts=lists["prompts"],
        connectors=lists["connectors"],
        trace=trace,
        trace_max_chars=trace_max_chars,
        raw=data,
    )


def resolve_agent_dir(ws: Workspace, name_or_path: str | None) -> tuple[str, Path]:
    """Map ``NAME`` or ``PATH`` (or the cwd when inside an agent dir) to (name, dir)."""
    if name_or_path is None:
        cwd = Path.cwd().resolve()
        for candidate in (cwd, *cwd.parents):
            if (candidate / "agent.toml").is_file():
                return check_name("agent", candidate.name), candidate
            if candidate == ws.root:
                break
        raise UsageError("which agent?", "name it: rf agents deploy NAME (or run the command inside the agent's directory)")
    as_path = Path(name_or_path)
    if (NAME_RE.match(name_or_path) and not as_path.exists()) or (NAME_RE.match(name_or_path) and (ws.agents_dir / name_or_path).is_dir()):
        directory = ws.agents_dir / name_or_path
    else:
        directory = as_path
    directory = directory.resolve()
    if not directory.is_dir():
        known = list_agent_dirs(ws)
        raise InvalidAgent(
            f"no agent directory {directory}",
            f"known agents: {', '.join(known)}" if known else "create agents/<name>/agent.toml (or `rf init --example hello`)",
        )
    if not (directory / "agent.toml").is_file():
        raise InvalidAgent(
            f"{directory} has no agent.toml",
            'add agent.toml with at least: entrypoint = "agent:handle"',
        )
    return check_name("agent", directory.name), directory


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
    """The commit author: git's user.name, else $USER."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, timeout=2, check=False
        ).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"
