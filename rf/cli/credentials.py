"""``rf credentials``: Credentials (shared by both environments)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Credentials (shared by both environments).")
