"""The Litestar application: environment endpoints and the management API.

- ``POST /{env}/agents/{name}`` runs the commit ``env`` points at (JSON, or
  server-sent events when the client asks for ``text/event-stream``);
  ``GET /{env}/agents/{name}`` describes the deployed agent.
- ``/api/...`` is the management API, generated from :data:`rf.api.ROUTES`
  and protected by the bearer token written to ``.rf/server.json``.
- Every :class:`~rf.errors.RfError` becomes ``{"error": {code, message, hint}}``
  with its HTTP status, in one place.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import HttpMethod, Litestar, MediaType, Request, Response, get, post, route
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.response import ServerSentEvent

from rf import api
from rf.errors import NotFound, PayloadTooLarge, RfError, Unauthorized, UsageError
from rf.jsonfast import dumpb, loads
from rf.models import ENVIRONMENTS, to_dict
from rf.services import Services

log = logging.getLogger("rf.server")


BODY_TOO_LARGE = ("request body too large", "send a smaller input, or raise [server] max_body_bytes in rf.toml")


def error_payload(method: str, path: str, exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and ``{"error": {code, message, hint}}`` body for any exception (one place
    for Litestar's handlers and the invoke fast path)."""
    if isinstance(exc, RfError):
        return exc.http_status, {"error": exc.to_dict()}
    if isinstance(exc, HTTPException):
        if exc.status_code == 413:
            return error_payload(method, path, PayloadTooLarge(*BODY_TOO_LARGE))
        if exc.status_code == 404:
            return error_payload(method, path, NotFound(
                f"no such endpoint: {method} {path}",
                "endpoints are /staging/agents/NAME, /production/agents/NAME and /api/...; see /schema"))
        if exc.status_code == 405:
            return error_payload(method, path, UsageError(f"{method} is not allowed on {path}"))
        return error_payload(method, path, RfError(str(exc.detail)))
    from rf.store import translate_error

    translated = translate_error(exc)
    if translated is not None:
        return error_payload(method, path, translated)
    log.error("unexpected error on %s %s", method, path, exc_info=exc)
    return 500, {"error": {"code": "internal", "message": f"internal error ({type(exc).__name__})",
                           "hint": "see the server log"}}


def _handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, body = error_payload(request.method, request.url.path, exc)
    return Response(body, status_code=status)


def invoke_params(body: Any) -> tuple[Any, str | None]:
    """``(input, session_id)`` from a decoded ``POST /{env}/agents/{name}`` body (UsageError if malformed)."""
    if not isinstance(body, dict):
        raise UsageError('request body must be a JSON object like {"input": ...}')
    if len(body) > 2 or any(key not in ("input", "session_id") for key in body):
        unknown = set(body) - {"input", "session_id"}
        raise UsageError(f"unknown field(s) in request body: {', '.join(sorted(unknown))}",
                         'send {"input": ..., "session_id": "optional"}')
    session_id = body.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise UsageError("session_id must be a string")
    return body.get("input"), session_id


def parse_json_body(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return loads(raw)
    except ValueError as exc:
        raise UsageError(f"request body is not valid JSON: {exc}", 'send {"input": ...}') from None


def check_env(env: str) -> str:
    if env not in ENVIRONMENTS:
        raise NotFound(f"unknown environment {env!r}", "use /staging/... or /production/...")
    return env


async def _json_body(request: Request[Any, Any, Any]) -> Any:
    return parse_json_body(await request.body())


def _json_response(content: Any, status_code: int) -> Response[Any]:
    """A JSON response encoded here (msgspec), so Litestar only sends the bytes."""
    return Response(content=dumpb(content), status_code=status_code, media_type=MediaType.JSON)


def create_app(services: Services, token: str, *, max_body_bytes: int = 1024 * 1024,
               scheduler: bool = True) -> Litestar:
    """Build the app around one Services (the server owns the store)."""

    def check_token(request: Request[Any, Any, Any]) -> None:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-rf-token", "")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("missing or wrong API token",
                               "use the token in .rf/server.json (Authorization: Bearer TOKEN)")

    # ------------------------------------------------------------ env endpoints
    @post("/{env:str}/agents/{name:str}", summary="Invoke an agent in an environment", tags=["endpoints"],
          status_code=200)
    async def invoke(request: Request[Any, Any, Any], env: str, name: str) -> Response[Any]:
        # (rf.server.fastpath serves this route first, except for server-sent events.)
        check_env(env)
        payload, session_id = invoke_params(await _json_body(request))
        if "text/event-stream" in request.headers.get("accept", ""):
            await asyncio.to_thread(services.target, env, name)  # 404 before the stream starts
            return _stream(services, env, name, payload, session_id)
        ex = await services.ainvoke(env, name, payload, session_id, "endpoint")
        if ex.status == "succeeded":
            return _json_response({"execution_id": ex.id, "status": ex.status, "output": ex.output}, 200)
        return _json_response({"execution_id": ex.id, "status": ex.status, "error": ex.error}, 500)

    @get("/{env:str}/agents/{name:str}", summary="Describe the agent deployed in an environment",
         tags=["endpoints"])
    async def describe(env: str, name: str) -> dict[str, Any]:
        check_env(env)
        agent = await asyncio.to_thread(services.get_agent, name)
        commit = agent.staging_commit if env == "staging" else agent.production_commit
        if commit is None:
            hint = f"rf agents promote {name}" if env == "production" else f"rf agents deploy {name}"
            raise NotFound(f"agent {name!r} is not deployed in {env}", hint)
        c = services.store.get_commit(commit)
        return {"name": agent.name, "description": agent.description, "env": env, "commit": commit,
                "deployed_at": c.created_at if c else None, "message": c.message if c else None,
                "url": f"/{env}/agents/{name}"}

    @get("/{env:str}/agents/{name:str}/sessions/{session_id:str}", tags=["endpoints"],
         summary="A session (thread) of an agent in an environment: its messages, oldest first")
    async def session(env: str, name: str, session_id: str) -> dict[str, Any]:
        check_env(env)
        thread = await asyncio.to_thread(services.get_session, session_id, env, name)
        return to_dict(thread)  # type: ignore[no-any-return]

    @post("/{env:str}/hooks/{trigger_id:str}", summary="Webhook trigger (secret required)", tags=["endpoints"],
          status_code=200)
    async def hook(request: Request[Any, Any, Any], env: str, trigger_id: str) -> Response[Any]:
        check_env(env)
        body = await request.body()
        headers = dict(request.headers.items())
        ex = await asyncio.to_thread(services.webhook, env, trigger_id, body, headers)
        out: dict[str, Any] = {"execution_id": ex.id, "status": ex.status}
        if ex.status == "succeeded":
            out["output"] = ex.output
            return Response(out, status_code=200)
        out["error"] = ex.error
        return Response(out, status_code=500)

    @get("/api/health", summary="Liveness (no token needed)", tags=["management"])
    async def health() -> dict[str, Any]:
        return {"ok": True}

    handlers: list[Any] = [invoke, describe, session, hook, health]
    for r in api.ROUTES:
        handlers.append(_management_handler(services, r, check_token))

    from rf.services.scheduler import Scheduler

    sched = Scheduler(services) if scheduler else None

    def start_scheduler() -> None:
        if sched is not None:
            sched.start()

    def stop_scheduler() -> None:
        if sched is not None:
            sched.stop()

    return Litestar(
        route_handlers=handlers,
        on_startup=[start_scheduler],
        on_shutdown=[stop_scheduler],
        exception_handlers={Exception: _handle_exception},
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title="rf", version=_version(), path="/schema"),
        debug=False,
    )


