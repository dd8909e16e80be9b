"""The management API as a table: one row per Backend method.

Both sides read this table: the server mounts one route per row under
``/api`` and calls the :class:`~rf.services.Services` method of the same name;
:class:`~rf.client.HttpBackend` turns a method call into that request and the
JSON answer back into models. One table means the two backends cannot drift
apart (and the contract tests prove it).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, replace
from typing import Any

from rf import models


@dataclass(frozen=True)
class Route:
    name: str  #: Services / Backend method name
    method: str  #: HTTP method
    path: str  #: path template under /api, e.g. "/agents/{name}"
    returns: Any = None  #: a model class, [ModelClass] for a list, or None for plain JSON
    binary: tuple[str, ...] = ()  #: params holding {path: bytes} maps (sent base64)
    summary: str = ""
    #: Services params the server sets itself: a request that names one is refused (400),
    #: on top of :data:`INTERNAL_PARAMS`, which no route takes from a request.
    internal: tuple[str, ...] = ()
    #: The body may be sent ahead in chunks (``upload_chunk``, ``POST /api/uploads``) and the route
    #: called with ``{"upload": ID}`` instead: for bodies larger than ``[server] max_body_bytes``.
    accepts_upload: bool = False
    #: The least role that may call it (viewer < developer < publisher < admin), checked in the
    #: service layer (rf.services.users.guard_routes). Filled from the tables at the end of this
    #: module; a route none of them names is admin-only (fail closed) and fails a test.
    role: str = ""
    #: A successful call is recorded in the audit log with its actor (``rf audit``).
    audit: bool = False

    def path_params(self) -> tuple[str, ...]:
        """The ``{name}`` parameters of the path, in order."""
        return tuple(re.findall(r"{(\w+)}", self.path))

    def server_params(self) -> frozenset[str]:
        """Every parameter of the Services method that never comes from a request."""
        return INTERNAL_PARAMS | frozenset(self.internal)


#: Parameters of Services methods that no request may set, on any route: Python
#: objects of the server process (a chunk callback, an agent's host call), never
#: JSON values. A route adds its own in ``Route.internal``.
INTERNAL_PARAMS: frozenset[str] = frozenset({"on_chunk", "call", "author", "tape"})
#: (``author`` is the authenticated caller's name: the server sets it from the token; ``tape``,
#: recorded connector answers, rf.evals.tape, is set by the replay and eval services only.)


ROUTES: list[Route] = [
    Route("status", "GET", "/status", models.Status, summary="Workspace, server and agents at a glance"),
    Route("list_agents", "GET", "/agents", [models.Agent], summary="List agents with both environments' commits"),
    Route("get_agent", "GET", "/agents/{name}", models.Agent, summary="One agent"),
    Route("history", "GET", "/agents/{name}/history", [models.Commit], summary="Commits of an agent, newest first"),
    Route("diff_agent", "GET", "/agents/{name}/diff", models.AgentDiff, summary="Per-file diff production → staging"),
    Route("deploy", "POST", "/agents/{name}/deploy", models.DeployResult, binary=("files",), accepts_upload=True,
          summary="Snapshot files into a commit and point staging at it"),
    Route("promote", "POST", "/agents/{name}/promote", models.PromoteResult,
          summary="Point production at staging's commit: the release plan of agent:NAME (dependency "
                  "warnings, with_deps, strict, plan_id), recorded as a release"),
    Route("delete_agent", "DELETE", "/agents/{name}", models.DeleteResult,
          summary="Delete an agent from staging at once (production's removal is a release item)"),
    Route("run_test", "POST", "/agents/{name}/test", models.Execution, binary=("files",), accepts_upload=True,
          summary="Run working-copy files in staging mode (rf test)"),
    # `source` is the execution's provenance ("invoke", "endpoint", "openai", "mcp", "trigger:ID", "test"):
    # the server records how a run started, a caller cannot claim another origin.
    Route("invoke", "POST", "/invoke/{env}/{name}", models.Execution, internal=("source",),
          summary="Run an environment's deployed agent and record the execution"),
    Route("run_eval", "POST", "/agents/{name}/eval", models.EvalResult, binary=("files",), accepts_upload=True,
          summary="Run an agent's eval suite against an environment's commit (or the working copy: files), "
                  "each case an execution with source eval; the cases' scores"),
    Route("replay", "POST", "/agents/{name}/replay", models.ReplayResult,
          summary="Run an agent's recorded production executions again on staging's state (source replay), "
                  "connector calls answered from their recordings; per execution the status and output "
                  "changes, and a summary (same / changed / newly failing / fixed)"),
    Route("list_eval_runs", "GET", "/evals", [models.EvalResult],
          summary="Stored eval runs, newest first (totals without cases; filter by agent and env)"),
    Route("get_eval_run", "GET", "/evals/{run_id}", models.EvalResult, summary="One stored eval run, every case"),
    Route("eval_suite", "GET", "/agents/{name}/evals", models.EvalSuite,
          summary="An agent's eval suite as a commit holds it (the environment's, or a given commit's): "
                  "each case's inputs and expectations"),
    Route("list_executions", "GET", "/executions", [models.Execution], summary="Executions of one environment"),
    Route("get_execution", "GET", "/executions/{execution_id}", models.Execution, summary="One execution"),
]

# One list per capability; each is filled by the module that implements it.
PROMPT_ROUTES: list[Route] = [
    Route("list_prompts", "GET", "/prompts", [models.Prompt],
          summary="Prompts with their draft (staging) and published (production) versions"),
    Route("create_prompt", "POST", "/prompts", models.PromptSaveResult,
          summary="Create a prompt: version 1 becomes the draft (staging only)"),
    Route("get_prompt", "GET", "/prompts/{name}", models.PromptVersion,
          summary="The version an environment sees (draft in staging, published in production), or version N"),
    Route("set_prompt", "POST", "/prompts/{name}/versions", models.PromptSaveResult,
          summary="Save a new draft version (staging only; identical text creates nothing)"),
    Route("prompt_history", "GET", "/prompts/{name}/versions", [models.PromptVersion],
          summary="Every version of a prompt, newest first"),
    Route("diff_prompt", "GET", "/prompts/{name}/diff", models.PromptDiff,
          summary="Published vs draft text"),
    Route("publish_prompt", "POST", "/prompts/{name}/publish", models.PromptPublishResult,
          summary="Point production at the draft (a one-item release)"),
    Route("delete_prompt", "DELETE", "/prompts/{name}", models.DeleteResult,
          summary="Delete (archive) a prompt in staging at once; versions stay (production's removal "
                  "is a release item)"),
]
CONNECTOR_ROUTES: list[Route] = [
    Route("list_connectors", "GET", "/connectors", [models.Connector],
          summary="Connector instances of one environment, with their resources"),
    Route("get_connector", "GET", "/connectors/{slug}", models.Connector,
          summary="One connector instance (credential names only, never values)"),
    Route("create_connector", "POST", "/connectors/{slug}", models.Connector,
          summary="Create the staging instance of a connector (kind mcp: its resources are the MCP "
                  "server's tools)"),
    Route("edit_connector", "PATCH", "/connectors/{slug}", models.Connector,
          summary="Change staging's settings, or prepare production's (target=production: a release item)"),
    Route("delete_connector", "DELETE", "/connectors/{slug}", models.Connector,
          summary="Delete the staging instance (production keeps its own until a publish)"),
    Route("add_resource", "POST", "/connectors/{slug}/resources/{resource}", models.Connector,
          summary="Add a resource to the staging instance"),
    Route("edit_resource", "PATCH", "/connectors/{slug}/resources/{resource}", models.Connector,
          summary="Change a resource of the staging instance"),
    Route("remove_resource", "DELETE", "/connectors/{slug}/resources/{resource}", models.Connector,
          summary="Remove a resource from the staging instance"),
    Route("import_openapi", "POST", "/connectors/{slug}/import-openapi", models.OpenAPIImportResult,
          accepts_upload=True,
          summary="Add resources from an OpenAPI 3 document (JSON or YAML) to the staging instance"),
    Route("refresh_connector", "POST", "/connectors/{slug}/refresh", models.ConnectorRefreshResult,
          summary="MCP connector: make the staging resources the tools its staging MCP server lists now"),
    Route("diff_connector", "GET", "/connectors/{slug}/diff", models.ConnectorDiff,
          summary="Production vs staging: config changes and resources added/removed/modified"),
    Route("publish_connector", "POST", "/connectors/{slug}/publish", models.ConnectorPublishResult,
          summary="Publish the staging resources to production (a one-item release; settings stay)"),
    Route("connector_settings", "GET", "/connectors/{slug}/settings", models.ConnectorSettings,
          summary="Settings per environment, and the production settings prepared in staging"),
]
CREDENTIAL_ROUTES: list[Route] = [
    Route("list_credentials", "GET", "/credentials", [models.Credential],
          summary="Credentials (shared): where each value is stored and who uses it — never the value"),
    Route("get_credential", "GET", "/credentials/{name}", models.Credential, summary="One credential's metadata"),
    Route("set_credential", "POST", "/credentials/{name}", models.Credential,
          summary="Create or rotate a credential (affects production users at once)"),
    Route("delete_credential", "DELETE", "/credentials/{name}", models.Credential,
          summary="Delete a credential and its stored value"),
    Route("credential_usage", "GET", "/credentials/{name}/usage", models.CredentialUsage,
          summary="Connector instances (per environment) and providers that use a credential"),
]
PROVIDER_ROUTES: list[Route] = [
    Route("list_providers", "GET", "/providers", [models.Provider],
          summary="LLM providers (shared): the built-in mock, the stored ones, the default marked"),
    Route("get_provider", "GET", "/providers/{name}", models.Provider, summary="One LLM provider"),
    Route("add_provider", "POST", "/providers", models.ProviderChange,
          summary="Add an LLM provider (shared: production can use it at once)"),
    Route("remove_provider", "DELETE", "/providers/{name}", models.ProviderChange,
          summary="Remove an LLM provider (refused for the default; force when agents use it)"),
    Route("set_default_provider", "POST", "/providers/{name}/default", models.ProviderChange,
          summary="Make a provider the default of calls that name none (rf.toml [llm] default)"),
    Route("test_provider", "POST", "/providers/{name}/test", models.ProviderTest,
          summary="One real round trip to a provider: reply, model, latency"),
]
SESSION_ROUTES: list[Route] = [
    Route("list_sessions", "GET", "/sessions", [models.SessionSummary],
          summary="Sessions (threads) of one environment, most recently active first"),
    Route("get_session", "GET", "/sessions/{session_id}", models.SessionThread,
          summary="One session's messages, oldest first"),
    # Memory keys are arbitrary strings: they travel in JSON bodies (POST), never
    # in paths or query strings, so nothing is re-typed or re-encoded on the way.
    Route("list_memory", "POST", "/memory/list", [models.MemoryItem],
          summary="Memory keys of one environment (read-only)"),
    Route("get_memory", "POST", "/memory/get", models.MemoryItem, summary="One memory key (read-only)"),
    Route("delete_memory", "POST", "/memory/delete", models.MemoryChange,
          summary="Delete a staging memory key (production is read-only)"),
    Route("clear_memory", "POST", "/memory/clear", models.MemoryChange,
          summary="Delete staging memory keys under a prefix (production is read-only)"),
]
TRACE_ROUTES: list[Route] = [
    Route("list_traces", "GET", "/traces", [models.TraceSummary], summary="Traces of one environment, newest first"),
    Route("get_trace", "GET", "/traces/{execution_id}", models.Trace, summary="The span tree of one execution"),
    Route("export_spans", "GET", "/spans", [models.Span], summary="Spans of one environment, oldest first"),
]
TRIGGER_ROUTES: list[Route] = [
    Route("list_triggers", "GET", "/triggers", [models.Trigger], summary="Triggers of one environment"),
    Route("get_trigger", "GET", "/triggers/{trigger_id}", models.Trigger, summary="One trigger"),
    Route("create_trigger", "POST", "/triggers", models.Trigger, summary="Create a trigger (staging)"),
    Route("duplicate_trigger", "POST", "/triggers/{trigger_id}/duplicate", models.Trigger,
          summary="Copy a trigger to the other environment (a production copy is staged for release)"),
    Route("set_trigger_enabled", "POST", "/triggers/{trigger_id}/enabled", models.Trigger,
          summary="Enable or disable a staging trigger"),
    Route("delete_trigger", "DELETE", "/triggers/{trigger_id}", models.TriggerChangeResult,
          summary="Delete a staging trigger (or an unpublished production copy) at once; stage a live production "
                  "trigger's removal (a release item), or publish it at once as a one-item release (now)"),
    Route("fire_trigger", "POST", "/triggers/{trigger_id}/fire", models.Execution, summary="Run a trigger once now"),
    Route("edit_trigger", "PATCH", "/triggers/{trigger_id}", models.TriggerChangeResult,
          summary="Change a staging trigger; stage a live production trigger's change (a release item), "
                  "or publish it at once as a one-item release (now)"),
]
KB_ROUTES: list[Route] = [
    Route("list_kbs", "GET", "/kb", [models.KnowledgeBase], summary="Knowledge bases (shared by both environments)"),
    Route("get_kb", "GET", "/kb/{name}", models.KnowledgeBase, summary="One knowledge base and its embedder"),
    Route("create_kb", "POST", "/kb", models.KBChange, summary="Create a knowledge base (shared)"),
    Route("delete_kb", "DELETE", "/kb/{name}", models.KBChange,
          summary="Delete a knowledge base and its documents (affects production at once)"),
    Route("kb_documents", "GET", "/kb/{name}/documents", [models.KBDocument], summary="Documents of a knowledge base"),
    Route("kb_upload", "POST", "/kb/{name}/upload", models.KBUploadResult, binary=("files",),
          summary="Extract, chunk, embed and stage files (committed at once without a batch)"),
    Route("kb_upload_piece", "POST", "/kb/{name}/pieces", None, binary=("files",),
          summary="One piece of a file too large for one request"),
    Route("kb_commit", "POST", "/kb/{name}/commit", models.KBUploadResult,
          summary="Make an upload batch live atomically"),
    Route("kb_abort", "POST", "/kb/{name}/abort", None, summary="Drop an upload batch"),
    Route("kb_remove_document", "POST", "/kb/{name}/remove-document", models.KBChange,
          summary="Remove one document"),
    Route("set_kb_embedder", "POST", "/kb/{name}/embedder", models.KBChange,
          summary="Change the embedder (re-embeds every chunk)"),
    Route("search_kb", "POST", "/kb/{name}/search", models.KBSearchResult,
          summary="Hybrid search: embeddings + BM25 + metadata filters"),
]
DATA_ROUTES: list[Route] = [
    Route("list_data_sources", "GET", "/data", [models.DataSource], summary="Data sources (shared)"),
    Route("get_data_source", "GET", "/data/{name}", models.DataSource, summary="One data source and its columns"),
    Route("add_data_source", "POST", "/data", models.DataSourceChange,
          summary="Register a file, DuckDB file or PostgreSQL database (checked first)"),
    Route("remove_data_source", "DELETE", "/data/{name}", models.DataSourceChange, summary="Forget a data source"),
    Route("query_data", "POST", "/data/{name}/query", models.DataQueryResult,
          summary="One read-only SQL statement, with a row limit and a timeout"),
]
RELEASE_ROUTES: list[Route] = [
    Route("release_items", "GET", "/releases/pending", [models.ReleaseItem],
          summary="Every difference between staging and production"),
    Route("plan_release", "POST", "/releases/plan", models.ReleasePlan,
          summary="The exact changes a publish would make, with a plan id"),
    Route("publish_release", "POST", "/releases/publish", models.Release,
          summary="Publish items atomically (refused if --plan is stale)"),
    Route("list_releases", "GET", "/releases", [models.Release], summary="Release history, newest first"),
    Route("get_release", "GET", "/releases/{release_id}", models.Release, summary="One release"),
    Route("plan_rollback", "POST", "/releases/{release_id}/rollback-plan", models.ReleasePlan,
          summary="What rolling a release back would publish"),
    Route("rollback_release", "POST", "/releases/{release_id}/rollback", models.Release,
          summary="Return production to its state before a release (a new release)"),
    # A canary release (publish_release with canary=PERCENT starts one): see rf.services.canary.
    Route("canary_status", "GET", "/releases/canary", models.Canary,
          summary="The running canary (else the newest): per arm executions, failures, failure rate, p50/p95 "
                  "duration; the failure-rate difference with its 95 % interval and a verdict"),
    Route("set_canary_weight", "POST", "/releases/canary/weight", models.Canary,
          summary="Change the running canary's share of production traffic (recorded in the history)"),
    Route("promote_canary", "POST", "/releases/canary/promote", models.Release,
          summary="Make the running canary the whole of production (a release of kind canary-promote)"),
    Route("abort_canary", "POST", "/releases/canary/abort", models.Release,
          summary="Send all production traffic back to stable at once (recorded, with the per-arm figures)"),
]

KEY_ROUTES: list[Route] = [
    Route("list_keys", "GET", "/keys", [models.EndpointKey],
          summary="Endpoint keys (metadata only), of one environment or both"),
    Route("create_key", "POST", "/keys", models.KeyCreated,
          summary="Create an endpoint key for one environment (the key is in this answer only)"),
    Route("revoke_key", "POST", "/keys/{key}/revoke", models.EndpointKey,
          summary="Revoke an endpoint key by id or name"),
]

MAINTENANCE_ROUTES: list[Route] = [
    Route("gc", "POST", "/gc", models.GcResult,
          summary="Delete execution history beyond the retention ([retention] in rf.toml), old unpublished "
                  "plans, unreachable commits and blobs, stale working copies (dry_run: only report)"),
]

ROUTES += PROMPT_ROUTES + CONNECTOR_ROUTES + CREDENTIAL_ROUTES + PROVIDER_ROUTES + SESSION_ROUTES + TRACE_ROUTES
ROUTES += TRIGGER_ROUTES + RELEASE_ROUTES + KB_ROUTES + DATA_ROUTES + KEY_ROUTES + MAINTENANCE_ROUTES
#: A request body too large for one request, sent ahead (see rf.services.uploads).
UPLOAD_ROUTES: list[Route] = [
    Route("upload_chunk", "POST", "/uploads", None,
          summary="Append one chunk (base64 data at offset) to an upload: the body of a later request to a "
                  "route that accepts {\"upload\": ID}; answers {upload, received, total, complete}"),
]
ROUTES += UPLOAD_ROUTES

#: Users, roles, personal tokens, approvals and the audit log (rf.services.users).
USER_ROUTES: list[Route] = [
    Route("whoami", "GET", "/whoami", models.Whoami, summary="The caller: the name its changes are recorded "
          "under, and its role"),
    Route("list_users", "GET", "/users", [models.User], summary="Users and their roles (the owner first)"),
    Route("add_user", "POST", "/users", models.UserCreated,
          summary="Add a user with a role; the answer holds their first personal token (shown once)"),
    Route("remove_user", "DELETE", "/users/{name}", models.User,
          summary="Remove a user (their tokens stop working at once)"),
    Route("set_user_role", "POST", "/users/{name}/role", models.User, summary="Change a user's role"),
    Route("list_tokens", "GET", "/tokens", [models.UserToken],
          summary="Personal tokens (metadata only): yours, a user's or everyone's (admins)"),
    Route("create_token", "POST", "/tokens", models.TokenCreated,
          summary="Create a personal token (the token is in this answer only)"),
    Route("revoke_token", "POST", "/tokens/{token}/revoke", models.UserToken,
          summary="Revoke a personal token by id (or by name, among your own)"),
    Route("list_audit", "GET", "/audit", [models.AuditEntry],
          summary="The audit log, newest first: deploys, releases, approvals, credentials, users, tokens"),
    Route("plan_approvals", "GET", "/releases/plans/{plan_id}/approvals", models.PlanApprovals,
          summary="A release plan's approvals and how many a publish needs ([releases] approvals)"),
    Route("approve_plan", "POST", "/releases/plans/{plan_id}/approve", models.PlanApprovals,
          summary="Approve a release plan (publishers other than its author)"),
]
ROUTES += USER_ROUTES

#: Who may call what. viewer: reads. developer: every staging edit, deploy, test, eval, runs.
#: publisher: plans, approvals, publishes, promotes, rollbacks (and a trigger change --now).
#: admin: users, credentials, providers, data sources, endpoint keys, maintenance.
#: Every GET route is a viewer's; the POST/PATCH/DELETE routes are named here.
READ_BODY_ROUTES = frozenset({"list_memory", "get_memory", "search_kb", "query_data", "create_token", "revoke_token"})
DEVELOPER_ROUTES = frozenset({
    "deploy", "delete_agent", "run_test", "invoke", "run_eval", "replay",
    "create_prompt", "set_prompt", "delete_prompt",
    "create_connector", "edit_connector", "delete_connector", "add_resource", "edit_resource", "remove_resource",
    "import_openapi", "refresh_connector", "delete_memory", "clear_memory",
    "create_trigger", "duplicate_trigger", "set_trigger_enabled", "delete_trigger", "fire_trigger", "edit_trigger",
    "create_kb", "delete_kb", "kb_upload", "kb_upload_piece", "kb_commit", "kb_abort", "kb_remove_document",
    "set_kb_embedder", "test_provider", "upload_chunk",
})
PUBLISHER_ROUTES = frozenset({"promote", "publish_prompt", "publish_connector", "plan_release", "publish_release",
                              "plan_rollback", "rollback_release", "approve_plan",
                              "set_canary_weight", "promote_canary", "abort_canary"})
ADMIN_ROUTES = frozenset({"set_credential", "delete_credential", "add_provider", "remove_provider",
                          "set_default_provider", "add_data_source", "remove_data_source", "create_key",
                          "revoke_key", "gc", "add_user", "remove_user", "set_user_role"})
#: Recorded in the audit log with their actor.
AUDITED = frozenset({"deploy", "delete_agent", "promote", "publish_prompt", "publish_connector", "publish_release",
                     "rollback_release", "approve_plan", "set_canary_weight", "promote_canary", "abort_canary", "set_credential", "delete_credential", "add_provider",
                     "remove_provider", "set_default_provider", "add_data_source", "remove_data_source",
                     "create_key", "revoke_key", "gc", "add_user", "remove_user", "set_user_role", "create_token",
                     "revoke_token"})


def _role_of(r: Route) -> str:
    if r.role:
        return r.role
    if r.method == "GET" or r.name in READ_BODY_ROUTES:
        return "viewer"
    for role, names in (("developer", DEVELOPER_ROUTES), ("publisher", PUBLISHER_ROUTES), ("admin", ADMIN_ROUTES)):
        if r.name in names:
            return role
    return "admin"  # (unclassified: fail closed; tests/test_users_roles.py names it)


ROUTES[:] = [replace(r, role=_role_of(r), audit=r.name in AUDITED) for r in ROUTES]

BY_NAME = {r.name: r for r in ROUTES}


def encode_files(files: dict[str, bytes]) -> dict[str, str]:
    return {path: base64.b64encode(data).decode("ascii") for path, data in files.items()}


def decode_files(files: Any, name: str = "files") -> dict[str, bytes]:
    from rf.errors import UsageError

    if not isinstance(files, dict):
        raise UsageError(f"{name} must be an object of {{path: base64}}")
    out = {}
    for path, data in files.items():
        try:
            out[str(path)] = base64.b64decode(data, validate=True)
        except (ValueError, TypeError):
            raise UsageError(f"{name}[{str(path)!r}] is not base64-encoded") from None
    return out


def decode_result(route: Route, data: Any) -> Any:
    if route.returns is None:
        return data
    if isinstance(route.returns, list):
        return [models.from_dict(route.returns[0], item) for item in data]
    return models.from_dict(route.returns, data)
