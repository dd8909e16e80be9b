"""The OpenAI-compatible API of each environment (``/{env}/v1``), through a real `rf serve`
and the real ``openai`` client library (rf.server.openai_api)."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent

AGENT_TOML = 'description = "{description}"\nentrypoint = "agent:handle"\ntimeout_s = 10\n'

CHAT_V1 = "def handle(input, ctx):\n    return f\"v1 {ctx.env}: {input['message']}\"\n"
CHAT_V2 = "def handle(input, ctx):\n    return {'message': f\"v2 {ctx.env}: {input['message']}\", 'extra': 1}\n"
STREAMER = (
    "def handle(input, ctx):\n"
    "    yield 'Hel'\n"
    "    yield {'content': 'lo, '}\n"
    "    yield input['message']\n"
)
COUNTER = (
    "def handle(input, ctx):\n"
    "    history = ctx.session.history()\n"
    "    said = [m['content'] for m in history if m['role'] == 'user']\n"
    "    return f\"turn {len(said) + 1}; before: {'|'.join(said)}\"\n"
)
ECHO = ("def handle(input, ctx):\n"
        "    if input.get('message') == 'content?':\n"
        "        return {'content': 'as content'}\n"
        "    return {'echo': input}\n")
BROKEN = "def handle(input, ctx):\n    raise RuntimeError('the CRM is down')\n"
HALFWAY = "def handle(input, ctx):\n    yield 'first'\n    raise RuntimeError('lost the thread')\n"


def _rf(root: Path, *args: str, run: Any = run_rf_here) -> str:
    """`rf ARGS` in-process (run_rf_here, the console script's entry point); with run=run_rf, a real subprocess."""
    r = run(*args, cwd=root)
    assert r.returncode == 0, r.stderr
    return r.stdout


class Site(ServerProc):
    """The module's server, and its workspace (for `rf` commands)."""

    root: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server: ``chat`` v1 promoted and v2 in staging; ``draft`` only in staging; the others
    promoted."""
    from rf.config import init_workspace

    root: Path = tmp_path_factory.mktemp("openai")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(root / "xdg-data"))
        ws = init_workspace(root / "ws")
    agents = {"chat": CHAT_V1, "streamer": STREAMER, "counter": COUNTER, "echo": ECHO, "broken": BROKEN,
              "halfway": HALFWAY}
    for name, code in agents.items():
        write_agent(ws.root, name, code, AGENT_TOML.format(description=f"the {name} agent"))
        _rf(ws.root, "agents", "deploy", name, "-m", "v1", run=run_rf if name == "chat" else run_rf_here)
        _rf(ws.root, "agents", "promote", name, "--yes")
    write_agent(ws.root, "chat", CHAT_V2, AGENT_TOML.format(description="the chat agent"))
    _rf(ws.root, "agents", "deploy", "chat", "-m", "v2")
    write_agent(ws.root, "draft", CHAT_V1, AGENT_TOML.format(description="not promoted yet"))
    _rf(ws.root, "agents", "deploy", "draft", "-m", "v1")
    started = start_server(ws.root)
    server = Site(started.proc, {"url": started.url, "token": started.token, "pid": started.pid})
    server.root = ws.root
    try:
        yield server
    finally:
        server.stop()


def client(server: ServerProc, env: str, **kwargs: Any) -> OpenAI:
    # No retries: a 500 must be one execution, and each error is asserted as answered.
    return OpenAI(base_url=f"{server.url}/{env}/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0,
                  timeout=30, **kwargs)


def ask(c: OpenAI, model: str, text: str, **kwargs: Any) -> Any:
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)


def executions(server: ServerProc, env: str, **query: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/api/executions", params={"env": env, **query},
                  headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# ---------------------------------------------------------------- models
def test_models_list_what_each_environment_deploys(site: Site) -> None:
    staging = {m.id: m for m in client(site, "staging").models.list()}
    production = {m.id: m for m in client(site, "production").models.list()}
    assert set(staging) == {"chat", "streamer", "counter", "echo", "broken", "halfway", "draft"}
    assert set(production) == set(staging) - {"draft"}  # a staging-only agent is not a production model
    chat = staging["chat"]
    assert chat.object == "model" and chat.owned_by == "rf" and chat.created > 0
    assert chat.model_dump()["description"] == "the chat agent"
    assert client(site, "staging").models.retrieve("draft").id == "draft"
    with pytest.raises(openai.NotFoundError) as err:
        client(site, "production").models.retrieve("draft")
    assert "rf agents promote draft" in err.value.message
    raw = httpx.get(f"{site.url}/production/v1/models").json()
    assert raw["object"] == "list" and all(set(m) == {"id", "object", "created", "owned_by", "description"}
                                           for m in raw["data"])


# ---------------------------------------------------------------- completions
def test_each_environment_answers_with_its_own_commit(site: Site) -> None:
    s = ask(client(site, "staging"), "chat", "Hi there")
    p = ask(client(site, "production"), "chat", "Hi there")
    assert s.choices[0].message.content == "v2 staging: Hi there"  # {"message": ...} of the v2 commit
    assert p.choices[0].message.content == "v1 production: Hi there"  # a plain string of the v1 commit
    assert s.choices[0].message.role == "assistant" and s.choices[0].finish_reason == "stop"
    assert s.object == "chat.completion" and s.model == "chat"
    assert s.system_fingerprint != p.system_fingerprint  # each the commit that ran
    shown = json.loads(_rf(site.root, "executions", "show", s.id.removeprefix("chatcmpl-"),
                           "--json"))
    assert shown["env"] == "staging" and shown["source"] == "openai" and shown["commit"] == s.system_fingerprint
    # Executions are recorded per environment with the source openai.
    listed = json.loads(_rf(site.root, "executions", "list", "--env", "production", "--source", "openai",
                            "--agent", "chat", "--json"))
    assert p.id.removeprefix("chatcmpl-") in {e["id"] for e in listed}
    assert {e["source"] for e in listed} == {"openai"} and {e["env"] for e in listed} == {"production"}


def test_the_agent_input_and_the_reply_contract(site: Site) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "part"}]}]
    r = client(site, "staging").chat.completions.create(model="echo", messages=messages,  # type: ignore[arg-type]
                                                        temperature=0.25, max_tokens=7, stop=["\n"])
    # Not a string, {message} nor {content}: the assistant message is its JSON text.
    got = json.loads(r.choices[0].message.content or "")["echo"]
    assert got["messages"] == messages  # as sent
    assert got["message"] == "second part"  # the last user message's text
    assert got["options"] == {"temperature": 0.25, "max_tokens": 7, "stop": ["\n"]}
    assert ask(client(site, "staging"), "echo", "content?").choices[0].message.content == "as content"
    plain = ask(client(site, "staging"), "echo", "hi")
    assert "options" not in json.loads(plain.choices[0].message.content or "")["echo"]


def test_streamed_completion_of_a_generator(site: Site) -> None:
    for env in ("staging", "production"):
        stream = ask(client(site, env), "streamer", "Ada", stream=True)
        chunks = list(stream)
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
        assert deltas == ["Hel", "lo, ", "Ada"]  # chunk by chunk, as the generator yields them
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "stop" and len({c.id for c in chunks}) == 1
        execution_id = chunks[-1].model_dump()["execution_id"]
        assert any(e["id"] == execution_id and e["source"] == "openai" for e in executions(site, env))
    # The raw stream ends with data: [DONE].
    with httpx.stream("POST", f"{site.url}/staging/v1/chat/completions", timeout=30,
                      json={"model": "chat", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    # A plain handler's answer is one chunk.
    contents = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines[:-1]]
    assert [c for c in contents if c] == ["v2 staging: x"]
    # Not streamed, a generator's chunks are joined.
    assert ask(client(site, "staging"), "streamer", "Bo").choices[0].message.content == "Hello, Bo"


def test_a_session_continues_over_three_calls(site: Site) -> None:
    c = client(site, "staging")
    answers = [ask(c, "counter", text, extra_headers={"X-Session-Id": "chat-7"}).choices[0].message.content
               for text in ("one", "two", "three")]
    assert answers == ["turn 1; before: ", "turn 2; before: one", "turn 3; before: one|two"]
    # The user field names a session too; another id is another session.
    assert ask(c, "counter", "alpha", user="u-1").choices[0].message.content == "turn 1; before: "
    assert ask(c, "counter", "beta", user="u-1").choices[0].message.content == "turn 2; before: alpha"
    # The session turns are recorded as for the native endpoint (the user's text, the reply).
    r = httpx.get(f"{site.url}/staging/agents/counter/sessions/chat-7",
                  headers={"Authorization": f"Bearer {site.token}"})
    assert r.status_code == 200, r.text
    said = [(m["role"], m["content"]) for m in r.json()["messages"]]
    assert said[:2] == [("user", "one"), ("assistant", "turn 1; before: ")] and len(said) == 6
    # Sessions are per environment: production's chat-7 has not started.
    assert ask(client(site, "production"), "counter", "p", extra_headers={"X-Session-Id": "chat-7"}
               ).choices[0].message.content == "turn 1; before: "
    with pytest.raises(openai.BadRequestError) as err:
        ask(c, "counter", "x", user="someone@example.com")
    assert err.value.status_code == 400 and "invalid session id" in err.value.message


# ---------------------------------------------------------------- errors
def test_unknown_model_and_one_not_in_this_environment_are_404(site: Site) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        ask(client(site, "staging"), "nope", "hi")
    assert err.value.status_code == 404 and "unknown agent 'nope'" in err.value.message
    assert err.value.code == "model_not_found" and err.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as err:
        ask(client(site, "production"), "draft", "hi")
    assert "not in production yet" in err.value.message and "rf agents promote draft" in err.value.message
    with pytest.raises(openai.NotFoundError):  # streamed too: refused before any event
        ask(client(site, "production"), "draft", "hi", stream=True)
    assert ask(client(site, "staging"), "draft", "hi").choices[0].message.content == "v1 staging: hi"


def test_bad_bodies_are_400(site: Site) -> None:
    c = client(site, "staging")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"messages": []}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages[0] has no role"),
        ({"messages": [{"role": "user", "content": "x"}], "extra_body": {"temprature": 1}}, "temprature"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n = 2"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model="chat", **kwargs)
        assert err.value.status_code == 400 and needle in err.value.message, (kwargs, err.value.message)
        assert err.value.type == "invalid_request_error"
    for body in (b"[1]", b"{not json", b'{"model": "chat"}'):
        r = httpx.post(f"{site.url}/staging/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"})
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) >= {"message", "type", "code"}
    # The standard fields are accepted (and reach the agent under options).
    ok = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}], n=1, top_p=0.5,
                                   seed=3, presence_penalty=0.1, frequency_penalty=0.1, logprobs=False,
                                   tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                                   tool_choice="auto", response_format={"type": "text"}, metadata={"k": "v"},
                                   stream_options=None, max_completion_tokens=9, reasoning_effort="low")
    assert ok.choices[0].message.content == "v2 staging: x"


def test_every_field_of_the_openai_client_is_accepted() -> None:
    from openai.types.chat import completion_create_params

    from rf.server.openai_api import ChatCompletionRequest

    known = set(completion_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"}
    assert known <= set(ChatCompletionRequest.__struct_fields__), known - set(ChatCompletionRequest.__struct_fields__)


def test_a_failed_run_is_500_with_its_execution(site: Site) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        ask(client(site, "production"), "broken", "hi")
    assert err.value.status_code == 500 and "the CRM is down" in err.value.message
    found = re.search(r"execution (ex_\w+)", err.value.message)
    assert found, err.value.message
    assert err.value.body["execution_id"] == found.group(1)  # type: ignore[index]
    shown = [e for e in executions(site, "production", agent="broken") if e["id"] == found.group(1)]
    assert len(shown) == 1 and shown[0]["status"] == "failed" and shown[0]["source"] == "openai"
    # Streamed: a run that fails before its first chunk is the same 500 ...
    with pytest.raises(openai.InternalServerError) as err:
        ask(client(site, "production"), "broken", "hi", stream=True)
    assert "the CRM is down" in err.value.message
    # ... one that fails later ends the stream with an error event, which the client raises.
    stream = ask(client(site, "staging"), "halfway", "hi", stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as late:
        for c in stream:
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "first" and "lost the thread" in late.value.message


def test_the_openapi_schema_documents_the_routes(site: Site) -> None:
    schema = httpx.get(f"{site.url}/schema/openapi.json").json()
    paths = schema["paths"]
    chat = paths["/{env}/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages", "stream", "user", "temperature"} <= set(body["properties"])
    assert set(body["required"]) == {"model", "messages"}
    assert {"200", "400", "404", "500"} <= set(chat["responses"])
    assert "get" in paths["/{env}/v1/models"] and "get" in paths["/{env}/v1/models/{model}"]


# ---------------------------------------------------------------- the guard
def test_endpoint_keys_are_the_api_key_when_required(tmp_path: Path) -> None:
    from rf.config import init_workspace

    ws = init_workspace(tmp_path / "ws")
    write_agent(ws.root, "chat", CHAT_V1, AGENT_TOML.format(description="chat"))
    _rf(ws.root, "agents", "deploy", "chat", "-m", "v1", run=run_rf)
    _rf(ws.root, "agents", "promote", "chat", "--yes")
    text = (ws.root / "rf.toml").read_text()
    (ws.root / "rf.toml").write_text(text.replace("[server]\n", "[server]\nrequire_keys = true\n", 1))
    key = json.loads(_rf(ws.root, "keys", "create", "--env", "production", "--json"))["secret"]
    s = start_server(ws.root)
    try:
        assert ask(client(s, "production", api_key=key), "chat", "hi").choices[0].message.content == "v1 production: hi"
        assert [m.id for m in client(s, "production", api_key=key).models.list()] == ["chat"]
        for api_key in ("wrong", key):  # a wrong key; production's key does not open staging
            env = "production" if api_key == "wrong" else "staging"
            with pytest.raises(openai.AuthenticationError) as err:
                ask(client(s, env, api_key=api_key), "chat", "hi")
            assert err.value.status_code == 401 and err.value.type == "authentication_error"
            assert "rf keys create" in err.value.message
        with pytest.raises(openai.AuthenticationError):
            client(s, "production", api_key="wrong").models.list()
        r = httpx.get(f"{s.url}/production/v1/models")  # no key at all
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    finally:
        s.stop()


def test_a_foreign_host_is_refused(site: Site) -> None:
    """A DNS-rebinding page names its own host: refused before the route, in OpenAI's shape."""
    url = httpx.URL(site.url)
    before = len(executions(site, "staging", agent="chat"))
    for method, path, body in (("GET", "/staging/v1/models", None),
                               ("POST", "/staging/v1/chat/completions",
                                b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}')):
        conn = http.client.HTTPConnection(url.host, url.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"attacker.example:{url.port}")
            conn.putheader("Content-Type", "application/json")
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            answer = json.loads(resp.read())
        finally:
            conn.close()
        assert resp.status == 421, (path, answer)
        assert "allowed_hosts" in answer["error"]["message"] and answer["error"]["type"] == "invalid_request_error"
    assert len(executions(site, "staging", agent="chat")) == before  # nothing ran


def test_the_fast_path_answers_like_the_litestar_route(site: Site) -> None:
    """A completion that is not streamed is served by openai_api.FastChat; with a trailing slash
    the Litestar route answers it: the same status and body either way."""
    msgs = [{"role": "user", "content": "x"}]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/qa/v1/chat/completions", {"json": {"model": "chat", "messages": msgs}}),
        ("/production/v1/chat/completions", {"json": {"model": "draft", "messages": msgs}}),
        ("/staging/v1/chat/completions", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("/staging/v1/chat/completions", {"json": {"model": "chat", "messages": msgs, "n": 2}}),
        ("/staging/v1/chat/completions", {"json": {"model": "chat", "messages": msgs, "user": "a b"}}),
        ("/staging/v1/chat/completions", {"json": {"model": "chat", "messages": msgs, "x": "y" * (1024 * 1024)}}),
    ]
    for path, kwargs in cases:
        fast = httpx.post(site.url + path, timeout=30, **kwargs)
        slow = httpx.post(site.url + path + "/", timeout=30, **kwargs)
        assert fast.status_code == slow.status_code and fast.status_code >= 400, (path, fast.text, slow.text)
        assert fast.json() == slow.json() and set(fast.json()["error"]) >= {"message", "type", "code"}, path
    answers = [httpx.post(site.url + "/production/v1/chat/completions" + end, timeout=30,
                          json={"model": "chat", "messages": msgs}) for end in ("", "/")]
    for r in answers:
        assert r.status_code == 200 and r.headers["x-rf-execution-id"] == r.json()["id"].removeprefix("chatcmpl-")
    assert [{k: v for k, v in r.json().items() if k not in ("id", "created")} for r in answers] == [
        {"object": "chat.completion", "model": "chat", "system_fingerprint": answers[0].json()["system_fingerprint"],
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "v1 production: x"},
                      "finish_reason": "stop", "logprobs": None}]}] * 2
    # The failure of a run: the same shape, with the execution, either way.
    failed = [httpx.post(site.url + "/production/v1/chat/completions" + end, timeout=30,
                         json={"model": "broken", "messages": msgs}) for end in ("", "/")]
    assert [r.status_code for r in failed] == [500, 500]
    assert [set(r.json()["error"]) for r in failed] == [{"message", "type", "code", "param", "hint", "execution_id"}] * 2


def test_rf_serve_says_where_the_openai_and_mcp_doors_are(tmp_path: Path) -> None:
    from rf.config import init_workspace

    ws = init_workspace(tmp_path / "banner")
    srv = start_server(ws.root)
    try:
        srv.stop()
        assert srv.proc.stdout is not None
        printed = srv.proc.stdout.read()
    finally:
        srv.stop()
    assert f"{srv.url}/staging/v1" in printed and f"{srv.url}/production/mcp" in printed
