"""The Typer application: global options, command groups, error handling."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rf.errors import RfError, UsageError

if TYPE_CHECKING:
    from rf.client import Backend
    from rf.config import Workspace

app = typer.Typer(
    name="rf",
    help="rf — build AI agents locally, with a [bold #f59e0b]staging[/] and a [bold #10b981]production[/] environment.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


class State:
    workspace_dir: str | None = None


state = State()


def _version_callback(value: bool) -> None:
    if value:
        from rf._version import __version__

        typer.echo(f"rf {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", help="Workspace directory (default: found by walking up from here).",
                     envvar="RF_WORKSPACE", show_envvar=False),
    ] = None,
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    state.workspace_dir = workspace


def workspace() -> Workspace:
    from rf.config import find_workspace

    return find_workspace(state.workspace_dir)


@contextmanager
def backend() -> Iterator[Backend]:
    """The server if one runs, else the store in-process (closed afterwards)."""
    from rf.client import connect

    b = connect(workspace())
    try:
        yield b
    finally:
        b.close()


EnvOption = Annotated[
    str,
    typer.Option("--env", "-e", help="Environment: staging or production.", envvar="RF_ENV", show_envvar=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (and nothing else) on stdout.")]
ExecutionIdArg = Annotated[str, typer.Argument(help="Execution id (or a unique prefix).")]
EnvFilterOption = Annotated[str | None, typer.Option("--env", "-e", help="Only look in this environment.")]


def check_env(env: str) -> str:
    from rf.models import check_env as _check

    return _check(env)


def parse_json_arg(text: str, what: str = "--input") -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}",
                         'quote it for your shell, e.g. --input \'{"name": "Ada"}\'') from None


def read_input(input_json: str | None, input_file: Path | None, positional: str | None = None) -> Any:
    """Agent input from the INPUT argument, --input, --input-file, or stdin (when piped); {} otherwise."""
    if positional is not None:
        if input_json is not None or input_file is not None:
            raise UsageError("the input was given twice (as an argument and with --input/--input-file)",
                             "keep one of them")
        try:
            return parse_json_arg(positional, "the input")
        except UsageError as exc:
            raise UsageError(exc.message, "quote it for your shell, e.g. '{\"name\": \"Ada\"}'") from None
    if input_json is not None and input_file is not None:
        raise UsageError("give either --input or --input-file, not both")
    if input_json is not None:
        return parse_json_arg(input_json)
    if input_file is not None:
        try:
            text = input_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {input_file}: {exc.strerror}") from None
        return parse_json_arg(text, str(input_file))
    if not sys.stdin or sys.stdin.closed:
        return {}
    try:
        if sys.stdin.isatty():
            return {}
        text = sys.stdin.read()
    except (OSError, ValueError):
        return {}
    return parse_json_arg(text, "stdin") if text.strip() else {}


def confirm(question: str, yes: bool) -> None:
    """Ask on a TTY; refuse without --yes when nobody can answer."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("this changes production and needs confirmation", "re-run with --yes")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)


