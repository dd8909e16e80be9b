"""Connector instances (one per environment, same slug) and their resources.

A connector describes an HTTP API: base URL, auth (by credential *name*),
default headers, timeout, retries, and resources (``GET /customers/{id}``
with a JSON Schema of its parameters and an optional mock answer). Each
environment has its own instance of a slug, so staging can point at a
sandbox API while production points at the real one:

- a connector's *resources* (and kind) are shared: edited in staging, copied
  to production by publishing (``publish_connector``, or a batch release),
  recorded as a release item ``connector:SLUG`` whose before/after are
  content hashes of the resources;
- its *settings* (base URL, auth and credential, headers, timeout, retries,
  mock mode) belong to each environment. Staging's are edited directly.
  Production's are *prepared* in staging (``edit_connector(...,
  target="production")``, table ``connector_prepared_settings``) and reach
  production as their own release item ``connector:SLUG@production``
  (before/after: hashes of the settings). Publishing resources never touches
  production's settings; the first publish of a new connector uses the
  prepared production settings, or copies staging's when none were prepared
  (and its diff says which);
- agent code calls ``ctx.connectors.call(slug, resource, **params)``; the
  host resolves the instance *of the execution's environment*
  (``connectors.call`` below), adds the credential, and makes the request.
  A failed call raises :class:`~rf.errors.ConnectorError` whose message names
  only the connector, the resource and the outcome (``connector crm.get-customer
  failed: HTTP 503 Service Unavailable``): uncaught, it becomes the execution's
  error, which an endpoint hands to its (anonymous) caller. The URL (secrets
  masked), the error's detail and the API's answer go to the call's trace span
  (attributes ``url``, ``error_detail``, ``response_body``).

A connector of kind ``mcp`` is an MCP server (streamable HTTP) instead of an HTTP API: its
"base URL" is the server's MCP endpoint (a per-environment setting like any base URL) and its
resources are the server's tools (slug from the tool name, description, input schema as the
parameters schema; the tool's own name in ``path``, ``MCP`` as the method), discovered by
``create_connector(kind="mcp")`` and ``refresh_connector`` from the *staging* server, stored,
diffed and published like any resources. A call opens an MCP session with the same
credential binding (bearer → ``Authorization: Bearer ...``), calls the tool and returns its
structured content, else its text (JSON-decoded when it parses); a tool's ``isError`` answer
raises :class:`~rf.errors.ConnectorError`. The client side is in
:mod:`rf.services.connectors_mcp`.

Content hashes identify states (resources; settings; a new instance's
resources + settings), never timestamps. Every published state is also kept
as a snapshot (``connector_snapshots``), so a rollback can put an older
production state back even after staging moved on. Releases recorded before
settings were per environment hold hashes of config + resources; applying
or rolling back one only ever uses their resources.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from rf.config import AgentConfig, check_name
from rf.errors import Conflict, ConnectorError, NotFound, UsageError
from rf.ids import utcnow
from rf.models import (
    CONNECTOR_CONFIG_FIELDS,
    CONNECTOR_SETTINGS_FIELDS,
    Connector,
    ConnectorDiff,
    ConnectorPublishResult,
    ConnectorRefreshResult,
    ConnectorResource,
    ConnectorSettings,
    FieldChange,
    OpenAPIImportResult,
    ReleaseItem,
    ResourceChange,
    check_env,
    require_staging,
)
from rf.services import connectors_mcp
from rf.services.base import ServiceContext
from rf.services.host import HostCall, host_method

if TYPE_CHECKING:
    import httpx

    from rf.evals.tape import Tape
    from rf.services.credentials import CredentialsService
    from rf.services.releases import Publisher
    from rf.store.interfaces import Repositories

AUTH_KINDS = ("none", "api-key", "bearer", "basic")
#: ``http``: an HTTP API (resources are method + path); ``mcp``: an MCP server (resources are its tools).
KINDS = ("http", "mcp")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
#: Methods that may be sent twice without changing the outcome: only these are retried.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Default headers that would put a secret into the database: use a credential instead.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
PATH_PARAM_RE = re.compile(r"{([^{}]*)}")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
#: How much of a failed call's answer is kept (in its span's ``response_body``, and ``ConnectorError.body``).
MAX_ERROR_BODY = 2000
MAX_TIMEOUT_S = 600.0
MAX_RETRIES = 10

#: Labels of config fields in diffs and summaries.
CONFIG_LABELS = {
    "kind": "kind",
    "base_url": "base URL",
    "auth": "auth",
    "credential": "credential",
    "api_key_header": "API key header",
    "api_key_query": "API key query parameter",
    "headers": "headers",
    "timeout_s": "timeout",
    "retries": "retries",
    "mock": "mock mode",
}
RESOURCE_LABELS = {
    "name": "name",
    "description": "description",
    "method": "method",
    "path": "path",
    "params_schema": "schema",
    "mock_response": "mock",
}


# ---------------------------------------------------------------- pure helpers


def path_params(path: str) -> list[str]:
    """``/customers/{id}/orders/{order}`` → ``["id", "order"]``."""
    return PATH_PARAM_RE.findall(path)


def content_of(c: Connector) -> dict[str, Any]:
    """What a release compares and copies: config + resources, no env, no timestamps."""
    content: dict[str, Any] = {f: getattr(c, f) for f in CONNECTOR_CONFIG_FIELDS}
    content["resources"] = [
        {"slug": r.slug, "name": r.name, "description": r.description, "method": r.method, "path": r.path,
         "params_schema": r.params_schema, "mock_response": r.mock_response}
        for r in sorted(c.resources, key=lambda r: r.slug)
    ]
    return content


def hash_content(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]


#: The name suffix of the release item of a connector's prepared production settings.
SETTINGS_ITEM = "@production"


def settings_of(c: Connector) -> dict[str, Any]:
    """An instance's per-environment settings (what a publish of its resources never copies)."""
    return {f: copy.deepcopy(getattr(c, f)) for f in CONNECTOR_SETTINGS_FIELDS}


def shared_of(c: Connector) -> dict[str, Any]:
    """What a ``connector:SLUG`` release item copies from staging: kind and resources."""
    return {"kind": c.kind, "resources": content_of(c)["resources"]}


def shared_hash(c: Connector) -> str:
    return hash_content(shared_of(c))


def settings_hash(settings: dict[str, Any]) -> str:
    return hash_content({"settings": settings})


def creation_content(c: Connector, settings: dict[str, Any]) -> dict[str, Any]:
    """A new production instance: staging's kind and resources with ``settings``."""
    return {**shared_of(c), "settings": settings}


def settings_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[FieldChange]:
    before, after = before or {}, after or {}
    return [FieldChange(f, before.get(f), after.get(f)) for f in CONNECTOR_SETTINGS_FIELDS
            if before.get(f) != after.get(f)]


def describe_settings_changes(changes: list[FieldChange]) -> str:
    parts = []
    for ch in changes:
        if ch.name == "base_url":
            parts.append(f"base URL {ch.before} → {ch.after}")
        else:
            parts.append(f"{CONFIG_LABELS[ch.name]} changed")
    return ", ".join(parts) or "no changes"


def settings_view(slug: str, staging: Connector | None, production: Connector | None,
                  prepared: dict[str, Any] | None) -> ConnectorSettings:
    """Both environments' settings of ``slug`` and whether prepared production settings are pending."""
    live = settings_of(production) if production is not None else None
    view = ConnectorSettings(slug=slug, staging=settings_of(staging) if staging is not None else None,
                             production=live, prepared=copy.deepcopy(prepared))
    if live is not None and prepared is not None and live != prepared:
        view.pending = True
        view.changes = settings_changes(live, prepared)
        view.summary = "production settings: " + describe_settings_changes(view.changes)
    elif live is None and prepared is not None:
        view.summary = "prepared for production: its first publish uses them"
    elif live is None and staging is not None:
        view.summary = "no production settings prepared: the first publish copies staging's"
    else:
        view.summary = "production settings as published"
    return view


