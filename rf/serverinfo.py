"""``.rf/server.json``: how commands find the running owner of the store.

Written by ``rf serve``/``rf ui`` (mode 0600: it holds the API token), removed
on exit. A file whose pid is dead is stale: it is deleted and ignored.

Replicas (several ``rf serve`` of one workspace on one PostgreSQL store): the
first writes ``server.json``, each other one ``servers/<pid>.json`` beside it
(same content, same mode). :func:`read` answers the first live one, trying
``server.json`` first: when several are alive, the first that accepts a TCP
connection (a replica that was killed is skipped, its file removed).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServerInfo:
    pid: int
    url: str
    token: str
    host: str = "127.0.0.1"
    port: int = 0


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def replicas_dir(path: Path) -> Path:
    """Where the replicas of ``path`` (``.rf/server.json``) write their files."""
    return path.parent / "servers"


def _read_one(path: Path) -> ServerInfo | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = ServerInfo(pid=int(data["pid"]), url=str(data["url"]), token=str(data["token"]),
                          host=str(data.get("host", "127.0.0.1")), port=int(data.get("port", 0)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    if not pid_alive(info.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return info


def read_all(path: Path) -> list[ServerInfo]:
    """Every live server of the workspace: ``server.json``'s first, then the replicas' (oldest
    first). Stale files are removed."""
    found = []
    first = _read_one(path)
    if first is not None:
        found.append(first)
    folder = replicas_dir(path)
    try:
        files = sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    except OSError:
        files = []
    for file in files:
        with contextlib.suppress(OSError):
            info = _read_one(file)
            if info is not None and all(info.pid != f.pid for f in found):
                found.append(info)
    return found


def _answers(info: ServerInfo, timeout: float = 0.5) -> bool:
    import socket

    host = info.host if info.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    try:
        with socket.create_connection((host, info.port), timeout=timeout):
            return True
    except OSError:
        return False


def read(path: Path) -> ServerInfo | None:
    """The live server's info (with replicas: the first that answers), or None (a stale file is removed)."""
    live = read_all(path)
    if len(live) <= 1:
        return live[0] if live else None
    for info in live:
        if info.port and _answers(info):
            return info
    return live[0]


def write_replica(path: Path, info: ServerInfo) -> Path:
    """Write a replica's file (``servers/<pid>.json`` beside ``path``): where it went."""
    folder = replicas_dir(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / f"{info.pid}.json"
    write(target, info)
    return target


def write(path: Path, info: ServerInfo) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(info.__dict__, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def remove(path: Path, pid: int | None = None) -> None:
    """Remove the file (only if it is ours when ``pid`` is given)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        if pid is not None:
            data = json.loads(path.read_text(encoding="utf-8"))
            if int(data["pid"]) != pid:
                return
        path.unlink()
