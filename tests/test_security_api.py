"""The management API's trust boundary, through a real ``rf serve`` on 127.0.0.1:

- every request body (and GET query) is a typed struct: unknown, internal or
  mistyped fields are a 400 ``{"error": {code, message, hint}}`` naming the
  field and what is allowed — never a 500, never passed on to Services;
- an execution's ``source`` is the server's to record, never the caller's;
- publishing needs an explicit selection (items, ``all``, or a plan id);
- the OpenAPI schema documents every request body and the error answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, start_server, write_agent
from rf.client import HttpBackend
from rf.config import snapshot_dir
from rf.errors import UsageError


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for the tests that only send requests it must refuse (nothing changes)."""
    from rf.config import init_workspace

    root: Path = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(root / "xdg-data"))
        workspace = init_workspace(root / "ws")
        write_agent(workspace.root, "hello")
        server = start_server(workspace.root)
    try:
        yield server
    finally:
        server.stop()


def api(server: ServerProc, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.token}"}
    if body is not None:
        kwargs["json"] = body
    return httpx.request(method, server.url + "/api" + path, headers=headers, timeout=30, **kwargs)


def usage_error(r: httpx.Response) -> dict[str, Any]:
    """The error of a 400 answer (the one error shape, code 'usage')."""
    assert r.status_code == 400, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == "usage" and error["message"], error
    return dict(error)


def deploy_hello(server: ServerProc, ws: Any) -> HttpBackend:
    b = HttpBackend(server.url, server.token, ws)
    assert b.deploy("hello", snapshot_dir(ws.root / "agents" / "hello"), "v1", "ada").created
    return b


def test_forged_execution_source_is_refused(server: ServerProc, ws: Any) -> None:
    deploy_hello(server, ws)
    for source in ("trigger:forged", None, "endpoint"):
        error = usage_error(api(server, "POST", "/invoke/staging/hello", {"input": {"name": "x"}, "source": source}))
        assert "'source'" in error["message"] and "the server sets it" in error["message"]
        assert "input" in error["hint"] and "session_id" in error["hint"]
    # Nothing ran, so nothing was recorded, under any source.
    assert api(server, "GET", "/executions", params={"env": "staging", "source": "trigger:forged"}).json() == []
    assert api(server, "GET", "/executions", params={"env": "staging"}).json() == []
    # A real call records the server's own source.
    r = api(server, "POST", "/invoke/staging/hello", {"input": {"name": "x"}})
    assert r.status_code == 200 and r.json()["source"] == "invoke", r.text


def test_http_backend_sends_no_internal_parameter(server: ServerProc, ws: Any) -> None:
    """The CLI's `rf invoke` names the default source: not sent, so still fine; any other is refused."""
    b = deploy_hello(server, ws)
    assert b.invoke("staging", "hello", {"name": "a"}, None, "invoke").source == "invoke"
    with pytest.raises(UsageError, match="'source' cannot be set"):
        b.invoke("staging", "hello", {"name": "a"}, None, "trigger:forged")


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/agents/hello/deploy", {"files": {}, "bogus": 1}, "bogus"),
    ("POST", "/agents/hello/promote", {"autor": "x"}, "autor"),
    ("POST", "/releases/publish", {"all": True, "everything": True}, "everything"),
    ("POST", "/releases/plan", {"item": ["hello"]}, "item"),
    ("POST", "/kb", {"name": "k", "size": 3}, "size"),
    ("PATCH", "/connectors/crm", {"base_url": "http://x", "sneaky": 1}, "sneaky"),
    ("DELETE", "/connectors/crm", {"prod": True}, "prod"),
    ("POST", "/providers/mock/default", {"x": 1}, "x"),
    # a path parameter in the body used to override the path
    ("POST", "/agents/hello/deploy", {"name": "other", "files": {}}, "name"),
])
def test_unknown_fields_are_refused_with_what_is_allowed(shared: ServerProc, method: str, path: str, body: Any,
                                                        field: str) -> None:
    error = usage_error(api(shared, method, path, body))
    assert f"'{field}'" in error["message"]
    assert error["hint"] and re.search(r"fields of |takes no fields", error["hint"]), error


def test_unknown_and_repeated_query_parameters_are_refused(shared: ServerProc) -> None:
    error = usage_error(api(shared, "GET", "/executions", params={"env": "staging", "bogus": "1"}))
    assert "'bogus'" in error["message"] and "limit: int" in error["hint"]
    error = usage_error(api(shared, "GET", "/agents/hello", params={"name": "other"}))
    assert "part of the path" in error["message"]
    usage_error(api(shared, "GET", "/executions?env=staging&env=production"))
    usage_error(api(shared, "POST", "/releases/publish?all=true", {}))  # fields go in the body
    # found by schemathesis: a negative limit reached the database (503)
    assert "limit" in usage_error(api(shared, "GET", "/releases", params={"limit": "-5"}))["message"]


