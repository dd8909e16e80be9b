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
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, ClassVar

import msgspec
from litestar import HttpMethod, Litestar, MediaType, Request, Response, get, post, route
from litestar.enums import ParamType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Parameter, RequestBody, Schema
from litestar.response import ServerSentEvent
from litestar.response.base import ASGIResponse

from rf import api
from rf.errors import NotFound, PayloadTooLarge, RfError, Unauthorized, UsageError
from rf.jsonfast import TooDeep, dumpb, loads_limited
from rf.models import ENVIRONMENTS, to_dict
from rf.runtime.pool import blocking_run_executor, in_executor
from rf.server.guard import resolve_actor
from rf.services import Services
from rf.services.users import call_as

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


def error_headers(exc: Exception) -> dict[str, str] | None:
    """Extra headers of an error answer: ``Retry-After`` on a 429 (a busy environment)."""
    retry_after = getattr(exc, "retry_after_s", None)
    return {"retry-after": str(retry_after)} if isinstance(retry_after, int) else None


def _handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, body = error_payload(request.method, request.url.path, exc)
    return Response(body, status_code=status, headers=error_headers(exc))


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
    """A request's JSON body ({} when empty); UsageError (400) when it is not JSON, or when it
    nests objects and arrays more than :data:`rf.jsonfast.MAX_DEPTH` levels deep."""
    if not raw:
        return {}
    try:
        return loads_limited(raw)
    except TooDeep as exc:
        raise UsageError(f"request body is too deeply nested: {exc}",
                         f"keep JSON bodies within {exc.max_depth} levels, or send a deep value "
                         "as a JSON string") from None
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

    def check_token(request: Request[Any, Any, Any]) -> Any:
        """The caller (rf.services.users.Actor): set by the guard from the request's token."""
        actor = request.scope.get("rf.actor")  # type: ignore[typeddict-item]
        if actor is None and "rf.actor" not in request.scope:  # (an app without the guard in front: tests)
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-rf-token", "")
            actor = resolve_actor(services, token.encode(), given.encode())
        if actor is None:
            raise Unauthorized("missing, wrong or revoked API token",
                               "use the token in .rf/server.json, or your personal token: rf login URL "
                               "(Authorization: Bearer TOKEN)")
        return actor

    # ------------------------------------------------------------ env endpoints
    @post("/{env:str}/agents/{name:str}", summary="Invoke an agent in an environment", tags=["endpoints"],
          status_code=200, operation_class=_operation_class(body=INVOKE_BODY),
          responses={**_error_responses(body=True), 200: ResponseSpec(RunResult, generate_examples=False,
                                                                      description="the agent's output"),
                     500: ResponseSpec(RunResult | ErrorResponse, generate_examples=False,  # type: ignore[arg-type]
                                       description="the run failed (its error), or error: internal")})
    async def invoke(request: Request[Any, Any, Any], env: str, name: str) -> Response[Any]:
        # (rf.server.fastpath serves this route first, except for server-sent events.)
        check_env(env)
        payload, session_id = invoke_params(await _json_body(request))
        if "text/event-stream" in request.headers.get("accept", ""):
            # 404/400 before the stream starts; routed now, so the run takes the arm the check saw
            arm = await asyncio.to_thread(services.check_invoke, env, name, payload, session_id, "endpoint")
            return _stream(services, env, name, payload, session_id, arm)
        ex = await services.ainvoke(env, name, payload, session_id, "endpoint")
        if ex.status == "succeeded":
            return _json_response({"execution_id": ex.id, "status": ex.status, "output": ex.output}, 200)
        return _json_response({"execution_id": ex.id, "status": ex.status, "error": ex.error}, 500)

    @get("/{env:str}/agents/{name:str}", summary="Describe the agent deployed in an environment",
         tags=["endpoints"], responses=_error_responses(body=False))
    async def describe(env: str, name: str) -> dict[str, Any]:
        check_env(env)
        agent = await asyncio.to_thread(services.get_agent, name)
        commit = agent.staging_commit if env == "staging" else agent.production_commit
        if commit is None and env == "production":  # (an agent a running canary brings: its commit)
            commit = await asyncio.to_thread(services.reachable_commit, env, name)
        if commit is None:
            hint = f"rf agents promote {name}" if env == "production" else f"rf agents deploy {name}"
            raise NotFound(f"agent {name!r} is not deployed in {env}", hint)
        c = services.store.get_commit(commit)
        return {"name": agent.name, "description": agent.description, "env": env, "commit": commit,
                "deployed_at": c.created_at if c else None, "message": c.message if c else None,
                "url": f"/{env}/agents/{name}",
                # [input] schema of agent.toml (None: any input); also the MCP tool's input schema
                "input_schema": services.agents.commit_config(commit).get("input_schema")}

    @get("/{env:str}/agents/{name:str}/sessions/{session_id:str}", tags=["endpoints"],
         summary="A session (thread) of an agent in an environment: its messages, oldest first",
         responses=_error_responses(body=False))
    async def session(env: str, name: str, session_id: str) -> dict[str, Any]:
        check_env(env)
        thread = await asyncio.to_thread(services.get_session, session_id, env, name)
        return to_dict(thread)  # type: ignore[no-any-return]

    @post("/{env:str}/hooks/{trigger_id:str}", summary="Webhook trigger (signed: X-RF-Signature t=…,v1=…)", tags=["endpoints"],
          status_code=200, operation_class=_operation_class(body={}, body_media="*/*", body_required=False),
          responses={**_error_responses(body=True, token=False), 200: ResponseSpec(
              RunResult, generate_examples=False, description="the triggered run's output"),
                     500: ResponseSpec(RunResult | ErrorResponse, generate_examples=False,  # type: ignore[arg-type]
                                       description="the run failed (its error), or error: internal")})
    async def hook(request: Request[Any, Any, Any], env: str, trigger_id: str) -> Response[Any]:
        check_env(env)
        body = await request.body()
        headers = dict(request.headers.items())
        ex = await in_executor(blocking_run_executor(), services.webhook, env, trigger_id, body, headers)
        out: dict[str, Any] = {"execution_id": ex.id, "status": ex.status}
        if ex.status == "succeeded":
            out["output"] = ex.output
            return Response(out, status_code=200)
        out["error"] = ex.error
        return Response(out, status_code=500)

    from rf.server.mcp_server import McpEndpoint  # (the MCP SDK itself: at the first MCP request)

    mcp = McpEndpoint(services, max_body_bytes=max_body_bytes)

    @route("/{env:str}/mcp", http_method=[HttpMethod.POST, HttpMethod.GET, HttpMethod.DELETE], tags=["endpoints"],
           summary="MCP server (streamable HTTP): the environment's deployed agents as tools",
           description="Model Context Protocol, stateless with JSON answers: POST one JSON-RPC message "
                       "(initialize, tools/list, tools/call ...), get its JSON answer. Tool = agent (name, "
                       "agent.toml description, [input] schema); a call runs the environment's commit "
                       "(execution source: mcp). GET and DELETE answer 405 (no server stream, no session).",
           operation_class=_operation_class(body=MCP_BODY), responses=_error_responses(body=True))
    async def mcp_endpoint(env: str) -> _ASGIForward:
        check_env(env)
        return _ASGIForward(lambda scope, receive, send: mcp(env, scope, receive, send))

    @get("/api/health", summary="Liveness (no token needed)", tags=["management"])
    async def health() -> dict[str, Any]:
        return {"ok": True}

    handlers: list[Any] = [invoke, describe, session, hook, health, mcp_endpoint]
    from rf.server import openai_api  # (imports this module)

    handlers += openai_api.routes(services)  # /{env}/v1/... (OpenAI-compatible)
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

    from rf.services.retention import RetentionThread

    retention = RetentionThread(services) if scheduler else None

    def start_retention() -> None:
        if retention is not None:
            retention.start()

    def stop_retention() -> None:
        if retention is not None:
            retention.stop()

    from rf.services.canary import CanaryWatch

    canary_watch = CanaryWatch(services) if scheduler else None  # a canary's auto-abort, replicas' routing

    def start_canary_watch() -> None:
        if canary_watch is not None:
            canary_watch.start()

    def stop_canary_watch() -> None:
        if canary_watch is not None:
            canary_watch.stop()

    return _App(
        route_handlers=handlers,
        on_startup=[start_scheduler, start_retention, start_canary_watch,
                    services.clear_uploads],  # (uploads of a past run)
        on_shutdown=[stop_canary_watch, stop_retention, stop_scheduler, mcp.aclose],
        exception_handlers={Exception: _handle_exception},
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title="rf", version=_version(), path="/schema"),
        debug=False,
    )


