"""``rf traces``: Traces: span trees per execution."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Traces: span trees per execution.")
