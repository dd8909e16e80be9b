"""LLM providers and ctx.llm.

The OpenAI and Anthropic clients are tested over real HTTP against
``fake_llm_server.FakeLLMServer`` (both wire formats, JSON and SSE), never by
patching the client. Agent code is tested by really deploying and invoking an
agent whose handler calls ``ctx.llm``.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from fake_llm_server import FakeLLMServer, Reply

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.client import HttpBackend, LocalBackend, open_local
from rf.config import snapshot_dir
from rf.errors import Conflict, NotFound, UsageError, WorkspaceError
from rf.llm.types import ProviderError, ToolLoopError
from rf.runtime.context import Context
from rf.runtime.tools import function_spec
from rf.services import Services
from rf.services.host import HostCall

KEY = "sk-test-secret-123"


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def local(ws: Any) -> Iterator[LocalBackend]:
    b = open_local(ws)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def svc(local: LocalBackend) -> Services:
    return local.services


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> str:
    """Credential ``llm-key`` through its RF_SECRET_ override (honoured by the credentials service)."""
    monkeypatch.setenv("RF_SECRET_LLM_KEY", KEY)
    return "llm-key"


def host_call(env: str = "staging", agent: str = "tester") -> HostCall:
    return HostCall(env=env, agent=agent, execution_id="ex_test")


def ctx_for(svc: Services, call: HostCall) -> Context:
    """A real Context whose host is the real Services (what a worker reaches over its pipe)."""
    return Context(env=call.env, agent=call.agent, execution_id=call.execution_id, host=svc.host_handler(call))


def add_rules(ws: Any, toml: str) -> None:
    path = ws.root / "rf.toml"
    path.write_text(path.read_text() + "\n" + textwrap.dedent(toml))


def lookup_customer(id: str, verbose: bool = False) -> dict[str, Any]:
    """Look up a customer in the CRM.

    Args:
        id: the customer's id.
        verbose: include everything.
    """
    return {"id": id, "name": "Ada Lovelace", "plan": "gold"}


# ------------------------------------------------------------------ the mock provider


def test_mock_is_builtin_default_and_echoes_deterministically(svc: Services) -> None:
    [mock] = svc.list_providers()
    assert (mock.name, mock.kind, mock.builtin, mock.default) == ("mock", "mock", True, True)
    call = host_call()
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "where is my order"}]
    out = svc.llm_chat(call, messages)
    assert out["text"] == "mock reply: where is my order"
    assert out["provider"] == "mock" and out["model"] == "mock" and out["tool_calls"] == []
    # usage counts words: prompt = 2 + 4, completion = 6
    assert out["usage"] == {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12}
    assert svc.llm_chat(host_call(), messages) == out  # deterministic
    attrs = call.state["span_attributes"]
    assert attrs["provider"] == "mock" and attrs["model"] == "mock"
    assert attrs["input_messages"][1]["content"] == "where is my order"
    assert attrs["output_text"] == out["text"] and attrs["usage"]["total_tokens"] == 12


def test_mock_rules_tool_call_and_live_reload(ws: Any, svc: Services) -> None:
    add_rules(ws, """
        [[llm.mock.rules]]
        match = "refund"
        reply = "Refunds take 5 days."
        [[llm.mock.rules]]
        match = "order #\\\\d+"
        regex = true
        reply = "Your order ships tomorrow."
        [[llm.mock.rules]]
        match = "customer"
        tool_call = { name = "lookup_customer", arguments = { id = "42" } }
    """)
    chat = svc.llm_chat
    assert chat(host_call(), "I want a refund")["text"] == "Refunds take 5 days."
    assert chat(host_call(), "where is order #123?")["text"] == "Your order ships tomorrow."
    assert chat(host_call(), "where is order #abc?")["text"] == "mock reply: where is order #abc?"
    # the tool-call rule fires only when the tool is offered
    assert chat(host_call(), "customer 42 please")["text"] == "mock reply: customer 42 please"
    spec = function_spec(lookup_customer)
    out = chat(host_call(), "customer 42 please", tools=[spec])
    assert out["text"] == "" and out["finish_reason"] == "tool_calls"
    [tc] = out["tool_calls"]
    assert tc["name"] == "lookup_customer" and tc["arguments"] == {"id": "42"} and tc["id"].startswith("call_mock_")

    # the tool loop: scripted call → python function → the mock answers from the tool result
    result = ctx_for(svc, host_call()).llm.run_tools("customer 42 please", [lookup_customer])
    assert result.text == 'mock reply: {"id": "42", "name": "Ada Lovelace", "plan": "gold"}'
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    assert result.messages[2]["tool_call_id"] == result.messages[1]["tool_calls"][0]["id"]
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens > 0

    # rules are re-read when rf.toml changes (no restart)
    add_rules(ws, """
        [[llm.mock.rules]]
        match = "hello"
        reply = "hi there"
    """)
    assert chat(host_call(), "hello")["text"] == "hi there"


class CrmTool:
    """The shape of ``ctx.connectors.tool(slug, resource)``: name, description, parameters, __call__."""

    name = "crm__get-customer"
    description = "Get a customer from the CRM."

    def __init__(self) -> None:
        self.parameters = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"name": "Ada"}


def test_tool_objects_run_in_the_loop(ws: Any, svc: Services) -> None:
    add_rules(ws, """
        [[llm.mock.rules]]
        match = "customer"
        tool_call = { name = "crm__get-customer", arguments = { id = "42" } }
    """)
    tool = CrmTool()
    result = ctx_for(svc, host_call()).llm.run_tools("customer 42?", [tool, lookup_customer])
    assert tool.calls == [{"id": "42"}]
    assert result.text == 'mock reply: {"name": "Ada"}'
    assert result.messages[2] == {"role": "tool", "tool_call_id": result.messages[1]["tool_calls"][0]["id"],
                                  "name": "crm__get-customer", "content": '{"name": "Ada"}'}


@pytest.mark.parametrize("rule, expected", [
    ('match = "x"', "exactly one of reply or tool_call"),
    ('match = "x"\nreply = "a"\ntool_call = { name = "t" }', "exactly one of reply or tool_call"),
    ('reply = "a"', "needs match"),
    ('match = "("\nregex = true\nreply = "a"', "not a valid regular expression"),
    ('match = "x"\ntool_call = { name = "bad name!" }', "tool_call needs a valid name"),
    ('match = "x"\nreply = "a"\ncolour = "red"', "unknown key"),
])
def test_mock_bad_rules_are_clear_errors(ws: Any, svc: Services, rule: str, expected: str) -> None:
    add_rules(ws, "[[llm.mock.rules]]\n" + rule + "\n")
    with pytest.raises(WorkspaceError) as info:
        svc.llm_chat(host_call(), "hi")
    assert expected in info.value.message and "[[llm.mock.rules]] #1" in info.value.message


def test_mock_streaming_chunks(svc: Services) -> None:
    ctx = ctx_for(svc, host_call())
    stream = ctx.llm.chat([{"role": "user", "content": "tell me a long story about ducks"}], stream=True)
    chunks = list(stream)
    assert len(chunks) == 3 and "".join(chunks) == "mock reply: tell me a long story about ducks"
    assert stream.result.text == "".join(chunks) and stream.result.provider == "mock"


def test_model_routing(ws: Any, svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    svc.add_provider("oai", "openai", fake.openai_url, keyed, "gpt-default")
    chat = svc.llm_chat
    assert chat(host_call(), "a", model="mock:tiny")["model"] == "tiny"
    out = chat(host_call(), "b", model="oai:gpt-other")
    assert (out["provider"], out["model"], out["text"]) == ("oai", "gpt-other", "echo: b")
    assert chat(host_call(), "c", model="oai")["provider"] == "mock"  # a bare name is a model of the default
    assert chat(host_call(), "c", model="oai:")["model"] == "gpt-default"
    with pytest.raises(NotFound) as info:
        chat(host_call(), "d", model="nope:x")
    assert "unknown provider 'nope'" in info.value.message and "local:llama3:8b" in (info.value.hint or "")

    change = svc.set_default_provider("oai")
    assert change.warnings and "production" in change.warnings[0]
    text = (ws.root / "rf.toml").read_text()
    assert 'default = "oai"' in text and "# rf workspace" in text  # edited in place, comments kept
    assert [p.name for p in svc.list_providers() if p.default] == ["oai"]
    assert chat(host_call(), "e")["model"] == "gpt-default"
    assert chat(host_call(), "f", model="gpt-bare")["model"] == "gpt-bare"
    assert fake.received[-1].body["model"] == "gpt-bare"
    svc.set_default_provider("mock")
    assert 'default = "mock"' in (ws.root / "rf.toml").read_text()
    assert chat(host_call(), "g")["provider"] == "mock"


# ------------------------------------------------------------------ OpenAI over HTTP


def test_openai_plain_auth_and_secret_handling(svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    change = svc.add_provider("oai", "openai", fake.openai_url + "/", keyed, "gpt-test")
    assert change.provider.base_url == fake.openai_url and change.provider.credential == "llm-key"
    assert any("production" in w for w in change.warnings)
    call = host_call()
    fake.add(Reply(text="Hello Ada", prompt_tokens=12, completion_tokens=3, model="gpt-test-0613"))
    out = svc.llm_chat(call, [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}], model="oai:")
    assert out["text"] == "Hello Ada" and out["model"] == "gpt-test-0613" and out["provider"] == "oai"
    assert out["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    req = fake.received[-1]
    assert req.path == "/v1/chat/completions" and req.headers["authorization"] == f"Bearer {KEY}"
    assert req.body["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert "stream" not in req.body and "tools" not in req.body
    assert KEY in call.state["secrets"]  # registered for scrubbing from spans/logs

    # a refused key: status and body, never the key itself
    fake.api_key = "sk-another-key"
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(host_call(), "hi", model="oai:")
    err = info.value
    assert "HTTP 401" in err.message and "Incorrect API key" in err.message and "***" in err.message
    assert KEY not in str(err) and "credential" in (err.hint or "")
    # the key is nowhere in the database
    dump = json.dumps([svc.store.query(f"SELECT * FROM {t}") for t in ("providers", "provider_uses")], default=str)
    assert KEY not in dump and "llm-key" in dump


def test_openai_streaming_text_and_tool_call_deltas(svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    svc.add_provider("oai", "openai", fake.openai_url, keyed, "gpt-test")
    ctx = ctx_for(svc, host_call())
    fake.add(Reply(text="one two three four"))
    stream = ctx.llm.chat("count", model="oai:", stream=True)
    assert list(stream) == ["one", " two", " three", " four"]  # the chunks as the server sent them
    assert stream.result.usage.total_tokens == 18
    assert fake.received[-1].body["stream"] is True
    assert fake.received[-1].body["stream_options"] == {"include_usage": True}

    fake.add(Reply(tool_calls=[("lookup_customer", {"id": "42", "verbose": True}), ("lookup_customer", {"id": "7"})]))
    stream = ctx.llm.chat("who?", model="oai:", tools=[lookup_customer], stream=True)
    assert list(stream) == []
    calls = stream.result.tool_calls
    assert [(c.name, c.arguments) for c in calls] == [("lookup_customer", {"id": "42", "verbose": True}),
                                                      ("lookup_customer", {"id": "7"})]
    assert all(c.id.startswith("call_") for c in calls) and stream.result.finish_reason == "tool_calls"


def test_openai_tool_loop_sends_tool_results_in_wire_shape(svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    svc.add_provider("oai", "openai", fake.openai_url, keyed, "gpt-test")
    fake.add(Reply(tool_calls=[("lookup_customer", {"id": "42"})]), Reply(text="Ada is on the gold plan."))
    result = ctx_for(svc, host_call()).llm.run_tools(
        [{"role": "user", "content": "which plan is customer 42 on?"}], [lookup_customer], model="oai:")
    assert result.text == "Ada is on the gold plan."
    assert result.usage.total_tokens == 36  # two rounds of 18
    first, second = fake.received[-2].body, fake.received[-1].body
    assert first["tools"][0]["type"] == "function"
    assert first["tools"][0]["function"]["name"] == "lookup_customer"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["id"]
    assistant, tool = second["messages"][1], second["messages"][2]
    call_id = assistant["tool_calls"][0]["id"]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    assert assistant["tool_calls"][0]["function"] == {"name": "lookup_customer", "arguments": '{"id": "42"}'}
    assert tool == {"role": "tool", "tool_call_id": call_id,
                    "content": '{"id": "42", "name": "Ada Lovelace", "plan": "gold"}'}


def test_tool_loop_limit_and_tool_errors(svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    svc.add_provider("oai", "openai", fake.openai_url, keyed, "gpt-test")
    ctx = ctx_for(svc, host_call())

    def explode(reason: str) -> str:
        """Always fails."""
        raise ValueError(f"boom: {reason}")

    fake.add(Reply(tool_calls=[("explode", {"reason": "x"}), ("missing_tool", {})]), Reply(text="sorry"))
    result = ctx.llm.run_tools("go", [explode], model="oai:")
    assert result.text == "sorry"
    sent = fake.received[-1].body["messages"]
    assert json.loads(sent[2]["content"]) == {"error": "ValueError: boom: x"}
    assert "unknown tool 'missing_tool'" in json.loads(sent[3]["content"])["error"]

    fake.add(*[Reply(tool_calls=[("explode", {"reason": "again"})]) for _ in range(2)])
    with pytest.raises(ToolLoopError) as info:
        ctx.llm.run_tools("go", [explode], model="oai:", max_iterations=2)
    assert "after 2 model calls" in info.value.message
    assert info.value.result is not None and info.value.result.tool_calls[0].name == "explode"
    with pytest.raises(UsageError):
        ctx.llm.run_tools("go", [{"name": "spec_only"}], model="oai:")


# ------------------------------------------------------------------ Anthropic over HTTP


def test_anthropic_plain_and_streaming(svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    svc.add_provider("claude", "anthropic", fake.anthropic_url, keyed, "claude-test")
    fake.add(Reply(text="Bonjour", prompt_tokens=20, completion_tokens=2))
    out = svc.llm_chat(host_call(), [{"role": "system", "content": "answer in French"},
                                     {"role": "user", "content": "hello"}], model="claude:")
    assert out["text"] == "Bonjour" and out["model"] == "claude-test" and out["provider"] == "claude"
    assert out["usage"] == {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}
    req = fake.received[-1]
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == KEY and req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert req.body["system"] == "answer in French"
    assert req.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert req.body["max_tokens"] == 4096

    ctx = ctx_for(svc, host_call())
    fake.add(Reply(text="un deux trois"))
    stream = ctx.llm.chat("count", model="claude:", stream=True, max_tokens=50)
    assert list(stream) == ["un", " deux", " trois"]
    assert stream.result.usage.prompt_tokens == 11 and stream.result.usage.completion_tokens == 7
    assert fake.received[-1].body["stream"] is True and fake.received[-1].body["max_tokens"] == 50

    fake.add(Reply(text="Let me look.", tool_calls=[("lookup_customer", {"id": "42"})]))
    stream = ctx.llm.chat("who is 42?", model="claude:", tools=[lookup_customer], stream=True)
    assert "".join(stream) == "Let me look."
    [tc] = stream.result.tool_calls
    assert (tc.name, tc.arguments) == ("lookup_customer", {"id": "42"}) and tc.id.startswith("toolu_")
    assert fake.received[-1].body["tools"][0]["input_schema"]["properties"]["id"] == {
        "type": "string", "description": "the customer's id."}


def test_anthropic_tool_loop_sends_tool_result_blocks(svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    svc.add_provider("claude", "anthropic", fake.anthropic_url, keyed, "claude-test")
    fake.add(Reply(text="Checking.", tool_calls=[("lookup_customer", {"id": "42"}), ("lookup_customer", {"id": "7"})]),
             Reply(text="Both are gold."))
    result = ctx_for(svc, host_call()).llm.run_tools(
        [{"role": "system", "content": "be helpful"}, {"role": "user", "content": "plans of 42 and 7?"}],
        [lookup_customer], model="claude:")
    assert result.text == "Both are gold."
    body = fake.received[-1].body
    assert body["system"] == "be helpful"
    user_turn, assistant_turn, results_turn = body["messages"]
    assert user_turn["role"] == "user"
    assert assistant_turn["role"] == "assistant"
    assert assistant_turn["content"][0] == {"type": "text", "text": "Checking."}
    ids = [b["id"] for b in assistant_turn["content"][1:]]
    assert [b["type"] for b in assistant_turn["content"][1:]] == ["tool_use", "tool_use"]
    # both results in ONE user turn, answering the tool_use ids in order
    assert results_turn["role"] == "user"
    assert [(b["type"], b["tool_use_id"]) for b in results_turn["content"]] == [("tool_result", i) for i in ids]
    assert json.loads(results_turn["content"][1]["content"])["id"] == "7"


# ------------------------------------------------------------------ HTTP failures


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_http_errors_timeouts_and_unreachable(ws: Any, svc: Services, fake: FakeLLMServer, keyed: str,
                                              kind: Literal["openai", "anthropic"]) -> None:
    url = fake.openai_url if kind == "openai" else fake.anthropic_url
    svc.add_provider("p", kind, url, keyed, "m")
    # (a 4xx other than 429 is not retried; 429 and 5xx retries: tests/test_llm_params.py)
    fake.add(Reply(status=400, error_body="upstream exploded " + "x" * 1000 + f" {KEY}"))
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(host_call(), "hi", model="p:")
    assert "HTTP 400" in info.value.message and "upstream exploded" in info.value.message
    assert len(info.value.message) < 400 and KEY not in str(info.value)

    add_rules(ws, "[llm]\ntimeout_s = 0.3\n")
    fake.add(Reply(text="late", delay_s=1.0))
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(host_call(), "hi", model="p:")
    assert "did not answer within 0.3 s" in info.value.message

    # The execution's own timeout comes first: the call gets only the time the execution has left.
    rf_toml = ws.root / "rf.toml"
    rf_toml.write_text(rf_toml.read_text().replace("timeout_s = 0.3", "timeout_s = 30"))
    fake.add(Reply(text="late", delay_s=1.0))
    call = host_call()
    call.start(time.monotonic() + 0.3)
    with pytest.raises(ProviderError) as info:
        svc.llm_chat(call, "hi", model="p:")
    assert "did not answer before the execution's time ran out" in info.value.message
    assert "timeout_s in agents/tester/agent.toml" in (info.value.hint or "")

    port = fake.port
    fake.stop()
    svc.add_provider("gone", kind, f"http://127.0.0.1:{port}", keyed, "m")
    with pytest.raises(ProviderError) as info:
        svc.test_provider("gone")
    assert "cannot reach provider 'gone'" in info.value.message and "base URL" in (info.value.hint or "")


# ------------------------------------------------------------------ managing providers


def test_bad_input_is_refused_and_nothing_is_stored(svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    cases: list[tuple[type[Exception], str, dict[str, Any]]] = [
        (UsageError, "unknown provider kind 'gemini'", {"kind": "gemini"}),
        (UsageError, "invalid base URL", {"kind": "openai", "base_url": "ftp://example.com", "credential": keyed}),
        (UsageError, "invalid base URL", {"kind": "openai", "base_url": "localhost:8080", "credential": keyed}),
        (NotFound, "unknown credential 'nokey'", {"kind": "openai", "base_url": fake.openai_url, "credential": "nokey"}),
        (UsageError, "needs an API key", {"kind": "anthropic"}),
        (UsageError, "takes no --base-url", {"kind": "mock", "base_url": fake.openai_url}),
        (UsageError, "invalid provider name", {"kind": "mock", "name": "Bad Name"}),
        (Conflict, "built-in", {"kind": "openai", "name": "mock", "base_url": fake.openai_url}),
    ]
    for exc, text, kwargs in cases:
        name = kwargs.pop("name", "p1")
        with pytest.raises(exc) as info:
            svc.add_provider(name, **kwargs)
        assert text in info.value.message  # type: ignore[attr-defined]
        assert info.value.hint  # type: ignore[attr-defined]
    assert [p.name for p in svc.list_providers()] == ["mock"]
    assert svc.store.query("SELECT count(*) FROM providers") == [(0,)]

    svc.add_provider("local", "openai", fake.openai_url)  # a local server may need no key
    with pytest.raises(Conflict):
        svc.add_provider("local", "openai", fake.openai_url)
    with pytest.raises(NotFound):
        svc.test_provider("nope")
    with pytest.raises(UsageError) as uinfo:
        svc.llm_chat(host_call(), "hi", model="local:")
    assert "no default model" in uinfo.value.message
    with pytest.raises(UsageError):
        svc.llm_chat(host_call(), [{"role": "robot", "content": "hi"}])
    with pytest.raises(UsageError):
        svc.llm_chat(host_call(), [{"role": "tool", "content": "orphan"}])
    with pytest.raises(UsageError):
        svc.llm_chat(host_call(), "hi", tools=[{"name": "x", "parameters": {"type": "string"}}])


def test_remove_says_what_it_breaks(ws: Any, svc: Services, fake: FakeLLMServer, keyed: str) -> None:
    with pytest.raises(UsageError):
        svc.remove_provider("mock")
    svc.add_provider("oai", "openai", fake.openai_url, keyed, "gpt-test")
    svc.set_default_provider("oai")
    with pytest.raises(Conflict) as info:
        svc.remove_provider("oai")
    assert "default provider" in info.value.message and "rf providers default" in (info.value.hint or "")
    svc.set_default_provider("mock")

    svc.llm_chat(host_call("production", "support"), "hi", model="oai:")
    [provider] = [p for p in svc.list_providers() if p.name == "oai"]
    assert [(u.env, u.agent) for u in provider.used_by] == [("production", "support")]
    with pytest.raises(Conflict) as info:
        svc.remove_provider("oai")
    assert "production agents support" in info.value.message and "--yes" in (info.value.hint or "")
    change = svc.remove_provider("oai", force=True)
    assert change.action == "removed" and "production agent 'support'" in change.warnings[0]
    assert [p.name for p in svc.list_providers()] == ["mock"]
    with pytest.raises(NotFound):
        svc.llm_chat(host_call("production", "support"), "hi", model="oai:")


def test_function_specs_from_signatures() -> None:
    def search(query: str, limit: int = 5, tags: list[str] | None = None, mode: Literal["fast", "exact"] = "fast",
               score: float | None = None, raw: dict[str, Any] | None = None, flag: bool = False) -> list[str]:
        """Search the docs.

        Longer text.

        Args:
            query: what to look for
                (free text).
            limit: at most this many.
        """
        return []

    spec = function_spec(search)
    assert spec["name"] == "search" and spec["description"] == "Search the docs.\n\nLonger text."
    props = spec["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "what to look for (free text)."}
    assert props["limit"] == {"type": "integer", "description": "at most this many.", "default": 5}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["mode"] == {"enum": ["fast", "exact"], "type": "string", "default": "fast"}
    assert props["score"] == {"type": "number"} and props["raw"] == {"type": "object"}
    assert props["flag"] == {"type": "boolean", "default": False}
    assert spec["parameters"]["required"] == ["query"]

    class When:
        pass

    def bad(at: When) -> None:
        pass

    with pytest.raises(UsageError) as info:
        function_spec(bad)
    assert "parameter 'at'" in info.value.message


# ------------------------------------------------------------------ a real agent execution


LLM_AGENT = '''
from rf.llm.types import ProviderError
from rf.errors import NotFound


def lookup_customer(id: str) -> dict:
    """Look up a customer."""
    return {"id": id, "plan": "gold"}


def handle(input, ctx):
    reply = ctx.llm.chat([{"role": "system", "content": "You are support."},
                          {"role": "user", "content": input["message"]}])
    looped = ctx.llm.run_tools("customer please", [lookup_customer])
    streamed = list(ctx.llm.chat("stream me please now", stream=True))
    try:
        ctx.llm.chat("x", model="ghost:model")
        missing = None
    except NotFound as exc:
        missing = exc.message
    try:
        ctx.llm.chat("x", model="oai:")
        failed = None
    except ProviderError as exc:
        failed = exc.message
    return {"text": reply.text, "provider": reply.provider, "usage": reply.usage.total_tokens,
            "loop": looped.text, "chunks": streamed, "missing": missing, "failed": failed, "env": ctx.env}
'''


def test_real_agent_execution_uses_ctx_llm(ws: Any, local: LocalBackend, fake: FakeLLMServer, keyed: str) -> None:
    add_rules(ws, """
        [[llm.mock.rules]]
        match = "refund"
        reply = "Refunds take 5 days."
        [[llm.mock.rules]]
        match = "customer"
        tool_call = { name = "lookup_customer", arguments = { id = "42" } }
    """)
    local.add_provider("oai", "openai", fake.openai_url, keyed, "gpt-test")
    fake.add(Reply(status=403, error_body="model not allowed"))  # not retried (a 503 is: test_llm_params.py)
    write_agent(ws.root, "support", LLM_AGENT)
    local.deploy("support", snapshot_dir(ws.root / "agents" / "support"), "llm", "ada")
    ex = local.invoke("staging", "support", {"message": "how do I get a refund?"})
    assert ex.status == "succeeded", (ex.error, ex.traceback, ex.logs)
    assert ex.output == {
        "text": "Refunds take 5 days.", "provider": "mock", "usage": 3 + 6 + 4,  # words: system + question + reply
        "loop": 'mock reply: {"id": "42", "plan": "gold"}',
        "chunks": ["mock reply: ", "stream me ", "please now"],
        "missing": "unknown provider 'ghost' in model 'ghost:model'",
        "failed": "provider 'oai' answered HTTP 403: model not allowed", "env": "staging",
    }
    assert KEY not in json.dumps(ex.output) + ex.logs
    mock, oai = local.list_providers()
    assert [(u.env, u.agent) for u in mock.used_by] == [("staging", "support")]
    assert [(u.env, u.agent) for u in oai.used_by] == [("staging", "support")]  # failed calls count too


STREAMING_AGENT = '''
def handle(input, ctx):
    stream = ctx.llm.chat(input["message"], model="oai:", stream=True)
    for piece in stream:
        yield {"piece": piece}
    again = "".join(stream)  # a second pass replays the pieces
    yield {"text": stream.text, "again": again, "tokens": stream.result.usage.total_tokens,
           "after": ctx.memory.get("nothing", "a host call after the stream works")}
'''


def test_llm_pieces_reach_the_endpoint_as_they_arrive(ws: Any, fake: FakeLLMServer) -> None:
    """A generator forwarding ``ctx.llm.chat(stream=True)`` streams each piece to the endpoint's
    client while the provider is still answering: the fake provider sends two pieces, then waits
    until the client has seen the first one."""
    import threading

    import httpx

    gate = threading.Event()
    held = Reply(text="one two three four", hold_after=2, gate=gate)
    fake.add(held)
    srv = start_server(ws.root)
    try:
        b = HttpBackend(srv.url, srv.token, ws)
        b.set_credential("llm-key", KEY)
        b.add_provider("oai", "openai", fake.openai_url, "llm-key", "gpt-test")
        write_agent(ws.root, "streamer", STREAMING_AGENT)
        b.deploy("streamer", snapshot_dir(ws.root / "agents" / "streamer"), "stream", "ada")
        pieces: list[tuple[str, bool]] = []  # (piece, whether the provider had been let go on)
        events: list[tuple[str | None, Any]] = []
        with httpx.stream("POST", f"{srv.url}/staging/agents/streamer", json={"input": {"message": "count"}},
                          headers={"Accept": "text/event-stream"}, timeout=60) as r:
            assert r.status_code == 200
            event = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data = json.loads(line.split(":", 1)[1])
                    events.append((event, data))
                    if event == "chunk" and "piece" in data:
                        pieces.append((data["piece"], gate.is_set()))
                        gate.set()  # the provider may go on once a piece got here
        assert pieces == [("one", False), (" two", True), (" three", True), (" four", True)]
        assert held.opened is True  # the provider waited for the client to see "one", not for a timeout
        final = [d for e, d in events if e == "chunk" and "text" in d]
        assert final == [{"text": "one two three four", "again": "one two three four", "tokens": 18,
                          "after": "a host call after the stream works"}]
        assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
        # The trace has the whole call as one llm span, with the output.
        ex_id = events[-1][1]["execution_id"]
        spans = b.get_trace(ex_id).spans
        [llm] = [s for s in spans if s.kind == "llm"]
        assert llm.attributes["output_text"] == "one two three four" and llm.attributes["stream"] is True
        assert KEY not in json.dumps([s.attributes for s in spans])
        # A stream the agent does not read to the end is read for it; the run goes on.
        write_agent(ws.root, "quitter", '''
def handle(input, ctx):
    stream = ctx.llm.chat("go", model="oai:", stream=True)
    first = next(iter(stream))
    return {"first": first, "later": ctx.memory.get("k", "ok")}
''')
        b.deploy("quitter", snapshot_dir(ws.root / "agents" / "quitter"), "quit", "ada")
        fake.add(Reply(text="alpha beta gamma"))
        r2 = httpx.post(f"{srv.url}/staging/agents/quitter", json={"input": {}}, timeout=60)
        assert r2.status_code == 200 and r2.json()["output"] == {"first": "alpha", "later": "ok"}
        # A provider that stalls mid-stream: the execution times out like any other, the
        # pieces that came are kept, and the agent's next run is served.
        write_agent(ws.root, "stalled", STREAMING_AGENT,
                    'description = "stalls"\nentrypoint = "agent:handle"\ntimeout_s = 2\n')
        b.deploy("stalled", snapshot_dir(ws.root / "agents" / "stalled"), "stall", "ada")
        never = threading.Event()
        fake.add(Reply(text="slow and steady", hold_after=1, gate=never))
        r3 = httpx.post(f"{srv.url}/staging/agents/stalled", json={"input": {"message": "x"}}, timeout=60)
        assert r3.status_code == 500 and "timed out" in r3.json()["error"]
        never.set()
        r4 = httpx.post(f"{srv.url}/staging/agents/stalled", json={"input": {"message": "x"}}, timeout=60)
        assert r4.status_code == 200 and r4.json()["output"][-1]["text"] == "echo: x"
    finally:
        srv.stop()


ASYNC_STREAMING_AGENT = '''
import asyncio


async def handle(input, ctx):
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    pieces = [piece async for piece in ctx.llm.chat("stream me please now", stream=True)]
    ticker.cancel()
    return {"pieces": pieces, "ticked": ticks > 0}
'''


def test_async_handlers_stream_with_async_for(ws: Any, local: LocalBackend) -> None:
    write_agent(ws.root, "aio", ASYNC_STREAMING_AGENT)
    ex = local.run_test("aio", snapshot_dir(ws.root / "agents" / "aio"), {})
    assert ex.status == "succeeded", (ex.error, ex.traceback)
    assert ex.output == {"pieces": ["mock reply: ", "stream me ", "please now"], "ticked": True}


# ------------------------------------------------------------------ surfaces: HTTP API and CLI


def test_http_backend_manages_providers(ws: Any, fake: FakeLLMServer) -> None:
    fake.api_key = None  # the server process gets no RF_SECRET_*: use a key-less local endpoint
    srv = start_server(ws.root)
    try:
        b = HttpBackend(srv.url, srv.token, ws)
        change = b.add_provider("local", "anthropic", fake.anthropic_url, None, "claude-local")
        assert change.action == "added" and change.provider.kind == "anthropic"
        with pytest.raises(UsageError):
            b.add_provider("bad", "openai", "file:///etc/passwd")
        fake.add(Reply(text="pong"))
        result = b.test_provider("local")
        assert result.text == "pong" and result.model == "claude-local" and result.latency_ms > 0
        assert [(p.name, p.default) for p in b.list_providers()] == [("mock", True), ("local", False)]
        assert b.set_default_provider("local").provider.default
        with pytest.raises(Conflict):
            b.remove_provider("local")
        b.set_default_provider("mock")
        assert b.remove_provider("local", force=True).action == "removed"
        with pytest.raises(NotFound):
            b.get_provider("local")
    finally:
        srv.stop()


# `rf` as a real subprocess (run_rf) for a few commands, the rest in-process (run_rf_here, same entry point)
def test_cli_add_list_test_remove(ws: Any, fake: FakeLLMServer, tmp_path: Path) -> None:
    root = ws.root
    env = {"RF_SECRET_OAI_KEY": KEY}
    r = run_rf("providers", "add", "oai", "--kind", "openai", "--base-url", fake.openai_url,
               "--credential", "oai-key", "--model", "gpt-cli", cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert "added provider oai" in r.stderr and "production" in r.stderr

    r = run_rf_here("providers", "list", "--json", cwd=root)
    listed = json.loads(r.stdout)
    assert [(p["name"], p["builtin"], p["default"]) for p in listed] == [("mock", True, True), ("oai", False, False)]
    assert KEY not in r.stdout
    r = run_rf_here("providers", "list", cwd=root)
    assert "default" in r.stdout and "built-in" in r.stdout and "oai" in r.stdout

    fake.add(Reply(text="pong", model="gpt-cli-2024"))
    r = run_rf_here("providers", "test", "oai", cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert "answered in" in r.stderr and "gpt-cli-2024" in r.stderr and "pong" in r.stdout
    assert fake.received[-1].headers["authorization"] == f"Bearer {KEY}"
    fake.add(Reply(text="pong"))
    r = run_rf_here("providers", "test", "oai", "--json", cwd=root, env=env)
    data = json.loads(r.stdout)
    assert data["model"] == "gpt-cli" and data["latency_ms"] > 0 and data["text"] == "pong"

    r = run_rf("providers", "test", "oai", cwd=root)  # no secret in this environment
    assert r.returncode == 1 and "credential 'oai-key'" in r.stderr and "Traceback" not in r.stderr
    r = run_rf_here("providers", "add", "x", "--kind", "gemini", cwd=root)
    assert r.returncode == 2 and "unknown provider kind" in r.stderr and "Traceback" not in r.stderr

    r = run_rf_here("providers", "remove", "oai", cwd=root)  # nobody to confirm
    assert r.returncode == 2 and "--yes" in r.stderr
    r = run_rf_here("providers", "remove", "oai", "--yes", cwd=root)
    assert r.returncode == 0 and "removed provider oai" in r.stderr
