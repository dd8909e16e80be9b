"""The OpenAI-compatible API of each environment: ``/{env}/v1/models`` and ``/{env}/v1/chat/completions``.

Any OpenAI client (the ``openai`` SDKs, chat UIs, editors) pointed at
``http://HOST:PORT/staging/v1`` or ``.../production/v1`` talks to that
environment's deployed agents: the ``model`` is the agent's name, and a
completion runs the commit the environment points at, through the same
execution path as ``POST /{env}/agents/{name}`` (same environment rules,
executions, session turns, traces and endpoint keys), recorded with the
source ``openai``.

The contract, defined here once:

- **Input.** The agent is called with ``{"messages": [...]}``: the request's
  messages as sent. Two keys are added when they apply: ``message``, the text
  of the last ``user`` message (so an agent written for the native endpoint,
  which reads ``input["message"]``, works unchanged, and a session keeps that
  text as the user's turn), and ``options``, the other standard Chat
  Completions fields the request set (``temperature``, ``max_tokens``,
  ``tools``, …), for the agent to honour or ignore. ``model``, ``stream``,
  ``stream_options`` and ``user`` are rf's own business and never reach it.
  A field the Chat Completions API does not define is refused (400), as the
  OpenAI API itself does; ``n`` above 1 is refused (one choice per request).
- **Output.** A string, ``{"message": str}`` or ``{"content": str}`` becomes
  the assistant message; a generator's chunks (each one of those) are joined;
  anything else is sent as its JSON text.
- **Streaming.** ``stream: true`` answers ``chat.completion.chunk`` server-sent
  events ending with ``data: [DONE]``: a generator handler's chunks as they come,
  a plain handler's answer as one chunk. A run that fails before its first chunk
  is answered like a non-streamed failure (HTTP 500); one that fails later ends
  the stream with ``data: {"error": ...}`` (the OpenAI SDKs raise it).
- **Sessions.** The ``X-Session-Id`` header, else the ``user`` field, names the
  rf session the completion continues (the agent's ``ctx.session``).
- **Errors** are OpenAI's shape, ``{"error": {"message", "type", "code",
  "param"}}`` (plus rf's ``hint``, also appended to the message, since clients
  show only the message): an unknown model, or one not deployed in this
  environment, is 404 (``model_not_found``); a bad body 400; a failed run 500
  with the execution id in the message (and ``execution_id``).
- The answer's ``id`` is ``chatcmpl-`` + the execution id (also in the
  ``X-Rf-Execution-Id`` header), its ``system_fingerprint`` the commit that ran.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.response import Stream

from rf.errors import PayloadTooLarge, UsageError
from rf.jsonfast import MAX_DEPTH, dumpb, dumps
from rf.runtime.pool import blocking_run_executor, in_executor
from rf.server.app import (
    BODY_TOO_LARGE,
    _operation_class,
    check_env,
    error_headers,
    error_payload,
    parse_json_body,
)
from rf.server.fastpath import Disconnected, read_body
from rf.services import Services

log = logging.getLogger("rf.server")

#: The execution ``source`` of a run started through this API.
SOURCE = "openai"

_UNSET: Any = msgspec.UNSET
_Unset = msgspec.UnsetType


# ------------------------------------------------------------------ request
class ChatCompletionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /{env}/v1/chat/completions``: OpenAI's Chat Completions request.

    ``model`` names the agent, ``messages`` become its input (as sent), ``stream``
    asks for server-sent events and ``user`` names an rf session (the
    ``X-Session-Id`` header wins). Every other field is passed to the agent under
    ``input["options"]`` when set; a field the Chat Completions API does not
    define is refused.
    """

    model: Annotated[str, msgspec.Meta(min_length=1, description="the agent's name")]
    messages: Annotated[list[dict[str, Any]], msgspec.Meta(
        min_length=1, description="chat messages {role, content, ...}, passed to the agent as sent")]
    stream: bool | None = None
    stream_options: dict[str, Any] | _Unset | None = _UNSET
    user: Annotated[str | None, msgspec.Meta(
        description="continues this rf session (unless the X-Session-Id header names one)")] = None
    # Standard fields the agent receives under input["options"] when the request sets them.
    temperature: float | _Unset | None = _UNSET
    top_p: float | _Unset | None = _UNSET
    n: int | _Unset | None = _UNSET
    stop: str | list[str] | _Unset | None = _UNSET
    max_tokens: int | _Unset | None = _UNSET
    max_completion_tokens: int | _Unset | None = _UNSET
    presence_penalty: float | _Unset | None = _UNSET
    frequency_penalty: float | _Unset | None = _UNSET
    logit_bias: dict[str, float] | _Unset | None = _UNSET
    logprobs: bool | _Unset | None = _UNSET
    top_logprobs: int | _Unset | None = _UNSET
    seed: int | _Unset | None = _UNSET
    response_format: dict[str, Any] | _Unset | None = _UNSET
    tools: list[dict[str, Any]] | _Unset | None = _UNSET
    tool_choice: str | dict[str, Any] | _Unset | None = _UNSET
    parallel_tool_calls: bool | _Unset | None = _UNSET
    functions: list[dict[str, Any]] | _Unset | None = _UNSET
    function_call: str | dict[str, Any] | _Unset | None = _UNSET
    metadata: dict[str, str] | _Unset | None = _UNSET
    store: bool | _Unset | None = _UNSET
    service_tier: str | _Unset | None = _UNSET
    modalities: list[str] | _Unset | None = _UNSET
    audio: dict[str, Any] | _Unset | None = _UNSET
    prediction: dict[str, Any] | _Unset | None = _UNSET
    reasoning_effort: str | _Unset | None = _UNSET
    verbosity: str | _Unset | None = _UNSET
    web_search_options: dict[str, Any] | _Unset | None = _UNSET
    prompt_cache_key: str | _Unset | None = _UNSET
    prompt_cache_options: dict[str, Any] | _Unset | None = _UNSET
    prompt_cache_retention: str | _Unset | None = _UNSET
    safety_identifier: str | _Unset | None = _UNSET
    moderation: Any = _UNSET


