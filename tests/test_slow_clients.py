"""Slow and greedy clients against a real `rf serve`: request header and body deadlines, the
connection limit, out-of-descriptor floods, and the log filter that folds repeated records
(rf.server.connections, rf.logsetup.RepeatFilter)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import resource
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rf.logsetup import RepeatFilter
from tests.conftest import HELLO_PY, HELLO_TOML, RF, ServerProc, run_rf, start_server, write_agent

HEADER_S = 1.0
BODY_S = 0.5
SLACK_S = 2.0  # the sweeper looks four times a second; the rest is a loaded machine's margin


def set_server_keys(root: Path, lines: str) -> None:
    toml = root / "rf.toml"
    toml.write_text(toml.read_text().replace("[server]\n", "[server]\n" + lines, 1))


def make_ws(root: Path, lines: str) -> Path:
    from rf.config import init_workspace

    ws = init_workspace(root)
    write_agent(ws.root, "hello")
    set_server_keys(ws.root, lines)
    deployed = run_rf("agents", "deploy", "hello", cwd=ws.root)
    assert deployed.returncode == 0, deployed.stderr
    return ws.root


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    root = make_ws(tmp_path_factory.mktemp("slow") / "ws",
                   f"header_timeout_s = {HEADER_S}\nbody_timeout_s = {BODY_S}\nkeep_alive_s = 30\n")
    server = start_server(root, extra_env={"XDG_DATA_HOME": str(tmp_path_factory.mktemp("xdg"))})
    try:
        yield server
    finally:
        server.stop()


def port_of(server: ServerProc) -> int:
    return int(server.url.rsplit(":", 1)[1])


def connect(server: ServerProc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(server)), timeout=10)


def read_until_closed(sock: socket.socket, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after *within_s*)."""
    sock.settimeout(within_s)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def answer_of(data: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (with a Content-Length) from a keep-alive connection."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return data


def health_ok(server: ServerProc) -> bool:
    return httpx.get(server.url + "/api/health", timeout=5).status_code == 200


# ------------------------------------------------------------ request headers


def test_slow_headers_are_answered_408_and_closed_while_others_are_served(slow_server: ServerProc) -> None:
    partial = connect(slow_server)
    partial.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: never complete
    silent = connect(slow_server)  # sends nothing at all
    started = time.monotonic()
    assert health_ok(slow_server)  # meanwhile, everyone else is served
    data = read_until_closed(partial, HEADER_S + SLACK_S)
    took = time.monotonic() - started
    assert HEADER_S - 0.1 <= took < HEADER_S + SLACK_S, took
    status, body = answer_of(data)
    assert status == 408 and body["error"]["code"] == "request_timeout", data
    assert "request headers not complete within 1 s" in body["error"]["message"]
    assert "header_timeout_s" in body["error"]["hint"]
    # A connection that never sent a byte is just closed (nothing to answer).
    assert read_until_closed(silent, SLACK_S) == b""
    assert health_ok(slow_server)


def test_headers_sent_a_byte_at_a_time_do_not_extend_the_deadline(slow_server: ServerProc) -> None:
    sock = connect(slow_server)
    request = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200
    started = time.monotonic()
    sent = 0
    while True:  # one byte every 0.1 s, until the server stops it
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            break
        assert time.monotonic() - started < HEADER_S + SLACK_S, "the server never closed the trickling connection"
        sock.sendall(request[sent:sent + 1])
        sent += 1
    assert sent < len(request)
    status, _ = answer_of(read_until_closed(sock, SLACK_S))
    assert status == 408
    assert time.monotonic() - started >= HEADER_S - 0.1


def test_a_keep_alive_connection_gets_the_header_deadline_for_each_request(slow_server: ServerProc) -> None:
    sock = connect(slow_server)
    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = read_response(sock)
    assert first.startswith(b"HTTP/1.1 200"), first
    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the second request stalls
    status, _ = answer_of(read_until_closed(sock, HEADER_S + SLACK_S))
    assert status == 408


# ------------------------------------------------------------ request bodies


@pytest.mark.parametrize("path", ["/staging/agents/hello", "/api/agents/hello/test"])
def test_a_stalled_body_is_answered_408_and_the_route_sees_a_disconnect(slow_server: ServerProc, path: str) -> None:
    sock = connect(slow_server)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Authorization: Bearer {slow_server.token}\r\nContent-Length: 100\r\n\r\n".encode()
                 + b'{"input": {"name": "sl')  # then nothing
    started = time.monotonic()
    status, body = answer_of(read_until_closed(sock, BODY_S + SLACK_S))
    assert status == 408, body
    assert body["error"]["message"] == f"request body stalled: no bytes for {BODY_S:g} s"
    assert time.monotonic() - started >= BODY_S - 0.1
    # The same request, sent whole, works.
    payload: dict[str, Any] = {"input": {"name": "ok"}}
    if path.startswith("/api/"):  # rf test sends the working copy
        payload["files"] = {name: base64.b64encode(text.encode()).decode()
                            for name, text in (("agent.toml", HELLO_TOML), ("agent.py", HELLO_PY))}
    r = httpx.post(slow_server.url + path, json=payload,
                   headers={"Authorization": f"Bearer {slow_server.token}"}, timeout=30)
    assert r.status_code == 200, r.text


