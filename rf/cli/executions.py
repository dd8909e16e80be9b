"""``rf executions``: what ran, per environment (never mixed)."""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import EnvFilterOption, EnvOption, ExecutionIdArg, JsonOption, backend, check_env

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich")


@app.command("list")
def list_executions(
    env: EnvOption = "staging",
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="succeeded or failed.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="endpoint, test, invoke, trigger...")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many (newest first).")] = 20,
    json_out: JsonOption = False,
) -> None:
    """Executions of one environment, newest first."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import duration, env_label, fit_table, out, print_json, short, when

    check_env(env)
    with backend() as b:
        rows = b.list_executions(env, agent, status, source, limit)
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
    table.add_column("started (UTC)", style="dim")
    table.add_column("duration", justify="right")
    table.add_column("error", overflow="ellipsis", max_width=40, no_wrap=True)
    for ex in rows:
        st = "[ok]succeeded[/ok]" if ex.status == "succeeded" else "[fail]failed[/fail]"
        table.add_row(ex.id, ex.agent, st, ex.source, short(ex.commit), when(ex.started_at),
                      duration(ex.duration_ms), escape(ex.error or ""))
    out.print(fit_table(table, optional=("source", "commit"), last_resort=("started (UTC)",)))


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
        cold = None
        if not json_out:
            try:  # a cold start shows in the trace (a runtime span): say so next to the duration
                cold = next((s for s in b.get_trace(ex.id, ex.env).spans if s.name == "worker.start"), None)
            except RfError:
                cold = None
    if json_out:
        print_json(ex)
        return
    st = "[ok]succeeded[/ok]" if ex.status == "succeeded" else "[fail]failed[/fail]"
    out.print(f"[bold]{ex.id}[/bold]  {st}  {env_label(ex.env)}")
    took = duration(ex.duration_ms)
    if cold is not None:
        took += f" (+ {duration(cold.duration_ms)} before it: a cold start, a new worker importing the agent)"
    rows = [
        ("agent", ex.agent), ("commit", ex.commit), ("source", ex.source),
        ("session", ex.session_id or "—"), ("started", when(ex.started_at) + " UTC"),
        ("duration", took), ("trace", f"rf traces show {ex.id}"),
    ]
    for k, v in rows:
        out.print(f"  [dim]{k:<9}[/dim] {escape(str(v))}")
    out.print("[bold]input[/bold]")
    out.print(escape(json.dumps(ex.input, indent=2, ensure_ascii=False)))
    if ex.status == "succeeded":
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
