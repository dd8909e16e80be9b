"""Three ``rf serve`` replicas of one workspace on one real PostgreSQL database (tests/pgserver.py).

One scenario, in steps that share the servers: load on all three while a release is published
(every response to a request sent after the publish returned runs the new release; none runs
code of one release and a prompt of another), a schedule trigger every second that fires once
per slot across the three, and a replica killed with SIGKILL during an execution (the others
keep serving; its execution becomes an interrupted one, nothing is half-recorded).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import RF, ServerProc, write_agent
from rf.client import HttpBackend, open_local
from rf.config import find_workspace, init_workspace

VER_TOML = 'description = "Which release runs"\nentrypoint = "agent:handle"\ntimeout_s = 30\n'
VER_PY = ("def handle(input, ctx):\n"
          "    return {'code': 'CODE', 'prompt': ctx.prompts.render('ver-prompt')}\n")
SLOW_PY = ("import time\n"
           "def handle(input, ctx):\n"
           "    time.sleep(60)\n"
           "    return {'slept': True}\n")
TICK_PY = "def handle(input, ctx):\n    return {'tick': True}\n"
#: A replica whose heartbeat is this old is gone (shortened from 5 s for the test).
LAPSE_S = "2"


def _ver(root: Path, code: str) -> dict[str, bytes]:
    write_agent(root, "ver", code=VER_PY.replace("CODE", code), toml=VER_TOML)
    d = root / "agents" / "ver"
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def _start(root: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    env["RF_REPLICA_LAPSE_S"] = LAPSE_S
    return subprocess.Popen([*RF, "serve", "--port", "0"], cwd=root, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)


def _wait_info(root: Path, proc: subprocess.Popen[str], timeout: float = 30) -> ServerProc:
    """The server's own discovery file: ``.rf/server.json`` or its replica's ``.rf/servers/<pid>.json``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "rf serve exited"
        for file in (root / ".rf" / "server.json", root / ".rf" / "servers" / f"{proc.pid}.json"):
            try:
                info = json.loads(file.read_text())
            except (OSError, ValueError):
                continue
            if info["pid"] == proc.pid:
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(info["url"] + "/api/health", timeout=1).status_code == 200:
                            return ServerProc(proc, info)
                    except httpx.HTTPError:
                        time.sleep(0.05)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("rf serve did not start in time")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_databases: Any) -> Iterator[tuple[Path, list[ServerProc]]]:
    root = init_workspace(tmp_path_factory.mktemp("replicas") / "ws").root
    toml = root / "rf.toml"
    toml.write_text(toml.read_text() + pg_databases.toml(pg_databases.new("replicas"))
                    + "\n[releases.canary]\nauto_abort = true\nmax_failure_rate_delta = 0.05\nmin_executions = 8\n")
    # Production runs release 1 (code 1, prompt 1); staging holds release 2, published under load.
    b = open_local(find_workspace(str(root)))
    try:
        b.deploy("ver", _ver(root, "1"))
        b.create_prompt("ver-prompt", "1")
        write_agent(root, "slow", code=SLOW_PY, toml=VER_TOML)
        b.deploy("slow", {p.name: p.read_bytes() for p in (root / "agents" / "slow").iterdir()})
        write_agent(root, "tick", code=TICK_PY, toml=VER_TOML)
        b.deploy("tick", {p.name: p.read_bytes() for p in (root / "agents" / "tick").iterdir()})
        b.publish_release(all=True, author="ada")
        b.deploy("ver", _ver(root, "2"))
        b.set_prompt("ver-prompt", "2")
    finally:
        b.close()
    procs = [_start(root)]
    servers = [_wait_info(root, procs[0])]  # the first writes server.json; then two replicas at once
    procs += [_start(root), _start(root)]
    try:
        servers += [_wait_info(root, p) for p in procs[1:]]
        yield root, servers
    finally:
        for s in servers:
            s.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()


