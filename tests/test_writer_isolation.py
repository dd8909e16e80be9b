"""The batching writer isolates writes per execution (rf.store.writer).

An execution and what it wrote (its spans, session messages, memory writes) are
committed together or not at all, and one bad row never costs the other
executions of its batch: a batch whose transaction fails is retried apart, so only
the group holding the bad row is dropped (counted, logged once), and the next
unrelated read sees no error. Rows are checked where the store queues them, so a
bad value is refused to the caller that sent it instead of reaching the writer.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from rf.errors import StoreError, UsageError
from rf.ids import iso, new_id, now_ns, utcnow
from rf.models import Execution
from rf.store import Store

SECRET = "s3cr3t-value-that-must-not-be-logged"


def _ex(agent: str = "a") -> Execution:
    now = iso(utcnow())
    return Execution(id=new_id("ex"), env="staging", agent=agent, commit="c1", source="test", status="succeeded",
                     input={"x": 1}, output={"y": 2}, started_at=now, ended_at=now, duration_ms=1.5,
                     session_id="s1")


def _write_group(store: Store, seq: int, bad: str | None = None) -> str:
    """One execution's group, as rf.services.agents writes it: a span batch, a session turn,
    a memory write and the execution row. ``bad`` names the table whose row is broken;
    that row goes straight to the writer, as a value the store's checks missed would."""
    writer = store.writer
    ex = _ex()
    now = utcnow()
    start = now_ns()
    span = ("staging", "t" * 32, ex.id, "a", start, start + 1, 1, "[]")
    turn = ("staging", "a", "s1", seq, 1, ex.id, now, now, '[["user","hi",1]]')
    memory = ("staging", f"k{seq}", seq, '"v"', "a", ex.id, now)
    writer.begin_group()
    try:
        if bad == "span_batches":  # a type error: start_ns must be an integer
            writer.put("span_batches", (*span[:4], SECRET, *span[5:]))
        else:
            store.queue_span_batch(*span)
        if bad == "session_turns":  # NULL in a NOT NULL column
            writer.put("session_turns", (*turn[:8], None))
        else:
            store.queue_session_turn(turn)  # type: ignore[arg-type]
        if bad == "memory":  # NULL in a NOT NULL column (the key)
            writer.put("memory", ("staging", None, seq, '"v"', "a", ex.id, now))
        else:
            store.queue_memory([memory])
        if bad == "executions":  # NULL in a NOT NULL column (the source)
            row = _execution_row(ex)
            writer.put("executions", (*row[:4], None, *row[5:]))
        else:
            store.record_execution(ex)
    finally:
        writer.end_group()
    return ex.id


def _execution_row(ex: Execution) -> tuple[Any, ...]:
    now = utcnow()
    return (ex.id, ex.env, ex.agent, ex.commit, ex.source, ex.status, '{"x":1}', '{"y":2}', None, None, None, "",
            now, now, 1.5, ex.session_id, None, 0.0)


def _ids(store: Store, table: str, column: str = "execution_id") -> set[str]:
    return {r[0] for r in store.cursor().execute(f"SELECT {column} FROM {table}").fetchall()}


def _assert_whole(store: Store, good: set[str], bad: set[str]) -> None:
    """Every good execution is there with all of its rows; nothing of a bad one is."""
    executions = _ids(store, "executions", "id")
    assert good <= executions, f"{len(good - executions)} good executions were lost"
    for table in ("span_batches", "session_turns", "memory"):
        rows = _ids(store, table)
        assert good <= rows, f"{len(good - rows)} good executions lost their {table} rows"
        assert not rows & bad, f"a bad execution left {table} rows behind"
        assert rows <= executions, f"{table} rows without their execution"
    assert not executions & bad, "a bad execution was recorded"


