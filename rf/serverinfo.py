"""``.rf/server.json``: how commands find the running owner of the store.

Written by ``rf serve``/``rf ui`` (mode 0600: it holds the API token), removed
on exit. A file whose pid is dead is stale: it is deleted and ignored.
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


def read(path: Path) -> ServerInfo | None:
    """The live server's info, or None (a stale file is removed)."""
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


def write(path: Path, info: ServerInfo) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
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
