"""A local fake LLM server speaking both wire formats, for honest provider tests.

It listens on 127.0.0.1 (port 0 → a free port) in a thread and implements

- OpenAI Chat Completions: ``POST /v1/chat/completions`` (``Authorization: Bearer``),
  JSON or ``stream: true`` server-sent events ending with ``data: [DONE]``;
- Anthropic Messages: ``POST /v1/messages`` (``x-api-key`` + ``anthropic-version``),
  JSON or the ``message_start`` … ``message_stop`` event stream.

It checks what a real API checks that matters to rf: the auth header, the
body's required fields, and the conversation's shape (a tool result must
answer a tool call of the previous assistant turn; Anthropic turns must
alternate and start with the user; no ``system`` role inside Anthropic
messages). A bad request gets a 400 with the reason, like the real APIs.

Answers come from ``script`` (a queue of :class:`Reply`), or by default echo
the last user text as ``"echo: <text>"``. Every request is recorded in
``received`` (path, headers, parsed body, arrival time) so tests can assert
the exact wire shape rf sent. :meth:`FakeLLMServer.fail` queues error answers
(429 with ``Retry-After``, 500...) a given number of times.

Connections are HTTP/1.1 keep-alive (JSON answers carry a Content-Length;
event streams close their connection), and ``connections`` counts the TCP
connections accepted, so a test can tell a reused client from a new one per call.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  #: (name, arguments)
    status: int = 200  #: answer with this HTTP status and ``error_body`` instead
    error_body: str = ""
    delay_s: float = 0.0  #: wait before answering (timeouts)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    model: str | None = None  #: the model to report (default: the requested one)
    #: streaming: after this many text pieces, wait (up to 30 s) for ``gate`` before sending the rest;
    #: ``opened`` then says whether the gate was opened (False: the wait timed out)
    hold_after: int | None = None
    gate: threading.Event | None = None
    opened: bool | None = None
    headers: dict[str, str] = field(default_factory=dict)  #: extra response headers (e.g. Retry-After)


@dataclass
class Received:
    path: str
    headers: dict[str, str]  #: lower-cased names
    body: dict[str, Any]
    at: float = 0.0  #: time.monotonic() when it arrived


class BadRequest(Exception):
    pass


def _words(text: str) -> list[str]:
    """Split keeping the spaces, so the pieces join back to the text."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return [w for w in out if w]


