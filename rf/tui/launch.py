"""``rf ui``: become the workspace's server (or attach to the running one), then run the dashboard.

The embedded server starts on a background thread *while* the app starts:
importing the web stack and opening the store overlaps with Textual's own
start-up, and the first Backend call (made in a worker thread) waits for the
server's Services. This keeps the first painted screen under the target.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rf import api, serverinfo
from rf.errors import RfError, ServerError

if TYPE_CHECKING:
    from rf.client import Backend, LocalBackend
    from rf.config import Workspace
    from rf.server.serve import RunningServer


def mark(what: str) -> None:
    """A start-up timing mark in the trace file (RF_TUI_TRACE with RF_TUI_MARKS=1; bench/tui.py)."""
    path = os.environ.get("RF_TUI_TRACE")
    if path and os.environ.get("RF_TUI_MARKS"):
        import json
        import time

        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": "mark", "what": what, "t": time.time(), "cpu": time.process_time()}) + "\n")


#: The dashboard's server log (``.rf/ui-server.log``) rolls over at this size (one older file kept).
UI_LOG_BYTES = 5 * 1024 * 1024


def _quiet_server_logs(ws: Workspace) -> None:
    """uvicorn logs to stderr, which would scribble over the full-screen app: send them to a file
    (at most ``UI_LOG_BYTES`` and one older file; a flood of one cause is summarised)."""
    from logging.handlers import RotatingFileHandler

    from rf.logsetup import add_repeat_filter

    log_dir = ws.ensure_state_dir()
    handler = RotatingFileHandler(Path(log_dir) / "ui-server.log", maxBytes=UI_LOG_BYTES, backupCount=1,
                                  encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    add_repeat_filter(handler)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "rf.server", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False


class EmbeddedServer:
    """The Backend of ``rf ui`` while (and after) its server starts on a thread.

    Method calls wait until the store is open; the dashboard makes them in
    worker threads, so the screen paints meanwhile, and they go to the
    Services in-process (no HTTP hop). Other terminals reach the same store
    through the server's management API.

    When the server can take Services that are already open, the store opens
    first and the web stack (uvicorn, litestar: ~1 s of imports and set-up)
    starts only after the first paint (:meth:`start_http`); otherwise the whole
    server starts at once on the thread.
    """

    kind = "local"

    def __init__(self, ws: Workspace) -> None:
        self.workspace = ws
        self.running: RunningServer | None = None
        self.notices: list[str] = []
        self._backend: LocalBackend | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()  #: the Backend can answer
        self._served = threading.Event()  #: the HTTP server runs (or failed to start)
        self._http_requested = threading.Event()
        self._listeners: list[Callable[[EmbeddedServer], None]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._start, name="rf-ui-server-start", daemon=True).start()

    def _start(self) -> None:
        from rf import compose
        from rf.client import LocalBackend

        try:
            services = compose.open_services(self.workspace, wait_s=5.0)
            self._backend = LocalBackend(services)
            self._ready.set()
            mark("store open")
            self._http_requested.wait(10)  # the first paint, or 10 s, whichever comes first
            self._serve(services)
        except BaseException as exc:  # noqa: BLE001 - shown by every call (a notification), never a traceback
            self._error = (
                exc
                if isinstance(exc, RfError)
                else RfError(
                    f"the embedded server could not start: {type(exc).__name__}: {exc}",
                    "run `rf serve` in a terminal to see why",
                )
            )
        finally:
            self._ready.set()
            with self._lock:
                self._served.set()
                listeners = list(self._listeners)
            for listener in listeners:
                listener(self)

    def _serve(self, services: Any) -> None:
        from rf import compose

        ws = self.workspace
        try:
            running = compose.start_server_thread(ws, services=services)
        except ServerError as exc:
            if "cannot listen" not in exc.message:
                raise
            # The configured port is taken (another workspace's server?): any free port will do.
            running = compose.start_server_thread(ws, port=0, services=services)
            self.notices.append(f"Port {ws.port} is busy: this workspace's server listens on {running.url}.")
        _quiet_server_logs(ws)
        self.running = running
        mark("server started")

    def start_http(self) -> None:
        """Start serving HTTP now (called after the first paint)."""
        self._http_requested.set()

    @property
    def url(self) -> str | None:
        return self.running.url if self.running is not None else None

    def when_ready(self, listener: Callable[[EmbeddedServer], None]) -> None:
        """Call ``listener`` once the HTTP server is up (or failed) — at once if it already is."""
        with self._lock:
            if not self._served.is_set():
                self._listeners.append(listener)
                return
        listener(self)

    def wait(self, timeout: float | None = 60.0) -> LocalBackend:
        if not self._ready.wait(timeout):
            raise ServerError("the embedded server did not start in time", "run `rf serve` to see why")
        if self._backend is None:
            raise self._error or ServerError("the embedded server did not start")
        return self._backend

    def __getattr__(self, name: str) -> Any:
        if name not in api.BY_NAME:
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.wait(), name)(*args, **kwargs)

        method.__name__ = name
        return method

    def close(self) -> None:
        self._http_requested.set()
        if self._served.wait(15) and self.running is not None:
            self.running.stop()  # also removes .rf/server.json (and closes the store)
        elif self._backend is not None:
            self._backend.close()


def main(ws: Workspace, *, env: str = "staging", view: str = "agents", trace_file: Path | None = None) -> None:
    mark("launch")
    from rf.client import connect
    from rf.tui.app import RfApp

    mark("textual imported")
    if trace_file is None and os.environ.get("RF_TUI_TRACE"):
        trace_file = Path(os.environ["RF_TUI_TRACE"])
    embedded: EmbeddedServer | None = None
    notices: list[str] = []
    url: str | None = None
    if os.environ.get("RF_SERVER_URL") or serverinfo.read(ws.server_file) is not None:
        backend: Any = connect(ws)
        info = serverinfo.read(ws.server_file)
        url = os.environ.get("RF_SERVER_URL") or (info.url if info else None)
        notices.append(f"Attached to the running rf server at {url}.")
    else:
        backend = embedded = EmbeddedServer(ws)
    app = RfApp(
        cast("Backend", backend),
        workspace=ws,
        env=env,
        server_url=url,
        start_view=view,
        trace_file=trace_file,
        notices=notices,
        server_pending=embedded is not None,
    )
    if embedded is not None:
        embedded.when_ready(lambda server: app.server_ready(server.url, server.notices))
        app.after_first_paint(embedded.start_http)
    mark("app created")
    try:
        app.run()
    finally:
        backend.close()