#: The request fields that reach the agent under ``input["options"]`` (all but rf's own).
OPTION_FIELDS = tuple(f for f in ChatCompletionRequest.__struct_fields__
                      if f not in ("model", "messages", "stream", "stream_options", "user"))

_HINT = ('send {"model": "AGENT", "messages": [{"role": "user", "content": "..."}]} '
         "(the Chat Completions fields are listed in /schema)")


_decode_request = msgspec.json.Decoder(ChatCompletionRequest).decode


def parse_request(raw: bytes) -> ChatCompletionRequest:
    """The request, or a UsageError (400) that names what is wrong."""
    try:
        if len(raw) > 2 * MAX_DEPTH + 1 and raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
            body = parse_json_body(raw)  # (it could nest too deep: checked before it is typed)
            if not isinstance(body, dict):
                raise UsageError("the request body must be a JSON object", _HINT)
            request = msgspec.convert(body, ChatCompletionRequest, strict=True)
        else:
            request = _decode_request(raw or b"{}")  # the usual body: decoded and typed in one pass
    except msgspec.ValidationError as exc:
        text = str(exc).replace("`$.", "`").replace(" - at ", " at ")
        if "unknown field" in text:
            text += " (not a Chat Completions field)"
        raise UsageError(f"bad chat completion request: {text}", _HINT) from None
    except msgspec.DecodeError:
        parse_json_body(raw)  # not JSON: its UsageError says where
        raise UsageError("the request body is not valid JSON", _HINT) from None
    for index, message in enumerate(request.messages):
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise UsageError(f"bad chat completion request: messages[{index}] has no role", _HINT)
    if isinstance(request.n, int) and request.n != 1:
        raise UsageError(f"n = {request.n} is not supported: an agent gives one answer per request",
                         "leave n out (or send n = 1), and send several requests for several answers")
    return request


def agent_input(request: ChatCompletionRequest) -> dict[str, Any]:
    """What the agent is called with (see the module doc)."""
    value: dict[str, Any] = {"messages": request.messages}
    text = last_user_text(request.messages)
    if text is not None:
        value["message"] = text
    options = {name: given for name in OPTION_FIELDS if (given := getattr(request, name)) is not _UNSET}
    if options:
        value["options"] = options
    return value


def last_user_text(messages: list[dict[str, Any]]) -> str | None:
    """The text of the last ``user`` message (its text parts joined), or None."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content
                           if isinstance(part, dict) and part.get("type") == "text"
                           and isinstance(part.get("text"), str))
        return None
    return None


def reply_text(output: Any) -> str:
    """The assistant message of an agent's output (see the module doc)."""
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        text = _chunk_text(output)
        if text is not None:
            return text
    if isinstance(output, list) and output:  # a generator's chunks (not streamed)
        parts = [_chunk_text(item) for item in output]
        if all(part is not None for part in parts):
            return "".join(parts)  # type: ignore[arg-type]
    return dumps(output)


