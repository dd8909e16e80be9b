"""``rf prompts``: drafts in staging, published to production.

Every edit (create, set, edit) makes a new immutable version and moves the
*draft* — what staging and ``rf test`` use. Production keeps its *published*
version until ``rf prompts publish`` (or a release) moves it, after showing
the side-by-side diff.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import EnvOption, JsonOption, backend, check_env, confirm
from rf.errors import RfError, UsageError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from rf.client import Backend
    from rf.models import PromptDiff, PromptSaveResult

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Prompts: draft in staging, publish to production.")

NameArg = Annotated[str, typer.Argument(help="Prompt name (lowercase letters, digits, '-' and '_').")]
FileOption = Annotated[Path | None, typer.Option("--file", "-f", help="Read the text from this file ('-' for stdin).")]
TextOption = Annotated[str | None, typer.Option("--text", "-t", help="The text itself.")]
MessageOption = Annotated[str, typer.Option("--message", "-m", help="What changed (kept with the version).")]


def read_text(file: Path | None, text: str | None) -> str:
    """The prompt text from exactly one of --file (or '-' for stdin) and --text."""
    if (file is None) == (text is None):
        raise UsageError("give the prompt text with either --file FILE or --text TEXT",
                         "e.g. rf prompts create greet --file prompts/greet.txt")
    if text is not None:
        return text
    assert file is not None
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{file} is not UTF-8 text", "save it as UTF-8 and try again") from None


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def _version(v: int | None) -> str:
    return "—" if v is None else f"v{v}"


def report_saved(result: PromptSaveResult) -> None:
    """Say what a create/set/edit did (on stderr)."""
    from rf.cli.output import info, success

    v = result.version
    if not result.created:
        info(f"{result.name}: the text is identical to draft v{v.version} — nothing saved")
        return
    prod = (f"production still has v{result.published_version}" if result.published_version is not None
            else "production has no version yet")
    verb = "created prompt" if v.version == 1 else "saved"
    success(f"{verb} [bold]{result.name}[/bold] v{v.version} as the [staging]draft[/staging] (staging); {prod}")
    info(f"  variables: {_names(v.variables)}")
    info(f"[dim]  when staging looks good: rf prompts publish {result.name}[/dim]")


# ------------------------------------------------------------ edits (staging)
@app.command("create")
def create(
    name: NameArg,
    file: FileOption = None,
    text: TextOption = None,
    message: MessageOption = "",
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Create a prompt; version 1 becomes the [bold #f59e0b]draft[/] (staging)."""
    _save("create_prompt", name, read_text(file, text), message, env, json_out)


