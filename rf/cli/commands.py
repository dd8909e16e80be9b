"""Top-level commands: init, status, serve, test, invoke."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rf.cli.app import EnvOption, JsonOption, backend, check_env, read_input, workspace
from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.models import Execution


def examples_root() -> Path:
    """Example workspaces: packaged (wheel) or the repository's examples/ (editable install)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_examples", here.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise UsageError("the example workspaces are not installed with this copy of rf")


def list_examples() -> list[str]:
    try:
        root = examples_root()
    except UsageError:
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the workspace.")] = Path("."),
    example: Annotated[str | None, typer.Option("--example", help="Start from an example workspace (e.g. hello).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Workspace name (default: the directory name).")] = None,
) -> None:
    """Create a workspace: rf.toml, agents/, .rf/ (and a .gitignore for .rf/)."""
    from rf.cli.output import info, success
    from rf.config import init_workspace

    source: Path | None = None
    if example is not None:
        known = list_examples()
        if example not in known:
            raise UsageError(f"unknown example {example!r}", f"available: {', '.join(known) or 'none'}")
        source = examples_root() / example
    ws = init_workspace(directory, name=name)
    if source is not None:
        for item in sorted(source.iterdir()):
            if item.name in ("rf.toml", ".rf", "__pycache__"):
                continue
            dest = ws.root / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".rf"))
            elif not dest.exists():
                shutil.copy2(item, dest)
    success(f"created workspace [bold]{ws.name}[/bold] in {ws.root}")
    from rf.config import list_agent_dirs

    agents = list_agent_dirs(ws)
    rel = directory if str(directory) != "." else None
    if agents:
        first = agents[0]
        info("next steps:")
        if rel is not None:
            info(f"  cd {rel}")
        info(f"  rf test {first} --input '{{\"name\": \"Ada\"}}'   [dim]# run the working copy in staging mode[/dim]")
        info(f"  rf agents deploy {first}                         [dim]# commit it to staging[/dim]")
        info(f"  rf agents promote {first}                        [dim]# ship staging to production[/dim]")
    else:
        info("next: create agents/<name>/agent.toml and agent.py, or start from an example: rf init DIR --example hello")


def status(json_out: JsonOption = False) -> None:
    """Workspace, server, and each agent's staging and production commits."""
    from rich.table import Table

    from rf.cli.output import out, print_json, short

    with backend() as b:
        st = b.status()
        if json_out:
            print_json(st)
            return
        out.print(f"[bold]workspace[/bold]  {st.workspace}  [dim]{st.workspace_path}[/dim]")
        if st.server_url:
            out.print(f"[bold]server[/bold]     [ok]running[/ok] at {st.server_url}")
        else:
            out.print("[bold]server[/bold]     [dim]not running (commands open the store directly; start one with `rf serve`)[/dim]")
        if not st.agents:
            out.print("[bold]agents[/bold]     none deployed yet — rf agents deploy NAME")
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("agent")
        table.add_column("staging", style="#f59e0b")
        table.add_column("production", style="#10b981")
        table.add_column("")
        for a in st.agents:
            ahead = f"{a.commits_ahead} commit{'s' if a.commits_ahead != 1 else ''} ahead" if a.commits_ahead else "in sync"
            if a.production_commit is None:
                ahead = "not promoted yet"
            table.add_row(a.name, short(a.staging_commit), short(a.production_commit), ahead)
        out.print(table)


def serve(
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port (default: [server] port in rf.toml, 7410).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface to bind (default 127.0.0.1).")] = None,
) -> None:
    """Run the embedded server: one endpoint URL per environment, plus the management API."""
    from rf.cli.output import info
    from rf.server.serve import prepare, serve_forever

    ws = workspace()
    running = prepare(ws, host=host, port=port)
    info(f"[bold]rf[/bold] serving workspace [bold]{ws.name}[/bold] at {running.url}")
    info(f"  [staging]staging[/staging]     {running.url}/staging/agents/NAME")
    info(f"  [production]production[/production]  {running.url}/production/agents/NAME")
    info(f"  api docs    {running.url}/schema   [dim](management API token in .rf/server.json)[/dim]")
    if running.host not in ("127.0.0.1", "localhost", "::1"):
        info("[yellow]! listening beyond this machine: agent endpoints need no token[/yellow]")
    info("[dim]Ctrl-C to stop[/dim]")
    serve_forever(ws, running)