@pytest.mark.parametrize(("method", "path", "body", "where"), [
    ("POST", "/releases/publish", {"items": 5}, "items"),
    ("POST", "/releases/publish", {"items": ["hello", 3]}, "items[1]"),
    ("POST", "/releases/publish", {"all": "yes"}, "all"),
    ("POST", "/releases/plan", {"items": None, "with_deps": 1}, "with_deps"),
    ("POST", "/agents/hello/deploy", {"files": 5}, "files"),
    ("POST", "/agents/hello/deploy", {"files": {"a.py": "!!not base64"}}, "files"),
    ("POST", "/agents/hello/deploy", {}, "files"),  # required
    ("POST", "/agents/hello/deploy", {"files": {}, "message": None}, "message"),
    ("POST", "/kb", {"name": "k", "chunk_size": "big"}, "chunk_size"),
    ("POST", "/memory/list", {"limit": 1.5}, "limit"),
    ("POST", "/releases/publish", [1, 2], "JSON object"),
    ("GET", "/executions?limit=x", None, "limit"),
    ("GET", "/releases?limit=", None, "limit"),
])
def test_bad_types_are_400_naming_the_field(shared: ServerProc, method: str, path: str, body: Any,
                                            where: str) -> None:
    error = usage_error(api(shared, method, path, body))
    assert where in error["message"], error
    assert error["hint"] and re.search(r"(fields|query parameters) of ", error["hint"]), error  # what is allowed


def production_state(server: ServerProc) -> tuple[Any, Any]:
    agent = api(server, "GET", "/agents/hello").json()
    return agent["production_commit"], api(server, "GET", "/releases").json()


def test_publish_needs_an_explicit_selection(server: ServerProc, ws: Any) -> None:
    deploy_hello(server, ws)
    assert production_state(server) == (None, [])
    for body in ({"items": []}, {}, {"items": None}, {"all": False}, {"message": "go"}):
        error = usage_error(api(server, "POST", "/releases/publish", body))
        assert "no items selected" in error["message"] and "--all" in error["message"], error
        assert production_state(server) == (None, [])  # production unchanged
    usage_error(api(server, "POST", "/releases/plan", {"items": []}))
    usage_error(api(server, "POST", "/releases/publish", {"items": ["hello"], "all": True}))  # which one?
    assert production_state(server) == (None, [])
    # A plan id alone publishes exactly that plan's items.
    plan = api(server, "POST", "/releases/plan", {"items": ["hello"]}).json()
    r = api(server, "POST", "/releases/publish", {"plan_id": plan["id"]})
    assert r.status_code == 200, r.text
    assert [i["name"] for i in r.json()["items"]] == ["hello"]
    rolled = api(server, "POST", f"/releases/{r.json()['id']}/rollback", {})
    assert rolled.status_code == 200, rolled.text
    # all: true is the explicit "everything".
    r = api(server, "POST", "/releases/publish", {"all": True, "message": "all of it"})
    assert r.status_code == 200, r.text
    staging = api(server, "GET", "/agents/hello").json()["staging_commit"]
    assert production_state(server)[0] == staging


def fill(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


def test_openapi_documents_every_body_and_refuses_unknown_keys(shared: ServerProc) -> None:
    schema = httpx.get(shared.url + "/schema/openapi.json", timeout=30).json()
    operations = [(path, method, op) for path, item in schema["paths"].items()
                  for method, op in item.items() if method in ("get", "post", "patch", "delete", "put")]
    assert len(operations) > 80
    error_schema = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        if method in ("post", "patch"):
            assert "requestBody" in op, where
        if path.startswith("/api/") and path != "/api/health":
            for status in ("400", "401", "404"):
                assert op["responses"][status]["content"]["application/json"]["schema"] == error_schema, where
            if method != "get":
                body = op["requestBody"]["content"]["application/json"]["schema"]
                assert body["type"] == "object" and body["additionalProperties"] is False, where
                r = api(shared, method.upper(), fill(path[4:]), {"zz_not_a_field": 1})
            else:
                r = api(shared, "GET", fill(path[4:]), params={"zz_not_a_field": "1"})
            error = usage_error(r)
            assert "'zz_not_a_field'" in error["message"], (where, error)
    components = schema["components"]["schemas"]
    assert set(components["ErrorResponse"]["properties"]) == {"error"}
    publish = schema["paths"]["/api/releases/publish"]["post"]["requestBody"]["content"]["application/json"]
    assert {"items", "all", "plan_id"} <= set(publish["schema"]["properties"])
    invoke = schema["paths"]["/api/invoke/{env}/{name}"]["post"]["requestBody"]["content"]["application/json"]
    assert set(invoke["schema"]["properties"]) == {"input", "session_id"}  # no source, no on_chunk
    executions = schema["paths"]["/api/executions"]["get"]
    assert {p["name"] for p in executions["parameters"] if p["in"] == "query"} == {
        "env", "agent", "status", "source", "limit", "before", "release", "arm"}
