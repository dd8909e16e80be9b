"""Text diffs of commit trees (difflib: unified per file, binary summarized)."""

from __future__ import annotations

import difflib

from rf.models import FileDiff

MAX_DIFF_BYTES = 512 * 1024


def _text(data: bytes) -> str | None:
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def unified(path: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"a/{path}", tofile=f"b/{path}",
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def tree_diff(base: dict[str, str], head: dict[str, str], blobs: dict[str, bytes]) -> list[FileDiff]:
    """Files added / removed / modified between two trees, with unified diffs."""
    out: list[FileDiff] = []
    for path in sorted(set(base) | set(head)):
        old_sha, new_sha = base.get(path), head.get(path)
        if old_sha == new_sha:
            continue
        status = "added" if old_sha is None else "removed" if new_sha is None else "modified"
        old = blobs.get(old_sha, b"") if old_sha else b""
        new = blobs.get(new_sha, b"") if new_sha else b""
        old_t, new_t = _text(old), _text(new)
        if old_t is None or new_t is None or len(old) + len(new) > MAX_DIFF_BYTES:
            summary = f"binary file {status} ({len(old)} → {len(new)} bytes)"
            out.append(FileDiff(path=path, status=status, diff=summary, binary=True))  # type: ignore[arg-type]
            continue
        out.append(FileDiff(path=path, status=status, diff=unified(path, old_t, new_t)))  # type: ignore[arg-type]
    return out
