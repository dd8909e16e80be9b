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
    if source is not None and (source / "rf.toml").is_file():
        # An example may bring settings (e.g. [llm] mock rules); rf init wrote [workspace]/[server].
        extra = (source / "rf.toml").read_text(encoding="utf-8")
        with (ws.root / "rf.toml").open("a", encoding="utf-8") as fh:
            fh.write(f"\n# ---- from the {example} example\n{extra}")
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
        sample = '{"name": "Ada"}' if first == "hello" else "{}"
        info(f"  rf test {first} --input '{sample}'   [dim]# run the working copy in staging mode[/dim]")
        info(f"  rf agents deploy {first}                         [dim]# commit it to staging[/dim]")
        info(f"  rf agents promote {first}                        [dim]# ship staging to production[/dim]")
        if (ws.root / "README.md").is_file():
            info("  [dim]this example's walkthrough: README.md[/dim]")
    else:
        info("next: create agents/<name>/agent.toml and agent.py, or start from an example: rf init DIR --example hello")


def status(json_out: JsonOption = False) -> None:
    """Workspace, server, and each agent's staging and production commits."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import out, print_json, short
    from rf.config import list_agent_dirs

    with backend() as b:
        st = b.status()  # (the store's live servers too: AgentsService.status)
        if json_out:
            print_json(st)
            return
        out.print(f"[bold]workspace[/bold]  {st.workspace}  [dim]{st.workspace_path}[/dim]")
        if st.server_url:
            out.print(f"[bold]server[/bold]     [ok]running[/ok] at {st.server_url}")
        else:
            out.print("[bold]server[/bold]     [dim]not running (commands open the store directly; start one with `rf serve`)[/dim]")
        if st.store:
            out.print(f"[bold]store[/bold]      {escape(st.store)}")
        if st.replicas:
            n = len(st.replicas)
            out.print(f"[bold]replicas[/bold]   {n} rf server{'s' if n != 1 else ''} on this store")
            for r in st.replicas:
                out.print(f"           {escape(r.url)}  [dim]host[/dim] {escape(r.host)}  [dim]pid[/dim] {r.pid}"
                          f"  [dim]heartbeat {r.heartbeat_age_s:.1f} s ago[/dim]")
        # Agents in agents/ that were never deployed are listed too, with what to run.
        deployed = {a.name for a in st.agents}
        local = [name for name in list_agent_dirs(workspace()) if name not in deployed]
        if not st.agents and not local:
            out.print("[bold]agents[/bold]     none yet — create agents/NAME/agent.toml and agent.py, then "
                      "rf agents deploy NAME")
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
        for name in local:
            table.add_row(name, "—", "—", f"[yellow]not deployed yet: rf agents deploy {name}[/yellow]")
        out.print(table)


def serve(
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port (default: [server] port in rf.toml, 7410).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Interface to bind (default 127.0.0.1).")] = None,
) -> None:
    """Run the embedded server: one endpoint URL per environment, plus the management API."""
    from rf.cli.output import info
    from rf.compose import prepare_server, serve_forever

    ws = workspace()
    running = prepare_server(ws, host=host, port=port)
    info(f"[bold]rf[/bold] serving workspace [bold]{ws.name}[/bold] at {running.url}")
    info(f"  [staging]staging[/staging]     {running.url}/staging/agents/NAME")
    info(f"  [production]production[/production]  {running.url}/production/agents/NAME")
    info(f"  openai      {running.url}/staging/v1  ·  {running.url}/production/v1   [dim](model = agent name)[/dim]")
    info(f"  mcp         {running.url}/staging/mcp  ·  {running.url}/production/mcp")
    info(f"  api docs    {running.url}/schema   [dim](management API token in .rf/server.json)[/dim]")
    if running.require_keys:
        why = "listening beyond this machine" if running.host not in ("127.0.0.1", "localhost", "::1") else \
            "[server] require_keys = true"
        info(f"  endpoint keys required ({why}): rf keys create --env ENV; Authorization: Bearer KEY")
    info("[dim]Ctrl-C to stop[/dim]")
    serve_forever(ws, running)


class _LiveChunks:
    """Print a generator agent's chunks as they come (``rf test``): text chunks run
    together like a stream of tokens, other values one JSON line each."""

    def __init__(self, prefix: str = "", text_keys: tuple[str, ...] = ()) -> None:
        self.count = 0
        self._mid_line = False
        self._prefix = prefix
        self._text_keys = text_keys  # a dict chunk with one of these as text is that text (chat)

    def __call__(self, chunk: Any) -> None:
        import json
        import sys

        if not self.count and self._prefix:
            sys.stdout.write(self._prefix)
            self._mid_line = True
        self.count += 1
        if isinstance(chunk, dict) and self._text_keys:
            chunk = next((chunk[k] for k in self._text_keys if isinstance(chunk.get(k), str)), chunk)
        if isinstance(chunk, str):
            sys.stdout.write(chunk)
            self._mid_line = not chunk.endswith("\n")
        else:
            if self._mid_line:
                sys.stdout.write("\n")
            sys.stdout.write(json.dumps(chunk, ensure_ascii=False) + "\n")
            self._mid_line = False
        sys.stdout.flush()

    def end(self) -> None:
        import sys

        if self._mid_line:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._mid_line = False


def _print_execution(ex: Execution, json_out: bool, *, streamed: bool = False) -> None:
    from rich.markup import escape

    from rf.cli.output import duration, env_label, err, out, print_json

    if json_out:
        print_json(ex)
        return
    if ex.logs:
        err.print(f"[dim]{escape(ex.logs.rstrip())}[/dim]")
    if ex.status == "succeeded":
        if streamed:
            pass  # its chunks were printed as they came
        elif isinstance(ex.output, str):
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


#: The input as a positional argument: `rf test hello '{"name": "Ada"}'`.
InputArgument = Annotated[str | None, typer.Argument(metavar="[INPUT]", show_default=False,
                                                     help="Input as JSON (same as --input).")]


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[", '"')


def test(
    agent: Annotated[str | None, typer.Argument(help="Agent name or directory (default: the one you are in).")] = None,
    positional: InputArgument = None,
    input_json: Annotated[str | None, typer.Option("--input", "-i", help="Input as JSON.")] = None,
    input_file: Annotated[Path | None, typer.Option("--input-file", "-f", help="Read the input JSON from a file.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Session id to continue.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Re-run on every change under the agent directory.")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="Chat: read lines, send each as {\"message\": line} "
                                                      "in one session, print the replies.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Run the agent's working copy locally in [bold #f59e0b]staging[/] mode (never production)."""
    from rf.config import resolve_agent_dir, snapshot_dir

    ws = workspace()
    if agent is not None and positional is None and _looks_like_json(agent) and not Path(agent).exists():
        agent, positional = None, agent  # `rf test '{"name": "Ada"}'` inside the agent's directory
    name, directory = resolve_agent_dir(ws, agent)
    if chat:
        if watch or json_out or input_json is not None or input_file is not None or positional is not None:
            raise UsageError("--chat reads its input from the terminal",
                             "drop --input/--input-file/--watch/--json, or drop --chat")
        _chat(name, directory, session)
        return
    payload = read_input(input_json, input_file, positional)

    def once() -> bool:
        files = snapshot_dir(directory)
        live = None if json_out else _LiveChunks()
        with backend() as b:
            ex = b.run_test(name, files, payload, session, on_chunk=live)
        if live is not None:
            live.end()
        _print_execution(ex, json_out, streamed=bool(live and live.count))
        return ex.status == "succeeded"

    if not watch:
        ok = once()
        raise typer.Exit(0 if ok else 1)
    _watch(directory, once)