class FakeLLMServer:
    def __init__(self, api_key: str | None = "sk-test-secret-123") -> None:
        self.api_key = api_key
        self.script: deque[Reply] = deque()
        self.received: list[Received] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._counter = 0
        self._lock = threading.Lock()
        #: TCP connections accepted so far (one per client when keep-alive works)
        self.connections = 0
        self._sockets: list[Any] = []

    # ------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        import socket

        with self._lock:  # kept-alive connections too: a stopped server answers nothing
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def fail(self, status: int, times: int = 1, retry_after: str | None = None, body: str = "") -> None:
        """Answer the next ``times`` requests with HTTP ``status`` (and ``Retry-After``, if given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        for _ in range(times):
            self.add(Reply(status=status, error_body=body or f"fake error {status}", headers=dict(headers)))

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            return f"{prefix}_{self._counter}"

    # ------------------------------------------------------------ HTTP
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake.connections += 1
                    fake._sockets.append(self.connection)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._json(400, {"error": {"message": "body is not JSON"}})
                    return
                fake.received.append(Received(self.path, headers, body, time.monotonic()))
                if self.path == "/v1/chat/completions":
                    fake._openai(self, headers, body)
                elif self.path == "/v1/messages":
                    fake._anthropic(self, headers, body)
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def _json(self, status: int, data: Any) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _raw(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _sse_start(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")  # no length: the end of the stream is the end of the body
                self.close_connection = True
                self.end_headers()

            def _sse(self, data: Any, event: str | None = None) -> None:
                text = (f"event: {event}\n" if event else "") + "data: " + (
                    data if isinstance(data, str) else json.dumps(data)) + "\n\n"
                self.wfile.write(text.encode())
                self.wfile.flush()

        return Handler

    def _reply(self, last_user: str) -> Reply:
        try:
            return self.script.popleft()
        except IndexError:
            return Reply(text=f"echo: {last_user}")

    # ------------------------------------------------------------ OpenAI
    def _openai(self, h: Any, headers: dict[str, str], body: dict[str, Any]) -> None:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            given = headers.get("authorization", "")[7:]
            h._json(401, {"error": {"message": f"Incorrect API key provided: {given}.", "type": "invalid_request_error",
                                    "code": "invalid_api_key"}})
            return
        try:
            last_user = self._check_openai(body)
        except BadRequest as exc:
            h._json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            return
        reply = self._reply(last_user)
        time.sleep(reply.delay_s)
        if reply.status != 200:
            h._raw(reply.status, reply.error_body, reply.headers)
            return
        model = reply.model or body["model"]
        calls = [{"id": self._next_id("call"), "type": "function",
                  "function": {"name": name, "arguments": json.dumps(args)}} for name, args in reply.tool_calls]
        finish = "tool_calls" if calls else "stop"
        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                 "total_tokens": reply.prompt_tokens + reply.completion_tokens}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if calls:
                message["tool_calls"] = calls
            h._json(200, {"id": self._next_id("chatcmpl"), "object": "chat.completion", "created": 1, "model": model,
                          "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
            return
        base = {"id": self._next_id("chatcmpl"), "object": "chat.completion.chunk", "created": 1, "model": model}
        h._sse_start()
        h._sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for sent, piece in enumerate(_words(reply.text)):
            if sent == reply.hold_after and reply.gate is not None:
                reply.opened = reply.gate.wait(30)
            h._sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        for index, call in enumerate(calls):
            args = call["function"]["arguments"]
            half = len(args) // 2
            h._sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": index, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}]}, "finish_reason": None}]})
            for part in (args[:half], args[half:]):
                h._sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": index, "function": {"arguments": part}}]}, "finish_reason": None}]})
        h._sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            h._sse({**base, "choices": [], "usage": usage})
        h._sse("[DONE]")

    @staticmethod
    def _check_openai(body: dict[str, Any]) -> str:
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise BadRequest("you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty array")
        pending: set[str] = set()
        last_user = ""
        for i, m in enumerate(messages):
            role = m.get("role")
            if role not in ("system", "user", "assistant", "tool", "developer"):
                raise BadRequest(f"messages[{i}].role is invalid")
            if role == "tool":
                if m.get("tool_call_id") not in pending:
                    raise BadRequest(f"messages[{i}]: tool message does not answer a preceding tool call")
                pending.discard(m["tool_call_id"])
                if not isinstance(m.get("content"), str):
                    raise BadRequest(f"messages[{i}].content must be a string")
                continue
            if pending:
                raise BadRequest(f"messages[{i}]: tool calls {sorted(pending)} were not answered")
            if role == "assistant" and m.get("tool_calls"):
                for c in m["tool_calls"]:
                    if c.get("type") != "function" or not isinstance(c["function"].get("arguments"), str):
                        raise BadRequest(f"messages[{i}].tool_calls: bad shape")
                    json.loads(c["function"]["arguments"])
                    pending.add(c["id"])
            if role == "user":
                content = m.get("content") or ""
                if isinstance(content, list):
                    for j, part in enumerate(content):
                        if part.get("type") == "image_url":
                            if not isinstance((part.get("image_url") or {}).get("url"), str):
                                raise BadRequest(f"messages[{i}].content[{j}].image_url.url is required")
                        elif part.get("type") != "text" or not isinstance(part.get("text"), str):
                            raise BadRequest(f"messages[{i}].content[{j}]: unknown part type {part.get('type')!r}")
                    content = "".join(p.get("text", "") for p in content)
                last_user = content
        if "max_tokens" in body and "max_completion_tokens" in body:
            raise BadRequest("max_tokens and max_completion_tokens cannot both be set")
        fmt = body.get("response_format")
        if fmt is not None and not (fmt.get("type") in ("text", "json_object") or (
                fmt.get("type") == "json_schema" and isinstance((fmt.get("json_schema") or {}).get("schema"), dict)
                and isinstance(fmt["json_schema"].get("name"), str))):
            raise BadRequest("response_format: invalid shape")
        for t in body.get("tools") or []:
            if t.get("type") != "function" or "name" not in t.get("function", {}):
                raise BadRequest("tools must be {type: function, function: {name, description, parameters}}")
        return last_user

    # ------------------------------------------------------------ Anthropic
    def _anthropic(self, h: Any, headers: dict[str, str], body: dict[str, Any]) -> None:
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            h._json(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
            return
        if not headers.get("anthropic-version"):
            h._json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                     "message": "anthropic-version header is required"}})
            return
        try:
            last_user = self._check_anthropic(body)
        except BadRequest as exc:
            h._json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": str(exc)}})
            return
        reply = self._reply(last_user)
        time.sleep(reply.delay_s)
        if reply.status != 200:
            h._raw(reply.status, reply.error_body, reply.headers)
            return
        model = reply.model or body["model"]
        blocks: list[dict[str, Any]] = []
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        for name, args in reply.tool_calls:
            blocks.append({"type": "tool_use", "id": self._next_id("toolu"), "name": name, "input": args})
        stop = "tool_use" if reply.tool_calls else "end_turn"
        message_id = self._next_id("msg")
        if not body.get("stream"):
            h._json(200, {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": blocks,
                          "stop_reason": stop, "stop_sequence": None,
                          "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}})
            return
        h._sse_start()
        h._sse({"type": "message_start", "message": {"id": message_id, "type": "message", "role": "assistant",
                                                     "model": model, "content": [], "stop_reason": None,
                                                     "usage": {"input_tokens": reply.prompt_tokens,
                                                               "output_tokens": 1}}}, "message_start")
        h._sse({"type": "ping"}, "ping")
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                h._sse({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                       "content_block_start")
                for piece in _words(block["text"]):
                    h._sse({"type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
            else:
                h._sse({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}},
                       "content_block_start")
                args = json.dumps(block["input"])
                half = len(args) // 2
                for part in (args[:half], args[half:]):
                    h._sse({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": part}}, "content_block_delta")
            h._sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        h._sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": reply.completion_tokens}}, "message_delta")
        h._sse({"type": "message_stop"}, "message_stop")

    @staticmethod
    def _check_anthropic(body: dict[str, Any]) -> str:
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise BadRequest("model: field required")
        if not isinstance(body.get("max_tokens"), int):
            raise BadRequest("max_tokens: field required")
        if "system" in body and not isinstance(body["system"], str | list):
            raise BadRequest("system: must be a string or a list of text blocks")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: at least one message is required")
        last_user = ""
        pending: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role")
            if role not in ("user", "assistant"):
                raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if i == 0 and role != "user":
                raise BadRequest("messages: first message must use the user role")
            if i > 0 and messages[i - 1]["role"] == role:
                raise BadRequest("messages: roles must alternate between user and assistant")
            content = m.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(blocks, list) or not blocks:
                raise BadRequest(f"messages.{i}.content: must be a string or non-empty list of blocks")
            answered = set()
            for b in blocks:
                if b.get("type") == "text":
                    if not b.get("text"):
                        raise BadRequest(f"messages.{i}: text content blocks must be non-empty")
                    if role == "user":
                        last_user = b["text"]
                elif b.get("type") == "tool_use":
                    if role != "assistant" or not isinstance(b.get("input"), dict):
                        raise BadRequest(f"messages.{i}: bad tool_use block")
                    pending.add(b["id"])
                elif b.get("type") == "image":
                    source = b.get("source") or {}
                    if role != "user" or source.get("type") not in ("base64", "url") or (
                            source["type"] == "base64" and not (source.get("media_type") and source.get("data"))) or (
                            source["type"] == "url" and not source.get("url")):
                        raise BadRequest(f"messages.{i}: bad image block")
                elif b.get("type") == "tool_result":
                    if role != "user" or b.get("tool_use_id") not in pending:
                        raise BadRequest(f"messages.{i}: tool_result block(s) without a matching tool_use")
                    answered.add(b["tool_use_id"])
                else:
                    raise BadRequest(f"messages.{i}: unknown block type {b.get('type')!r}")
            if role == "user" and pending:
                if answered != pending:
                    raise BadRequest(f"messages.{i}: tool_use ids {sorted(pending - answered)} have no tool_result")
                pending = set()
        for t in body.get("tools") or []:
            if "name" not in t or "input_schema" not in t:
                raise BadRequest("tools: each tool needs name and input_schema")
        choice = body.get("tool_choice")
        if choice is not None and (choice.get("type") not in ("auto", "any", "tool", "none") or (
                choice["type"] == "tool" and choice.get("name") not in {t["name"] for t in body.get("tools") or []})):
            raise BadRequest("tool_choice: must name one of the tools")
        if "stop_sequences" in body and not isinstance(body["stop_sequences"], list):
            raise BadRequest("stop_sequences: must be a list of strings")
        return last_user
