"""``rf connectors``: HTTP APIs and MCP servers for agents, one instance per environment.

``rf connectors create SLUG --mcp URL`` makes an MCP server's tools the resources (``rf
connectors refresh SLUG`` lists them again); the URL is a per-environment setting like a base URL.

Resources are shared: edited in staging, ``rf connectors publish SLUG``
copies them to production after showing the diff. Settings (base URL, auth,
credential, headers, timeout, retries, mock mode) belong to each
environment: ``rf connectors edit SLUG ...`` changes staging's, ``rf
connectors edit SLUG --for production ...`` prepares production's, which
reach production as the release item ``connector:SLUG@production``.
``--env production`` on an edit is refused by the service with the way to do
it instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rf.cli.app import EnvOption, JsonOption, backend, confirm
from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.client import Backend
    from rf.models import Connector, ConnectorDiff, ConnectorSettings, FieldChange

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Connectors: one instance per environment (edit in staging, publish to production).")
resources_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                            help="Resources (operations) of a connector's staging instance.")
app.add_typer(resources_app, name="resources")

SlugArg = Annotated[str, typer.Argument(help="Connector slug, e.g. crm.")]
ResourceArg = Annotated[str, typer.Argument(help="Resource slug, e.g. get-customer.")]
AuthOption = Annotated[str | None, typer.Option("--auth", help="none, api-key, bearer or basic (user:password credential).")]
CredentialOption = Annotated[str | None, typer.Option("--credential", help="Credential NAME used by --auth (see rf credentials).")]
HeaderOption = Annotated[list[str] | None, typer.Option("--header", "-H", help="Default header K=V (repeatable).")]
TimeoutOption = Annotated[float | None, typer.Option("--timeout", help="Request timeout in seconds.")]
RetriesOption = Annotated[int | None, typer.Option("--retries", help="Extra attempts for idempotent methods on connect errors/5xx.")]
KeyHeaderOption = Annotated[str | None, typer.Option("--api-key-header", help="api-key auth: send the key in this header.")]
KeyQueryOption = Annotated[str | None, typer.Option("--api-key-query", help="api-key auth: send the key as this query parameter.")]
MockOption = Annotated[bool | None, typer.Option("--mock/--no-mock", help="Answer every call with the resources' mock responses.")]
MethodOption = Annotated[str | None, typer.Option("--method", "-X", help="HTTP method.")]
PathOption = Annotated[str | None, typer.Option("--path", help="Path under the base URL, with {params}, e.g. /customers/{id}.")]
SchemaFileOption = Annotated[Path | None, typer.Option("--schema-file", help="JSON Schema (object) of the parameters ('-' for stdin).")]
MockFileOption = Annotated[Path | None, typer.Option("--mock-file", help="JSON mock response ('-' for stdin).")]
DescriptionOption = Annotated[str | None, typer.Option("--description", "-d", help="What the resource does (shown to LLMs as the tool description).")]
NameOption = Annotated[str | None, typer.Option("--name", help="Human name (default: the slug).")]
McpCommandOption = Annotated[str | None, typer.Option(
    "--mcp-command", help="A command that serves MCP over stdio, started in the workspace directory for each "
                          "call (stored and shown as is: no secrets in it).")]
#: (rf.services.connectors_mcp.STDIO_PREFIX, without importing the services here)
STDIO_PREFIX = "stdio:"


def parse_headers(pairs: list[str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--header {pair!r} is not of the form NAME=VALUE", "e.g. --header Accept-Language=en")
        headers[key.strip()] = value.strip()
    return headers


def read_json_file(path: Path | None, what: str) -> Any:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc}") from None


def _short(h: str | None) -> str:
    return h[:8] if h else "—"


def _value(v: Any, limit: int = 100) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------ instances
@app.command("create")
def create(
    slug: SlugArg,
    base_url: Annotated[str | None, typer.Option("--base-url", help="http(s) URL the resource paths are appended to.")] = None,
    mcp: Annotated[str | None, typer.Option(
        "--mcp", help="An MCP server's streamable-HTTP endpoint (e.g. http://127.0.0.1:8000/mcp): its tools "
                      "become the resources.")] = None,
    mcp_command: McpCommandOption = None,
    auth: AuthOption = None,
    credential: CredentialOption = None,
    header: HeaderOption = None,
    timeout: TimeoutOption = None,
    retries: RetriesOption = None,
    api_key_header: KeyHeaderOption = None,
    api_key_query: KeyQueryOption = None,
    mock: MockOption = None,
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Create the [bold #f59e0b]staging[/] instance of a connector: an HTTP API (--base-url) or an
    MCP server (--mcp URL; its tools become the resources)."""
    from rich.markup import escape

    from rf.cli.output import info, print_json, success

    given = [x for x in (base_url, mcp, mcp_command) if x is not None]
    if len(given) != 1:
        raise UsageError("give one of --base-url URL (an HTTP API), --mcp URL (an MCP server) or "
                         "--mcp-command COMMAND (an MCP server over stdio)",
                         f"e.g. rf connectors create {slug} --mcp http://127.0.0.1:8000/mcp")
    if mcp_command is not None:
        mcp = STDIO_PREFIX + mcp_command
    with backend() as b:
        c = b.create_connector(slug, mcp or base_url or "", auth=auth or "none", credential=credential,
                               headers=parse_headers(header), timeout_s=30 if timeout is None else timeout,
                               retries=2 if retries is None else retries, env=env, api_key_header=api_key_header,
                               api_key_query=api_key_query, mock=bool(mock), kind="http" if mcp is None else "mcp")
    if json_out:
        print_json(c)
        return
    success(f"created connector [bold]{slug}[/bold] in [staging]staging[/staging] → {escape(c.base_url)}")
    if c.kind == "mcp":
        tools = ", ".join(r.slug for r in c.resources) or "none"
        info(f"  {len(c.resources)} tool(s) as resources: {escape(tools)}")
        info(f"[dim]  call one: ctx.connectors.call({slug!r}, TOOL, **args); when the server's tools change: "
             f"rf connectors refresh {slug}; production's server: rf connectors edit {slug} --for production "
             "--base-url URL[/dim]")
        return
    info(f"[dim]  add resources: rf connectors resources add {slug} RESOURCE --method GET --path /...  "
         f"(or rf connectors import-openapi {slug} openapi.yaml)[/dim]")


