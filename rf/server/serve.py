"""Running the server: bind, write ``.rf/server.json``, serve, clean up.

``rf serve`` runs it in the foreground; ``rf ui`` runs it on a background
thread (:func:`start_in_thread`). Either way this process becomes the single
owner of the DuckDB file and every other command reaches it over HTTP. On a
PostgreSQL store a second server of the same workspace is a replica
(``.rf/servers/<pid>.json``; rf.store.pg_replicas), not a conflict.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rf import logsetup, serverinfo
from rf.config import Workspace
from rf.errors import RfError, ServerError

log = logging.getLogger("rf.server")


def _bind(host: str, port: int) -> socket.socket:
    from rf.server.connections import ListeningSocket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio disables Nagle (TCP_NODELAY) on accepted
    # connections only when the listening socket says it is TCP; without it
    # every keep-alive response waits ~40 ms for the client's delayed ACK.
    # ListeningSocket: one log line, not thousands, when out of file descriptors.
    sock = ListeningSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "pick another port with --port (or [server] port in rf.toml), or stop what uses it",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class RunningServer:
    url: str
    token: str
    host: str
    port: int
    services: Any
    server: Any  # uvicorn.Server
    sock: socket.socket
    require_keys: bool = False
    reaper: Any = None
    thread: threading.Thread | None = None
    #: the file that names this server: ``.rf/server.json``, or a replica's ``.rf/servers/<pid>.json``
    info_file: Path | None = None

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


def prepare(ws: Workspace, *, host: str | None = None, port: int | None = None,
            services: Any = None) -> RunningServer:
    """Open the store (unless ``services`` already holds it), build the app, bind, write server.json."""
    import uvicorn

    from rf import compose
    from rf.server import connections, peer
    from rf.server.app import create_app
    from rf.server.fastpath import FastInvoke
    from rf.server.guard import Guard, is_loopback

    existing = serverinfo.read(ws.server_file)
    if existing is not None and not ws.store_url:  # one process owns a DuckDB file
        raise ServerError(
            f"a server already runs for this workspace at {existing.url} (pid {existing.pid})",
            "use it (every rf command goes through it), or stop it first "
            "(several servers need a PostgreSQL store: [store] url in rf.toml)",
        )
    host = host or ws.host
    port = ws.port if port is None else port
    limits = connections.limits_from(ws.raw.get("server") or {}, str(ws.root / "rf.toml"))
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{actual_port}"
    if services is None:
        try:
            services = compose.open_services(ws, server_url=url, wait_s=5.0)
        except RfError:
            sock.close()
            raise
    else:
        services.server_url = url  # rf ui opened the store first, to paint before the server is up
    if getattr(services.store, "shared", False):
        # A replica among the servers on this database (rf.store.pg_replicas): heartbeat, and
        # another server's release drops this one's cached heads and routing before it returns.
        services.store.start_replica(url, services.agents.forget_heads)
    # Executions a previous server left running (it was killed or crashed) are recorded as such
    # (on PostgreSQL: those of servers whose heartbeat stopped; the live replicas' are theirs).
    interrupted = services.store.recover_interrupted()
    if interrupted:
        log.warning("%d execution(s) were interrupted when the server last stopped; "
                    "see: rf executions list --status interrupted --env ENV", interrupted)
    token = secrets.token_urlsafe(32)
    open_files = connections.raise_open_files_limit()
    fitted = connections.fit_to_descriptors(limits, open_files)
    # The invoke fast path in front of the Litestar app (see rf.server.fastpath), and the one
    # request guard in front of both (see rf.server.guard).
    inner = FastInvoke(create_app(services, token, max_body_bytes=ws.max_body_bytes), services,
                       max_body_bytes=ws.max_body_bytes)
    require_keys = ws.require_keys or not is_loopback(host)
    reaper = peer.OrphanReaper(protected=lambda: _worker_pids(services))
    app = Guard(inner, services=services, token=token, bind_host=host, allowed_hosts=ws.allowed_hosts,
                require_keys=require_keys, peer_check=peer.from_descendant if reaper.start() else None)
    config = uvicorn.Config(
        app, log_level=os.environ.get("RF_LOG_LEVEL", "warning").lower(), access_log=False,
        lifespan="on", timeout_graceful_shutdown=5, server_header=False,
        # X-Forwarded-* would rewrite the client address the guard's peer check reads: agent
        # code on 127.0.0.1 could claim to be elsewhere (docs/security.md, "Proxy headers").
        proxy_headers=False,
        # Header and body deadlines, keep-alive and the connection limit (rf.server.connections).
        http=connections.protocol_class(fitted),
    )
    logsetup.configure()  # after the web stack's own set-up: no outbound URLs logged, secrets redacted
    if fitted.max_connections < limits.max_connections:
        log.warning("[server] max_connections lowered from %d to %d: this process may open only %d files "
                    "(raise that with `ulimit -n`)", limits.max_connections, fitted.max_connections, open_files)
    server = uvicorn.Server(config)
    info = serverinfo.ServerInfo(pid=os.getpid(), url=url, token=token, host=host, port=actual_port)
    info_file = ws.server_file
    if serverinfo.read_all(ws.server_file):  # another server of this workspace runs: this one is a replica
        info_file = serverinfo.write_replica(ws.server_file, info)
    else:
        serverinfo.write(ws.server_file, info)
    return RunningServer(url=url, token=token, host=host, port=actual_port, services=services, server=server,
                         sock=sock, require_keys=require_keys, reaper=reaper, info_file=info_file)


def _worker_pids(services: Any) -> set[int]:
    """The pool's own workers: it waits on them itself, so the orphan reaper leaves them alone."""
    pool = getattr(services, "_pool", None)
    by_key = getattr(pool, "_by_key", None) or {}
    return {w.pid for workers in list(by_key.values()) for w in list(workers)}


