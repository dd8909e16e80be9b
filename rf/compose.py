"""The composition root: the one place that builds rf's object graph.

    workspace (rf.config) ─▶ store (rf.store.open_store: DuckDB or PostgreSQL)
                           ─▶ Services (rf.services: repositories, worker pool, scheduler, …)
                           ─▶ the server (rf.server: endpoints, management API, MCP, OpenAI door)

The CLI (``rf/cli``), the dashboard (``rf/tui``) and the server's own start-up build
through here, so none of them opens the store, makes ``Services`` or starts the server
on its own (tests/test_layers.py holds them to the arrows in docs/architecture.md).
Everything is imported lazily: ``rf --help`` and the HTTP client never pay for DuckDB,
Litestar or uvicorn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rf.client import LocalBackend
    from rf.config import Workspace
    from rf.errors import RfError
    from rf.models import StoreCopy, StoreInfo
    from rf.server.serve import RunningServer
    from rf.services import Services


def open_services(ws: Workspace, *, server_url: str | None = None, wait_s: float = 3.0) -> Services:
    """Open the workspace's store ([store] url: PostgreSQL, else .rf/rf.duckdb) and the
    services over it (the pool and the scheduler start when first used)."""
    from rf.services import Services
    from rf.store import open_store

    store = open_store(ws, wait_s=wait_s)
    try:
        return Services(store, ws, server_url=server_url)
    except BaseException:
        store.close()
        raise


def open_local(ws: Workspace, *, wait_s: float = 3.0) -> LocalBackend:
    """The Backend that calls the services in this process (no server runs)."""
    from rf.client import LocalBackend

    return LocalBackend(open_services(ws, wait_s=wait_s))


def translate_error(exc: BaseException) -> RfError | None:
    """A store's exception (DuckDB's, psycopg's) as an RfError, None if it is none of theirs.
    Costs nothing when no store was opened in this process."""
    if "duckdb" not in sys.modules and "psycopg" not in sys.modules:
        return None
    from rf.store import translate_error as store_error

    return store_error(exc)


def prepare_server(ws: Workspace, *, host: str | None = None, port: int | None = None,
                   services: Services | None = None) -> RunningServer:
    """Bind ``rf serve``'s socket over the workspace's services (opened here unless given),
    and write its discovery file; :func:`serve_forever` then serves until stopped."""
    from rf.server.serve import prepare

    return prepare(ws, host=host, port=port, services=services)


def serve_forever(ws: Workspace, running: RunningServer) -> None:
    from rf.server.serve import serve_forever as forever

    forever(ws, running)


def start_server_thread(ws: Workspace, *, port: int | None = None, services: Services | None = None) -> RunningServer:
    """The dashboard's embedded server, on a thread of this process, over *services* (the
    dashboard opens them first, to paint before the web stack is up)."""
    from rf.server.serve import start_in_thread

    return start_in_thread(ws, port=port, services=services)


def mcp_server_parts() -> Any:
    """``rf mcp`` (stdio): the MCP server's pieces (build_server, environment_tools, call_tool,
    error_outcome), served by the CLI over stdin/stdout."""
    from rf.server import mcp_server

    return mcp_server


# ---------------------------------------------------------------- rf store: the store as a whole
def _store_busy(exc: RfError, doing: str) -> RfError:
    """DuckDB's "in use by another process" for a command that needs the file to itself."""
    from rf.errors import StoreError

    if "in use by another process" not in exc.message:
        return exc
    return StoreError(exc.message, f"stop the rf server (rf serve, rf ui) that uses it, then {doing} again")


def store_info(ws: Workspace) -> StoreInfo:
    """``rf store info``: the workspace's store (either kind), opened in this process."""
    from rf.errors import StoreError
    from rf.store import open_store
    from rf.store.ops import store_info as info

    try:
        store = open_store(ws, wait_s=0.5)
    except StoreError as exc:
        raise _store_busy(exc, "run rf store info (or use rf status, which asks the server)") from None
    try:
        return info(store)
    finally:
        store.close()


def copy_store(ws: Workspace, to_url: str, *, password_env: str | None = None,
               progress: Callable[[str, int], None] | None = None) -> StoreCopy:
    """``rf store copy --to URL``: the workspace's DuckDB file copied into an empty PostgreSQL database."""
    from rf.config import check_store_url
    from rf.errors import RfError, StoreError, UsageError
    from rf.store import Store
    from rf.store.ops import copy_to_postgres
    from rf.store.pg import PgStore

    try:
        url = check_store_url(to_url, "--to")
    except RfError as exc:
        raise UsageError(exc.message.replace("[store] url", "the target"),
                         "e.g. --to postgresql://USER@HOST:PORT/DATABASE (an empty database)") from None
    if not ws.db_path.is_file():
        raise UsageError(f"this workspace has no DuckDB store to copy ({ws.db_path} does not exist)",
                         "rf store copy copies the DuckDB file a workspace keeps in .rf/; run it in that workspace")
    try:
        source = Store.open(ws.db_path, wait_s=0.5)
    except StoreError as exc:
        raise _store_busy(exc, "run rf store copy") from None
    try:
        target = PgStore.open(url, password_env=password_env)
        try:
            return copy_to_postgres(source, target, progress)
        finally:
            target.close()
    finally:
        source.close()