@app.command("edit")
def edit(
    slug: SlugArg,
    base_url: Annotated[str | None, typer.Option("--base-url", help="New base URL (an MCP connector: its endpoint).")] = None,
    mcp_command: McpCommandOption = None,
    auth: AuthOption = None,
    credential: CredentialOption = None,
    header: HeaderOption = None,
    remove_header: Annotated[list[str] | None, typer.Option("--remove-header", help="Drop a default header (repeatable).")] = None,
    timeout: TimeoutOption = None,
    retries: RetriesOption = None,
    api_key_header: KeyHeaderOption = None,
    api_key_query: KeyQueryOption = None,
    mock: MockOption = None,
    for_env: Annotated[str, typer.Option(
        "--for", help="Whose settings: staging (default, changed at once) or production (prepared here, "
                      "published as the release item connector:SLUG@production).")] = "staging",
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Change a connector's settings: staging's, or (--for production) prepare production's.
    Only the options given change (--header adds or replaces one)."""
    from rf.cli.output import info, print_json, success
    from rf.models import check_env

    check_env(for_env)
    if mcp_command is not None:
        if base_url is not None:
            raise UsageError("give either --base-url or --mcp-command")
        base_url = STDIO_PREFIX + mcp_command
    with backend() as b:
        headers = None
        if header or remove_header:
            current: dict[str, str] = {}
            if env == "staging" and for_env == "staging":
                current = b.get_connector(slug, "staging").headers
            elif env == "staging":
                envs = b.connector_settings(slug)
                base = envs.prepared or envs.production or envs.staging or {}
                current = dict(base.get("headers") or {})
            headers = {**current, **parse_headers(header)}
            for name in remove_header or []:
                if name not in headers:
                    raise UsageError(f"connector {slug!r} has no default header {name!r}")
                del headers[name]
        c = b.edit_connector(slug, env=env, base_url=base_url, auth=auth, credential=credential, headers=headers,
                             timeout_s=timeout, retries=retries, api_key_header=api_key_header,
                             api_key_query=api_key_query, mock=mock, target=for_env)
    if json_out:
        print_json(c)
        return
    if for_env == "staging":
        success(f"updated connector [bold]{slug}[/bold] in [staging]staging[/staging] (production keeps its own settings)")
        info(f"[dim]  production's settings: rf connectors edit {slug} --for production ...[/dim]")
        return
    view = c.settings
    success(f"prepared the [production]production[/production] settings of connector [bold]{slug}[/bold] "
            "(production is unchanged until you publish them)")
    if view is not None and view.production is None:
        info(f"[dim]  {slug} is not in production yet: its first publish uses these settings: "
             f"rf connectors publish {slug}[/dim]")
    elif view is not None and view.pending:
        render_settings_changes(view)
        info(f"[dim]  review and publish: rf releases diff connector:{slug}@production && "
             f"rf releases publish connector:{slug}@production[/dim]")
    else:
        info("[dim]  production already has these settings: nothing to publish[/dim]")


def _production_side(b: Backend, slug: str) -> tuple[bool, list[str]]:
    """Whether connector:SLUG waits as a release item now, and its plan's warnings (e.g. the
    production agents that still use what it removes)."""
    from rf.errors import Conflict, NotFound

    try:
        plan = b.plan_release([f"connector:{slug}"])
    except (NotFound, Conflict):
        return False, []
    return True, plan.warnings


@app.command("delete")
def delete(
    slug: SlugArg,
    env: EnvOption = "staging",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Delete the staging instance at once; its removal from production is a release item."""
    from rich.markup import escape

    from rf.cli.agents import confirm_delete
    from rf.cli.output import info, print_json, success, warn

    with backend() as b:
        if env == "staging":
            b.get_connector(slug, "staging")  # unknown: say so before asking
            in_production = slug in {c.slug for c in b.list_connectors("production")}
            confirm_delete(f"Delete connector {slug} from staging"
                           + ("; production keeps its instance until you publish its removal" if in_production
                              else "") + "?", yes)
        c = b.delete_connector(slug, env=env)
        pending, warnings = _production_side(b, slug)
    if json_out:
        print_json(c)
        return
    success(f"deleted connector [bold]{slug}[/bold] from [staging]staging[/staging]")
    if pending:
        info("  [production]production[/production] still has it: its removal is a release item")
        for w in warnings:
            warn(escape(w) + " (--strict refuses to publish it)")
        info(f"[dim]  review and publish it: rf releases publish connector:{slug}[/dim]")
    else:
        info("  production never had it: nothing to publish")


