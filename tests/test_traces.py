"""Traces: a span tree per execution, trace modes, secret redaction, the CLI, and
OpenTelemetry export (checked against the OTLP protobuf definitions)."""

from __future__ import annotations

import base64
import gc
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import run_rf, write_agent
from rf.config import snapshot_dir
from rf.errors import NotFound
from rf.models import Execution, Span, Trace
from rf.services import Services
from rf.services.host import HostCall, host_method
from rf.store import Store

SECRET = 's3"cr3t-XYZZY'  # a quote, so it also appears JSON-escaped


class FakeHostMethods:
    """Two host methods that stand in for an LLM call and a credential lookup."""

    @host_method("llm.fake")
    def _fake_llm(self, call: HostCall, prompt: str) -> dict[str, Any]:
        call.annotate(provider="mock", provider_kind="mock", model="fake-1",
                      input_messages=[{"role": "user", "content": prompt}],
                      usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}, finish_reason="stop")
        return {"text": f"echo {prompt}"}

    @host_method("test.secret")
    def _secret(self, call: HostCall) -> dict[str, Any]:
        token = call.secret(SECRET)
        call.annotate(header=f"Bearer {token}")
        return {"token": token}


class FakeServices(Services):
    """Services whose agent code may call :class:`FakeHostMethods` too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.agents.host_services += (FakeHostMethods(),)


TreeAgent = """
def handle(input, ctx):
    with ctx.trace.span("plan", step=1) as plan:
        ctx.memory.set("k", 1)
        with ctx.trace.span("lookup"):
            found = ctx.memory.get("k")
            reply = ctx.call_host("llm.fake", prompt="hi")
        plan.set(found=found)
    ctx.session.history()
    try:
        with ctx.trace.span("risky"):
            ctx.call_host("memory.get", key="")
    except Exception:
        pass
    return {"reply": reply["text"]}
