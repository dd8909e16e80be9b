"""``rf kb``: knowledge bases, shared by both environments.

The CLI reads the files and sends ``(path, bytes, metadata)`` to the backend
— the store in-process, or a running server (files larger than one request
travel in pieces). An upload is one *batch*: every file is staged, then the
batch is committed at once, so a bad file half-way through leaves the KB as
it was. Because KBs are shared, destructive changes to a KB that production
agents use ask for confirmation first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rf.cli.app import JsonOption, backend, confirm, workspace
from rf.errors import UsageError
from rf.kb.files import collect_files, document_path

if TYPE_CHECKING:
    from rf.client import Backend
    from rf.models import KBUploadResult, KnowledgeBase

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Knowledge bases: documents to search from agents (shared by both environments).")

NameArg = Annotated[str, typer.Argument(help="Knowledge base name.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
#: Over HTTP, files larger than this travel in pieces (the server caps request bodies at 1 MiB).
PIECE_BYTES = 512 * 1024
#: In-process, small files are sent together up to this many bytes / files per call.
GROUP_BYTES = 8 * 1024 * 1024
GROUP_FILES = 64


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _confirm_production(kb: KnowledgeBase, action: str, yes: bool) -> None:
    """Say which production agents use the KB; ask (or require --yes) when any does."""
    from rich.markup import escape

    from rf.cli.output import err

    prod = sorted({u.agent for u in kb.used_by if u.env == "production"})
    if not prod:
        return
    err.print(f"[production]production[/production] agents search [bold]{escape(kb.name)}[/bold] "
              f"({escape(', '.join(prod))}) — {action} affects them immediately (knowledge bases are shared)")
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"knowledge base {kb.name!r} is used in production; {action} needs confirmation",
                         "re-run with --yes")
    confirm(f"{action[0].upper() + action[1:]} anyway?", yes)


@app.command("create")
def create(
    name: NameArg,
    embedder: Annotated[str, typer.Option("--embedder", help="'default' (offline) or 'provider:NAME:MODEL'.")] = "default",
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Chunk size in characters.")] = 1000,
    overlap: Annotated[int, typer.Option("--overlap", help="Characters shared by consecutive chunks.")] = 200,
    description: Annotated[str, typer.Option("--description", "-d", help="What it holds.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Create an empty knowledge base (shared: staging and production agents can search it)."""
    from rf.cli.output import info, print_json, success

    with backend() as b:
        change = b.create_kb(name, embedder, chunk_size, overlap, description)
    if json_out:
        print_json(change)
        return
    kb = change.kb
    success(f"created knowledge base [bold]{kb.name}[/bold]")
    info(f"  embedder: {kb.embedder_description}")
    info(f"  chunks: {kb.chunk_size} characters, {kb.overlap} overlap")
    for w in change.warnings:
        info(f"[dim]  {w}[/dim]")
    info(f"[dim]  next: rf kb upload {kb.name} PATH...[/dim]")


@app.command("list")
def list_kbs(json_out: JsonOption = False) -> None:
    """Knowledge bases with their sizes and embedders."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        kbs = b.list_kbs()
    if json_out:
        print_json(kbs)
        return
    if not kbs:
        out.print("no knowledge bases yet — create one: rf kb create NAME")
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title="knowledge bases · shared by both environments",
                  title_justify="left")
    for col in ("name", "documents", "chunks", "size", "embedder", "updated (UTC)"):
        table.add_column(col)
    for kb in kbs:
        table.add_row(kb.name, str(kb.documents), str(kb.chunks), _size(kb.size_bytes), escape(kb.embedder),
                      when(kb.updated_at))
    out.print(fit_table(table))


@app.command("show")
def show(name: NameArg, json_out: JsonOption = False) -> None:
    """A knowledge base: its embedder (in words), chunking, documents and who uses it."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        kb = b.get_kb(name)
        docs = b.kb_documents(name)
    if json_out:
        print_json({"kb": kb, "documents": docs})
        return
    out.print(f"[bold]{escape(kb.name)}[/bold]  (shared by staging and production)")
    rows = [("embedder", kb.embedder_description), ("dimensions", str(kb.dim or "— (no documents yet)")),
            ("chunking", f"{kb.chunk_size} characters, {kb.overlap} overlap"),
            ("documents", f"{kb.documents} ({_size(kb.size_bytes)}), {kb.chunks} chunks"),
            ("updated", when(kb.updated_at) + " UTC")]
    if kb.description:
        rows.insert(0, ("description", kb.description))
    if kb.used_by:
        rows.append(("used by", ", ".join(f"{u.agent} ({u.env})" for u in kb.used_by)))
    for key, value in rows:
        out.print(f"  [dim]{key:<11}[/dim] {escape(value)}")
    if docs:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("path", "type", "size", "chunks", "metadata"):
            table.add_column(col)
        for d in docs[:200]:
            meta = ", ".join(f"{k}={v}" for k, v in d.metadata.items() if k != "columns")
            table.add_row(escape(d.path), d.kind, _size(d.size), str(d.chunks), escape(meta[:60]))
        out.print(fit_table(table))
        if len(docs) > 200:
            out.print(f"[dim]… and {len(docs) - 200} more (rf kb show {name} --json)[/dim]")