@app.command("list")
def list_connectors(env: EnvOption = "staging", json_out: JsonOption = False) -> None:
    """Connector instances of one environment."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import env_label, fit_table, out, print_json

    with backend() as b:
        items = b.list_connectors(env)
    if json_out:
        print_json(items)
        return
    if not items:
        out.print(f"no connectors in {env_label(env)}"
                  + (" — create one: rf connectors create SLUG --base-url URL" if env == "staging"
                     else " — publish one: rf connectors publish SLUG"))
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title=None)
    table.add_column("connector")
    table.add_column("base URL")
    table.add_column("auth")
    table.add_column("resources", justify="right")
    table.add_column("")
    for c in items:
        auth = c.auth + (f" ({c.credential})" if c.credential else "")
        marks = " ".join(m for m in ("MCP" if c.kind == "mcp" else "", "mock" if c.mock else "") if m)
        table.add_row(c.slug, escape(c.base_url), escape(auth), str(len(c.resources)), marks)
    out.print(fit_table(table, flex=("base URL", "auth")))


def render_connector(c: Connector) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import env_label, fit_table, out, when

    out.print(f"[bold]{c.slug}[/bold]  {env_label(c.env)}  [dim]{_short(c.content_hash)} · updated {when(c.updated_at)}[/dim]")
    auth = c.auth
    if c.credential:
        auth += f" with credential {c.credential}"
    if c.auth == "api-key":
        auth += f" (header {c.api_key_header})" if c.api_key_header else f" (query parameter {c.api_key_query})"
    rows = [("base URL", c.base_url), ("auth", auth), ("timeout", f"{c.timeout_s:g} s"),
            ("retries", f"{c.retries} (idempotent methods)"), ("mock mode", "on" if c.mock else "off")]
    if c.kind == "mcp":
        rows[0] = ("MCP server", c.base_url)
        rows.pop(3)  # a tool call is never retried (it may not be idempotent)
    for name, value in sorted(c.headers.items()):
        rows.append(("header", f"{name}: {value}"))
    for label, value in rows:
        out.print(f"  {label:<10} {escape(value)}")
    if c.settings is not None:
        render_settings(c.settings)
    if not c.resources:
        out.print(f"  [dim]no tools — after adding some to the server: rf connectors refresh {c.slug}[/dim]"
                  if c.kind == "mcp" else
                  f"  [dim]no resources — rf connectors resources add {c.slug} RESOURCE --method GET --path /...[/dim]")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("resource")
    table.add_column("method")
    table.add_column("path")
    table.add_column("parameters")
    table.add_column("mock")
    table.add_column("description", overflow="ellipsis", max_width=40)
    for r in c.resources:
        props = (r.params_schema or {}).get("properties", {})
        table.add_row(r.slug, r.method, escape(r.path), escape(", ".join(props) or "—"),
                      "yes" if r.mock_response is not None else "—", escape(r.description))
    out.print()
    out.print(fit_table(table, flex=("path", "parameters"), optional=("mock",)))


SETTING_ROWS = (("base URL", "base_url"), ("auth", "auth"), ("headers", "headers"), ("timeout", "timeout_s"),
                ("retries", "retries"), ("mock mode", "mock"))


def _setting(settings: dict[str, Any] | None, key: str) -> str:
    if settings is None:
        return "—"
    value = settings.get(key)
    if key == "auth":
        text = str(value)
        if settings.get("credential"):
            text += f" ({settings['credential']})"
        if value == "api-key":
            text += (f", header {settings.get('api_key_header')}" if settings.get("api_key_header")
                     else f", query {settings.get('api_key_query')}")
        return text
    if key == "headers":
        return ", ".join(f"{k}: {v}" for k, v in sorted((value or {}).items())) or "—"
    if key == "timeout_s":
        return f"{value:g} s" if isinstance(value, int | float) else str(value)
    if key == "mock":
        return "on" if value else "off"
    return str(value)


def render_settings(view: ConnectorSettings) -> None:
    """Both environments' settings side by side (and production's prepared ones when they differ)."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out

    show_prepared = view.prepared is not None and (view.pending or view.production is None)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("setting")
    table.add_column("staging", style="#f59e0b")
    table.add_column("production (live)", style="#10b981")
    if show_prepared:
        table.add_column("production (prepared, not published)", style="yellow")
    for label, key in SETTING_ROWS:
        cells = [_setting(view.staging, key), _setting(view.production, key)]
        if show_prepared:
            cells.append(_setting(view.prepared, key))
        table.add_row(label, *(escape(x) for x in cells))
    out.print()
    out.print("[bold]settings per environment[/bold] [dim](resources are shared; a publish of them never "
              "carries settings)[/dim]")
    out.print(fit_table(table, flex=("staging", "production (live)")))
    if view.pending:
        slug = view.slug
        out.print(f"[yellow]~ prepared production settings are pending: rf releases publish "
                  f"connector:{slug}@production[/yellow]")
    elif view.production is None:
        out.print(f"[dim]  {escape(view.summary)}[/dim]")