"""


def toml(mode: str = "standard", extra: str = "") -> str:
    return f'entrypoint = "agent:handle"\ntimeout_s = 10\ntrace = "{mode}"\n{extra}'


@pytest.fixture
def services(ws: Any) -> Iterator[FakeServices]:
    store = Store.open(ws.db_path)
    s = FakeServices(store, ws)
    try:
        yield s
    finally:
        s.close()
        store.close()


def files(code: str, mode: str = "standard", extra: str = "") -> dict[str, bytes]:
    return {"agent.toml": toml(mode, extra).encode(), "agent.py": code.encode()}


def by_name(trace: Trace) -> dict[str, Span]:
    return {s.name: s for s in trace.spans}


def test_span_tree_of_an_execution(services: FakeServices) -> None:
    ex = services.run_test("tree", files(TreeAgent), {"q": 1}, "t-1")
    assert ex.status == "succeeded", ex.error
    trace = services.get_trace(ex.id)
    assert (trace.execution_id, trace.env, trace.agent, trace.status) == (ex.id, "staging", "tree", "ok")
    spans = by_name(trace)
    assert sorted(s.name for s in trace.spans) == sorted(["tree", "plan", "lookup", "risky", "memory.set", "memory.get",
                                                          "memory.get", "llm.fake", "session.history",
                                                          "worker.start"])  # its first run: a cold start
    root = trace.spans[0]
    assert root.parent_id is None and root.kind == "agent" and root.name == "tree"
    assert all(s.trace_id == trace.trace_id and s.env == "staging" and s.execution_id == ex.id for s in trace.spans)
    assert len({s.span_id for s in trace.spans}) == len(trace.spans)
    plan, lookup, risky = spans["plan"], spans["lookup"], spans["risky"]
    assert plan.parent_id == root.span_id and plan.kind == "custom"
    assert plan.attributes == {"step": 1, "found": 1}
    assert lookup.parent_id == plan.span_id and risky.parent_id == root.span_id
    assert spans["memory.set"].parent_id == plan.span_id and spans["memory.set"].kind == "memory"
    gets = [s for s in trace.spans if s.name == "memory.get"]
    assert [s.parent_id for s in gets] == [lookup.span_id, risky.span_id]
    assert spans["llm.fake"].parent_id == lookup.span_id and spans["llm.fake"].kind == "llm"
    assert spans["llm.fake"].attributes["model"] == "fake-1"
    assert spans["session.history"].kind == "session" and spans["session.history"].parent_id == root.span_id
    # Timing: children inside their parents, everything inside the root.
    for s in trace.spans[1:]:
        parent = next(p for p in trace.spans if p.span_id == s.parent_id)
        assert parent.start_ns <= s.start_ns <= s.end_ns <= parent.end_ns, (s.name, parent.name)
    assert root.attributes["input"] == {"q": 1} and root.attributes["output"] == {"reply": "echo hi"}
    assert root.attributes["session_id"] == "t-1" and root.attributes["source"] == "test"
    # A host call that failed (and was handled) marks its span, and is counted on the root.
    failed_get = gets[1]
    assert failed_get.status == "error" and "non-empty string" in (failed_get.error or "")
    assert risky.status == "error" and "non-empty string" in (risky.error or "")  # it passed through the span
    assert root.status == "ok" and root.attributes["child_errors"] == 2
    assert [t.execution_id for t in services.list_traces("staging")] == [ex.id]


def test_a_cold_start_shows_in_the_trace(services: FakeServices) -> None:
    """The wait for a new worker to start and import the agent is a span of its own, so a trace
    longer than its execution's run says why; a warm worker adds none."""
    code = "import time\ntime.sleep(0.3)  # a slow import\ndef handle(input, ctx):\n    return 1\n"
    cold = services.run_test("slow", files(code), {})
    warm = services.run_test("slow", files(code), {})
    assert cold.status == warm.status == "succeeded"
    spans = services.get_trace(cold.id).spans
    root, start = spans[0], by_name(services.get_trace(cold.id))["worker.start"]
    assert (start.kind, start.status, start.parent_id) == ("runtime", "ok", root.span_id)
    assert start.end_ns - start.start_ns >= 300_000_000 and start.attributes["worker_pid"] > 0
    assert root.start_ns <= start.start_ns <= start.end_ns <= root.end_ns
    assert cold.duration_ms < 300 < (root.end_ns - root.start_ns) / 1e6  # the run itself excludes the import
    assert "worker.start" not in by_name(services.get_trace(warm.id))
    # An agent that cannot be imported: the failed start is the span that says so.
    broken = services.run_test("broken", files("raise ImportError('no such thing')\n"), {})
    assert broken.status == "failed" and "no such thing" in (broken.error or "")
    failed = by_name(services.get_trace(broken.id))["worker.start"]
    assert failed.status == "error" and failed.error == "the worker could not start the agent"


def test_errors_mark_their_span_and_the_root(services: FakeServices) -> None:
    code = ("def handle(input, ctx):\n    with ctx.trace.span('outer'):\n        with ctx.trace.span('inner'):\n"
            "            raise KeyError('missing thing')\n")
    ex = services.run_test("boom", files(code), {})
    assert ex.status == "failed"
    spans = by_name(services.get_trace(ex.id))
    assert spans["inner"].status == "error" and spans["inner"].error == "KeyError: 'missing thing'"
    assert spans["outer"].status == "error"
    assert spans["boom"].status == "error" and "missing thing" in (spans["boom"].error or "")
    assert spans["boom"].attributes["error_type"] == "exception"
    assert services.list_traces("staging")[0].status == "error"


