"""``rf agents``: deploy (always staging), promote (staging → production), inspect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import JsonOption, backend, confirm, workspace

if TYPE_CHECKING:
    from rf.client import Backend
    from rf.models import AgentDiff, DeleteResult

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich")


def endpoint_base(b: Backend) -> str:
    from rf import serverinfo

    ws = b.workspace
    if ws is None:
        return "http://127.0.0.1:7410"
    info = serverinfo.read(ws.server_file)
    if info is not None:
        return info.url
    return f"http://{ws.host}:{ws.port}"


@app.command("list")
def list_agents(json_out: JsonOption = False) -> None:
    """Agents with their staging and production commits."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import out, print_json, short

    with backend() as b:
        agents = b.list_agents()
    if json_out:
        print_json(agents)
        return
    if not agents:
        from rf.config import list_agent_dirs

        local = list_agent_dirs(workspace())
        out.print("no agents deployed yet" + (f" — in agents/: {', '.join(local)}; deploy with: rf agents deploy NAME" if local else ""))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    states = ["deleted in staging: removal to publish" if a.staging_commit is None
              else "not promoted yet" if a.production_commit is None
              else (f"{a.commits_ahead} ahead" if a.commits_ahead else "in sync") for a in agents]
    # One agent per line: on a narrow terminal the description gives way (ellipsis), nothing wraps.
    others = max(5, *(len(a.name) for a in agents)) + 8 + 10 + max(len(s) for s in states) + 4 * 2
    table.add_column("agent", no_wrap=True)
    table.add_column("description", overflow="ellipsis", no_wrap=True, max_width=max(12, min(40, out.width - others)))
    table.add_column("staging", style="#f59e0b", no_wrap=True)
    table.add_column("production", style="#10b981", no_wrap=True)
    table.add_column("", no_wrap=True)
    for a, state in zip(agents, states, strict=True):
        table.add_row(a.name, escape(a.description), short(a.staging_commit), short(a.production_commit), state)
    out.print(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Agent name.")], json_out: JsonOption = False) -> None:
    """Both environments' commits and endpoint URLs."""
    from rich.markup import escape

    from rf.cli.output import out, print_json, short, when

    with backend() as b:
        agent = b.get_agent(name)
        commits = {c.id: c for c in b.history(name)}
        base = endpoint_base(b)
    urls = {env: f"{base}/{env}/agents/{name}" for env in ("staging", "production")}
    if json_out:
        from rf.models import to_dict

        data = to_dict(agent)
        data["endpoints"] = urls
        print_json(data)
        return
    out.print(f"[bold]{name}[/bold]  {escape(agent.description)}")
    for env in ("staging", "production"):
        cid = agent.staging_commit if env == "staging" else agent.production_commit
        c = commits.get(cid) if cid else None
        label = f"[{env}]{env:<10}[/{env}]"
        if c is None:
            what = "not deployed" if env == "staging" else f"not promoted yet — rf agents promote {name}"
            out.print(f"  {label} [dim]{what}[/dim]")
        else:
            out.print(f"  {label} [commit]{short(c.id)}[/commit] {escape(c.message)} [dim]· {escape(c.author)} · {when(c.created_at)}[/dim]")
        out.print(f"  {'':<10} [dim]POST[/dim] {urls[env]}")
        if env in agent.trace:
            out.print(f"  {'':<10} [dim]trace[/dim] {agent.trace[env]}")
    if agent.production_commit and agent.commits_ahead:
        out.print(f"  staging is {agent.commits_ahead} commit{'s' if agent.commits_ahead != 1 else ''} ahead of production")


@app.command("history")
def history(name: Annotated[str, typer.Argument(help="Agent name.")], json_out: JsonOption = False) -> None:
    """Commits, newest first, marking where each environment points."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, short, when
    from rf.errors import NotFound
    from rf.models import Agent

    with backend() as b:
        commits = b.history(name)  # a deleted agent's history stays readable
        try:
            agent = b.get_agent(name)
        except NotFound:
            agent = Agent(name=name)
    if json_out:
        print_json(commits)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("commit", style="yellow")
    table.add_column("")
    table.add_column("message")
    table.add_column("author", style="dim")
    table.add_column("time (UTC)", style="dim")
    for c in commits:
        marks = []
        if c.id == agent.staging_commit:
            marks.append("[staging]staging[/staging]")
        if c.id == agent.production_commit:
            marks.append("[production]production[/production]")
        table.add_row(short(c.id), " ".join(marks), escape(c.message), escape(c.author), when(c.created_at))
    out.print(fit_table(table, flex=("message", "author")))


def render_diff(d: AgentDiff) -> None:
    from rich.markup import escape
    from rich.syntax import Syntax

    from rf.cli.output import out, short, when

    if not d.files and not d.commits:
        out.print(f"{d.agent}: production and staging run the same code ({short(d.head)})")
        return
    out.print(f"[bold]{d.agent}[/bold]  [production]production[/production] {short(d.base)} → "
              f"[staging]staging[/staging] {short(d.head)}")
    if d.commits:
        out.print(f"{len(d.commits)} commit{'s' if len(d.commits) != 1 else ''}:")
        for c in d.commits:
            out.print(f"  [commit]{short(c.id)}[/commit] {escape(c.message)} [dim]· {escape(c.author)} · {when(c.created_at)}[/dim]")
    counts = {s: sum(1 for f in d.files if f.status == s) for s in ("added", "modified", "removed")}
    out.print(f"{len(d.files)} file{'s' if len(d.files) != 1 else ''} changed: "
              f"[green]{counts['added']} added[/green], [yellow]{counts['modified']} modified[/yellow], "
              f"[red]{counts['removed']} removed[/red]")
    for f in d.files:
        out.print(f"\n[bold]{f.status}[/bold] {escape(f.path)}")
        if f.binary:
            out.print(f"  [dim]{escape(f.diff)}[/dim]")
        elif f.diff:
            # word_wrap: a line longer than the terminal wraps; cropped, a reviewer would not
            # see the end of what they publish.
            out.print(Syntax(f.diff.rstrip("\n"), "diff", theme="ansi_dark", background_color="default",
                             word_wrap=True))


@app.command("diff")
def diff(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    base: Annotated[str | None, typer.Option("--from", help="Base: commit id/prefix or env (default production).")] = None,
    head: Annotated[str | None, typer.Option("--to", help="Head: commit id/prefix or env (default staging).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Per-file unified diff production → staging."""
    from rf.cli.output import print_json

    with backend() as b:
        d = b.diff_agent(name, base, head)
    if json_out:
        print_json(d)
        return
    render_diff(d)


@app.command("deploy")
def deploy(
    agent: Annotated[str | None, typer.Argument(help="Agent name or directory (default: the one you are in).")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Snapshot the agent's code into a commit and point [bold #f59e0b]staging[/] at it.

    Deploy always targets staging; production changes only through
    `rf agents promote` or `rf releases publish`.
    """
    from rf.cli.output import info, print_json, short, success, warn
    from rf.config import git_author, resolve_agent_dir, snapshot_dir

    ws = workspace()
    name, directory = resolve_agent_dir(ws, agent)
    files = snapshot_dir(directory)
    with backend() as b:
        result = b.deploy(name, files, message, git_author())
        base = endpoint_base(b)
    if json_out:
        print_json(result)
        return
    for w in result.warnings:
        warn(w)
    if not result.created:
        info(f"{name}: no changes since commit {short(result.commit.id if result.commit else None)} — staging unchanged")
        return
    assert result.commit is not None
    success(f"deployed [bold]{name}[/bold] to [staging]staging[/staging]: commit "
            f"[commit]{short(result.commit.id)}[/commit] ({len(files)} file{'s' if len(files) != 1 else ''})")
    info(f"  POST {base}/staging/agents/{name}")
    info(f"[dim]  when staging looks good: rf agents promote {name}[/dim]")


@app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    message: Annotated[str, typer.Option("--message", "-m", help="Release message.")] = "",
    with_deps: Annotated[bool, typer.Option("--with-deps", help="Also publish the unpublished prompts/connectors it uses.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse when production lacks something it uses.")] = False,
    accept_regressions: Annotated[bool, typer.Option(
        "--accept-regressions", help='Promote although eval cases regress; the reason goes in -m "why".')] = False,
    json_out: JsonOption = False,
) -> None:
    """Point [bold #10b981]production[/] at staging's commit: the release of [bold]agent:NAME[/]
    (same plan as `rf releases publish agent:NAME`: diff, dependency warnings, the eval gate,
    recorded release)."""
    from rf.cli.output import info, print_json, short, success
    from rf.config import git_author

    with backend() as b:
        agent = b.get_agent(name)
        plan_id = None
        if agent.staging_commit is not None and agent.staging_commit != agent.production_commit:
            plan = b.plan_release([f"agent:{name}"], with_deps=with_deps, strict=strict)
            if not json_out:
                from rf.cli.releases import print_plan_evals, print_plan_notes, render_item_diff

                render_diff(b.diff_agent(name))
                for item in plan.items:
                    if (item.kind, item.name) != ("agent", name):
                        render_item_diff(b, item)
                print_plan_evals(plan.evals)
                print_plan_notes(plan)
            extra = len(plan.items) - 1
            from rf.cli.releases import gate_passes

            if gate_passes(plan, accept_regressions):  # (else the promote below says why it is refused)
                confirm(f"Promote {name} to production ({short(agent.production_commit)} → {short(agent.staging_commit)})"
                        + (f" with {extra} dependenc{'y' if extra == 1 else 'ies'}" if extra else "") + "?", yes)
            plan_id = plan.id
        # Exactly the plan shown: refused if anything moved since.
        result = b.promote(name, git_author(), message, with_deps, strict, plan_id, accept_regressions)
        base = endpoint_base(b)
    if json_out:
        print_json(result)
        return
    if not result.changed:
        info(f"{name}: production already runs staging's commit {short(result.after)} — nothing to promote")
        return
    success(f"promoted [bold]{name}[/bold] to [production]production[/production]: "
            f"{short(result.before)} → [commit]{short(result.after)}[/commit] (release {result.release_id})")
    for item in result.items:
        if (item.kind, item.name) != ("agent", name):
            success(f"  with {item.kind} {item.name}: {item.summary}")
    info(f"  POST {base}/production/agents/{name}")


def confirm_delete(question: str, yes: bool) -> None:
    """Ask on a TTY; without one, only ``--yes`` goes ahead (a script says so explicitly)."""
    import sys

    from rf.errors import UsageError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("deleting needs confirmation, and there is no terminal to ask on",
                         "re-run with --yes")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)


def report_delete(result: DeleteResult, what: str) -> None:
    """Say what a delete did in staging, and what waits for production."""
    from rich.markup import escape

    from rf.cli.output import info, success, warn

    success(f"deleted {what} in [staging]staging[/staging]")
    for w in result.warnings:
        warn(escape(w))
    if result.item is not None:
        info(f"  [production]production[/production] still has it: its removal is a release item "
             f"({escape(result.item.summary)})")
        info(f"[dim]  review and publish it: rf releases publish {result.kind}:{result.name}[/dim]")
    else:
        info("  production never had it: nothing to publish")


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Delete an agent from [bold #f59e0b]staging[/] at once; its removal from production is a release item.

    Commits, executions and releases stay readable (`rf agents history NAME`); once
    gone from both environments the agent leaves the lists. agents/NAME on disk stays.
    """
    from rf.cli.output import print_json, short

    with backend() as b:
        agent = b.get_agent(name)
        where = (f"; production keeps running {short(agent.production_commit)} until you publish its removal"
                 if agent.production_commit else "")
        confirm_delete(f"Delete agent {name} from staging{where}?", yes)
        result = b.delete_agent(name)
    if json_out:
        print_json(result)
        return
    report_delete(result, f"agent [bold]{name}[/bold]")