def _cleanup(ws: Workspace, running: RunningServer) -> None:
    serverinfo.remove(running.info_file or ws.server_file, os.getpid())
    logsetup.flush_repeated()
    if running.reaper is not None:
        running.reaper.stop()
    with contextlib.suppress(Exception):
        running.services.close()
    with contextlib.suppress(Exception):
        running.services.store.close()
    with contextlib.suppress(OSError):
        running.sock.close()


def serve_forever(ws: Workspace, running: RunningServer) -> None:
    """Serve in this thread until interrupted (SIGINT/SIGTERM), then clean up."""
    import gc
    import signal

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the
    # signal; with this handler that ends in our `finally`, not a dead process
    # that leaves .rf/server.json behind.
    previous = signal.signal(signal.SIGTERM, _terminate)
    # Everything loaded so far (the web stack, the store, the app) lives as long as the
    # server: move it out of the garbage collector's generations, so the collections
    # that requests trigger only walk what requests allocate.
    gc.collect()
    gc.freeze()
    try:
        running.server.run(sockets=[running.sock])
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        _cleanup(ws, running)


def start_in_thread(ws: Workspace, *, host: str | None = None, port: int | None = None,
                    services: Any = None) -> RunningServer:
    """Serve on a daemon thread (used by ``rf ui``); ``stop()`` shuts it down."""
    running = prepare(ws, host=host, port=port, services=services)
    # uvicorn installs signal handlers only on the main thread, so this is safe.

    def target() -> None:
        try:
            running.server.run(sockets=[running.sock])
        finally:
            _cleanup(ws, running)

    running.thread = threading.Thread(target=target, name="rf-server", daemon=True)
    running.thread.start()
    deadline = time.monotonic() + 10
    while not running.server.started and time.monotonic() < deadline:
        if not running.thread.is_alive():
            raise ServerError("the embedded server stopped during start-up", "run `rf serve` to see why")
        time.sleep(0.01)
    return running
