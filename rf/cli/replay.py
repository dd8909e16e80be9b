"""``rf replay AGENT``: recorded production executions run again on staging's state.

Exit code: 0 when no execution is newly failing (same, changed and fixed ones are not
failures: a changed output may be the point of the change); 1 when at least one is (it
succeeded in production and fails on staging — an unmatched connector call included); 2 for
a usage error (no such agent, nothing to replay...), like every rf command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import JsonOption, backend, check_env, workspace

if TYPE_CHECKING:
    from rf.models import ReplayedExecution, ReplayResult

#: Changed executions shown side by side in the terminal (``--json`` has them all).
SHOWN_DIFFS = 10

_MARK = {
    "same": "[dim]= same[/dim]",
    "changed": "[hint]~ changed[/hint]",
    "newly_failing": "[fail]✗ newly failing[/fail]",
    "fixed": "[ok]✓ fixed[/ok]",
}


def replay(
    agent: Annotated[str | None, typer.Argument(help="Agent name (default: the agent directory you are in).")] = None,
    from_env: Annotated[str, typer.Option("--from", help="Whose recorded executions to replay.")] = "production",
    against: Annotated[str, typer.Option("--against", help="The state they run on (staging only).")] = "staging",
    last: Annotated[int | None, typer.Option("--last", "-n", min=1, max=10_000,
                                             help="The newest N executions (default 20).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Those since: 30m, 2h, 7d, or a UTC date/time.")] = None,
    execution: Annotated[list[str] | None, typer.Option("--execution", "-x", metavar="ID",
                                                        help="This execution (repeat the option for more).")] = None,
    live_connectors: Annotated[bool, typer.Option(
        "--live-connectors", help="Let connector calls the recording does not hold reach staging's instances "
                                  "(default: they fail the replayed run).")] = False,
    llm: Annotated[str, typer.Option("--llm", help="configured: LLM calls go to the providers as set up; "
                                                   "mock: to the built-in offline mock.")] = "configured",
    json_out: JsonOption = False,
) -> None:
    """Run recorded production executions again on staging; exit code 1 when one newly fails.

    Each recorded input (with its session's history up to that turn) runs as a staging
    execution with source replay; connector calls are answered from the production
    execution's recorded responses. Shows per execution the status change, the output diff
    and the latency delta, then how many are the same, changed, newly failing and fixed."""
    check_env(from_env)
    check_env(against)
    if agent is None:
        from rf.config import resolve_agent_dir

        name, _ = resolve_agent_dir(workspace(), None)
    else:
        name = agent
    with backend() as b:
        result = b.replay(name, from_env, against, last, since, execution or None, live_connectors, llm)
    if json_out:
        from rf.cli.output import print_json

        print_json(result)
    else:
        print_result(result)
    raise typer.Exit(1 if result.newly_failing else 0)


def _calls(e: ReplayedExecution) -> str:
    parts = []
    if e.replayed_calls:
        parts.append(f"{e.replayed_calls} replayed")
    if e.live_calls:
        parts.append(f"{e.live_calls} live")
    if e.unmatched:
        parts.append(f"[fail]{len(e.unmatched)} unmatched[/fail]")
    if e.not_recorded:
        parts.append(f"[fail]{len(e.not_recorded)} not recorded[/fail]")
    return ", ".join(parts)


def _status(status: str) -> str:
    return f"[ok]{status}[/ok]" if status == "succeeded" else f"[fail]{status}[/fail]"


def print_result(result: ReplayResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import duration, env_label, err, fit_table, out, short

    err.print(f"replay [bold]{result.agent}[/bold] · {env_label(result.from_env)} → {env_label(result.against)} "
              f"{short(result.commit)} · llm {result.llm} · connectors "
              f"{'recorded, then live' if result.live_connectors else 'recorded only'} · [dim]{result.id}[/dim]")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("execution", "before → after", "outcome", "Δ ms", "connector calls", "change"):
        table.add_column(col, justify="right" if col == "Δ ms" else "left")
    for e in result.executions:
        first = e.changes[0].path if e.changes else ""
        more = f" (+{len(e.changes) - 1})" if len(e.changes) > 1 else ""
        what = (e.after_error or "") if e.after_status != "succeeded" else (first + more if first or more else "")
        table.add_row(e.execution_id, f"{_status(e.before_status)} → {_status(e.after_status)}", _MARK[e.outcome],
                      f"{e.delta_ms:+.1f}", _calls(e), escape(what))
    out.print(fit_table(table, flex=("change",), optional=("connector calls", "Δ ms")))
    shown = 0
    for e in result.executions:
        if e.outcome == "same":
            continue
        if shown >= SHOWN_DIFFS:
            out.print(f"[dim]… {sum(x.outcome != 'same' for x in result.executions) - shown} more: "
                      f"rf replay {result.agent} --json shows every one[/dim]")
            break
        shown += 1
        _print_diff(result, e)
    style = "fail" if result.newly_failing else "ok"
    out.print(f"[{style}]{result.total} replayed[/{style}]: {result.same} same · {result.changed} changed · "
              f"{result.newly_failing} newly failing · {result.fixed} fixed"
              + (f" · {result.unmatched} with unmatched connector calls" if result.unmatched else "")
              + f" · {duration(result.duration_ms)} · {result.workers} at a time")


def _print_diff(result: ReplayResult, e: ReplayedExecution) -> None:
    from rich.markup import escape

    from rf.cli.output import out
    from rf.evals.replay import pretty
    from rf.textdiff import side_by_side

    out.print()
    out.print(f"{_MARK[e.outcome]} [bold]{e.execution_id}[/bold] → {e.replay_execution_id or '(did not run)'} "
              f"[dim]{e.before_ms:.1f} ms → {e.after_ms:.1f} ms[/dim]")
    before = pretty(e.before_output) if e.before_status == "succeeded" else f"error: {e.before_error}"
    after = pretty(e.after_output) if e.after_status == "succeeded" else f"error: {e.after_error}"
    out.print(side_by_side(before, after, old_title=f"{result.from_env} (recorded)",
                           new_title=f"{result.against} (replayed)"))
    for change in e.changes[:10]:
        out.print(f"  [dim]{escape(change.path or '(output)')}[/dim] {change.kind}", soft_wrap=True)
    for call in e.unmatched:
        out.print(f"  [fail]unmatched connector call[/fail] {escape(call)}", soft_wrap=True)
    for call in e.not_recorded:
        out.print(f"  [fail]not recorded[/fail] {escape(call)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(name="replay", rich_help_panel="Run")(replay)
