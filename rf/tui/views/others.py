"""Triggers, knowledge bases, data sources: list + detail when this build's Backend offers them."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding, BindingType

from rf.tui.views.generic import ListView


class TriggersView(ListView):
    TITLE = "Triggers"
    KEY = "triggers"
    GROUP = "Build"
    REQUIRES = ("list_triggers",)
    LIST_METHOD = "list_triggers"
    PER_ENV = True
    NAME_FIELD = "id"
    COLUMNS = ("name", "kind", "agent", "enabled", "schedule", "next_fire_at", "url")
    EMPTY_TEXT = "No triggers in this environment — create one in staging: rf triggers create --agent AGENT --schedule CRON (or --webhook)"
    NOUN = "trigger"
    WRITE_ACTIONS = frozenset({"toggle_enabled"})
    BINDINGS: ClassVar[list[BindingType]] = [Binding("space", "toggle_enabled", "Enable/disable")]

    def action_toggle_enabled(self) -> None:
        if self.refuse_in_production():
            return
        item: Any = next((i for i in self.items if self.key_of(i) == self.place), None)
        if item is None:
            return
        enabled = not item.enabled
        self.call(lambda: self.backend.set_trigger_enabled(item.id, enabled), lambda _: self.reload(), group="toggle")


class KnowledgeView(ListView):
    TITLE = "Knowledge"
    KEY = "knowledge"
    GROUP = "Shared"
    REQUIRES = ("list_kbs",)
    LIST_METHOD = "list_kbs"
    COLUMNS = ("name", "embedder", "documents", "chunks", "description")
    EMPTY_TEXT = "No knowledge bases yet — create one with rf kb create NAME, then rf kb upload NAME FILES."
    NOUN = "knowledge base"


class DataSourcesView(ListView):
    TITLE = "Data sources"
    KEY = "data"
    GROUP = "Shared"
    REQUIRES = ("list_data_sources",)
    LIST_METHOD = "list_data_sources"
    COLUMNS = ("name", "kind", "location", "description")
    EMPTY_TEXT = "No data sources yet — add one with rf data add NAME …"
    NOUN = "data source"