def render_settings_changes(view: ConnectorSettings) -> None:
    from rf.cli.output import out

    for ch in view.changes:
        out.print(_change_line("~", "yellow", f"production {CONFIG_LABELS.get(ch.name, ch.name)}", ch))


@app.command("show")
def show(slug: SlugArg, env: EnvOption = "staging", json_out: JsonOption = False) -> None:
    """One instance: config (credential names, never values) and resources."""
    from rf.cli.output import print_json

    with backend() as b:
        c = b.get_connector(slug, env)
    if json_out:
        print_json(c)
        return
    render_connector(c)


def _change_line(sign: str, style: str, label: str, ch: FieldChange | None = None) -> str:
    from rich.markup import escape

    text = f"[{style}]{sign} {escape(label)}"
    if ch is not None:
        text += f": {escape(_value(ch.before))} → {escape(_value(ch.after))}"
    return text + f"[/{style}]"


CONFIG_LABELS = {"kind": "kind", "base_url": "base URL", "auth": "auth", "credential": "credential",
                 "api_key_header": "API key header", "api_key_query": "API key query parameter",
                 "headers": "headers", "timeout_s": "timeout", "retries": "retries", "mock": "mock mode"}


def render_diff(d: ConnectorDiff, *, with_settings: bool = True) -> None:
    from rf.cli.output import out

    if d.slug.endswith("@production"):  # the release item of the prepared production settings
        out.print(f"[bold]{d.slug}[/bold]  [production]production[/production] settings {_short(d.production)} → "
                  f"prepared {_short(d.staging)}: {d.summary}")
        for ch in d.config:
            out.print(_change_line("~", "yellow", CONFIG_LABELS.get(ch.name, ch.name), ch))
        return
    out.print(f"[bold]{d.slug}[/bold]  [production]production[/production] {_short(d.production)} → "
              f"[staging]staging[/staging] {_short(d.staging)}: {d.summary}")
    for ch in d.config:
        if ch.before is None:  # a new connector: the settings production starts with
            out.print(_change_line("+", "green", f"production {CONFIG_LABELS.get(ch.name, ch.name)}: "
                                   f"{_value(ch.after)}"))
        else:
            out.print(_change_line("~", "yellow", CONFIG_LABELS.get(ch.name, ch.name), ch))
    for r in d.resources:
        if r.status == "added":
            out.print(_change_line("+", "green", f"resource {r.slug}"))
        elif r.status == "removed":
            out.print(_change_line("-", "red", f"resource {r.slug}"))
        else:
            out.print(_change_line("~", "yellow", f"resource {r.slug}"))
            for ch in r.changes:
                name = {"params_schema": "schema", "mock_response": "mock"}.get(ch.name, ch.name)
                if ch.name == "params_schema":
                    out.print("    [yellow]~ schema:[/yellow]")
                    for line in schema_diff(ch.before, ch.after):
                        out.print("      " + line)
                else:
                    out.print("    " + _change_line("~", "yellow", name, ch))
    if with_settings and d.settings is not None:
        render_settings(d.settings)


