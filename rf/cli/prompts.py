"""``rf prompts``: Prompts: draft in staging, publish to production."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Prompts: draft in staging, publish to production.")
