"""``rf gc``: delete history beyond the retention, and what nothing uses any more."""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import JsonOption, backend

#: How each kind reads in the table.
LABELS = {
    "executions": "executions",
    "spans": "spans",
    "session_messages": "session messages",
    "release_plans": "unpublished release plans",
    "eval_runs": "stored eval runs",
    "canary_scores": "live scores of ended canaries",
    "commits": "unreachable commits",
    "blobs": "unused blobs",
    "working_copies": "rf test working copies",
    "commit_dirs": "commit directories (cache)",
    "upload_spools": "abandoned uploads",
}


def size(n: int) -> str:
    """Bytes for people: 0 B, 12.3 KB, 4.5 MB, 1.2 GB."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only report what would be deleted.")] = False,
    json_out: JsonOption = False,
) -> None:
    r"""Delete history beyond the retention, and what nothing uses any more.

    Executions older than their environment's days, or beyond its newest max_executions (rf.toml \[retention.ENV]), go with their spans and session messages; so do unpublished release plans older than plan_days, commits nothing reaches, unused blobs and stale rf test working copies.

    Never deleted: executions in progress, memory, release history, and any commit an environment or a release uses. With a running server, the server does it (and the history part by itself every interval_minutes).
    """
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import out, print_json

    with backend() as b:
        result = b.gc(dry_run=dry_run)
    if json_out:
        print_json(result)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("would delete" if dry_run else "deleted")
    table.add_column("count", justify="right")
    table.add_column("size", justify="right")
    for freed in result.freed:
        style = "" if freed.count else "dim"
        table.add_row(LABELS.get(freed.kind, freed.kind), str(freed.count), size(freed.bytes), style=style)
    out.print(table)
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {size(result.bytes)} in {result.duration_ms / 1000:.2f} s; the store is "
              f"{size(result.store_bytes)} (deleted space is reused; the file does not shrink)")
    if dry_run:
        out.print("[dim]nothing was deleted (dry run): run rf gc to delete it[/dim]")
    kept = ", ".join(f"{env} {_policy(result.retention.get(env, {}))}" for env in ("staging", "production"))
    out.print(f"[dim]retention: {kept}; set it in rf.toml {escape('[retention.staging]')} / "
              f"{escape('[retention.production]')}[/dim]")


def _policy(policy: dict[str, int]) -> str:
    days, most = policy.get("days", 0), policy.get("max_executions", 0)
    parts = [f"{days} days" if days else "no age limit", f"newest {most:,}" if most else "no count limit"]
    return " / ".join(parts)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Workspace")(gc)