def test_trace_modes(services: FakeServices) -> None:
    code = ("def handle(input, ctx):\n    with ctx.trace.span('s', blob=input['text'], n=3):\n"
            "        ctx.memory.get('x')\n    return {'echo': input['text']}\n")
    text = "a" * 500
    full = services.get_trace(services.run_test("full", files(code, "full"), {"text": text}).id)
    std = services.get_trace(services.run_test("std", files(code, "standard", "trace_max_chars = 50\n"),
                                               {"text": text}).id)
    minimal = services.get_trace(services.run_test("mini", files(code, "minimal"), {"text": text}).id)

    f = by_name(full)
    assert f["full"].attributes["input"] == {"text": text} and f["full"].attributes["output"] == {"echo": text}
    assert f["s"].attributes == {"blob": text, "n": 3}
    assert f["memory.get"].attributes == {"input": {"key": "x"}, "output": None}

    s = by_name(std)  # values that fit are kept as they are; longer ones become truncated text
    # (truncated text of the compact JSON encoding: {"text":"aaa...)
    assert s["std"].attributes["input"] == '{"text":"' + "a" * 41 + "… [461 more characters]"
    assert s["s"].attributes == {"blob": "a" * 50 + "… [450 more characters]", "n": 3}
    assert s["memory.get"].attributes == {"input": {"key": "x"}, "output": None}

    m = by_name(minimal)
    assert set(m["mini"].attributes) == {"commit", "source"}  # no input/output
    assert m["s"].attributes == {} and m["memory.get"].attributes == {}
    assert all(sp.end_ns >= sp.start_ns and sp.status == "ok" for sp in minimal.spans)
    assert len(minimal.spans) == 4  # the root, s, memory.get and its cold start (worker.start)
    assert all(not s.attributes for s in minimal.spans if s.kind != "agent")


def test_secrets_are_redacted_everywhere(services: FakeServices) -> None:
    code = """
def handle(input, ctx):
    token = ctx.call_host("test.secret")["token"]
    print("the token is", token)
    with ctx.trace.span(f"use {token}", header=token, nested={"auth": [token]}):
        ctx.memory.set("k", token)
    raise RuntimeError(f"leaked {token}")
"""
    for mode in ("full", "standard", "minimal"):
        ex = services.run_test("leaky", files(code, mode), {"token?": SECRET})
        assert ex.status == "failed"
        recorded = services.get_execution(ex.id)
        assert "[REDACTED]" in (recorded.error or "") and "[REDACTED]" in recorded.logs
        trace = services.get_trace(ex.id)
        dumped = json.dumps([s.__dict__ for s in trace.spans], ensure_ascii=False)
        for text in (dumped, recorded.logs, recorded.error or "", recorded.traceback or ""):
            assert "cr3t-XYZZY" not in text, mode
        if mode != "minimal":
            assert "[REDACTED]" in dumped
            assert by_name(trace)["test.secret"].attributes["header"] == "Bearer [REDACTED]"
        assert "use [REDACTED]" in by_name(trace)


def test_span_attributes_must_be_json(services: FakeServices) -> None:
    code = """
def handle(input, ctx):
    try:
        ctx.trace.span("bad", when=object())
    except Exception as exc:
        caught = f"{type(exc).__name__}: {exc}"
    with ctx.trace.span("good") as span:
        try:
            span.set(more={1, 2})
        except Exception as exc:
            caught2 = str(exc)
    if input.get("unhandled"):
        with ctx.trace.span("worse", nan=float("nan")):
            pass
    return {"caught": caught, "caught2": caught2}
"""
    ex = services.run_test("attrs", files(code), {})
    assert ex.status == "succeeded", ex.error
    assert ex.output["caught"].startswith("UsageError: ctx.trace.span('bad'): attribute 'when' is not JSON-serializable")
    assert "'more' is not JSON-serializable" in ex.output["caught2"]
    spans = by_name(services.get_trace(ex.id))
    assert "bad" not in spans and spans["good"].attributes == {}  # nothing half-written
    failed = services.run_test("attrs", files(code), {"unhandled": True})
    assert failed.status == "failed" and "attribute 'nan' is not JSON-serializable" in (failed.error or "")
    assert "worse" not in by_name(services.get_trace(failed.id))


