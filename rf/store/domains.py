"""The store's domains in one base: every SQL mixin (rf/store/<domain>.py) and the narrow
repository views (rf.store.interfaces) that services see. Both stores build on it: the DuckDB
``Store`` (db.py) and ``PgStore`` (pg.py, whose overrides come first)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rf.store.agents import AgentsMixin
from rf.store.canary import CanaryMixin
from rf.store.connectors import ConnectorsMixin
from rf.store.credentials import CredentialsMixin
from rf.store.datasources import DataSourcesMixin
from rf.store.evals import EvalsMixin
from rf.store.executions import ExecutionsMixin
from rf.store.keys import KeysMixin
from rf.store.knowledge import KnowledgeMixin
from rf.store.prompts import PromptsMixin
from rf.store.providers import ProvidersMixin
from rf.store.releases import ReleasesMixin
from rf.store.retention import RetentionMixin
from rf.store.sessions import SessionsMixin
from rf.store.traces import TracesMixin
from rf.store.triggers import TriggersMixin
from rf.store.users import UsersMixin

if TYPE_CHECKING:
    import duckdb

    from rf.store.interfaces import (
        AgentsRepository,
        ConnectorsRepository,
        CredentialsRepository,
        DataSourcesRepository,
        EvalsRepository,
        ExecutionsRepository,
        KeysRepository,
        KnowledgeRepository,
        PromptsRepository,
        ProvidersRepository,
        ReleasesRepository,
        RetentionRepository,
        SessionsRepository,
        TriggersRepository,
        UsersRepository,
    )


class StoreDomains(
    AgentsMixin,
    ExecutionsMixin,
    ReleasesMixin,
    PromptsMixin,
    ConnectorsMixin,
    CredentialsMixin,
    ProvidersMixin,
    SessionsMixin,
    TracesMixin,
    TriggersMixin,
    KnowledgeMixin,
    DataSourcesMixin,
    KeysMixin,
    RetentionMixin,
    UsersMixin,
    EvalsMixin,
    CanaryMixin,
):
    """Every domain's SQL, and one narrow view per domain for the services."""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:  # each store's own (db.py, pg.py)
        raise NotImplementedError
        yield  # pragma: no cover

    def flush(self) -> None:
        """Make every queued high-volume row visible to reads (each store's writer)."""
        raise NotImplementedError

    # ------------------------------------------------------------ repositories (rf.store.interfaces)
    # One narrow view per domain. Each is this store for now (its mixins implement them all);
    # the return type is what services see, and mypy checks that the store satisfies it.
    @property
    def agents(self) -> AgentsRepository:
        return self

    @property
    def prompts(self) -> PromptsRepository:
        return self

    @property
    def connectors(self) -> ConnectorsRepository:
        return self

    @property
    def triggers(self) -> TriggersRepository:
        return self

    @property
    def releases(self) -> ReleasesRepository:
        return self

    @property
    def executions(self) -> ExecutionsRepository:
        return self

    @property
    def sessions(self) -> SessionsRepository:
        return self

    @property
    def knowledge(self) -> KnowledgeRepository:
        return self

    @property
    def users(self) -> UsersRepository:
        return self

    @property
    def credentials(self) -> CredentialsRepository:
        return self

    @property
    def providers(self) -> ProvidersRepository:
        return self

    @property
    def keys(self) -> KeysRepository:
        return self

    @property
    def datasources(self) -> DataSourcesRepository:
        return self

    @property
    def evals(self) -> EvalsRepository:
        return self

    @property
    def retention(self) -> RetentionRepository:
        return self

