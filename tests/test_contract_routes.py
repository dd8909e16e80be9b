"""Every management route through both backends: one script calls each Backend method
(the in-process store, then a real `rf serve` over HTTP) and the two transcripts —
each answer's shape and values, or the error's code — must be the same. A route that
no script step calls fails the test, so a new route gets a step."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import write_agent
from rf import api
from rf.client import Backend, HttpBackend, open_local
from rf.config import init_workspace, snapshot_dir
from rf.errors import RfError
from rf.models import to_dict
from rf.services.users import owner

#: The author both backends record: in-process the caller's own name (the CLI passes git's
#: user.name), over HTTP the name the token belongs to (the server's own token: the owner).
ME = owner().name

MEMORY_AGENT = (
    "def handle(input, ctx):\n"
    "    ctx.memory.set('greeted', {'name': (input or {}).get('name', 'x')})\n"
    "    return {'message': 'hi ' + str((input or {}).get('name', 'x'))}\n"
)
OPENAPI = ('{"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "paths": {"/items": {"get": '
           '{"operationId": "list-items", "responses": {"200": {"description": "ok"}}}}}}')

#: The MCP endpoint (tests/mcp_tool_server.py) the script's MCP connector lists tools from.
MCP_SERVER: list[str] = []

_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?$")
_ID = re.compile(r"^[a-z]{1,6}[_-][0-9A-Za-z_-]{6,}$")
_HEX = re.compile(r"^[0-9a-f]{12,}$")
#: Values that differ from run to run by nature (clocks, process ids, sizes of a database file; the
#: servers on a store: the in-process backend has none).
_VOLATILE = re.compile(r"(_ms|_ns|_at|pid|_s|bytes|size|_mb|url|path|location|root|workspace|secret|token|key"
                       r"|prefix|started|ended|when|since|server|version|storage|store|backend|seconds|replicas)$")


def normalize(value: Any, key: str = "") -> Any:
    if key and _VOLATILE.search(key):
        return "<volatile>"
    if isinstance(value, dict):
        return {k: normalize(v, str(k)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        if _TIME.match(value):
            return "<time>"
        if _ID.match(value) or _HEX.match(value):
            return "<id>"
        value = re.sub(r"\b[0-9a-f]{12,}\b", "<id>", value)
        return re.sub(r"\b[a-z]{1,6}[_-][0-9A-Za-z]{6,}\b", "<id>", value)
    if isinstance(value, float):
        return round(value, 3)
    return value


class Recorder:
    """Calls a backend's methods and writes down each answer (normalized) or error code."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.called: set[str] = set()
        self.transcript: list[tuple[str, Any]] = []

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.called.add(method)
        try:
            result = getattr(self.backend, method)(*args, **kwargs)
        except RfError as exc:
            self.transcript.append((method, {"error": exc.code}))
            return None
        shown = result if isinstance(result, dict | list | str | int | float | bool) or result is None \
            else to_dict(result)
        if isinstance(result, list):
            shown = [to_dict(r) if not isinstance(r, dict | str | int | float) else r for r in result]
        self.transcript.append((method, normalize(shown)))
        return result