def _chunk_text(chunk: Any) -> str | None:
    if isinstance(chunk, str):
        return chunk
    if isinstance(chunk, dict):
        for key in ("message", "content"):
            if isinstance(chunk.get(key), str):
                return chunk[key]  # type: ignore[no-any-return]
    return None


# ------------------------------------------------------------------ answers (documented)
class ChatCompletionMessage(msgspec.Struct):
    content: str
    role: str = "assistant"


class ChatCompletionChoice(msgspec.Struct):
    message: ChatCompletionMessage
    index: int = 0
    finish_reason: str = "stop"
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    """A Chat Completions answer: the agent's reply as the one choice."""

    id: str  #: ``chatcmpl-`` + the execution id
    created: int
    model: str  #: the agent
    choices: list[ChatCompletionChoice]
    system_fingerprint: str  #: the commit that ran
    object: str = "chat.completion"


class OpenAIModel(msgspec.Struct):
    """An agent deployed in the environment, as an OpenAI model."""

    id: str  #: the agent's name
    created: int  #: when the agent was created (Unix seconds)
    description: str
    object: str = "model"
    owned_by: str = "rf"


class OpenAIModelList(msgspec.Struct):
    data: list[OpenAIModel]
    object: str = "list"


class OpenAIErrorDetail(msgspec.Struct):
    message: str  #: what went wrong, then what to do
    type: str  #: invalid_request_error, authentication_error, permission_error, rate_limit_error, server_error
    code: str  #: model_not_found, invalid_api_key, or rf's error code (e.g. usage, execution_failed)
    param: str | None = None
    hint: str | None = None  #: rf's suggested fix (also at the end of the message)
    execution_id: str | None = None  #: a failed run's execution


class OpenAIError(msgspec.Struct):
    """Every error of this API, in OpenAI's shape."""

    error: OpenAIErrorDetail


_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 404: "model_not_found"}


def openai_error(status: int, rf_error: dict[str, Any]) -> dict[str, Any]:
    """rf's ``{code, message, hint}`` error (answered with *status*) in OpenAI's shape."""
    message = str(rf_error.get("message", "error"))
    hint = rf_error.get("hint")
    if hint:
        message = f"{message}; {hint}"
    kind = _TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    code = _CODES.get(status) if rf_error.get("code") in ("not_found", "unauthorized") else None
    return {"error": {"message": message, "type": kind, "code": code or rf_error.get("code", "error"),
                      "param": None, "hint": hint}}


def error_response(method: str, path: str, exc: Exception) -> Response[Any]:
    status, body = error_payload(method, path, exc)
    headers = error_headers(exc)  # Retry-After on a 429
    return Response(dumpb(openai_error(status, body["error"])), status_code=status, media_type=MediaType.JSON,
                    headers=headers)


def _handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return error_response(request.method, request.url.path, exc)


def _failed_body(ex: Any) -> bytes:
    """The 500 answer of a failed run: OpenAI's error shape, with the execution id."""
    hint = f"see it with: rf executions show {ex.id}"
    return dumpb({"error": {"message": f"the agent's run failed (execution {ex.id}, {ex.status}): {ex.error}; {hint}",
                            "type": "server_error", "code": "execution_failed", "param": None, "hint": hint,
                            "execution_id": ex.id}})


def _failed(ex: Any) -> Response[Any]:
    return Response(_failed_body(ex), status_code=500, media_type=MediaType.JSON,
                    headers={"x-rf-execution-id": ex.id})


async def complete(services: Services, env: str, body: ChatCompletionRequest, session_id: str | None
                   ) -> tuple[int, bytes, str]:
    """Run a completion that is not streamed: ``(status, answer, execution id)`` (RfError raised
    before the run, e.g. the 404 of an unknown model)."""
    ex = await services.ainvoke(env, body.model, agent_input(body), session_id, SOURCE)
    if ex.status != "succeeded":
        return 500, _failed_body(ex), ex.id
    answer = ChatCompletion(id=f"chatcmpl-{ex.id}", created=int(time.time()), model=body.model,
                            choices=[ChatCompletionChoice(message=ChatCompletionMessage(content=reply_text(ex.output)))],
                            system_fingerprint=ex.commit)
    return 200, _encode(answer), ex.id


