"""The canary release on the Releases screen: its arms side by side, and the dialogs that decide it.

A canary release (rf.services.canary) runs release N+1 on a share of production traffic beside
release N. The Releases screen's Canary tab shows the running one (else the last one) with
:func:`canary_renderable`: per arm its release, executions, failures, failure rate with its
95 % interval, p50/p95 duration (and the live eval score when the server scores live traffic),
the difference with its interval and the verdict. Its decisions are production changes, each
confirmed like a publish: :class:`CanaryWeightModal` (the new share), a
:class:`~rf.tui.modals.ConfirmModal` for promote, :class:`CanaryAbortModal` (a reason, required:
the history records it). :class:`PublishConfirmModal` is the publish dialog itself, with the
percent field that starts a canary instead of publishing to all of production.

:func:`running_canary` is the one place the dashboard asks whether a canary runs (the
production badge).
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Static

from rf import api
from rf.errors import NotFound
from rf.models import PRODUCTION_RELEASE_KINDS, Canary, CanaryArm, Release
from rf.tui import render
from rf.tui.format import ago, duration, plural, state_label, when
from rf.tui.modals import ConfirmModal, FormModal
from rf.tui.widgets import RfFooter

GOOD = "#4ade80"
BAD = "#f87171"
CANARY = "#22d3ee"

#: How the history labels each kind of release.
KIND_STYLES = {
    "rollback": "yellow",
    "canary": f"bold {CANARY}",
    "canary-weight": CANARY,
    "canary-abort": f"bold {BAD}",
    "canary-promote": f"bold {GOOD}",
}
VERDICT_STYLES = {"canary worse": f"bold {BAD}", "canary better": f"bold {GOOD}"}
STATUS_STYLES = {"running": f"bold {CANARY}", "promoted": f"bold {GOOD}", "aborted": f"bold {BAD}"}


def running_canary(backend: Any) -> tuple[str, float] | None:
    """The running canary release's ``(id, weight %)``, or None: what the production badge shows.

    The cheap ``canary_running`` call (no figures) when this build has it; else
    ``canary_status`` (NotFound: no canary ever ran)."""
    if "canary_running" in api.BY_NAME:
        got = backend.canary_running()
        return None if got is None else (str(got.id), float(got.weight))
    try:
        canary = backend.canary_status()
    except NotFound:
        return None
    return (canary.id, float(canary.weight)) if canary.status == "running" else None


def percent_text(value: float) -> str:
    return f"{value:.1%}"


def parse_percent(text: str, *, lowest: float, highest: float, inclusive: bool) -> float:
    """A percentage typed in a dialog ("10", "2.5", "10 %"); ValueError with the form's message."""
    raw = text.strip().rstrip("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"a number, e.g. 10 (percent of production traffic), not {text.strip()!r}") from None
    ok = lowest <= value <= highest if inclusive else lowest < value < highest
    if not ok or value != value:  # (NaN)
        span = f"from {lowest:g} to {highest:g}" if inclusive else f"above {lowest:g} and below {highest:g}"
        raise ValueError(f"a percentage {span}, not {value:g}")
    return value


def _rate(arm: CanaryArm) -> Text:
    if not arm.executions:
        return Text("–", style="dim")
    return Text.assemble(percent_text(arm.failure_rate),
                         (f" ({percent_text(arm.failure_rate_low)}–{percent_text(arm.failure_rate_high)})", "dim"))


def _score(arm: CanaryArm) -> Text:
    mean = getattr(arm, "score_mean", None)  # live eval scoring ([releases.canary] score_sample)
    if mean is None:
        return Text("–", style="dim")
    low, high = getattr(arm, "score_low", None), getattr(arm, "score_high", None)
    interval = f" ({low:.2f}–{high:.2f})" if low is not None and high is not None else ""
    return Text.assemble(f"{mean:.2f}", (interval, "dim"), (f" of {getattr(arm, 'scored', 0)}", "dim"))


def arms_table(canary: Canary) -> Table:
    """The two arms side by side: a column each (stable, canary), a row per measure."""
    table = render.grid(header=True)
    table.add_column("")
    table.add_column("stable", no_wrap=True)
    table.add_column("canary", no_wrap=True, header_style=f"bold {CANARY}")
    arms = {a.arm: a for a in canary.arms}
    stable, on_canary = arms.get("stable", CanaryArm("stable", None)), arms.get("canary", CanaryArm("canary", None))
    both = (stable, on_canary)
    table.add_row(Text("release", style="dim"), *(Text(a.release_id or "–") for a in both))
    table.add_row(Text("executions", style="dim"), *(str(a.executions) for a in both))
    table.add_row(Text("failures", style="dim"),
                  *(Text(str(a.failures), style=BAD if a.failures else "") for a in both))
    table.add_row(Text("failure rate (95 %)", style="dim"), *(_rate(a) for a in both))
    table.add_row(Text("p50", style="dim"), *(duration(a.p50_ms) for a in both))
    table.add_row(Text("p95", style="dim"), *(duration(a.p95_ms) for a in both))
    if any(getattr(a, "score_mean", None) is not None for a in both):
        table.add_row(Text("live score (95 %)", style="dim"), *(_score(a) for a in both))
    return table


def weight_bar(weight: float, width: int = 20) -> Text:
    filled = round(weight / 100 * width)
    return Text.assemble(("▕", "dim"), ("█" * filled, CANARY), ("░" * (width - filled), "dim"), ("▏", "dim"),
                         f" {weight:g} % canary · {100 - weight:g} % stable")


def verdict_text(canary: Canary) -> Text:
    return Text(canary.verdict, style=VERDICT_STYLES.get(canary.verdict, "bold yellow"))


def canary_renderable(canary: Canary, now: Any) -> RenderableType:
    """A canary release as the Canary tab shows it (running, or ended)."""
    head = Text.assemble(
        ("canary ", "bold"), (canary.id, "bold"), "  ", (canary.status, STATUS_STYLES.get(canary.status, "")),
        f"  {canary.weight:g} % of ", render.env_text("production"),
        (f"  · started {when(canary.started_at)} UTC ({ago(canary.started_at, now)}) by {canary.started_by}", "dim"))
    parts: list[RenderableType] = [head]
    if canary.items:
        items = render.grid()
        items.add_column(no_wrap=True)
        items.add_column(style="bold")
        items.add_column(style=BAD)
        items.add_column()
        items.add_column(style=GOOD)
        for i in canary.items:
            items.add_row(Text(f"  {i.kind}", style=render.KIND_STYLE.get(i.kind, "")), i.name,
                          state_label(i.before), "→", state_label(i.after))
        parts.append(items)
    parts += [Text(""), arms_table(canary), Text("")]
    delta = Text.assemble(
        "failure rate canary − stable: ", (f"{canary.failure_rate_delta:+.1%}", "bold"),
        (f" (95 % interval {canary.delta_low:+.1%} to {canary.delta_high:+.1%})", "dim"), ": ", verdict_text(canary))
    parts.append(delta)
    for reason in getattr(canary, "reasons", None) or []:
        parts.append(Text(f"  {reason}", style="dim"))
    if canary.status == "running":
        parts.append(Text.assemble("weight  ", weight_bar(canary.weight)))
    rule = canary.auto_abort or {}
    if rule.get("auto_abort"):
        parts.append(Text(f"auto-abort: when the canary's failure rate exceeds stable's by more than "
                          f"{rule.get('max_failure_rate_delta', 0):.1%} after "
                          f"{rule.get('min_executions', 0)} executions ([releases.canary] in rf.toml)", style="dim"))
        if rule.get("max_score_delta") is not None:
            parts.append(Text(f"auto-abort: when the canary's live score is below stable's by more than "
                              f"{rule['max_score_delta']:g} after {rule.get('min_scored', 0)} scored on each arm",
                              style="dim"))
    if canary.status == "running":
        parts.append(Text("\nw changes the weight · p promotes it to all of production · x aborts it "
                          "(every request back on stable)", style="dim"))
    else:
        parts.append(Text(f"\n{canary.status} {when(canary.ended_at)} UTC by {canary.ended_by or '—'} "
                          f"(release {canary.end_release_id or '—'}); the figures cover its run. "
                          "Start another from Pending changes: p, then a percent.", style="dim"))
    return Group(*parts)


def canary_line(canary: Canary) -> Text:
    """The one line above the Releases tabs while a canary runs."""
    on = next((a for a in canary.arms if a.arm == "canary"), None)
    runs = f" · {plural(on.executions, 'execution')}" if on is not None else ""
    return Text.assemble(("● canary ", f"bold {CANARY}"), (canary.id, "bold"),
                         f" on {canary.weight:g} % of production{runs} · ", verdict_text(canary),
                         ("  (c)", "dim"))


def release_note(r: Release) -> RenderableType | None:
    """What a canary-kind release did (the history's detail), with the figures it recorded."""
    if r.kind not in KIND_STYLES or r.kind == "rollback":
        return None
    weight = f"{r.weight:g} %" if r.weight is not None else "?"
    text = {
        "canary": f"Started as a canary on {weight} of production traffic beside production's release: "
                  "production's own state did not change.",
        "canary-weight": f"Canary {r.canary}: its share of production traffic set to {weight}. Production's "
                         "own state did not change.",
        "canary-abort": f"Canary {r.canary} aborted: every production request back on stable. Production's own "
                        "state did not change.",
        "canary-promote": f"Canary {r.canary} promoted: its items are now all of production (roll back like any "
                          "release).",
    }[r.kind]
    parts: list[RenderableType] = [Text(text, style=KIND_STYLES[r.kind])]
    figures = r.figures or {}
    arms = figures.get("arms") or []
    if arms:
        table = render.grid(header=True)
        for column in ("arm", "release", "executions", "failures", "failure rate", "p50", "p95"):
            table.add_column(column, no_wrap=True)
        for a in arms:
            n = int(a.get("executions", 0))
            table.add_row(str(a.get("arm")), str(a.get("release_id") or "–"), str(n), str(a.get("failures", 0)),
                          percent_text(float(a.get("failure_rate", 0.0))) if n else "–",
                          duration(a.get("p50_ms")), duration(a.get("p95_ms")))
        parts += [Text("figures when it ended", style="bold"), table]
        if "verdict" in figures:
            parts.append(Text(f"verdict then: {figures['verdict']}", style="dim"))
    return Group(*parts)


def rollback_hint(r: Release) -> str:
    if r.kind in PRODUCTION_RELEASE_KINDS:
        return ("\nb rolls production back to its state before this release "
                "(as a new release; staging is untouched).")
    return "\nThis release changed no production state: there is nothing to roll back."


# ------------------------------------------------------------ dialogs
class PublishConfirmModal(ConfirmModal):
    """The publish confirmation, with a percent field: empty publishes to all of production;
    a percent starts the plan as a canary release on that share of production traffic
    (``rf releases publish --plan ID --canary PERCENT``). After it closes, :attr:`canary` holds
    the percent (None: a plain publish)."""

    def __init__(self, title: str, body: RenderableType, *, note: str = "") -> None:
        super().__init__(title, body, confirm="Publish", note=note)
        self.canary: float | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._title, id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-body"):
                yield Static(self._body)
            yield Label("Canary (optional): percent of production traffic on this release", classes="field-label")
            yield Input(placeholder="empty: all of production at once · e.g. 10: a canary beside the current release",
                        id="canary")
            yield Label("", id="canary-error", classes="field-error", markup=False)
            if self._note:
                yield Static(self._note, id="dialog-note", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Publish", id="confirm", variant="success")
        yield RfFooter()

    def on_input_changed(self, event: Input.Changed) -> None:
        canary = bool(event.value.strip())
        self.query_one("#confirm", Button).label = "Start canary" if canary else "Publish"
        self.query_one("#canary-error", Label).remove_class("-shown")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_confirm()

    def _read(self) -> bool:
        text = self.query_one("#canary", Input).value
        error = self.query_one("#canary-error", Label)
        if not text.strip():
            self.canary = None
            return True
        try:
            self.canary = parse_percent(text, lowest=0, highest=100, inclusive=False)
        except ValueError as exc:
            error.update(f"Canary: {exc}")
            error.add_class("-shown")
            return False
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.dismiss(False)

    def action_confirm(self) -> None:
        if self._read():
            self.dismiss(True)


class CanaryWeightModal(FormModal):
    """The running canary's new share of production traffic (0-100 %) and why; dismisses with
    ``(percent, message)`` or None."""

    SUBMIT_LABEL = "Set weight"

    def __init__(self, canary: Canary) -> None:
        super().__init__(classes="form")
        self.canary = canary
        self.TITLE_TEXT = f"Change canary {canary.id}'s share of production traffic (now {canary.weight:g} %)?"

    def compose_form(self) -> ComposeResult:
        yield Static(arms_table(self.canary))
        yield Label("Weight: percent of production traffic on the canary (0-100)", classes="field-label")
        yield Input(value=f"{self.canary.weight:g}", id="weight")
        yield self.field_error("weight")
        yield Label("Why (optional, recorded in the history)", classes="field-label")
        yield Input(placeholder="e.g. no difference after 500 executions", id="message")
        yield Static("Sessions keep their arm while the weight stays; raising it moves only stable sessions to "
                     "the canary, lowering it the reverse. Recorded as a release (production's own state is "
                     "unchanged).", classes="warning", markup=False)

    def on_mount(self) -> None:
        weight = self.query_one("#weight", Input)
        weight.focus()
        weight.select_all()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        try:
            weight = parse_percent(self.query_one("#weight", Input).value, lowest=0, highest=100, inclusive=True)
        except ValueError as exc:
            self.show_error("weight", f"Weight: {exc}")
            return
        self.dismiss((weight, self.query_one("#message", Input).value.strip()))


class CanaryAbortModal(FormModal):
    """Abort the running canary: the figures, then a reason (required: the history records it
    with the figures). Dismisses with the reason, or None."""

    SUBMIT_LABEL = "Abort canary"

    def __init__(self, canary: Canary) -> None:
        super().__init__(classes="form")
        self.canary = canary
        self.TITLE_TEXT = f"Abort canary {canary.id}: every production request back on stable at once?"

    def compose_form(self) -> ComposeResult:
        yield Static(Group(arms_table(self.canary), Text(""), Text.assemble("verdict: ", verdict_text(self.canary))))
        yield Label("Why abort? (required, recorded in the history)", classes="field-label")
        yield Input(placeholder="e.g. timeouts on the canary arm", id="reason")
        yield self.field_error("reason")

    def on_mount(self) -> None:
        self.query_one("#submit", Button).variant = "error"
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.show_error("reason", "A reason is required: it is recorded with the abort (as rf releases canary "
                                      'abort -m "why").')
            return
        self.dismiss(reason)


def promote_modal(canary: Canary) -> ConfirmModal:
    return ConfirmModal(
        f"Promote canary {canary.id} to all of production?",
        Group(arms_table(canary), Text(""), Text.assemble("verdict: ", verdict_text(canary))),
        confirm="Promote",
        note=f"Its {plural(len(canary.items), 'item')} become the whole of production at once, recorded as a "
             "release (roll it back like any other).",
    )
