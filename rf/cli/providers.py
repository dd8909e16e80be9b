"""``rf providers``: LLM providers (shared by both environments).

Providers have no environment: a change here reaches production at once, so
each command says so, and ``remove`` asks for confirmation (``--yes`` to
skip) after listing the agents that use the provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import JsonOption, backend, confirm

if TYPE_CHECKING:
    from rf.models import ProviderChange

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="LLM providers (shared by both environments).")

NameArg = Annotated[str, typer.Argument(help="Provider name (lowercase letters, digits, '-' and '_').")]


def _report(change: ProviderChange, verb: str) -> None:
    from rich.markup import escape

    from rf.cli.output import success, warn

    name = f"[bold]{escape(change.provider.name)}[/bold] ({change.provider.kind})"
    success(f"{name} is now the default provider" if change.action == "default" else f"{verb} provider {name}")
    for w in change.warnings:
        warn(escape(w))


@app.command("list")
def list_providers(json_out: JsonOption = False) -> None:
    """Providers, the built-in [bold]mock[/bold] included; the default is marked."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json

    with backend() as b:
        providers = b.list_providers()
    if json_out:
        print_json(providers)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("provider", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("model")
    table.add_column("base URL", overflow="fold")
    table.add_column("credential")
    table.add_column("", no_wrap=True)
    table.add_column("used by", style="dim")
    for p in providers:
        marks = []
        if p.default:
            marks.append("[ok]default[/ok]")
        if p.builtin:
            marks.append("[dim]built-in[/dim]")  # always there, offline
        users = sorted({f"{u.env}/{u.agent}" for u in p.used_by})
        table.add_row(escape(p.name), p.kind, escape(p.model or "—"), escape(p.base_url or "(offline)"),
                      escape(p.credential or "—"), ", ".join(marks), escape(", ".join(users)))
    out.print(fit_table(table, flex=("used by", "base URL", "model"), optional=("kind",)))


@app.command("add")
def add(
    name: NameArg,
    kind: Annotated[str, typer.Option("--kind", "-k", help="mock, openai (Chat Completions) or anthropic (Messages).")],
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="API root: openai includes /v1 (http://localhost:11434/v1); anthropic does not.")] = None,
    credential: Annotated[str | None, typer.Option(
        "--credential", "-c", help="Name of the credential holding the API key (rf credentials set NAME).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Default model of this provider.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Add a provider. Shared: production agents can use it right away."""
    from rf.cli.output import info, print_json

    with backend() as b:
        change = b.add_provider(name, kind, base_url, credential, model)
    if json_out:
        print_json(change)
        return
    _report(change, "added")
    info(f"[dim]  try it: rf providers test {name}[/dim]")


@app.command("remove")
def remove(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Remove a provider (affects production immediately; asks first)."""
    from rich.markup import escape

    from rf.cli.output import info, print_json

    with backend() as b:
        provider = b.get_provider(name)
        if provider.builtin or provider.default:
            b.remove_provider(name)  # the service says why not, and what to do instead
        if not yes:
            info(f"provider [bold]{escape(name)}[/bold] is shared by staging and production")
            for u in provider.used_by:
                info(f"  used by {u.env} agent [bold]{escape(u.agent)}[/bold] (last {u.last_used_at})")
            if not provider.used_by:
                info("  no agent has called it yet")
        confirm(f"Remove provider {name}? Production agents lose it immediately.", yes)
        change = b.remove_provider(name, force=True)
    if json_out:
        print_json(change)
        return
    _report(change, "removed")


@app.command("default")
def set_default(name: NameArg, json_out: JsonOption = False) -> None:
    """Make NAME the provider of calls that name none (both environments; edits rf.toml)."""
    from rich.markup import escape

    from rf.cli.output import info, print_json

    with backend() as b:
        change = b.set_default_provider(name)
    if json_out:
        print_json(change)
        return
    if not change.warnings:
        info(f"{escape(name)} is already the default provider")
        return
    _report(change, "default is now")


@app.command("test")
def test(
    name: NameArg,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to try (default: the provider's).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Send one tiny prompt and print the reply, model and latency."""
    from rich.markup import escape

    from rf.cli.output import duration, out, print_json, success

    with backend() as b:
        result = b.test_provider(name, model)
    if json_out:
        print_json(result)
        return
    success(f"{escape(result.provider)} ({result.kind}) answered in {duration(result.latency_ms)} · model "
            f"{escape(result.model)}")
    out.print(escape(result.text))