class _App(Litestar):
    """Litestar without its default pydantic and attrs plugins: rf's handlers take and return
    msgspec structs and plain data only, and importing those plugins (pydantic is installed for
    the MCP SDK) cost ~0.1 s of every server start."""

    @staticmethod
    def _get_default_plugins(plugins: list[Any]) -> list[Any]:
        from litestar.plugins.core import MsgspecDIPlugin

        plugins.append(MsgspecDIPlugin())
        return plugins


def _version() -> str:
    from rf._version import __version__

    return __version__


class RequestSpec:
    """What one management route accepts, derived once from its Services method.

    Every parameter of the method except the path's and the server's own
    (:meth:`rf.api.Route.server_params`) is a field of a msgspec Struct with
    unknown fields forbidden: the JSON body of a POST/PATCH/DELETE, the query
    string of a GET. Types come from the method's annotations (resolved with
    ``typing.get_type_hints``, so ``from __future__ import annotations`` is fine);
    a ``{path: bytes}`` parameter travels as ``{path: base64}``.
    """

    def __init__(self, r: api.Route, fn: Any) -> None:
        import inspect
        import typing

        self.route = r
        self.label = f"{r.method} /api{r.path}"
        self.in_body = r.method != "GET"
        hints = typing.get_type_hints(fn)
        path = r.path_params()
        self.server_params = r.server_params()
        params = dict(inspect.signature(fn).parameters)
        params.pop("self", None)
        missing = [p for p in path if p not in params]
        if missing:
            raise TypeError(f"route {r.name}: path parameter(s) {missing} are not parameters of Services.{r.name}")
        fields: list[Any] = []
        self.types: dict[str, str] = {}
        for name, p in params.items():
            if name in path or name in self.server_params:
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"route {r.name}: Services.{r.name} takes *args/**kwargs; name every parameter")
            tp = hints.get(name, Any)
            if name in r.binary:
                optional = type(None) in typing.get_args(tp)
                tp = typing.Annotated[dict[str, str] | None if optional else dict[str, str],
                                      msgspec.Meta(description="{path: base64-encoded content}")]
            self.types[name] = _type_name(hints.get(name, Any), name in r.binary)
            if p.default is p.empty:
                fields.append((name, tp))
            elif p.default is None or isinstance(p.default, bool | int | float | str | list | dict):
                fields.append((name, tp, p.default))
            else:
                raise TypeError(f"route {r.name}: the default of {name!r} is not a JSON value; "
                                "list the parameter in the route's internal=(...) if no request sets it")
        struct_name = "".join(part.title() for part in r.name.split("_")) + ("Body" if self.in_body else "Query")
        self.struct: type[msgspec.Struct] = msgspec.defstruct(struct_name, fields, kw_only=True,
                                                              forbid_unknown_fields=True)
        self.fields = tuple(self.types)
        self.required = tuple(f[0] for f in fields if len(f) == 2)
        try:
            # A type JSON cannot carry (a callback, a Python object) fails here, at app build.
            schema = msgspec.json.schema(self.struct)
        except TypeError as exc:
            raise TypeError(f"route {r.name}: {exc}; list the parameter in the route's internal=(...) "
                            "if the server sets it") from None
        self.schema: dict[str, Any] = schema["$defs"][struct_name]
        self.defs: dict[str, Any] = schema["$defs"]  #: the schema's definitions (nested structs)
        self.path = path

    def hint(self) -> str:
        if not self.fields:
            return f"{self.label} takes no {'fields; send {}' if self.in_body else 'query parameters'}"
        what = "fields" if self.in_body else "query parameters"
        listed = ", ".join(f"{n}: {self.types[n]}" + ("" if n in self.required else "?") for n in self.fields)
        return f"{what} of {self.label}: {listed} (? = optional)"

    def parse(self, given: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the Services method, or UsageError (400) naming the bad field."""
        where = "field" if self.in_body else "query parameter"
        for key in given:
            if key in self.types:
                continue
            if key in self.server_params:
                raise UsageError(f"{key!r} cannot be set by a request to {self.label}: the server sets it",
                                 self.hint())
            if key in self.path:
                raise UsageError(f"{key!r} is part of the path of {self.label}, not a {where}", self.hint())
            raise UsageError(f"unknown {where} {key!r} in a request to {self.label}", self.hint())
        try:
            # A JSON body must have the exact types; a query string is text, converted by the
            # annotation (never by its looks: an agent named "007" stays a string).
            value = msgspec.convert(given, self.struct, strict=self.in_body)
        except msgspec.ValidationError as exc:
            text = str(exc).replace("`$.", "`").replace(" - at ", " at ")
            raise UsageError(f"bad {'request body' if self.in_body else 'query'} for {self.label}: {text}",
                             self.hint()) from None
        params = {key: getattr(value, key) for key in given}
        for key in self.route.binary:
            if params.get(key) is not None:
                try:
                    params[key] = api.decode_files(params[key], key)
                except UsageError as exc:
                    raise UsageError(f"bad request body for {self.label}: {exc.message}", self.hint()) from None
        return params


def _type_name(tp: Any, binary: bool) -> str:
    if binary:
        return "{path: base64}"
    text = getattr(tp, "__name__", None) if not getattr(tp, "__args__", None) else None
    return text or str(tp).replace("typing.", "")


def _management_handler(services: Services, r: api.Route, check_token: Any) -> HTTPRouteHandler:
    method = getattr(services, r.name)
    spec = RequestSpec(r, getattr(type(services), r.name))

    async def handler(request: Request[Any, Any, Any]) -> Response[Any]:
        actor = check_token(request)
        query = list(request.query_params.multi_items())
        uploaded = None
        if spec.in_body:
            if query:
                raise UsageError(f"{spec.label} takes no query parameters (send fields in the JSON body)",
                                 spec.hint())
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise UsageError(f"the request body of {spec.label} must be a JSON object", spec.hint())
            if r.accepts_upload and "upload" in body:
                # (read, decoded and checked off the event loop: it may be hundreds of MB)
                uploaded = await asyncio.to_thread(_uploaded_params, services, spec, body)
        else:
            body = {}
            for key, value in query:
                if key in body:
                    raise UsageError(f"query parameter {key!r} is given more than once", spec.hint())
                body[key] = value
        params: dict[str, Any] = dict(request.path_params)
        params.update(spec.parse(body) if uploaded is None else uploaded)
        if r.name == "run_test" and "text/event-stream" in request.headers.get("accept", ""):
            return _stream_call(lambda on_chunk: call_as(actor, method, **params, on_chunk=on_chunk))
        result = await in_executor(blocking_run_executor(), call_as, actor, method, **params)
        if r.name == "status":
            result.backend = "http"
        # (A Response, so that the server-sent events above keep their own media type.)
        return Response(to_dict(result), media_type=MediaType.JSON, status_code=200)

    handler.__name__ = f"api_{r.name}"
    path = "/api" + r.path.replace("}", ":str}")
    description = None
    if r.accepts_upload:
        if "upload" in spec.fields:
            raise TypeError(f"route {r.name}: a parameter named 'upload' clashes with accepts_upload")
        description = ('A body larger than [server] max_body_bytes may be sent ahead in chunks '
                       '(POST /api/uploads); then send {"upload": ID} as this body.')
    return route(path, http_method=[HttpMethod(r.method)], summary=r.summary, description=description,
                 tags=["management"], status_code=200, operation_id=r.name, operation_class=_operation_class(spec),
                 responses=_error_responses(body=spec.in_body))(handler)


def _uploaded_params(services: Services, spec: RequestSpec, body: dict[str, Any]) -> dict[str, Any]:
    """The parameters in the JSON body sent ahead as upload ``body["upload"]`` (rf.services.uploads;
    used once), checked like a body sent inline."""
    if len(body) != 1:
        others = ", ".join(sorted(k for k in body if k != "upload"))
        raise UsageError(f"a request to {spec.label} that names an upload carries no other field ({others})",
                         "put every field in the uploaded body, then send only {\"upload\": ID}")
    staged = parse_json_body(services.take_upload(body["upload"]))
    if not isinstance(staged, dict):
        raise UsageError(f"the uploaded body for {spec.label} must be a JSON object", spec.hint())
    return spec.parse(staged)


# ------------------------------------------------------------ OpenAPI documentation
class ErrorDetail(msgspec.Struct):
    code: str  #: stable, one per rf.errors class
    message: str
    hint: str | None = None
    status: int | None = None  #: a connector error: the remote API's HTTP status


class ErrorResponse(msgspec.Struct):
    """Every error the server answers: ``{"error": {code, message, hint}}``."""

    error: ErrorDetail


class RunResult(msgspec.Struct):
    """The answer of an endpoint run: ``output`` when it succeeded, ``error`` when not."""

    execution_id: str
    status: str
    output: Any = None
    error: Any = None


#: The body of ``POST /{env}/agents/{name}`` (checked by :func:`invoke_params`).
INVOKE_BODY: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {"input": {"description": "the agent's input (any JSON value)"},
                   "session_id": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
}


#: The body of ``POST /{env}/mcp``: one JSON-RPC 2.0 message of the Model Context Protocol.
MCP_BODY: dict[str, Any] = {
    "type": "object", "required": ["jsonrpc"],
    "properties": {"jsonrpc": {"type": "string", "enum": ["2.0"]},
                   "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                   "method": {"type": "string", "description": "e.g. initialize, tools/list, tools/call"},
                   "params": {"type": "object"}},
}


class _ASGIForward(ASGIResponse):
    """A route's answer that is another ASGI app, called with the request as it arrived
    (its body unread): how ``/{env}/mcp`` hands the request to the MCP SDK."""

    def __init__(self, app: Any) -> None:  # (nothing of ASGIResponse's own state is used)
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _error_statuses() -> dict[int, list[str]]:
    """HTTP status → the error codes (rf.errors classes) that answer it."""
    import rf.errors

    by_status: dict[int, list[str]] = {500: ["internal"]}
    stack: list[type[RfError]] = [rf.errors.RfError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.code not in by_status.setdefault(cls.http_status, []):
            by_status[cls.http_status].append(cls.code)
    return dict(sorted(by_status.items()))


def _error_responses(*, body: bool, token: bool = True) -> dict[int, ResponseSpec]:
    """The error answers of a route, documented with their one shape."""
    out = {}
    for status, codes in _error_statuses().items():
        if (status == 413 and not body) or (status == 401 and not token):
            continue
        out[status] = ResponseSpec(ErrorResponse, generate_examples=False,
                                   description="error: " + ", ".join(sorted(codes)))
    return out


def _operation_class(spec: RequestSpec | None = None, *, body: dict[str, Any] | None = None,
                     body_media: str = "application/json", body_required: bool = True) -> type[Operation]:
    """An Operation that documents the route's request body (or query parameters):
    the server decodes them itself (see RequestSpec), so Litestar cannot see them."""
    query: list[Parameter] = []
    if spec is not None and spec.in_body:
        body = spec.schema
    elif spec is not None:
        required = set(spec.schema.get("required", ()))
        query = [Parameter(name=name, param_in=ParamType.QUERY, required=name in required,
                           schema=_openapi_schema(schema))
                 for name, schema in spec.schema.get("properties", {}).items()]
    request_body = None if body is None else RequestBody(
        content={body_media: OpenAPIMediaType(schema=_openapi_schema(body))},
        required=bool(body.get("required")) if spec is not None else body_required)

    # A plain subclass per route (not a dataclass of its own: ~40x cheaper to make, and there are
    # over a hundred routes at every server start); Litestar instantiates it like Operation.
    return type("RouteOperation", (_DocumentedOperation,), {"documented_body": request_body,
                                                            "documented_query": tuple(query)})


@dataclass
class _DocumentedOperation(Operation):
    """An Operation adding the request body and query parameters its subclass documents."""

    documented_body: ClassVar[RequestBody | None] = None
    documented_query: ClassVar[tuple[Parameter, ...]] = ()

    def __post_init__(self) -> None:
        if self.documented_body is not None:
            self.request_body = self.documented_body
        if self.documented_query:
            self.parameters = [*(self.parameters or []), *self.documented_query]


def _openapi_schema(js: dict[str, Any]) -> Schema:
    """A JSON schema (as msgspec writes it) as Litestar's Schema object."""
    known = {f.name for f in dataclass_fields(Schema)}
    kwargs: dict[str, Any] = {}
    for key, value in js.items():
        name = re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()
        if name not in known:
            continue
        if name == "type":
            value = [OpenAPIType(v) for v in value] if isinstance(value, list) else OpenAPIType(value)
        elif name in ("properties", "pattern_properties"):
            value = {k: _openapi_schema(v) for k, v in value.items()}
        elif name in ("any_of", "one_of", "all_of", "prefix_items"):
            value = [_openapi_schema(v) for v in value]
        elif isinstance(value, dict) and name in ("items", "additional_properties", "not_"):
            value = _openapi_schema(value)
        kwargs[name] = value
    return Schema(**kwargs)


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
        task = asyncio.create_task(in_executor(blocking_run_executor(), work))
        try:
            while True:
                kind, data = await queue.get()
                yield {"event": kind, "data": json.dumps(data)}
                if kind != "chunk":
                    break
        finally:
            await task

    return ServerSentEvent(events())  # type: ignore[arg-type]


def _stream(services: Services, env: str, name: str, payload: Any, session_id: str | None,
            arm: Any = None) -> ServerSentEvent:
    """An endpoint call with ``Accept: text/event-stream``: the agent's chunks as they come,
    then ``done`` with the execution id and status (and error)."""

    def done(ex: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"execution_id": ex.id, "status": ex.status}
        if ex.status != "succeeded":
            out["error"] = ex.error
        return out

    return _stream_call(lambda on_chunk: services.invoke_routed(arm, env, name, payload, session_id, "endpoint",
                                                                on_chunk), done)