def schema_diff(before: Any, after: Any) -> list[str]:
    """A parameters schema change as the changed lines of its indented JSON (Rich markup)."""
    import difflib

    from rich.markup import escape

    def lines(schema: Any) -> list[str]:
        return json.dumps(schema, indent=2, sort_keys=True).splitlines() if schema is not None else []

    out = []
    for line in difflib.unified_diff(lines(before), lines(after), lineterm="", n=1):
        if line.startswith(("---", "+++")):
            continue
        style = {"+": "green", "-": "red", "@": "dim"}.get(line[:1])
        out.append(f"[{style}]{escape(line)}[/{style}]" if style else escape(line))
    return out


def render_release_diff(b: Backend, slug: str) -> None:
    """The body of a connector item in ``rf releases diff``: resources added / removed / modified
    (with their changed fields), a new connector's production settings, or (``SLUG@production``)
    the prepared production settings before → after."""
    render_diff(b.diff_connector(slug), with_settings=False)


@app.command("diff")
def diff(slug: SlugArg, json_out: JsonOption = False) -> None:
    """What publishing would change in production: + added, - removed, ~ modified."""
    from rf.cli.output import print_json

    with backend() as b:
        d = b.diff_connector(slug)
    if json_out:
        print_json(d)
        return
    render_diff(d)


