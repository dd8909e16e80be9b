"""Releases: every staging → production difference, its diff, publish (by plan id), history, rollback.

Publishing is the one write offered while production is shown: it is how
production changes. The confirmation shows the plan (items, warnings,
missing dependencies) and publishes with that plan's id, so anything that
moved in between makes the service refuse instead of shipping unreviewed
changes.

The plan carries the release gate's eval evidence (per agent: cases passed in production →
on staging's state, regressions, new failures): ``v`` shows it for the selected changes without
publishing, and the publish dialog shows it above the items. A plan with regressions opens
:class:`PublishModal` instead of a plain confirmation: it publishes only with a reason (the
dashboard's ``--accept-regressions -m "why"``), which the release records with the evidence.

Both publish dialogs have a percent field: a percent starts the plan as a canary release on that
share of production traffic instead (``--canary PERCENT``). The Canary tab (rf.tui.views.canary)
shows the running canary's arms side by side and decides it: ``w`` weight, ``p`` promote, ``x``
abort, each confirmed like a publish; a line above the tabs says a canary runs.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, SelectionList, Static, TabbedContent, TabPane
from textual.widgets.selection_list import Selection

from rf import api
from rf.errors import Conflict, NotFound, RfError
from rf.models import Canary, Release, ReleaseItem, ReleasePlan
from rf.tui import render
from rf.tui.format import ago, one_line, plural, state_label, when
from rf.tui.modals import ChoiceModal, ConfirmModal, FormModal
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.views.canary import (
    KIND_STYLES,
    CanaryAbortModal,
    CanaryWeightModal,
    PublishConfirmModal,
    canary_line,
    canary_renderable,
    parse_percent,
    promote_modal,
    release_note,
    rollback_hint,
)
from rf.tui.views.evals import eval_evidence
from rf.tui.widgets import Empty, Table


def item_key(item: ReleaseItem) -> str:
    return f"{item.kind}:{item.name}"


@dataclass
class ItemDiff:
    key: str
    body: RenderableType


def fetch_item_diff(backend: Any, item: ReleaseItem, now: _dt.datetime) -> ItemDiff:
    """The full diff of one pending item, in the style of its kind."""
    key = item_key(item)
    header = Text.assemble(
        (f"{item.kind} ", render.KIND_STYLE.get(item.kind, "")), (item.name, "bold"), "  ", (item.summary, "dim"), "\n"
    )
    if item.after is None and item.before is not None:  # deleted in staging: "remove from production"
        return ItemDiff(key, Group(header, Text.assemble(
            render.env_text("production"), f" has {state_label(item.before)}; ",
            render.env_text("staging"), " deleted it: publishing removes it from production ",
            ("(rolling that release back restores it).", "dim"))))
    if item.kind == "agent":
        return ItemDiff(key, Group(header, render.agent_diff(backend.diff_agent(item.name), now)))
    if item.kind == "prompt" and "diff_prompt" in api.BY_NAME:
        return ItemDiff(key, Group(header, render.prompt_diff(backend.diff_prompt(item.name))))
    if item.kind == "connector" and "diff_connector" in api.BY_NAME:
        return ItemDiff(key, Group(header, render.connector_diff(backend.diff_connector(item.name))))
    table = render.grid()
    table.add_column(style="bold")
    table.add_column()
    table.add_row(render.env_text("production"), one_line(item.before, 80) if item.before is not None else "(none)")
    table.add_row(render.env_text("staging"), one_line(item.after, 80) if item.after is not None else "(none)")
    return ItemDiff(key, Group(header, table))


def plan_with_evidence(plan: ReleasePlan) -> RenderableType:
    """A plan as the publish dialogs show it: the eval evidence first (when a suite covers the
    changes), then the items, warnings and missing dependencies."""
    if not plan.evals:
        return render.release_plan(plan)
    if all(e.status == "no-suite" for e in plan.evals):  # nothing to compare: a line after the items
        return Group(render.release_plan(plan), eval_evidence(plan.evals))
    return Group(Text("eval suites (cases passed: production → staging)", style="bold"), eval_evidence(plan.evals),
                 Text(""), render.release_plan(plan))


def regressions_of(plan: ReleasePlan) -> list[str]:
    """``agent: case`` of every regression in the plan."""
    return [f"{e.agent}: {case}" for e in plan.evals for case in e.regressions]


class PublishModal(FormModal):
    """Publish a plan whose eval cases regress: the evidence, then a reason, which is required
    (the dashboard's ``--accept-regressions -m "why"``). Dismisses with the reason, or None."""

    SUBMIT_LABEL = "Publish with regressions"

    def __init__(self, plan: ReleasePlan) -> None:
        super().__init__(classes="form")
        self.plan = plan
        self.canary: float | None = None  #: the canary percent typed (None: all of production)
        count = len(regressions_of(plan))
        self.TITLE_TEXT = (f"Publish {plural(len(plan.items), 'change')} to production? "
                           f"{plural(count, 'eval case')} regress")

    def compose_form(self) -> ComposeResult:
        yield Static(plan_with_evidence(self.plan))
        what = "; ".join(f"agent {e.agent}: {', '.join(e.regressions)}" for e in self.plan.evals if e.regressions)
        yield Static(f"{what} pass in production and fail on staging's state. Publish anyway only if you "
                     "mean it: your reason is recorded with the release, next to this evidence.",
                     classes="warning", markup=False)
        yield Label("Why publish these regressions? (required)", classes="field-label")
        yield Input(placeholder="e.g. the greeting copy changes on purpose; cases updated next", id="reason")
        yield self.field_error("reason")
        yield Label("Canary (optional): percent of production traffic on this release", classes="field-label")
        yield Input(placeholder="empty: all of production at once · e.g. 10: a canary beside the current release",
                    id="canary")
        yield self.field_error("canary")

    def on_mount(self) -> None:
        self.query_one("#submit", Button).variant = "error"
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.show_error("reason", 'A reason is required to publish regressions (as rf releases publish '
                                      '--accept-regressions -m "why").')
            return
        text = self.query_one("#canary", Input).value
        try:
            self.canary = parse_percent(text, lowest=0, highest=100, inclusive=False) if text.strip() else None
        except ValueError as exc:
            self.show_error("canary", f"Canary: {exc}")
            return
        self.dismiss(reason)


class ReleasesView(View):
    TITLE = "Releases"
    KEY = "releases"
    GROUP = "Release"
    CSS_FILE = "views/releases.tcss"
    LIVE = True
    BANNER = "Production is read-only; publishing reviewed changes here (p) is how it changes. Press e for staging."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "publish", "Publish"),
        Binding("v", "evals", "Eval evidence"),
        Binding("a", "toggle_all", "All/none"),
        Binding("h", "toggle_tab", "History/pending"),
        Binding("b", "rollback", "Roll back"),
        Binding("c", "canary_tab", "Canary"),
        # The Canary tab's decisions (p is publish on Pending changes, promote here: one tab at a time).
        Binding("w", "canary_weight", "Weight"),
        Binding("p", "canary_promote", "Promote canary"),
        Binding("x", "canary_abort", "Abort canary"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.items: list[ReleaseItem] = []
        self.deselected: set[str] = set()  #: items the user unticked (new items start ticked)
        self.place: str | None = None
        self.releases: list[Release] = []
        self.release_place: str | None = None
        self._diff_for: tuple[str, Any, Any] | None = None
        #: the eval evidence shown, and the selection it belongs to (see selection_marker)
        self.evidence: ReleasePlan | None = None
        self._evidence_for: Any = None
        self.canary: Canary | None = None  #: the running canary, else the last one (None: none ever ran)

    def compose_view(self) -> ComposeResult:
        yield Static("", id="release-canary-line")
        with TabbedContent(initial="releases-pending", id="releases-tabs"):
            with TabPane("Pending changes", id="releases-pending"):
                with Vertical(id="releases-pending-body"):
                    yield SelectionList[str](id="release-items")
                    yield Static("", id="release-selection-info")
                    yield Static("", id="release-evals")
                    with VerticalScroll(id="release-diff"):
                        yield Static("", id="release-diff-body")
                yield Empty(
                    "Nothing to publish: staging and production are the same. Deploy, edit a prompt or a "
                    "connector in staging and it shows up here.",
                    id="releases-empty",
                )
            with TabPane("History", id="releases-history"):
                table: DataTable[str | Text] = Table(id="release-history", cursor_type="row", zebra_stripes=True)
                for label in ("release", "when", "author", "kind", "message", "items"):
                    table.add_column(label, key=label)
                yield table
                yield Empty("No releases yet — production has never changed.", id="release-history-empty")
                with VerticalScroll(id="release-detail", classes="detail"):
                    yield Static("", id="release-detail-body")
            with TabPane("Canary", id="releases-canary"):
                with VerticalScroll(id="release-canary"):
                    yield Static("", id="release-canary-body")
                yield Empty(
                    "No canary release has run. Start one from Pending changes: p, then a percent in the publish "
                    "dialog (rf releases publish --plan ID --canary 10): the release runs on that share of "
                    "production traffic beside the current one until you promote or abort it.",
                    id="release-canary-empty",
                )

    @property
    def tab(self) -> str:
        return self.query_one("#releases-tabs", TabbedContent).active

    def focus_default(self) -> None:
        if self.rf.current_view != self.KEY:
            return  # mounted ahead of time (warm-up) or hidden: never steal the focus
        tab = self.tab
        target: Any = (self.query_one("#release-history", DataTable) if tab == "releases-history"
                       else self.query_one("#release-canary", VerticalScroll) if tab == "releases-canary"
                       else self.query_one("#release-items", SelectionList))
        if self._shown(target):
            target.focus()
        else:  # nothing listed on this tab: the view itself, so its keys (h, r…) still work
            self.can_focus = True
            self.focus()

    # ------------------------------------------------------------ data
    def reload(self) -> None:
        backend = self.backend

        def fetch() -> tuple[list[ReleaseItem], list[Release], Canary | None]:
            canary = None
            if "canary_status" in api.BY_NAME:
                try:
                    canary = backend.canary_status()
                except NotFound:  # no canary release has run yet
                    canary = None
            return backend.release_items(), backend.list_releases(100), canary

        self.call(fetch, self.show_data)

    def show_data(self, data: tuple[list[ReleaseItem], list[Release], Canary | None]) -> None:
        items, releases, canary = data
        self.show_items(items)
        self.show_history(releases)
        self.show_canary(canary)
        focused = self.app.focused
        if self.rf.current_view == self.KEY and (focused is None or focused is self or not self._shown(focused)):
            # The list appeared (focus on the view) or was hidden under the focus (which Textual
            # then moves to some other hidden widget): the list gets it, so arrow keys move it at
            # once, without shift+tab first. A place the user chose (the diff, a dialog) is kept.
            self.focus_default()
        self.painted()

    def show_items(self, items: list[ReleaseItem]) -> None:
        sl: SelectionList[str] = self.query_one("#release-items", SelectionList)
        changed = [(i.kind, i.name, i.summary, i.before, i.after) for i in items] != [
            (i.kind, i.name, i.summary, i.before, i.after) for i in self.items
        ] or sl.option_count != len(items)
        self.items = items
        if changed:
            keep = self.place
            sl.clear_options()
            sl.add_options(
                [Selection(render.item_line(i), item_key(i), item_key(i) not in self.deselected) for i in items]
            )
            keys = [item_key(i) for i in items]
            if items:
                sl.highlighted = keys.index(keep) if keep in keys else 0
                self.place = keys[sl.highlighted]
        has = bool(items)
        self.query_one("#releases-pending-body", Vertical).display = has
        self.query_one("#releases-empty", Empty).set_class(not has, "-shown")
        self.update_selection_info()
        if changed:
            self.load_diff(force=True)

    def selection_marker(self) -> Any:
        """What the eval evidence depends on: the chosen items and their states."""
        return tuple((i.kind, i.name, repr(i.before), repr(i.after)) for i in self.chosen())

    def show_evidence(self) -> None:
        body = self.query_one("#release-evals", Static)
        plan = self.evidence
        if plan is None or self._evidence_for != self.selection_marker():
            self.evidence = None
            body.update(Text("Eval evidence: v runs the eval suites of the agents these changes touch, on "
                             "staging's state and production's (publishing runs them too).", style="dim")
                        if self.items else "")
            return
        if not plan.evals:
            body.update(Text(f"Eval evidence (plan {plan.id}): no eval suite covers these changes.", style="dim"))
            return
        body.update(Group(Text(f"Eval evidence (plan {plan.id}) — cases passed: production → staging", style="bold"),
                          eval_evidence(plan.evals)))

    def update_selection_info(self) -> None:
        chosen = len(self.chosen())
        info = f"{chosen} of {plural(len(self.items), 'change')} selected"
        info += " · space toggles · a all/none · v eval evidence · p publish" if self.items else ""
        self.query_one("#release-selection-info", Static).update(Text(info, style="dim"))
        self.show_evidence()
        running = self.running()
        self.set_subtitle(
            f"{plural(len(self.items), 'change')} waiting in staging · "
            f"{plural(len(self.releases), 'release')} in history"
            + (f" · canary on {running.weight:g} %" if running is not None else "")
        )

    # ------------------------------------------------------------ canary
    def running(self) -> Canary | None:
        """The running canary release (None: none runs)."""
        return self.canary if self.canary is not None and self.canary.status == "running" else None

    def show_canary(self, canary: Canary | None) -> None:
        self.canary = canary
        running = self.running()
        self.rf.canary_seen(None if running is None else (running.id, float(running.weight)))
        line = self.query_one("#release-canary-line", Static)
        line.display = running is not None
        line.update(canary_line(running) if running is not None else "")
        self.query_one("#release-canary", VerticalScroll).display = canary is not None
        self.query_one("#release-canary-empty", Empty).set_class(canary is None, "-shown")
        self.query_one("#release-canary-body", Static).update(
            canary_renderable(canary, self.now()) if canary is not None else "")
        self.update_selection_info()
        self.refresh_bindings()

    def chosen(self) -> list[ReleaseItem]:
        return [i for i in self.items if item_key(i) not in self.deselected]

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged[str]) -> None:
        selected = set(event.selection_list.selected)
        self.deselected = {item_key(i) for i in self.items if item_key(i) not in selected}
        self.update_selection_info()

    def on_selection_list_selection_highlighted(self, event: SelectionList.SelectionHighlighted[str]) -> None:
        self.place = event.selection.value
        self.load_diff()

    def load_diff(self, force: bool = False) -> None:
        item = next((i for i in self.items if item_key(i) == self.place), None)
        body = self.query_one("#release-diff-body", Static)
        if item is None:
            body.update("")
            self._diff_for = None
            return
        marker = (item_key(item), item.before, item.after)
        if marker == self._diff_for and not force:
            return
        self._diff_for = marker
        backend, now = self.backend, self.now()
        self.call(lambda: fetch_item_diff(backend, item, now), self.show_diff, group="diff")

    def show_diff(self, d: ItemDiff) -> None:
        if d.key == self.place:
            self.query_one("#release-diff-body", Static).update(d.body)

    # ------------------------------------------------------------ history
    def show_history(self, releases: list[Release]) -> None:
        table = self.query_one("#release-history", DataTable)
        changed = [r.id for r in releases] != [r.id for r in self.releases] or table.row_count != len(releases)
        self.releases = releases
        if changed:
            keep = self.release_place or selected_key(table)
            index = table.cursor_row
            now = self.now()
            table.clear()
            for r in releases:
                items = ", ".join(f"{i.kind} {i.name}" for i in r.items)
                table.add_row(
                    Text(r.id[:12], style="dim"),  # (a prefix rf releases show takes; the detail has it all)
                    ago(r.created_at, now),
                    Text(one_line(r.author, 12)),
                    Text(r.kind, style=KIND_STYLES.get(r.kind, "")),
                    Text(one_line(r.message, 18)),
                    self._items_cell(r, items),
                    key=r.id,
                )
            restore_cursor(table, keep, index)
        table.display = bool(releases)
        self.query_one("#release-history-empty", Empty).set_class(not releases, "-shown")
        self.query_one("#release-detail", VerticalScroll).display = bool(releases)
        self.show_release()
        self.update_selection_info()

    @staticmethod
    def _items_cell(r: Release, items: str) -> Text:
        if r.kind == "canary-weight":
            return Text(f"weight → {r.weight:g} %" if r.weight is not None else "weight", style="dim")
        if r.kind == "canary":
            return Text(one_line(items + (f" @ {r.weight:g} %" if r.weight is not None else ""), 24))
        if not r.items and r.kind == "canary-abort":
            return Text("back on stable", style="dim")
        return Text(one_line(items, 24))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "release-history" and event.row_key.value is not None:
            self.release_place = str(event.row_key.value)
            self.show_release()

    def selected_release(self) -> Release | None:
        key = self.release_place or selected_key(self.query_one("#release-history", DataTable))
        return next((r for r in self.releases if r.id == key), None)

    def show_release(self) -> None:
        r = self.selected_release()
        body = self.query_one("#release-detail-body", Static)
        if r is None:
            body.update("")
            return
        table = render.grid(header=True)
        table.add_column("kind")
        table.add_column("name", style="bold")
        table.add_column("before", style="#f87171")
        table.add_column("")
        table.add_column("after", style="#4ade80")
        table.add_column("change", style="dim")
        for i in r.items:
            table.add_row(
                Text(i.kind, style=render.KIND_STYLE.get(i.kind, "")),
                i.name,
                state_label(i.before),
                "→",
                state_label(i.after),
                i.summary,
            )
        head = Text.assemble(
            (r.id, "bold"),
            f"  {r.kind} · {when(r.created_at)} UTC · by {r.author}\n",
            (r.message, "italic"),
            (f"   plan {r.plan_id}" if r.plan_id else "", "dim"),
        )
        evidence: list[RenderableType] = []
        note = release_note(r)
        if note is not None:
            evidence += [Text(""), note]
        if r.evals:
            evidence += [Text("\neval suites (cases passed: production → staging)", style="bold"),
                         eval_evidence(r.evals)]
        if r.accepted_regressions is not None:
            evidence.append(Text(f"regressions accepted: {r.accepted_regressions}", style="bold yellow"))
        body.update(
            Group(
                head,
                *((Text(""), table) if r.items else ()),  # (a canary's weight or abort has no items)
                *evidence,
                Text(rollback_hint(r), style="dim"),
            )
        )

    # ------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self.is_mounted or self.missing():
            return super().check_action(action, parameters)
        tab = self.tab
        if action in ("publish", "toggle_all", "evals"):
            return tab == "releases-pending"
        if action == "rollback":
            return tab == "releases-history"
        if action in ("canary_weight", "canary_promote", "canary_abort"):
            return tab == "releases-canary" and self.running() is not None
        return super().check_action(action, parameters)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()
        self.focus_default()

    def action_toggle_tab(self) -> None:
        tabs = self.query_one("#releases-tabs", TabbedContent)
        tabs.active = "releases-pending" if tabs.active == "releases-history" else "releases-history"

    def action_canary_tab(self) -> None:
        tabs = self.query_one("#releases-tabs", TabbedContent)
        tabs.active = "releases-pending" if tabs.active == "releases-canary" else "releases-canary"

    def action_toggle_all(self) -> None:
        sl: SelectionList[str] = self.query_one("#release-items", SelectionList)
        if self.deselected:
            sl.select_all()
        else:
            sl.deselect_all()

    def action_publish(self) -> None:
        chosen = self.chosen()
        if not chosen:
            self.rf.notify(
                "Select at least one change to publish (space toggles, a selects all)."
                if self.items
                else "Nothing to publish: staging and production are the same.",
                severity="warning",
            )
            return
        every = len(chosen) == len(self.items)
        names = None if every else [item_key(i) for i in chosen]
        backend = self.backend

        def plan() -> tuple[ReleasePlan, Any, Any]:
            p = backend.plan_release(names, all=every)
            approvals = me = None
            if hasattr(backend, "plan_approvals"):  # [releases] approvals: the review of this plan id
                approvals = backend.plan_approvals(p.id)
                if approvals.required:
                    me = backend.whoami()
            return p, approvals, me

        marker = self.selection_marker()

        def planned(got: tuple[ReleasePlan, Any, Any]) -> None:
            self.got_evidence(got[0], marker)  # the evidence panel keeps what was reviewed
            self.confirm_publish(got[0], names, every, got[1], got[2])

        self.call(plan, planned, group="publish")

    def action_evals(self) -> None:
        """The eval evidence of the selected changes: their plan, without publishing."""
        chosen = self.chosen()
        if not chosen:
            self.rf.notify("Select at least one change (space toggles, a selects all).", severity="warning")
            return
        every = len(chosen) == len(self.items)
        names = None if every else [item_key(i) for i in chosen]
        backend, marker = self.backend, self.selection_marker()
        self.query_one("#release-evals", Static).update(
            Text("Running the eval suites of these changes (staging's state and production's)…", style="dim"))
        self.call(lambda: backend.plan_release(names, all=every), lambda plan: self.got_evidence(plan, marker),
                  group="evals")

    def got_evidence(self, plan: ReleasePlan, marker: Any) -> None:
        self.evidence, self._evidence_for = plan, marker
        self.show_evidence()

    def confirm_publish(self, plan: ReleasePlan, names: list[str] | None, every: bool,
                        approvals: Any = None, me: Any = None) -> None:
        backend = self.backend
        if approvals is not None and approvals.required and len(approvals.approvals) < approvals.required:
            self.ask_approval(plan, approvals, me)
            return
        if plan.missing_suites:
            first = plan.missing_suites[0]
            self.app.push_screen(ChoiceModal(
                f"Plan {plan.id} cannot be published: {', '.join(plan.missing_suites)} without an eval suite",
                plan_with_evidence(plan), [],
                note=f"[releases] require_evals = true: add agents/{first}/evals/smoke.yaml (a list of cases: "
                     f"id, input, expect), deploy it, then publish again."))
            return

        def publish(reason: str | None, canary: float | None) -> None:
            def run() -> Release:
                from rf.config import git_author

                extra: dict[str, Any] = {} if canary is None else {"canary": canary}
                if reason is None:
                    return backend.publish_release(names, all=every, plan_id=plan.id, author=git_author(), **extra)
                return backend.publish_release(names, all=every, plan_id=plan.id, author=git_author(),
                                               message=reason, accept_regressions=True, **extra)

            self.call(run, self.published, failed=partial(self.publish_failed, canary=canary), group="publish")

        if regressions_of(plan):
            regressions = PublishModal(plan)

            def accepted(reason: str | None) -> None:
                if reason:
                    publish(reason, regressions.canary)

            self.app.push_screen(regressions, accepted)
            return

        dialog = PublishConfirmModal(
            f"Publish {plural(len(plan.items), 'change')} to production?",
            plan_with_evidence(plan),
            note="Production changes at once for every caller (or, with a canary percent, that share of it). "
                 "If anything moves in staging or production before you confirm, the publish is refused.",
        )

        def confirmed(ok: bool | None) -> None:
            if ok:
                publish(None, dialog.canary)

        self.app.push_screen(dialog, confirmed)

    def ask_approval(self, plan: ReleasePlan, approvals: Any, me: Any) -> None:
        """``[releases] approvals = N`` and this plan has fewer: show who approved it; a publisher
        other than its author may approve it here (the author publishes once it has enough)."""
        backend = self.backend
        who = ", ".join(a.approver for a in approvals.approvals) or "nobody yet"
        status = Text(f"\nApprovals: {len(approvals.approvals)} of {approvals.required} ({who}); plan "
                      f"{plan.id} made by {approvals.author}.", style="bold")
        can_approve = me is not None and me.name != approvals.author and me.role in ("publisher", "admin")
        choices = [("approve", "Approve", "primary")] if can_approve else []
        note = ("Approving records your name on this plan id; its author publishes it once it has "
                f"{approvals.required} approval(s)." if can_approve else
                "Another publisher approves it (here, or rf releases approve PLAN_ID); then publish again.")

        def chosen(choice: str | None) -> None:
            if choice != "approve":
                return

            def approve() -> Any:
                return backend.approve_plan(plan.id, "approved in the dashboard")

            self.call(approve, lambda result: self.rf.notify(
                f"Approved plan {plan.id}: {len(result.approvals)} of {result.required}.", title="Approved",
                markup=False), group="publish")

        self.app.push_screen(
            ChoiceModal(f"Plan {plan.id} needs {approvals.required} approval(s)",
                        Group(render.release_plan(plan), status), choices, note=note),
            chosen,
        )

    def published(self, release: Release) -> None:
        accepted = (f"\nEval regressions accepted: {release.accepted_regressions}"
                    if release.accepted_regressions is not None else "")
        if release.kind == "canary":
            self.rf.notify(
                f"Started canary release {release.id}: {plural(len(release.items), 'item')} on "
                f"{release.weight or 0:g} % of production traffic.{accepted}\nWatch it on the Canary tab (c); "
                "promote or abort it there.",
                title="Canary started",
                markup=False,
            )
        else:
            self.rf.notify(
                f"Published release {release.id}: {plural(len(release.items), 'item')} now in production.{accepted}",
                title="Published",
                markup=False,
            )
        for w in release.warnings:
            self.rf.notify(w, severity="warning", markup=False)
        self.reload()

    def publish_failed(self, exc: Exception, canary: float | None = None) -> bool:
        if canary is not None and isinstance(exc, RfError):  # e.g. a plan with a trigger or a removal
            self.rf.notify(
                exc.message + (f"\n{exc.hint}" if exc.hint else "") + "\nNothing was published.",
                title="Canary refused",
                severity="error",
                timeout=15,
                markup=False,
            )
            self.reload()
            return True
        if isinstance(exc, Conflict):
            self.rf.notify(
                f"{exc.message}\nNothing was published. Review the changes again, then press p.",
                title="Publish refused",
                severity="error",
                timeout=12,
                markup=False,
            )
            self.reload()
            return True
        return False

    def action_rollback(self) -> None:
        r = self.selected_release()
        if r is None:
            self.rf.notify("No release selected.", severity="warning")
            return
        backend = self.backend

        def confirmed(ok: bool | None) -> None:
            if not ok:
                return

            def rollback() -> Release:
                from rf.config import git_author

                return backend.rollback_release(r.id, author=git_author())

            def done(release: Release) -> None:
                self.rf.notify(
                    f"Rolled back {r.id}: new release {release.id} restores production's earlier state.",
                    title="Rolled back",
                    markup=False,
                )
                self.reload()

            self.call(rollback, done, group="rollback")

        def show(plan: ReleasePlan) -> None:
            self.app.push_screen(
                ConfirmModal(
                    f"Roll back release {r.id} ({r.message})?",
                    render.release_plan(plan),
                    confirm="Roll back",
                    danger=True,
                    note="Production returns to its state before this release, as a new release. "
                    "Staging does not change.",
                ),
                confirmed,
            )

        self.call(lambda: backend.plan_rollback(r.id), show, group="rollback")

    # ------------------------------------------------------------ canary decisions (production changes)
    def _running_or_say(self) -> Canary | None:
        running = self.running()
        if running is None:
            self.rf.notify("No canary release is running: start one from Pending changes (p, then a percent).",
                           severity="warning")
        return running

    def action_canary_weight(self) -> None:
        canary = self._running_or_say()
        if canary is None:
            return
        backend = self.backend

        def chosen(choice: tuple[float, str] | None) -> None:
            if choice is None:
                return
            weight, message = choice

            def run() -> Canary:
                from rf.config import git_author

                return backend.set_canary_weight(weight, message, git_author())

            def done(updated: Canary) -> None:
                self.rf.notify(f"Canary {updated.id} now takes {updated.weight:g} % of production traffic.",
                               title="Canary weight", markup=False)
                self.reload()

            self.call(run, done, group="canary")

        self.app.push_screen(CanaryWeightModal(canary), chosen)

    def action_canary_promote(self) -> None:
        canary = self._running_or_say()
        if canary is None:
            return
        backend = self.backend

        def confirmed(ok: bool | None) -> None:
            if not ok:
                return

            def run() -> Release:
                from rf.config import git_author

                return backend.promote_canary("", git_author())

            def done(release: Release) -> None:
                self.rf.notify(f"Promoted canary {canary.id}: release {release.id} is all of production "
                               f"({plural(len(release.items), 'item')}).", title="Canary promoted", markup=False)
                self.reload()

            self.call(run, done, group="canary")

        self.app.push_screen(promote_modal(canary), confirmed)

    def action_canary_abort(self) -> None:
        canary = self._running_or_say()
        if canary is None:
            return
        backend = self.backend

        def chosen(reason: str | None) -> None:
            if not reason:
                return

            def run() -> Release:
                from rf.config import git_author

                return backend.abort_canary(reason, git_author())

            def done(release: Release) -> None:
                self.rf.notify(f"Aborted canary {canary.id}: every production request is on stable again "
                               f"(recorded as release {release.id}).", title="Canary aborted", markup=False)
                self.reload()

            self.call(run, done, group="canary")

        self.app.push_screen(CanaryAbortModal(canary), chosen)

    def poll(self) -> None:
        self.reload()

    def commands(self) -> Iterable[Command]:
        if self.items:
            yield Command(
                "Publish selected changes to production", self.action_publish, "Review the plan, then publish (key p)"
            )
        yield Command("Release history", lambda: self._tab("releases-history"), "Past releases; roll back (key b)")
        yield Command("Pending changes", lambda: self._tab("releases-pending"), "What staging would publish")
        yield Command("Canary release", lambda: self._tab("releases-canary"),
                      "The running canary's arms side by side (key c)")
        if self.running() is not None:
            yield Command("Canary: change its weight", self._on_canary_tab(self.action_canary_weight), "Key w")
            yield Command("Canary: promote to all of production", self._on_canary_tab(self.action_canary_promote),
                          "Key p on the Canary tab")
            yield Command("Canary: abort (all traffic back on stable)", self._on_canary_tab(self.action_canary_abort),
                          "Key x on the Canary tab")
        for r in self.releases[:5]:
            yield Command(
                f"Roll back release {r.id} ({r.message})",
                self._rollback_cb(r.id),
                "Return production to its state before this release",
            )

    def _tab(self, tab: str) -> None:
        self.query_one("#releases-tabs", TabbedContent).active = tab

    def _on_canary_tab(self, action: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            self._tab("releases-canary")
            action()

        return run

    def _rollback_cb(self, release_id: str) -> Callable[[], None]:
        def run() -> None:
            self._tab("releases-history")
            self.release_place = release_id
            restore_cursor(self.query_one("#release-history", DataTable), release_id)
            self.action_rollback()

        return run
