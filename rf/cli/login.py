"""``rf login`` / ``rf logout``: use a team's rf server as yourself; ``rf audit``: who changed what.

``rf login URL`` checks a personal token against the server (``rf users add`` printed
it, or ``rf tokens create``), saves it in the OS keyring (rf's 0600 secrets file where
there is none) and makes URL this workspace's server: every command then talks to it
with that token. In CI, set ``RF_SERVER_URL`` and ``RF_TOKEN`` instead.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

from rf.cli.app import JsonOption, backend, workspace
from rf.errors import UsageError

_RELATIVE = re.compile(r"^(\d+)([mhd])$")


def login(
    url: Annotated[str, typer.Argument(help="The rf server, e.g. http://rf.internal:7410.")],
    token: Annotated[str | None, typer.Option(
        "--token", help="The token (default: read from stdin, or asked for without echo).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Sign in to an rf server with your personal token; this workspace's commands then use it."""
    from rf.cli.output import print_json, success
    from rf.client import HttpBackend, normalize_url, save_login

    ws = workspace()
    url = normalize_url(url)
    if token is None:
        if sys.stdin is not None and not sys.stdin.isatty():
            token = sys.stdin.readline().strip()
        else:
            token = typer.prompt("token", hide_input=True, err=True).strip()
    if not token:
        raise UsageError("no token given", "paste the token rf users add printed (or: rf tokens create)")
    me = HttpBackend(url, token, ws).whoami()  # (a wrong token: 401 here, and nothing is saved)
    save_login(ws, url, token)
    if json_out:
        print_json({"url": url, **{"name": me.name, "role": me.role}})
        return
    success(f"signed in to {url} as [bold]{me.name}[/bold] ({me.role}); this workspace's commands use it "
            "(rf logout to stop)")


def logout(json_out: JsonOption = False) -> None:
    """Stop using the server rf login chose for this workspace (its saved token is deleted)."""
    from rf.cli.output import print_json, success
    from rf.client import forget_login

    url = forget_login(workspace())
    if json_out:
        print_json({"url": url})
        return
    success(f"signed out of {url}" if url else "not signed in to a server (nothing to do)")


def audit(
    since: Annotated[str | None, typer.Option(
        "--since", help="From this time on: ISO 8601 (2026-01-31T09:00Z) or a span ago (30m, 12h, 7d).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many entries.")] = 200,
    json_out: JsonOption = False,
) -> None:
    """Who changed what, newest first: deploys, releases, approvals, credentials, users, tokens."""
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        entries = b.list_audit(_since(since), limit)
    if json_out:
        print_json(entries)
        return
    if not entries:
        out.print("no recorded changes" + (" since then" if since else ""))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("when (UTC)", "actor", "role", "action", "target", "detail"):
        table.add_column(column)
    for e in entries:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))
        table.add_row(when(e.at), e.actor, e.role, e.action, e.target, detail)
    out.print(fit_table(table, flex=("detail", "target"), optional=("role", "detail")))


def _since(text: str | None) -> str | None:
    if not text:
        return None
    m = _RELATIVE.match(text.strip())
    if m is None:
        return text
    import datetime as dt

    amount, unit = int(m.group(1)), m.group(2)
    delta = {"m": dt.timedelta(minutes=amount), "h": dt.timedelta(hours=amount), "d": dt.timedelta(days=amount)}[unit]
    return (dt.datetime.now(dt.UTC) - delta).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Access")(login)
    app.command(rich_help_panel="Access")(logout)
    app.command(rich_help_panel="Access")(audit)
