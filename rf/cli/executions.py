"""``rf executions``: what ran, per environment (never mixed)."""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import EnvFilterOption, EnvOption, ExecutionIdArg, JsonOption, backend, check_env

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich")

#: How each status is shown (markup).
STATUS_MARKUP = {
    "succeeded": "[ok]succeeded[/ok]",
    "failed": "[fail]failed[/fail]",
    "running": "[bold cyan]running[/bold cyan]",
    "interrupted": "[fail]interrupted[/fail]",
}


def status_markup(status: str) -> str:
    return STATUS_MARKUP.get(status, status)


def _arm_markup(arm: str | None) -> str:
    return {"canary": "[yellow]canary[/yellow]", "stable": "stable"}.get(arm or "", "")


@app.command("list")
def list_executions(
    env: EnvOption = "staging",
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent.")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="succeeded, failed, running (in progress) or interrupted (the server stopped).")] = None,
    source: Annotated[str | None, typer.Option("--source", help="endpoint, openai, mcp, test, eval, invoke, trigger, agent (called by another agent)...")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many (newest first).")] = 20,
    release: Annotated[str | None, typer.Option("--release", help="Only production's executions of this release "
                                                                  "(an id or prefix).")] = None,
    arm: Annotated[str | None, typer.Option("--arm", help="Only those on this arm of a canary release: stable or "
                                                          "canary.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Executions of one environment, newest first."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import duration, env_label, fit_table, out, print_json, short, when

    check_env(env)
    with backend() as b:
        rows = b.list_executions(env, agent, status, source, limit, None, release, arm)
    if json_out:
        print_json(rows)
        return
    if not rows:
        out.print(f"no executions in {env_label(env)}" + (f" for agent {agent}" if agent else ""))
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title=f"executions · {env_label(env)}",
                  title_justify="left")
    table.add_column("id", style="dim", no_wrap=True)
    table.add_column("agent")
    table.add_column("status")
    table.add_column("source")
    table.add_column("commit", style="yellow")
    arms = any(ex.arm for ex in rows)  # (a canary ran: which arm each execution took)
    if arms:
        table.add_column("arm")
    table.add_column("started (UTC)", style="dim")
    table.add_column("queued", justify="right")
    table.add_column("duration", justify="right")
    table.add_column("error", overflow="ellipsis", max_width=40, no_wrap=True)
    for ex in rows:
        # queued: the wait for a worker, when there was one to speak of (a busy pool, a cold start)
        table.add_row(ex.id, ex.agent, status_markup(ex.status), ex.source, short(ex.commit),
                      *([_arm_markup(ex.arm)] if arms else []), when(ex.started_at),
                      duration(ex.queued_ms) if ex.queued_ms >= 1 else "",
                      duration(ex.duration_ms) + (" so far" if ex.status == "running" else ""),
                      escape(ex.error or ""))
    out.print(fit_table(table, optional=("source", "queued", "commit"), last_resort=("started (UTC)",)))


@app.command("show")
def show(
    execution_id: ExecutionIdArg,
    env: EnvFilterOption = None,
    json_out: JsonOption = False,
) -> None:
    """One execution: input, output, error, logs."""
    import json

    from rich.markup import escape

    from rf.cli.output import duration, env_label, out, print_json, when

    if env is not None:
        check_env(env)
    from rf.errors import RfError

    with backend() as b:
        ex = b.get_execution(execution_id, env)
        spans = []
        if not json_out and ex.status != "running":
            try:  # the trace's runtime spans say what the wait for a worker was
                spans = [s for s in b.get_trace(ex.id, ex.env).spans if s.kind == "runtime"]
            except RfError:
                spans = []
    if json_out:
        print_json(ex)
        return
    out.print(f"[bold]{ex.id}[/bold]  {status_markup(ex.status)}  {env_label(ex.env)}")
    running = ex.status == "running"
    took = duration(ex.duration_ms) + (" so far" if running else "")
    if running and ex.duration_ms == 0:
        took = "not started: waiting for a worker"
    # What the wait was: the trace's runtime spans (the pool's queue, a new worker's start).
    why = [what for name, what in (("queue.wait", "every worker of the agent was busy"),
                                   ("worker.start", "a cold start, a new worker importing the agent"))
           if any(s.name == name for s in spans)]
    queued = duration(ex.queued_ms) + (" so far" if running and ex.duration_ms == 0 else "")
    if why:
        queued += f" (before it: {'; then '.join(why)})"
    rows = [
        ("agent", ex.agent), ("commit", ex.commit), ("source", ex.source),
        ("session", ex.session_id or "—"), ("started", when(ex.started_at) + " UTC"),
        ("queued", queued), ("duration", took),
    ]
    if ex.release_id:  # production: the release it ran (and the arm, while a canary ran)
        rows.insert(3, ("release", ex.release_id + (f" ({ex.arm} arm)" if ex.arm else "")))
    if ex.parent_id:  # called by another agent (ctx.agents.invoke)
        rows.insert(3, ("parent", f"{ex.parent_id} (rf executions show {ex.parent_id})"))
    if ex.ended_at:
        rows.append(("ended", when(ex.ended_at) + " UTC"))
    if not running:
        rows.append(("trace", f"rf traces show {ex.id}"))
    for k, v in rows:
        out.print(f"  [dim]{k:<9}[/dim] {escape(str(v))}")
    out.print("[bold]input[/bold]")
    out.print(escape(json.dumps(ex.input, indent=2, ensure_ascii=False)))
    if running:
        out.print("[dim]still running: its output, logs and trace are recorded when it ends[/dim]")
    elif ex.status == "succeeded":
        out.print("[bold]output[/bold]")
        out.print(escape(json.dumps(ex.output, indent=2, ensure_ascii=False)))
    else:
        out.print(f"[bold]error[/bold] [dim]({ex.error_type})[/dim]")
        out.print(f"[fail]{escape(ex.error or '')}[/fail]")
        if ex.traceback:
            out.print(f"[dim]{escape(ex.traceback.rstrip())}[/dim]")
    if ex.logs:
        out.print("[bold]logs[/bold]")
        out.print(f"[dim]{escape(ex.logs.rstrip())}[/dim]")
