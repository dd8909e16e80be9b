"""Evals: the stored eval runs of one environment, each case's result, and its output next to
what the case expected; the suites per agent.

Read-only in both environments: a run is evidence (``rf eval``, CI, the release gate), not an
edit. The Runs tab lists the environment's stored runs (``rf evals list``); a run's cases come
from ``get_eval_run`` and the expectations from the suite of the commit the run ran
(``eval_suite``), so the detail puts the output beside them: a side-by-side diff for ``equals``
and ``similar``, each expected string or pattern found or missing for ``contains``,
``not_contains`` and ``regex``, the argument and the verdict for the other scorers. The
Suites tab lists every agent of the environment with its suite's files and cases and its
latest run. :func:`eval_evidence` renders a release plan's evidence (the Releases screen).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from rf.errors import RfError
from rf.models import WORKING_COPY, AgentEvalEvidence, EvalAttempt, EvalCaseResult, EvalCaseSpec, EvalResult, EvalSuite
from rf.tui import diff as diffs
from rf.tui import render
from rf.tui.format import ago, duration, one_line, plural, pretty_json, short, when
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

PASS = "#4ade80"
FAIL = "#f87171"

#: Scorers whose expectation is a text the output is compared with side by side.
_SIDE_BY_SIDE = ("equals", "similar")


# ------------------------------------------------------------ renderables (also used by Releases)
def passed_text(passed: int, total: int) -> Text:
    """``7/9 passed`` in green when every case passed, else red."""
    return Text(f"{passed}/{total}", style=PASS if passed == total else f"bold {FAIL}")


def verdict(ok: bool) -> Text:
    return Text("✓ passed", style=PASS) if ok else Text("✗ failed", style=f"bold {FAIL}")


def eval_evidence(evals: list[AgentEvalEvidence]) -> RenderableType:
    """A release plan's eval evidence: per agent, cases passed in production → on staging's
    state, the regressions by case id (red: a publish refuses them unless accepted), the new
    failures, and the note (why an agent was not evaluated, what it was affected through)."""
    if not evals:
        return Text("No eval suite covers these changes: nothing to compare.", style="dim")
    without = [e.agent for e in evals if e.status == "no-suite"]
    evals = [e for e in evals if e.status != "no-suite"]
    if not evals:
        return Text(f"No eval suite (no gate): {', '.join(without)} — add cases in agents/NAME/evals/.",
                    style="dim")
    table = render.grid(header=True)
    table.add_column("agent", style="bold", no_wrap=True)
    table.add_column("production", no_wrap=True)
    table.add_column("")
    table.add_column("staging", no_wrap=True)
    table.add_column("regressions")
    table.add_column("new failures")
    table.add_column("note", style="dim")
    for e in evals:
        before: Text | str = "—" if e.before_total is None or e.before_passed is None else passed_text(
            e.before_passed, e.before_total)
        after: Text | str = passed_text(e.after_passed, e.after_total) if e.status == "evaluated" else Text(
            e.status, style="dim")
        note = e.note or ("fixed: " + ", ".join(e.fixed) if e.fixed else "")
        if e.note and e.fixed:
            note += " · fixed: " + ", ".join(e.fixed)
        table.add_row(e.agent, before, "→", after, Text(", ".join(e.regressions), style=f"bold {FAIL}"),
                      Text(", ".join(e.new_failures), style="yellow"), note)
    parts: list[RenderableType] = [table]
    if without:
        parts.append(Text(f"no eval suite (no gate): {', '.join(without)}", style="dim"))
    regressed = [e for e in evals if e.regressions]
    if regressed:
        count = sum(len(e.regressions) for e in regressed)
        parts.append(Text(f"✗ {plural(count, 'case')} that pass in production fail on staging's state: publishing "
                          "them needs a reason, recorded with the release.", style=f"bold {FAIL}"))
    elif any(e.status == "evaluated" for e in evals):
        parts.append(Text("✓ no regressions", style=PASS))
    return Group(*parts)


def _highlight(text: str, needles: Iterable[str | re.Pattern[str]], style: str) -> Text:
    shown = Text(text)
    for needle in needles:
        if isinstance(needle, re.Pattern):
            for m in needle.finditer(text):
                if m.end() > m.start():
                    shown.stylize(style, m.start(), m.end())
        else:
            shown.highlight_words([needle], style=style)
    return shown


def _output_text(attempt: EvalAttempt) -> str:
    """The text the text scorers read (rf.evals.scorers.output_text), or the error of a failed run."""
    from rf.evals.scorers import output_text

    if attempt.error is not None and attempt.output is None:
        return attempt.error
    return output_text(attempt.output)


def expectation_view(spec: EvalCaseSpec, attempt: EvalAttempt) -> list[RenderableType]:
    """The attempt's output next to each expectation of the case, where a comparison reads
    better than the scorer's one-line verdict."""
    parts: list[RenderableType] = []
    text = _output_text(attempt)
    expect = spec.expect
    if "equals" in expect:
        parts.append(diffs.side_by_side(pretty_json(expect["equals"]), pretty_json(attempt.output),
                                        old_title="expected (equals)", new_title="output"))
    if "similar" in expect:
        ref = expect["similar"]
        parts.append(diffs.side_by_side(str(ref.get("text", "")), text,
                                        old_title=f"reference (similar ≥ {ref.get('threshold', 0.5):g})",
                                        new_title="output text"))
    lines: list[Text] = []
    for scorer in ("contains", "not_contains", "regex"):
        if scorer not in expect:
            continue
        wanted = expect[scorer] if isinstance(expect[scorer], list) else [expect[scorer]]
        for item in wanted:
            if scorer == "regex":
                try:
                    ok = re.search(item, text) is not None
                except re.error:
                    ok = False
            else:
                ok = (item in text) == (scorer == "contains")
            lines.append(Text.assemble(("  ✓ " if ok else "  ✗ ", PASS if ok else f"bold {FAIL}"),
                                       (f"{scorer} ", "dim"), repr(item)))
    if lines:
        needles: list[str | re.Pattern[str]] = [s for k in ("contains", "not_contains") if k in expect
                                                for s in (expect[k] if isinstance(expect[k], list) else [expect[k]])]
        for pattern in (expect.get("regex") or []) if isinstance(expect.get("regex"), list) else (
                [expect["regex"]] if "regex" in expect else []):
            try:
                needles.append(re.compile(pattern))
            except re.error:
                pass
        parts.append(Group(*lines))
        parts.append(Text("output text, matches highlighted:", style="dim"))
        parts.append(_highlight(one_line(text, 2000) if len(text) > 2000 else text, needles, "bold reverse"))
    for scorer in ("json_schema", "number", "calls", "judge", "max_ms", "status"):
        if scorer in expect:
            argument = expect[scorer]
            shown = argument if isinstance(argument, str | int | float) else one_line(argument, 200)
            parts.append(Text.assemble((f"{scorer}: ", "bold"), str(shown)))
    return parts


