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


#: The deepest nesting of objects and arrays :func:`loads_limited` accepts (``{"input": [1]}``
#: is 2 levels): what every JSON body sent to ``rf serve`` may have. Deeper values would reach
#: recursive code (a decoder, a renderer, ``to_dict``) that fails far from the request.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """JSON nested deeper than the limit of :func:`loads_limited`."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"it nests objects and arrays more than {max_depth} levels deep")
        self.max_depth = max_depth


def loads_limited(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """:func:`loads` for what a client sends: also TooDeep (a ValueError) when objects and
    arrays nest more than *max_depth* levels deep.

    Cheap on the usual body: nesting *max_depth* + 1 deep takes at least that many ``[``/``{``
    bytes (and twice that many bytes in all), so a body with fewer is decoded at once; only a
    body with more is walked after decoding (a pass over its containers)."""
    if len(data) > 2 * max_depth + 1 and data.count(b"{") + data.count(b"[") > max_depth:
        try:
            value = loads(data)
        except RecursionError:  # deeper than the interpreter's own limit
            raise TooDeep(max_depth) from None
        if _deeper_than(value, max_depth):
            raise TooDeep(max_depth)
        return value
    return loads(data)


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether *value* (decoded JSON: dicts, lists, scalars) nests more than *max_depth* deep:
    one level at a time, each a single comprehension over the containers of the level above."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(max_depth):
        if not level:
            return False
        level = [item for container in level
                 for item in (container.values() if type(container) is dict else container)
                 if type(item) is dict or type(item) is list]
    return bool(level)
