"""Rich renderables of rf models, shared by views and dialogs."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rf.models import AgentDiff, Commit, Execution, PromptDiff, ReleaseItem, ReleasePlan
from rf.tui import diff as diffs
from rf.tui.format import ENV_COLORS, ago, duration, one_line, plural, short, state_label

KIND_STYLE = {"agent": "bold", "prompt": "#e879f9", "connector": "#22d3ee", "trigger": "#60a5fa"}


def json_renderable(value: Any) -> RenderableType:
    """A JSON value, indented and highlighted (Rich's JSON: no pygments, no background)."""
    from rich.json import JSON

    return JSON.from_data(value, indent=2, ensure_ascii=False, default=str)


def heading(text: str) -> Text:
    return Text(text, style="bold underline")


def env_text(env: str, *, upper: bool = False) -> Text:
    return Text(env.upper() if upper else env, style=f"bold {ENV_COLORS.get(env, '')}")


def status_text(status: str) -> Text:
    """An execution's status as every screen shows it (``running``: still in progress;
    ``interrupted``: the server stopped during it)."""
    if status == "succeeded":
        return Text("✓ succeeded", style="#4ade80")
    if status == "failed":
        return Text("✗ failed", style="bold #f87171")
    if status == "running":
        return Text("● running", style="bold #38bdf8")
    if status == "interrupted":
        return Text("✗ interrupted", style="bold #f87171")
    return Text(status)


def arm_text(arm: str | None) -> Text:
    """A production execution's canary arm (``canary`` stands out; ``stable`` is quiet)."""
    if arm is None:
        return Text("")
    return Text(arm, style="bold #22d3ee" if arm == "canary" else "dim")


def release_arm(release_id: str | None, arm: str | None) -> str:
    """``release rel_… · canary arm`` for detail lines ("" when neither is known)."""
    parts = ([f"release {release_id}"] if release_id else []) + ([f"{arm} arm"] if arm else [])
    return " · ".join(parts)


def grid(*, header: bool = False) -> Table:
    return Table(
        box=box.SIMPLE_HEAD if header else None,
        show_header=header,
        show_edge=False,
        pad_edge=False,
        header_style="bold dim",
        expand=False,
    )


def commits_table(
    commits: list[Commit], now: _dt.datetime, *, staging: str | None = None, production: str | None = None
) -> Table:
    table = grid()
    table.add_column(style="yellow", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column()
    table.add_column(style="dim", no_wrap=True)
    table.add_column(style="dim", no_wrap=True)
    for c in commits:
        marks = Text()
        if c.id == staging:
            marks.append("staging ", style=f"bold {ENV_COLORS['staging']}")
        if c.id == production:
            marks.append("production", style=f"bold {ENV_COLORS['production']}")
        table.add_row(short(c.id), marks, Text(c.message), Text(c.author), ago(c.created_at, now))
    return table


def executions_table(executions: list[Execution], now: _dt.datetime) -> Table:
    table = grid()
    table.add_column(style="dim", no_wrap=True)
    table.add_column(no_wrap=True, min_width=11)
    table.add_column(justify="right", no_wrap=True, min_width=7)
    table.add_column(no_wrap=True, min_width=7)
    table.add_column(no_wrap=True, overflow="ellipsis")
    for ex in executions:
        table.add_row(
            ex.id,
            status_text(ex.status),
            duration(ex.duration_ms),
            ago(ex.started_at, now),
            Text(one_line(ex.error if ex.status == "failed" else ex.output, 40), style="dim"),
        )
    return table


def agent_diff(d: AgentDiff, now: _dt.datetime) -> RenderableType:
    """Commits production lacks, then per-file unified diffs (production → staging)."""
    if not d.files and not d.commits:
        return Text(f"{d.agent}: production and staging run the same code ({short(d.head)}).", style="dim")
    parts: list[RenderableType] = []
    title = Text.assemble(
        (d.agent, "bold"),
        "  ",
        env_text("production"),
        f" {short(d.base)} → ",
        env_text("staging"),
        f" {short(d.head)}",
    )
    parts.append(title)
    if d.commits:
        parts.append(Text(plural(len(d.commits), "commit") + " not in production:", style="bold"))
        parts.append(commits_table(d.commits, now))
    counts = {s: sum(1 for f in d.files if f.status == s) for s in ("added", "modified", "removed")}
    parts.append(
        Text.assemble(
            (plural(len(d.files), "file") + " changed: ", "bold"),
            (f"{counts['added']} added", diffs.ADDED),
            ", ",
            (f"{counts['modified']} modified", "yellow"),
            ", ",
            (f"{counts['removed']} removed", diffs.REMOVED),
        )
    )
    for f in d.files:
        parts.append(Text.assemble("\n", (f.status, "bold"), " ", (f.path, "bold")))
        if f.binary:
            parts.append(Text(f"  {f.diff}", style="dim"))
        elif f.diff:
            parts.append(diffs.unified(f.diff))
    return Group(*parts)


def prompt_diff(d: PromptDiff) -> RenderableType:
    """Published (production, left) vs draft (staging, right), side by side."""
    if not d.changed:
        return Text(f"prompt {d.name}: the draft v{d.draft_version} is published — nothing to publish.", style="dim")
    left = f"production · published v{d.published_version}" if d.published_version else "production · never published"
    return diffs.side_by_side(
        d.published_text, d.draft_text, old_title=left, new_title=f"staging · draft v{d.draft_version}"
    )


def connector_diff(d: Any) -> RenderableType:
    """Config changes and resources added / removed / modified (a ConnectorDiff)."""
    parts: list[RenderableType] = []
    if d.config:
        parts.append(Text("config", style="bold"))
        table = grid()
        table.add_column(style="bold")
        table.add_column(style=diffs.REMOVED)
        table.add_column()
        table.add_column(style=diffs.ADDED)
        for change in d.config:
            table.add_row(change.name, one_line(change.before, 40), "→", one_line(change.after, 40))
        parts.append(table)
    if d.resources:
        parts.append(Text("resources", style="bold"))
        marks = {"added": ("+", diffs.ADDED), "removed": ("-", diffs.REMOVED), "modified": ("~", "yellow")}
        for r in d.resources:
            mark, style = marks.get(r.status, ("?", ""))
            parts.append(Text(f"  {mark} {r.slug}  {r.status}", style=style))
            for change in r.changes:
                parts.append(
                    Text(
                        f"      {change.name}: {one_line(change.before, 40)} → {one_line(change.after, 40)}",
                        style="dim",
                    )
                )
    if not d.config and not d.resources:
        parts.append(Text("no differences", style="dim"))
    return Group(*parts)


def item_line(item: ReleaseItem) -> Text:
    style = KIND_STYLE.get(item.kind, "")
    return Text.assemble((f"{item.kind:<10}", style), (f"{item.name:<20}", "bold"), " ", (item.summary, "dim"))


def release_plan(plan: ReleasePlan) -> RenderableType:
    """What a publish/rollback would change: items (before → after), warnings, missing dependencies."""
    table = grid(header=True)
    table.add_column("kind")
    table.add_column("name", style="bold")
    table.add_column("change")
    table.add_column("production now", style=diffs.REMOVED)
    table.add_column("")
    table.add_column("after", style=diffs.ADDED)
    for i in plan.items:
        table.add_row(
            Text(i.kind, style=KIND_STYLE.get(i.kind, "")),
            i.name,
            Text(i.summary, style="dim"),
            state_label(i.before),
            "→",
            state_label(i.after),
        )
    parts: list[RenderableType] = [Text(f"plan {plan.id}", style="dim"), table]
    for w in plan.warnings:
        parts.append(Text(f"! {w}", style="yellow"))
    if plan.missing_dependencies:
        names = ", ".join(f"{m.kind} {m.name}" for m in plan.missing_dependencies)
        parts.append(Text(f"! not in this release but needed: {names} — select them too", style="yellow"))
    return Group(*parts)
