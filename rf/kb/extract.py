"""File bytes → text units, per file type.

A *unit* is the smallest piece of a document that chunking should not cut
through when it can avoid it: a paragraph of prose, a CSV row, a JSON record,
a PDF page. Units carry small metadata (the page, the row or item number) that
ends up on the chunks made from them.

Supported: ``.txt``, ``.md``/``.markdown``, ``.html``/``.htm`` (tags stripped
with the standard library's ``html.parser``; scripts and styles dropped; the
``<title>`` kept as document metadata), ``.csv``/``.tsv`` (the header row is
repeated at the top of every chunk, so each chunk stands alone), ``.json``
(one unit per list item or top-level key), ``.jsonl``/``.ndjson`` (one unit
per line) and ``.pdf`` (text per page, via pypdf). Anything else is refused
with the list of supported types, before anything is stored.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any

from rf.errors import UsageError

#: extension → document type
TYPES: dict[str, str] = {
    ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
    ".html": "html", ".htm": "html", ".csv": "csv", ".tsv": "csv",
    ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".pdf": "pdf",
}
SUPPORTED = ", ".join(sorted(TYPES))

#: Types whose units are records: overlap repeats whole records, never half a row.
RECORD_TYPES = frozenset({"csv", "json", "jsonl"})


@dataclass
class Unit:
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Extracted:
    """What a file holds, ready for chunking."""

    kind: str  #: one of the values of :data:`TYPES`
    units: list[Unit]
    header: str | None = None  #: repeated at the top of every chunk (CSV)
    joiner: str = "\n\n"  #: how units are joined inside a chunk
    meta: dict[str, Any] = field(default_factory=dict)  #: document metadata found in the file (title, pages)
    warnings: list[str] = field(default_factory=list)


def file_type(path: str) -> str:
    """The document type of a path (UsageError, listing the supported ones, otherwise)."""
    suffix = PurePosixPath(path.replace("\\", "/")).suffix.lower()
    kind = TYPES.get(suffix)
    if kind is None:
        what = f"{suffix!r} files" if suffix else "files without an extension"
        raise UsageError(f"unsupported file type: {path} ({what} cannot be indexed)",
                         f"supported types: {SUPPORTED}")
    return kind


def is_supported(path: str) -> bool:
    return PurePosixPath(path.replace("\\", "/")).suffix.lower() in TYPES


def extract(path: str, data: bytes) -> Extracted:
    """Text units of one file. Raises UsageError (naming the file) for content that cannot be read."""
    kind = file_type(path)
    if kind == "pdf":
        return _pdf(path, data)
    text = _decode(path, data)
    if kind == "html":
        return _html(text)
    if kind == "csv":
        return _csv(path, text)
    if kind == "json":
        return _json(path, text)
    if kind == "jsonl":
        return _jsonl(path, text)
    return Extracted(kind, _paragraphs(text))


# ---------------------------------------------------------------- plain text

def _decode(path: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UsageError(f"{path} looks like a binary file, not text", "convert it to text (or PDF) first")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Legacy single-byte files (Windows-1252 and friends) still deserve to be searchable.
        return data.decode("cp1252", errors="replace")


_BLANK_LINES = re.compile(r"\n\s*\n")


def _paragraphs(text: str) -> list[Unit]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [Unit(p.strip()) for p in _BLANK_LINES.split(text) if p.strip()]


# ---------------------------------------------------------------- HTML

_BLOCK = frozenset(["address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul"])
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def _html(text: str) -> Extracted:
    parser = _TextParser()
    parser.feed(text)
    parser.close()
    body = re.sub(r"[ \t\f\v]+", " ", "".join(parser.parts))
    units = [Unit(" ".join(p.split())) for p in _BLANK_LINES.split(body) if p.strip()]
    title = " ".join("".join(parser.title).split())
    return Extracted("html", units, meta={"title": title} if title else {})


# ---------------------------------------------------------------- CSV

def _csv(path: str, text: str) -> Extracted:
    sample = text[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if path.lower().endswith(".tsv") else csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise UsageError(f"{path} is not valid CSV: {exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return Extracted("csv", [], warnings=[f"{path}: empty CSV"])

    def line(cells: list[str]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(cells)
        return buf.getvalue()

    header = line(rows[0])
    units = [Unit(line(r), {"row": i}) for i, r in enumerate(rows[1:], start=1)]
    return Extracted("csv", units, header=header, joiner="\n", meta={"columns": rows[0]})


# ---------------------------------------------------------------- JSON

def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _json(path: str, text: str) -> Extracted:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}", "fix the file, or upload it as .txt") from None
    if isinstance(data, list):
        units = [Unit(_dump(item), {"item": i}) for i, item in enumerate(data)]
    elif isinstance(data, dict):
        units = [Unit(_dump({key: value})) for key, value in data.items()]
    else:
        units = [Unit(_dump(data))]
    return Extracted("json", units, joiner="\n")


def _jsonl(path: str, text: str) -> Extracted:
    units = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{path}: line {number} is not valid JSON: {exc}") from None
        units.append(Unit(_dump(value), {"line": number}))
    return Extracted("jsonl", units, joiner="\n")


# ---------------------------------------------------------------- PDF

def _pdf(path: str, data: bytes) -> Extracted:
    import logging

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns loudly about harmless quirks
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UsageError(f"{path} is an encrypted PDF", "remove the password and upload it again")
        units: list[Unit] = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            units += [Unit(u.text, {"page": number}) for u in _paragraphs(text)]
        pages = len(reader.pages)
    except UsageError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise UsageError(f"{path} is not a readable PDF: {type(exc).__name__}: {exc}") from None
    warnings = [] if units else [f"{path}: no text found in the PDF (a scan? run OCR first)"]
    return Extracted("pdf", units, meta={"pages": pages}, warnings=warnings)
