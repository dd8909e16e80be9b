"""PostgreSQL data sources against a real PostgreSQL server (``postgres_server`` from test_data.py).

What is pinned here: PostgreSQL's own ``$1`` placeholders reach the server
untouched (so the jsonb ``?`` / ``?|`` / ``?&`` operators and a literal ``%``
work next to parameters); every query runs in a READ ONLY transaction with a
``statement_timeout`` and both failures are clear 4xx errors through the
service, the real CLI and the HTTP API; the password never shows up in an
error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_data import postgres_server

from conftest import run_rf, run_rf_here, start_server
from rf.client import open_local
from rf.errors import RfError, UsageError
from rf.secrets import env_var

PASSWORD = "s3cret-pw"  # set by postgres_server()
SECRET_ENV = env_var("pg-pass")


@pytest.fixture(scope="module")
def pg() -> Iterator[dict[str, Any]]:
    """One server for the module, with a jsonb table next to the fixture's ``sales`` and ``counter``."""
    with postgres_server() as server:
        server["con"] = _connect(server)
        server["con"].run("CREATE TABLE docs (id int, doc jsonb)")
        server["con"].run("""INSERT INTO docs VALUES (1, '{"a": 1}'), (2, '{"b": 2}'), (3, '{"a": 3, "b": 4}')""")
        try:
            yield server
        finally:
            server["con"].close()


def _connect(server: dict[str, Any]) -> Any:
    import pg8000.native

    port = int(server["dsn"].rsplit(":", 1)[1].split("/")[0])
    return pg8000.native.Connection(user="ada", password=PASSWORD, host="127.0.0.1", port=port, database="postgres")