def script(call: Recorder, root: Path) -> None:
    """A user's day: every management route at least once, in an order where each can succeed."""
    files = snapshot_dir(root / "agents" / "hello")
    call("status")
    deployed = call("deploy", "hello", files, "v1", ME)
    call("deploy", "mem", snapshot_dir(root / "agents" / "mem"), "v1", ME)
    call("list_agents")
    call("get_agent", "hello")
    call("history", "hello")
    call("diff_agent", "hello")
    call("run_test", "hello", files, {"name": "t"})
    evaluated = call("run_eval", "hello", "staging", None, None, {  # the working copy with a one-case suite
        **files, "evals/smoke.jsonl": b'{"id": "greets", "input": {"name": "t"}, "expect": {"contains": "hello, t"}}\n'})
    call("list_eval_runs", "hello")
    call("get_eval_run", evaluated.id if evaluated else "missing")
    call("eval_suite", "hello")  # the deployed commit holds no suite: an empty one
    call("eval_suite", "hello", "production", deployed.commit.id if deployed and deployed.commit else None)
    call("promote", "hello", ME, "first", True)
    call("promote", "mem", ME, "first", True)
    ex = call("invoke", "staging", "mem", {"name": "ada"}, "s-contract")
    call("invoke", "production", "hello", {"name": "p"})
    call("replay", "hello", "production", "staging", 1)  # that execution, again on staging's state
    call("list_executions", "staging")
    call("get_execution", ex.id if ex else "missing")
    # prompts
    call("create_prompt", "greeting", "hi {{name}}", ME, "first")
    call("set_prompt", "greeting", "hello {{name}}", ME, "second")
    call("list_prompts")
    call("get_prompt", "greeting")
    call("prompt_history", "greeting")
    call("diff_prompt", "greeting")
    call("publish_prompt", "greeting", ME, "go")
    call("create_prompt", "old", "bye", ME, "first")
    call("delete_prompt", "old")
    # credentials and connectors
    call("set_credential", "crm-token", "contract-secret-1", "CRM")
    call("list_credentials")
    call("get_credential", "crm-token")
    call("credential_usage", "crm-token")
    call("create_connector", "crm", "http://127.0.0.1:9/api", "bearer", "crm-token")
    call("edit_connector", "crm", base_url="http://127.0.0.1:9/sandbox")
    call("add_resource", "crm", "get-item", "GET", "/items/{id}")
    call("edit_resource", "crm", "get-item", description="one item")
    call("import_openapi", "crm", OPENAPI)
    call("remove_resource", "crm", "list-items")
    call("create_connector", "tools", MCP_SERVER[0], kind="mcp")  # an MCP server: its tools are the resources
    call("refresh_connector", "tools")
    call("delete_connector", "tools")
    call("list_connectors", "staging")
    call("get_connector", "crm")
    call("diff_connector", "crm")
    call("connector_settings", "crm")
    call("publish_connector", "crm", ME, "live")
    call("create_connector", "tmp", "http://127.0.0.1:9/tmp")
    call("delete_connector", "tmp")
    call("delete_credential", "crm-token")
    # providers
    call("add_provider", "mock2", "mock")
    call("list_providers")
    call("get_provider", "mock2")
    call("set_default_provider", "mock2")
    call("test_provider", "mock2")
    call("set_default_provider", "mock")
    call("remove_provider", "mock2", True)
    # sessions, memory, traces
    call("list_sessions", "staging")
    call("get_session", "s-contract", "staging")
    call("list_memory", "staging")
    call("get_memory", "greeted", "staging")
    call("delete_memory", "greeted", "staging")
    call("clear_memory", "staging")
    call("list_traces", "staging")
    call("get_trace", ex.id if ex else "missing")
    call("export_spans", "staging")
    # triggers
    t = call("create_trigger", "hello", "schedule", "0 3 * * *")
    tid = t.id if t else "missing"
    call("list_triggers", "staging")
    call("get_trigger", tid)
    call("edit_trigger", tid, schedule="0 4 * * *")
    call("fire_trigger", tid)
    call("set_trigger_enabled", tid, False)
    copy = call("duplicate_trigger", tid, "production")
    call("delete_trigger", copy.id if copy else "missing")
    call("delete_trigger", tid)
    # releases
    call("release_items")
    call("delete_agent", "hello")
    plan = call("plan_release", ["agent:hello"])
    call("plan_approvals", plan.id if plan else "missing")
    call("approve_plan", plan.id if plan else "missing", "lgtm")  # (refused: its author cannot approve it)
    release = call("publish_release", None, False, plan.id if plan else "missing", "remove hello", ME)
    call("list_releases")
    call("get_release", release.id if release else "missing")
    call("plan_rollback", release.id if release else "missing")
    call("rollback_release", release.id if release else "missing", False, "undo", ME)
    call("deploy", "hello", files, "v2", ME)
    # a canary release: started, weighted, aborted; started again and promoted
    call("publish_release", ["agent:hello"], False, None, "canary", ME, False, False, False, 10)
    call("set_canary_weight", 100, "all of it", ME)  # (every request on the canary: the same arm both runs)
    call("invoke", "production", "hello", {"name": "c"}, "s-canary")
    call("canary_status")
    call("canary_running")
    call("abort_canary", "enough", ME)
    call("publish_release", ["agent:hello"], False, None, "canary again", ME, False, False, False, 10)
    call("promote_canary", "good", ME)
    # knowledge and data
    call("create_kb", "docs")
    call("list_kbs")
    call("get_kb", "docs")
    call("kb_upload", "docs", {"a.txt": b"rf keeps staging and production apart."})
    call("kb_upload_piece", "docs", "b1", "big.txt", 0,
         {"big.txt": b"pieces of a large file"})
    call("kb_commit", "docs", "b1")
    call("kb_abort", "docs", "b2")
    call("kb_documents", "docs")
    call("search_kb", "docs", "staging production", 3)
    call("kb_remove_document", "docs", "a.txt")
    call("set_kb_embedder", "docs", "default")
    call("delete_kb", "docs")
    (root / "sales.csv").write_text("region,total\nnorth,3\nsouth,4\n")
    call("add_data_source", "sales", "file", str(root / "sales.csv"))
    call("list_data_sources")
    call("get_data_source", "sales")
    call("query_data", "sales", "SELECT region, total FROM sales ORDER BY region")
    call("remove_data_source", "sales")
    # endpoint keys and maintenance
    key = call("create_key", "staging", "ci", ME)
    call("list_keys", "staging")
    call("revoke_key", key.key.id if key else "missing", "staging")
    call("gc", True)
    # users, roles, personal tokens, the audit log
    call("whoami")
    call("add_user", "bea", "developer")
    call("set_user_role", "bea", "publisher")
    call("list_users")
    token = call("create_token", "laptop", "bea")
    call("list_tokens", "bea")
    call("revoke_token", token.token.id if token else "missing")
    call("remove_user", "bea")
    call("list_audit")
    # a request body sent ahead in chunks (rf.services.uploads)
    call("upload_chunk", "contract-upload-1", 0, 4, b"abcd")
    assert deployed is not None