_encode = msgspec.json.Encoder().encode


# ------------------------------------------------------------------ routes
def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(OpenAIError, generate_examples=False, description=what)
            for status, what in ((400, "a bad request body"), (401, "a missing or wrong endpoint key"),
                                 (404, "an unknown model, or one not deployed in this environment"),
                                 (429, "too many requests wait for a worker (Retry-After)"),
                                 (500, "the agent's run failed (its execution id), or error: internal"))
            if status in statuses}


def routes(services: Services) -> list[HTTPRouteHandler]:
    """The route handlers of this API (mounted by :func:`rf.server.app.create_app`)."""

    def deployed(env: str) -> list[OpenAIModel]:
        # (in production: on some arm — an agent a running canary brings too)
        return [OpenAIModel(id=agent.name, created=_unix(agent.created_at), description=agent.description)
                for agent, _commit, _config in services.deployed_agents(env)]

    def check_deployed(env: str, model: str) -> None:
        """404 (with the fix) unless *model* is deployed in *env* (in production: on some arm)."""
        if services.reachable_commit(env, model) is None:
            services.target(env, model)

    @get("/{env:str}/v1/models", summary="OpenAI-compatible: the agents deployed in an environment, as models",
         tags=["openai"], exception_handlers={Exception: _handle_exception},
         responses={200: ResponseSpec(OpenAIModelList, generate_examples=False), **_errors(401, 404)})
    async def list_models(env: str) -> Response[Any]:
        check_env(env)
        models = await asyncio.to_thread(deployed, env)
        return Response(msgspec.json.encode(OpenAIModelList(data=models)), media_type=MediaType.JSON)

    @get("/{env:str}/v1/models/{model:str}", summary="OpenAI-compatible: one deployed agent, as a model",
         tags=["openai"], exception_handlers={Exception: _handle_exception},
         responses={200: ResponseSpec(OpenAIModel, generate_examples=False), **_errors(401, 404)})
    async def retrieve_model(env: str, model: str) -> Response[Any]:
        check_env(env)
        await asyncio.to_thread(check_deployed, env, model)
        agent = await asyncio.to_thread(services.get_agent, model)
        found = OpenAIModel(id=agent.name, created=_unix(agent.created_at), description=agent.description)
        return Response(msgspec.json.encode(found), media_type=MediaType.JSON)

    schema = msgspec.json.schema(ChatCompletionRequest)
    body_schema = {**schema["$defs"]["ChatCompletionRequest"], "additionalProperties": False}

    @post("/{env:str}/v1/chat/completions", tags=["openai"], status_code=200,
          summary="OpenAI-compatible: run the agent named by model in an environment",
          description="The agent's input is {messages, message (the last user text), options (other fields "
                      "set)}; its reply (a string, {message} or {content}) is the assistant message. "
                      "stream: true answers chat.completion.chunk server-sent events ending with [DONE]. "
                      "X-Session-Id (or user) continues an rf session.",
          operation_class=_operation_class(body=body_schema), exception_handlers={Exception: _handle_exception},
          responses={200: ResponseSpec(ChatCompletion, generate_examples=False,
                                       description="the agent's reply (or text/event-stream chunks)"),
                     **_errors(400, 401, 404, 429, 500)})
    async def chat_completions(request: Request[Any, Any, Any], env: str) -> Response[Any]:
        # (FastChat serves this route first, except for a streamed completion.)
        check_env(env)
        body = parse_request(await request.body())
        session_id = request.headers.get("x-session-id") or body.user
        if body.stream:
            return await _stream(services, env, body.model, agent_input(body), session_id)
        status, answer, execution_id = await complete(services, env, body, session_id)
        return Response(answer, status_code=status, media_type=MediaType.JSON,
                        headers={"x-rf-execution-id": execution_id})

    return [list_models, retrieve_model, chat_completions]


def _unix(iso: str | None) -> int:
    if not iso:
        return 0
    from rf.ids import parse_iso

    try:
        return int(parse_iso(iso).timestamp())
    except (ValueError, TypeError):
        return 0