class Load:
    """Threads sending invokes to the given servers in turn: (started, ended, server, status, body)."""

    def __init__(self, servers: list[ServerProc], agent: str = "ver", threads: int = 6) -> None:
        self.servers = list(servers)
        self.agent = agent
        self.results: list[tuple[float, float, int, int, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self._lock = threading.Lock()

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = i
            while not self._stop.is_set():
                k = n % len(self.servers)
                n += 1
                started = time.monotonic()
                try:
                    r = client.post(f"{self.servers[k].url}/production/agents/{self.agent}", json={"input": {}})
                    status, body = r.status_code, r.json()
                except httpx.HTTPError as exc:
                    status, body = 0, str(exc)
                with self._lock:
                    self.results.append((started, time.monotonic(), k, status, body))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.results)
        while len(self.results) < start + count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.results) >= start + count, "the load made no progress"


def _output(body: Any) -> dict[str, Any]:
    out = body.get("output") if isinstance(body, dict) else None
    assert isinstance(out, dict), body
    return out


def test_replicas_are_discovered_and_each_serves(cluster: tuple[Path, list[ServerProc]]) -> None:
    root, servers = cluster
    from rf import serverinfo

    live = serverinfo.read_all(root / ".rf" / "server.json")
    assert sorted(i.pid for i in live) == sorted(s.pid for s in servers)
    assert len(list((root / ".rf" / "servers").glob("*.json"))) == 2
    for s in servers:
        r = httpx.post(f"{s.url}/production/agents/ver", json={"input": {}}, timeout=30)
        assert r.status_code == 200 and _output(r.json()) == {"code": "1", "prompt": "1"}


def test_publish_under_load_reaches_every_replica_before_it_returns(cluster: tuple[Path, list[ServerProc]]) -> None:
    root, servers = cluster
    backend = HttpBackend(servers[1].url, servers[1].token, find_workspace(str(root)))  # a replica publishes
    with Load(servers) as load:
        load.wait_for(30)
        release = backend.publish_release(all=True, author="ada", message="release 2")
        returned = time.monotonic()
        load.wait_for(60)
    assert release.warnings == [], release.warnings  # every live replica confirmed
    assert {(i.kind, i.name) for i in release.items} == {("agent", "ver"), ("prompt", "ver-prompt")}
    failed = [r for r in load.results if r[3] != 200]
    assert failed == [], failed[:3]
    outputs = [(started, k, _output(body)) for started, _, k, _, body in load.results]
    mixed = [o for o in outputs if o[2]["code"] != o[2]["prompt"]]
    assert mixed == [], mixed[:3]  # code and prompt always from one release
    after = [o for o in outputs if o[0] > returned]
    assert after and {o[1] for o in after} == {0, 1, 2}  # every replica answered after the publish
    stale = [o for o in after if o[2]["code"] != "2"]
    assert stale == [], stale[:3]
    assert any(o[2]["code"] == "1" for o in outputs)  # (the load did start before the publish)


def test_a_schedule_trigger_fires_once_per_slot_across_replicas(cluster: tuple[Path, list[ServerProc]]) -> None:
    root, servers = cluster
    backend = HttpBackend(servers[0].url, servers[0].token, find_workspace(str(root)))
    trigger = backend.create_trigger("tick", "schedule", schedule="* * * * * *", env="staging")  # every second
    created = time.time()
    time.sleep(4.5)  # the scenario's length: ~4 one-second slots (what is measured is the count)
    backend.delete_trigger(trigger.id, env="staging")
    deleted = time.time()
    source = f"trigger:{trigger.id}"

    def fired() -> list[Any]:
        return backend.list_executions("staging", agent="tick", source=source, limit=100)

    deadline = time.monotonic() + 15
    runs = fired()
    while time.monotonic() < deadline and any(e.status == "running" for e in runs):
        time.sleep(0.1)
        runs = fired()
    slots = int(deleted) - int(created)  # whole seconds between creation and deletion (±1)
    assert all(e.status == "succeeded" for e in runs), [e.status for e in runs]
    assert len(runs) <= slots + 1, f"{len(runs)} runs in {slots} one-second slots: a slot fired twice"
    assert len(runs) >= max(1, slots - 2), f"only {len(runs)} runs in {slots} slots"
    # each run is one claim in the store (at most one claim, the last, lost to the deletion)
    import psycopg
    from pgserver import PASSWORD

    url = find_workspace(str(root)).store_url
    with psycopg.connect(url, password=PASSWORD) as con:
        claims = con.execute("SELECT slot, replica FROM trigger_slots WHERE trigger_id = %s",
                             [trigger.id]).fetchall()
    assert len(runs) <= len(claims) <= len(runs) + 1