@pytest.mark.parametrize("bad_table", ["executions", "memory", "span_batches", "session_turns"])
def test_one_bad_group_in_a_batch_costs_only_itself(tmp_path: Path, bad_table: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Fifty good executions and one whose row DuckDB refuses, queued in the same batch:
    the fifty are all there, with every row they wrote; the bad one left nothing behind;
    the failure is counted and logged once without the row's contents; the next read works."""
    with Store.open(tmp_path / "rf.duckdb") as store:
        store.writer._linger_s = 60.0  # one batch for all of them: flush() below commits it
        good = {_write_group(store, i) for i in range(25)}
        bad = {_write_group(store, 25, bad=bad_table)}
        good |= {_write_group(store, i) for i in range(26, 51)}
        with caplog.at_level(logging.WARNING, logger="rf.store.writer"):
            store.flush()  # the batch's failure is not this caller's: no error here
        _assert_whole(store, good, bad)
        assert store.writer.failed_groups == 1
        assert len(store.list_executions("staging", limit=100)) == 50  # an unrelated read: no error
        assert store.count_executions("staging") == 50
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    assert next(iter(bad)) in failures[0].getMessage()
    assert SECRET not in caplog.text


def test_a_batch_without_errors_is_one_transaction(tmp_path: Path) -> None:
    """The per-group retry costs nothing when nothing fails: no batch was retried."""
    with Store.open(tmp_path / "rf.duckdb") as store:
        good = {_write_group(store, i) for i in range(20)}
        store.flush()
        _assert_whole(store, good, set())
        assert store.writer.retried_batches == 0
        assert store.writer.failed_groups == 0


def test_a_failed_group_is_reported_to_the_caller_that_waits_for_it(tmp_path: Path) -> None:
    """end_group() hands back the group; wait() says whether it was committed, with a clear
    error for the caller who queued it only."""
    with Store.open(tmp_path / "rf.duckdb") as store:
        writer = store.writer
        writer.begin_group()
        writer.put("memory", ("staging", None, 1, '"v"', "a", "ex_1", utcnow()))
        bad = writer.end_group()
        writer.begin_group()
        store.record_execution(ok_ex := _ex())
        good = writer.end_group()
        assert bad is not None and good is not None
        writer.wait(good)  # committed
        with pytest.raises(StoreError, match=r"(?i)not recorded.*NOT NULL") as caught:
            writer.wait(bad)
        assert caught.value.hint
        store.flush()  # anybody else: no error
        assert store.get_execution(ok_ex.id) is not None


def test_a_failed_group_still_removes_its_running_marker(tmp_path: Path) -> None:
    """An execution's running marker is deleted in its group: if the group fails, the marker
    goes all the same (else it would show as running until the next start)."""
    with Store.open(tmp_path / "rf.duckdb") as store:
        writer = store.writer
        now = utcnow()
        writer.put("running_executions", ("ex_m", "staging", "a", "c1", "test", None, None, now, None, now, "me"))
        store.flush()
        writer.begin_group()
        writer.put("memory", ("staging", None, 1, '"v"', "a", "ex_m", now))
        writer.delete("running_executions", "id", "ex_m")
        writer.end_group()
        store.flush()
        assert store.cursor().execute("SELECT count(*) FROM running_executions").fetchone() == (0,)
        assert writer.failed_groups == 1


# ------------------------------------------------------------ checks where rows are queued
def test_a_bad_value_is_refused_where_it_is_queued(tmp_path: Path) -> None:
    """A NULL in a required column, or a value of the wrong type, is refused by the store to the
    caller that queued it (a clear error naming the column, never the row's contents); the
    group it was in is dropped whole, and the writer goes on."""
    with Store.open(tmp_path / "rf.duckdb") as store:
        ex = _ex()
        ex.source = None  # type: ignore[assignment]
        ex.input = {"token": SECRET}
        now = utcnow()
        store.writer.put("running_executions", (ex.id, "staging", "a", "c1", "test", None, None, now, None, now, "me"))
        store.writer.begin_group()
        try:
            store.queue_span_batch("staging", "t" * 32, ex.id, "a", 1, 2, 1, "[]")
            store.writer.delete("running_executions", "id", ex.id)  # its running marker goes all the same
            with pytest.raises(UsageError, match=r"executions.*'source'.*NULL") as caught:
                store.record_execution(ex)
        finally:
            store.writer.end_group()
        assert SECRET not in str(caught.value) and caught.value.hint
        with pytest.raises(UsageError, match=r"span_batches.*'start_ns'.*integer.*str"):
            store.queue_span_batch("staging", "t" * 32, ex.id, "a", SECRET, 2, 1, "[]")  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=r"memory.*'written_at'"):
            store.queue_memory([("staging", "k", 1, '"v"', "a", ex.id, "yesterday")])  # type: ignore[list-item]
        with pytest.raises(UsageError, match=r"session_turns.*8 values.*9 columns"):
            store.queue_session_turn(("staging", "a", "s1", 1, 1, ex.id, utcnow(), utcnow()))  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=r"memory.*'seq'.*64-bit"):
            store.queue_memory([("staging", "k", 2**70, '"v"', "a", ex.id, utcnow())])
        store.flush()
        assert _ids(store, "span_batches") == set()  # the refused group's span batch was dropped with it
        assert _ids(store, "running_executions", "id") == set()
        assert store.writer.refused_groups == 1
        store.record_execution(ok := _ex())
        assert store.get_execution(ok.id) is not None