# ------------------------------------------------------------------ streaming
async def _stream(services: Services, env: str, model: str, value: dict[str, Any],
                  session_id: str | None) -> Response[Any]:
    """Run in a thread with ``on_chunk``; answer once the first chunk (or the end) is there,
    so a run that fails before its first chunk gets a real error status."""
    # Routed now, so the 404 (an agent only the canary arm has, on stable) comes before anything
    # runs, and the run takes the arm the check saw.
    arm = await asyncio.to_thread(services.check_invoke, env, model, value, session_id, SOURCE)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def on_chunk(chunk: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("chunk", chunk))

    def work() -> None:
        try:
            ex = services.invoke_routed(arm, env, model, value, session_id, SOURCE, on_chunk)
            loop.call_soon_threadsafe(queue.put_nowait, ("done", ex))
        except Exception as exc:  # noqa: BLE001 - becomes the answer (or the stream's error event)
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

    task = asyncio.ensure_future(in_executor(blocking_run_executor(), work))
    first = await queue.get()
    if first[0] == "error":
        await task
        raise first[1]
    if first[0] == "done" and first[1].status != "succeeded":
        await task
        return _failed(first[1])
    created = int(time.time())
    ident = f"chatcmpl-{_new_ident()}"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return b"data: " + dumpb({"id": ident, "object": "chat.completion.chunk", "created": created,
                                  "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                               "logprobs": None}], **extra}) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        kind, data = first
        sent = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                if kind == "chunk":
                    text = _chunk_text(data)
                    yield chunk({"content": text if text is not None else dumps(data)})
                    sent = True
                elif kind == "done":
                    if data.status != "succeeded":
                        yield b"data: " + _failed_body(data) + b"\n\n"
                        return
                    if not sent and data.output is not None:  # a plain handler: its answer as one chunk
                        yield chunk({"content": reply_text(data.output)})
                    yield chunk({}, "stop", system_fingerprint=data.commit, execution_id=data.id)
                    yield b"data: [DONE]\n\n"
                    return
                else:
                    status, body = error_payload("POST", f"/{env}/v1/chat/completions", data)
                    yield b"data: " + dumpb(openai_error(status, body["error"])) + b"\n\n"
                    return
                kind, data = await queue.get()
        finally:
            await task

    return Stream(events(), media_type="text/event-stream",
                  headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def _new_ident() -> str:
    from rf.ids import new_id

    return new_id("stream")


# ------------------------------------------------------------------ the fast path
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastChat:
    """ASGI app: ``POST /{env}/v1/chat/completions`` not streamed, then ``app`` for the rest.

    As :class:`rf.server.fastpath.FastInvoke` does for the native endpoint (and for the
    same reason: Litestar's per-request work costs as much as a warm run), a completion
    is served here in plain ASGI, with the same checks and answers as the Litestar route,
    which stays declared (the OpenAPI schema documents it) and serves what this does not:
    a streamed completion (its body is handed on as it was read) and other paths.
    """

    def __init__(self, app: Any, services: Services, *, max_body_bytes: int) -> None:
        self.app = app
        self.services = services
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if not path.endswith("/v1/chat/completions") or path.count("/") != 4:
            return await self.app(scope, receive, send)
        session_id = None
        length = None
        for key, value in scope["headers"]:
            if key == b"x-session-id":
                session_id = value.decode("latin-1")
            elif key == b"content-length":
                length = int(value) if value.isdigit() else None
        try:
            env = check_env(path[1:path.index("/", 1)])
            if length is not None and length > self.max_body_bytes:
                raise PayloadTooLarge(*BODY_TOO_LARGE)
            raw = await read_body(receive, self.max_body_bytes)
            body = parse_request(raw)
            if body.stream:
                return await self.app(scope, _replay(raw, receive), send)
            status, answer, execution_id = await complete(self.services, env, body, session_id or body.user)
        except Disconnected:
            return None
        except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped error answer
            status, rf_body = error_payload("POST", path, exc)
            extra = error_headers(exc) or {}
            return await _send(send, status, dumpb(openai_error(status, rf_body["error"])),
                               [(k.encode(), v.encode()) for k, v in extra.items()])
        return await _send(send, status, answer, [(b"x-rf-execution-id", execution_id.encode())])

def _replay(raw: bytes, receive: Any) -> Any:
    """A ``receive`` that hands on the body already read, then what the client sends next."""
    pending = [{"type": "http.request", "body": raw, "more_body": False}]

    async def replayed() -> Any:
        return pending.pop() if pending else await receive()

    return replayed


async def _send(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
