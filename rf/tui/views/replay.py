"""Replay: an agent's recorded production executions run again on staging's state (``rf replay``).

Pick an agent and a window (the newest N, or those since 2h / a date), press enter: the replay
runs in a thread worker (its executions run through the real runtime, a few at a time, in
staging: production is never touched), while the screen counts the replayed executions
recorded so far. Then the summary (same / changed / newly failing / fixed) and a row per
execution: its status before → after, the latency delta, its connector calls; the selected
one's recorded output and its replay side by side (rf.textdiff, JSON-aware: sorted keys, as
``rf replay`` prints it), the changed JSON paths, and the connector calls the recording did not
hold. Executions whose output did not change are hidden until ``f``.

Nothing here is stored: a replay's evidence is its staging executions (source ``replay``, in
Executions and Traces) and this screen until the next replay. The screen works the same with
either environment shown: it always reads production's recordings and runs on staging.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.timer import Timer
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Select, Static

from rf.errors import RfError
from rf.models import Agent, ReplayedExecution, ReplayResult
from rf.tui import diff as diffs
from rf.tui import render
from rf.tui.calls import run_call
from rf.tui.format import duration, id_at, one_line, plural, short
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

GOOD = "#4ade80"
BAD = "#f87171"
OUTCOMES: dict[str, tuple[str, str]] = {
    "same": ("= same", "dim"),
    "changed": ("~ changed", "bold yellow"),
    "newly_failing": ("✗ newly failing", f"bold {BAD}"),
    "fixed": ("✓ fixed", f"bold {GOOD}"),
}
DEFAULT_LAST = 20
#: How often the progress line counts the replayed executions recorded so far (seconds).
PROGRESS_S = 1.0


def outcome_text(outcome: str) -> Text:
    label, style = OUTCOMES.get(outcome, (outcome, ""))
    return Text(label, style=style)


def status_change(e: ReplayedExecution) -> Text:
    def status(s: str) -> Text:
        return Text(s, style=GOOD if s == "succeeded" else BAD)

    return Text.assemble(status(e.before_status), " → ", status(e.after_status))


def delta_text(e: ReplayedExecution) -> Text:
    slower = e.delta_ms > 0
    return Text(f"{e.delta_ms:+.1f} ms", style=("yellow" if slower else GOOD) if abs(e.delta_ms) >= 1 else "dim")


def calls_text(e: ReplayedExecution) -> Text:
    parts: list[tuple[str, str]] = []
    if e.replayed_calls:
        parts.append((f"{e.replayed_calls} replayed", ""))
    if e.live_calls:
        parts.append((f"{e.live_calls} live", "yellow"))
    if e.unmatched:
        parts.append((f"{len(e.unmatched)} unmatched", BAD))
    if e.not_recorded:
        parts.append((f"{len(e.not_recorded)} not recorded", BAD))
    text = Text()
    for n, (part, style) in enumerate(parts):
        text.append((", " if n else "") + part, style=style)
    return text


def summary_text(result: ReplayResult) -> Text:
    """``20 replayed: 15 same · 3 changed · 1 newly failing · 1 fixed`` (red when one newly fails)."""
    return Text.assemble(
        (f"{result.total} replayed", f"bold {BAD}" if result.newly_failing else f"bold {GOOD}"), ": ",
        (f"{result.same} same", "dim"), " · ", (f"{result.changed} changed", "yellow" if result.changed else ""),
        " · ", (f"{result.newly_failing} newly failing", f"bold {BAD}" if result.newly_failing else ""),
        " · ", (f"{result.fixed} fixed", GOOD if result.fixed else ""),
        (f" · {result.unmatched} with unmatched connector calls" if result.unmatched else "", BAD),
        (f" · {duration(result.duration_ms)} · {result.workers} at a time", "dim"))


def replayed_detail(result: ReplayResult, e: ReplayedExecution) -> RenderableType:
    """One replayed execution: outcome, status change, latency, then recorded vs replayed output
    side by side, the changed paths, the connector calls the recording did not hold."""
    from rf.evals.replay import pretty

    head = Text.assemble(outcome_text(e.outcome), "  ", (e.execution_id, "bold"), " → ",
                         (e.replay_execution_id or "(did not run)", "bold" if e.replay_execution_id else "dim"),
                         "  ", status_change(e), "  ",
                         (f"{duration(e.before_ms)} → {duration(e.after_ms)} (", "dim"), delta_text(e), (")", "dim"))
    parts: list[RenderableType] = [head]
    meta = [f"input {one_line(e.input, 70)}"]
    if e.session_id:
        meta.append(f"session {e.session_id} (its history up to this turn was replayed)")
    calls = calls_text(e)
    if calls:
        meta.append(f"connector calls: {calls.plain}")
    parts.append(Text(" · ".join(meta), style="dim"))
    before = pretty(e.before_output) if e.before_status == "succeeded" else f"error: {e.before_error}"
    after = pretty(e.after_output) if e.after_status == "succeeded" else f"error: {e.after_error}"
    parts.append(Text(""))
    parts.append(diffs.side_by_side(before, after, old_title=f"{result.from_env} (recorded)",
                                    new_title=f"{result.against} (replayed)"))
    if e.changes:
        parts.append(render.heading("\nchanged"))
        for change in e.changes[:20]:
            parts.append(Text.assemble((f"  {change.path or '(output)'}", "bold"), f" {change.kind}: ",
                                       (one_line(change.before, 40), BAD), " → ", (one_line(change.after, 40), GOOD)))
        if len(e.changes) > 20:
            parts.append(Text(f"  … {len(e.changes) - 20} more (rf replay {result.agent} --json)", style="dim"))
    for call in e.unmatched:
        parts.append(Text.assemble(("unmatched connector call ", BAD), call,
                                   (" — the recording holds no such request: it failed the run "
                                    "(live connectors let staging's instance answer)", "dim")))
    for call in e.not_recorded:
        parts.append(Text.assemble(("not recorded ", BAD), call,
                                   (" — the trace kept too little of it to answer (trace level minimal?)", "dim")))
    if e.replay_execution_id:
        parts.append(Text("\nt opens the replayed execution's trace (staging)", style="dim"))
    return Group(*parts)


class ReplayView(View):
    TITLE = "Replay"
    KEY = "replay"
    GROUP = "Observe"
    CSS_FILE = "views/replay.tcss"
    REQUIRES = ("replay",)
    BANNER = ("Production is read-only. A replay reads production's recorded executions and runs them on "
              "staging's state: production is never touched. Press e for staging.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "run", "Replay"),
        Binding("f", "toggle_same", "Show same"),
        Binding("t", "trace", "Trace"),
        Binding("slash", "focus_form", "Form", key_display="/"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.agents: list[Agent] = []
        self.result: ReplayResult | None = None
        self.place: str | None = None  #: the selected recorded execution's id
        self.show_same = False
        self.running: tuple[str, float, str] | None = None  #: (agent, monotonic start, first id) while one runs
        self.done_so_far = 0
        self.last_error: str | None = None
        self._ticker: Timer | None = None

    def compose_view(self) -> ComposeResult:
        with Horizontal(id="replay-form"):
            yield Select[str]([], prompt="agent", id="replay-agent", compact=True)
            yield Label("last", classes="replay-label")
            yield Input(value=str(DEFAULT_LAST), id="replay-last", compact=True, restrict=r"\d*")
            yield Label("or since", classes="replay-label")
            yield Input(placeholder="2h · 7d · a date", id="replay-since", compact=True)
            yield Button("Replay", id="replay-run", variant="primary", compact=True)
        with Horizontal(id="replay-options"):
            yield Select[str]([("LLM as configured", "configured"), ("LLM: built-in mock", "mock")],
                              value="configured", allow_blank=False, id="replay-llm", compact=True)
            live = Checkbox("live connectors", id="replay-live", compact=True)
            live.tooltip = ("Connector calls the recording does not hold reach staging's instances "
                            "(default: they fail the replayed run)")
            yield live
            yield Static("enter or g replays · / back to the form", id="replay-hint")
        yield Label("", id="replay-form-error", classes="field-error", markup=False)
        yield Static("", id="replay-status")
        table: DataTable[str | Text] = Table(id="replay-table", cursor_type="row", zebra_stripes=True)
        for label in ("execution", "before → after", "outcome", "Δ latency", "connector calls"):
            table.add_column(label, key=label)
        table.display = False  # until a replay has a result
        yield table
        yield Empty("", id="replay-empty")
        with VerticalScroll(id="replay-detail", classes="detail") as detail:
            detail.display = False
            yield Static("", id="replay-detail-body")

    # ------------------------------------------------------------ data
    def reload(self) -> None:
        backend = self.backend
        self.call(backend.list_agents, self.show_agents, group="agents")

    def show_agents(self, agents: list[Agent]) -> None:
        select: Select[str] = self.query_one("#replay-agent", Select)
        names = [a.name for a in agents]
        if names != [a.name for a in self.agents]:
            value = select.value
            select.set_options([(self._agent_label(a), a.name) for a in agents])
            if isinstance(value, str) and value in names:
                select.value = value
            else:  # the first agent production runs (its executions are what a replay reads)
                first = next((a.name for a in agents if a.production_commit and a.staging_commit), None)
                if first is not None:
                    select.value = first
        self.agents = agents
        self.show_status()
        self.painted()

    @staticmethod
    def _agent_label(a: Agent) -> str:
        if a.production_commit is None:
            return f"{a.name} (not in production)"
        if a.staging_commit is None:
            return f"{a.name} (not in staging)"
        return a.name

    def focus_default(self) -> None:
        if self.rf.current_view != self.KEY:
            return
        table = self.query_one("#replay-table", DataTable)
        if self._shown(table) and table.row_count:
            table.focus()
        else:
            self.query_one("#replay-agent", Select).focus()

    # ------------------------------------------------------------ running
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("replay-last", "replay-since"):
            self.action_run()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "replay-run":
            self.action_run()

    def form_error(self, message: str) -> None:
        label = self.query_one("#replay-form-error", Label)
        label.update(message)
        label.set_class(bool(message), "-shown")

    def action_focus_form(self) -> None:
        self.query_one("#replay-agent", Select).focus()

    def action_run(self) -> None:
        if self.running is not None:
            self.rf.notify("A replay is running: wait for its result.", severity="warning")
            return
        agent = self.query_one("#replay-agent", Select).value
        if not isinstance(agent, str) or not agent:
            self.form_error("Pick an agent first.")
            self.query_one("#replay-agent", Select).focus()
            return
        last_text = self.query_one("#replay-last", Input).value.strip()
        since = self.query_one("#replay-since", Input).value.strip() or None
        last = int(last_text) if last_text else None
        if last is not None and not 1 <= last <= 10_000:
            self.form_error("last: a whole number from 1 to 10000 (the newest executions to replay).")
            return
        if last is None and since is None:
            last = DEFAULT_LAST
        llm = self.query_one("#replay-llm", Select).value
        live = self.query_one("#replay-live", Checkbox).value
        self.form_error("")
        backend = self.backend
        self.running = (agent, time.monotonic(), id_at("ex", self.now()))
        self.done_so_far = 0
        self.last_error = None
        self.result = None  # (the previous result goes: what is shown is always the form's latest run)
        self._ticker = self.set_interval(PROGRESS_S, self.progress)
        self.show_result()

        def run() -> ReplayResult:
            result: ReplayResult = backend.replay(agent, "production", "staging", last, since, None, live,
                                                  llm if isinstance(llm, str) else "configured")
            return result

        # Not View.call: the result belongs to no environment, so an environment switch keeps it.
        run_call(self, run, self.finished, failed=self.replay_failed, group=f"{self.KEY}:run", description="replay")

    def progress(self) -> None:
        """Count the replayed executions recorded so far (the replay itself tells nothing until it ends)."""
        if self.running is None:
            return
        agent, _, first = self.running
        backend = self.backend

        def count() -> int:
            rows = backend.list_executions("staging", agent=agent, source="replay", limit=1000, before=None)
            return sum(1 for e in rows if e.id >= first and e.status != "running")

        def got(n: int) -> None:
            if self.running is not None:
                self.done_so_far = n
                self.show_status()

        self.show_status()
        run_call(self, count, got, failed=lambda exc: True, group=f"{self.KEY}:progress")

    def _stop(self) -> None:
        self.running = None
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        self.refresh_bindings()

    def replay_failed(self, exc: Exception) -> bool:
        self._stop()
        if isinstance(exc, RfError):
            self.last_error = exc.message + (f" — {exc.hint}" if exc.hint else "")
            self.show_status()
            return True
        self.show_status()
        return False

    def finished(self, result: ReplayResult) -> None:
        self._stop()
        self.result = result
        self.place = None
        self.show_result()
        self.rf.notify(summary_text(result).plain, title=f"Replay of {result.agent}",
                       severity="error" if result.newly_failing else "information", markup=False)

    # ------------------------------------------------------------ showing
    def show_status(self) -> None:
        status = self.query_one("#replay-status", Static)
        if self.running is not None:
            agent, started, _ = self.running
            status.update(Text.assemble(
                ("● replaying ", "bold #38bdf8"), (agent, "bold"), "'s recorded ", render.env_text("production"),
                " executions on ", render.env_text("staging"), "'s state… ",
                (f"{plural(self.done_so_far, 'execution')} replayed so far · {time.monotonic() - started:.0f} s",
                 "dim")))
        elif self.last_error is not None:
            status.update(Text(self.last_error, style=BAD))
        elif self.result is not None:
            r = self.result
            status.update(Text.assemble(
                (r.agent, "bold"), " ", render.env_text(r.from_env), " → ", render.env_text(r.against),
                f" {short(r.commit)} · llm {r.llm} · connectors "
                f"{'recorded, then live' if r.live_connectors else 'recorded only'} · ", (r.id, "dim"), "\n",
                summary_text(r)))
        else:
            status.update(Text("Pick an agent and a window, then enter (or g): its recorded production executions "
                               "run again on staging's state — connector calls answered from the recording, "
                               "production untouched.", style="dim"))
        self.set_subtitle(self._subtitle())

    def _subtitle(self) -> str:
        if self.running is not None:
            return "running…"
        if self.result is not None:
            shown = "every execution" if self.show_same else "changed executions (f: every one)"
            return f"{self.result.agent} · {self.result.total} replayed · showing {shown}"
        return "production → staging"

    def shown(self) -> list[ReplayedExecution]:
        if self.result is None:
            return []
        return [e for e in self.result.executions if self.show_same or e.outcome != "same"]

    def show_result(self) -> None:
        self.show_status()
        table = self.query_one("#replay-table", DataTable)
        rows = self.shown()
        keep = self.place
        table.clear()
        for e in rows:
            table.add_row(Text(e.execution_id, style="dim"), status_change(e), outcome_text(e.outcome),
                          delta_text(e), calls_text(e), key=e.execution_id)
        if rows:
            first = next((e.execution_id for e in rows if e.outcome == "newly_failing"), rows[0].execution_id)
            restore_cursor(table, keep if keep in {e.execution_id for e in rows} else first)
            self.place = selected_key(table)
        else:
            self.place = None
        has = bool(rows)
        table.display = has
        self.query_one("#replay-detail", VerticalScroll).display = has
        empty = self.query_one("#replay-empty", Empty)
        if self.result is not None and not has:
            empty.update(f"Every one of the {plural(self.result.total, 'replayed execution')} did the same as "
                         "in production (f lists them).")
        empty.set_class(self.result is not None and not has, "-shown")
        self.show_detail()
        self.focus_default()
        self.refresh_bindings()

    def selected(self) -> ReplayedExecution | None:
        if self.result is None:
            return None
        return next((e for e in self.result.executions if e.execution_id == self.place), None)

    def show_detail(self) -> None:
        e, result = self.selected(), self.result
        body = self.query_one("#replay-detail-body", Static)
        body.update(replayed_detail(result, e) if e is not None and result is not None else "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "replay-table" and event.row_key.value is not None:
            self.place = str(event.row_key.value)
            self.show_detail()

    # ------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self.is_mounted or self.missing():
            return super().check_action(action, parameters)
        if action == "run":
            return self.running is None
        if action in ("toggle_same", "trace"):
            return self.result is not None
        return super().check_action(action, parameters)

    def action_toggle_same(self) -> None:
        self.show_same = not self.show_same
        self.show_result()

    async def action_trace(self) -> None:
        e = self.selected()
        if e is None or not e.replay_execution_id:
            self.rf.notify("No replayed execution to show: select one that ran.", severity="warning")
            return
        if self.env != "staging":
            self.rf.env = "staging"  # the replayed execution is staging's
        await self.rf.open_trace(execution_id=e.replay_execution_id)

    def commands(self) -> Iterable[Command]:
        yield Command("Replay production on staging", self.action_run, "Run the form's replay (key g)")
        if self.result is not None:
            yield Command("Replay: show / hide same executions", self.action_toggle_same, "Key f")
