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
    if not argv or "--help" in argv or "-h" in argv:
        _light_help()
        global HELP_SUMMARY
        HELP_SUMMARY = _top_level_help(argv)
    from rf.cli.app import run

    run()


#: Set by :func:`main` when the command line asks for the top-level help only: rf.cli.app then
#: lists the command groups without importing them. (Never at a plain import of rf.cli.app: a
#: process that runs commands in-process must get every group.)
HELP_SUMMARY = False


def _top_level_help(argv: list[str]) -> bool:
    """Does the command line ask for the top-level help (``rf``, ``rf --help``, ``rf -w DIR -h``)?"""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workspace", "-w"):
            skip = True
            continue
        if arg in ("--help", "-h"):
            return True
        if not arg.startswith("-") or arg in ("--version", "-V"):
            return False
    return True


def _light_help() -> None:
    """Help is all this process prints: typer's help renderer imports rich.markdown (and
    markdown-it) and rich.traceback at the top of its module, though rf's help (Rich markup,
    pretty exceptions off) uses neither. Stand-ins for the two save ~45% of ``rf --help``;
    the output is the same (tests/test_cli.py compares it with and without them).
    ``RF_FULL_HELP=1`` takes typer's whole path (all group modules, the real modules)."""
    import os
    import types

    if os.environ.get("RF_FULL_HELP"):
        return
    for name, attr in (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback")):
        if name in sys.modules:
            continue

        def unused(*args: object, **kwargs: object) -> None:
            raise RuntimeError("rich.markdown and rich.traceback are not loaded while rf prints help")

        module = types.ModuleType(name)
        setattr(module, attr, type(attr, (), {"__init__": unused}))
        sys.modules[name] = module
