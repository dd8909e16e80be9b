"""ctx.llm.chat parameters, structured output, images, retries, client reuse and token usage.

Every provider call goes over real HTTP to ``fake_llm_server.FakeLLMServer``
(both wire formats), which records the request bodies it received, counts
its TCP connections and answers 429 (with ``Retry-After``) or 5xx when told
to. Agents run for real: in-process workers (LocalBackend), ``rf test`` and a
real ``rf serve``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import pytest
from fake_llm_server import FakeLLMServer, Reply

from conftest import run_rf, start_server, write_agent
from rf.client import HttpBackend, LocalBackend, open_local
from rf.config import snapshot_dir
from rf.errors import UsageError
from rf.llm.openai import max_tokens_field
from rf.llm.types import ProviderError
from rf.services import Services
from rf.services.host import HostCall

KEY = "sk-test-secret-123"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1},
                                           "kind": {"enum": ["trip", "stay"]}},
          "required": ["city", "days", "kind"], "additionalProperties": False}
FORMAT = {"type": "json_schema", "json_schema": {"name": "plan", "schema": SCHEMA, "strict": True}}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
Kind = Literal["openai", "anthropic"]


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def local(ws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    monkeypatch.setenv("RF_SECRET_LLM_KEY", KEY)  # credential "llm-key" (honoured by the credentials service)
    b = open_local(ws)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def svc(local: LocalBackend) -> Services:
    return local.services


def call_for(deadline_in: float | None = None) -> HostCall:
    call = HostCall(env="staging", agent="tester", execution_id="ex_test")
    if deadline_in is not None:
        call.start(time.monotonic() + deadline_in)
    return call


def add_provider(svc: Services, fake: FakeLLMServer, kind: Kind, name: str = "p", model: str = "m") -> None:
    svc.add_provider(name, kind, fake.openai_url if kind == "openai" else fake.anthropic_url, "llm-key", model)


# ------------------------------------------------------------------ parameters on the wire


def test_openai_parameters_arrive_in_the_request_body(svc: Services, fake: FakeLLMServer) -> None:
    add_provider(svc, fake, "openai", model="gpt-4o-mini")
    svc.llm_chat(call_for(), "hi", model="p:", temperature=0.2, top_p=0.9, stop=["END", "\n\n"], max_tokens=50)
    body = fake.received[-1].body
    assert (body["temperature"], body["top_p"], body["stop"], body["max_tokens"]) == (0.2, 0.9, ["END", "\n\n"], 50)
    assert "max_completion_tokens" not in body and "response_format" not in body
    # A reasoning model refuses max_tokens: it gets max_completion_tokens; a single stop string becomes a list.
    svc.llm_chat(call_for(), "hi", model="p:o3-mini", max_tokens=64, stop="END")
    body = fake.received[-1].body
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body and body["stop"] == ["END"]
    # Unset parameters are not sent at all (the provider's defaults apply).
    svc.llm_chat(call_for(), "hi", model="p:")
    assert not {"temperature", "top_p", "stop", "max_tokens", "max_completion_tokens"} & set(fake.received[-1].body)


def test_max_tokens_field_by_api_and_model_family() -> None:
    assert max_tokens_field("https://api.openai.com/v1", "gpt-4o-mini") == "max_completion_tokens"
    assert max_tokens_field("http://localhost:11434/v1", "llama3:8b") == "max_tokens"
    for model in ("o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5.1", "openai/gpt-5-nano"):
        assert max_tokens_field("http://localhost:8000/v1", model) == "max_completion_tokens", model
    assert max_tokens_field("http://localhost:8000/v1", "gpt-4o") == "max_tokens"
    assert max_tokens_field("http://localhost:8000/v1", "o1mini-clone") == "max_tokens"


def test_anthropic_parameters_arrive_in_the_request_body(svc: Services, fake: FakeLLMServer) -> None:
    add_provider(svc, fake, "anthropic", model="claude-x")
    svc.llm_chat(call_for(), "hi", model="p:", temperature=0.5, top_p=0.8, stop="STOP", max_tokens=99)
    body = fake.received[-1].body
    assert (body["temperature"], body["top_p"], body["stop_sequences"], body["max_tokens"]) == (0.5, 0.8, ["STOP"], 99)
    assert "stop" not in body and "tools" not in body and "tool_choice" not in body


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_bad_parameters_are_refused_before_any_request(svc: Services, fake: FakeLLMServer, kind: Kind) -> None:
    add_provider(svc, fake, kind)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"temperature": 3}, "temperature must be a number between 0 and 2"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"top_p": 1.5}, "top_p must be a number between 0 and 1"),
        ({"stop": []}, "stop must be a non-empty string or a list"),
        ({"stop": ["ok", 3]}, "stop must be"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"response_format": "json"}, "response_format must be an object"),
        ({"response_format": {"type": "xml"}}, "unknown type 'xml'"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": SCHEMA}}}, "name"),
        ({"response_format": {"type": "array", "items": {"type": "string"}}}, "unknown type 'array'"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///x.png"}}]}]},
         "not a valid image part"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}]},
         "only user messages may hold images"),
    ]
    for params, message in cases:
        params = {"messages": "hi", **params}
        with pytest.raises(UsageError) as info:
            svc.llm_chat(call_for(), model="p:", **params)
        assert message in info.value.message, (params, info.value.message)
    assert fake.received == []


# ------------------------------------------------------------------ structured output


def test_openai_structured_output_is_sent_and_parsed(svc: Services, fake: FakeLLMServer) -> None:
    add_provider(svc, fake, "openai")
    fake.add(Reply(text='{"city": "Paris", "days": 3, "kind": "trip"}'))
    out = svc.llm_chat(call_for(), "plan a trip", model="p:", response_format=FORMAT)
    assert fake.received[-1].body["response_format"] == FORMAT
    assert out["parsed"] == {"city": "Paris", "days": 3, "kind": "trip"}
    # A bare JSON Schema is the short form (named "answer"); streamed, the JSON is parsed at the end.
    fake.add(Reply(text='{"city": "Rome", "days": 2, "kind": "stay"}'))
    out = svc.llm_chat(call_for(), "again", model="p:", response_format=SCHEMA, stream=True)
    assert fake.received[-1].body["response_format"] == {"type": "json_schema",
                                                         "json_schema": {"name": "answer", "schema": SCHEMA}}
    assert out["parsed"]["city"] == "Rome" and "".join(out["chunks"]) == out["text"]
    # A model that answers with something else than JSON: a clear provider error.
    fake.add(Reply(text="Sure! Paris."))
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(call_for(), "plan", model="p:", response_format={"type": "json_object"})
    assert fake.received[-1].body["response_format"] == {"type": "json_object"}
    assert "did not answer with JSON" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_structured_output_is_a_forced_tool(svc: Services, fake: FakeLLMServer, stream: bool) -> None:
    add_provider(svc, fake, "anthropic")
    fake.add(Reply(text="", tool_calls=[("plan", {"city": "Oslo", "days": 4, "kind": "trip"})]))
    out = svc.llm_chat(call_for(), "plan a trip", model="p:", response_format=FORMAT, stream=stream)
    body = fake.received[-1].body
    assert body["tools"] == [{"name": "plan", "description": body["tools"][0]["description"], "input_schema": SCHEMA}]
    assert body["tool_choice"] == {"type": "tool", "name": "plan"}
    assert out["parsed"] == {"city": "Oslo", "days": 4, "kind": "trip"}
    assert json.loads(out["text"]) == out["parsed"]
    assert out["tool_calls"] == [] and out["finish_reason"] == "stop"  # the answer tool is not a tool call
    if stream:
        assert out["chunks"] == [out["text"]]


def test_anthropic_refuses_tools_with_response_format(svc: Services, fake: FakeLLMServer) -> None:
    add_provider(svc, fake, "anthropic")
    tool = {"name": "lookup", "description": "look up", "parameters": {"type": "object", "properties": {}}}
    with pytest.raises(UsageError) as info:
        svc.llm_chat(call_for(), "hi", model="p:", tools=[tool], response_format=SCHEMA)
    assert "cannot take tools and response_format" in info.value.message and "run the tools first" in (
        info.value.hint or "")
    assert fake.received == []


# ------------------------------------------------------------------ images


def test_image_parts_pass_to_openai_and_convert_for_anthropic(svc: Services, fake: FakeLLMServer) -> None:
    add_provider(svc, fake, "openai", "oai")
    add_provider(svc, fake, "anthropic", "ant")
    message = {"role": "user", "content": [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}
    out = svc.llm_chat(call_for(), [message], model="oai:")
    assert out["text"] == "echo: What is in these pictures?"
    assert fake.received[-1].body["messages"] == [message]  # OpenAI's own shape, as sent
    svc.llm_chat(call_for(), [{"role": "system", "content": "Be brief."}, message], model="ant:")
    body = fake.received[-1].body
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]}]


# ------------------------------------------------------------------ the mock provider


def test_mock_takes_the_same_parameters_offline(ws: Any, svc: Services) -> None:
    out = svc.llm_chat(call_for(), "tell me more. END of story", stop=["END"], temperature=1.5, top_p=0.1)
    assert out["text"] == "mock reply: tell me more. " and out["finish_reason"] == "stop"
    out = svc.llm_chat(call_for(), "plan a trip", response_format=FORMAT)
    assert out["parsed"] == {"city": "mock", "days": 1, "kind": "trip"} and json.loads(out["text"]) == out["parsed"]
    assert svc.llm_chat(call_for(), "plan a trip", response_format=FORMAT) == out  # deterministic
    assert svc.llm_chat(call_for(), "x", response_format={"type": "json_object"})["parsed"] == {}
    # A rule whose reply is a JSON object is the structured answer.
    path = ws.root / "rf.toml"
    path.write_text(path.read_text() + '\n[[llm.mock.rules]]\nmatch = "Lisbon"\n'
                    'reply = \'{"city": "Lisbon", "days": 5, "kind": "stay"}\'\n')
    out = svc.llm_chat(call_for(), "Lisbon please", response_format=FORMAT)
    assert out["parsed"] == {"city": "Lisbon", "days": 5, "kind": "stay"}
    # Images count as one token each; the reply echoes the text.
    out = svc.llm_chat(call_for(), [{"role": "user", "content": [{"type": "text", "text": "look here"},
                                                                 {"type": "image_url", "image_url": PNG}]}])
    assert out["text"] == "mock reply: look here" and out["usage"]["prompt_tokens"] == 3


# ------------------------------------------------------------------ retries


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_429_with_retry_after_is_waited_for_then_succeeds(svc: Services, fake: FakeLLMServer, kind: Kind) -> None:
    add_provider(svc, fake, kind)
    fake.fail(429, times=1, retry_after="1", body="rate limited")
    call = call_for(deadline_in=30)
    out = svc.llm_chat(call, "hello", model="p:")
    assert out["text"] == "echo: hello" and out["retries"] == 1
    first, second = fake.received
    assert second.at - first.at >= 1.0  # the wait the provider asked for
    assert call.state["span_attributes"]["llm.retries"] == 1


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_5xx_is_retried_with_backoff_also_when_streaming(svc: Services, fake: FakeLLMServer, kind: Kind) -> None:
    add_provider(svc, fake, kind)
    fake.fail(500, times=1)
    fake.fail(503, times=1)
    out = svc.llm_chat(call_for(30), "one two", model="p:", stream=True)
    assert out["text"] == "echo: one two" and out["retries"] == 2 and "".join(out["chunks"]) == out["text"]
    waits = [b.at - a.at for a, b in zip(fake.received, fake.received[1:], strict=False)]
    assert len(waits) == 2 and waits[0] >= 0.5 and waits[1] >= 1.0  # exponential backoff
    # Other 4xx answers are the caller's mistake: not retried.
    fake.fail(400, times=1, body="bad request")
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(call_for(30), "x", model="p:")
    assert "HTTP 400" in info.value.message and len(fake.received) == 4


def test_retries_stop_at_the_execution_deadline(svc: Services, fake: FakeLLMServer) -> None:
    add_provider(svc, fake, "openai")
    # Retry-After longer than the time left: no wait at all, a clear error at once.
    fake.fail(429, times=1, retry_after="30", body="slow down")
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(call_for(deadline_in=5), "x", model="p:")
    assert time.monotonic() - started < 2
    message = info.value.message
    assert "HTTP 429: slow down" in message and "not retried: the next attempt (in 30 s)" in message
    assert "execution's time runs out" in message and "timeout_s in agent.toml" in (info.value.hint or "")
    fake.script.clear()
    # One retry fits, the next does not.
    fake.fail(429, times=5, retry_after="1")
    call = call_for(deadline_in=1.6)
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(call, "x", model="p:")
    assert "retried 1 time)" in info.value.message and len(fake.received) == 3
    assert call.state["span_attributes"]["llm.retries"] == 1  # the failed call's span shows them too
    fake.script.clear()
    # And at most MAX_ATTEMPTS attempts in all.
    fake.fail(503, times=6, retry_after="0")
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(call_for(30), "x", model="p:")
    assert "gave up after 5 attempts; retried 4 times" in info.value.message


# ------------------------------------------------------------------ one HTTP client per provider


def test_one_http_client_per_provider_reused_across_calls_and_threads(svc: Services, fake: FakeLLMServer) -> None:
    add_provider(svc, fake, "openai", "oai")
    add_provider(svc, fake, "anthropic", "ant")
    for _ in range(3):
        svc.llm_chat(call_for(), "hi", model="oai:")
    assert fake.connections == 1  # one kept-alive connection: the same client, not one per call
    oai_client = svc.providers._llm_http_clients["oai"][1]  # type: ignore[attr-defined]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                svc.llm_chat(call_for(), "hi", model="oai:")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(fake.received) == 15
    assert svc.providers._llm_http_clients["oai"][1] is oai_client  # type: ignore[attr-defined]
    assert fake.connections <= 1 + 4  # at most one connection per concurrent thread, reused
    svc.llm_chat(call_for(), "hi", model="ant:")
    ant_client = svc.providers._llm_http_clients["ant"][1]  # type: ignore[attr-defined]
    assert ant_client is not oai_client
    # Removing a provider closes its client; added again, it gets a new one.
    svc.remove_provider("oai", force=True)
    assert oai_client.is_closed and "oai" not in svc.providers._llm_http_clients  # type: ignore[attr-defined]
    add_provider(svc, fake, "openai", "oai")
    svc.llm_chat(call_for(), "hi", model="oai:")
    assert svc.providers._llm_http_clients["oai"][1] is not oai_client  # type: ignore[attr-defined]
    new_client = svc.providers._llm_http_clients["oai"][1]  # type: ignore[attr-defined]
    svc.close()  # shutdown closes them all
    assert new_client.is_closed and ant_client.is_closed


# ------------------------------------------------------------------ token usage in the trace

USAGE_AGENT = '''
def handle(input, ctx):
    a = ctx.llm.chat("count my words please", model="oai:")
    b = ctx.llm.chat("and these", temperature=0.1)
    plan = ctx.llm.chat("plan", model="oai:", response_format=input["schema"])
    return {"a": a.usage.total_tokens, "b": b.usage.total_tokens, "plan": plan.parsed, "retries": a.retries}
'''


def test_token_usage_per_span_and_summed_on_the_execution(ws: Any, local: LocalBackend, fake: FakeLLMServer) -> None:
    local.add_provider("oai", "openai", fake.openai_url, "llm-key", "gpt-test")
    fake.fail(429, times=1, retry_after="0")
    fake.add(Reply(text="ok", prompt_tokens=11, completion_tokens=7))
    fake.add(Reply(text='{"city": "Bergen", "days": 1, "kind": "trip"}', prompt_tokens=20, completion_tokens=9))
    write_agent(ws.root, "counter", USAGE_AGENT)
    local.deploy("counter", snapshot_dir(ws.root / "agents" / "counter"), "usage", "ada")
    ex = local.invoke("staging", "counter", {"schema": SCHEMA})
    assert ex.status == "succeeded", (ex.error, ex.traceback)
    mock_total = 2 + 4  # the mock counts words: "and these" + "mock reply: and these"
    assert ex.output == {"a": 18, "b": mock_total, "plan": {"city": "Bergen", "days": 1, "kind": "trip"},
                         "retries": 1}
    spans = local.get_trace(ex.id).spans
    root = spans[0]
    llm = [s for s in spans if s.kind == "llm"]
    assert [s.attributes["llm.tokens.total"] for s in llm] == [18, mock_total, 29]
    assert [(s.attributes["llm.tokens.prompt"], s.attributes["llm.tokens.completion"]) for s in llm] == [
        (11, 7), (2, 4), (20, 9)]
    assert llm[0].attributes["llm.retries"] == 1 and "llm.retries" not in llm[1].attributes
    assert llm[1].attributes["temperature"] == 0.1
    assert root.kind == "agent" and root.attributes["llm.tokens.prompt"] == 11 + 2 + 20
    assert root.attributes["llm.tokens.completion"] == 7 + 4 + 9
    assert root.attributes["llm.tokens.total"] == 18 + mock_total + 29 and root.attributes["llm.calls"] == 3


# ------------------------------------------------------------------ end to end: rf test and rf serve

E2E_AGENT = '''
def handle(input, ctx):
    result = ctx.llm.chat([{"role": "user", "content": [
        {"type": "text", "text": "Where is this?"},
        {"type": "image_url", "image_url": {"url": input["image"]}}]}],
        model=input.get("model"), response_format=input["schema"], max_tokens=200, stop=["###"])
    return {"answer": result.parsed, "tokens": result.usage.total_tokens, "retries": result.retries}
'''


def test_rf_test_runs_structured_output_offline(ws: Any) -> None:
    write_agent(ws.root, "vision", E2E_AGENT)
    r = run_rf("test", "vision", "--input", json.dumps({"image": PNG, "schema": SCHEMA}), "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    ex = json.loads(r.stdout)
    assert ex["status"] == "succeeded" and ex["output"]["answer"] == {"city": "mock", "days": 1, "kind": "trip"}


def test_rf_serve_retries_429_and_converts_images_for_anthropic(ws: Any, fake: FakeLLMServer) -> None:
    srv = start_server(ws.root, extra_env={"RF_SECRET_LLM_KEY": KEY})
    try:
        b = HttpBackend(srv.url, srv.token, ws)
        b.add_provider("ant", "anthropic", fake.anthropic_url, "llm-key", "claude-test")
        write_agent(ws.root, "vision", E2E_AGENT)
        b.deploy("vision", snapshot_dir(ws.root / "agents" / "vision"), "vision", "ada")
        fake.fail(429, times=1, retry_after="1")
        fake.add(Reply(tool_calls=[("answer", {"city": "Tromsø", "days": 2, "kind": "stay"})],
                       prompt_tokens=30, completion_tokens=12))
        r = httpx.post(f"{srv.url}/staging/agents/vision", json={"input": {
            "image": PNG, "schema": SCHEMA, "model": "ant:"}}, timeout=60)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["output"] == {"answer": {"city": "Tromsø", "days": 2, "kind": "stay"}, "tokens": 42,
                                  "retries": 1}
        first, second = fake.received
        assert second.at - first.at >= 1.0
        body = second.body
        assert body["max_tokens"] == 200 and body["stop_sequences"] == ["###"]
        assert body["tool_choice"] == {"type": "tool", "name": "answer"}
        assert body["messages"][0]["content"][1] == {
            "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]}}
        spans = b.get_trace(data["execution_id"]).spans
        [llm] = [s for s in spans if s.kind == "llm"]
        assert llm.attributes["llm.retries"] == 1 and llm.attributes["llm.tokens.total"] == 42
        assert spans[0].attributes["llm.tokens.total"] == 42
        assert KEY not in json.dumps([s.attributes for s in spans])
    finally:
        srv.stop()


RUN_TOOLS_AGENT = """
def handle(input, ctx):
    def lookup(city: str) -> str:
        \"\"\"Look a city up.\"\"\"
        return city.upper()
    result = ctx.llm.run_tools("hi", tools=[lookup], model="oai:", temperature=0.3, top_p=0.7, stop="END")
    return result.text
"""


def test_run_tools_passes_the_sampling_parameters_on(ws: Any, local: LocalBackend, fake: FakeLLMServer) -> None:
    local.add_provider("oai", "openai", fake.openai_url, "llm-key", "gpt-test")
    fake.add(Reply(text="done"))
    write_agent(ws.root, "tooler", RUN_TOOLS_AGENT)
    local.deploy("tooler", snapshot_dir(ws.root / "agents" / "tooler"), "tools", "ada")
    ex = local.invoke("staging", "tooler", {})
    assert ex.status == "succeeded" and ex.output == "done", (ex.error, ex.traceback)
    body = fake.received[-1].body
    assert (body["temperature"], body["top_p"], body["stop"]) == (0.3, 0.7, ["END"]) and body["tools"]
