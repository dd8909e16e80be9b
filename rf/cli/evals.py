"""``rf evals list|show``: stored eval runs (every ``rf eval`` and every release gate's runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import JsonOption, backend, check_env

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Stored eval runs (rf eval, and the release gate's): list them, show one case by case.")


@app.command("list")
def list_runs(
    agent: Annotated[str | None, typer.Argument(help="Only this agent's runs.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many (newest first).")] = 20,
    json_out: JsonOption = False,
) -> None:
    """Eval runs, newest first: agent, environment, commit, passed/total."""
    from rich.table import Table

    from rf.cli.output import env_label, fit_table, out, print_json, short, when

    if env is not None:
        check_env(env)
    with backend() as b:
        runs = b.list_eval_runs(agent, env, limit)
    if json_out:
        print_json(runs)
        return
    if not runs:
        out.print("no eval runs yet — run one: rf eval AGENT")
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title="eval runs", title_justify="left")
    for col in ("id", "agent", "env", "commit", "passed", "started (UTC)", "duration"):
        table.add_column(col)
    for r in runs:
        style = "ok" if r.failed == 0 else "fail"
        table.add_row(r.id, r.agent, env_label(r.env), short(r.commit), f"[{style}]{r.passed}/{r.total}[/{style}]",
                      when(r.started_at), f"{r.duration_ms / 1000:.1f} s")
    out.print(fit_table(table, flex=("agent",), optional=("duration", "started (UTC)")))


@app.command("show")
def show(run_id: Annotated[str, typer.Argument(help="Eval run id (or a unique prefix).")],
         json_out: JsonOption = False) -> None:
    """One eval run, case by case (as rf eval printed it); exit code 1 when a case failed."""
    from rf.cli.eval import print_result
    from rf.cli.output import print_json

    with backend() as b:
        result = b.get_eval_run(run_id)
    if json_out:
        print_json(result)
    else:
        print_result(result)
    raise typer.Exit(0 if result.failed == 0 else 1)