def test_span_text_must_be_valid_utf8(services: FakeServices) -> None:
    """A lone surrogate (valid in a Python str, not in UTF-8) is refused where the span is made;
    the execution goes on and keeps its other writes."""
    code = """
def handle(input, ctx):
    caught = []
    for make in (lambda: ctx.trace.span("bad", note="x\\ud800"),
                 lambda: ctx.trace.span("bad", note="ok", more=["\\udfff"]),
                 lambda: ctx.trace.span("bad\\ud800")):
        try:
            make()
        except Exception as exc:
            caught.append(f"{type(exc).__name__}: {exc}")
    with ctx.trace.span("fine", note="ünïcode ✓") as span:
        try:
            span.set(late="\\ud800")
        except Exception as exc:
            caught.append(f"{type(exc).__name__}: {exc}")
    ctx.memory.set("kept", 1)
    return caught
"""
    ex = services.run_test("utf", files(code), {})
    assert ex.status == "succeeded", ex.error
    assert len(ex.output) == 4 and all(c.startswith("UsageError: ") and "not valid text" in c for c in ex.output)
    assert "attribute 'note'" in ex.output[0] and "attribute 'more'" in ex.output[1] and "name" in ex.output[2]
    assert "attribute 'late'" in ex.output[3]
    spans = by_name(services.get_trace(ex.id))
    assert spans["fine"].attributes == {"note": "ünïcode ✓"} and "bad" not in spans
    assert [m.key for m in services.list_memory("staging")] == ["kept"]


def test_spans_made_before_a_hang_are_kept(services: FakeServices) -> None:
    # 'before' waits in the worker's outbox; when 'after-sleep' ends, the oldest pending
    # call is 0.25 s old, so both are sent then — before the handler hangs.
    code = ("import time\ndef handle(input, ctx):\n    with ctx.trace.span('before'):\n        pass\n"
            "    time.sleep(0.25)\n    with ctx.trace.span('after-sleep'):\n        pass\n"
            "    with ctx.trace.span('never-sent'):\n        pass\n    while True:\n        pass\n")
    ex = services.run_test("hang", {"agent.toml": b'entrypoint = "agent:handle"\ntimeout_s = 1.5\n',
                                    "agent.py": code.encode()}, {})
    assert ex.status == "failed" and ex.error_type == "timeout"
    spans = by_name(services.get_trace(ex.id))
    assert set(spans) == {"hang", "before", "after-sleep", "worker.start"}  # "never-sent" was still in the outbox
    assert spans["hang"].status == "error" and "timed out" in (spans["hang"].error or "")


def test_executions_leave_no_garbage_cycles(services: FakeServices) -> None:
    """An execution's context, outbox and services (in the worker), and its call and trace
    (on the host), are freed when it ends, not left as reference cycles for the garbage
    collector: with cycles, every few dozen runs a collection walks hundreds of dead objects."""
    code = ("import gc\n"
            "def handle(input, ctx):\n"
            "    left = gc.collect()  # what the runs before this one left behind\n"
            "    for n in range(3):\n"
            "        with ctx.trace.span('step', n=n):\n"
            "            pass\n"
            "    ctx.memory.set('k', input)\n"
            "    ctx.session.append('tool', 'done')\n"
            "    return left\n")
    agent = files(code)
    first = services.run_test("tidy", agent, 1, "s-1")
    assert first.status == "succeeded", first.error
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        later = [services.run_test("tidy", agent, n, "s-1") for n in range(2, 5)]
        gc.collect()
        kinds = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert [ex.output for ex in later] == [0, 0, 0]  # the worker's runs left nothing to collect
    assert not kinds & {"HostCall", "ExecutionTrace", "Execution"}, kinds
    assert services.get_memory("k").value == 4 and len(services.get_trace(later[-1].id).spans) == 6