def test_a_body_trickled_slower_than_the_total_bound_is_cut_off(slow_server: ServerProc) -> None:
    sock = connect(slow_server)
    sock.sendall(b"POST /staging/agents/hello HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n")
    started = time.monotonic()
    total_s = 6 * BODY_S
    while True:  # one byte every 0.2 s: never a pause of BODY_S, but 1000 bytes would take 200 s
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            break
        assert time.monotonic() - started < total_s + SLACK_S, "the trickling body was never cut off"
        sock.sendall(b" ")
    status, body = answer_of(read_until_closed(sock, SLACK_S))
    assert status == 408
    assert body["error"]["message"] == f"request body not complete within {total_s:g} s"
    assert time.monotonic() - started >= total_s - 0.1


def test_idle_and_slow_clients_are_closed_leaving_no_errors_in_the_log(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws", f"header_timeout_s = {HEADER_S}\nbody_timeout_s = {BODY_S}\nkeep_alive_s = 1\n")
    server = start_server(root)
    try:
        idle = connect(server)  # served once, then idle: closed by keep_alive_s, without an answer
        idle.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(idle).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert read_until_closed(idle, 1 + SLACK_S) == b""
        assert time.monotonic() - started >= 0.9
        stalled = connect(server)
        stalled.sendall(b"POST /staging/agents/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
        partial = connect(server)
        partial.sendall(b"GET / HTTP/1.1\r\n")
        assert answer_of(read_until_closed(stalled, BODY_S + SLACK_S))[0] == 408
        assert answer_of(read_until_closed(partial, HEADER_S + SLACK_S))[0] == 408
        assert health_ok(server)
    finally:
        server.stop()
    output = server.proc.stdout.read() if server.proc.stdout else ""
    assert "Traceback" not in output and "ERROR" not in output, output


# ------------------------------------------------------------ the connection limit


def test_connections_above_the_limit_get_503_and_the_server_recovers(tmp_path: Path) -> None:
    limit = 8
    root = make_ws(tmp_path / "ws", f"max_connections = {limit}\nkeep_alive_s = 30\n")
    server = start_server(root)
    held: list[socket.socket] = []
    try:
        for _ in range(limit):  # keep-alive connections, each served once, then held open
            sock = connect(server)
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            held.append(sock)
        for _ in range(3):
            r = httpx.get(server.url + "/api/health", timeout=5)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "too_many_connections"
            assert f"more than {limit} open connections" in r.json()["error"]["message"]
            assert "max_connections" in r.json()["error"]["hint"]
            assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
        # A connection above the limit that does not even send its headers is let go after 1 s.
        extra = connect(server)
        assert read_until_closed(extra, 1 + SLACK_S) == b""
        held.pop().close()
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/api/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "a freed connection slot was never given out again"
        # The held connections still work.
        held[0].sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(held[0]).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_bad_limits_in_rf_toml_are_refused_at_start(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws", "header_timeout_s = 0\n")
    r = subprocess.run([*RF, "serve", "--port", "0"], cwd=root, capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if not k.startswith("RF_")})
    assert r.returncode != 0
    assert "[server] header_timeout_s must be a number of seconds above 0, not 0" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------ out of file descriptors


def test_running_out_of_descriptors_writes_a_few_log_lines_not_a_flood(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws", f"header_timeout_s = {HEADER_S}\n")
    log_path = tmp_path / "server.log"
    files = 128

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([*RF, "serve", "--port", "0"], cwd=root, stdout=log_file, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=low_limit)
    info_file = root / ".rf" / "server.json"
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while not info_file.exists() or not info_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        server = ServerProc(proc, json.loads(info_file.read_text()))
        while True:
            try:
                if health_ok(server):
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        for _ in range(2 * files):  # more half-sent requests than the server has descriptors
            sock = connect(server)
            sock.sendall(b"GET /api/health HTTP/1.1\r\n")
            socks.append(sock)
        # The server runs out, pauses accepting, times the stalled ones out, and accepts again.
        stop_at = time.monotonic() + 3 * HEADER_S
        while time.monotonic() < stop_at:
            select.select(socks, [], [], 0.2)
        for sock in socks:
            sock.close()
        socks.clear()
        deadline = time.monotonic() + 10
        while True:
            try:
                if health_ok(server):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not recover after running out of descriptors"
            time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(15)
    text = log_path.read_text()
    assert "max_connections lowered from 1000 to" in text, text
    assert "socket.accept() out of system resource" in text, text  # it did run out
    assert text.count("out of system resource") <= 8, text
    assert len(text) < 30_000, len(text)


# ------------------------------------------------------------ the log filter


def _record(msg: str, *, created: float, exc: BaseException | None = None, name: str = "asyncio") -> logging.LogRecord:
    record = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None,
                               (type(exc), exc, None) if exc is not None else None)
    record.created = created
    return record


def test_repeat_filter_folds_a_flood_into_a_few_lines_and_a_count() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(RepeatFilter(handler, burst=5, interval_s=10))
    now = time.time()
    error = OSError(24, "Too many open files")
    for i in range(1000):  # asyncio's message names the socket (fd, port): still one cause
        handler.handle(_record(f"socket.accept() out of system resource\nsocket: <fd={i % 7} port={40000 + i}>",
                               created=now + i * 0.001, exc=error))
    handler.handle(_record("a different cause", created=now + 1.5))
    shown = out.getvalue()
    assert shown.count("socket.accept() out of system resource") == 5, shown
    assert "a different cause" in shown
    # The next one after the interval is written, with the count of those left out.
    handler.handle(_record("socket.accept() out of system resource", created=now + 11, exc=error))
    last = out.getvalue()[len(shown):]
    assert "(and 995 more like this in the last 10 s, not shown)" in last, last
    # A cause that goes quiet gets a summary line when flushed (rf serve flushes at exit).
    filt = handler.filters[0]
    assert isinstance(filt, RepeatFilter)
    for i in range(20):
        handler.handle(_record("socket.accept() out of system resource", created=now + 12 + i * 0.01, exc=error))
    before = out.getvalue()
    filt.flush(now + 13)
    summary = out.getvalue()[len(before):]
    assert summary.strip().splitlines() == [
        "asyncio: socket.accept() out of system resource [OSError] (repeated 16 more times in the last 2 s, not shown)"
    ], summary
    assert out.getvalue().count("\n") < 60


def test_repeat_filter_writes_due_summaries_when_another_record_passes() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RepeatFilter(handler, burst=1, interval_s=10))
    now = time.time()
    for i in range(50):
        handler.handle(_record("worker 17 crashed", created=now + i * 0.01, name="rf.runtime"))
    assert out.getvalue().count("worker 17 crashed") == 1
    handler.handle(_record("something else", created=now + 20, name="rf.server"))
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["worker 17 crashed (repeated 49 more times in the last 10 s, not shown)", "something else"]


def test_repeat_filter_keeps_two_reasons_logged_through_one_template_apart() -> None:
    """`webhook %s %r refused: %s`: each reason is its own cause (the ids in it are not)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RepeatFilter(handler, burst=2, interval_s=10))
    now = time.time()
    for i in range(10):
        for reason in ("no such webhook trigger", "the trigger is disabled"):
            record = logging.LogRecord("rf.services", logging.WARNING, __file__, 1, "webhook %s %r refused: %s",
                                       ("staging", f"tr_{i}x{i * 7}", reason), None)
            record.created = now + i * 0.01
            handler.handle(record)
    shown = out.getvalue()
    assert shown.count("no such webhook trigger") == 2 and shown.count("the trigger is disabled") == 2, shown