@app.command("set")
def set_text(
    name: NameArg,
    file: FileOption = None,
    text: TextOption = None,
    message: MessageOption = "",
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Save a new [bold #f59e0b]draft[/] version (production does not change)."""
    _save("set_prompt", name, read_text(file, text), message, env, json_out)


def _save(method: str, name: str, body: str, message: str, env: str, json_out: bool) -> None:
    """create_prompt / set_prompt, then the same report."""
    from rf.cli.output import print_json
    from rf.config import git_author

    with backend() as b:
        result = getattr(b, method)(name, body, git_author(), message, env=env)
    if json_out:
        print_json(result)
    else:
        report_saved(result)


def editor_command() -> list[str]:
    """$VISUAL, else $EDITOR, else vi — the order git and crontab use."""
    import os
    import shlex

    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        parts = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"cannot parse the editor command {command!r}: {exc}", "check $VISUAL / $EDITOR") from None
    if not parts:
        raise UsageError("the editor command is empty", "set $EDITOR, e.g. export EDITOR=nano")
    return parts


@app.command("edit")
def edit(
    name: NameArg,
    message: MessageOption = "",
    env: EnvOption = "staging",
) -> None:
    """Edit the draft in $VISUAL / $EDITOR (default vi); saving makes a new draft version.

    The database is not held while the editor is open. If saving fails (say,
    a template error), your text is kept in a file whose path is printed.
    """
    import shutil
    import subprocess
    import tempfile

    from rf.config import git_author
    from rf.models import require_staging

    check_env(env)
    # Refuse before the editor opens (the service refuses again when saving).
    require_staging(env, f"edit prompt {name!r}", f"edit in staging, then publish: rf prompts publish {name}")
    with backend() as b:
        draft = b.get_prompt(name, "staging")
    command = editor_command()
    tmpdir = Path(tempfile.mkdtemp(prefix="rf-prompt-"))
    path = tmpdir / f"{name}.txt"
    keep = False
    try:
        path.write_text(draft.text, encoding="utf-8")
        try:
            rc = subprocess.run([*command, str(path)], check=False).returncode
        except OSError as exc:
            raise UsageError(f"cannot start the editor {command[0]!r}: {exc.strerror or exc}",
                             "set $EDITOR (or $VISUAL) to an editor you have, e.g. export EDITOR=nano") from None
        if rc != 0:
            raise RfError(f"the editor exited with code {rc}; nothing saved")
        try:
            edited = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the edited text: {exc}") from None
        # Editors add a final newline on save (vim's 'fixeol'); do not count it as a change.
        if not draft.text.endswith("\n") and edited.endswith("\n") and not edited.endswith("\n\n"):
            edited = edited[:-1]
        if edited == draft.text:
            from rf.cli.output import info

            info(f"{name}: no changes — draft v{draft.version} unchanged")
            return
        try:
            with backend() as b:
                result = b.set_prompt(name, edited, git_author(), message, env=env)
        except RfError as exc:
            keep = True
            raise type(exc)(exc.message, f"{exc.hint + '; ' if exc.hint else ''}your text is kept in {path} — "
                            f"fix it, then: rf prompts set {name} --file {path}") from None
        if result.created and result.version.version != draft.version + 1:
            from rf.cli.output import warn

            warn(f"the draft moved while you edited (you started from v{draft.version}); "
                 f"compare: rf prompts history {name}")
        report_saved(result)
    finally:
        if not keep:
            shutil.rmtree(tmpdir, ignore_errors=True)


# ------------------------------------------------------------ reads
@app.command("list")
def list_prompts(
    archived: Annotated[bool, typer.Option("--archived", help="Also prompts deleted in both environments.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Prompts with their [bold #f59e0b]draft[/] and [bold #10b981]published[/] versions."""
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        prompts = b.list_prompts(archived)
    if json_out:
        print_json(prompts)
        return
    if not prompts:
        out.print("no prompts yet — create one: rf prompts create NAME --file FILE")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("prompt")
    table.add_column("draft", style="#f59e0b")
    table.add_column("published", style="#10b981")
    table.add_column("")
    table.add_column("variables", overflow="fold")
    table.add_column("updated (UTC)", style="dim")
    for p in prompts:
        state = ("archived" if p.archived
                 else "deleted in staging: removal to publish" if p.draft_version is None
                 else "never published" if p.published_version is None
                 else "in sync" if p.published_version == p.draft_version else "unpublished draft")
        table.add_row(p.name, "deleted" if p.draft_version is None else _version(p.draft_version), _version(p.published_version), state,
                      _names(p.variables), when(p.updated_at))
    out.print(fit_table(table, flex=("variables", ""), optional=("updated (UTC)",)))


@app.command("show")
def show(
    name: NameArg,
    env: EnvOption = "staging",
    version: Annotated[int | None, typer.Option("--version", "-v", min=1, help="Show version N instead.")] = None,
    json_out: JsonOption = False,
) -> None:
    """The text an environment uses (staging: the draft; production: the published version).

    The text alone goes to stdout, so `rf prompts show NAME > file` works.
    """
    from rich.markup import escape

    from rf.cli.output import err, print_json, when

    check_env(env)
    with backend() as b:
        v = b.get_prompt(name, env, version)
    if json_out:
        print_json(v)
        return
    marks = [m for m, on in (("[staging]draft[/staging]", v.draft), ("[production]published[/production]",
                                                                      v.published)) if on]
    err.print(f"[bold]{name}[/bold] v{v.version}" + (f" ({', '.join(marks)})" if marks else "")
              + f" [dim]· {escape(v.author)} · {when(v.created_at)}"
              + (f" · {escape(v.message)}" if v.message else "") + "[/dim]")
    err.print(f"[dim]variables: {_names(v.variables)}[/dim]")
    sys.stdout.write(v.text if v.text.endswith("\n") else v.text + "\n")
    sys.stdout.flush()


@app.command("history")
def history(name: NameArg, json_out: JsonOption = False) -> None:
    """Versions, newest first, marking the draft and the published one."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        versions = b.prompt_history(name)
    if json_out:
        print_json(versions)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("version", justify="right")
    table.add_column("")
    table.add_column("message")
    table.add_column("author", style="dim")
    table.add_column("time (UTC)", style="dim")
    table.add_column("variables", overflow="fold")
    for v in versions:
        marks = []
        if v.draft:
            marks.append("[staging]draft[/staging]")
        if v.published:
            marks.append("[production]published[/production]")
        table.add_row(f"v{v.version}", " ".join(marks), escape(v.message), escape(v.author), when(v.created_at),
                      _names(v.variables))
    out.print(fit_table(table, flex=("message", "author", "variables"), optional=("variables",)))


def diff_view(d: PromptDiff, *, context: int | None = None) -> RenderableType:
    """The side-by-side diff of a prompt, published (left) → draft (right): reusable by other screens."""
    from rf.textdiff import side_by_side

    old_title = (f"production · published v{d.published_version}" if d.published_version is not None
                 else "production · never published")
    return side_by_side(d.published_text, d.draft_text, old_title=old_title,
                        new_title=f"staging · draft v{d.draft_version}", context=context)


def print_diff(d: PromptDiff, *, unified: bool = False) -> None:
    from rf.cli.output import out
    from rf.textdiff import unified as unified_diff

    if d.deleted:
        out.print(f"{d.name}: deleted in staging; production "
                  + (f"has {_version(d.published_version)}: publishing removes it there "
                     f"(rf releases publish prompt:{d.name})" if d.changed else "has nothing either"))
        return
    if not d.changed:
        out.print(f"{d.name}: production already has the draft (v{d.draft_version}) — nothing to publish")
        return
    if unified:
        sys.stdout.write(unified_diff(d.published_text, d.draft_text,
                                      old_title=f"{d.name} published {_version(d.published_version)}",
                                      new_title=f"{d.name} draft v{d.draft_version}"))
        sys.stdout.flush()
        return
    out.print(f"[bold]{d.name}[/bold]  [production]production[/production] {_version(d.published_version)} → "
              f"[staging]staging[/staging] draft v{d.draft_version}")
    if d.published_text == d.draft_text:
        out.print("[dim](the texts are identical; only the version differs)[/dim]")
    out.print(diff_view(d))


def render_release_diff(b: Backend, name: str) -> None:
    """The body of a prompt item in ``rf releases diff`` (which prints its own heading)."""
    from rf.cli.output import out

    d = b.diff_prompt(name)
    if d.changed and d.published_text == d.draft_text:
        out.print("[dim](the texts are identical; only the version differs)[/dim]")
    out.print(diff_view(d))


@app.command("diff")
def diff(
    name: NameArg,
    unified: Annotated[bool, typer.Option("--unified", "-u", help="A plain unified diff instead of two columns.")] = False,
    json_out: JsonOption = False,
) -> None:
    """What publishing would change: published (production) vs draft (staging), side by side."""
    from rf.cli.output import print_json

    with backend() as b:
        d = b.diff_prompt(name)
    if json_out:
        print_json(d)
        return
    print_diff(d, unified=unified)


# ------------------------------------------------------------ publish (changes production)
@app.command("publish")
def publish(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    message: Annotated[str, typer.Option("--message", "-m", help="Release message.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Point [bold #10b981]production[/] at the draft (shows the diff and asks first)."""
    from rf.cli.output import info, print_json, success
    from rf.config import git_author

    with backend() as b:
        d = b.diff_prompt(name)
        if not d.changed:
            result = b.publish_prompt(name, git_author(), message)
        else:
            if not json_out:
                print_diff(d)
            confirm(f"Publish {name} draft v{d.draft_version} to production "
                    f"(now {_version(d.published_version)})?", yes)
            # Publish exactly the draft shown: refused if it moved meanwhile.
            result = b.publish_prompt(name, git_author(), message, d.draft_version)
    if json_out:
        print_json(result)
        return
    if not result.changed:
        info(f"{name}: production already has the draft (v{result.after}) — nothing to publish")
        return
    success(f"published [bold]{name}[/bold] to [production]production[/production]: "
            f"{_version(result.before)} → v{result.after} (release {result.release_id})")


# ------------------------------------------------------------ delete (staging; production through a release)
@app.command("delete")
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Delete (archive) a prompt in [bold #f59e0b]staging[/] at once: no draft any more, every version stays
    readable (`rf prompts history`). Its removal from production is a release item."""
    from rf.cli.agents import confirm_delete, report_delete
    from rf.cli.output import print_json

    with backend() as b:
        d = b.diff_prompt(name)
        where = (f"; production keeps {_version(d.published_version)} until you publish its removal"
                 if d.published_version is not None else "")
        confirm_delete(f"Delete prompt {name} from staging{where}?", yes)
        result = b.delete_prompt(name)
    if json_out:
        print_json(result)
        return
    report_delete(result, f"prompt [bold]{name}[/bold] (archived: rf prompts history {name})")