# ------------------------------------------------------------ under load
def test_concurrent_groups_with_some_bad_ones(tmp_path: Path) -> None:
    """Several threads queue executions while some of them are bad (and a few bad rows come
    outside any group): exactly the good executions are recorded, each whole; no orphan rows."""
    threads_n, per_thread = 4, 60
    good: set[str] = set()
    bad: set[str] = set()
    lock = threading.Lock()
    start = threading.Barrier(threads_n)
    tables = ["executions", "memory", "span_batches", "session_turns"]

    with Store.open(tmp_path / "rf.duckdb") as store:
        def work(worker: int) -> None:
            start.wait(timeout=10)
            mine_good, mine_bad = set(), set()
            for i in range(per_thread):
                seq = worker * 1000 + i
                if i % 7 == 3:
                    mine_bad.add(_write_group(store, seq, bad=tables[(worker + i) % len(tables)]))
                else:
                    mine_good.add(_write_group(store, seq))
                if i % 20 == 5:  # an ungrouped bad row: dropped alone
                    store.writer.put("memory", ("staging", None, seq, '"v"', "a", "ex_loose", utcnow()))
                if i % 15 == 0:
                    store.writer.hurry()  # batches of varied sizes
            with lock:
                good.update(mine_good)
                bad.update(mine_bad)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        store.flush()
        assert len(good) == threads_n * per_thread - len(bad)
        _assert_whole(store, good, bad)
        assert store.count_executions("staging") == len(good)
        assert store.writer.failed_groups == len(bad) + threads_n * 3


def test_a_full_queue_slows_producers_instead_of_growing(tmp_path: Path) -> None:
    """The writer's queue is bounded: while the writer is stuck, at most max_pending items
    wait; the next producer waits for room, and nothing is lost once the writer goes on."""
    from rf.store.writer import BatchWriter

    store = Store.open(tmp_path / "bound.duckdb")
    writer = BatchWriter(store._con, linger_s=0.0, max_pending=3)
    rows = []
    try:
        writer._lock.acquire()  # the writer thread stalls in its next commit
        start = now_ns()

        def row(i: int) -> tuple[Any, ...]:
            return ("staging", f"{i:032d}", f"ex-{i}", "a", start, start + 1, 1, "[]")

        writer.put("span_batches", row(0))  # taken off the queue, stuck in the commit
        while writer._slots._value != 3:  # (the writer released its slot)
            threading.Event().wait(0.005)
        for i in range(1, 4):
            writer.put("span_batches", row(i))  # fills the queue
        blocked = threading.Thread(target=writer.put, args=("span_batches", row(4)))
        blocked.start()
        blocked.join(timeout=0.3)
        assert blocked.is_alive() and writer.producer_waits == 1  # it waits: the queue did not grow
        writer._lock.release()
        blocked.join(timeout=10)
        assert not blocked.is_alive()
        writer.flush()
        rows = writer._root.execute("SELECT execution_id FROM span_batches ORDER BY execution_id").fetchall()
        assert [r[0] for r in rows] == [f"ex-{i}" for i in range(5)]
    finally:
        if writer._lock.locked():
            writer._lock.release()
        writer.close()
        store.close()