@pytest.fixture
def b(ws: Any, pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A local backend with the ``pg`` source added (password from the credential's environment variable)."""
    monkeypatch.setenv(SECRET_ENV, PASSWORD)
    backend = open_local(ws)
    backend.add_data_source("pg", "postgres", pg["dsn"], credential="pg-pass")
    yield backend
    backend.close()


def _rows(b: Any, sql: str, params: Any = None, **kw: Any) -> list[dict[str, Any]]:
    return list(b.query_data("pg", sql, params, **kw).rows)


def test_jsonb_question_mark_operators_with_and_without_params(b: Any) -> None:
    assert _rows(b, "SELECT count(*)::int AS n FROM docs WHERE doc ? 'a'") == [{"n": 2}]
    # With params the ? is still PostgreSQL's operator: only $1, $2... are placeholders.
    assert _rows(b, "SELECT count(*)::int AS n FROM docs WHERE doc ? 'a' AND id > $1", [1]) == [{"n": 1}]
    assert _rows(b, "SELECT count(*)::int AS n FROM docs WHERE doc ? $1", ["b"]) == [{"n": 2}]
    assert _rows(b, "SELECT count(*)::int AS n FROM docs WHERE doc ?| array[$1, $2]", ["a", "b"]) == [{"n": 3}]
    assert _rows(b, "SELECT id FROM docs WHERE doc ?& array['a', 'b'] AND id >= $1 ORDER BY id", [0]) == [{"id": 3}]
    # ? inside quoted text, dollar-quoted text and comments is left alone too.
    assert _rows(b, "SELECT 'why?' AS q, $$what?$$ AS d, $1::int AS one -- really?", [1]) == \
        [{"q": "why?", "d": "what?", "one": 1}]


def test_question_mark_placeholders_get_a_clear_error(b: Any) -> None:
    with pytest.raises(UsageError) as caught:
        b.query_data("pg", "SELECT amount FROM sales WHERE region = ?", ["eu"])
    assert "$1" in (caught.value.hint or "")
    with pytest.raises(UsageError, match=r"\$1") as caught:
        b.query_data("pg", "SELECT amount FROM sales WHERE region = $1")  # no params given
    with pytest.raises(UsageError, match="list"):
        b.query_data("pg", "SELECT amount FROM sales WHERE region = $1", {"region": "eu"})


def test_literal_percent_next_to_params(b: Any) -> None:
    rows = _rows(b, "SELECT '100%' AS pct, region, amount FROM sales "
                    "WHERE region LIKE 'e%' AND amount > $1 ORDER BY amount", [6])
    assert rows == [{"pct": "100%", "region": "eu", "amount": 10}]
    assert _rows(b, "SELECT format('%s%%', $1::text) AS f, $2::text LIKE '%\\_%' AS m", ["50", "a_b"]) == \
        [{"f": "50%", "m": True}]


def test_writes_are_refused_by_the_read_only_transaction(b: Any, pg: dict[str, Any]) -> None:
    assert _rows(b, "SELECT current_setting('transaction_read_only') AS ro") == [{"ro": "on"}]
    for sql in ("INSERT INTO sales VALUES ('x', 1)",
                "UPDATE sales SET amount = 0",
                "DELETE FROM sales",
                "CREATE TABLE evil (a int)",
                "DROP TABLE sales",
                # PostgreSQL-only syntax DuckDB's parser cannot check: PostgreSQL refuses it.
                "CREATE TABLE evil (a int) WITH (fillfactor = 70)",
                "WITH d AS (DELETE FROM sales RETURNING *) SELECT count(*) FROM d",
                "SELECT nextval('counter')",
                "SELECT set_config('transaction_read_only', 'off', true)"):
        with pytest.raises(UsageError, match="read-only") as caught:
            b.query_data("pg", sql)
        assert caught.value.http_status < 500, sql
    assert pg["con"].run("SELECT count(*)::int, sum(amount)::int FROM sales") == [[3, 35]]
    assert pg["con"].run("SELECT count(*)::int FROM pg_tables WHERE tablename = 'evil'") == [[0]]
    with pytest.raises(UsageError, match="information_schema"):  # DuckDB's SHOW is not PostgreSQL's
        b.query_data("pg", "SHOW TABLES")


def test_statement_timeout_is_set_and_reported(b: Any) -> None:
    assert _rows(b, "SELECT current_setting('statement_timeout') AS t", timeout_s=7) == [{"t": "7s"}]
    started = time.monotonic()
    with pytest.raises(RfError, match="statement timeout") as caught:
        b.query_data("pg", "SELECT pg_sleep(5)", timeout_s=0.3)
    assert time.monotonic() - started < 3
    assert caught.value.http_status < 500 and "--timeout" in (caught.value.hint or "")
    assert _rows(b, "SELECT count(*)::int AS n FROM sales") == [{"n": 3}]  # the next query is fine


def test_password_never_in_error_messages(ws: Any, pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    backend = open_local(ws)
    try:
        monkeypatch.setenv(SECRET_ENV, "wrong-pw-4711")
        with pytest.raises(RfError, match="cannot connect") as caught:
            backend.add_data_source("pg", "postgres", pg["dsn"], credential="pg-pass")
        assert "wrong-pw-4711" not in str(caught.value)
        monkeypatch.setenv(SECRET_ENV, PASSWORD)
        backend.add_data_source("pg", "postgres", pg["dsn"], credential="pg-pass")
        with pytest.raises(UsageError, match="invalid input syntax") as caught:  # PostgreSQL echoes the value
            backend.query_data("pg", f"SELECT '{PASSWORD}'::int")
        assert PASSWORD not in str(caught.value) and "***" in str(caught.value)
    finally:
        backend.close()


def test_cli_and_http_api(ws: Any, pg: dict[str, Any]) -> None:
    root = ws.root
    secret = {SECRET_ENV: PASSWORD}
    r = run_rf("data", "add", "pg", "--postgres", pg["dsn"], "--credential", "pg-pass", cwd=root, env=secret)
    assert r.returncode == 0, r.stderr
    # The CLI opens the store in-process here.
    r = run_rf_here("data", "query", "pg", "SELECT count(*)::int AS n FROM docs WHERE doc ? 'a' AND id > $1",
               "--params", "[1]", "--json", cwd=root, env=secret)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == [{"n": 1}]
    r = run_rf_here("data", "query", "pg", "UPDATE sales SET amount = 0", cwd=root, env=secret)
    assert r.returncode != 0 and "read-only" in r.stderr and "Traceback" not in r.stderr + r.stdout
    r = run_rf("data", "query", "pg", f"SELECT '{PASSWORD}'::int", cwd=root, env=secret)
    assert r.returncode != 0 and PASSWORD not in r.stderr + r.stdout

    server = start_server(root, extra_env=secret)
    try:  # the same commands through a running server (HttpBackend), and the HTTP API itself
        r = run_rf("data", "query", "pg", "INSERT INTO sales VALUES ('x', 1)", cwd=root)
        assert r.returncode != 0 and "read-only" in r.stderr and "Traceback" not in r.stderr + r.stdout
        started = time.monotonic()
        r = run_rf_here("data", "query", "pg", "SELECT pg_sleep(5)", "--timeout", "0.3", cwd=root)
        assert r.returncode != 0 and "statement timeout" in r.stderr and "Traceback" not in r.stderr
        assert time.monotonic() - started < 4.5
        r = run_rf_here("data", "query", "pg", "SELECT count(*)::int AS n FROM docs WHERE doc ?| array[$1]",
                   "--params", '["b"]', "--json", cwd=root)
        assert r.returncode == 0 and json.loads(r.stdout)["rows"] == [{"n": 2}], r.stderr
        headers = {"Authorization": f"Bearer {server.token}"}
        url = f"{server.url}/api/data/pg/query"
        for body in ({"sql": "CREATE TABLE evil (a int)"}, {"sql": "SELECT nextval('counter')"},
                     {"sql": "SELECT pg_sleep(5)", "timeout_s": 0.3},
                     {"sql": f"SELECT '{PASSWORD}'::int"}):
            resp = httpx.post(url, json=body, headers=headers, timeout=10)
            assert 400 <= resp.status_code < 500, (body, resp.status_code, resp.text)
            assert PASSWORD not in resp.text
    finally:
        server.stop()
    assert pg["con"].run("SELECT count(*)::int, sum(amount)::int FROM sales") == [[3, 35]]


def test_every_query_form_postgres_takes(b: Any) -> None:
    assert _rows(b, "TABLE sales LIMIT 1") == [{"region": "eu", "amount": 10}]
    assert _rows(b, "VALUES (1, 'a')") == [{"column1": 1, "column2": "a"}]
    assert _rows(b, "/* why */ (SELECT 1 AS n) UNION ALL (SELECT 2) ORDER BY n;") == [{"n": 1}, {"n": 2}]
    assert _rows(b, "-- totals\nWITH t AS (SELECT sum(amount)::int AS s FROM sales) SELECT s FROM t") == [{"s": 35}]
    assert _rows(b, "SELECT doc -> 'a' AS a, doc ->> 'b' AS b FROM docs WHERE doc @> $1::jsonb",
                 ['{"a": 3}']) == [{"a": 3, "b": "4"}]
    with pytest.raises(UsageError, match="DuckDB SQL"):
        b.query_data("pg", "FROM sales")
    with pytest.raises(UsageError, match="read-only: EXPLAIN"):
        b.query_data("pg", "EXPLAIN SELECT 1")
