"""The ``rf`` command line (Typer + Rich): the only package that imports typer.

:func:`main` answers ``rf --version`` before importing anything else, so the
command people run most in scripts costs about as much as starting Python.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Console-script entry point."""
    argv = sys.argv[1:]
    if argv in (["--version"], ["-V"]):
        from rf._version import __version__

        sys.stdout.write(f"rf {__version__}\n")
        return
    from rf.cli.app import run

    run()
