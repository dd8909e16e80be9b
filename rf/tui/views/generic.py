"""A generic list + detail view over any ``list_*`` Backend method (models shown field by field)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from rf.tui import render
from rf.tui.format import one_line, plural, pretty_json, when
from rf.tui.views.base import View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table


class ListView(View):
    """Rows from ``LIST_METHOD`` (with ``env=`` when ``PER_ENV``); the highlighted one in full below."""

    LIST_METHOD: ClassVar[str] = ""
    PER_ENV: ClassVar[bool] = False
    NAME_FIELD: ClassVar[str] = "name"
    COLUMNS: ClassVar[tuple[str, ...]] = ("name",)
    EMPTY_TEXT: ClassVar[str] = "Nothing here yet."
    NOUN: ClassVar[str] = "item"

    def __init__(self) -> None:
        super().__init__()
        self.items: list[Any] = []
        self.place: str | None = None

    def compose_view(self) -> ComposeResult:
        table: DataTable[str | Text] = Table(id=f"{self.KEY}-table", cursor_type="row", zebra_stripes=True)
        for column in self.COLUMNS:
            table.add_column(column.replace("_", " "), key=column)
        yield table
        yield Empty(self.EMPTY_TEXT, id=f"{self.KEY}-empty")
        with VerticalScroll(classes="detail", id=f"{self.KEY}-detail"):
            yield Static("", id=f"{self.KEY}-detail-body")

    def reload(self) -> None:
        env = self.env

        def fetch() -> list[Any]:
            method = self.dynamic(self.LIST_METHOD)
            return list(method(env=env) if self.PER_ENV else method())

        self.call(fetch, self.show_items)

    def key_of(self, item: Any) -> str:
        return str(getattr(item, self.NAME_FIELD, "") if not isinstance(item, dict) else item.get(self.NAME_FIELD))

    def cell(self, item: Any, column: str) -> str | Text:
        value = item.get(column) if isinstance(item, dict) else getattr(item, column, None)
        if value is None:
            return Text("—", style="dim")
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, list):
            return one_line(", ".join(str(v) for v in value) or "—", 30)
        if column.endswith("_at") and isinstance(value, str):
            return when(value)
        return Text(one_line(value, 30))

    def show_items(self, items: list[Any]) -> None:
        table = self.query_one(f"#{self.KEY}-table", DataTable)
        keep = self.place or selected_key(table)
        index = table.cursor_row
        self.items = items
        table.clear()
        for item in items:
            table.add_row(*(self.cell(item, c) for c in self.COLUMNS), key=self.key_of(item))
        restore_cursor(table, keep, index)
        self.query_one(f"#{self.KEY}-empty", Empty).set_class(not items, "-shown")
        table.display = bool(items)
        count = plural(len(items), self.NOUN)
        self.set_subtitle(f"{count} in {self.env}" if self.PER_ENV else f"{count} · shared by both environments")
        self.query_one(f"#{self.KEY}-detail", VerticalScroll).display = bool(items)
        self.show_detail()
        self.painted()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is None:
            return
        self.place = str(event.row_key.value)
        self.show_detail()

    def show_detail(self) -> None:
        item = next((i for i in self.items if self.key_of(i) == self.place), self.items[0] if self.items else None)
        self.query_one(f"#{self.KEY}-detail-body", Static).update(self.render_item(item) if item is not None else "")

    def render_item(self, item: Any) -> RenderableType:
        data = dataclasses.asdict(item) if dataclasses.is_dataclass(item) and not isinstance(item, type) else item
        table = render.grid()
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        if isinstance(data, dict):
            for key, value in data.items():
                table.add_row(key.replace("_", " "), Text(pretty_json(value) if value is not None else "—"))
        return table