def transcript(backend_factory: Callable[[Path], Backend], root: Path) -> Recorder:
    backend = backend_factory(root)
    call = Recorder(backend)
    try:
        script(call, root)
    finally:
        backend.close()
    return call


@pytest.mark.parametrize("store", ["duckdb", "postgresql"])
def test_every_route_answers_the_same_through_both_backends(tmp_path: Path, store: str,
                                                             request: pytest.FixtureRequest) -> None:
    """On each store: the DuckDB file; a real PostgreSQL server (tests/pgserver.py) behind the HTTP
    backend, compared with the in-process backend on DuckDB, so both stores answer the same."""
    from conftest import start_server, use_store

    pg = request.getfixturevalue("pg_databases") if store == "postgresql" else None

    def workspace(name: str) -> Path:
        ws = init_workspace(tmp_path / name)
        use_store(ws.root, store if name == "http" else "duckdb", pg)
        write_agent(ws.root, "hello")
        write_agent(ws.root, "mem", code=MEMORY_AGENT)
        return ws.root

    local_root, http_root = workspace("local"), workspace("http")
    from mcp_tool_server import serve

    from rf.config import find_workspace

    with serve("contract") as mcp_url:
        MCP_SERVER[:] = [mcp_url]
        local = transcript(lambda root: open_local(find_workspace(str(root))), local_root)
        srv = start_server(http_root)
        try:
            http = transcript(lambda root: HttpBackend(srv.url, srv.token, find_workspace(str(root))), http_root)
        finally:
            srv.stop()
    routes = {r.name for r in api.ROUTES}
    assert routes - local.called == set(), "give these routes a step in script()"
    assert len(local.transcript) == len(http.transcript)
    for (method, a), (_, b) in zip(local.transcript, http.transcript, strict=True):
        assert a == b, f"{method}: the two backends answer differently\nlocal: {a}\nhttp:  {b}"
    # each ran on the store it was given (no DuckDB file next to a PostgreSQL store)
    assert (local_root / ".rf" / "rf.duckdb").exists()
    assert (http_root / ".rf" / "rf.duckdb").exists() is (store == "duckdb")
    # the script succeeded where it should (an error here is a bug the transcript hides)
    errors = [(m, r) for m, r in local.transcript if isinstance(r, dict) and set(r) == {"error"}]
    assert errors == [("approve_plan", {"error": "usage"})], errors
