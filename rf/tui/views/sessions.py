"""Sessions (threads) of one environment: the conversation as chat bubbles."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from rf.models import SessionSummary, SessionThread
from rf.tui import render
from rf.tui.format import ago, one_line, plural, pretty_json, when
from rf.tui.views.base import View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

#: The table's columns; production sessions of a canary's arms add ``arm``.
COLUMNS = ("session", "agent", "msgs", "active")
COLUMNS_WITH_ARM = ("session", "agent", "arm", "msgs", "active")


class Bubble(Static):
    """One message; the user's on the right, the agent's on the left."""


class SessionsView(View):
    TITLE = "Sessions"
    KEY = "sessions"
    GROUP = "Observe"
    CSS_FILE = "views/sessions.tcss"
    LIVE = True
    REQUIRES = ("list_sessions", "get_session")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("end", "scroll_end", "Latest message", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[SessionSummary] = []
        self.place: str | None = None
        self._thread_for: tuple[str, str, int] | None = None

    def compose_view(self) -> ComposeResult:
        with Horizontal(id="sessions-body"):
            table: DataTable[str | Text] = Table(id="sessions-table", cursor_type="row", zebra_stripes=True)
            for label in COLUMNS:
                table.add_column(label, key=label)
            yield table
            yield VerticalScroll(id="session-thread")
        yield Empty("", id="sessions-empty")

    @staticmethod
    def key_of(s: SessionSummary) -> str:
        return f"{s.agent}/{s.id}"

    def reload(self) -> None:
        env = self.env
        self.call(lambda: self.backend.list_sessions(env=env, limit=200), self.show_sessions)

    def show_sessions(self, sessions: list[SessionSummary]) -> None:
        table = self.query_one("#sessions-table", Table)
        changed = [(s.id, s.agent, s.messages, s.arm) for s in sessions] != [
            (s.id, s.agent, s.messages, s.arm) for s in self.sessions
        ] or self.loaded_env != self.env
        self.sessions = sessions
        with_arm = any(s.arm for s in sessions)
        if table.set_columns(COLUMNS_WITH_ARM if with_arm else COLUMNS):
            changed = True
        if changed:
            keep = self.place or selected_key(table)
            index = table.cursor_row
            now = self.now()
            table.clear()
            for s in sessions:
                arm = (render.arm_text(s.arm),) if with_arm else ()
                table.add_row(
                    Text(one_line(s.id, 22)), Text(s.agent), *arm, str(s.messages), ago(s.updated_at, now),
                    key=self.key_of(s),
                )
            restore_cursor(table, keep, index)
        empty = self.query_one("#sessions-empty", Empty)
        empty.update(
            f"No sessions in {self.env} yet — call an agent with a session id "
            f"(rf invoke NAME --session ID --env {self.env})."
        )
        empty.set_class(not sessions, "-shown")
        self.query_one("#sessions-body", Horizontal).display = bool(sessions)
        self.set_subtitle(f"{plural(len(sessions), 'session')} in {self.env} · most recently active first")
        self.load_thread()
        self.painted()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.place = str(event.row_key.value)
            self.load_thread()

    def load_thread(self) -> None:
        key = self.place or selected_key(self.query_one("#sessions-table", DataTable))
        s = next((x for x in self.sessions if self.key_of(x) == key), None)
        if s is None:
            self.query_one("#session-thread", VerticalScroll).remove_children()
            self._thread_for = None
            return
        marker = (self.key_of(s), self.env, s.messages)
        if marker == self._thread_for:
            return
        self._thread_for = marker
        env = self.env
        self.call(lambda: self.backend.get_session(s.id, env=env, agent=s.agent), self.show_thread, group="thread")

    def show_thread(self, thread: SessionThread) -> None:
        box = self.query_one("#session-thread", VerticalScroll)
        box.remove_children()
        summary = next((s for s in self.sessions if s.agent == thread.agent and s.id == thread.id), None)
        where = render.release_arm(summary.release_id, summary.arm) if summary is not None else ""
        rows: list[Widget] = [
            Static(Text(f"{thread.agent} · session {thread.id} · {self.env}" + (f" · {where}" if where else ""),
                        style="dim"), classes="thread-title")
        ]
        for m in thread.messages:
            content = m.content if isinstance(m.content, str) else pretty_json(m.content)
            text = Text.assemble((f"{m.role} · {when(m.created_at)[11:]}", "dim"), "\n", content)
            role = m.role if m.role in ("user", "assistant") else "other"
            # A row per message: the user's bubbles align right, the agent's left.
            rows.append(Horizontal(Bubble(text, classes=f"bubble {role}"), classes=f"bubble-row {role}"))
        if not thread.messages:
            rows.append(Static(Text("no messages", style="dim")))
        box.mount_all(rows)
        box.scroll_end(animate=False)

    def action_scroll_end(self) -> None:
        self.query_one("#session-thread", VerticalScroll).scroll_end(animate=False)
