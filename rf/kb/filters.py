"""Key=value pairs: search filters and custom document metadata.

Both the CLI (``--filter lang=en``, ``--meta team=support``) and agent code
(``filter={"lang": "en"}``) end up here, so a mistake gets the same clear
message whatever the surface. Light on purpose: the CLI imports it before
connecting to anything.
"""

from __future__ import annotations

import json
from typing import Any

from rf.errors import UsageError

#: Keys every chunk has already (filters use them); custom metadata may not redefine them.
RESERVED_META = ("path", "type", "chunk")


def parse_pairs(items: Any, what: str) -> dict[str, list[str]]:
    """``["k=v", ...]`` or ``{"k": v | [v, ...]}`` → ``{k: [v, ...]}`` (UsageError on bad syntax)."""
    out: dict[str, list[str]] = {}
    if items is None:
        return out
    if isinstance(items, dict):
        for key, value in items.items():
            if not isinstance(key, str) or not key.strip():
                raise UsageError(f"{what}: keys must be non-empty strings")
            values = value if isinstance(value, list | tuple) else [value]
            if not values:
                raise UsageError(f"{what}: {key!r} has no value")
            out[key.strip()] = [_text(v, what) for v in values]
        return out
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list | tuple):
        raise UsageError(f"{what} must be key=value pairs")
    for item in items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise UsageError(f"{what} must look like key=value, not {item!r}", f"e.g. {what} lang=en")
        key, value = item.split("=", 1)
        out.setdefault(key.strip(), []).append(value)
    return out


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    raise UsageError(f"{what}: values must be strings, numbers or booleans, not {type(value).__name__}")


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Custom document metadata: a flat object of scalar values; a few keys are reserved."""
    if metadata is None:
        return {}
    if isinstance(metadata, list | str):
        pairs = parse_pairs(metadata, "--meta")
        metadata = {k: v[-1] for k, v in pairs.items()}
    if not isinstance(metadata, dict):
        raise UsageError("metadata must be an object of key: value")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or len(key) > 100:
            raise UsageError(f"invalid metadata key {key!r}", "keys are non-empty strings of at most 100 characters")
        if key in RESERVED_META:
            raise UsageError(f"metadata key {key!r} is reserved (every chunk has it already)",
                             f"pick another name; reserved: {', '.join(RESERVED_META)}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise UsageError(f"metadata {key!r}: values must be strings, numbers or booleans")
    return dict(metadata)