def _version() -> str:
    from rf._version import __version__

    return __version__


def _management_handler(services: Services, r: api.Route, check_token: Any) -> HTTPRouteHandler:
    import inspect

    method = getattr(services, r.name)
    # Query strings are text: convert each by the Services parameter's annotation
    # (never by its looks — an agent named "007" stays a string).
    hints = {name: str(p.annotation) for name, p in inspect.signature(method).parameters.items()}

    async def handler(request: Request[Any, Any, Any]) -> Response[Any]:
        check_token(request)
        params: dict[str, Any] = dict(request.path_params)
        if r.method == "GET":
            for key, value in request.query_params.items():
                params[key] = _coerce(value, hints.get(key, ""))
        else:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise UsageError("request body must be a JSON object")
            params.update(body)
        for key in r.binary:
            if key in params:
                params[key] = api.decode_files(params[key])
        params.pop("on_chunk", None)  # a callback, never a value from a request
        if r.name == "run_test" and "text/event-stream" in request.headers.get("accept", ""):
            return _stream_call(lambda on_chunk: method(**params, on_chunk=on_chunk))
        try:
            result = await asyncio.to_thread(method, **params)
        except TypeError as exc:
            if "argument" in str(exc):
                raise UsageError(f"bad parameters for {r.name}: {exc}") from None
            raise
        if r.name == "status":
            result.backend = "http"
        # (A Response, so that the server-sent events above keep their own media type.)
        return Response(to_dict(result), media_type=MediaType.JSON, status_code=200)

    handler.__name__ = f"api_{r.name}"
    path = "/api" + r.path.replace("}", ":str}")
    return route(path, http_method=[HttpMethod(r.method)], summary=r.summary, tags=["management"], status_code=200,
                 operation_id=r.name)(handler)


def _coerce(value: str, annotation: str) -> Any:
    kinds = {part.strip() for part in annotation.replace("'", "").split("|")}
    if "str" in kinds or not kinds - {"None", ""}:
        return value
    if "bool" in kinds and value in ("true", "false"):
        return value == "true"
    try:
        if "int" in kinds:
            return int(value)
        if "float" in kinds:
            return float(value)
    except ValueError:
        raise UsageError(f"{value!r} is not a number") from None
    return value


def _stream_call(run: Any, done: Any = to_dict) -> ServerSentEvent:
    """Run ``run(on_chunk)`` in a thread; each chunk it yields is a ``chunk`` event as it
    comes, then ``done`` with ``done(execution)`` (or ``error`` with an RfError's dict)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def on_chunk(chunk: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("chunk", chunk))

    def work() -> None:
        try:
            ex = run(on_chunk)
            loop.call_soon_threadsafe(queue.put_nowait, ("done", done(ex)))
        except RfError as err:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", err.to_dict()))
        except Exception as exc:
            log.exception("streamed run failed")
            loop.call_soon_threadsafe(queue.put_nowait, ("error", {"code": "internal",
                                                                   "message": f"internal error ({type(exc).__name__})"}))

    async def events() -> AsyncIterator[dict[str, Any]]:
        task = asyncio.create_task(asyncio.to_thread(work))
        try:
            while True:
                kind, data = await queue.get()
                yield {"event": kind, "data": json.dumps(data)}
                if kind != "chunk":
                    break
        finally:
            await task

    return ServerSentEvent(events())  # type: ignore[arg-type]


def _stream(services: Services, env: str, name: str, payload: Any, session_id: str | None) -> ServerSentEvent:
    """An endpoint call with ``Accept: text/event-stream``: the agent's chunks as they come,
    then ``done`` with the execution id and status (and error)."""

    def done(ex: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"execution_id": ex.id, "status": ex.status}
        if ex.status != "succeeded":
            out["error"] = ex.error
        return out

    return _stream_call(lambda on_chunk: services.invoke(env, name, payload, session_id, "endpoint", on_chunk), done)