def test_many_spans_in_several_batches(services: FakeServices) -> None:
    """300 spans: the worker sends them in more than one batch (a full outbox flushes, the
    rest rides on its result); each keeps its parent, and they are stored as one trace."""
    code = ("def handle(input, ctx):\n"
            "    with ctx.trace.span('outer', kind='loop') as outer:\n"
            "        for n in range(300):\n"
            "            with ctx.trace.span('step', n=n, label='x' * (n % 7)):\n"
            "                pass\n"
            "        outer.set(done=True)\n"
            "    return 'ok'\n")
    ex = services.run_test("many", files(code, "standard", "trace_max_chars = 50\n"), {})
    assert ex.status == "succeeded", ex.error
    trace = services.get_trace(ex.id)
    root, outer = trace.spans[0], by_name(trace)["outer"]
    steps = [s for s in trace.spans if s.name == "step"]
    assert len(trace.spans) == 303 and len(steps) == 300  # with the root, "outer" and worker.start
    assert outer.parent_id == root.span_id and outer.attributes == {"kind": "loop", "done": True}
    assert all(s.parent_id == outer.span_id and s.kind == "custom" and s.status == "ok" for s in steps)
    assert sorted(s.attributes["n"] for s in steps) == list(range(300))
    assert all(s.attributes["label"] == "x" * (s.attributes["n"] % 7) for s in steps)
    assert all(outer.start_ns <= s.start_ns <= s.end_ns <= outer.end_ns for s in steps)


def test_custom_spans_nest_in_a_span_opened_through_call_host(services: FakeServices) -> None:
    code = ("def handle(input, ctx):\n"
            "    span_id = ctx.call_host('trace.start', name='manual')\n"
            "    with ctx.trace.span('inside'):\n"
            "        pass\n"
            "    ctx.call_host('trace.end', span_id=span_id)\n"
            "    with ctx.trace.span('after'):\n"
            "        pass\n"
            "    return 'ok'\n")
    ex = services.run_test("manual", files(code), {})
    assert ex.status == "succeeded", ex.error
    trace = services.get_trace(ex.id)
    spans = by_name(trace)
    assert spans["manual"].parent_id == trace.spans[0].span_id
    assert spans["inside"].parent_id == spans["manual"].span_id
    assert spans["after"].parent_id == trace.spans[0].span_id


@pytest.mark.parametrize(("row", "message"), [
    (["not-hex-at-all!!", None, "custom", "x", 1, 2, "ok", None, {}], "16 lowercase hex digits"),
    (["0123456789ABCDEF", None, "custom", "x", 1, 2, "ok", None, {}], "16 lowercase hex digits"),
    (["0123456789abcdef", "short", "custom", "x", 1, 2, "ok", None, {}], "length"),
    (["0123456789abcdef", None, "llm", "x", 1, 2, "ok", None, {}], "Invalid enum value 'llm'"),
    (["0123456789abcdef", None, "custom", "", 1, 2, "ok", None, {}], "length"),
    (["0123456789abcdef", None, "custom", "x" * 201, 1, 2, "ok", None, {}], "length"),
    (["0123456789abcdef", None, "custom", "x", 1, 2, "fine", None, {}], "Invalid enum value 'fine'"),
    (["0123456789abcdef", None, "custom", "x", 1, 2, "ok", None, [1, 2]], "Expected `object`"),
    (["0123456789abcdef", None, "custom", "x", "1", 2, "ok", None, {}], "int"),
    (["0123456789abcdef", None, "custom", "x", 1, 2, "ok"], "length"),
])
def test_malformed_span_rows_are_refused(services: FakeServices, row: list[Any], message: str) -> None:
    """Rows that did not come from ctx.trace.span (agent code filling the outbox itself) are
    refused whole: the execution fails, saying why, and keeps none of its writes."""
    code = ("from rf.runtime.ctx_trace import outbox\n"
            "def handle(input, ctx):\n"
            "    with ctx.trace.span('fine'):\n"
            "        pass\n"
            "    ctx.memory.set('written', 1)\n"
            "    outbox(ctx)._spans.append(input['row'])\n"
            "    return 'ok'\n")
    ex = services.run_test("forger", files(code), {"row": row})
    assert ex.status == "failed", row
    assert "malformed custom spans from the worker" in (ex.error or "") and message in (ex.error or ""), ex.error
    names = {s.name for s in services.get_trace(ex.id).spans}
    assert "fine" not in names and "x" not in names  # the batch is refused whole
    assert services.list_memory("staging") == []


