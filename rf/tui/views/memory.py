"""Memory: keys and values of this environment's namespace (staging keys can be deleted)."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Static

from rf.models import MemoryItem
from rf.tui import render
from rf.tui.format import ago, one_line, plural, when
from rf.tui.modals import ConfirmModal
from rf.tui.views.base import View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table


class MemoryView(View):
    TITLE = "Memory"
    KEY = "memory"
    GROUP = "Observe"
    LIVE = True
    REQUIRES = ("list_memory",)
    WRITE_ACTIONS = frozenset({"delete"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Filter by prefix", key_display="/"),
        Binding("delete", "delete", "Delete key", key_display="del"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.items: list[MemoryItem] = []
        self.place: str | None = None
        self.prefix = ""

    def compose_view(self) -> ComposeResult:
        yield Input(placeholder="key prefix (enter to filter)", id="memory-prefix", compact=True)
        table: DataTable[str | Text] = Table(id="memory-table", cursor_type="row", zebra_stripes=True)
        for label in ("key", "value", "size", "agent", "updated"):
            table.add_column(label, key=label)
        yield table
        yield Empty("", id="memory-empty")
        with VerticalScroll(classes="detail"):
            yield Static("", id="memory-detail")

    def reload(self) -> None:
        env, prefix = self.env, self.prefix
        self.call(lambda: self.backend.list_memory(env=env, prefix=prefix, limit=1000), self.show_items)

    def show_items(self, items: list[MemoryItem]) -> None:
        table = self.query_one("#memory-table", DataTable)
        changed = [(i.key, i.updated_at) for i in items] != [
            (i.key, i.updated_at) for i in self.items
        ] or self.loaded_env != self.env
        self.items = items
        if changed:
            keep = self.place or selected_key(table)
            index = table.cursor_row
            now = self.now()
            table.clear()
            for i in items:
                table.add_row(
                    Text(one_line(i.key, 30), style="bold"),
                    Text(one_line(i.value, 40)),
                    f"{i.size} B",
                    Text(i.agent or "—"),
                    ago(i.updated_at, now),
                    key=i.key,
                )
            restore_cursor(table, keep, index)
        empty = self.query_one("#memory-empty", Empty)
        empty.update(
            f"No memory keys in {self.env}"
            + (f" under {self.prefix!r}" if self.prefix else "")
            + " — agents write them with ctx.memory.set(KEY, VALUE)."
        )
        empty.set_class(not items, "-shown")
        table.display = bool(items)
        self.set_subtitle(f"{plural(len(items), 'key')} in the {self.env}: namespace")
        self.show_detail()
        self.painted()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.prefix = event.value.strip()
        self.reload()
        self.query_one("#memory-table", DataTable).focus()

    def action_search(self) -> None:
        self.query_one("#memory-prefix", Input).focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.place = str(event.row_key.value)
            self.show_detail()

    def selected(self) -> MemoryItem | None:
        key = self.place or selected_key(self.query_one("#memory-table", DataTable))
        return next((i for i in self.items if i.key == key), None)

    def show_detail(self) -> None:
        item = self.selected()
        self.query_one("#memory-detail", Static).update(self.render_item(item) if item is not None else "")

    def render_item(self, item: MemoryItem) -> RenderableType:
        head = Text.assemble(
            (item.key, "bold"),
            f"  {item.size} B · updated {when(item.updated_at)} UTC",
            (f" by {item.agent} ({item.execution_id})" if item.agent else "", "dim"),
        )
        body = Text(item.value) if isinstance(item.value, str) else render.json_renderable(item.value)
        return Group(head, Text(""), body)

    def action_delete(self) -> None:
        if self.refuse_in_production():
            return
        item = self.selected()
        if item is None:
            return
        env = self.env

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.place = None
                self.call(
                    lambda: self.backend.delete_memory(item.key, env=env), lambda _: self.reload(), group="delete"
                )

        self.app.push_screen(
            ConfirmModal(
                f"Delete memory key {item.key} from staging?",
                Text(one_line(item.value, 200)),
                confirm="Delete",
                danger=True,
            ),
            confirmed,
        )
