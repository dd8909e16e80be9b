"""The DuckDB store: migrations, schema versions, the batching writer, busy files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import duckdb
import pytest

from rf.errors import StoreError
from rf.ids import iso, new_id, utcnow
from rf.models import Execution
from rf.store import Store
from rf.store.migrations import SCHEMA_VERSION


def _ex(env: str = "staging", agent: str = "a") -> Execution:
    now = iso(utcnow())
    return Execution(id=new_id("ex"), env=env, agent=agent, commit="c1", source="test", status="succeeded",
                     input={"x": 1}, output={"y": 2}, started_at=now, ended_at=now, duration_ms=1.5)


def test_new_store_records_schema_version(tmp_path: Path) -> None:
    with Store.open(tmp_path / "rf.duckdb") as store:
        assert store.schema_version == SCHEMA_VERSION
    con = duckdb.connect(str(tmp_path / "rf.duckdb"))
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    con.close()


def test_a_store_being_created_is_waited_for(tmp_path: Path) -> None:
    """Two rf commands starting in a fresh workspace: the second may find the file with its header
    not written yet. It waits (as for a lock) instead of calling it a broken database; a file that
    stays invalid is still refused with a clear error."""
    path = tmp_path / "rf.duckdb"
    path.write_bytes(b"\0" * 100)  # what the other process has written so far
    done = threading.Timer(0.3, path.unlink)
    done.start()
    store = Store.open(path, wait_s=5)
    try:
        assert store.query("SELECT value FROM meta WHERE key = 'schema_version'")
    finally:
        store.close()
        done.join()

    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError) as info:
        Store.open(broken, wait_s=0.3)
    assert "cannot open" in info.value.message and "rf database" in (info.value.hint or "")


def test_older_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "rf.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '0')")
    con.close()
    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.query("SELECT count(*) FROM executions") == [(0,)]


def test_newer_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "rf.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    con.close()
    with pytest.raises(StoreError) as info:
        Store.open(path)
    assert "newer rf" in info.value.message and info.value.hint and "upgrade" in info.value.hint
    con = duckdb.connect(str(path))
    assert con.execute("SELECT value FROM meta").fetchall() == [("999",)]
    con.close()


def test_writer_read_your_writes_and_env_filter(tmp_path: Path) -> None:
    with Store.open(tmp_path / "rf.duckdb") as store:
        a, b = _ex("staging"), _ex("production")
        store.record_execution(a)
        store.record_execution(b)
        staging = store.list_executions("staging")
        production = store.list_executions("production")
        assert [e.id for e in staging] == [a.id]
        assert [e.id for e in production] == [b.id]
        got = store.get_execution(a.id)
        assert got is not None and got.input == {"x": 1} and got.output == {"y": 2}


def test_writer_batches_concurrent_rows_durably(tmp_path: Path) -> None:
    path = tmp_path / "rf.duckdb"
    with Store.open(path) as store:
        def work() -> None:
            for _ in range(200):
                store.record_execution(_ex())

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with Store.open(path) as store:
        assert store.count_executions("staging") == 800



#: Values that must come back exactly as queued, whichever way the writer inserts them.
_TRICKY_TEXTS = ["plain", "", "nul\x00inside", "quotes \" and \\ backslash", "line\nbreak\ttab\r",
                 "snow ☃ and emoji 😀", "null", "42", "[1, 2]", '{"a": "b"}', "x" * 200_000]


def test_writer_rows_round_trip_exactly(tmp_path: Path) -> None:
    """The writer sends a batch's rows to DuckDB as one JSON text (see rf.store.writer): every
    column type the store uses must come back exactly as it was queued."""
    import datetime as dt

    path = tmp_path / "rf.duckdb"
    times = [dt.datetime(2026, 11, 26, 8, 0, 0), dt.datetime(2026, 11, 26, 8, 0, 0, 123456),
             dt.datetime(1999, 12, 31, 23, 59, 59, 999999)]
    memory = [("staging", f"k{i}", 2**62 + i, text, "a", None if i % 2 else f"ex_{i}", times[i % 3])
              for i, text in enumerate(_TRICKY_TEXTS)]
    memory.append(("staging", "deleted", -(2**63) + 1, None, None, None, times[0]))
    spans = [("production", "t1", "e1", "a", 0, 2**63 - 1, 2**31 - 1, "[]"), ("production", "t2", "e2", "a", -5, 7, 0,
                                                                               _TRICKY_TEXTS[4])]
    with Store.open(path) as store:
        store.writer.put_many("memory", memory)
        store.writer.put_many("span_batches", spans)
        store.record_execution(ex := _ex())
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert sorted(con.execute("SELECT * FROM memory").fetchall(), key=repr) == sorted(memory, key=repr)
        assert sorted(con.execute("SELECT * FROM span_batches").fetchall()) == sorted(spans)
        row = con.execute("SELECT duration_ms, started_at FROM executions WHERE id = ?", [ex.id]).fetchone()
    finally:
        con.close()
    assert row is not None and row[0] == 1.5 and iso(row[1]) == ex.started_at


def test_writer_falls_back_to_the_appender_for_values_json_cannot_carry(tmp_path: Path) -> None:
    """A value msgspec refuses (here a str subclass) sends that table's rows through DuckDB's
    Appender: they are written all the same."""

    class Tag(str):
        pass

    path = tmp_path / "rf.duckdb"
    with Store.open(path) as store:
        store.writer.put("memory", ("staging", Tag("sub"), 1, '"v"', "a", None, utcnow()))
        store.writer.put("memory", ("staging", "plain", 2, '"w"', "a", None, utcnow()))
        store.flush()
        rows = store.cursor().execute("SELECT key, value FROM memory ORDER BY seq").fetchall()
    assert rows == [("sub", '"v"'), ("plain", '"w"')]


def test_writer_drops_a_group_it_could_not_write_whole_and_goes_on(tmp_path: Path) -> None:
    """A row DuckDB refuses (NULL in a NOT NULL column) drops its whole group: the execution
    is not kept without its memory write. Only the caller that waits for the group is told;
    flush() (any other reader) sees no error, and the writer goes on."""
    path = tmp_path / "rf.duckdb"
    with Store.open(path) as store:
        store.writer.begin_group()
        store.writer.put("memory", ("staging", None, 1, '"v"', "a", None, utcnow()))  # key is NOT NULL
        store.record_execution(ex := _ex())
        group = store.writer.end_group()
        store.flush()
        with pytest.raises(StoreError, match=r"(?i)NOT NULL"):
            store.writer.wait(group)
        assert store.get_execution(ex.id) is None
        assert store.cursor().execute("SELECT count(*) FROM memory").fetchone() == (0,)
        store.writer.put("memory", ("staging", "k", 2, '"v"', "a", None, utcnow()))  # the writer goes on
        store.flush()
        assert store.cursor().execute("SELECT count(*) FROM memory").fetchone() == (1,)


def test_busy_file_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rf.duckdb"
    Store.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(path)!r})
            print("locked", flush=True)
            time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError) as info:
            Store.open(path, wait_s=0.5)
        assert "in use by another process" in info.value.message
        assert info.value.hint and "rf serve" in info.value.hint
    finally:
        holder.kill()
        holder.wait()


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "rf.duckdb") as store:
        with pytest.raises(RuntimeError), store.transaction() as cur:
            cur.execute("INSERT INTO agents VALUES ('x', '', now()::TIMESTAMP, now()::TIMESTAMP)")
            raise RuntimeError("boom")
        assert store.agent_rows() == []


def test_iso_of_ns_is_iso_of_the_datetime() -> None:
    """The execution path's cached formatting gives exactly what iso(datetime_of_ns(ns)) gives,
    across second, day and year boundaries and in any order."""
    import random

    from rf.ids import datetime_of_ns, iso, iso_of_ns

    base = 1_798_761_599_000_000_000  # 2026-12-31T23:59:59Z
    values = [base + step for step in (0, 999_999, 1_000_000, 999_999_999, 1_000_000_000, 1_000_000_001)]
    values += [random.randrange(0, 4_000_000_000 * 10**9) for _ in range(2000)]
    values += [values[0], values[3], values[0]]  # back to an earlier second
    for ns in values:
        assert iso_of_ns(ns) == iso(datetime_of_ns(ns)), ns
