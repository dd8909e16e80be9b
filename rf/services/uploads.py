"""Uploads: a request body too large for one request, sent ahead in chunks.

Every ``/api`` route shares one body limit (``[server] max_body_bytes``, 1 MiB by
default), and files travel base64-encoded inside JSON — so an agent with a few
hundred KB of files could not be deployed through a server. A route marked
``accepts_upload`` in :mod:`rf.api` (deploy, ``rf test``, OpenAPI import) may
instead be called with the body ``{"upload": ID}``: the server takes its JSON
body from the upload ``ID`` (and deletes it) and checks it exactly as if it had
come inline — same fields, same types, same errors.

The client (:class:`rf.client.HttpBackend`, automatically above half the body
limit) sends the body's bytes in order with :meth:`UploadsService.upload_chunk`
(``POST /api/uploads``: ``{upload, offset, total, data: base64}``). Chunks are
ordinary JSON requests: the request guard, the token and the body limit apply
to each. The upload id is chosen by the client (16–64 URL-safe characters,
e.g. ``secrets.token_urlsafe(18)``); its declared ``total`` is fixed by the
first chunk.

Staged under ``.rf/uploads/`` (directory 0700, files 0600): ``ID.TOTAL.part``
while chunks arrive, ``ID`` once complete. Bounded: one chunk is at most
:data:`MAX_CHUNK_BYTES`; every upload in progress together at most ``[server]
max_upload_bytes`` (default :data:`DEFAULT_MAX_UPLOAD_BYTES`; one larger upload
is 413, room taken by others is 429). An upload is deleted when a route uses
it, when one of its chunks is refused, after :data:`UPLOAD_IDLE_S` without a
chunk, and when the server starts (:meth:`UploadsService.clear_uploads`).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from rf.errors import Conflict, NotFound, PayloadTooLarge, TooBusy, UsageError, WorkspaceError
from rf.services.base import ServiceContext

#: ``[server] max_upload_bytes`` when rf.toml does not set it: all uploads in progress together.
DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
#: The most bytes one chunk may carry (the request body limit usually bounds it first).
MAX_CHUNK_BYTES = 8 * 1024 * 1024
#: An upload with no chunk for this long is deleted (a client that gave up, or crashed).
UPLOAD_IDLE_S = 15 * 60

_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_PART = re.compile(r"([A-Za-z0-9_-]{16,64})\.(\d+)\.part")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


class UploadsService:
    """Large request bodies sent ahead in chunks (see the module docstring)."""

    _uploads_lock = threading.Lock()  #: one chunk (or take) at a time: appends stay in order

    def __init__(self, ctx: ServiceContext) -> None:
        self.workspace = ctx.workspace
        self.cache_dir = ctx.cache_dir

    # ------------------------------------------------------------ API
    def upload_chunk(self, upload: str, offset: int, total: int, data: bytes) -> dict[str, Any]:
        """Append ``data`` at ``offset`` of upload ``upload`` (a new upload at offset 0),
        whose whole body is ``total`` bytes. Answers ``{upload, received, total, complete}``."""
        _check_id(upload)
        for name, value in (("offset", offset), ("total", total)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be a whole number of at least 0")
        if not isinstance(data, bytes):
            raise UsageError("data must be the chunk's bytes (base64 in JSON)")
        if len(data) > MAX_CHUNK_BYTES:
            raise PayloadTooLarge(f"one chunk carries at most {_mib(MAX_CHUNK_BYTES)} ({len(data)} bytes given)",
                                  "send smaller chunks")
        limit = self.max_upload_bytes()
        with self._uploads_lock:
            folder = self._uploads_dir(create=True)
            self._expire_uploads(folder)
            part = folder / f"{upload}.{total}.part"
            if (folder / upload).exists():
                raise Conflict(f"upload {upload!r} is complete already",
                               "call the route with {\"upload\": ID}, or start a new upload with a new id")
            others = [p for p in folder.glob(f"{upload}.*.part") if p != part]
            if others:
                self._drop(part, *others)
                declared = _PART.fullmatch(others[0].name)
                raise UsageError(f"upload {upload!r} was started with total {declared[2] if declared else '?'}, "
                                 f"this chunk says {total}; the upload is dropped",
                                 "send the same total with every chunk; start again from offset 0")
            received = part.stat().st_size if part.exists() else None
            if received is None:
                if offset != 0:
                    raise NotFound(f"no upload {upload!r} in progress",
                                   f"it was used, refused, or idle for more than {UPLOAD_IDLE_S // 60} minutes "
                                   "(or the server restarted): send it again from offset 0")
                if total > limit:
                    raise PayloadTooLarge(
                        f"an upload of {_mib(total)} is over the limit of {_mib(limit)}",
                        "send less (list data files in the agent's .rfignore), or raise [server] "
                        "max_upload_bytes in rf.toml")
                busy = self._staged_bytes(folder)
                if busy + total > limit:
                    exc = TooBusy(f"uploads in progress hold {_mib(busy)} of the {_mib(limit)} allowed at once",
                                  f"retry when they finish (an idle one is dropped after {UPLOAD_IDLE_S // 60} "
                                  "minutes), or raise [server] max_upload_bytes in rf.toml")
                    exc.retry_after_s = 5
                    raise exc
            elif offset != received:
                raise Conflict(f"upload {upload!r} holds {received} bytes; this chunk starts at {offset}",
                               f"send the chunk that starts at offset {received}")
            end = offset + len(data)
            if end > total:
                self._drop(part)
                raise UsageError(f"this chunk ends at byte {end}, past the upload's total of {total}; "
                                 "the upload is dropped", "send exactly total bytes; start again from offset 0")
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if received is None else 0)
            with os.fdopen(os.open(part, flags, 0o600), "ab") as f:
                f.write(data)
            complete = end == total
            if complete:
                part.rename(folder / upload)
        return {"upload": upload, "received": end, "total": total, "complete": complete}

    # ------------------------------------------------------------ used by the server
    def take_upload(self, upload: str) -> bytes:
        """The body of a complete upload, which is deleted (one use). Not a route: the server
        calls it for a request whose body is ``{"upload": ID}``."""
        _check_id(upload)
        with self._uploads_lock:
            folder = self._uploads_dir()
            self._expire_uploads(folder)
            done = folder / upload
            if not done.exists():
                for part in folder.glob(f"{upload}.*.part"):
                    declared = _PART.fullmatch(part.name)
                    raise UsageError(
                        f"upload {upload!r} is not complete: {part.stat().st_size} of "
                        f"{declared[2] if declared else '?'} bytes received", "send the remaining chunks first")
                raise NotFound(f"no upload {upload!r}",
                               f"it was used already, or idle for more than {UPLOAD_IDLE_S // 60} minutes "
                               "(or the server restarted): send it again (POST /api/uploads)")
            try:
                return done.read_bytes()
            finally:
                self._drop(done)

    def clear_uploads(self) -> int:
        """Delete every staged upload (the server starts with none); the number deleted."""
        with self._uploads_lock:
            folder = self._uploads_dir()
            files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
            self._drop(*files)
        return len(files)

    def max_upload_bytes(self) -> int:
        """``[server] max_upload_bytes`` (checked), or the default."""
        raw = self.workspace.raw.get("server", {}) if self.workspace is not None else {}
        value = raw.get("max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES) if isinstance(raw, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise WorkspaceError("rf.toml: [server] max_upload_bytes must be a positive whole number (bytes)",
                                 "fix rf.toml")
        return value

    # ------------------------------------------------------------ staging area
    def _uploads_dir(self, *, create: bool = False) -> Path:
        folder = (self.workspace.state_dir if self.workspace is not None else self.cache_dir) / "uploads"
        if create and not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
        return folder

    def _expire_uploads(self, folder: Path) -> None:
        if not folder.is_dir():
            return
        cutoff = time.time() - UPLOAD_IDLE_S
        for p in folder.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except FileNotFoundError:
                pass

    @staticmethod
    def _staged_bytes(folder: Path) -> int:
        """What the uploads in the folder hold or will hold (their declared totals)."""
        total = 0
        for p in folder.iterdir():
            m = _PART.fullmatch(p.name)
            try:
                total += int(m[2]) if m else p.stat().st_size
            except FileNotFoundError:
                pass
        return total

    @staticmethod
    def _drop(*paths: Path) -> None:
        for p in paths:
            p.unlink(missing_ok=True)


def _check_id(upload: Any) -> None:
    if not isinstance(upload, str) or not _ID.fullmatch(upload):
        raise UsageError("an upload id is 16 to 64 letters, digits, '-' or '_'",
                         "pick a random one, e.g. Python's secrets.token_urlsafe(18)")
