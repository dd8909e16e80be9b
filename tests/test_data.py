"""Data sources (shared by both environments): files, DuckDB files and PostgreSQL,
queried read-only with SQL in a throwaway connection, with a timeout and a row limit."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pgserver
import pytest

from conftest import run_rf, run_rf_here
from rf.client import open_local
from rf.errors import Conflict, NotFound, RfError, UsageError
from rf.services.host import HostCall

SALES = "region,amount,day\neu,10,2026-01-01\nus,20,2026-01-02\neu,5,2026-01-03\n"


@pytest.fixture
def b(ws: Any) -> Iterator[Any]:
    backend = open_local(ws)
    yield backend
    backend.close()


@pytest.fixture
def files(ws: Any) -> dict[str, Path]:
    root = ws.root
    (root / "sales.csv").write_text(SALES)
    (root / "people.json").write_text(json.dumps([{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]))
    con = duckdb.connect()
    con.execute(f"COPY (SELECT range AS id, range * 2 AS amount FROM range(1000)) TO '{root / 'orders.parquet'}' "
                "(FORMAT parquet)")
    con.close()
    wh = duckdb.connect(str(root / "warehouse.duckdb"))
    wh.execute("CREATE TABLE customers AS SELECT range AS id, 'c' || range AS name FROM range(50)")
    wh.close()
    return {"csv": root / "sales.csv", "json": root / "people.json", "parquet": root / "orders.parquet",
            "duckdb": root / "warehouse.duckdb"}


def test_file_and_duckdb_sources(b: Any, files: dict[str, Path]) -> None:
    added = b.add_data_source("sales", "file", str(files["csv"]))
    assert added.source.kind == "csv" and added.source.columns == ["region", "amount", "day"]
    assert "shared" in added.warnings[0]
    b.add_data_source("people", "file", str(files["json"]))
    b.add_data_source("orders", "file", str(files["parquet"]))
    b.add_data_source("wh", "duckdb", str(files["duckdb"]))
    assert [s.name for s in b.list_data_sources()] == ["orders", "people", "sales", "wh"]

    # The source is the table named after it.
    assert b.query_data("sales", "select count(*) AS n from sales").rows == [{"n": 3}]
    totals = b.query_data("sales", "SELECT region, sum(amount) AS total FROM sales GROUP BY 1 ORDER BY 1")
    assert totals.rows == [{"region": "eu", "total": 15}, {"region": "us", "total": 20}]
    assert totals.columns == ["region", "total"]
    assert b.query_data("people", "select name from people where age > ?", [40]).rows == [{"name": "Alan"}]
    assert b.query_data("sales", "select day from sales where region = $r order by day limit 1",
                        {"r": "us"}).rows == [{"day": "2026-01-02"}]
    big = b.query_data("orders", "select * from orders order by id", limit=10)
    assert big.row_count == 10 and big.truncated and big.rows[9] == {"id": 9, "amount": 18}
    assert not b.query_data("orders", "select count(*) c from orders").truncated
    # A DuckDB file: its tables, plain or qualified by the source name; DESCRIBE / SHOW / WITH / VALUES work.
    assert b.query_data("wh", "select count(*) n from customers").rows == [{"n": 50}]
    assert b.query_data("wh", "select name from wh.customers where id = 7").rows == [{"name": "c7"}]
    assert [r["name"] for r in b.query_data("wh", "SHOW TABLES").rows] == ["customers"]
    assert "column_name" in b.query_data("sales", "DESCRIBE sales").columns
    assert b.query_data("sales", "WITH t AS (SELECT 1 AS x) SELECT x FROM t;").rows == [{"x": 1}]
    assert b.get_data_source("wh").columns == ["main.customers"]


def test_writes_and_escapes_are_refused(b: Any, files: dict[str, Path]) -> None:
    b.add_data_source("sales", "file", str(files["csv"]))
    b.add_data_source("wh", "duckdb", str(files["duckdb"]))
    for sql in ("INSERT INTO sales VALUES ('x', 1, NULL)", "COPY sales TO 'out.csv'", "ATTACH 'other.db'",
                "CREATE TABLE t AS SELECT 1", "DELETE FROM customers", "UPDATE customers SET name = 'x'",
                "DROP TABLE customers", "SET threads = 1", "INSTALL httpfs", "EXPLAIN ANALYZE SELECT 1"):
        with pytest.raises(UsageError, match="read-only"):
            b.query_data("wh", sql)
    with pytest.raises(UsageError, match="exactly one"):
        b.query_data("wh", "SELECT 1; DELETE FROM customers")
    with pytest.raises(UsageError, match="syntax error"):
        b.query_data("wh", "SELEC 1")
    # Only the source's own file can be read, even from a SELECT.
    with pytest.raises(UsageError, match="may only read"):
        b.query_data("sales", "SELECT * FROM read_csv_auto('/etc/passwd')")
    with pytest.raises(UsageError, match="may only read"):
        b.query_data("sales", f"SELECT * FROM read_csv_auto('{files['csv'].parent / 'people.json'}')")
    con = duckdb.connect(str(files["duckdb"]), read_only=True)
    assert con.execute("select count(*), min(name) from customers").fetchone() == (50, "c0")  # untouched
    con.close()
    assert files["csv"].read_text() == SALES


def test_timeout_limit_and_unknown_sources(b: Any, files: dict[str, Path]) -> None:
    b.add_data_source("sales", "file", str(files["csv"]))
    started = time.monotonic()
    with pytest.raises(RfError, match=r"timed out after 0\.5 s"):
        b.query_data("sales", "SELECT sum(r.range * s.amount) FROM sales s, range(100000000000) r", timeout_s=0.5)
    assert time.monotonic() - started < 10
    # From an agent, the execution's own timeout comes first: the query gets only the time it has left.
    call = HostCall(env="production", agent="reporter", execution_id="ex_test")
    call.start(time.monotonic() + 0.5)
    with pytest.raises(RfError, match="did not finish before the execution's time ran out") as info:
        b.services.data_query_host(call, "sales", "SELECT sum(r.range * s.amount) FROM sales s, range(100000000000) r",
                                   timeout_s=60)
    assert "agents/reporter/agent.toml" in (info.value.hint or "")
    with pytest.raises(UsageError, match="limit"):
        b.query_data("sales", "select 1", limit=0)
    with pytest.raises(NotFound, match="unknown data source 'ghost'"):
        b.query_data("ghost", "select 1")
    with pytest.raises(NotFound):
        b.remove_data_source("ghost")
    # Bad additions store nothing.
    with pytest.raises(UsageError, match="does not exist"):
        b.add_data_source("gone", "file", str(files["csv"].parent / "missing.csv"))
    (files["csv"].parent / "notes.xlsx").write_bytes(b"PK")
    with pytest.raises(UsageError, match="unsupported data file type"):
        b.add_data_source("xl", "file", str(files["csv"].parent / "notes.xlsx"))
    (files["csv"].parent / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(RfError):
        b.add_data_source("broken", "file", str(files["csv"].parent / "broken.parquet"))
    with pytest.raises(Conflict):
        b.add_data_source("sales", "file", str(files["csv"]))
    with pytest.raises(UsageError, match="own database"):
        b.add_data_source("me", "duckdb", str(b.services.store.path))
    with pytest.raises(UsageError, match="password"):
        b.add_data_source("pg", "postgres", "postgresql://ada:hunter2@localhost/db", credential="x")
    with pytest.raises(UsageError, match="--credential"):
        b.add_data_source("pg", "postgres", "postgresql://ada@localhost/db")
    assert [s.name for s in b.list_data_sources()] == ["sales"]
    files["csv"].unlink()
    with pytest.raises(RfError, match="does not exist"):
        b.query_data("sales", "select 1")
    assert b.remove_data_source("sales").action == "removed" and b.list_data_sources() == []


def test_cli_flow(ws: Any, files: dict[str, Path]) -> None:
    root = ws.root
    r = run_rf("data", "add", "sales", "--file", "sales.csv", cwd=root)
    assert r.returncode == 0 and "columns: region, amount, day" in r.stderr, r.stderr
    r = run_rf_here("data", "query", "sales", "SELECT region, sum(amount) AS total FROM sales GROUP BY 1 ORDER BY 1",
               cwd=root)
    assert r.returncode == 0 and "eu" in r.stdout and "15" in r.stdout and "2 rows" in r.stderr, r.stderr
    r = run_rf_here("data", "query", "sales", "select * from sales order by day", "--json", "--limit", "2", cwd=root)
    result = json.loads(r.stdout)
    assert result["row_count"] == 2 and result["truncated"] and result["rows"][0]["region"] == "eu"
    r = run_rf("data", "query", "sales", "DELETE FROM sales", cwd=root)
    assert r.returncode == 2 and "read-only" in r.stderr
    r = run_rf_here("data", "query", "nope", "select 1", cwd=root)
    assert r.returncode == 1 and "unknown data source 'nope'" in r.stderr
    r = run_rf_here("data", "show", "sales", cwd=root)
    assert r.returncode == 0 and "region, amount, day" in r.stdout
    r = run_rf_here("data", "remove", "sales", cwd=root)
    assert r.returncode == 0 and "removed data source sales" in r.stderr


# ---------------------------------------------------------------- PostgreSQL (real server when installed)

@pytest.fixture
def postgres() -> Iterator[dict[str, Any]]:
    with postgres_server() as server:
        yield server


@contextlib.contextmanager
def postgres_server() -> Iterator[dict[str, Any]]:
    """A real PostgreSQL server (tests/pgserver.py) with user ``ada`` / ``s3cret-pw``, a ``sales`` table
    and a ``counter`` sequence; skips when not installed (fails in CI)."""
    with pgserver.postgres_server() as server:
        import pg8000.dbapi

        con = pg8000.dbapi.connect(user=server["user"], password=server["password"], host=server["host"],
                                   port=server["port"], database="postgres")
        cur = con.cursor()
        cur.execute("CREATE TABLE sales (region text, amount int)")
        cur.execute("INSERT INTO sales VALUES ('eu', 10), ('us', 20), ('eu', 5)")
        cur.execute("CREATE SEQUENCE counter")
        con.commit()
        con.close()
        yield {"dsn": server["dsn"], "password": server["password"]}


def test_postgres_source(b: Any, postgres: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from rf.secrets import env_var

    monkeypatch.setenv(env_var("pg-pass"), "wrong")
    with pytest.raises(RfError, match="cannot connect"):
        b.add_data_source("pg", "postgres", postgres["dsn"], credential="pg-pass")
    assert b.list_data_sources() == []
    monkeypatch.setenv(env_var("pg-pass"), postgres["password"])
    added = b.add_data_source("pg", "postgres", postgres["dsn"], credential="pg-pass")
    assert added.source.kind == "postgres" and added.source.credential == "pg-pass"
    assert "s3cret" not in json.dumps(added.source.location)
    rows = b.query_data("pg", "SELECT region, sum(amount)::int AS total FROM sales GROUP BY 1 ORDER BY 1").rows
    assert rows == [{"region": "eu", "total": 15}, {"region": "us", "total": 20}]
    assert b.query_data("pg", "SELECT amount FROM sales WHERE region = $1 ORDER BY amount", ["eu"]).rows == \
        [{"amount": 5}, {"amount": 10}]
    assert b.query_data("pg", "SELECT * FROM sales", limit=2).truncated
    with pytest.raises(UsageError, match="read-only"):
        b.query_data("pg", "INSERT INTO sales VALUES ('x', 1)")
    with pytest.raises(UsageError, match="read-only"):  # a SELECT with a side effect: PostgreSQL refuses it
        b.query_data("pg", "SELECT nextval('counter')")
    with pytest.raises(RfError, match="timed out"):
        b.query_data("pg", "SELECT pg_sleep(5)", timeout_s=0.5)
    call = HostCall(env="staging", agent="reporter", execution_id="ex_test")
    call.start(time.monotonic() + 0.5)
    with pytest.raises(RfError, match="did not finish before the execution's time ran out"):
        b.services.data_query_host(call, "pg", "SELECT pg_sleep(5)", timeout_s=60)
    assert postgres["password"] in call.state["secrets"]  # redacted from the execution's trace
    assert b.query_data("pg", "SELECT count(*)::int AS n FROM sales").rows == [{"n": 3}]
