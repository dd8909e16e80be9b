"""Production changes only through a release, on every route and command.

One table sends every mutating management route at production through a real
`rf serve` (the HTTP backend the CLI and dashboard use) and expects either a
refusal that says what to do instead, or a change *staged* as a release item —
never a direct change: production's agents, published prompts, connectors
(resources and settings), live triggers, memory and release history are
compared before and after each call. Every non-GET route must be classified
below, so a new route cannot skip the question.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from conftest import ServerProc, run_rf, run_rf_here, write_agent
from rf import api
from rf.client import HttpBackend
from rf.errors import RfError
from rf.models import to_dict

#: Routes that are the release path itself: each call that succeeds records a release.
RELEASES = {"promote", "publish_prompt", "publish_connector", "publish_release", "rollback_release",
            "set_canary_weight", "promote_canary", "abort_canary"}  # each a recorded release
#: Routes that can only touch staging (no environment parameter; they edit or run staging).
STAGING_ONLY = {"deploy", "run_test"}
#: Shared by both environments by design (the tools say so before changing them).
SHARED = {"set_credential", "delete_credential", "add_provider", "remove_provider", "set_default_provider",
          "create_kb", "delete_kb", "kb_upload", "kb_upload_piece", "kb_commit", "kb_abort",
          "kb_remove_document", "set_kb_embedder", "add_data_source", "remove_data_source"}
#: Who may call the endpoints or the management API, and who approved a plan: access control and
#: review records, not production state (docs/security.md).
ACCESS = {"create_key", "revoke_key", "add_user", "remove_user", "set_user_role", "create_token", "revoke_token",
          "approve_plan"}
#: Runs and reads sent as POST (they change no configuration).
RUNS_AND_READS = {"invoke", "run_eval", "fire_trigger", "test_provider", "list_memory", "get_memory", "search_kb", "query_data",
                  "plan_release", "plan_rollback"}

OPENAPI = '{"openapi": "3.0.0", "info": {"title": "x", "version": "1"}, "paths": {"/y": {"get": ' \
          '{"operationId": "gety", "responses": {"200": {"description": "ok"}}}}}}'

MEMORY_AGENT = "def handle(input, ctx):\n    ctx.memory.set('k', {'v': 1})\n    return 'ok'\n"


def attempts(prod_trigger: str, staging_trigger: str) -> dict[str, list[dict[str, Any]]]:
    """Every mutating route that can name production, with the arguments that do."""
    return {
        "create_prompt": [{"name": "p2", "text": "x", "env": "production"}],
        "set_prompt": [{"name": "greeting", "text": "changed", "env": "production"}],
        "create_connector": [{"slug": "c2", "base_url": "http://127.0.0.1:9/x", "env": "production"}],
        "edit_connector": [{"slug": "crm", "env": "production", "base_url": "http://127.0.0.1:9/evil"},
                           {"slug": "crm", "target": "production", "base_url": "http://127.0.0.1:9/next"}],
        "delete_connector": [{"slug": "crm", "env": "production"}],
        "add_resource": [{"slug": "crm", "resource": "r2", "method": "GET", "path": "/r2", "env": "production"}],
        "edit_resource": [{"slug": "crm", "resource": "get", "env": "production", "path": "/other"}],
        "remove_resource": [{"slug": "crm", "resource": "get", "env": "production"}],
        "import_openapi": [{"slug": "crm", "spec_text": OPENAPI, "env": "production"}],
        "refresh_connector": [{"slug": "crm", "env": "production"}],
        "delete_memory": [{"key": "k", "env": "production"}],
        "clear_memory": [{"env": "production"}],
        "create_trigger": [{"agent": "hello", "kind": "schedule", "schedule": "0 3 * * *", "env": "production"}],
        "duplicate_trigger": [{"trigger_id": staging_trigger, "env": "production"}],
        "set_trigger_enabled": [{"trigger_id": prod_trigger, "enabled": False}],
        "delete_trigger": [{"trigger_id": prod_trigger}],
        "delete_agent": [{"name": "hello", "env": "production"}],
        "delete_prompt": [{"name": "greeting", "env": "production"}],
        "edit_trigger": [{"trigger_id": prod_trigger, "env": "production", "schedule": "0 4 * * *"},
                         {"trigger_id": prod_trigger, "env": "production", "enabled": False}],
        # a request body sent ahead in chunks (rf.services.uploads): no state of either environment
        "upload_chunk": [{"upload": "p" * 20, "offset": 0, "total": 3, "data": b"abc"}],
        # maintenance: deletes history beyond the retention, never what production runs or published
        "gc": [{}],
        # production's recorded executions run again, on staging's state only
        "replay": [{"name": "hello", "against": "production"}],
    }


def production(b: HttpBackend) -> dict[str, Any]:
    return {
        "agents": sorted((a.name, a.production_commit) for a in b.list_agents()),
        "prompts": sorted((p.name, p.published_version) for p in b.list_prompts()),
        # (`settings` also shows production settings *prepared* in staging: not production's state)
        "connectors": [{k: v for k, v in to_dict(c).items() if k != "settings"}
                       for c in b.list_connectors("production")],
        # (`staged_*` show a change staged for release: not production's state)
        "triggers": [{k: v for k, v in to_dict(t).items() if not k.startswith("staged_")}
                     for t in b.list_triggers("production") if t.live],
        "memory": [(m.key, m.value) for m in b.list_memory("production")],
        "releases": [r.id for r in b.list_releases()],
    }


@pytest.fixture
def world(ws: Any, server: ServerProc) -> tuple[HttpBackend, str, str]:
    """Production holds an agent, a published prompt, a connector, a live trigger and memory."""
    write_agent(ws.root, "mem", code=MEMORY_AGENT)
    b = HttpBackend(server.url, server.token, ws)
    for name in ("hello", "mem"):  # (in-process, run_rf_here: the same entry point as `rf`)
        assert run_rf_here("agents", "deploy", name, "-m", "v1", cwd=ws.root).returncode == 0
        assert run_rf_here("agents", "promote", name, "--yes", cwd=ws.root).returncode == 0
    b.invoke("production", "mem", {})
    b.create_prompt("greeting", "hello {{name}}")
    b.publish_prompt("greeting")
    b.create_connector("crm", "http://127.0.0.1:9/live")
    b.add_resource("crm", "get", "GET", "/get")
    b.publish_connector("crm")
    staging = b.create_trigger("hello", "schedule", schedule="0 1 * * *")
    copy = b.duplicate_trigger(staging.id, "production")
    b.publish_release([f"trigger:{copy.id}"], message="trigger live")
    other = b.create_trigger("hello", "schedule", schedule="0 2 * * *", name="other")
    return b, copy.id, other.id


def test_every_mutating_route_is_classified() -> None:
    mutating = {r.name for r in api.ROUTES if r.method != "GET"}
    classified = RELEASES | STAGING_ONLY | SHARED | ACCESS | RUNS_AND_READS | set(attempts("t", "s"))
    assert mutating - classified == set(), "classify these routes in this test"
    # A route that can only touch staging takes no environment.
    from rf.services import Services

    for name in STAGING_ONLY & mutating:
        params = inspect.signature(getattr(Services, name)).parameters
        assert "env" not in params and "target" not in params, name


def test_no_route_changes_production_outside_a_release(world: tuple[HttpBackend, str, str]) -> None:
    b, prod_trigger, staging_trigger = world
    before = production(b)
    assert before["memory"] and before["triggers"] and before["connectors"] and len(before["releases"]) == 5
    outcomes = []
    for route, calls in attempts(prod_trigger, staging_trigger).items():
        for kwargs in calls:
            pending_before = {(i.kind, i.name) for i in b.release_items()}
            try:
                getattr(b, route)(**kwargs)
                outcome = "staged"
            except RfError as exc:
                assert exc.code in ("production_read_only", "usage", "not_found"), (route, kwargs, exc.code)
                assert exc.hint, (route, "a refusal says what to do instead")
                outcome = "refused"
            assert production(b) == before, (route, kwargs, "production changed outside a release")
            if outcome == "staged":
                pending = {(i.kind, i.name) for i in b.release_items()}
                assert pending - pending_before or route == "duplicate_trigger" or pending == pending_before, route
            outcomes.append((route, outcome))
    # The staging-side forms that prepare a production change are release items, not refusals.
    assert ("edit_connector", "staged") in outcomes
    assert ("edit_trigger", "staged") in outcomes
    assert ("duplicate_trigger", "staged") in outcomes
    pending = {(i.kind, i.name) for i in b.release_items()}
    assert ("connector", "crm@production") in pending
    assert ("trigger", prod_trigger) in pending


CLI_ATTEMPTS = [
    ["memory", "delete", "k", "--env", "production"],
    ["memory", "clear", "--env", "production", "--yes"],
    ["prompts", "set", "greeting", "--text", "changed", "--env", "production"],
    ["connectors", "edit", "crm", "--env", "production", "--base-url", "http://127.0.0.1:9/evil"],
    ["connectors", "resources", "remove", "crm", "get", "--env", "production"],
    ["triggers", "disable", "{prod}"],
    ["triggers", "edit", "{prod}", "--schedule", "0 5 * * *"],
]


def test_cli_commands_at_production_are_refused_with_the_way(ws: Any, world: tuple[HttpBackend, str, str]) -> None:
    b, prod_trigger, _ = world
    before = production(b)
    for i, argv in enumerate(CLI_ATTEMPTS):
        argv = [a.replace("{prod}", prod_trigger) for a in argv]
        r = (run_rf if i == 0 else run_rf_here)(*argv, cwd=ws.root)  # the first as a real subprocess
        assert r.returncode != 0, (argv, r.stdout)
        assert "production" in r.stderr and "hint:" in r.stderr, (argv, r.stderr)
        assert production(b) == before, argv