@app.command("delete")
def delete(name: NameArg, yes: YesOption = False) -> None:
    """Delete a knowledge base and all its documents (production agents that use it start failing)."""
    from rf.cli.output import success, warn

    with backend() as b:
        kb = b.get_kb(name)
        _confirm_production(kb, "deleting it", yes)
        if not kb.used_by and not yes and sys.stdin.isatty():
            confirm(f"Delete knowledge base {name!r} ({kb.documents} documents, {kb.chunks} chunks)?", yes)
        change = b.delete_kb(name)
    success(f"deleted knowledge base {name} ({change.kb.documents} documents)")
    for w in change.warnings:
        warn(w)


def _send(b: Backend, name: str, path: str, data: bytes, meta: dict[str, str], batch: str) -> KBUploadResult:
    if b.kind == "http" and len(data) > PIECE_BYTES:
        for index, start in enumerate(range(0, len(data), PIECE_BYTES)):
            b.kb_upload_piece(name, batch, path, index, {path: data[start:start + PIECE_BYTES]})
        return b.kb_upload(name, {}, meta, batch, [path])
    return b.kb_upload(name, {path: data}, meta, batch)


@app.command("upload")
def upload(
    name: NameArg,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (.txt .md .html .csv .json .jsonl .pdf).")],
    meta: Annotated[list[str] | None, typer.Option("--meta", "-m", help="Custom metadata key=value (repeatable).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Upload files and folders: each is chunked and embedded; unchanged files are skipped.

    All-or-nothing: the documents become searchable together when every file
    has been processed; any error leaves the knowledge base as it was.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from rf.cli.output import err, info, print_json, success, warn
    from rf.ids import new_id
    from rf.kb.filters import check_metadata

    metadata = check_metadata(list(meta or []))
    files, skipped = collect_files(paths)
    if not files:
        raise UsageError("no supported files to upload" + (f" ({len(skipped)} skipped for their type)" if skipped else ""),
                         "supported: .txt .md .html .csv .json .jsonl .pdf")
    try:
        root: Path | None = workspace().root
    except Exception:  # noqa: BLE001 - no workspace: paths stay absolute
        root = None
    named = [(f, document_path(f, root)) for f in files]
    total = sum(f.stat().st_size for f, _ in named)
    batch = new_id("up")
    results: list[Any] = []
    with backend() as b:
        kb = b.get_kb(name)  # unknown KB: fail before reading anything
        prod = sorted({u.agent for u in kb.used_by if u.env == "production"})
        if prod and not json_out:
            info(f"[dim]{escape(name)} is shared: production agents ({escape(', '.join(prod))}) will see the "
                 "changes as soon as the upload completes[/dim]")
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                            console=err, transient=True, disable=json_out or not err.is_terminal)
        try:
            with progress:
                task = progress.add_task(f"uploading to {escape(name)}", total=total)
                # Over HTTP a request carries at most ~384 KiB of files (base64 grows it by a third).
                group_max = PIECE_BYTES * 3 // 4 if b.kind == "http" else GROUP_BYTES
                group: dict[str, bytes] = {}
                size = 0

                def flush() -> None:
                    nonlocal group, size
                    if group:
                        # Small files travel together: one call, one store transaction for all of them.
                        progress.update(task, description=escape(list(group)[-1][-40:]))
                        results.extend(b.kb_upload(name, group, metadata, batch).files)
                        progress.advance(task, size)
                        group, size = {}, 0

                for file, doc_path in named:
                    try:
                        data = file.read_bytes()
                    except OSError as exc:
                        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
                    if len(data) > group_max:  # a big file goes alone (in pieces over HTTP)
                        progress.update(task, description=escape(doc_path[-40:]))
                        results.extend(_send(b, name, doc_path, data, metadata, batch).files)
                        progress.advance(task, len(data))
                        continue
                    if size + len(data) > group_max or len(group) >= GROUP_FILES:
                        flush()
                    group[doc_path] = data
                    size += len(data)
                flush()
            done = b.kb_commit(name, batch)
        except BaseException:
            try:
                b.kb_abort(name, batch)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise
    statuses = {f.path: f for f in results}
    for f in done.files:
        statuses[f.path].status = f.status
    files_out = list(statuses.values())
    done.files = files_out
    done.warnings = [w for f in files_out for w in f.warnings] + done.warnings
    if json_out:
        print_json(done)
        return
    counts: dict[str, int] = {}
    for f in files_out:
        counts[f.status] = counts.get(f.status, 0) + 1
    if len(files_out) <= 30:
        for f in files_out:
            mark = {"added": "+", "updated": "~", "unchanged": "="}.get(f.status, " ")
            info(f"  {mark} {escape(f.path)}  [dim]{f.status}, {f.chunks} chunk{'' if f.chunks == 1 else 's'}[/dim]")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if counts.get("added") or counts.get("updated"):
        success(f"uploaded to [bold]{escape(name)}[/bold]: {summary}; +{done.chunks_added} / "
                f"-{done.chunks_removed} chunks")
    else:
        success(f"nothing changed in [bold]{escape(name)}[/bold]: {summary}")
    if skipped:
        warn(f"skipped {len(skipped)} file(s) of unsupported types: "
             + ", ".join(escape(p.name) for p in skipped[:5]) + (" …" if len(skipped) > 5 else ""))
    for w in done.warnings:
        warn(w) if "no text" in w or "empty" in w else info(f"[dim]{escape(w)}[/dim]")


@app.command("search")
def search(
    name: NameArg,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many chunks to return.")] = 5,
    filter_: Annotated[list[str] | None, typer.Option("--filter", "-f", help="key=value on document metadata "
                                                      "(path, type, or custom); repeatable.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Hybrid search (embeddings + BM25) with metadata filters."""
    from rich.markup import escape

    from rf.cli.output import out, print_json
    from rf.kb.filters import parse_pairs

    filters = parse_pairs(list(filter_ or []), "--filter")  # bad syntax fails before connecting
    with backend() as b:
        result = b.search_kb(name, query, k, filters or None)
    if json_out:
        print_json(result)
        return
    if not result.hits:
        out.print(f"no results in {escape(name)}")
        return
    for i, h in enumerate(result.hits, start=1):
        where = f"{h.path} #{h.chunk}"
        if "page" in h.metadata:
            where += f" (page {h.metadata['page']})"
        out.print(f"[bold]{i}. {escape(where)}[/bold]  score {h.score:.3f} "
                  f"[dim](vector {h.vector_score:.3f}, lexical {h.lexical_score:.3f})[/dim]")
        text = " ".join(h.text.split())
        out.print("   " + escape(text[:300] + ("…" if len(text) > 300 else "")))
    count = len(result.hits)
    out.print(f"[dim]{count} result{'s' if count != 1 else ''} in {result.took_ms:.0f} ms · "
              f"embedder {escape(result.embedder)}[/dim]")


@app.command("remove-document")
def remove_document(name: NameArg, path: Annotated[str, typer.Argument(help="Document path (as in rf kb show).")],
                    yes: YesOption = False) -> None:
    """Remove one document and its chunks."""
    from rf.cli.output import success

    try:
        root: Path | None = workspace().root
    except Exception:  # noqa: BLE001
        root = None
    doc = path
    if Path(path).exists():
        doc = document_path(Path(path), root)
    with backend() as b:
        _confirm_production(b.get_kb(name), "removing a document", yes)
        change = b.kb_remove_document(name, doc)
    success(f"removed {change.removed[0]} from {name} ({change.kb.documents} documents left)")


@app.command("set-embedder")
def set_embedder(name: NameArg, embedder: Annotated[str, typer.Argument(help="'default' or 'provider:NAME:MODEL'.")],
                 yes: YesOption = False, json_out: JsonOption = False) -> None:
    """Change the embedder: every chunk is re-embedded, then swapped in at once."""
    from rf.cli.output import info, print_json, success

    with backend() as b:
        _confirm_production(b.get_kb(name), "changing the embedder", yes)
        if not json_out:
            info("re-embedding every chunk…")
        change = b.set_kb_embedder(name, embedder)
    if json_out:
        print_json(change)
        return
    if change.action == "unchanged":
        success(change.warnings[0])
        return
    success(f"{name} now uses {change.kb.embedder} ({change.reembedded} chunks re-embedded in {change.seconds:.1f} s)")
    info(f"  {change.kb.embedder_description}")
