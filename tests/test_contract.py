"""The Backend contract: the same tests against the store in-process and the
real server over HTTP (``rf serve`` in a subprocess), each on both stores (the
DuckDB file and a real PostgreSQL server). Neither may drift."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import HELLO_PY, HELLO_TOML, start_server, use_store
from rf.client import Backend, HttpBackend, open_local
from rf.config import load_workspace, snapshot_dir
from rf.errors import InvalidAgent, NotFound, UsageError
from rf.services.users import owner


@pytest.fixture(params=["duckdb", "postgresql"])
def ws(request: pytest.FixtureRequest, ws: Any) -> Any:
    """conftest's workspace, on each store (PostgreSQL: a fresh database of the session's server)."""
    if request.param == "duckdb":
        return ws
    use_store(ws.root, "postgresql", request.getfixturevalue("pg_databases"))
    return load_workspace(ws.root)


@pytest.fixture(params=["local", "http"])
def backend(request: pytest.FixtureRequest, ws: Any) -> Iterator[Backend]:
    if request.param == "local":
        b: Backend = open_local(ws)
        try:
            yield b
        finally:
            b.close()
    else:
        srv = start_server(ws.root)
        try:
            yield HttpBackend(srv.url, srv.token, ws)
        finally:
            srv.stop()


def files(ws: Any, name: str = "hello") -> dict[str, bytes]:
    return snapshot_dir(ws.root / "agents" / name)


def test_deploy_points_staging_only(backend: Backend, ws: Any) -> None:
    result = backend.deploy("hello", files(ws), "first")
    assert result.created and result.commit is not None
    # the author is the caller: in-process and with the server's own token, the workspace owner
    assert result.commit.message == "first" and result.commit.author == owner().name
    agent = backend.get_agent("hello")
    assert agent.staging_commit == result.commit.id
    assert agent.production_commit is None
    assert agent.description == "Says hello"
    assert [a.name for a in backend.list_agents()] == ["hello"]


def test_unchanged_deploy_makes_no_commit(backend: Backend, ws: Any) -> None:
    first = backend.deploy("hello", files(ws), "first", "ada")
    again = backend.deploy("hello", files(ws), "again", "ada")
    assert not again.created
    assert again.commit is not None and first.commit is not None and again.commit.id == first.commit.id
    assert len(backend.history("hello")) == 1


def test_deploy_promote_cycle_serves_per_environment(backend: Backend, ws: Any) -> None:
    backend.deploy("hello", files(ws), "v1", "ada")
    with pytest.raises(NotFound) as info:
        backend.invoke("production", "hello", {"name": "x"})
    assert info.value.hint and "rf agents promote hello" in info.value.hint

    promoted = backend.promote("hello", "ada")
    assert promoted.changed and promoted.release_id
    assert backend.invoke("production", "hello", {"name": "Ada"}).output == {"message": "hello, Ada", "env": "production"}

    (ws.root / "agents" / "hello" / "agent.py").write_text(HELLO_PY.replace("hello, ", "hi, "))
    v2 = backend.deploy("hello", files(ws), "v2", "ada")
    assert v2.created
    staging = backend.invoke("staging", "hello", {"name": "Ada"})
    production = backend.invoke("production", "hello", {"name": "Ada"})
    assert staging.output == {"message": "hi, Ada", "env": "staging"}
    assert production.output == {"message": "hello, Ada", "env": "production"}
    assert backend.get_agent("hello").commits_ahead == 1

    diff = backend.diff_agent("hello")
    assert [f.path for f in diff.files] == ["agent.py"] and diff.files[0].status == "modified"
    assert "+    return {'message': f'hi, {name}'" in diff.files[0].diff
    assert [c.message for c in diff.commits] == ["v2"]

    backend.promote("hello", "ada")
    assert backend.invoke("production", "hello", {"name": "Ada"}).output["message"] == "hi, Ada"
    assert not backend.promote("hello", "ada").changed
    assert [c.message for c in backend.history("hello")] == ["v2", "v1"]


def test_executions_never_mix(backend: Backend, ws: Any) -> None:
    backend.deploy("hello", files(ws), "v1", "ada")
    backend.promote("hello", "ada")
    s = backend.invoke("staging", "hello", {"name": "s"})
    p = backend.invoke("production", "hello", {"name": "p"})
    t = backend.run_test("hello", files(ws), {"name": "t"})
    assert t.env == "staging" and t.source == "test" and t.commit == "working-copy"
    staging_ids = {e.id for e in backend.list_executions("staging")}
    production_ids = {e.id for e in backend.list_executions("production")}
    assert staging_ids == {s.id, t.id}
    assert production_ids == {p.id}
    assert backend.get_execution(p.id).output == {"message": "hello, p", "env": "production"}
    with pytest.raises(NotFound):
        backend.get_execution(p.id, "staging")
    assert [e.id for e in backend.list_executions("staging", source="test")] == [t.id]
    assert [e.id for e in backend.list_executions("staging", agent="nope")] == []


def test_failed_execution_is_recorded(backend: Backend, ws: Any) -> None:
    from conftest import write_agent

    write_agent(ws.root, "boom", "def handle(input, ctx):\n    raise ValueError('bad input')\n", HELLO_TOML)
    backend.deploy("boom", files(ws, "boom"), "v1", "ada")
    ex = backend.invoke("staging", "boom", {})
    assert ex.status == "failed" and ex.error and "ValueError: bad input" in ex.error
    assert [e.id for e in backend.list_executions("staging", status="failed")] == [ex.id]


def test_bad_input_is_refused_clearly(backend: Backend, ws: Any) -> None:
    with pytest.raises(NotFound) as info:
        backend.get_agent("nope")
    assert "unknown agent 'nope'" in info.value.message
    with pytest.raises(InvalidAgent) as bad_toml:
        backend.deploy("hello", {"agent.toml": b"entrypoint = [", "agent.py": b""}, "x", "ada")
    assert "not valid TOML" in bad_toml.value.message
    with pytest.raises(InvalidAgent) as syntax:
        backend.deploy("hello", {"agent.toml": HELLO_TOML.encode(), "agent.py": b"def handle(:\n"}, "x", "ada")
    assert "agent.py:1" in syntax.value.message
    with pytest.raises(InvalidAgent):
        backend.deploy("hello", {"agent.toml": b'entrypoint = "agent:missing"\n', "agent.py": HELLO_PY.encode()}, "x", "ada")
    with pytest.raises(UsageError):
        backend.list_executions("qa")
    with pytest.raises(UsageError):
        backend.deploy("Bad Name", files(ws), "x", "ada")
    # nothing was stored by any of the refused deploys
    assert backend.list_agents() == []


def test_status(backend: Backend, ws: Any) -> None:
    backend.deploy("hello", files(ws), "v1", "ada")
    st = backend.status()
    assert st.workspace == ws.name
    assert st.backend == backend.kind
    assert [a.name for a in st.agents] == ["hello"]
    assert (st.server_url is not None) == (backend.kind == "http")


def test_releases_and_triggers_contract(backend: Backend, ws: Any) -> None:
    backend.deploy("hello", files(ws), "v1", "ada")
    t = backend.create_trigger("hello", "schedule", schedule="*/10 * * * *", input={"name": "cron"})
    copy = backend.duplicate_trigger(t.id, "production")
    assert copy.env == "production" and not copy.live
    pending = {(i.kind, i.name) for i in backend.release_items()}
    assert pending == {("agent", "hello"), ("trigger", copy.id)}
    plan = backend.plan_release(all=True)
    release = backend.publish_release(all=True, plan_id=plan.id, message="go", author="ada")
    assert {(i.kind, i.name) for i in release.items} == pending
    assert backend.get_trigger(copy.id).live
    assert backend.fire_trigger(copy.id).env == "production"
    assert [r.id for r in backend.list_releases()] == [release.id]
    rolled = backend.rollback_release(release.id)
    assert rolled.kind == "rollback" and not backend.get_trigger(copy.id).live
    assert backend.get_agent("hello").production_commit is None


def test_shared_kb_and_data_contract(backend: Backend, ws: Any) -> None:
    backend.create_kb("docs")
    up = backend.kb_upload("docs", {"guide.md": b"# Refunds\nRefunds take five business days.\n",
                                    "other.md": b"# Shipping\nWe ship worldwide.\n"})
    assert up is not None
    hits = backend.search_kb("docs", "how long do refunds take", k=1).hits
    assert hits and hits[0].path == "guide.md"
    csv = ws.root / "sales.csv"
    csv.write_text("region,amount\neu,10\nus,32\n")
    backend.add_data_source("sales", "file", str(csv))
    result = backend.query_data("sales", "select sum(amount) as total from sales")
    assert result.rows == [{"total": 42}]
