"""``rf releases``: review every staging → production difference and publish it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rf.cli.app import JsonOption, backend, confirm

if TYPE_CHECKING:
    from rf.client import Backend
    from rf.models import AgentEvalEvidence, Release, ReleaseItem, ReleasePlan

app = typer.Typer(rich_markup_mode="rich", invoke_without_command=True,
                  help="Review staging → production differences; publish them in batches; roll back.")

ItemsArg = Annotated[list[str] | None, typer.Argument(help="Items: NAME or KIND:NAME (agent, prompt, connector, trigger).")]
AllOption = Annotated[bool, typer.Option("--all", help="Every pending item.")]
WithDeps = Annotated[bool, typer.Option("--with-deps", help="Add unpublished prompts/connectors the agents need.")]
Strict = Annotated[bool, typer.Option("--strict", help="Refuse when the agents need what production lacks, "
                                                       "or a removal is still used in production.")]

AcceptRegressions = Annotated[bool, typer.Option(
    "--accept-regressions", help='Publish although eval cases regress; the reason goes in -m "why".')]

KIND_STYLE = {"agent": "bold", "prompt": "magenta", "connector": "cyan", "trigger": "blue"}


def _items_table(items: list[ReleaseItem]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("change")
    for i in items:
        style = KIND_STYLE.get(i.kind, "")
        table.add_row(f"[{style}]{i.kind}[/{style}]" if style else i.kind, escape(i.name), escape(i.summary))
    return fit_table(table, flex=("change", "name"))


@app.callback()
def _default(ctx: typer.Context, json_out: JsonOption = False) -> None:
    if ctx.invoked_subcommand is None:
        list_items(json_out)


@app.command("list")
def list_items(json_out: JsonOption = False) -> None:
    """One line per pending item: kind, name, what changes."""
    from rf.cli.output import out, print_json

    with backend() as b:
        items = b.release_items()
    if json_out:
        print_json(items)
        return
    if not items:
        out.print("nothing to publish: staging and production are the same")
        return
    out.print(f"[bold]{len(items)} change{'s' if len(items) != 1 else ''}[/bold] waiting in "
              "[staging]staging[/staging] (publish with: rf releases publish --all)")
    out.print(_items_table(items))


def render_item_diff(b: Backend, item: ReleaseItem) -> None:
    """The full diff of one item, in the style of its own command."""
    from rich.markup import escape

    from rf.cli.output import out

    out.rule(f"{item.kind} {escape(item.name)} · {escape(item.summary)}", align="left")
    if item.after is None and item.before is not None:
        out.print(f"  [production]production[/production] has {escape(_state(item.before))}; "
                  f"[staging]staging[/staging] deleted it: publishing removes it from production "
                  "(a rollback of that release restores it)")
        return
    if item.kind == "trigger":
        from rf.cli.triggers import render_release_item

        render_release_item(item)
        return
    if item.kind == "agent":
        from rf.cli.agents import render_diff

        render_diff(b.diff_agent(item.name))
        return
    renderer = None
    try:
        if item.kind == "prompt":
            from rf.cli import prompts as mod
        elif item.kind == "connector":
            from rf.cli import connectors as mod  # type: ignore[no-redef]
        else:
            mod = None  # type: ignore[assignment]
        renderer = getattr(mod, "render_release_diff", None) if mod else None
    except ImportError:
        renderer = None
    if renderer is not None:
        renderer(b, item.name)
        return
    out.print(f"  production: {escape(json.dumps(item.before, default=str))}")
    out.print(f"  staging:    {escape(json.dumps(item.after, default=str))}")


@app.command("diff")
def diff(items: ItemsArg = None, json_out: JsonOption = False) -> None:
    """The full diff of the items (all when none named), paged on a terminal."""
    from rf.cli.output import out, print_json

    with backend() as b:
        plan = b.plan_release(items or None, all=not items, evals=False)
        if json_out:
            print_json(plan.items)
            return
        if out.is_terminal:
            with out.pager(styles=True):
                for item in plan.items:
                    render_item_diff(b, item)
        else:
            for item in plan.items:
                render_item_diff(b, item)


def _print_plan(plan: ReleasePlan, to_stderr: bool = False) -> None:
    from rf.cli.output import err, out

    if to_stderr:
        out = err  # a review before a confirmation is not data

    out.print(f"[bold]plan {plan.id}[/bold] — {len(plan.items)} item{'s' if len(plan.items) != 1 else ''} "
              "to publish to [production]production[/production]:")
    out.print(_items_table(plan.items))
    print_plan_evals(plan.evals, to_stderr)
    print_plan_notes(plan)


def _evals_table(evals: list[AgentEvalEvidence]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("agent")
    table.add_column("production", no_wrap=True)
    table.add_column("staging", no_wrap=True)
    table.add_column("regressions")
    table.add_column("new failures")
    table.add_column("note")
    for e in evals:
        before = "—" if e.before_total is None else f"{e.before_passed}/{e.before_total}"
        after = f"{e.after_passed}/{e.after_total}" if e.status == "evaluated" else "—"
        regressions = ", ".join(e.regressions)
        table.add_row(escape(e.agent), before, after,
                      f"[red]{escape(regressions)}[/red]" if regressions else "",
                      escape(", ".join(e.new_failures)),
                      escape(e.note or ("fixed: " + ", ".join(e.fixed) if e.fixed else "")))
    return fit_table(table, flex=("note", "regressions", "new failures"))


def print_plan_evals(evals: list[AgentEvalEvidence], to_stderr: bool = False) -> None:
    """The eval evidence of a plan (cases passed in production → on staging's state), and the gate."""
    from rich.markup import escape

    from rf.cli.output import err, out, warn

    if to_stderr:
        out = err
    if not evals:
        return
    out.print("eval suites (cases passed: production → staging):")
    out.print(_evals_table(evals))
    regressed = [e for e in evals if e.regressions]
    if regressed:
        what = "; ".join(f"agent {e.agent}: {', '.join(e.regressions)}" for e in regressed)
        warn(escape(f"regressions ({what}): a publish refuses this plan unless "
                    '--accept-regressions -m "why"'))


def print_plan_notes(plan: ReleasePlan) -> None:
    """A plan's warnings (on stderr) and what to do about them."""
    from rich.markup import escape

    from rf.cli.output import warn

    for w in plan.warnings:
        warn(escape(w))
    if plan.missing_dependencies:
        names = " ".join(f"{m.kind}:{m.name}" for m in plan.missing_dependencies)
        warn(f"add them with --with-deps (or name them: {escape(names)}); --strict refuses instead")
    if plan.unavailable or plan.still_used:
        warn("--strict refuses this release" + (" (--with-deps cannot add what does not exist)"
                                                 if plan.unavailable else ""))


@app.command("plan")
def plan(
    items: ItemsArg = None,
    all_items: AllOption = False,
    save: Annotated[Path | None, typer.Option("--save", help="Write the plan (JSON) to this file.")] = None,
    with_deps: WithDeps = False,
    strict: Strict = False,
    json_out: JsonOption = False,
) -> None:
    """The exact changes a publish would make, with a plan id to publish them by.

    [bold]rf releases plan show ID[/bold]: a plan's approvals, and how many a publish needs ([releases] approvals).
    """
    from rf.cli.output import info, print_json
    from rf.models import to_dict

    if items and items[0] == "show":  # (never an item: items are NAME or KIND:NAME of staged changes)
        if len(items) != 2:
            from rf.errors import UsageError

            raise UsageError("rf releases plan show takes one plan id", "rf releases plan show PLAN_ID")
        _show_approvals(items[1], json_out)
        return
    with backend() as b:
        # A plan changes nothing: with no items named it previews every pending item.
        p = b.plan_release(items or None, all_items or not items, with_deps, strict)
    if save is not None:
        save.write_text(json.dumps(to_dict(p), indent=2, default=str) + "\n", encoding="utf-8")
    if json_out:
        print_json(p)
        return
    _print_plan(p)
    info(f"publish exactly this with: rf releases publish --plan {p.id}" + (" --all" if not items else " " + " ".join(items)))


def _show_approvals(plan_id: str, json_out: bool) -> None:
    from rf.cli.output import out, print_json, when

    with backend() as b:
        approvals = b.plan_approvals(plan_id)
    if json_out:
        print_json(approvals)
        return
    got = len(approvals.approvals)
    out.print(f"plan [bold]{approvals.plan_id}[/bold] by {approvals.author or '?'}: {got} approval(s)"
              + (f" of the {approvals.required} a publish needs" if approvals.required else " (none needed)"))
    for a in approvals.approvals:
        out.print(f"  {a.approver}  {when(a.created_at)}" + (f"  {a.message}" if a.message else ""))


@app.command("approve")
def approve(
    plan_id: Annotated[str, typer.Argument(help="The plan id (rf releases plan).")],
    message: Annotated[str, typer.Option("--message", "-m", help="Why it looks right.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Approve a release plan (publishers other than its author); a stale plan's approvals no longer count."""
    from rf.cli.output import print_json, success

    with backend() as b:
        approvals = b.approve_plan(plan_id, message)
    if json_out:
        print_json(approvals)
        return
    needed = f" of {approvals.required}" if approvals.required else ""
    success(f"approved plan [bold]{approvals.plan_id}[/bold] ({len(approvals.approvals)}{needed} approval(s))")


@app.command("publish")
def publish(
    items: ItemsArg = None,
    all_items: AllOption = False,
    plan_id: Annotated[str | None, typer.Option("--plan", help="Publish only if nothing changed since this plan.")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Release message.")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    with_deps: WithDeps = False,
    strict: Strict = False,
    accept_regressions: AcceptRegressions = False,
    canary: Annotated[float | None, typer.Option(
        "--canary", metavar="PERCENT", help="Start it as a canary on PERCENT % of production traffic beside the "
                                            "current release (watch it: rf releases canary).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Publish items to [bold #10b981]production[/] atomically (all or none) and record a release.

    Refused when eval cases that pass in production fail on staging's state (the plan's eval
    suites), unless [bold]--accept-regressions -m "why"[/bold]: the release records both.
    With [bold]--canary PERCENT[/bold] the release runs beside production's on that share of its
    traffic (sticky per session) until promoted or aborted: [bold]rf releases canary[/bold]."""
    from rf.cli.output import print_json, success
    from rf.config import git_author

    if not items and not all_items and plan_id is None:
        from rf.errors import UsageError

        raise UsageError("name the items to publish, or pass --all", "see them with: rf releases")
    with backend() as b:
        if plan_id is None:
            p = b.plan_release(items or None, all_items, with_deps, strict)
            if not json_out:
                _print_plan(p, to_stderr=True)
            if gate_passes(p, accept_regressions):  # (else the publish below says why it is refused)
                confirm(f"Publish these {len(p.items)} change(s) to production?" if canary is None else
                        f"Start these {len(p.items)} change(s) as a canary on {canary:g} % of production?", yes)
            plan_id = p.id
        elif canary is not None:
            confirm(f"Start plan {plan_id} as a canary on {canary:g} % of production traffic?", yes)
        # --plan alone publishes exactly that plan's items; --all is every pending item.
        release = b.publish_release(items or None, all_items, plan_id, message, git_author(), with_deps, strict,
                                    accept_regressions, canary)
    if json_out:
        print_json(release)
        return
    if release.kind == "canary":
        success(f"started canary release [bold]{release.id}[/bold] on {release.weight or 0:g} % of "
                f"[production]production[/production] traffic: {len(release.items)} item"
                f"{'s' if len(release.items) != 1 else ''}")
        for item in release.items:
            success(f"  {item.kind} {item.name}: {item.summary}")
        success("watch it: rf releases canary; then rf releases canary promote (or abort)")
        return
    success(f"published release [bold]{release.id}[/bold] to [production]production[/production]: "
            f"{len(release.items)} item{'s' if len(release.items) != 1 else ''}")
    for item in release.items:
        success(f"  {item.kind} {item.name}: {item.summary}")
    if release.accepted_regressions is not None:
        from rich.markup import escape

        from rf.cli.output import warn

        warn(f"published with eval regressions, accepted: {escape(release.accepted_regressions)}")


def gate_passes(plan: ReleasePlan, accept_regressions: bool) -> bool:
    """Would the eval gate let this plan through (no regressions, or accepted; no missing suite)?"""
    return not plan.missing_suites and (accept_regressions or not any(e.regressions for e in plan.evals))


def _release_table(releases: list[Release]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import when

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("release", style="dim", no_wrap=True)
    table.add_column("time (UTC)", style="dim", no_wrap=True)
    table.add_column("author", max_width=16, no_wrap=True, overflow="ellipsis")
    table.add_column("message", ratio=2, overflow="fold")
    table.add_column("items", ratio=1, overflow="fold")
    for r in releases:
        items = ", ".join(f"{i.kind} {i.name}" for i in r.items)
        label = escape(r.message) + (f" [yellow]({r.kind})[/yellow]" if r.kind != "publish" else "")
        table.add_row(r.id, when(r.created_at)[5:16], escape(r.author), label, escape(items))
    return table


@app.command("history")
def history(limit: Annotated[int, typer.Option("--limit", "-n")] = 50, json_out: JsonOption = False) -> None:
    """Past releases, newest first."""
    from rf.cli.output import out, print_json

    with backend() as b:
        releases = b.list_releases(limit)
    if json_out:
        print_json(releases)
        return
    if not releases:
        out.print("no releases yet")
        return
    out.print(_release_table(releases))


@app.command("show")
def show(release_id: Annotated[str, typer.Argument(help="Release id (or a prefix).")], json_out: JsonOption = False) -> None:
    """One release: each item's before → after."""
    from rich.markup import escape

    from rf.cli.output import out, print_json, when

    with backend() as b:
        r = b.get_release(release_id)
    if json_out:
        print_json(r)
        return
    out.print(f"[bold]{r.id}[/bold]  {r.kind}  {when(r.created_at)} UTC  by {escape(r.author)}")
    out.print(f"  {escape(r.message)}   [dim]plan {r.plan_id}[/dim]")
    for i in r.items:
        out.print(f"  {i.kind} [bold]{escape(i.name)}[/bold]: {escape(_state(i.before))} → {escape(_state(i.after))}"
                  + (f"  [dim]{escape(i.summary)}[/dim]" if i.summary else ""))
    print_plan_evals(r.evals)
    if r.accepted_regressions is not None:
        out.print(f"  [yellow]regressions accepted:[/yellow] {escape(r.accepted_regressions)}")


def _state(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value[:12] if len(value) >= 40 else value
    if isinstance(value, int):
        return f"v{value}"
    if isinstance(value, dict) and value.get("removed") is True:
        return "(removed)"
    if isinstance(value, dict) and "kind" in value and "agent" in value:  # a trigger's state
        return f"{value['kind']} → {value['agent']}" + ("" if value.get("enabled", True) else " (paused)")
    text = json.dumps(value, default=str)
    return text if len(text) < 40 else text[:37] + "..."


@app.command("rollback")
def rollback(
    release_id: Annotated[str, typer.Argument(help="Release to undo.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Also revert later releases of the same items.")] = False,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    json_out: JsonOption = False,
) -> None:
    """Return production to its state before a release, as a new release (staging untouched)."""
    from rf.cli.output import print_json, success
    from rf.config import git_author

    with backend() as b:
        p = b.plan_rollback(release_id, force)
        if not json_out:
            _print_plan(p, to_stderr=True)
        confirm(f"Roll back production ({len(p.items)} item(s))?", yes)
        release = b.rollback_release(release_id, force, message, git_author())
    if json_out:
        print_json(release)
        return
    success(f"rolled back: new release [bold]{release.id}[/bold] restores the state before {release_id}")


# ------------------------------------------------------------ canary releases
canary_app = typer.Typer(rich_markup_mode="rich", invoke_without_command=True,
                         help="A canary release: watch it, change its weight, promote or abort it.")
app.add_typer(canary_app, name="canary")
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _arm_table(canary: Any) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    scored = canary.score_sample > 0 or any(a.scored for a in canary.arms)
    columns = ["arm", "release", "executions", "failures", "failure rate (95 % interval)", "p50 ms", "p95 ms"]
    if scored:
        columns += ["scored", "live score (95 % interval)"]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("arm", "release") else "left")
    for a in canary.arms:
        rate = f"{a.failure_rate:.1%} ({a.failure_rate_low:.1%}–{a.failure_rate_high:.1%})" if a.executions else "–"
        row = [a.arm, a.release_id or "–", str(a.executions), str(a.failures), rate,
               "–" if a.p50_ms is None else f"{a.p50_ms:.1f}", "–" if a.p95_ms is None else f"{a.p95_ms:.1f}"]
        if scored:
            row += [str(a.scored), "–" if a.score_mean is None else
                    f"{a.score_mean:.2f} ({a.score_low or 0:.2f}–{a.score_high or 0:.2f})"]
        table.add_row(*row)
    return table


def print_canary(canary: Any) -> None:
    from rich.markup import escape

    from rf.cli.output import out, when

    state = {"running": "[yellow]running[/yellow]", "promoted": "[green]promoted[/green]",
             "aborted": "[red]aborted[/red]"}.get(canary.status, canary.status)
    out.print(f"canary [bold]{canary.id}[/bold]  {state}  {canary.weight:g} % of production  "
              f"since {when(canary.started_at)} UTC by {escape(canary.started_by)}")
    for i in canary.items:
        out.print(f"  {i.kind} [bold]{escape(i.name)}[/bold]: {escape(_state(i.before))} → {escape(_state(i.after))}")
    out.print(_arm_table(canary))
    verdict_style = {"canary worse": "red", "canary better": "green"}.get(canary.verdict, "yellow")
    out.print(f"failure rate canary − stable: {canary.failure_rate_delta:+.1%} (95 % interval "
              f"{canary.delta_low:+.1%} to {canary.delta_high:+.1%})")
    if canary.score_delta is not None:
        out.print(f"live score canary − stable: {canary.score_delta:+.2f} (95 % interval "
                  f"{canary.score_delta_low:+.2f} to {canary.score_delta_high:+.2f})")
    elif canary.score_sample > 0:
        out.print(f"[dim]live scoring: {canary.score_sample:.0%} of executions; no score on both arms yet "
                  "(an agent is scored when its eval suite has a live: entry)[/dim]")
    if canary.score_dropped:
        out.print(f"[dim]{canary.score_dropped} sampled execution(s) not scored: the scoring queue was full[/dim]")
    out.print(f"verdict: [{verdict_style}]{canary.verdict}[/{verdict_style}]")
    for miss in canary.score_misses[:3]:
        failed = "; ".join(f"{x['scorer']}: {x['detail']}" for x in miss["scores"] if not x["passed"])
        out.print(f"[dim]  {miss['arm']} {miss['execution_id']} ({escape(miss['agent'])}) scored "
                  f"{miss['score']:.2f}: {escape(failed)}[/dim]")
    rule = canary.auto_abort
    if rule.get("auto_abort"):
        out.print(f"[dim]auto-abort: canary failure rate above stable's by more than "
                  f"{rule['max_failure_rate_delta']:.1%} after {rule['min_executions']} executions[/dim]")
        if rule.get("max_score_delta") is not None:
            out.print(f"[dim]auto-abort: canary live score below stable's by more than {rule['max_score_delta']:g} "
                      f"(interval below zero) after {rule.get('min_scored')} scored on each arm[/dim]")
    if canary.status != "running":
        out.print(f"[dim]ended {when(canary.ended_at or '')} UTC by {escape(canary.ended_by or '')} "
                  f"(release {canary.end_release_id})[/dim]")


@canary_app.callback()
def canary_status(
    ctx: typer.Context,
    canary_id: Annotated[str | None, typer.Option("--id", help="A past canary (its release id).")] = None,
    json_out: JsonOption = False,
) -> None:
    """The running canary (else the last one): per arm executions, failures, failure rate, p50/p95
    duration, and the difference with its confidence interval and a verdict."""
    if ctx.invoked_subcommand is not None:
        return
    from rf.cli.output import print_json

    with backend() as b:
        canary = b.canary_status(canary_id)
    if json_out:
        print_json(canary)
        return
    print_canary(canary)


@canary_app.command("weight")
def canary_weight(
    percent: Annotated[float, typer.Argument(help="Share of production traffic on the canary (0-100).")],
    message: Annotated[str, typer.Option("--message", "-m", help="Why (recorded in the history).")] = "",
    yes: YesOption = False,
    json_out: JsonOption = False,
) -> None:
    """Change the running canary's share of production traffic (recorded in the history)."""
    from rf.cli.output import print_json, success
    from rf.config import git_author

    confirm(f"Route {percent:g} % of production traffic to the canary?", yes)
    with backend() as b:
        canary = b.set_canary_weight(percent, message, git_author())
    if json_out:
        print_json(canary)
        return
    success(f"canary {canary.id} now takes {canary.weight:g} % of [production]production[/production] traffic")


@canary_app.command("promote")
def canary_promote(
    message: Annotated[str, typer.Option("--message", "-m", help="Release message.")] = "",
    yes: YesOption = False,
    json_out: JsonOption = False,
) -> None:
    """Make the canary the whole of production (a recorded release; roll it back like any other)."""
    from rf.cli.output import print_json, success
    from rf.config import git_author

    with backend() as b:
        if not json_out:
            print_canary(b.canary_status())
        confirm("Promote the canary to all of production?", yes)
        release = b.promote_canary(message, git_author())
    if json_out:
        print_json(release)
        return
    success(f"promoted: release [bold]{release.id}[/bold] is all of [production]production[/production] "
            f"({len(release.items)} item{'s' if len(release.items) != 1 else ''})")


@canary_app.command("abort")
def canary_abort(
    message: Annotated[str, typer.Option("--message", "-m", help="Why (recorded in the history).")] = "",
    yes: YesOption = False,
    json_out: JsonOption = False,
) -> None:
    """Send every production request back to stable at once (recorded, with the per-arm figures)."""
    from rf.cli.output import print_json, success
    from rf.config import git_author

    confirm("Abort the canary (all production traffic back on stable)?", yes)
    with backend() as b:
        release = b.abort_canary(message, git_author())
    if json_out:
        print_json(release)
        return
    success(f"aborted: all [production]production[/production] traffic is on stable again (recorded as "
            f"release {release.id})")
