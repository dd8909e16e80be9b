"""Which files of a folder go into a knowledge base, and how a document is named.

Shared by ``rf kb upload`` (rf/cli/kb.py) and the dashboard's upload
(rf/tui/views/others.py), so both pick the same files and name them alike.
"""

from __future__ import annotations

from pathlib import Path

from rf.errors import UsageError

#: Folders never searched for documents (besides hidden ones, whose names start with a dot).
SKIP_DIRS = frozenset({"__pycache__", "node_modules"})


def collect_files(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Files to upload from files and folders, and the folder files skipped for their type.

    A file named explicitly with an unsupported type is an error (before
    anything is sent); inside folders such files are skipped and reported.
    Hidden files and folders, ``__pycache__`` and ``node_modules`` are left out.
    """
    from rf.kb.extract import file_type, is_supported

    found: list[Path] = []
    skipped: list[Path] = []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if any(part.startswith(".") or part in SKIP_DIRS for part in rel) or not f.is_file():
                    continue
                (found if is_supported(f.name) else skipped).append(f)
        elif p.is_file():
            file_type(p.name)
            found.append(p)
        else:
            raise UsageError(f"{p} does not exist")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique, skipped


def document_path(file: Path, root: Path | None) -> str:
    """How a file is named in the KB: relative to the workspace when inside it, else absolute."""
    resolved = file.resolve()
    if root is not None:
        try:
            return resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return resolved.as_posix()