@app.command("publish")
def publish(
    slug: SlugArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    message: Annotated[str, typer.Option("--message", "-m", help="Release message.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Copy the staging instance to [bold #10b981]production[/] (shows the diff first)."""
    from rf.cli.output import info, print_json, success
    from rf.config import git_author

    with backend() as b:
        d = b.diff_connector(slug)
        if d.changed:
            if not json_out:
                render_diff(d)
            confirm(f"Publish connector {slug} to production ({d.summary})?", yes)
        result = b.publish_connector(slug, git_author(), message)
    if json_out:
        print_json(result)
        return
    if not result.changed:
        info(f"{slug}: production already has staging's resources — nothing to publish")
        if d.settings is not None and d.settings.pending:
            info(f"[dim]  its prepared production settings are pending: rf releases publish "
                 f"connector:{slug}@production[/dim]")
        return
    success(f"published connector [bold]{slug}[/bold] to [production]production[/production]: {result.summary} "
            f"(release {result.release_id})")


@app.command("import-openapi")
def import_openapi(
    slug: SlugArg,
    file: Annotated[Path, typer.Argument(help="OpenAPI 3 document, JSON or YAML ('-' for stdin).")],
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Add resources from an OpenAPI 3 document (creates the connector from servers[0].url if needed)."""
    from rf.cli.output import info, print_json, success

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{file} is not UTF-8 text") from None
    with backend() as b:
        result = b.import_openapi(slug, text, env=env)
    if json_out:
        print_json(result)
        return
    if result.created:
        success(f"created connector [bold]{slug}[/bold] in [staging]staging[/staging] → {result.base_url}")
    success(f"{len(result.added)} added, {len(result.updated)} updated, {len(result.unchanged)} unchanged")
    for name in result.added:
        info(f"  [green]+ {name}[/green]")
    for name in result.updated:
        info(f"  [yellow]~ {name}[/yellow]")


@app.command("refresh")
def refresh(slug: SlugArg, env: EnvOption = "staging", json_out: JsonOption = False) -> None:
    """MCP connector: make the staging resources the tools its staging server lists now
    (production changes when you publish)."""
    from rich.markup import escape

    from rf.cli.output import info, print_json, success

    with backend() as b:
        result = b.refresh_connector(slug, env=env)
        pending, _ = _production_side(b, slug) if (result.added or result.updated or result.removed) else (False, [])
    if json_out:
        print_json(result)
        return
    success(f"refreshed connector [bold]{slug}[/bold] ([staging]staging[/staging]): {len(result.added)} added, "
            f"{len(result.updated)} updated, {len(result.removed)} removed, {len(result.unchanged)} unchanged")
    for sign, style, names in (("+", "green", result.added), ("~", "yellow", result.updated),
                               ("-", "red", result.removed)):
        for name in names:
            info(f"  [{style}]{sign} {escape(name)}[/{style}]")
    if pending:
        info(f"[dim]  review and publish: rf connectors diff {slug} && rf connectors publish {slug}[/dim]")


# ------------------------------------------------------------ resources
@resources_app.command("add")
def resources_add(
    slug: SlugArg,
    resource: ResourceArg,
    method: Annotated[str, typer.Option("--method", "-X", help="HTTP method.")] = "GET",
    path: Annotated[str, typer.Option("--path", help="Path under the base URL, with {params}.")] = "/",
    schema_file: SchemaFileOption = None,
    mock_file: MockFileOption = None,
    description: DescriptionOption = None,
    name: NameOption = None,
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Add a resource to the staging instance."""
    from rf.cli.output import print_json, success

    schema = read_json_file(schema_file, "schema file")
    mock_response = read_json_file(mock_file, "mock file")
    with backend() as b:
        c = b.add_resource(slug, resource, method, path, params_schema=schema, mock_response=mock_response,
                           description=description or "", env=env, name=name or "")
    if json_out:
        print_json(c)
        return
    r = next(r for r in c.resources if r.slug == resource)
    success(f"added resource [bold]{resource}[/bold] to {slug} ([staging]staging[/staging]): {r.method} {r.path}")


@resources_app.command("edit")
def resources_edit(
    slug: SlugArg,
    resource: ResourceArg,
    method: MethodOption = None,
    path: PathOption = None,
    schema_file: SchemaFileOption = None,
    mock_file: MockFileOption = None,
    description: DescriptionOption = None,
    name: NameOption = None,
    no_schema: Annotated[bool, typer.Option("--no-schema", help="Remove the parameters schema.")] = False,
    no_mock: Annotated[bool, typer.Option("--no-mock", help="Remove the mock response.")] = False,
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Change a resource of the staging instance (only the options given)."""
    from rf.cli.output import print_json, success

    if no_schema and schema_file is not None:
        raise UsageError("give either --schema-file or --no-schema")
    if no_mock and mock_file is not None:
        raise UsageError("give either --mock-file or --no-mock")
    schema = read_json_file(schema_file, "schema file")
    mock_response = read_json_file(mock_file, "mock file")
    if mock_file is not None and mock_response is None:
        raise UsageError("a mock response of null means 'no mock'", "use --no-mock to remove the mock response")
    with backend() as b:
        c = b.edit_resource(slug, resource, env=env, method=method, path=path, params_schema=schema,
                            mock_response=mock_response, description=description, name=name,
                            clear_schema=no_schema, clear_mock=no_mock)
    if json_out:
        print_json(c)
        return
    success(f"updated resource [bold]{resource}[/bold] of {slug} ([staging]staging[/staging])")


@resources_app.command("remove")
def resources_remove(
    slug: SlugArg,
    resource: ResourceArg,
    env: EnvOption = "staging",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Remove a resource from the staging instance at once; production's is removed by publishing
    connector:SLUG (a release item)."""
    from rich.markup import escape

    from rf.cli.agents import confirm_delete
    from rf.cli.output import info, print_json, success, warn

    with backend() as b:
        if env == "staging":
            b.get_connector(slug, "staging")
            confirm_delete(f"Remove resource {resource} from connector {slug} in staging?", yes)
        c = b.remove_resource(slug, resource, env=env)
        pending, warnings = _production_side(b, slug)
    if json_out:
        print_json(c)
        return
    success(f"removed resource [bold]{resource}[/bold] from {slug} ([staging]staging[/staging])")
    if pending:
        for w in warnings:
            warn(escape(w) + " (--strict refuses to publish it)")
        info(f"[dim]  production changes when you publish: rf releases publish connector:{slug}[/dim]")


@resources_app.command("list")
def resources_list(slug: SlugArg, env: EnvOption = "staging", json_out: JsonOption = False) -> None:
    """Resources of one instance."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json

    with backend() as b:
        c = b.get_connector(slug, env)
    if json_out:
        print_json(c.resources)
        return
    if not c.resources:
        out.print(f"{slug} has no resources in {env}")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("resource", "method", "path", "parameters", "mock"):
        table.add_column(col)
    for r in c.resources:
        props = (r.params_schema or {}).get("properties", {})
        table.add_row(r.slug, r.method, escape(r.path), escape(", ".join(props) or "—"),
                      "yes" if r.mock_response is not None else "—")
    out.print(fit_table(table))
