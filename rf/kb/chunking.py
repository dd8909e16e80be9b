"""Units → chunks: at most ``chunk_size`` characters, overlapping by ``overlap``.

Sizes are in characters, not model tokens: the offline embedder has no
tokenizer, characters are what a person can check, and for English text a
token is about four characters (so the default 1,000 characters ≈ 250 tokens,
well inside every embedding model's input limit).

Rules:

- units are packed whole while they fit; a unit longer than a chunk is cut at
  a paragraph, sentence or word boundary (a single word longer than a chunk is
  the only thing ever cut in the middle);
- each chunk after the first starts with the end of the previous one — up to
  ``overlap`` characters of prose, starting at a word — so a sentence that
  straddles a boundary can be found from either side. For record types (CSV
  rows, JSON items) the overlap repeats whole records, never half a row;
- a header (a CSV's column names) opens every chunk and counts toward its size.

Each chunk keeps the metadata of its units: the first page/row/item and, when
the chunk spans several, the last one (``page_end``, ``row_end``...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rf.errors import UsageError
from rf.kb.extract import RECORD_TYPES, Extracted

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_OVERLAP = 200
MIN_CHUNK_SIZE = 50
MAX_CHUNK_SIZE = 100_000


@dataclass
class Chunk:
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def check_sizes(chunk_size: int, overlap: int) -> None:
    """Refuse sizes that cannot make sense, with the allowed range."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not (
            MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE):
        raise UsageError(f"--chunk-size must be a whole number of characters between {MIN_CHUNK_SIZE} and "
                         f"{MAX_CHUNK_SIZE}, not {chunk_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not (0 <= overlap <= chunk_size // 2):
        raise UsageError(f"--overlap must be between 0 and half the chunk size ({chunk_size // 2}), not {overlap!r}")


def chunk(doc: Extracted, chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    """Cut a document's units into overlapping chunks (see the module docstring)."""
    check_sizes(chunk_size, overlap)
    header = doc.header
    if header is not None and len(header) > chunk_size // 2:
        header = header[: chunk_size // 2]
    budget = chunk_size - (len(header) + 1 if header else 0)
    overlap = min(overlap, budget // 2)
    records = doc.kind in RECORD_TYPES
    joiner = doc.joiner
    # Long units are cut so that an overlap tail plus one piece still fits in a chunk.
    piece_max = max(1, budget - overlap)
    pieces: list[tuple[str, dict[str, Any]]] = []
    for unit in doc.units:
        if len(unit.text) <= budget:
            pieces.append((unit.text, unit.meta))
        else:
            pieces += [(p, unit.meta) for p in split_text(unit.text, piece_max)]

    out: list[Chunk] = []
    cur: list[str] = []
    metas: list[dict[str, Any]] = []
    cur_len = 0
    carried = 0  # how many leading entries of `cur` are overlap from the previous chunk

    def emit() -> None:
        body = joiner.join(cur)
        out.append(Chunk(f"{header}\n{body}" if header else body, _merge(metas)))

    for text, meta in pieces:
        add = len(text) + (len(joiner) if cur else 0)
        if cur and len(cur) > carried and cur_len + add > budget:
            emit()
            if records:
                tail: list[str] = []
                tail_metas: list[dict[str, Any]] = []
                size = 0
                for t, m in zip(reversed(cur), reversed(metas), strict=True):
                    if size + len(t) + len(joiner) > overlap or size + len(t) + len(joiner) + len(text) > budget:
                        break
                    tail.insert(0, t)
                    tail_metas.insert(0, m)
                    size += len(t) + len(joiner)
                cur, metas = tail, tail_metas
            else:
                last = joiner.join(cur)
                tail_text = overlap_tail(last, min(overlap, budget - len(text) - len(joiner)))
                cur = [tail_text] if tail_text else []
                metas = [metas[-1]] if tail_text and metas else []
            carried = len(cur)
            cur_len = len(joiner.join(cur))
            add = len(text) + (len(joiner) if cur else 0)
        cur.append(text)
        metas.append(meta)
        cur_len += add
    if cur and len(cur) > carried:
        emit()
    return out


def overlap_tail(text: str, size: int) -> str:
    """The last ``size`` characters of ``text`` or fewer, starting at a word."""
    if size <= 0 or not text:
        return ""
    if len(text) <= size:
        return text
    tail = text[-size:]
    if not text[-size - 1].isspace():
        cut = next((i for i, c in enumerate(tail) if c.isspace()), None)
        if cut is None:
            return ""
        tail = tail[cut:]
    return tail.strip()


def split_text(text: str, size: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``size`` characters at the best boundary available."""
    pieces = []
    rest = text.strip()
    while len(rest) > size:
        window = rest[: size + 1]
        cut = -1
        for sep in ("\n", ". ", "? ", "! ", "; ", ", ", " "):
            pos = window.rfind(sep, size // 2)
            if pos > 0:
                cut = pos + (1 if sep != " " and sep != "\n" else 0)
                break
        if cut <= 0:
            pos = window.rfind(" ")
            cut = pos if pos > 0 else size
        piece = rest[:cut].strip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def _merge(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """First value of each key, plus ``<key>_end`` when the chunk spans several."""
    merged: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for m in metas:
        for key, value in m.items():
            merged.setdefault(key, value)
            last[key] = value
    for key, value in last.items():
        if value != merged[key]:
            merged[f"{key}_end"] = value
    return merged
