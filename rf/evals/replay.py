"""Comparing a recorded execution with its replay: the outcome and a JSON-aware output diff.

``rf replay`` (rf.services.replay) runs recorded inputs again; this module only compares, so
it knows nothing of environments or stores:

- :func:`outcome`: ``same``, ``changed``, ``newly_failing`` or ``fixed``;
- :func:`json_changes`: the differences between two JSON values as paths
  (``total.amount``, ``items[2]``), so a one-word change in a large output is one line;
- :func:`pretty`: a value as the side-by-side diff shows it (sorted keys, indented), so that
  key order and spacing never show as changes.
"""

from __future__ import annotations

import json
from typing import Any

from rf.models import OutputChange

OUTCOMES = ("same", "changed", "newly_failing", "fixed")
#: At most this many changes are listed per execution (a summary line says how many more).
MAX_CHANGES = 50


def outcome(before_ok: bool, after_ok: bool, before: Any, after: Any) -> str:
    """*before*/*after*: the outputs (when the run succeeded) or the errors (when it failed)."""
    if before_ok and not after_ok:
        return "newly_failing"
    if after_ok and not before_ok:
        return "fixed"
    return "same" if _same(before, after) else "changed"


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b) and not (_number(a) and _number(b)):
        return False
    return bool(a == b)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def json_changes(before: Any, after: Any, path: str = "", out: list[OutputChange] | None = None) -> list[OutputChange]:
    """Where *after* differs from *before*: objects key by key, lists item by item (a longer
    list adds items, a shorter one removes them); anything else is one change at its path."""
    changes: list[OutputChange] = [] if out is None else out
    if len(changes) >= MAX_CHANGES:
        return changes
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                changes.append(OutputChange(path=sub, kind="removed", before=before[key]))
            elif key not in before:
                changes.append(OutputChange(path=sub, kind="added", after=after[key]))
            else:
                json_changes(before[key], after[key], sub, changes)
            if len(changes) >= MAX_CHANGES:
                break
        return changes
    if isinstance(before, list) and isinstance(after, list):
        for i in range(max(len(before), len(after))):
            sub = f"{path}[{i}]"
            if i >= len(after):
                changes.append(OutputChange(path=sub, kind="removed", before=before[i]))
            elif i >= len(before):
                changes.append(OutputChange(path=sub, kind="added", after=after[i]))
            else:
                json_changes(before[i], after[i], sub, changes)
            if len(changes) >= MAX_CHANGES:
                break
        return changes
    if not _same(before, after):
        changes.append(OutputChange(path=path, kind="changed", before=before, after=after))
    return changes


def pretty(value: Any) -> str:
    """*value* as the diff shows it: a string as itself, anything else as sorted, indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=repr)
