"""Executions of one environment: filters, keyset pages (fast with millions of rows), detail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static

from rf import api
from rf.errors import NotFound
from rf.models import Execution, Trace
from rf.tui import render
from rf.tui.format import ago, duration, id_at, one_line, parse_before, short, when
from rf.tui.render import json_renderable
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

PAGE = 100
SOURCES = ("endpoint", "openai", "mcp", "invoke", "test", "eval", "trigger", "replay")
STATUSES = ("succeeded", "failed", "running", "interrupted")
#: The table's columns; production executions that ran while a canary ran add ``arm`` after status.
COLUMNS = ("execution", "started", "agent", "status", "source", "queued", "duration")
COLUMNS_WITH_ARM = ("execution", "started", "agent", "status", "arm", "source", "queued", "duration")


status_text = render.status_text


def queued_text(ex: Execution) -> str:
    """The wait for a worker, when there was one to speak of (a busy pool, a cold start)."""
    return duration(ex.queued_ms) if ex.queued_ms >= 1 else ""


def duration_text(ex: Execution) -> str:
    if ex.status != "running":
        return duration(ex.duration_ms)
    return duration(ex.duration_ms) + "…" if ex.duration_ms else "waiting"


@dataclass
class Filters:
    agent: str | None = None
    status: str | None = None
    source: str | None = None
    before_text: str = ""


@dataclass
class Page:
    executions: list[Execution]
    agents: list[str] = field(default_factory=list)


class ExecutionsView(View):
    TITLE = "Executions"
    KEY = "executions"
    GROUP = "Observe"
    CSS_FILE = "views/executions.tcss"
    LIVE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right_square_bracket", "older", "Older", key_display="]"),
        Binding("left_square_bracket", "newer", "Newer", key_display="["),
        Binding("f", "filter", "Filter"),
        Binding("c", "clear_filters", "Clear filters"),
        Binding("t", "trace", "Trace"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filters = Filters()
        self.cursors: list[str | None] = [None]  #: the `before` of each page visited (keyset pagination)
        self.executions: list[Execution] = []
        self.place: str | None = None
        self._agents: list[str] = []
        self._detail_for: str | None = None
        self._quiet_filters = False
        self._arm_column = False  #: the table shows the arm column (some row ran on a canary's arm)

    def compose_view(self) -> ComposeResult:
        with Horizontal(id="execution-filters"):
            yield Select[str]([("all agents", "")], value="", allow_blank=False, id="filter-agent", compact=True)
            yield Select[str](
                [("any status", ""), *((st, st) for st in STATUSES)],
                value="",
                allow_blank=False,
                id="filter-status",
                compact=True,
            )
            yield Select[str](
                [("any source", ""), *((s, s) for s in SOURCES)],
                value="",
                allow_blank=False,
                id="filter-source",
                compact=True,
            )
            yield Input(placeholder="before: 15m, 2h, 2026-01-31 (enter)", id="filter-before", compact=True)
        yield Label("", id="filter-before-error", classes="field-error", markup=False)
        table: DataTable[str | Text] = Table(id="executions-table", cursor_type="row", zebra_stripes=True)
        # The output/error of the highlighted row is in the detail below: the table stays narrow.
        for label in COLUMNS:
            table.add_column(label, key=label)
        yield table
        yield Empty(
            "No executions yet in this environment — run one with rf invoke NAME or rf test NAME.",
            id="executions-empty",
        )
        with VerticalScroll(id="execution-detail", classes="detail"):
            yield Static("", id="execution-detail-body")

    # ------------------------------------------------------------ filters
    def set_filter(self, *, agent: str | None = None) -> None:
        """Show one agent's executions (from the Agents view)."""
        self.filters = Filters(agent=agent)
        self.cursors = [None]
        self._quiet_filters = True
        self._ensure_agent_option(agent)
        self.query_one("#filter-agent", Select).value = agent or ""
        self.query_one("#filter-status", Select).value = ""
        self.query_one("#filter-source", Select).value = ""
        self.query_one("#filter-before", Input).value = ""
        self._quiet_filters = False

    def _ensure_agent_option(self, agent: str | None) -> None:
        if agent and agent not in self._agents:
            self._agents = sorted({*self._agents, agent})
            self._set_agent_options()

    def _set_agent_options(self) -> None:
        select: Select[str] = self.query_one("#filter-agent", Select)
        value = select.value
        self._quiet_filters = True
        select.set_options([("all agents", ""), *((a, a) for a in self._agents)])
        select.value = value if isinstance(value, str) and (value in self._agents or value == "") else ""
        self._quiet_filters = False

    def on_select_changed(self, event: Select.Changed) -> None:
        if self._quiet_filters:
            return
        value = event.value if isinstance(event.value, str) and event.value else None
        field = {"filter-agent": "agent", "filter-status": "status", "filter-source": "source"}.get(
            event.select.id or ""
        )
        if field is None or getattr(self.filters, field) == value:
            return  # e.g. the Changed every Select posts when it mounts
        setattr(self.filters, field, value)
        self.cursors = [None]
        self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "filter-before":
            return
        error = self.query_one("#filter-before-error", Label)
        try:
            parse_before(event.value, self.now())
        except ValueError as exc:
            error.update(f"before: {exc}")
            error.add_class("-shown")
            return
        error.update("")
        error.remove_class("-shown")
        self.filters.before_text = event.value
        self.cursors = [None]
        self.reload()
        self.query_one("#executions-table", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter-agent", Select).focus()

    def action_clear_filters(self) -> None:
        self.set_filter(agent=None)
        self.query_one("#filter-before-error", Label).remove_class("-shown")
        self.reload()

    # ------------------------------------------------------------ pages
    def _first_cursor(self) -> str | None:
        moment = parse_before(self.filters.before_text, self.now())
        return id_at("ex", moment) if moment is not None else None

    def action_older(self) -> None:
        if len(self.executions) < PAGE:
            self.rf.notify("This is the oldest page.", timeout=2)
            return
        self.cursors.append(self.executions[-1].id)
        self.place = None
        self.reload()

    def action_newer(self) -> None:
        if len(self.cursors) == 1:
            self.rf.notify("This is the newest page.", timeout=2)
            return
        self.cursors.pop()
        self.place = None
        self.reload()

    # ------------------------------------------------------------ data
    def reload(self) -> None:
        backend, env, f = self.backend, self.env, Filters(**vars(self.filters))
        before = self.cursors[-1] if len(self.cursors) > 1 else self._first_cursor()
        want_agents = not self._agents or self.loaded_env != env

        def fetch() -> Page:
            rows = backend.list_executions(
                env, agent=f.agent, status=f.status, source=f.source, limit=PAGE, before=before
            )
            agents = [a.name for a in backend.list_agents()] if want_agents else []
            return Page(rows, agents)

        self.call(fetch, self.show_page)

    def show_page(self, page: Page) -> None:
        if page.agents:
            self._agents = sorted(set(page.agents) | ({self.filters.agent} if self.filters.agent else set()))
            self._set_agent_options()
        table = self.query_one("#executions-table", Table)
        # Rows change in place too: a running execution's time, then its final status.
        shown = [(e.id, e.status) for e in page.executions]
        changed = (shown != [(e.id, e.status) for e in self.executions] or self.loaded_env != self.env
                   or any(e.status == "running" for e in page.executions))
        self._arm_column = any(e.arm for e in page.executions)
        if table.set_columns(COLUMNS_WITH_ARM if self._arm_column else COLUMNS):
            changed = True
        self.executions = page.executions
        if changed:
            keep = self.place or selected_key(table)
            index = table.cursor_row
            now = self.now()
            table.clear()
            for ex in page.executions:
                table.add_row(*self._cells(ex, now), key=ex.id)
            restore_cursor(table, keep, index)
        empty = self.query_one("#executions-empty", Empty)
        filtered = any((self.filters.agent, self.filters.status, self.filters.source, self.filters.before_text))
        empty.update(
            "No executions match these filters — press c to clear them."
            if filtered
            else f"No executions yet in {self.env} — run one with rf invoke NAME --env {self.env}"
            + (" or rf test NAME." if self.env == "staging" else ".")
        )
        empty.set_class(not page.executions, "-shown")
        table.display = bool(page.executions)
        self.query_one("#execution-detail", VerticalScroll).display = bool(page.executions)
        n = len(self.cursors)
        first = (n - 1) * PAGE + 1
        span = f"{first}–{first + len(page.executions) - 1}" if page.executions else "none"
        self.set_subtitle(f"page {n} · rows {span} · newest first · ] older  [ newer")
        if changed:
            self.load_detail(force=True)
        self.painted()

    def _cells(self, ex: Execution, now: Any) -> tuple[str | Text, ...]:
        return (
            Text(ex.id, style="dim"),
            ago(ex.started_at, now),
            Text(one_line(ex.agent, 16)),
            status_text(ex.status),
            *((render.arm_text(ex.arm),) if self._arm_column else ()),
            Text(one_line(ex.source, 14)),
            queued_text(ex),
            duration_text(ex),
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "executions-table" or event.row_key.value is None:
            return
        self.place = str(event.row_key.value)
        self.load_detail()

    def load_detail(self, force: bool = False) -> None:
        key = self.place or selected_key(self.query_one("#executions-table", DataTable))
        if key is None or not any(e.id == key for e in self.executions):
            self.query_one("#execution-detail-body", Static).update("")
            self._detail_for = None
            return
        if key == self._detail_for and not force:
            return
        self._detail_for = key
        backend, env = self.backend, self.env

        def fetch() -> tuple[Execution, Trace | None]:
            ex = backend.get_execution(key, env)
            trace = None
            if "get_trace" in api.BY_NAME:
                try:
                    trace = backend.get_trace(key, env)
                except NotFound:
                    trace = None  # recorded before tracing, or tracing off for this agent
            return ex, trace

        self.call(fetch, self.show_detail, group="detail")

    def show_detail(self, data: tuple[Execution, Trace | None]) -> None:
        ex, trace = data
        self.query_one("#execution-detail-body", Static).update(execution_detail(ex, trace))

    async def action_trace(self) -> None:
        key = self.place or selected_key(self.query_one("#executions-table", DataTable))
        if key is None:
            return
        await self.rf.open_trace(execution_id=key)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "trace" and "list_traces" not in api.BY_NAME and "get_trace" not in api.BY_NAME:
            return False
        return super().check_action(action, parameters)

    def commands(self) -> Iterable[Command]:
        yield Command("Executions: only failed", lambda: self._quick(status="failed"), "Filter by status")
        yield Command("Executions: clear filters", self.action_clear_filters, "Show every execution")
        yield Command("Executions: older page", self.action_older, "Keyset pagination (key ])")
        yield Command("Executions: newer page", self.action_newer, "Keyset pagination (key [)")

    def _quick(self, *, status: str) -> None:
        self.query_one("#filter-status", Select).value = status


def _section(title: str, body: RenderableType) -> list[RenderableType]:
    return [render.heading("\n" + title), body]


def _json(value: Any) -> RenderableType:
    if value is None:
        return Text("null", style="dim")
    if isinstance(value, str):
        return Text(value)
    return json_renderable(value)


def execution_detail(ex: Execution, trace: Trace | None = None) -> RenderableType:
    head = Text.assemble(
        (ex.id, "bold"),
        "  ",
        status_text(ex.status),
        "  ",
        render.env_text(ex.env),
        "  ",
        (ex.agent, "bold"),
        " @ ",
        (short(ex.commit), "yellow"),
    )
    running = ex.status == "running"
    took = (f"running for {duration(ex.duration_ms)} so far" if ex.duration_ms else "waiting for a worker") \
        if running else duration(ex.duration_ms)
    meta = Text(
        f"source {ex.source} · started {when(ex.started_at)} UTC · {took}"
        + (f" · queued {duration(ex.queued_ms)}" if ex.queued_ms >= 1 or running else "")
        + (f" · session {ex.session_id}" if ex.session_id else "")
        + (f" · {render.release_arm(ex.release_id, ex.arm)}" if ex.release_id or ex.arm else ""),
        style="dim",
    )
    parts: list[RenderableType] = [head, meta]
    parts += _section("Input", _json(ex.input))
    if running:
        parts.append(Text("\nStill running: its output, logs and trace are recorded when it ends.", style="dim"))
    elif ex.status in ("failed", "interrupted") or ex.error:
        error = Text(ex.error or "unknown error", style="bold #f87171")
        parts += _section(f"Error ({ex.error_type})" if ex.error_type else "Error", error)
        if ex.traceback:
            parts.append(Text(ex.traceback.rstrip(), style="dim"))
    else:
        parts += _section("Output", _json(ex.output))
    if ex.logs:
        parts += _section("Logs", Text(ex.logs.rstrip(), style="dim"))
    if trace is not None:
        from rf.tui.views.traces import span_tree_text

        parts += _section("Trace (t opens it in Traces)", span_tree_text(trace))
    return Group(*parts)