def _chat(name: str, directory: Path, session: str | None) -> None:
    """``rf test --chat``: one session (staging, working copy), one execution per line.

    The working copy is read again for every line, so edits apply to the
    next message. Ends at end of input, ``exit``/``quit`` or Ctrl-C.
    """
    import re
    import sys

    from rich.markup import escape

    from rf.cli.output import duration, err, info, out
    from rf.config import snapshot_dir
    from rf.errors import RfError
    from rf.ids import new_id
    from rf.models import SESSION_ID_PATTERN

    if session is not None and not re.fullmatch(SESSION_ID_PATTERN, session):
        raise UsageError(f"invalid session id {session!r}", "use 1 to 128 letters, digits and _ . : -")
    session_id = session or new_id("chat")
    tty = sys.stdin.isatty()
    info(f"chat with [bold]{name}[/bold] · [staging]staging[/staging] (working copy) · session {session_id}")
    info("[dim]type a message; exit or Ctrl-D to quit[/dim]")
    with backend() as b:
        while True:
            try:
                line = input("you › ") if tty else sys.stdin.readline()
            except (EOFError, KeyboardInterrupt):
                line = ""
                if tty:
                    err.print()
            if not line:
                break
            line = line.rstrip("\n")
            if line.strip() in ("exit", "quit"):
                break
            if not line.strip():
                continue
            live = _LiveChunks(prefix=f"{name} › " if tty else "", text_keys=("message", "piece", "text", "content",
                                                                               "delta"))
            try:
                ex = b.run_test(name, snapshot_dir(directory), {"message": line}, session_id, on_chunk=live)
                live.end()
            except RfError as exc:
                live.end()
                err.print(f"[fail]error:[/fail] {escape(exc.message)}")
                if exc.hint:
                    err.print(f"  [hint]hint:[/hint] {escape(exc.hint)}")
                continue
            if ex.logs:
                err.print(f"[dim]{escape(ex.logs.rstrip())}[/dim]")
            if ex.status != "succeeded":
                err.print(f"[fail]✗ failed[/fail] [dim]{ex.id}[/dim]: {escape(ex.error or 'unknown error')}")
                continue
            if live.count:  # a generator: its reply was printed as it came
                err.print(f"[dim]{duration(ex.duration_ms)} · {ex.id}[/dim]")
                continue
            output = ex.output
            reply = output["message"] if isinstance(output, dict) and "message" in output else output
            text = reply if isinstance(reply, str) else _dumps(reply)
            if tty:
                out.print(f"[bold green]{name} ›[/bold green] {escape(text)}", soft_wrap=True)
            else:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            err.print(f"[dim]{duration(ex.duration_ms)} · {ex.id}[/dim]")
    info(f"[dim]session {session_id} · replay it: rf sessions show {session_id}[/dim]")


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
    positional: InputArgument = None,
    env: EnvOption = "staging",
    input_json: Annotated[str | None, typer.Option("--input", "-i", help="Input as JSON.")] = None,
    input_file: Annotated[Path | None, typer.Option("--input-file", "-f", help="Read the input JSON from a file.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Session id to continue.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Call an environment's deployed agent (through the server, or in-process)."""
    check_env(env)
    payload = read_input(input_json, input_file, positional)
    with backend() as b:
        ex = b.invoke(env, agent, payload, session, "invoke")
    _print_execution(ex, json_out)
    raise typer.Exit(0 if ex.status == "succeeded" else 1)


def ui(
    env: EnvOption = "staging",
    view: Annotated[str, typer.Option("--view", help="Open this view first (agents, releases, ...).")] = "agents",
) -> None:
    """Open the dashboard (starts the embedded server unless one already runs)."""
    from rf.tui.launch import main as run_ui

    run_ui(workspace(), env=check_env(env), view=view)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Workspace")(init)
    app.command(rich_help_panel="Workspace")(status)
    app.command(rich_help_panel="Workspace")(serve)
    app.command(rich_help_panel="Workspace")(ui)
    app.command(rich_help_panel="Run")(test)
    app.command(rich_help_panel="Run")(invoke)
    from rf.cli import eval as eval_cmd  # rf eval (its work is imported when it runs)

    eval_cmd.register(app)
    from rf.cli import replay as replay_cmd  # rf replay

    replay_cmd.register(app)
    from rf.cli import mcp  # rf mcp (the MCP SDK itself is imported when it runs)

    mcp.register(app)


