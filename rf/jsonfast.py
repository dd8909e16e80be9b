"""JSON on the host's hot paths, with msgspec (a Litestar dependency).

Recording an execution encodes its input, output, span attributes, session
messages and memory values, and decodes the worker's messages. msgspec does
that 5-15x faster than the standard library's ``json`` (a few hundred
nanoseconds for a small object instead of several microseconds).

It is imported on first use, not with this module: importing it costs
~10 ms on top of what the CLI already loads, which commands that never
record an execution should not pay. The worker keeps the standard library
(its start-up matters more, and agent outputs must be *strict* JSON: no NaN).

Output is compact (no spaces) UTF-8 JSON; anything that reads it uses a JSON
parser, never text comparison.
"""

from __future__ import annotations

import json as _std
from typing import Any

_encode: Any = None
_encode_repr: Any = None
_decode: Any = None


def _load() -> None:
    global _encode, _encode_repr, _decode
    import msgspec

    _encode = msgspec.json.Encoder().encode
    _encode_repr = msgspec.json.Encoder(enc_hook=repr).encode
    _decode = msgspec.json.Decoder().decode


def dumps(value: Any) -> str:
    """``value`` as JSON text; TypeError for a value JSON cannot hold."""
    return dumpb(value).decode("utf-8")


def dumpb(value: Any) -> bytes:
    """``value`` as UTF-8 JSON bytes; TypeError for a value JSON cannot hold."""
    if _encode is None:
        _load()
    try:
        data: bytes = _encode(value)
    except TypeError:  # e.g. a str or int subclass, which msgspec refuses and json accepts
        return _std.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return data


def dumps_lenient(value: Any) -> str:
    """``value`` as JSON text, with ``repr()`` of anything JSON cannot hold (span attributes)."""
    if _encode_repr is None:
        _load()
    try:
        text: str = _encode_repr(value).decode("utf-8")
    except TypeError:
        return _std.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    return text


def loads(data: bytes | str) -> Any:
    """Decode strict JSON (no NaN/Infinity); ValueError when it is not."""
    if _decode is None:
        _load()
    return _decode(data)  # msgspec.DecodeError is a ValueError