def test_traces_never_mix_environments(services: FakeServices, ws: Any) -> None:
    write_agent(ws.root, "tree", TreeAgent, toml())
    services.deploy("tree", snapshot_dir(ws.root / "agents" / "tree"), "v1", "ada")
    services.promote("tree", "ada")
    s = services.invoke("staging", "tree", {})
    p = services.invoke("production", "tree", {})
    assert [t.execution_id for t in services.list_traces("staging")] == [s.id]
    assert [t.execution_id for t in services.list_traces("production")] == [p.id]
    assert all(sp.env == "production" for sp in services.get_trace(p.id, "production").spans)
    with pytest.raises(NotFound):
        services.get_trace(p.id, "staging")
    with pytest.raises(NotFound):
        services.get_trace("ex_00000000000000000000z")
    assert services.get_trace(p.id[:14]).execution_id == p.id  # a unique prefix
    assert [sp.env for sp in services.export_spans("production")] == ["production"] * len(services.get_trace(p.id).spans)
    assert services.list_traces("staging", since="1h")[0].execution_id == s.id
    assert services.list_traces("staging", since="2999-01-01") == []


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def _parse(data: bytes | str) -> ExportTraceServiceRequest:
    return json_format.Parse(data, ExportTraceServiceRequest())


def _attrs(items: Any) -> dict[str, Any]:
    out = {}
    for kv in items:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def test_otlp_export_and_the_traces_cli(services: FakeServices, ws: Any, tmp_path: Path) -> None:
    ok = services.run_test("tree", files(TreeAgent), {"q": 1})
    boom = services.run_test("boom", files("def handle(input, ctx):\n    raise ValueError('no')\n"), {})
    executions: list[Execution] = [ok, boom]
    tree_count = len(services.get_trace(ok.id).spans)
    n_spans = sum(len(services.get_trace(e.id).spans) for e in executions)
    services.close()
    services.store.close()  # the CLI opens the workspace store itself

    out = tmp_path / "traces.json"
    r = run_rf("traces", "export", "--format", "otlp-json", "--env", "staging", str(out), cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert f"wrote {n_spans} spans of 2 executions" in r.stderr
    text = out.read_text()
    request = _parse(text)  # parses with the OpenTelemetry protobuf definitions
    assert sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) == n_spans
    resources = {_attrs(rs.resource.attributes)["service.name"]: rs for rs in request.resource_spans}
    assert sorted(resources) == ["rf/boom", "rf/tree"]
    for rs in request.resource_spans:
        assert _attrs(rs.resource.attributes)["deployment.environment"] == "staging"
    tree_spans = {s.name: s for s in resources["rf/tree"].scope_spans[0].spans}
    llm = _attrs(tree_spans["llm.fake"].attributes)
    assert llm["gen_ai.system"] == "mock" and llm["gen_ai.request.model"] == "fake-1"
    assert llm["gen_ai.usage.input_tokens"] == 5 and llm["gen_ai.usage.output_tokens"] == 7
    assert llm["rf.kind"] == "llm" and llm["rf.execution_id"] == ok.id
    root = tree_spans["tree"]
    assert root.kind == root.SPAN_KIND_SERVER and root.status.code == root.status.STATUS_CODE_OK
    assert tree_spans["llm.fake"].kind == root.SPAN_KIND_CLIENT
    assert root.end_time_unix_nano > root.start_time_unix_nano > 1_700_000_000 * 10**9
    boom_root = resources["rf/boom"].scope_spans[0].spans[0]
    assert boom_root.status.code == boom_root.status.STATUS_CODE_ERROR and "no" in boom_root.status.message
    # Ids are hex in OTLP/JSON; as bytes they are 16 (trace) and 8 (span) long.
    raw = json.loads(text)
    hex_ids = [(s["traceId"], s["spanId"]) for s in raw["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    for span in raw["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    reparsed = _parse(json.dumps(raw))
    ids = [(s.trace_id.hex(), s.span_id.hex()) for s in reparsed.resource_spans[0].scope_spans[0].spans]
    assert ids == hex_ids and all(len(t) == 32 and len(s) == 16 for t, s in ids)

    # OTLP/HTTP to a collector (a local HTTP server).
    _Collector.received = []
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{collector.server_address[1]}"
        r = run_rf("traces", "export", "--endpoint", url, "--since", "1h", cwd=ws.root)
        assert r.returncode == 0, r.stderr
        assert "in 1 request" in r.stderr
    finally:
        collector.shutdown()
        collector.server_close()
    [(path, ctype, body)] = _Collector.received
    assert path == "/v1/traces" and ctype == "application/json"
    assert sum(len(ss.spans) for rs in _parse(body).resource_spans for ss in rs.scope_spans) == n_spans
    dead = run_rf("traces", "export", "--endpoint", url, cwd=ws.root)
    assert dead.returncode != 0 and "cannot send traces" in dead.stderr

    # The CLI: list, show (tree, durations, timing bars), --json.
    listed = run_rf("traces", "list", cwd=ws.root)
    assert listed.returncode == 0 and ok.id in listed.stdout and boom.id in listed.stdout
    shown = run_rf("traces", "show", ok.id, cwd=ws.root)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {ok.id} · tree · staging · ok")
    assert any("├─ plan" in ln for ln in lines) and any("│  ├─ memory.set" in ln or "│  └─ memory.set" in ln
                                                          for ln in lines)
    assert any("━" in ln for ln in lines) and any("mock fake-1 5→7 tokens" in ln for ln in lines)
    # A host call's line says what it was about (the memory key), not only its name.
    assert any("memory.set" in ln and "key=k" in ln for ln in lines), shown.stdout
    as_json = json.loads(run_rf("traces", "show", ok.id[:16], "--env", "staging", "--json", cwd=ws.root).stdout)
    assert as_json["execution_id"] == ok.id and len(as_json["spans"]) == tree_count
    # A narrow terminal: the details give way (then the timeline narrows, then the details
    # go); span names, kinds and durations stay whole, and no line is longer than the terminal.
    for columns, details in ((80, True), (56, False)):
        narrow = run_rf("traces", "show", ok.id, cwd=ws.root, env={"COLUMNS": str(columns)}).stdout.splitlines()
        header = next(ln for ln in narrow if ln.startswith("span "))
        assert header.split() == ["span", "kind", "duration", "timeline", *(["details"] if details else [])]
        rows = narrow[narrow.index(header) + 1:]
        assert len(rows) == tree_count and max(map(len, rows)) <= columns, narrow
        memory_row = next(ln for ln in rows if "memory.set" in ln)
        assert " memory " in memory_row and " ms" in memory_row and "━" in rows[0]


def test_commits_deployed_before_per_environment_modes_keep_their_mode(services: FakeServices, ws: Any) -> None:
    """A commit stored by an older rf has one trace mode (``"trace": "minimal"`` in its
    config, and no [session]): both environments use it; a new commit stores one per
    environment."""
    write_agent(ws.root, "old", "def handle(input, ctx):\n    return {'echo': input}\n",
                'entrypoint = "agent:handle"\ntimeout_s = 10\n[trace]\nstaging = "full"\n')
    commit = services.deploy("old", snapshot_dir(ws.root / "agents" / "old"), "v1", "ada").commit
    assert commit is not None
    stored = services.store.get_commit_config(commit.id)
    assert stored["trace"] == {"staging": "full", "production": "standard"}
    services.promote("old", "ada")
    stored.update(trace="minimal")
    del stored["session"]
    services.store.cursor().execute("UPDATE commits SET config = ? WHERE id = ?", [json.dumps(stored), commit.id])
    services.agents._configs.clear()
    for env in ("staging", "production"):
        ex = services.invoke(env, "old", {"x": 1}, "s-old")
        assert ex.status == "succeeded", ex.error
        root = services.get_trace(ex.id).spans[0]
        released = {"release_id"} if env == "production" else set()  # (production's release it ran)
        assert set(root.attributes) == {"commit", "source", "session_id", *released}, (env, root.attributes)
