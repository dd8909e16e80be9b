"""Traces: one execution's span tree with durations and a timeline bar; a span's attributes."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static, Tree

from rf.models import Span, Trace, TraceSummary
from rf.tui import render
from rf.tui.format import ago, duration, plural, pretty_json
from rf.tui.views.base import View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

BAR = 16
KIND_COLORS = {
    "agent": "#a78bfa",
    "llm": "#f472b6",
    "prompt": "#e879f9",
    "connector": "#22d3ee",
    "memory": "#facc15",
    "session": "#fb923c",
    "kb": "#34d399",
    "data": "#60a5fa",
}


def timeline(span: Span, start: int, total: int) -> Text:
    """A bar showing where in the trace the span ran."""
    total = max(total, 1)
    offset = int((span.start_ns - start) / total * BAR)
    length = max(1, round((span.end_ns - span.start_ns) / total * BAR))
    offset = min(offset, BAR - 1)
    length = min(length, BAR - offset)
    color = "#f87171" if span.status == "error" else KIND_COLORS.get(span.kind, "#94a3b8")
    return Text.assemble(("▕", "dim"), " " * offset, ("█" * length, color), " " * (BAR - offset - length), ("▏", "dim"))


def span_label(span: Span, start: int, total: int, width: int = 26) -> Text:
    name = f"{span.kind}: {span.name}" if span.kind != "agent" else span.name
    name = name if len(name) <= width else name[: width - 1] + "…"
    return Text.assemble(
        (f"{name:<{width}}", "bold #f87171" if span.status == "error" else ""),
        (f"{duration(span.duration_ms):>10} ", "dim"),
        timeline(span, start, total),
    )


def span_tree_text(trace: Trace, width: int = 40) -> Text:
    """The span tree as indented lines (for the Executions detail): name, duration, timeline bar."""
    spans = list(trace.spans)
    if not spans:
        return Text("no spans recorded", style="dim")
    start = min(s.start_ns for s in spans)
    total = max(s.end_ns for s in spans) - start
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_id if s.parent_id in ids else None, []).append(s)
    out = Text()

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x.start_ns):
            out.append("  " * depth)
            out.append_text(span_label(s, start, total, width=max(10, width - 2 * depth)))
            out.append("\n")
            walk(s.span_id, depth + 1)

    walk(None, 0)
    out.rstrip()
    return out


#: The table's columns; production traces of a canary's arms add ``arm``.
COLUMNS = ("execution", "agent", "status", "duration", "started")
COLUMNS_WITH_ARM = ("execution", "agent", "status", "arm", "duration", "started")


class TracesView(View):
    TITLE = "Traces"
    KEY = "traces"
    GROUP = "Observe"
    CSS_FILE = "views/traces.tcss"
    LIVE = True
    REQUIRES = ("list_traces", "get_trace")
    BINDINGS: ClassVar[list[BindingType]] = []

    def __init__(self) -> None:
        super().__init__()
        self.traces: list[TraceSummary] = []
        self.place: str | None = None
        self.trace: Trace | None = None
        self._trace_for: tuple[str, str] | None = None

    def compose_view(self) -> ComposeResult:
        table: DataTable[str | Text] = Table(id="traces-table", cursor_type="row", zebra_stripes=True)
        for label in COLUMNS:
            table.add_column(label, key=label)
        yield table
        yield Empty("", id="traces-empty")
        with Horizontal(id="trace-body", classes="detail"):
            with Vertical(id="trace-tree-box"):
                yield Tree[Span | None]("trace", id="trace-tree")
            with VerticalScroll(id="span-detail"):
                yield Static("", id="span-attributes")

    def open_execution(self, execution_id: str) -> None:
        """Show this execution's trace (from the Executions view)."""
        self.place = execution_id
        self._trace_for = None

    def reload(self) -> None:
        env = self.env
        self.call(lambda: self.backend.list_traces(env=env, limit=100), self.show_traces)

    def show_traces(self, traces: list[TraceSummary]) -> None:
        table = self.query_one("#traces-table", Table)
        changed = [t.execution_id for t in traces] != [
            t.execution_id for t in self.traces
        ] or self.loaded_env != self.env
        self.traces = traces
        with_arm = any(t.arm for t in traces)
        if table.set_columns(COLUMNS_WITH_ARM if with_arm else COLUMNS):
            changed = True
        if changed:
            keep = self.place or selected_key(table)
            index = table.cursor_row
            now = self.now()
            table.clear()
            for t in traces:
                status = Text("error", style="bold #f87171") if t.status == "error" else Text("ok", style="#4ade80")
                table.add_row(
                    Text(t.execution_id, style="dim"),
                    Text(t.agent),
                    status,
                    *((render.arm_text(t.arm),) if with_arm else ()),
                    duration(t.duration_ms),
                    ago(t.started_at, now),
                    key=t.execution_id,
                )
            restore_cursor(table, keep, index)
        empty = self.query_one("#traces-empty", Empty)
        empty.update(f"No traces in {self.env} yet — every execution records one (rf invoke NAME --env {self.env}).")
        empty.set_class(not traces and self.place is None, "-shown")
        table.display = bool(traces)
        self.query_one("#trace-body", Horizontal).display = bool(traces) or self.place is not None
        self.set_subtitle(f"{plural(len(traces), 'trace')} in {self.env} · newest first")
        self.load_trace()
        self.painted()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.place = str(event.row_key.value)
            self.load_trace()

    def load_trace(self) -> None:
        key = self.place or selected_key(self.query_one("#traces-table", DataTable))
        if key is None:
            return
        marker = (key, self.env)
        if marker == self._trace_for:
            return
        self._trace_for = marker
        env = self.env
        self.call(lambda: self.backend.get_trace(key, env=env), self.show_trace, group="trace")

    def show_trace(self, trace: Trace) -> None:
        self.trace = trace
        tree: Tree[Span | None] = self.query_one("#trace-tree", Tree)
        tree.clear()
        spans = list(trace.spans)
        if not spans:
            tree.root.set_label(Text("no spans", style="dim"))
            return
        start = min(s.start_ns for s in spans)
        total = max(s.end_ns for s in spans) - start
        children: dict[str | None, list[Span]] = {}
        ids = {s.span_id for s in spans}
        for s in spans:
            parent = s.parent_id if s.parent_id in ids else None
            children.setdefault(parent, []).append(s)
        summary = next((t for t in self.traces if t.execution_id == trace.execution_id), None)
        where = render.release_arm(summary.release_id, summary.arm) if summary is not None else ""
        tree.root.set_label(
            Text.assemble((trace.agent, "bold"), f" · {trace.execution_id} · ", render.env_text(trace.env),
                          (f" · {where}" if where else "", "dim"))
        )
        tree.root.data = None

        def add(node: Any, parent_id: str | None) -> None:
            for s in sorted(children.get(parent_id, []), key=lambda x: x.start_ns):
                label = span_label(s, start, total)
                if children.get(s.span_id):
                    child = node.add(label, data=s, expand=True)
                    add(child, s.span_id)
                else:
                    node.add_leaf(label, data=s)

        add(tree.root, None)
        tree.root.expand()
        self.show_span(spans[0])

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Span | None]) -> None:
        if event.node.data is not None:
            self.show_span(event.node.data)

    def show_span(self, span: Span) -> None:
        self.query_one("#span-attributes", Static).update(self.render_span(span))

    def render_span(self, span: Span) -> RenderableType:
        table = render.grid()
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("kind", span.kind)
        table.add_row("status", Text(span.status, style="#f87171" if span.status == "error" else "#4ade80"))
        table.add_row("duration", duration(span.duration_ms))
        table.add_row("span", Text(span.span_id, style="dim"))
        if span.error:
            table.add_row("error", Text(span.error, style="#f87171"))
        for key, value in sorted(span.attributes.items()):
            table.add_row(key, Text(pretty_json(value)))
        return Group(Text(span.name, style="bold"), Text(""), table)
