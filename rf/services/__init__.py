"""The service layer: every domain rule of rf lives here.

``Services`` is what both backends expose: ``LocalBackend`` calls it
in-process, the server calls it for ``HttpBackend``. The environment rules are
enforced here — whatever the surface, a mutation aimed at production that is
not a release is refused by :func:`require_staging`.

``Services`` is a facade over the domain services. Most domains are plain classes
whose constructor names what they depend on (the shared
:class:`rf.services.base.ServiceContext` and the other services they call); the
facade builds them in dependency order (:meth:`Services.__init__`) and exposes the
methods listed in :data:`FACADE` by forwarding, so callers, the server's routes
(rf/api.py) and agent code's host calls reach them unchanged. The domains not yet
split out (agents and executions, prompts, connectors, sessions, traces,
triggers, releases, canary, retention) are still mixed into the facade itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rf.models import require_staging
from rf.services.base import ServiceContext, forward, forwarded
from rf.services.canary import CanaryService
from rf.services.connectors import ConnectorsService
from rf.services.core import CoreServices
from rf.services.credentials import CredentialsService
from rf.services.datasources import DataSourcesService
from rf.services.eval_suites import EvalSuitesService
from rf.services.evals import EvalsService
from rf.services.keys import KeysService
from rf.services.knowledge import KnowledgeService
from rf.services.prompts import PromptsService
from rf.services.providers import ProvidersService
from rf.services.releases import ReleasesService
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

class Services(
    PromptsService,
    ConnectorsService,
    TriggersService,
    CanaryService,
    ReleasesService,
    CoreServices,
):
    """All of rf's domain operations over one store: the domain services (:data:`FACADE`)
    and the domains still mixed in (see each mixin)."""

    def __init__(self, store: Store, workspace: Workspace | None, *, pool: WorkerPool | None = None,
                 server_url: str | None = None) -> None:
        super().__init__(store, workspace, pool=pool, server_url=server_url)
        ctx: ServiceContext = self.ctx
        # In dependency order: each service receives the ones it calls.
        self.users = UsersService(ctx)
        self.keys = KeysService(ctx)
        self.uploads = UploadsService(ctx)
        # (releases are still this facade's own: ReleasesService)
        self.sessions = SessionsService(ctx, self)
        self.traces = TracesService(ctx, self)
        self.retention = RetentionService(ctx)
        self.credentials = CredentialsService(ctx)
        self.providers = ProvidersService(ctx, self.credentials)
        uses = ResourceUses(store)
        self.data_sources = DataSourcesService(ctx, self.credentials, uses)
        self.knowledge = KnowledgeService(ctx, self.providers, uses)
        # (agents and executions are still this facade's own: CoreServices)
        self.evals = EvalsService(ctx, self, self.traces, self.providers)
        self.eval_suites = EvalSuitesService(ctx, self)
        self.replays = ReplayService(ctx, self, self.traces)
        services = (self.users, self.keys, self.uploads, self.sessions, self.traces, self.retention,
                    self.credentials, self.providers, self.data_sources, self.knowledge, self.evals,
                    self.eval_suites, self.replays)
        # Every method that is a management route checks the caller's role (rf.services.users).
        for service in services:
            guard_routes(service, self.users)
        guard_routes(self, self.users)
        self.host_services = services  # (their @host_method's: what agent code reaches)

    def close(self) -> None:
        self.providers.close()
        super().close()

    # The methods of the domain services that the facade exposes (routes, what the server and
    # the CLI call, host methods): each forwards to ``self.<service>.<method>``.
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