BAD_PY = "def handle(input, ctx):\n    raise RuntimeError('the canary is broken')\n"


def test_a_canary_routes_alike_on_every_replica_and_is_auto_aborted_once(
        cluster: tuple[Path, list[ServerProc]]) -> None:
    """Issue 21 across replicas: the canary lives in the store, so a session gets the same arm
    on every server, and a failing canary is aborted (once, with its figures) whichever server
    sees it first; then every server routes everything to stable."""
    root, servers = cluster
    backend = HttpBackend(servers[2].url, servers[2].token, find_workspace(str(root)))
    write_agent(root, "ver", code=BAD_PY, toml=VER_TOML)
    backend.deploy("ver", {p.name: p.read_bytes() for p in (root / "agents" / "ver").iterdir() if p.is_file()})
    started = backend.publish_release(["agent:ver"], canary=50, author="ada", message="a broken canary")
    assert started.warnings == [], started.warnings  # every replica took the canary's routing

    def call(server: ServerProc, session: str) -> int:
        r = httpx.post(f"{server.url}/production/agents/ver", json={"input": {}, "session_id": session},
                       timeout=30)
        return r.status_code

    arms: dict[str, set[int]] = {}
    for n in range(12):  # (stops short of most auto-aborts: 12 sessions, about 6 on the canary)
        session = f"s{n}"
        arms[session] = {call(server, session) for server in servers}
        if backend.canary_status().status != "running":
            break
    # a session's arm is the same on the three servers (a failing canary answers 5xx/4xx)
    split = {s: codes for s, codes in arms.items() if len(codes) > 1}
    status = backend.canary_status()
    assert not split or status.status != "running", split
    assert any(codes == {200} for codes in arms.values()), arms
    # enough canary failures on any of the servers: aborted once, by one of them
    deadline = time.monotonic() + 20
    n = 100
    while time.monotonic() < deadline and backend.canary_status().status == "running":
        for server in servers:
            call(server, f"s{n}")
            n += 1
    status = backend.canary_status()
    assert status.status == "aborted", status
    aborts = [r for r in backend.list_releases() if r.kind == "canary-abort"]
    assert len(aborts) == 1 and "auto-abort" in aborts[0].author
    # every server routes to stable now (production's code 2), whatever the session
    for server in servers:
        for session in ("s0", "s1", "s2", "x"):
            r = httpx.post(f"{server.url}/production/agents/ver", json={"input": {}, "session_id": session},
                           timeout=30)
            assert r.status_code == 200 and _output(r.json())["code"] == "2", (server.url, r.text)


def test_a_publisher_that_dies_after_its_commit_still_reaches_every_replica(
        cluster: tuple[Path, list[ServerProc]]) -> None:
    """The state version is bumped, and every replica notified, inside the release's own
    transaction: a publisher that dies between its commit and its announcement (here: the test
    seam raising right after the commit) leaves no replica serving the previous release."""
    root, servers = cluster
    local = open_local(find_workspace(str(root)))
    try:
        local.deploy("ver", _ver(root, "3"))
        for s in servers:  # each replica caches production's state (the release before) again
            r = httpx.post(f"{s.url}/production/agents/ver", json={"input": {}}, timeout=30)
            assert r.status_code == 200 and _output(r.json())["code"] != "3", r.text

        class Died(Exception):
            pass

        def die(release_id: str) -> None:
            raise Died(release_id)

        local.services.releases._after_release_commit = die  # type: ignore[method-assign]
        with pytest.raises(Died):
            local.publish_release(["agent:ver"], author="ada", message="release 3, never announced")
    finally:
        local.close()
    deadline = time.monotonic() + 10
    codes: dict[str, str] = {}
    while time.monotonic() < deadline:
        codes = {s.url: _output(httpx.post(f"{s.url}/production/agents/ver", json={"input": {}},
                                           timeout=30).json())["code"] for s in servers}
        if set(codes.values()) == {"3"}:
            break
        time.sleep(0.1)
    assert set(codes.values()) == {"3"}, codes


