"""``rf sessions``: sessions (threads) of one environment, never mixed."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rf.cli.app import EnvOption, JsonOption, backend, check_env

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Sessions (threads), per environment.")


def content_text(content: Any) -> str:
    """A message's content for the terminal: text as it is, anything else as JSON."""
    import json

    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


@app.command("list")
def list_sessions(
    env: EnvOption = "staging",
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's sessions.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many (most recently active first).")] = 20,
    release: Annotated[str | None, typer.Option("--release", help="Only production's of this release (an id or "
                                                                  "prefix).")] = None,
    arm: Annotated[str | None, typer.Option("--arm", help="Only those on this arm of a canary release: stable or "
                                                          "canary.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Sessions of one environment, most recently active first."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import env_label, fit_table, out, print_json, when

    check_env(env)
    with backend() as b:
        rows = b.list_sessions(env, agent, limit, release, arm)
    if json_out:
        print_json(rows)
        return
    if not rows:
        out.print(f"no sessions in {env_label(env)}" + (f" for agent {agent}" if agent else ""))
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title=f"sessions · {env_label(env)}",
                  title_justify="left")
    table.add_column("session", no_wrap=True)
    table.add_column("agent")
    table.add_column("messages", justify="right")
    arms = any(s.arm for s in rows)  # (a canary ran: the arm of each session's latest execution)
    if arms:
        table.add_column("arm")
    table.add_column("started (UTC)", style="dim")
    table.add_column("last active (UTC)", style="dim")
    table.add_column("last message", overflow="ellipsis", max_width=50, no_wrap=True)
    for s in rows:
        table.add_row(escape(s.id), s.agent, str(s.messages), *([s.arm or ""] if arms else []),
                      when(s.started_at), when(s.updated_at),
                      escape(s.last_message))
    out.print(fit_table(table, optional=("started (UTC)",), last_resort=("last active (UTC)",)))


@app.command("show")
def show(
    session_id: Annotated[str, typer.Argument(help="Session id.")],
    env: EnvOption = "staging",
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="The agent (when several use this id).")] = None,
    json_out: JsonOption = False,
) -> None:
    """The conversation of one session, as turns (with their execution ids)."""
    from rich.markup import escape

    from rf.cli.output import env_label, out, print_json, when

    check_env(env)
    with backend() as b:
        thread = b.get_session(session_id, env, agent)
    if json_out:
        print_json(thread)
        return
    out.print(f"[bold]session {escape(thread.id)}[/bold] · {thread.agent} · {env_label(thread.env)} · "
              f"{len(thread.messages)} message{'s' if len(thread.messages) != 1 else ''}")
    turn = 0
    current: str | None = None
    for m in thread.messages:
        if m.execution_id != current or current is None:
            current = m.execution_id
            turn += 1
            out.print(f"\n[dim]── turn {turn} · {current or 'no execution'} · {when(m.created_at)} UTC[/dim]")
        style = {"user": "bold cyan", "assistant": "bold green"}.get(m.role, "bold magenta")
        out.print(f"[{style}]{m.role:>9}[/{style}] › {escape(content_text(m.content))}", soft_wrap=True)