#: Command groups: (name, help panel, help override). Each lives in rf/cli/<name>.py.
GROUPS: list[tuple[str, str, str]] = [
    ("agents", "Build (edits in staging)", "Deploy to staging, promote to production, inspect commits."),
    ("prompts", "Build (edits in staging)", "Prompts: draft in staging, publish to production."),
    ("connectors", "Build (edits in staging)",
     "Connectors: one instance per environment (edit in staging, publish to production)."),
    ("triggers", "Build (edits in staging)",
     "Triggers: run agents on a schedule, a webhook or file changes (one environment each)."),
    ("releases", "Release (the only way production changes)",
     "Review staging → production differences; publish them in batches; roll back."),
    ("credentials", "Shared by both environments", "Credentials (shared by both environments)."),
    ("providers", "Shared by both environments", "LLM providers (shared by both environments)."),
    ("kb", "Shared by both environments",
     "Knowledge bases: documents to search from agents (shared by both environments)."),
    ("data", "Shared by both environments",
     "Data sources: files, DuckDB and PostgreSQL databases, queried with SQL (shared)."),
    ("keys", "Access", "Endpoint keys: who may call an environment's agents."),
    ("users", "Access", "Users and roles: who may use this server (viewer, developer, publisher, admin)."),
    ("tokens", "Access", "Personal tokens: sign in to an rf server as yourself."),
    ("executions", "Observe (per environment)", "Executions of one environment."),
    ("sessions", "Observe (per environment)", "Sessions (threads), per environment."),
    ("memory", "Observe (per environment)", "Agent memory, per environment (production is read-only)."),
    ("traces", "Observe (per environment)", "Traces: span trees per execution."),
    ("evals", "Observe (per environment)",
     "Stored eval runs (rf eval, and the release gate's): list them, show one case by case."),
    ("store", "Workspace", "The store as a whole: what it holds; copy a DuckDB store into PostgreSQL."),
]


def _requested_group(argv: list[str]) -> str | None:
    """The command group named on the command line, if any (skipping global options)."""
    names = {g[0] for g in GROUPS}
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workspace", "-w"):
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg if arg in names else None
    return None


def _register(argv: list[str] | None = None) -> None:
    """Register the top-level commands and the command groups.

    When the command line names a group (``rf agents list``), only that
    group's module is imported: start-up pays for one group, not thirteen.
    ``rf --help`` and completion import them all.
    """
    import importlib

    from rf.cli import commands, gc, login

    args = sys.argv[1:] if argv is None else argv
    commands.register(app)
    gc.register(app)
    login.register(app)
    wanted = _requested_group(args)
    completing = any(k.endswith("_COMPLETE") for k in os.environ)
    # `rf --help` lists the groups, not their commands: an empty stand-in per group (with the
    # same help line) spares importing 14 modules and building ~90 commands' options.
    import rf.cli

    summary_only = not completing and rf.cli.HELP_SUMMARY and not os.environ.get("RF_FULL_HELP")
    for name, panel, help_text in GROUPS:
        if wanted is not None and name != wanted and not completing:
            continue
        group = typer.Typer() if summary_only else importlib.import_module(f"rf.cli.{name}").app
        app.add_typer(group, name=name, rich_help_panel=panel, help=help_text)


_register()


def run() -> None:
    """Run the CLI, turning every error into one clear message on stderr."""
    # Whatever rf creates (.rf/: the database, its WAL, server.json, caches, logs) is the
    # user's alone; so is what a server's workers create, as they inherit it.
    os.umask(0o077)
    try:
        rc = app(standalone_mode=False)
    except RfError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - click usage errors and anything unexpected
        ce = _click_exceptions()
        if isinstance(exc, ce.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        exit_cls = getattr(ce, "Exit", None)
        if exit_cls is not None and isinstance(exc, exit_cls):
            sys.exit(exc.exit_code)
        translated = _translate(exc)
        _print_error(translated)
        sys.exit(translated.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


def _click_exceptions() -> Any:
    """Typer ≥ 0.20 vendors click as typer._click; older ones use click."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def _translate(exc: BaseException) -> RfError:
    from rf.compose import translate_error

    t = translate_error(exc)
    if t is not None:
        return t
    if isinstance(exc, OSError):
        return RfError(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    if os.environ.get("RF_DEBUG"):
        raise exc
    return RfError(f"unexpected error: {type(exc).__name__}: {exc}",
                   "set RF_DEBUG=1 to see the traceback, and please report it")


def _print_error(exc: RfError) -> None:
    from rich.markup import escape

    from rf.cli.output import err

    err.print(f"[fail]error:[/fail] {escape(exc.message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"  [hint]hint:[/hint] {escape(exc.hint)}", highlight=False, soft_wrap=True)
