"""The service layer: every domain rule of rf lives here.

``Services`` is what both backends expose: ``LocalBackend`` calls it
in-process, the server calls it for ``HttpBackend``. The environment rules are
enforced here — whatever the surface, a mutation aimed at production that is
not a release is refused by :func:`require_staging`.

``Services`` is a facade over the domain services: plain classes whose
constructor names what they depend on (the shared
:class:`rf.services.base.ServiceContext`, the other services they call, or a
narrow protocol of one). The facade builds them in dependency order
(:meth:`Services.__init__`), wires what points back (each kind of release item
plugged into releases, the canary gate, the deploy checks, the host methods) and
exposes the methods listed in :data:`FACADE` by forwarding, so callers, the
server's routes (rf/api.py) and agent code's host calls reach them unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rf.models import require_staging
from rf.services.agents import AgentsService
from rf.services.base import ServiceContext, forward, forwarded
from rf.services.canary import CanaryService, RoutingCache
from rf.services.connectors import ConnectorsService
from rf.services.credentials import CredentialsService
from rf.services.datasources import DataSourcesService
from rf.services.eval_suites import EvalSuitesService
from rf.services.evals import EvalsService
from rf.services.keys import KeysService
from rf.services.knowledge import KnowledgeService
from rf.services.prompts import PromptsService
from rf.services.providers import ProvidersService
from rf.services.releases import AgentReleases, CommitUses, ReleaseHistory, ReleasesService
from rf.services.replay import ReplayService
from rf.services.resource_use import ResourceUses
from rf.services.retention import RetentionService
from rf.services.sessions import SessionsService
from rf.services.traces import TracesService
from rf.services.triggers import TriggersService
from rf.services.uploads import UploadsService
from rf.services.users import UsersService, guard_routes

if TYPE_CHECKING:
    from rf.config import Workspace
    from rf.runtime.pool import WorkerPool
    from rf.store import Store

class Services:
    """All of rf's domain operations over one store: the domain services, built in dependency
    order, and the methods listed in :data:`FACADE`, forwarded to them."""

    kind = "local"  #: which backend serves these calls ("http" on the client side of a server)

    def __init__(self, store: Store, workspace: Workspace | None, *, pool: WorkerPool | None = None,
                 server_url: str | None = None) -> None:
        ctx = self.ctx = ServiceContext(store, workspace, pool=pool, server_url=server_url)
        self.store = store
        self.workspace = workspace
        self.cache_dir = ctx.cache_dir
        # In dependency order: each service receives the ones it calls.
        self.users = UsersService(ctx)
        self.keys = KeysService(ctx)
        self.uploads = UploadsService(ctx)
        self.release_history = ReleaseHistory(ctx)
        self.routing = RoutingCache(store)
        self.agents = AgentsService(ctx, self.routing, self.release_history)
        self.sessions = SessionsService(ctx, self.release_history)
        self.traces = TracesService(ctx, self.release_history)
        self.retention = RetentionService(ctx)
        self.credentials = CredentialsService(ctx)
        self.providers = ProvidersService(ctx, self.credentials)
        uses = ResourceUses(store)
        self.data_sources = DataSourcesService(ctx, self.credentials, uses)
        self.knowledge = KnowledgeService(ctx, self.providers, uses)
        self.evals = EvalsService(ctx, self.agents, self.traces, self.providers)
        self.eval_suites = EvalSuitesService(ctx, self.agents)
        self.replays = ReplayService(ctx, self.agents, self.traces)
        self.commits = CommitUses(store)
        self.releases = ReleasesService(ctx, self.release_history, self.agents, self.commits, self.evals)
        self.prompts = PromptsService(ctx, self.releases, self.commits)
        self.connectors = ConnectorsService(ctx, self.credentials, self.releases)
        self.triggers = TriggersService(ctx, self.agents, self.releases)
        self.canary = CanaryService(ctx, self.routing, self.release_history, self.releases, self.connectors)
        # What needs a service built after it: each kind of release item plugged into releases
        # (in KINDS order), the canary gate of a publish, the checks a deploy runs, what agent
        # code may call.
        self.releases.plug_in("prompt", self.prompts)
        self.releases.plug_in("connector", self.connectors)
        self.releases.plug_in("agent", AgentReleases(store, self.agents, self.commits))
        self.releases.plug_in("trigger", self.triggers)
        self.releases.new_prompt_variables = self.prompts.new_variables
        self.releases.canary = self.canary
        self.agents.deploy_checks = [self.connectors.deploy_warnings, self.prompts.deploy_warnings]
        services = (self.users, self.keys, self.uploads, self.release_history, self.agents, self.sessions,
                    self.traces, self.retention, self.credentials, self.providers, self.data_sources,
                    self.knowledge, self.evals, self.eval_suites, self.replays, self.releases, self.prompts,
                    self.connectors, self.triggers, self.canary)
        # Every method that is a management route checks the caller's role (rf.services.users).
        for service in services:
            guard_routes(service, self.users)
        self.agents.host_services = tuple(s for s in services if s is not self.agents)

    @property
    def server_url(self) -> str | None:
        """The URL of the server serving this workspace (None: none, or not yet)."""
        return self.ctx.server_url

    @server_url.setter
    def server_url(self, url: str | None) -> None:
        self.ctx.server_url = url

    @property
    def pool(self) -> WorkerPool:
        """The worker pool, started on first use."""
        return self.ctx.pool

    def close(self) -> None:
        self.providers.close()
        self.connectors.close()
        self.ctx.close()

    # The methods of the domain services that the facade exposes (routes, what the server and
    # the CLI call, host methods): each forwards to ``self.<service>.<method>``.
    # ------------------------------------------------------------ agents (AgentsService)
    status = forward("agents", AgentsService.status)
    list_agents = forward("agents", AgentsService.list_agents)
    get_agent = forward("agents", AgentsService.get_agent)
    deployed_agents = forward("agents", AgentsService.deployed_agents)
    deploy = forward("agents", AgentsService.deploy)
    history = forward("agents", AgentsService.history)
    delete_agent = forward("agents", AgentsService.delete_agent)
    resolve_commit = forward("agents", AgentsService.resolve_commit)
    diff_agent = forward("agents", AgentsService.diff_agent)
    code_dir = forward("agents", AgentsService.code_dir)
    working_copy_dir = forward("agents", AgentsService.working_copy_dir)
    commit_tree = forward("agents", AgentsService.commit_tree)
    commit_files = forward("agents", AgentsService.commit_files)
    invoke = forward("agents", AgentsService.invoke)
    invoke_routed = forward("agents", AgentsService.invoke_routed)
    reachable_commit = forward("agents", AgentsService.reachable_commit)
    target = forward("agents", AgentsService.target)
    check_invoke = forward("agents", AgentsService.check_invoke)
    run_test = forward("agents", AgentsService.run_test)
    run_working_copy = forward("agents", AgentsService.run_working_copy)
    ainvoke = forward("agents", AgentsService.ainvoke)
    host_methods = forward("agents", AgentsService.host_methods)
    host_handler = forward("agents", AgentsService.host_handler)
    list_executions = forward("agents", AgentsService.list_executions)
    get_execution = forward("agents", AgentsService.get_execution)
    # ------------------------------------------------------------ prompts (PromptsService)
    create_prompt = forward("prompts", PromptsService.create_prompt)
    set_prompt = forward("prompts", PromptsService.set_prompt)
    list_prompts = forward("prompts", PromptsService.list_prompts)
    delete_prompt = forward("prompts", PromptsService.delete_prompt)
    get_prompt = forward("prompts", PromptsService.get_prompt)
    prompt_history = forward("prompts", PromptsService.prompt_history)
    diff_prompt = forward("prompts", PromptsService.diff_prompt)
    publish_prompt = forward("prompts", PromptsService.publish_prompt)
    render_prompt_version = forward("prompts", PromptsService.render_prompt_version)
    # ------------------------------------------------------------ connectors (ConnectorsService)
    list_connectors = forward("connectors", ConnectorsService.list_connectors)
    get_connector = forward("connectors", ConnectorsService.get_connector)
    connector_settings = forward("connectors", ConnectorsService.connector_settings)
    create_connector = forward("connectors", ConnectorsService.create_connector)
    edit_connector = forward("connectors", ConnectorsService.edit_connector)
    delete_connector = forward("connectors", ConnectorsService.delete_connector)
    add_resource = forward("connectors", ConnectorsService.add_resource)
    edit_resource = forward("connectors", ConnectorsService.edit_resource)
    remove_resource = forward("connectors", ConnectorsService.remove_resource)
    import_openapi = forward("connectors", ConnectorsService.import_openapi)
    refresh_connector = forward("connectors", ConnectorsService.refresh_connector)
    diff_connector = forward("connectors", ConnectorsService.diff_connector)
    publish_connector = forward("connectors", ConnectorsService.publish_connector)
    # ------------------------------------------------------------ triggers (TriggersService)
    list_triggers = forward("triggers", TriggersService.list_triggers)
    get_trigger = forward("triggers", TriggersService.get_trigger)
    create_trigger = forward("triggers", TriggersService.create_trigger)
    duplicate_trigger = forward("triggers", TriggersService.duplicate_trigger)
    set_trigger_enabled = forward("triggers", TriggersService.set_trigger_enabled)
    delete_trigger = forward("triggers", TriggersService.delete_trigger)
    edit_trigger = forward("triggers", TriggersService.edit_trigger)
    trigger_input = forward("triggers", TriggersService.trigger_input)
    fire_trigger = forward("triggers", TriggersService.fire_trigger)
    webhook = forward("triggers", TriggersService.webhook)
    # ------------------------------------------------------------ releases (ReleasesService, ReleaseHistory)
    release_items = forward("releases", ReleasesService.release_items)
    plan_release = forward("releases", ReleasesService.plan_release)
    publish_release = forward("releases", ReleasesService.publish_release)
    promote = forward("releases", ReleasesService.promote)
    plan_rollback = forward("releases", ReleasesService.plan_rollback)
    rollback_release = forward("releases", ReleasesService.rollback_release)
    list_releases = forward("release_history", ReleaseHistory.list_releases)
    get_release = forward("release_history", ReleaseHistory.get_release)
    # ------------------------------------------------------------ canary (CanaryService)
    canary_running = forward("canary", CanaryService.canary_running)
    canary_status = forward("canary", CanaryService.canary_status)
    check_canary = forward("canary", CanaryService.check_canary)
    set_canary_weight = forward("canary", CanaryService.set_canary_weight)
    promote_canary = forward("canary", CanaryService.promote_canary)
    abort_canary = forward("canary", CanaryService.abort_canary)
    # ------------------------------------------------------------ users (UsersService)
    actor_for_token = forward("users", UsersService.actor_for_token)
    whoami = forward("users", UsersService.whoami)
    list_users = forward("users", UsersService.list_users)
    add_user = forward("users", UsersService.add_user)
    remove_user = forward("users", UsersService.remove_user)
    set_user_role = forward("users", UsersService.set_user_role)
    create_token = forward("users", UsersService.create_token)
    list_tokens = forward("users", UsersService.list_tokens)
    revoke_token = forward("users", UsersService.revoke_token)
    required_approvals = forward("users", UsersService.required_approvals)
    plan_approvals = forward("users", UsersService.plan_approvals)
    approve_plan = forward("users", UsersService.approve_plan)
    list_audit = forward("users", UsersService.list_audit)
    # ------------------------------------------------------------ keys (KeysService)
    create_key = forward("keys", KeysService.create_key)
    list_keys = forward("keys", KeysService.list_keys)
    revoke_key = forward("keys", KeysService.revoke_key)
    has_endpoint_keys = forward("keys", KeysService.has_endpoint_keys)
    check_endpoint_key = forward("keys", KeysService.check_endpoint_key)
    # ------------------------------------------------------------ uploads (UploadsService)
    upload_chunk = forward("uploads", UploadsService.upload_chunk)
    take_upload = forward("uploads", UploadsService.take_upload)
    clear_uploads = forward("uploads", UploadsService.clear_uploads)
    max_upload_bytes = forward("uploads", UploadsService.max_upload_bytes)
    # ------------------------------------------------------------ sessions (SessionsService)
    list_sessions = forward("sessions", SessionsService.list_sessions)
    get_session = forward("sessions", SessionsService.get_session)
    list_memory = forward("sessions", SessionsService.list_memory)
    get_memory = forward("sessions", SessionsService.get_memory)
    delete_memory = forward("sessions", SessionsService.delete_memory)
    clear_memory = forward("sessions", SessionsService.clear_memory)
    # ------------------------------------------------------------ traces (TracesService)
    list_traces = forward("traces", TracesService.list_traces)
    get_trace = forward("traces", TracesService.get_trace)
    export_spans = forward("traces", TracesService.export_spans)
    # ------------------------------------------------------------ retention (RetentionService)
    gc = forward("retention", RetentionService.gc)
    apply_retention = forward("retention", RetentionService.apply_retention)
    # ------------------------------------------------------------ credentials (CredentialsService)
    set_credential = forward("credentials", CredentialsService.set_credential)
    get_credential = forward("credentials", CredentialsService.get_credential)
    list_credentials = forward("credentials", CredentialsService.list_credentials)
    delete_credential = forward("credentials", CredentialsService.delete_credential)
    credential_usage = forward("credentials", CredentialsService.credential_usage)
    credential_secret = forward("credentials", CredentialsService.credential_secret)
    # ------------------------------------------------------------ providers (ProvidersService)
    llm_settings = forward("providers", ProvidersService.llm_settings)
    list_providers = forward("providers", ProvidersService.list_providers)
    get_provider = forward("providers", ProvidersService.get_provider)
    add_provider = forward("providers", ProvidersService.add_provider)
    remove_provider = forward("providers", ProvidersService.remove_provider)
    set_default_provider = forward("providers", ProvidersService.set_default_provider)
    resolve_model = forward("providers", ProvidersService.resolve_model)
    test_provider = forward("providers", ProvidersService.test_provider)
    llm_chat = forward("providers", ProvidersService.llm_chat)
    # ------------------------------------------------------------ data_sources (DataSourcesService)
    list_data_sources = forward("data_sources", DataSourcesService.list_data_sources)
    get_data_source = forward("data_sources", DataSourcesService.get_data_source)
    add_data_source = forward("data_sources", DataSourcesService.add_data_source)
    remove_data_source = forward("data_sources", DataSourcesService.remove_data_source)
    query_data = forward("data_sources", DataSourcesService.query_data)
    data_query_host = forward("data_sources", DataSourcesService.data_query_host)
    # ------------------------------------------------------------ knowledge (KnowledgeService)
    list_kbs = forward("knowledge", KnowledgeService.list_kbs)
    get_kb = forward("knowledge", KnowledgeService.get_kb)
    kb_documents = forward("knowledge", KnowledgeService.kb_documents)
    create_kb = forward("knowledge", KnowledgeService.create_kb)
    delete_kb = forward("knowledge", KnowledgeService.delete_kb)
    kb_upload = forward("knowledge", KnowledgeService.kb_upload)
    kb_commit = forward("knowledge", KnowledgeService.kb_commit)
    kb_abort = forward("knowledge", KnowledgeService.kb_abort)
    kb_upload_piece = forward("knowledge", KnowledgeService.kb_upload_piece)
    kb_remove_document = forward("knowledge", KnowledgeService.kb_remove_document)
    set_kb_embedder = forward("knowledge", KnowledgeService.set_kb_embedder)
    search_kb = forward("knowledge", KnowledgeService.search_kb)
    kb_search_host = forward("knowledge", KnowledgeService.kb_search_host)
    # ------------------------------------------------------------ evals (EvalsService)
    run_eval = forward("evals", EvalsService.run_eval)
    list_eval_runs = forward("evals", EvalsService.list_eval_runs)
    get_eval_run = forward("evals", EvalsService.get_eval_run)
    # ------------------------------------------------------------ eval_suites (EvalSuitesService)
    eval_suite = forward("eval_suites", EvalSuitesService.eval_suite)
    # ------------------------------------------------------------ replays (ReplayService)
    replay = forward("replays", ReplayService.replay)


#: Per domain service: the facade's attribute holding it, its class, the methods forwarded to it.
FACADE: dict[str, tuple[type, tuple[str, ...]]] = forwarded(Services)

__all__ = ["FACADE", "Services", "require_staging"]