def test_a_replica_killed_mid_execution_leaves_the_others_serving(cluster: tuple[Path, list[ServerProc]]) -> None:
    root, servers = cluster
    victim, survivors = servers[2], servers[:2]
    backend = HttpBackend(survivors[0].url, survivors[0].token, find_workspace(str(root)))
    def call_slow() -> None:
        with contextlib.suppress(httpx.HTTPError):  # (its server is killed: no answer)
            httpx.post(f"{victim.url}/production/agents/slow", json={"input": {}}, timeout=90)

    slow = threading.Thread(target=call_slow, daemon=True)
    slow.start()
    deadline = time.monotonic() + 15
    running: list[Any] = []
    while time.monotonic() < deadline and not running:  # the marker, seen through another replica
        running = backend.list_executions("production", agent="slow", status="running")
        time.sleep(0.1)
    assert len(running) == 1, "the slow execution never showed as running"
    with Load(survivors, threads=4) as load:
        load.wait_for(10)
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        killed = time.monotonic()
        ex = running[0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ex.status == "running":
            time.sleep(0.2)
            ex = backend.get_execution(running[0].id)
        load.wait_for(10)
    assert ex.status == "interrupted", ex.status  # recorded by a survivor once the heartbeat lapsed
    assert [r for r in load.results if r[3] != 200] == []
    assert any(r[0] > killed for r in load.results)
    # the publish of another release still works, and does not wait for the dead replica
    backend.deploy("ver", _ver(root, "3"))
    backend.set_prompt("ver-prompt", "3")
    started = time.monotonic()
    release = backend.publish_release(all=True, author="ada")
    assert release.warnings == [] and time.monotonic() - started < 3
    for s in survivors:
        assert _output(httpx.post(f"{s.url}/production/agents/ver", json={"input": {}}, timeout=30).json()) == \
            {"code": "3", "prompt": "3"}
    # the CLI's discovery skips the dead replica's file (and removes it)
    from rf import serverinfo

    assert {i.pid for i in serverinfo.read_all(root / ".rf" / "server.json")} == {s.pid for s in survivors}
    assert not (root / ".rf" / "servers" / f"{victim.pid}.json").exists()


def test_a_replica_that_never_confirms_holds_no_other_write(tmp_path: Path, pg_databases: Any) -> None:
    """The wait for the replicas' confirmations runs after the write lock is released: while a
    publish waits for a server that is alive but never confirms (its heartbeat renewed, its
    ``seen_version`` never), another writer's unit of work goes through; the publish then returns
    naming that server. Ordering only: the other write ends before the publish returns."""
    import psycopg
    from pgserver import PASSWORD

    root = init_workspace(tmp_path / "ws").root
    url = pg_databases.new("stuck")
    (root / "rf.toml").write_text((root / "rf.toml").read_text() + pg_databases.toml(url))
    local = open_local(find_workspace(str(root)))
    stop = threading.Event()
    with psycopg.connect(url, password=PASSWORD, autocommit=True) as con:
        con.execute("INSERT INTO replicas (id, url, host, pid, started_at, heartbeat_at, seen_version)"
                    " VALUES ('stuck:1', 'http://10.0.0.9:7410', 'elsewhere', 1, LOCALTIMESTAMP, LOCALTIMESTAMP, 0)")

        def beat() -> None:  # alive, never confirming
            with psycopg.connect(url, password=PASSWORD, autocommit=True) as c:
                while not stop.wait(0.2):
                    c.execute("UPDATE replicas SET heartbeat_at = LOCALTIMESTAMP WHERE id = 'stuck:1'")

        beating = threading.Thread(target=beat, daemon=True)
        beating.start()
        order: list[str] = []
        try:
            local.deploy("ver", _ver(root, "1"))  # (its own announcement waits for the stuck one too)
            published: list[Any] = []

            def publish() -> None:
                published.append(local.publish_release(["agent:ver"], author="ada", message="first"))
                order.append("publish returned")

            publisher = threading.Thread(target=publish)
            publisher.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not con.execute(
                    "SELECT 1 FROM releases WHERE kind = 'publish'").fetchone():
                time.sleep(0.02)
            local.create_prompt("other-write", "written while the publish waits")
            order.append("other write done")
            publisher.join(60)
        finally:
            stop.set()
            beating.join(5)
            local.close()
    assert order == ["other write done", "publish returned"], order
    (release,) = published
    assert any("did not confirm" in w and "http://10.0.0.9:7410" in w for w in release.warnings), release.warnings
