"""The dashboard's views, in sidebar order (grouped like ``rf --help``)."""

from __future__ import annotations

from rf.tui.views.agents import AgentsView
from rf.tui.views.audit import AuditView
from rf.tui.views.base import View
from rf.tui.views.connectors import ConnectorsView
from rf.tui.views.credentials import CredentialsView
from rf.tui.views.evals import EvalsView
from rf.tui.views.executions import ExecutionsView
from rf.tui.views.memory import MemoryView
from rf.tui.views.others import DataSourcesView, KnowledgeView, TriggersView
from rf.tui.views.prompts import PromptsView
from rf.tui.views.providers import ProvidersView
from rf.tui.views.releases import ReleasesView
from rf.tui.views.replay import ReplayView
from rf.tui.views.sessions import SessionsView
from rf.tui.views.traces import TracesView

#: Sidebar order; keys 1-9 and 0 go to the first ten.
VIEW_CLASSES: list[type[View]] = [
    AgentsView,
    PromptsView,
    ConnectorsView,
    TriggersView,
    ReleasesView,
    ExecutionsView,
    SessionsView,
    TracesView,
    MemoryView,
    EvalsView,  # key 0: after the first nine, whose keys people (and scripts) know
    ReplayView,  # no number key (the ten are taken): the sidebar, or ctrl+p "Go to Replay"
    CredentialsView,
    ProvidersView,
    KnowledgeView,
    DataSourcesView,
    AuditView,
]

__all__ = ["VIEW_CLASSES", "View"]