def effective_schema(resource: ConnectorResource) -> dict[str, Any]:
    """The resource's parameter schema with its path parameters added (required; strings unless typed)."""
    schema: dict[str, Any] = copy.deepcopy(resource.params_schema) if resource.params_schema else {"type": "object"}
    props: dict[str, Any] = schema.setdefault("properties", {})
    required = list(schema.get("required", []))
    for name in path_params(resource.path):
        props.setdefault(name, {"type": "string"})
        if name not in required:
            required.append(name)
    if required:
        schema["required"] = required
    return schema


def _scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _check_schema(schema: Any, what: str) -> dict[str, Any] | None:
    """Validate a parameters JSON Schema (Draft 2020-12); it must describe an object."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise UsageError(f"{what}: the parameters schema must be a JSON object (a JSON Schema)",
                         'for example: {"type": "object", "properties": {"id": {"type": "string"}}}')
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = exc.json_path if exc.json_path != "$" else "the schema"
        raise UsageError(f"{what}: invalid JSON Schema at {where}: {exc.message}",
                         "fix the schema (JSON Schema draft 2020-12)") from None
    if schema.get("type", "object") != "object":
        raise UsageError(f"{what}: the parameters schema must have type 'object' (named parameters)",
                         'wrap it: {"type": "object", "properties": {...}}')
    if "properties" in schema and not isinstance(schema["properties"], dict):
        raise UsageError(f"{what}: 'properties' must be an object")
    return schema


def tool_slug(name: str) -> str:
    """The resource slug of an MCP tool: ``getWeather`` → ``getweather``, ``files.read`` →
    ``files-read`` (lower case; anything but letters, digits, ``_`` and ``-`` becomes ``-``)."""
    slug = re.sub(r"[^a-z0-9_-]", "-", name.lower()).lstrip("_-")[:63]
    return slug


def _not_for_mcp(c: Connector, what: str) -> None:
    if c.kind == "mcp":
        raise UsageError(f"connector {c.slug!r} is an MCP server: its resources are the server's tools, "
                         f"so rf cannot {what}",
                         f"change the tools on the server, then: rf connectors refresh {c.slug} "
                         f"(a tool's mock answer: rf connectors resources edit {c.slug} TOOL --mock-file F.json)")


def _check_json(value: Any, what: str) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be JSON data") from None
    return value


class ConnectorsService:
    """Connectors (one instance per environment) and their calls from agent code; the release
    plug-in of kind ``connector`` (publishing goes through *publisher*, the releases domain;
    credentials' values come from *credentials*)."""

    def __init__(self, ctx: ServiceContext, credentials: CredentialsService, publisher: Publisher) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.credentials = credentials
        self.publisher = publisher
        self._http_client: httpx.Client | None = None
        self._http_lock = threading.Lock()

    # ------------------------------------------------------------ reading
    def _instance(self, row: dict[str, Any]) -> Connector:
        c = Connector(
            slug=row["slug"], env=row["env"], base_url=row["base_url"], kind=row["kind"], auth=row["auth"],
            credential=row["credential"], api_key_header=row["api_key_header"],
            api_key_query=row["api_key_query"], headers=row["headers"], timeout_s=row["timeout_s"],
            retries=row["retries"], mock=row["mock"],
            resources=[ConnectorResource(**r) for r in row.get("resources", [])],
            created_at=row["created_at"], updated_at=row["updated_at"],
        )
        c.content_hash = hash_content(content_of(c))
        return c

    def find(self, slug: str, env: str, tx: Repositories | None = None) -> Connector | None:
        """The instance or None. ``tx``: the repositories of an open unit of work, if any."""
        repos = self.store if tx is None else tx
        row = repos.connectors.connector_row(env, slug)
        return self._instance(row) if row is not None else None

    def _instance_for(self, call: HostCall, slug: str) -> Connector | None:
        """The instance an execution sees: a running canary's on its canary arm, else its environment's."""
        arm = call.arm
        if arm is not None and arm.connectors:
            found: Connector | None = arm.connectors.get(slug)
            if found is not None:
                return found
        return self.find(slug, call.env)

    def list_connectors(self, env: str = "staging") -> list[Connector]:
        """The instances of one environment, with their resources and both environments' settings."""
        check_env(env)
        return self._with_settings([self._instance(r) for r in self.store.connector_rows(env)])

    def get_connector(self, slug: str, env: str = "staging") -> Connector:
        check_env(env)
        found = self.find(slug, env)
        if found is None:
            raise self._missing_instance(slug, env)
        return self._with_settings([found])[0]

    def _with_settings(self, instances: list[Connector]) -> list[Connector]:
        """Fill each instance's ``settings``: staging's, production's and the prepared production settings."""
        if not instances:
            return instances
        configs = self.store.connector_configs()
        prepared = self.store.prepared_settings()
        for c in instances:
            other = {env: (c if env == c.env else self._config_only(configs.get((env, c.slug))))
                     for env in ("staging", "production")}
            c.settings = settings_view(c.slug, other["staging"], other["production"], prepared.get(c.slug))
        return instances

    @staticmethod
    def _config_only(row: dict[str, Any] | None) -> Connector | None:
        if row is None:
            return None
        return Connector(slug=row["slug"], env=row["env"], **{f: row[f] for f in CONNECTOR_CONFIG_FIELDS})

    def connector_settings(self, slug: str) -> ConnectorSettings:
        """A connector's settings in both environments, and the production settings prepared in staging."""
        check_name("connector", slug)
        staging, production = self.find(slug, "staging"), self.find(slug, "production")
        prepared = self.store.prepared_settings(slug).get(slug)
        if staging is None and production is None and prepared is None:
            raise self._missing_instance(slug, "staging")
        return settings_view(slug, staging, production, prepared)

    def _missing_instance(self, slug: str, env: str) -> NotFound:
        slugs = self.store.connector_slugs()
        if env == "production" and slug in slugs.get("staging", set()):
            return NotFound(f"connector {slug!r} has no production instance: publish it with "
                            f"rf connectors publish {slug}", f"rf connectors diff {slug} shows what would change")
        if env == "staging" and slug in slugs.get("production", set()):
            return NotFound(f"connector {slug!r} has no staging instance (it was deleted in staging)",
                            f"create it again: rf connectors create {slug} --base-url URL")
        known = sorted(slugs.get(env, set()))
        hint = f"known in {env}: {', '.join(known)}" if known else f"create one: rf connectors create {slug} --base-url URL"
        return NotFound(f"unknown connector {slug!r} in {env}", hint)

    def _resource(self, c: Connector, resource: str) -> ConnectorResource:
        for r in c.resources:
            if r.slug == resource:
                return r
        if c.kind == "mcp":  # a tool may also be named as its server names it (e.g. getWeather)
            for r in c.resources:
                if r.path == resource:
                    return r
        known = ", ".join(r.slug for r in c.resources)
        hint = f"known resources: {known}" if known else (
            f"the MCP server lists no tools; after adding some: rf connectors refresh {c.slug}" if c.kind == "mcp"
            else f"add one: rf connectors resources add {c.slug} RESOURCE --method GET --path /...")
        raise NotFound(f"connector {c.slug!r} has no resource {resource!r} in {c.env}", hint)

    # ------------------------------------------------------------ validation
    def _validated_config(self, c: Connector) -> None:
        """Check an instance's configuration in place (normalising where harmless)."""
        if not isinstance(c.base_url, str):
            raise UsageError("base URL must be a string")
        c.base_url = c.base_url.strip()
        if c.kind == "mcp" and c.base_url.startswith(connectors_mcp.STDIO_PREFIX):
            self._validated_stdio(c)
            return
        parsed = urllib.parse.urlsplit(c.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"base URL {c.base_url!r} is not an http(s) URL",
                             "for example: --base-url https://api.example.com/v1")
        if parsed.username or parsed.password:
            raise UsageError("base URL must not contain a user name or password",
                             "store them in a credential and use --auth basic --credential NAME")
        if parsed.query or parsed.fragment:
            raise UsageError(f"base URL {c.base_url!r} must not have a query or fragment",
                             "put fixed query parameters in the resource path, and keys in a credential")
        if c.auth not in AUTH_KINDS:
            raise UsageError(f"unknown auth {c.auth!r}", f"use one of: {', '.join(AUTH_KINDS)}")
        if c.auth == "none":
            if c.credential:
                raise UsageError("auth 'none' uses no credential",
                                 "choose --auth api-key, bearer or basic, or drop --credential")
            c.credential = None
            c.api_key_header = c.api_key_query = None
        else:
            if not c.credential:
                raise UsageError(f"auth {c.auth!r} needs a credential",
                                 "add --credential NAME (create it with: rf credentials set NAME)")
            check_name("credential", c.credential)
            if not self.credentials.credential_exists(c.credential):
                raise NotFound(f"unknown credential {c.credential!r}",
                               f"set it first: rf credentials set {c.credential}")
        if c.auth == "api-key":
            if c.api_key_header and c.api_key_query:
                raise UsageError("give either an API key header or an API key query parameter, not both")
            if not c.api_key_header and not c.api_key_query:
                c.api_key_header = "X-API-Key"
            if c.api_key_header and not HEADER_NAME_RE.match(c.api_key_header):
                raise UsageError(f"invalid header name {c.api_key_header!r}")
            if c.api_key_query is not None and not c.api_key_query.strip():
                raise UsageError("the API key query parameter name is empty")
        elif c.auth != "none" and (c.api_key_header or c.api_key_query):
            raise UsageError(f"--api-key-header/--api-key-query only apply to --auth api-key (not {c.auth!r})")
        if not isinstance(c.headers, dict):
            raise UsageError("headers must be an object of {name: value}")
        for name, value in c.headers.items():
            if not isinstance(name, str) or not HEADER_NAME_RE.match(name):
                raise UsageError(f"invalid header name {name!r}")
            if not isinstance(value, str) or "\n" in value or "\r" in value:
                raise UsageError(f"header {name!r} must be a single-line string")
            if name.lower() in SECRET_HEADERS:
                raise UsageError(f"header {name!r} would store a secret in the workspace database",
                                 "put the secret in a credential and use --auth bearer/api-key/basic --credential NAME")
        self._validated_config_numbers(c)

    @staticmethod
    def _validated_config_numbers(c: Connector) -> None:
        """Timeout, retries, mock mode and kind (what every kind of connector has)."""
        if isinstance(c.timeout_s, bool) or not isinstance(c.timeout_s, int | float) or not (
                0 < c.timeout_s <= MAX_TIMEOUT_S):
            raise UsageError(f"timeout must be a number of seconds between 0 and {MAX_TIMEOUT_S:g}")
        c.timeout_s = float(c.timeout_s)
        if isinstance(c.retries, bool) or not isinstance(c.retries, int) or not (0 <= c.retries <= MAX_RETRIES):
            raise UsageError(f"retries must be an integer between 0 and {MAX_RETRIES}")
        if not isinstance(c.mock, bool):
            raise UsageError("mock must be true or false")
        if c.kind not in KINDS:
            raise UsageError(f"unknown connector kind {c.kind!r}", f"use one of: {', '.join(KINDS)}")
        if c.kind == "mcp" and c.api_key_query:
            raise UsageError("an MCP server takes its API key in a header, not a query parameter",
                             "use --api-key-header NAME (default X-API-Key), or --auth bearer")

    def _validated_stdio(self, c: Connector) -> None:
        """An MCP server started as a command (``stdio:COMMAND``): no URL, no HTTP auth or headers."""
        try:
            argv = connectors_mcp.stdio_command(c.base_url)
        except ValueError as exc:
            raise UsageError(f"the MCP server command {c.base_url!r} cannot be parsed: {exc}",
                             "quote it as a shell would: --mcp-command \"python server.py --flag\"") from None
        if not argv:
            raise UsageError("the MCP server command is empty", 'e.g. --mcp-command "python server.py"')
        if c.auth != "none" or c.credential or c.headers:
            raise UsageError("an MCP server started as a command takes no auth, credential or headers "
                             "(those are sent over HTTP)",
                             "drop --auth/--credential/--header, or serve it over streamable HTTP: --mcp URL")
        c.api_key_header = c.api_key_query = None
        self._validated_config_numbers(c)

    @staticmethod
    def _validated_resource(connector: str, r: ConnectorResource) -> ConnectorResource:
        what = f"resource {r.slug!r} of connector {connector!r}"
        check_name("resource", r.slug)
        if not isinstance(r.method, str) or r.method.upper() not in METHODS:
            raise UsageError(f"{what}: unknown method {r.method!r}", f"use one of: {', '.join(METHODS)}")
        r.method = r.method.upper()
        if not isinstance(r.path, str) or not r.path.startswith("/"):
            raise UsageError(f"{what}: path {r.path!r} must start with '/'", "for example: --path /customers/{id}")
        if r.path.count("{") != r.path.count("}"):
            raise UsageError(f"{what}: path {r.path!r} has unbalanced braces")
        names = path_params(r.path)
        for name in names:
            if not PARAM_NAME_RE.match(name):
                raise UsageError(f"{what}: invalid path parameter {{{name}}}",
                                 "use letters, digits and _ (e.g. {customer_id})")
        if len(set(names)) != len(names):
            raise UsageError(f"{what}: a path parameter appears twice in {r.path!r}")
        if not isinstance(r.name, str) or not isinstance(r.description, str):
            raise UsageError(f"{what}: name and description must be strings")
        r.name = r.name.strip() or r.slug
        r.params_schema = _check_schema(r.params_schema, what)
        _check_json(r.mock_response, f"{what}: the mock response")
        return r

    # ------------------------------------------------------------ editing (staging only)
    def _instead(self, slug: str) -> str:
        return f"edit it in staging (--env staging), then publish: rf connectors publish {slug}"

    def _staging(self, slug: str, env: str, what: str, instead: str | None = None) -> Connector:
        check_name("connector", slug)
        require_staging(env, what, instead or self._instead(slug))
        c = self.find(slug, "staging")
        if c is None:
            raise self._missing_instance(slug, "staging")
        return c

    def create_connector(
        self,
        slug: str,
        base_url: str,
        auth: str = "none",
        credential: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30,
        retries: int = 2,
        env: str = "staging",
        api_key_header: str | None = None,
        api_key_query: str | None = None,
        mock: bool = False,
        kind: str = "http",
    ) -> Connector:
        """Create the **staging** instance of ``slug`` (production gets it by publishing).

        ``kind="mcp"``: ``base_url`` is an MCP server's streamable-HTTP endpoint; its tools,
        listed now (with the credential), become the resources."""
        check_name("connector", slug)
        require_staging(env, f"create connector {slug!r} in production",
                        f"create it in staging, then publish: rf connectors publish {slug}")
        if self.find(slug, "staging") is not None:
            raise Conflict(f"connector {slug!r} already exists in staging",
                           f"change it with: rf connectors edit {slug} ...")
        c = Connector(slug=slug, env="staging", base_url=base_url, auth=auth, credential=credential or None,
                      headers=dict(headers or {}), timeout_s=timeout_s, retries=retries,
                      api_key_header=api_key_header or None, api_key_query=api_key_query or None, mock=mock,
                      kind=kind)
        self._validated_config(c)
        if c.kind == "mcp":
            c.resources = self._discover_tools(c, {})
        with self.store.unit_of_work() as tx:
            tx.connectors.upsert_connector("staging", slug, content_of(c), utcnow())
            for row in content_of(c)["resources"]:
                tx.connectors.upsert_resource("staging", slug, row)
        return self.get_connector(slug)

    def edit_connector(
        self,
        slug: str,
        env: str = "staging",
        base_url: str | None = None,
        auth: str | None = None,
        credential: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        retries: int | None = None,
        api_key_header: str | None = None,
        api_key_query: str | None = None,
        mock: bool | None = None,
        target: str = "staging",
    ) -> Connector:
        """Change a connector's settings; only the arguments given (not None) change.

        ``target="staging"`` (default) edits the staging instance directly.
        ``target="production"`` *prepares* production's settings in staging:
        they reach production when the release item ``connector:SLUG@production``
        is published (or, for a connector not in production yet, with its first
        publish). Either way the edit is made from staging (``env``).

        ``headers`` replaces the whole map. ``credential=""`` clears the
        credential; switching ``auth`` to ``none`` clears it too, and
        switching between api-key placements clears the other one.
        """
        check_env(target)
        changes = {"base_url": base_url, "auth": auth, "credential": credential, "headers": headers,
                   "timeout_s": timeout_s, "retries": retries, "api_key_header": api_key_header,
                   "api_key_query": api_key_query, "mock": mock}
        if target == "production":
            return self._prepare_production_settings(slug, env, changes)
        c = self._staging(slug, env, f"edit connector {slug!r} in production",
                          f"production's settings are prepared from staging and published as a release item: "
                          f"rf connectors edit {slug} --for production ...; resources: edit them in staging, "
                          f"then rf connectors publish {slug}")
        self._change_settings(c, changes)
        self._validated_config(c)
        with self.store.unit_of_work() as tx:
            tx.connectors.upsert_connector("staging", slug, content_of(c), utcnow())
        return self.get_connector(slug)

    @staticmethod
    def _change_settings(c: Connector, changes: dict[str, Any]) -> None:
        """Apply the settings given (not None) to ``c`` and validate them later (``_validated_config``)."""
        auth, credential = changes["auth"], changes["credential"]
        key_header, key_query = changes["api_key_header"], changes["api_key_query"]
        if changes["base_url"] is not None:
            c.base_url = changes["base_url"]
        if auth is not None:
            if auth != c.auth and auth == "none" and credential is None:
                c.credential = None
            c.auth = auth
        if credential is not None:
            c.credential = credential or None
        if changes["headers"] is not None:
            c.headers = dict(changes["headers"])
        if changes["timeout_s"] is not None:
            c.timeout_s = changes["timeout_s"]
        if changes["retries"] is not None:
            c.retries = changes["retries"]
        if key_header is not None:
            c.api_key_header = key_header or None
            if key_header and key_query is None:
                c.api_key_query = None
        if key_query is not None:
            c.api_key_query = key_query or None
            if key_query and key_header is None:
                c.api_key_header = None
        if changes["mock"] is not None:
            c.mock = changes["mock"]
        if c.auth != "api-key" and key_header is None and key_query is None:
            c.api_key_header = c.api_key_query = None  # left over from an earlier api-key setup

    def _prepare_production_settings(self, slug: str, env: str, changes: dict[str, Any]) -> Connector:
        """Prepare production's settings in staging (a release item once production has the connector)."""
        check_name("connector", slug)
        require_staging(env, f"edit connector {slug!r} in production",
                        f"prepare production's settings from staging: rf connectors edit {slug} --for production "
                        f"..., then publish them: rf releases publish connector:{slug}{SETTINGS_ITEM}")
        staging, production = self.find(slug, "staging"), self.find(slug, "production")
        prepared = self.store.prepared_settings(slug).get(slug)
        if staging is None and production is None:
            raise NotFound(f"connector {slug!r} does not exist, so it has no production settings to prepare",
                           f"create it in staging first: rf connectors create {slug} --base-url URL; then prepare "
                           f"production's: rf connectors edit {slug} --for production --base-url URL")
        base = prepared or (settings_of(production) if production is not None else None)
        if base is None:
            assert staging is not None
            base = settings_of(staging)
        c = Connector(slug=slug, env="production", **copy.deepcopy(base))
        existing = staging or production
        c.kind = existing.kind if existing is not None else "http"  # (its settings are validated for its kind)
        self._change_settings(c, changes)
        self._validated_config(c)
        with self.store.unit_of_work() as tx:
            tx.connectors.put_prepared_settings(slug, settings_of(c), utcnow())
        return self.get_connector(slug, "staging" if staging is not None else "production")

    def delete_connector(self, slug: str, env: str = "staging") -> Connector:
        """Delete the staging instance. Production keeps its instance until a publish removes it."""
        c = self._staging(slug, env, f"delete connector {slug!r} from production")
        with self.store.unit_of_work() as tx:
            tx.connectors.delete_connector_rows("staging", slug)
        return c

    def add_resource(
        self,
        slug: str,
        resource: str,
        method: str,
        path: str,
        params_schema: dict[str, Any] | None = None,
        mock_response: Any = None,
        description: str = "",
        env: str = "staging",
        name: str = "",
    ) -> Connector:
        c = self._staging(slug, env, f"add a resource to connector {slug!r} in production")
        _not_for_mcp(c, "add resources")
        if any(r.slug == resource for r in c.resources):
            raise Conflict(f"connector {slug!r} already has a resource {resource!r}",
                           f"change it with: rf connectors resources edit {slug} {resource} ...")
        r = self._validated_resource(slug, ConnectorResource(
            slug=resource, name=name, description=description, method=method, path=path,
            params_schema=params_schema, mock_response=mock_response))
        self._save_resources(slug, [r])
        return self.get_connector(slug)

    def edit_resource(
        self,
        slug: str,
        resource: str,
        env: str = "staging",
        method: str | None = None,
        path: str | None = None,
        params_schema: dict[str, Any] | None = None,
        mock_response: Any = None,
        description: str | None = None,
        name: str | None = None,
        clear_schema: bool = False,
        clear_mock: bool = False,
    ) -> Connector:
        """Change a staging resource; arguments left None stay (``clear_*`` removes schema/mock)."""
        c = self._staging(slug, env, f"edit a resource of connector {slug!r} in production")
        r = copy.deepcopy(self._resource(c, resource))
        if c.kind == "mcp":  # the server defines its tools; only the mock answer is rf's own
            if any(v is not None for v in (method, path, params_schema, description, name)) or clear_schema:
                _not_for_mcp(c, "edit a tool's method, path, schema, description or name")
            if clear_mock:
                r.mock_response = None
            elif mock_response is not None:
                r.mock_response = _check_json(mock_response, f"the mock response of {slug}.{resource}")
            self._save_resources(slug, [r])
            return self.get_connector(slug)
        if method is not None:
            r.method = method
        if path is not None:
            r.path = path
        if clear_schema:
            r.params_schema = None
        elif params_schema is not None:
            r.params_schema = params_schema
        if clear_mock:
            r.mock_response = None
        elif mock_response is not None:
            r.mock_response = mock_response
        if description is not None:
            r.description = description
        if name is not None:
            r.name = name
        self._save_resources(slug, [self._validated_resource(slug, r)])
        return self.get_connector(slug)

    def remove_resource(self, slug: str, resource: str, env: str = "staging") -> Connector:
        c = self._staging(slug, env, f"remove a resource of connector {slug!r} in production")
        self._resource(c, resource)
        _not_for_mcp(c, "remove resources")
        with self.store.unit_of_work() as tx:
            tx.connectors.delete_resource_row("staging", slug, resource)
            tx.connectors.touch_connector("staging", slug, utcnow())
        return self.get_connector(slug)

    def _save_resources(self, slug: str, resources: list[ConnectorResource]) -> None:
        with self.store.unit_of_work() as tx:
            for r in resources:
                tx.connectors.upsert_resource("staging", slug, content_of(
                    Connector(slug=slug, env="staging", base_url="", resources=[r]))["resources"][0])
            tx.connectors.touch_connector("staging", slug, utcnow())

    def import_openapi(self, slug: str, spec_text: str, env: str = "staging") -> OpenAPIImportResult:
        """Add (or update) resources from an OpenAPI 3 document; create the connector if missing.

        Everything is parsed and validated first, then written in one
        transaction: a spec that is refused stores nothing.
        """
        from rf import openapi

        check_name("connector", slug)
        require_staging(env, f"import resources into connector {slug!r} in production", self._instead(slug))
        if not isinstance(spec_text, str) or not spec_text.strip():
            raise UsageError("the OpenAPI document is empty")
        parsed = openapi.parse(spec_text)
        resources = [self._validated_resource(slug, r) for r in parsed.resources]
        existing = self.find(slug, "staging")
        if existing is not None:
            _not_for_mcp(existing, "import an OpenAPI document")
        created = existing is None
        if existing is None:
            if parsed.base_url is None:
                raise UsageError(
                    f"connector {slug!r} does not exist and the spec has no absolute servers[0].url",
                    f"create it first: rf connectors create {slug} --base-url URL, then import again")
            existing = Connector(slug=slug, env="staging", base_url=parsed.base_url)
            self._validated_config(existing)
        current = {r.slug: r for r in existing.resources}
        result = OpenAPIImportResult(slug=slug, env="staging", created=created, base_url=existing.base_url)
        changed = []
        for r in resources:
            old = current.get(r.slug)
            if old is None:
                result.added.append(r.slug)
                changed.append(r)
            elif old != r:
                result.updated.append(r.slug)
                changed.append(r)
            else:
                result.unchanged.append(r.slug)
        now = utcnow()
        with self.store.unit_of_work() as tx:
            if created:
                tx.connectors.upsert_connector("staging", slug, content_of(existing), now)
            for r in changed:
                tx.connectors.upsert_resource("staging", slug, content_of(
                    Connector(slug=slug, env="staging", base_url="", resources=[r]))["resources"][0])
            if changed and not created:
                tx.connectors.touch_connector("staging", slug, now)
        return result

    # ------------------------------------------------------------ MCP connectors
    def refresh_connector(self, slug: str, env: str = "staging") -> ConnectorRefreshResult:
        """Make the staging resources of MCP connector ``slug`` the tools its staging server
        lists now: new tools are added, changed ones (description, input schema) updated, gone
        ones removed; each tool keeps its mock response. Production changes by publishing."""
        c = self._staging(slug, env, f"refresh connector {slug!r} in production",
                          f"refresh it in staging (from staging's MCP server), then publish: "
                          f"rf connectors publish {slug}")
        if c.kind != "mcp":
            raise UsageError(f"connector {slug!r} is an HTTP API: only an MCP connector's resources are "
                             "discovered from its server",
                             f"import an OpenAPI document instead: rf connectors import-openapi {slug} FILE")
        current = {r.slug: r for r in c.resources}
        tools = self._discover_tools(c, current)
        result = ConnectorRefreshResult(slug=slug, env="staging")
        fresh = {r.slug: r for r in tools}
        for r in tools:
            old = current.get(r.slug)
            (result.added if old is None else result.updated if old != r else result.unchanged).append(r.slug)
        result.removed = sorted(set(current) - set(fresh))
        if result.added or result.updated or result.removed:
            with self.store.unit_of_work() as tx:
                for name in result.removed:
                    tx.connectors.delete_resource_row("staging", slug, name)
                for r in tools:
                    if r.slug in result.added or r.slug in result.updated:
                        tx.connectors.upsert_resource("staging", slug, content_of(
                            Connector(slug=slug, env="staging", base_url="", resources=[r]))["resources"][0])
                tx.connectors.touch_connector("staging", slug, utcnow())
        return result

    def _mcp_cwd(self) -> str | None:
        """Where a ``stdio:`` MCP server command starts: the workspace directory."""
        return str(self.workspace.root) if self.workspace is not None else None

    def _mcp_headers(self, c: Connector, secret: Any = None) -> tuple[dict[str, str], list[str]]:
        """The headers of an MCP connector's requests: its default headers and its credential
        bound as for HTTP (bearer → ``Authorization: Bearer ...``, basic, api-key header); and
        the secret values to scrub. ``secret`` registers a value with the execution (HostCall.secret)."""
        headers = dict(c.headers)
        secrets: list[str] = []
        if c.auth != "none" and c.credential:
            value = self.credentials.credential_secret(c.credential)
            if secret is not None:
                secret(value)
            secrets.append(value)
            if c.auth == "bearer":
                headers["Authorization"] = f"Bearer {value}"
            elif c.auth == "basic":
                if ":" not in value:
                    raise UsageError(f"credential {c.credential!r} used for basic auth must be 'user:password'",
                                     f"set it again: rf credentials set {c.credential}")
                token = base64.b64encode(value.encode()).decode()
                if secret is not None:
                    secret(token)
                secrets.append(token)
                headers["Authorization"] = f"Basic {token}"
            else:
                headers[c.api_key_header or "X-API-Key"] = value
        return headers, secrets

    def _discover_tools(self, c: Connector, current: dict[str, ConnectorResource]) -> list[ConnectorResource]:
        """The tools of ``c``'s MCP server as resources (keeping the mock responses in ``current``)."""
        headers, secrets = self._mcp_headers(c)
        try:
            tools = connectors_mcp.list_tools(c.base_url, headers, c.timeout_s, self._mcp_cwd())
        except connectors_mcp.McpFailure as exc:
            if exc.status in (401, 403):
                hint = (f"check credential {c.credential!r}: rf credentials set {c.credential}" if c.credential
                        else f"the server wants authentication: rf connectors edit {c.slug} --auth bearer "
                             "--credential NAME")
            else:
                hint = (f"check the command: rf connectors show {c.slug}" if c.base_url.startswith(
                    connectors_mcp.STDIO_PREFIX) else
                    f"is the MCP server running at {c.base_url}? (the endpoint of a streamable-HTTP server, e.g. /mcp)")
            raise UsageError(f"could not list the tools of MCP server {c.base_url} (connector {c.slug!r}, "
                             f"{c.env}): {_scrub(exc.reason, secrets)}", hint) from None
        resources: list[ConnectorResource] = []
        seen: dict[str, str] = {}
        for tool in tools:
            what = f"tool {tool.name!r} of MCP server {c.base_url}"
            slug = tool_slug(tool.name)
            if not slug or "{" in tool.name or "}" in tool.name:
                raise UsageError(f"{what}: rf cannot name a resource after it",
                                 "tool names use letters, digits, '_', '-' and '.'")
            if slug in seen:
                raise Conflict(f"{what} and tool {seen[slug]!r} both become resource {slug!r}",
                               "rename one of the tools on the server")
            seen[slug] = tool.name
            old = current.get(slug)
            resources.append(ConnectorResource(
                slug=slug, name=tool.title or tool.name, description=tool.description,
                method=connectors_mcp.MCP_METHOD, path=tool.name,
                params_schema=_check_schema(tool.input_schema or {"type": "object"}, what),
                mock_response=old.mock_response if old is not None else None))
        return sorted(resources, key=lambda r: r.slug)

    def _call_tool(self, call: HostCall, c: Connector, r: ConnectorResource, params: dict[str, Any]) -> Any:
        """Call the MCP tool behind ``r`` (the instance of the execution's environment)."""
        headers, secrets = self._mcp_headers(c, call.secret)
        call.annotate(url=c.base_url, tool=r.path, mock=False)
        label = f"connector {c.slug}.{r.slug}"
        timeout, cut_short = call.time_left(c.timeout_s)
        try:
            outcome = connectors_mcp.call_tool(c.base_url, headers, timeout, r.path, params, self._mcp_cwd())
        except connectors_mcp.McpFailure as exc:
            if cut_short and exc.timed_out:
                raise _out_of_time(call, label, f"MCP tools/call {r.path} on {c.base_url}") from None
            if exc.status is not None:
                call.annotate(status=exc.status)
            if exc.status in (401, 403):
                hint = (f"check credential {c.credential!r}: rf credentials set {c.credential}" if c.credential
                        else f"the server wants authentication: rf connectors edit {c.slug} --auth bearer "
                             "--credential NAME")
            elif exc.timed_out:
                hint = f"raise it in staging: rf connectors edit {c.slug} --timeout SECONDS"
            else:
                hint = f"check the MCP server URL of {c.slug} in {c.env}: rf connectors show {c.slug} --env {c.env}"
            raise _failed(call, label, exc.reason, f"MCP tools/call {r.path} on {c.base_url}: "
                          f"{_scrub(exc.detail, secrets)[:300]}", hint, exc.status) from None
        if outcome.is_error:
            text = _scrub(outcome.text, secrets)
            if len(text) > MAX_ERROR_BODY:
                text = text[:MAX_ERROR_BODY] + "…"
            call.annotate(response_body=text)
            raise _failed(call, label, "the tool answered an error",
                          f"MCP tools/call {r.path} on {c.base_url} answered isError: {text[:300]}",
                          "the tool's message is in ConnectorError.body", None, text)
        return outcome.value

    # ------------------------------------------------------------ diff and publish
    def diff_connector(self, slug: str) -> ConnectorDiff:
        """What publishing would change in production.

        ``SLUG``: its resources (added / removed / modified); production's settings
        never change with them, except that a new connector's first publish gives
        production the prepared settings (else staging's, and ``config`` lists them).
        ``SLUG@production``: the prepared production settings against production's
        live ones (``config``: each field before → after).
        """
        if slug.endswith(SETTINGS_ITEM):
            return self._diff_settings(slug[: -len(SETTINGS_ITEM)])
        check_name("connector", slug)
        staging, production = self.find(slug, "staging"), self.find(slug, "production")
        if staging is None and production is None:
            raise self._missing_instance(slug, "staging")
        prepared = self.store.prepared_settings(slug).get(slug)
        return _diff(slug, production, staging, prepared)

    def _diff_settings(self, slug: str) -> ConnectorDiff:
        check_name("connector", slug)
        view = self.connector_settings(slug)
        name = slug + SETTINGS_ITEM
        if view.production is None:
            raise NotFound(f"connector {slug!r} has no production instance, so no production settings to publish",
                           f"its first publish uses the prepared settings: rf connectors diff {slug}")
        before = settings_hash(view.production)
        after = settings_hash(view.prepared) if view.prepared is not None else before
        return ConnectorDiff(slug=name, production=before, staging=after, changed=view.pending,
                             summary=view.summary if view.pending else "production settings as prepared",
                             config=list(view.changes), settings=view)

    def publish_connector(self, slug: str, author: str = "unknown", message: str = "") -> ConnectorPublishResult:
        """Publish the connector's resources to production (a one-item release); production's
        settings stay (they are their own item: ``connector:SLUG@production``)."""
        d = self.diff_connector(slug)
        if not d.changed:
            return ConnectorPublishResult(slug=slug, before=d.production, after=d.staging, changed=False,
                                          summary="production already matches staging")
        message = message or f"publish connector {slug}"
        # the releases service: same path as `rf releases publish`
        release = self.publisher.publish_release(
            [f"connector:{slug}"], message=message, author=author)
        item = next(i for i in release.items if i.kind == "connector" and i.name == slug)
        return ConnectorPublishResult(slug=slug, before=item.before, after=item.after, changed=True,
                                      summary=item.summary, release_id=release.id)

    def release_pending(self) -> list[ReleaseItem]:
        """Per connector: ``SLUG`` when staging's resources differ from production's (or one side
        is missing), and ``SLUG@production`` when the prepared production settings differ from
        production's live ones."""
        staging = {r["slug"]: self._instance(r) for r in self.store.connector_rows("staging")}
        production = {r["slug"]: self._instance(r) for r in self.store.connector_rows("production")}
        prepared = self.store.prepared_settings()
        items = []
        for slug in sorted(set(staging) | set(production)):
            d = _diff(slug, production.get(slug), staging.get(slug), prepared.get(slug))
            if d.changed:
                items.append(ReleaseItem(kind="connector", name=slug, summary=d.summary, before=d.production,
                                         after=d.staging))
            live, ready = production.get(slug), prepared.get(slug)
            if live is not None and ready is not None and settings_of(live) != ready:
                changes = settings_changes(settings_of(live), ready)
                items.append(ReleaseItem(kind="connector", name=slug + SETTINGS_ITEM,
                                         summary=f"{slug}: production settings: {describe_settings_changes(changes)}",
                                         before=settings_hash(settings_of(live)), after=settings_hash(ready)))
        return items

    def _state_matches(self, tx: Repositories, state: Any, current: Connector | None) -> bool:
        """Whether production's instance ``current`` is the item state ``state``: a hash of its
        resources, of a new instance's content, or (releases before per-environment settings)
        of config + resources; only the resources are compared."""
        if state is None or current is None:
            return state is None and current is None
        if state in (shared_hash(current), current.content_hash):
            return True
        snapshot = tx.connectors.get_connector_snapshot(str(state))
        if snapshot is None or "resources" not in snapshot:
            return False
        return hash_content({"kind": snapshot.get("kind", "http"), "resources": snapshot["resources"]}) == (
            shared_hash(current))

    def release_apply(self, tx: Repositories, name: str, before: Any, after: Any) -> None:
        """Inside the release transaction: ``SLUG`` makes production's resources the state ``after``
        (creating or removing the instance); ``SLUG@production`` makes its settings ``after``."""
        if name.endswith(SETTINGS_ITEM):
            self._apply_settings(tx, name[: -len(SETTINGS_ITEM)], before, after)
            return
        slug = name
        current = self.find(slug, "production", tx)
        if not self._state_matches(tx, before, current):
            raise Conflict(f"production changed since the plan: connector {slug} is now at "
                           f"{shared_hash(current)[:12] if current else 'nothing'}", "review again and re-run")
        now = utcnow()
        prepared = tx.connectors.prepared_settings(slug).get(slug)
        if current is not None:  # keep production's state restorable (rollback)
            tx.connectors.put_connector_snapshot(shared_hash(current), shared_of(current))
        if after is None:
            if prepared is None and current is not None:  # a re-creation (or a rollback) gets them back
                tx.connectors.put_prepared_settings(slug, settings_of(current), now)
            tx.connectors.delete_connector_rows("production", slug)
            return
        staging = self.find(slug, "staging", tx)
        content: dict[str, Any] | None = None
        if staging is not None:
            chosen = prepared if prepared is not None else settings_of(staging)
            candidate = shared_of(staging) if current is not None else creation_content(staging, chosen)
            if hash_content(candidate) == after:
                content = candidate
        if content is None:
            content = tx.connectors.get_connector_snapshot(str(after))
            if content is None or "resources" not in content:
                raise Conflict(f"staging changed since the plan: connector {slug} is no longer at {str(after)[:12]}",
                               "review again and re-run")
        tx.connectors.put_connector_snapshot(str(after), content)
        if current is not None:
            settings = settings_of(current)  # a publish of resources never touches production's settings
        elif prepared is not None:
            settings = prepared
        elif isinstance(content.get("settings"), dict):
            settings = content["settings"]
        elif all(f in content for f in CONNECTOR_SETTINGS_FIELDS):  # a release from before per-env settings
            settings = {f: content[f] for f in CONNECTOR_SETTINGS_FIELDS}
        elif staging is not None:
            settings = settings_of(staging)
        else:
            raise Conflict(f"connector {slug}: no settings to create its production instance with",
                           f"prepare them: rf connectors edit {slug} --for production --base-url URL")
        tx.connectors.replace_connector(
            "production", slug,
            {**settings, "kind": content.get("kind", "http"), "resources": content["resources"]}, now)
        if prepared is None:  # from now on production's settings are prepared (and published) on their own
            tx.connectors.put_prepared_settings(slug, settings, now)

    def _apply_settings(self, tx: Repositories, slug: str, before: Any, after: Any) -> None:
        current = self.find(slug, "production", tx)
        if current is None:
            raise Conflict(f"connector {slug} has no production instance any more", "review again and re-run")
        live = settings_of(current)
        if settings_hash(live) != before:
            raise Conflict(f"production changed since the plan: the settings of connector {slug}",
                           "review again and re-run")
        tx.connectors.put_connector_snapshot(settings_hash(live), {"settings": live})
        prepared = tx.connectors.prepared_settings(slug).get(slug)
        if prepared is not None and settings_hash(prepared) == after:
            settings = prepared
        else:
            snapshot = tx.connectors.get_connector_snapshot(str(after))
            if snapshot is None or not isinstance(snapshot.get("settings"), dict):
                raise Conflict(f"the prepared production settings of connector {slug} changed since the plan",
                               "review again and re-run")
            settings = snapshot["settings"]
        tx.connectors.put_connector_snapshot(str(after), {"settings": settings})
        tx.connectors.set_connector_settings("production", slug, settings, utcnow())

    # ------------------------------------------------------------ deploy check
    def deploy_warnings(self, config: AgentConfig) -> list[str]:
        """Warn about connectors that agent.toml lists but staging lacks (a deploy check)."""
        warnings: list[str] = []
        staging = self.store.connector_slugs().get("staging", set())
        for slug in config.connectors:
            if slug not in staging:
                warnings.append(f"agent.toml lists connector {slug!r}, which has no staging instance: "
                                f"rf connectors create {slug} --base-url URL")
        return warnings

    # ------------------------------------------------------------ runtime (host methods)
    def _http(self) -> httpx.Client:
        """One pooled client per service (thread-safe; keeps connections warm)."""
        client = self._http_client
        if client is None:
            with self._http_lock:
                client = self._http_client
                if client is None:
                    import httpx

                    client = self._http_client = httpx.Client(follow_redirects=True)
        return client

    def close(self) -> None:
        client = self._http_client
        if client is not None:
            self._http_client = None
            client.close()

    @host_method("connectors.describe")
    def _host_connectors_describe(self, call: HostCall, slug: str, resource: str) -> dict[str, Any]:
        """Name, description and parameter schema of a resource (for LLM tool use)."""
        c = self._instance_for(call, slug)
        if c is None:
            raise self._missing_instance(slug, call.env)
        r = self._resource(c, resource)
        return {
            "connector": slug, "resource": r.slug, "name": r.name, "method": r.method, "path": r.path,
            "description": r.description or (f"{r.name}: tool {r.path} of MCP connector {slug}" if c.kind == "mcp"
                                             else f"{r.name}: {r.method} {r.path} on connector {slug}"),
            "parameters": effective_schema(r),
        }

    @host_method("connectors.call")
    def _host_connectors_call(self, call: HostCall, slug: str, resource: str, params: dict[str, Any] | None = None,
                              mock: bool = False) -> Any:
        """Call ``resource`` of the instance of ``slug`` in the execution's environment."""
        if not isinstance(slug, str) or not isinstance(resource, str):
            raise UsageError("ctx.connectors.call(slug, resource, **params): slug and resource must be strings")
        c = self._instance_for(call, slug)
        if c is None:
            raise self._missing_instance(slug, call.env)
        r = self._resource(c, resource)
        asked = params or {}
        params = dict(asked)
        what = f"connector {slug!r} resource {resource!r} ({call.env})"
        self._validate_params(what, r, params)
        call.annotate(connector=slug, resource=resource, method=r.method)
        tape = call.tape
        if tape is not None:  # a replay or a replay-only eval: the recording answers first (rf.evals.tape)
            recorded = tape.answer(slug, resource, r.method, asked)
            if recorded is not None:
                call.annotate(replayed=True, mock=False)
                return recorded.answer()
        if mock or c.mock or os.environ.get("RF_CONNECTOR_MOCK", "").lower() in ("1", "true", "yes"):
            if r.mock_response is None:
                raise NotFound(f"{what} has no mock response",
                               f"add one: rf connectors resources edit {slug} {resource} --mock-file F.json")
            call.annotate(mock=True, url=c.base_url if c.kind == "mcp" else c.base_url.rstrip("/") + r.path,
                          status=None)
            return copy.deepcopy(r.mock_response)
        if tape is not None:
            if not tape.live:
                return self._unmatched(call, tape, what, slug, resource, r.method, asked)
            return self._call_live(call, c, r, params, tape, asked)
        if c.kind == "mcp":
            return self._call_tool(call, c, r, params)
        return self._send(call, c, r, params)

    def _unmatched(self, call: HostCall, tape: Tape, what: str, slug: str, resource: str, method: str,
                   asked: dict[str, Any]) -> Any:
        """A request the recording does not hold, with live calls off: listed on the tape, and
        the execution fails even if agent code catches the error (nothing went out)."""
        shown = tape.miss(slug, resource, method, asked)
        call.annotate(replayed=False, unmatched=True)
        message = f"{what}: no recorded answer for {shown} in {tape.source}"
        # The execution fails whatever agent code does with the error (see finish_execution).
        call.state.setdefault("deferred_errors", []).append(f"ctx.connectors.call: {message}")
        raise ConnectorError(message, "record it (rf eval AGENT --record), or let unrecorded calls reach staging's "
                                      "instances: --live (rf eval) / --live-connectors (rf replay)")

    def _call_live(self, call: HostCall, c: Connector, r: ConnectorResource, params: dict[str, Any], tape: Tape,
                   asked: dict[str, Any]) -> Any:
        """An unrecorded call sent to the instance (``--live``); when recording, its answer is kept,
        redacted like a span (the execution's secrets and every known credential value)."""
        from rf.evals.tape import Recorded
        from rf.services.traces import redacted

        try:
            result = self._call_tool(call, c, r, params) if c.kind == "mcp" else self._send(call, c, r, params)
        except ConnectorError as exc:
            tape.went_live(Recorded(c.slug, r.slug, r.method, redacted(call, asked), error=redacted(call, {
                "message": exc.message, "status": exc.status, "body": exc.body})) if tape.recording else None)
            raise
        tape.went_live(Recorded(c.slug, r.slug, r.method, redacted(call, asked), response=redacted(call, result))
                       if tape.recording else None)
        return result

    def _validate_params(self, what: str, r: ConnectorResource, params: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match

        schema = effective_schema(r)
        typed = (r.params_schema or {}).get("properties", {})
        for name in path_params(r.path):  # untyped path params are strings; accept numbers as their text
            if name not in typed and isinstance(params.get(name), int | float) and not isinstance(params[name], bool):
                params[name] = str(params[name])
        error = best_match(Draft202012Validator(schema).iter_errors(params))
        if error is None:
            return
        props = schema.get("properties", {})
        expected = ", ".join(
            f"{n} ({props[n].get('type', 'any') if isinstance(props[n], dict) else 'any'}"
            f"{', required' if n in schema.get('required', []) else ''})" for n in props) or "none"
        hint = f"parameters of {r.slug}: {expected}"
        if error.validator == "required":
            missing = [n for n in error.validator_value if n not in params]
            raise UsageError(f"{what}: missing parameter {', '.join(repr(m) for m in missing)}", hint)
        where = error.absolute_path
        if where:
            raise UsageError(f"{what}: parameter {where[0]!r}: {error.message}", hint)
        raise UsageError(f"{what}: {error.message}", hint)

    def _send(self, call: HostCall, c: Connector, r: ConnectorResource, params: dict[str, Any]) -> Any:
        import httpx

        path = r.path
        for name in path_params(r.path):
            value = params.pop(name)
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            path = path.replace("{" + name + "}", urllib.parse.quote(text, safe=""))
        url = c.base_url.rstrip("/") + path
        headers = {"Accept": "application/json", **c.headers}
        query: list[tuple[str, str | int | float | bool | None]] = []
        body: Any = None
        if r.method in BODY_METHODS:
            body = params or None
        else:
            for key, value in params.items():
                if value is None:
                    continue
                for v in value if isinstance(value, list) else [value]:
                    query.append((key, json.dumps(v) if isinstance(v, bool | dict | list) else str(v)))
        secrets: list[str] = []
        shown_query: list[tuple[str, Any]] = list(query)
        if c.auth != "none" and c.credential:
            secret = call.secret(self.credentials.credential_secret(c.credential))
            secrets += [secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)]
            if c.auth == "bearer":
                headers["Authorization"] = f"Bearer {secret}"
            elif c.auth == "basic":
                if ":" not in secret:
                    raise UsageError(f"credential {c.credential!r} used for basic auth must be 'user:password'",
                                     f"set it again: rf credentials set {c.credential}")
                token = call.secret(base64.b64encode(secret.encode()).decode())
                secrets.append(token)
                headers["Authorization"] = f"Basic {token}"
            elif c.api_key_query:
                query.append((c.api_key_query, secret))
                shown_query.append((c.api_key_query, "***"))
            else:
                headers[c.api_key_header or "X-API-Key"] = secret
        shown_url = url + ("?" + urllib.parse.urlencode(shown_query) if shown_query else "")
        call.annotate(url=shown_url, mock=False)
        label = f"connector {c.slug}.{r.slug}"
        attempts = 1 + (c.retries if r.method in IDEMPOTENT else 0)
        response: httpx.Response | None = None
        for attempt in range(1, attempts + 1):
            call.annotate(attempts=attempt)
            # The connector's timeout, or less: the execution's own timeout comes first.
            timeout, cut_short = call.time_left(c.timeout_s)
            try:
                response = self._http().request(r.method, url, params=query or None, json=body, headers=headers,
                                                timeout=timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if attempt < attempts and not call.time_left(1.0)[1]:
                    time.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                    continue
                if cut_short and isinstance(exc, httpx.ConnectTimeout):
                    raise _out_of_time(call, label, f"{r.method} {shown_url}") from None
                reason = "timed out connecting" if isinstance(exc, httpx.ConnectTimeout) else "could not connect"
                outcome = f"{reason} ({_plural(attempt, 'attempt')})"
                raise _failed(call, label, outcome, f"{r.method} {shown_url} {outcome}: {_scrub(str(exc), secrets)[:200]}",
                              f"check the base URL of {c.slug} in {c.env}: rf connectors show {c.slug} --env {c.env}"
                              ) from None
            except httpx.TimeoutException:
                if cut_short:
                    raise _out_of_time(call, label, f"{r.method} {shown_url}") from None
                outcome = f"timed out after {c.timeout_s:g} s"
                raise _failed(call, label, outcome, f"{r.method} {shown_url} {outcome}",
                              f"raise it in staging: rf connectors edit {c.slug} --timeout SECONDS") from None
            except httpx.HTTPError as exc:
                raise _failed(call, label, type(exc).__name__,
                              f"{r.method} {shown_url} failed: {type(exc).__name__}: {_scrub(str(exc), secrets)[:200]}",
                              None) from None
            if response.status_code >= 500 and attempt < attempts and not call.time_left(1.0)[1]:
                time.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                continue
            break
        assert response is not None
        call.annotate(status=response.status_code)
        if response.status_code >= 400:
            text = _scrub(response.text, secrets)
            if len(text) > MAX_ERROR_BODY:
                text = text[:MAX_ERROR_BODY] + "…"
            tried = f" after {_plural(attempts, 'attempt')}" if attempts > 1 and response.status_code >= 500 else ""
            if response.status_code in (401, 403):
                hint = (f"check credential {c.credential!r}: rf credentials set {c.credential}" if c.credential
                        else f"the API wants authentication: rf connectors edit {c.slug} --auth ... --credential NAME")
            elif response.status_code == 404:
                hint = f"check the path and parameters: rf connectors show {c.slug} --env {c.env}"
            else:
                hint = None
            outcome = f"HTTP {response.status_code} {response.reason_phrase}".rstrip() + tried
            call.annotate(response_body=text)
            raise _failed(call, label, outcome, f"{r.method} {shown_url} answered {outcome}", hint,
                          response.status_code, text)
        if not response.content or r.method == "HEAD":
            return None
        try:
            return response.json()
        except ValueError:
            return response.text


def _failed(call: HostCall, label: str, outcome: str, detail: str, hint: str | None,
            status: int | None = None, body: str | None = None) -> ConnectorError:
    """A failed call: the error says what failed and how, nothing of the API's address or
    answer; those go to the span (``error_detail``, ``url``, ``response_body``)."""
    call.annotate(error_detail=detail)
    where = f"the request and the API's answer are in the trace: rf traces show {call.execution_id} --json"
    return ConnectorError(f"{label} failed: {outcome}", f"{hint}; {where}" if hint else where, status, body)


def _out_of_time(call: HostCall, label: str, request: str) -> ConnectorError:
    """A call cut short because the execution's own timeout came first."""
    outcome = "no answer before the execution's time ran out"
    call.annotate(error_detail=f"{request}: {outcome}")
    return ConnectorError(f"{label} failed: {outcome}",
                          f"raise timeout_s in agents/{call.agent}/agent.toml, or make the call faster")


def _diff(slug: str, production: Connector | None, staging: Connector | None,
          prepared: dict[str, Any] | None) -> ConnectorDiff:
    """What publishing ``connector:SLUG`` changes: production's resources become staging's.
    Production's settings stay; a new production instance gets ``prepared`` (else staging's)."""
    view = settings_view(slug, staging, production, prepared)
    before = shared_hash(production) if production else None
    if staging is None:
        after = None
    elif production is None:
        after = hash_content(creation_content(staging, prepared if prepared is not None else settings_of(staging)))
    else:
        after = shared_hash(staging)
    d = ConnectorDiff(slug=slug, production=before, staging=after, changed=before != after, summary="",
                      settings=view)
    if staging is None and production is None:
        d.summary = "no instance"
        return d
    if production is None:
        assert staging is not None
        d.resources = [ResourceChange(r.slug, "added") for r in staging.resources]
        chosen = prepared if prepared is not None else settings_of(staging)
        d.config = [FieldChange(f, None, v) for f, v in chosen.items() if v not in (None, {}, "")]
        where = (f"as prepared (base URL {chosen['base_url']})" if prepared is not None else
                 f"copied from staging, none were prepared (base URL {chosen['base_url']})")
        d.summary = f"new connector ({_plural(len(staging.resources), 'resource')}); production settings {where}"
        return d
    if staging is None:
        d.resources = [ResourceChange(r.slug, "removed") for r in production.resources]
        d.summary = "deleted in staging: publishing removes it from production"
        return d
    if production.kind != staging.kind:
        d.config.append(FieldChange("kind", production.kind, staging.kind))
    prod_res = {r.slug: r for r in production.resources}
    stag_res = {r.slug: r for r in staging.resources}
    for name in sorted(set(prod_res) | set(stag_res)):
        pr, sr = prod_res.get(name), stag_res.get(name)
        if pr is None:
            d.resources.append(ResourceChange(name, "added"))
        elif sr is None:
            d.resources.append(ResourceChange(name, "removed"))
        else:
            changes = [FieldChange(f, getattr(pr, f), getattr(sr, f)) for f in RESOURCE_LABELS
                       if getattr(pr, f) != getattr(sr, f)]
            if changes:
                d.resources.append(ResourceChange(name, "modified", changes))
    parts = []
    added = sum(1 for r in d.resources if r.status == "added")
    removed = sum(1 for r in d.resources if r.status == "removed")
    modified = sum(1 for r in d.resources if r.status == "modified")
    if added:
        parts.append(f"+{_plural(added, 'resource')}")
    if removed:
        parts.append(f"-{_plural(removed, 'resource')}")
    if modified:
        parts.append(f"{modified} modified" if parts else f"{_plural(modified, 'resource')} modified")
    parts += [f"{CONFIG_LABELS[ch.name]} changed" for ch in d.config]
    d.summary = ", ".join(parts) or "no changes"
    return d