def case_detail(case: EvalCaseResult, spec: EvalCaseSpec | None, run: EvalResult, suite_note: str) -> RenderableType:
    """One case of a run: verdict, inputs, scores, and the output against its expectation."""
    head = Text.assemble((case.id, "bold"), "  ", verdict(case.passed), "  ",
                         (f"{case.file}:{case.line}", "dim"))
    if case.repeat > 1:
        rule = "pass@k: one must pass" if case.pass_rule == "any" else "every attempt must pass"
        head.append(f"   {case.passes}/{case.repeat} attempts passed ({rule})", style="dim")
    parts: list[RenderableType] = [head]
    if spec is not None and spec.description:
        parts.append(Text(spec.description, style="italic"))
    # The attempt shown: the first that failed (what needs fixing), else the first.
    attempt = next((a for a in case.attempts if not a.passed), case.attempts[0] if case.attempts else None)
    if spec is not None:
        inputs = spec.inputs
        parts.append(render.heading("\ninput" if len(inputs) == 1 else f"\ninputs ({len(inputs)} turns, one session)"))
        for turn in inputs:
            parts.append(Text(one_line(turn, 400)))
    if attempt is None:
        parts.append(Text("\nno attempt ran", style="dim"))
        return Group(*parts)
    which = case.attempts.index(attempt) + 1
    label = f"\nscores (attempt {which} of {len(case.attempts)})" if len(case.attempts) > 1 else "\nscores"
    parts.append(render.heading(label))
    scores = render.grid()
    scores.add_column(no_wrap=True)
    scores.add_column(style="bold", no_wrap=True)
    scores.add_column()
    for s in attempt.scores:
        scores.add_row(Text("✓", style=PASS) if s.passed else Text("✗", style=f"bold {FAIL}"), s.scorer,
                       Text(s.detail, style="" if s.passed else FAIL))
    if attempt.scores:
        parts.append(scores)
    if attempt.error:
        parts.append(Text(f"error: {attempt.error}", style=FAIL))
    parts.append(render.heading("\noutput vs expectation"))
    if spec is not None:
        parts.extend(expectation_view(spec, attempt) or [Text("(the case expects nothing beyond a run that "
                                                                "succeeds)", style="dim")])
    else:
        parts.append(Text(suite_note, style="dim"))
    parts.append(render.heading("\noutput"))
    parts.append(render.json_renderable(attempt.output) if attempt.output is not None else Text("(none)", style="dim"))
    ids = ", ".join(attempt.execution_ids) or "none"
    parts.append(Text(f"\nexecution{'s' if len(attempt.execution_ids) != 1 else ''} {ids} · "
                      f"{duration(attempt.duration_ms)} · t opens the trace · run {run.id}", style="dim"))
    return Group(*parts)


