"""Who is on the other end of a local connection: refuse the management API to agent code.

Agent code runs with the user's privileges, so it can read ``.rf/server.json``
and its token. What it cannot hide is where it runs: every worker is a child
of the server, and everything agent code starts is a descendant of a worker.
So before a management request is served, the server finds the process that
holds the client end of the TCP connection (Linux: ``/proc/net/tcp{,6}`` gives
the socket's inode, ``/proc/PID/fd`` who holds it) among its own descendants;
if one does, the request came from agent code and is refused.

A process that double-forks to leave the tree would be re-parented to init;
the server makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``),
so such orphans are re-parented to the server instead and stay descendants.
The server reaps the orphans it adopts (a zombie that nobody waited on for two
scans), so none pile up.

This is Linux-only; elsewhere :func:`from_descendant` answers False and
docs/security.md says what that leaves open. It is not a sandbox: code with
the user's privileges can still do anything the user can by other routes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("rf.server")

PR_SET_CHILD_SUBREAPER = 36
SUPPORTED = sys.platform.startswith("linux") and Path("/proc/net/tcp").exists()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        with contextlib.suppress(OSError, ValueError):
            kids.extend(int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    return kids


def _all_children(root: int) -> dict[int, list[int]]:
    """``{ppid: [pid, ...]}`` for every process (the slow path, when ``children`` files are missing)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


_HAS_CHILDREN_FILE = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists() if SUPPORTED else False


def descendants(root: int | None = None) -> set[int]:
    """Every process below ``root`` (default: this one)."""
    root = os.getpid() if root is None else root
    found: set[int] = set()
    if _HAS_CHILDREN_FILE:
        stack = _children(root)
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.add(pid)
                stack.extend(_children(pid))
        return found
    tree = _all_children(root)
    stack = list(tree.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(tree.get(pid, []))
    return found


def _decode(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def _normal(ip: str) -> str:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def client_socket_inode(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The inode of the socket at the *client* end of a local TCP connection, or None."""
    want_local = (_normal(client[0]), client[1])
    want_remote_port = server[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            try:
                if _decode(fields[1]) == want_local and _decode(fields[2])[1] == want_remote_port:
                    return int(fields[9])
            except ValueError:
                continue
    return None


def holders(inode: int, pids: set[int]) -> list[int]:
    """Which of ``pids`` hold an fd on socket ``inode``."""
    target = f"socket:[{inode}]"
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    found.append(pid)
                    break
    return found


def from_descendant(client: tuple[str, int] | None, server: tuple[str, int] | None) -> bool:
    """Whether a connection's client end is held by a process this server started (agent code)."""
    if not SUPPORTED or client is None or server is None:
        return False
    mine = descendants()
    if not mine:
        return False
    try:
        inode = client_socket_inode((client[0], int(client[1])), (server[0], int(server[1])))
    except ValueError:
        return False
    return inode is not None and bool(holders(inode, mine))


class OrphanReaper:
    """Make this process the subreaper of what its children leave behind, and reap those orphans."""

    def __init__(self, interval_s: float = 2.0, protected: Callable[[], set[int]] | None = None) -> None:
        self.interval_s = interval_s
        self.protected = protected
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_zombies: set[int] = set()

    def start(self) -> bool:
        if not SUPPORTED:
            return False
        libc_name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                return False
        except (OSError, AttributeError):
            return False
        self._thread = threading.Thread(target=self._loop, name="rf-reaper", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.reap_once()

    def reap_once(self) -> int:
        """Reap children that have been zombies since the last scan (nobody else waits on them)."""
        zombies = set()
        for pid in _children(os.getpid()):
            with contextlib.suppress(OSError, IndexError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    zombies.add(pid)
        reaped = 0
        spare = self.protected() if self.protected is not None else set()
        for pid in (zombies & self._seen_zombies) - spare:
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
        self._seen_zombies = zombies
        return reaped