def _print_execution(ex: Execution, json_out: bool) -> None:
    from rich.markup import escape

    from rf.cli.output import duration, env_label, err, out, print_json

    if json_out:
        print_json(ex)
        return
    if ex.logs:
        err.print(f"[dim]{escape(ex.logs.rstrip())}[/dim]")
    if ex.status == "succeeded":
        if isinstance(ex.output, str):
            out.print(escape(ex.output), soft_wrap=True)
        else:
            out.print_json(data=ex.output) if out.is_terminal else print(_dumps(ex.output))
        err.print(f"[ok]✓ succeeded[/ok] in {duration(ex.duration_ms)} · {env_label(ex.env)} · "
                  f"{'working copy' if ex.commit == 'working-copy' else ex.commit[:8]} · [dim]{ex.id}[/dim]")
    else:
        err.print(f"[fail]✗ failed[/fail] in {duration(ex.duration_ms)} · {env_label(ex.env)} · [dim]{ex.id}[/dim]")
        err.print(f"  {escape(ex.error or 'unknown error')}", soft_wrap=True)
        if ex.traceback:
            err.print(f"[dim]{escape(ex.traceback.rstrip())}[/dim]")


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)


def test(
    agent: Annotated[str | None, typer.Argument(help="Agent name or directory (default: the one you are in).")] = None,
    input_json: Annotated[str | None, typer.Option("--input", "-i", help="Input as JSON.")] = None,
    input_file: Annotated[Path | None, typer.Option("--input-file", "-f", help="Read the input JSON from a file.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Session id to continue.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Re-run on every change under the agent directory.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Run the agent's working copy locally in [bold #f59e0b]staging[/] mode (never production)."""
    from rf.config import resolve_agent_dir, snapshot_dir

    ws = workspace()
    name, directory = resolve_agent_dir(ws, agent)
    payload = read_input(input_json, input_file)

    def once() -> bool:
        files = snapshot_dir(directory)
        with backend() as b:
            ex = b.run_test(name, files, payload, session)
        _print_execution(ex, json_out)
        return ex.status == "succeeded"

    if not watch:
        ok = once()
        raise typer.Exit(0 if ok else 1)
    _watch(directory, once)


def _watch(directory: Path, once: Any) -> None:
    from watchfiles import watch as watch_changes

    from rf.cli.output import err, info
    from rf.errors import RfError

    def safe() -> None:
        try:
            once()
        except RfError as exc:
            err.print(f"[fail]error:[/fail] {exc.message}")
            if exc.hint:
                err.print(f"  [hint]hint:[/hint] {exc.hint}")

    safe()
    info(f"[dim]watching {directory} — Ctrl-C to stop[/dim]")
    for changes in watch_changes(directory, debounce=200, raise_interrupt=False):
        relevant = [p for _, p in changes if "__pycache__" not in p and not p.endswith(".pyc")]
        if not relevant:
            continue
        names = ", ".join(sorted({Path(p).name for p in relevant}))
        info(f"[dim]── change in {names}: re-running ──[/dim]")
        safe()


def invoke(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    env: EnvOption = "staging",
    input_json: Annotated[str | None, typer.Option("--input", "-i", help="Input as JSON.")] = None,
    input_file: Annotated[Path | None, typer.Option("--input-file", "-f", help="Read the input JSON from a file.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Session id to continue.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Call an environment's deployed agent (through the server, or in-process)."""
    check_env(env)
    payload = read_input(input_json, input_file)
    with backend() as b:
        ex = b.invoke(env, agent, payload, session, "invoke")
    _print_execution(ex, json_out)
    raise typer.Exit(0 if ex.status == "succeeded" else 1)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Workspace")(init)
    app.command(rich_help_panel="Workspace")(status)
    app.command(rich_help_panel="Workspace")(serve)
    app.command(rich_help_panel="Run")(test)
    app.command(rich_help_panel="Run")(invoke)