# ------------------------------------------------------------ the view
class EvalsView(View):
    TITLE = "Evals"
    KEY = "evals"
    GROUP = "Observe"
    CSS_FILE = "views/evals.tcss"
    LIVE = True
    REQUIRES = ("list_eval_runs", "get_eval_run", "eval_suite")
    BANNER = ("Production is read-only; these are production's eval runs (rf eval NAME --env production, "
              "and the release gate's). Press e for staging.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "toggle_failed", "Failed only"),
        Binding("t", "trace", "Trace"),
        Binding("s", "toggle_tab", "Suites/runs"),
        Binding("c", "clear_agent", "All agents"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[EvalResult] = []
        self.place: str | None = None  #: the selected run's id
        self.case_place: str | None = None  #: the selected case's id
        self.failed_only = False
        self.agent: str | None = None  #: runs of this agent only (chosen on the Suites tab)
        self.run: EvalResult | None = None  #: the selected run, with its cases
        self.spec: EvalSuite | None = None  #: the suite of the selected run's commit (None: not known)
        self.suite_note = ""
        self.suites: list[tuple[str, EvalSuite | None, str]] = []  #: (agent, suite, problem)
        self.suite_place: str | None = None
        self._runs_cache: dict[str, EvalResult] = {}  #: stored runs never change
        self._suites_cache: dict[tuple[str, str], EvalSuite | str] = {}  #: (agent, commit) -> suite | why none

    def compose_view(self) -> ComposeResult:
        with TabbedContent(initial="evals-runs", id="evals-tabs"):
            with TabPane("Runs", id="evals-runs"):
                with Vertical(id="evals-runs-body"):
                    runs: DataTable[str | Text] = Table(id="eval-runs", cursor_type="row", zebra_stripes=True)
                    for label in ("run", "agent", "commit", "passed", "took", "when"):
                        runs.add_column(label, key=label)
                    yield runs
                    yield Static("", id="eval-run-head")
                    with Horizontal(id="eval-run-body"):
                        cases: DataTable[str | Text] = Table(id="eval-cases", cursor_type="row", zebra_stripes=True)
                        for label in ("case", "result", "slowest"):
                            cases.add_column(label, key=label)
                        yield cases
                        with VerticalScroll(id="eval-case-detail", classes="detail"):
                            yield Static("", id="eval-case-body")
                yield Empty("", id="evals-runs-empty")
            with TabPane("Suites", id="evals-suites"):
                with Horizontal(id="evals-suites-body"):
                    suites: DataTable[str | Text] = Table(id="eval-suites", cursor_type="row", zebra_stripes=True)
                    for label in ("agent", "commit", "cases", "last run", "when"):
                        suites.add_column(label, key=label)
                    yield suites
                    with VerticalScroll(id="eval-suite-detail", classes="detail"):
                        yield Static("", id="eval-suite-body")
                yield Empty("", id="evals-suites-empty")

    @property
    def tab(self) -> str:
        return self.query_one("#evals-tabs", TabbedContent).active

    def focus_default(self) -> None:
        if self.rf.current_view != self.KEY:
            return
        target = self.query_one("#eval-suites" if self.tab == "evals-suites" else "#eval-runs", DataTable)
        if self._shown(target) and target.row_count:
            target.focus()
        else:
            self.can_focus = True
            self.focus()

    # ------------------------------------------------------------ data
    def reload(self) -> None:
        self.load_runs()
        if self.tab == "evals-suites":
            self.load_suites()

    def poll(self) -> None:
        self.load_runs()  # suites change with a deploy: r reloads them

    def load_runs(self) -> None:
        env, agent, backend = self.env, self.agent, self.backend
        self.call(lambda: backend.list_eval_runs(agent, env, 200), self.show_runs)

    def show_runs(self, runs: list[EvalResult]) -> None:
        table = self.query_one("#eval-runs", DataTable)
        changed = [r.id for r in runs] != [r.id for r in self.runs] or self.loaded_env != self.env \
            or table.row_count != len(runs)
        self.runs = runs
        if changed:
            keep = self.place or selected_key(table)
            index = table.cursor_row
            now = self.now()
            table.clear()
            for r in runs:
                table.add_row(Text(r.id, style="dim"), Text(r.agent, style="bold"), short(r.commit),
                              passed_text(r.passed, r.total), duration(r.duration_ms), ago(r.started_at, now),
                              key=r.id)
            restore_cursor(table, keep, index)
            self.place = selected_key(table)
        has = bool(runs)
        self.query_one("#evals-runs-body", Vertical).display = has
        empty = self.query_one("#evals-runs-empty", Empty)
        who = f"agent {self.agent}" if self.agent else "any agent"
        empty.update(f"No eval runs of {who} in {self.env} yet. Add cases to agents/NAME/evals/ (a .yaml or "
                     f".jsonl file), deploy, then run them: rf eval NAME --env {self.env}. A release plan runs "
                     "them too (rf releases plan).")
        empty.set_class(not has, "-shown")
        self.update_subtitle()
        self.load_run()
        self.painted()

    def update_subtitle(self) -> None:
        scope = f"agent {self.agent} (c: all agents) · " if self.agent else ""
        failing = sum(1 for r in self.runs if r.failed)
        self.set_subtitle(f"{scope}{plural(len(self.runs), 'stored run')} in {self.env}"
                          + (f" · {failing} with failing cases" if failing else ""))

    def selected_run(self) -> EvalResult | None:
        return next((r for r in self.runs if r.id == self.place), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = None if event.row_key.value is None else str(event.row_key.value)
        if key is None:
            return
        if event.data_table.id == "eval-runs":
            if key != self.place:
                self.place = key
                self.case_place = None
                self.load_run()
        elif event.data_table.id == "eval-cases":
            self.case_place = key
            self.show_case()
        elif event.data_table.id == "eval-suites":
            self.suite_place = key
            self.show_suite()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "eval-runs":
            self.query_one("#eval-cases", DataTable).focus()
        elif event.data_table.id == "eval-suites" and event.row_key.value is not None:
            self.agent = str(event.row_key.value)  # enter: that agent's runs
            self.place = None
            self._tab("evals-runs")
            self.refresh_bindings()
            self.load_runs()

    def load_run(self) -> None:
        summary = self.selected_run()
        if summary is None:
            self.run, self.spec = None, None
            self.show_run()
            return
        if self.run is not None and self.run.id == summary.id:
            return
        backend = self.backend
        runs, suites = self._runs_cache, self._suites_cache

        def fetch() -> tuple[EvalResult, EvalSuite | str]:
            run = runs.get(summary.id) or backend.get_eval_run(summary.id)
            runs[run.id] = run
            key = (run.agent, run.commit)
            suite = suites.get(key)
            if suite is None:
                if run.commit == WORKING_COPY or run.commit.startswith(WORKING_COPY):
                    suite = ("expectations not shown: this run used the working copy's suite (rf eval --local), "
                             "which is not stored; see agents/" + run.agent + "/evals/")
                else:
                    try:
                        suite = backend.eval_suite(run.agent, run.env, run.commit)
                    except RfError as exc:
                        suite = f"expectations not shown: {exc.message}"
                suites[key] = suite
            return run, suite

        self.call(fetch, self.got_run, group="run")

    def got_run(self, got: tuple[EvalResult, EvalSuite | str]) -> None:
        run, suite = got
        if run.id != self.place:
            return
        self.run = run
        self.spec, self.suite_note = (suite, "") if isinstance(suite, EvalSuite) else (None, suite)
        self.show_run()

    def show_run(self) -> None:
        run = self.run
        head = self.query_one("#eval-run-head", Static)
        table = self.query_one("#eval-cases", DataTable)
        if run is None:
            head.update("")
            table.clear()
            self.query_one("#eval-case-body", Static).update("")
            return
        head.update(Text.assemble(
            (run.agent, "bold"), "  ", render.env_text(run.env), f" commit {short(run.commit, 12)}  ",
            passed_text(run.passed, run.total), " passed", f"  · {duration(run.duration_ms)}",
            f" · {run.workers} at a time · connectors: {run.connectors} · {when(run.started_at)} UTC",
            (f" · {', '.join(run.files)}" if run.files else "", "dim"),
            ("  · failed only (f)" if self.failed_only else "", "yellow")))
        keep = self.case_place
        table.clear()
        shown = [c for c in run.cases if not (self.failed_only and c.passed)]
        for c in shown:
            result = verdict(c.passed)
            if c.repeat > 1:
                result.append(f" {c.passes}/{c.repeat}", style="dim")
            table.add_row(Text(one_line(c.id, 28)), result, duration(c.duration_ms), key=c.id)
        if shown:
            # the first failing case, unless the user chose one
            first_failed = next((c.id for c in shown if not c.passed), shown[0].id)
            restore_cursor(table, keep if keep in {c.id for c in shown} else first_failed)
            self.case_place = selected_key(table)
        else:
            self.case_place = None
        self.show_case()

    def selected_case(self) -> EvalCaseResult | None:
        if self.run is None:
            return None
        return next((c for c in self.run.cases if c.id == self.case_place), None)

    def show_case(self) -> None:
        body = self.query_one("#eval-case-body", Static)
        case, run = self.selected_case(), self.run
        if case is None or run is None:
            body.update(Text("every case passed (f shows them all)", style="dim")
                        if run is not None and self.failed_only else "")
            return
        spec = None
        note = self.suite_note
        if self.spec is not None:
            spec = next((s for s in self.spec.cases if s.id == case.id), None)
            if spec is None:
                note = f"expectations not shown: the suite of commit {short(run.commit)} has no case {case.id!r}"
        body.update(case_detail(case, spec, run, note))

    # ------------------------------------------------------------ suites
    def load_suites(self) -> None:
        env, backend = self.env, self.backend
        suites = self._suites_cache

        def fetch() -> list[tuple[str, EvalSuite | None, str]]:
            rows: list[tuple[str, EvalSuite | None, str]] = []
            for agent in backend.list_agents():
                commit = agent.staging_commit if env == "staging" else agent.production_commit
                if commit is None:
                    continue
                key = (agent.name, commit)
                found = suites.get(key)
                if found is None:
                    try:
                        found = backend.eval_suite(agent.name, env, commit)
                    except RfError as exc:  # e.g. a suite that no longer loads with this rf's scorers
                        found = exc.message
                    suites[key] = found
                rows.append((agent.name, found, "") if isinstance(found, EvalSuite) else (agent.name, None, found))
            return rows

        self.call(fetch, self.show_suites, group="suites")

    def show_suites(self, rows: list[tuple[str, EvalSuite | None, str]]) -> None:
        self.suites = rows
        table = self.query_one("#eval-suites", DataTable)
        keep = self.suite_place or selected_key(table)
        index = table.cursor_row
        latest = {}
        for r in reversed(self.runs):
            latest[r.agent] = r  # newest last wins (runs are newest first)
        now = self.now()
        table.clear()
        for agent, suite, _problem in rows:
            last = latest.get(agent)
            cases: Text | str = (str(len(suite.cases)) if suite is not None and suite.cases
                                 else Text("none" if suite is not None else "bad", style="dim" if suite else FAIL))
            table.add_row(Text(agent, style="bold"), short(suite.commit if suite else None), cases,
                          passed_text(last.passed, last.total) if last else Text("—", style="dim"),
                          ago(last.started_at, now) if last else "", key=agent)
        restore_cursor(table, keep, index)
        self.suite_place = selected_key(table)
        has = bool(rows)
        self.query_one("#evals-suites-body", Horizontal).display = has
        empty = self.query_one("#evals-suites-empty", Empty)
        empty.update(f"No agent is deployed in {self.env}, so there is no suite to show.")
        empty.set_class(not has, "-shown")
        self.show_suite()
        self.focus_default()

    def show_suite(self) -> None:
        body = self.query_one("#eval-suite-body", Static)
        row = next((r for r in self.suites if r[0] == self.suite_place), None)
        if row is None:
            body.update("")
            return
        agent, suite, problem = row
        if suite is None:
            body.update(Text.assemble((agent, "bold"), "\n", (problem, FAIL)))
            return
        if not suite.cases:
            body.update(Text.assemble(
                (agent, "bold"), f"  commit {short(suite.commit, 12)}\n\n",
                (f"No eval suite: add agents/{agent}/evals/smoke.yaml (a list of cases: id, input, expect), "
                 f"try it with rf eval {agent} --local, then deploy it (rf agents deploy {agent}).", "dim")))
            return
        table = render.grid(header=True)
        table.add_column("case", style="bold", no_wrap=True)
        table.add_column("where", style="dim", no_wrap=True)
        table.add_column("expects")
        for c in suite.cases:
            scorers = ", ".join(c.expect) or "a run that succeeds"
            if c.repeat > 1:
                scorers += f" · ×{c.repeat} ({'pass@k' if c.pass_rule == 'any' else 'all'})"
            if c.multi_turn:
                scorers += f" · {len(c.inputs)} turns"
            table.add_row(c.id, f"{c.file}:{c.line}", scorers)
        body.update(Group(
            Text.assemble((agent, "bold"), "  ", render.env_text(self.env), f" commit {short(suite.commit, 12)}\n",
                          plural(len(suite.cases), "case"), f" in {', '.join(suite.files)}"),
            Text("enter: this agent's runs", style="dim"), Text(""), table))

    # ------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self.is_mounted or self.missing():
            return super().check_action(action, parameters)
        runs = self.tab == "evals-runs"
        if action in ("toggle_failed", "trace"):
            return runs
        if action == "clear_agent":
            return self.agent is not None
        return super().check_action(action, parameters)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()
        if self.tab == "evals-suites":
            self.load_suites()
        self.focus_default()

    def _tab(self, tab: str) -> None:
        self.query_one("#evals-tabs", TabbedContent).active = tab

    def action_toggle_tab(self) -> None:
        self._tab("evals-suites" if self.tab == "evals-runs" else "evals-runs")

    def action_toggle_failed(self) -> None:
        self.failed_only = not self.failed_only
        self.show_run()

    def action_clear_agent(self) -> None:
        self.agent = None
        self.place = None
        self.refresh_bindings()
        self.load_runs()

    async def action_trace(self) -> None:
        case = self.selected_case()
        attempt = next((a for a in case.attempts if not a.passed), case.attempts[0]) if case and case.attempts else None
        if attempt is None or not attempt.execution_ids:
            self.rf.notify("No execution to show: select a case that ran.", severity="warning")
            return
        await self.rf.open_trace(execution_id=attempt.execution_ids[-1])

    def commands(self) -> Iterable[Command]:
        yield Command("Eval runs", lambda: self._tab("evals-runs"), "Stored eval runs of this environment")
        yield Command("Eval suites", lambda: self._tab("evals-suites"), "Each agent's suite (key s)")
        yield Command("Eval cases: failed only / all", self.action_toggle_failed, "Key f")
