"""``rf connectors``: Connectors: one instance per environment."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Connectors: one instance per environment.")
