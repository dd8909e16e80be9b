"""Knowledge bases: upload documents, chunk and embed them, search them. Shared by both environments.

A KB has no environment dimension: the same KB serves staging and
production agents, so there is no ``require_staging`` here — and every change
takes effect for production at once. Results therefore carry warnings that
say so, and the CLI asks before destructive changes to a KB that production
agents use (recorded from their ``ctx.kb`` calls, see ``resource_uses``).

**Uploads are atomic.** The client sends files (path, bytes) one call at a
time inside an upload *batch*; each file is extracted, chunked, embedded and
*staged* (invisible to searches). ``kb_commit`` then swaps every staged
document in — replacing the live version of a changed file — in one
transaction. Any error (unsupported type, unreadable PDF, provider down)
aborts the batch: nothing is stored half-way. A file whose sha256 and
metadata match the live document is not staged at all ("unchanged").
Files larger than one HTTP request may be sent in pieces first
(:meth:`KnowledgeService.kb_upload_piece`).

**Search** is hybrid (see :meth:`rf.store.knowledge.KnowledgeMixin.kb_search_rows`):
``0.5 × cosine(query, chunk) + 0.5 × BM25 / best BM25``, over the live
chunks of the documents that pass the metadata filters.

**Embedders** (see :mod:`rf.kb.embed`): ``default`` is offline feature
hashing (no network, deterministic); ``provider:NAME:MODEL`` calls an
OpenAI-compatible provider registered with ``rf providers add``. Changing
the embedder re-embeds every chunk into a new vector table, swapped in when
complete.

Agent code reaches search through ``ctx.kb(name).search(...)`` → host
method ``kb.search``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rf.config import check_name
from rf.errors import Conflict, NotFound, PayloadTooLarge, UsageError
from rf.ids import iso, new_id, utcnow
from rf.kb import chunking, embed, extract
from rf.kb.filters import check_metadata, parse_pairs
from rf.kb.text import content_tokens, query_terms, term_id
from rf.models import (
    KBChange,
    KBDocument,
    KBFileResult,
    KBHit,
    KBSearchResult,
    KBUploadResult,
    KnowledgeBase,
    ResourceUse,
)
from rf.services.base import ServiceContext
from rf.services.host import HostCall, host_method
from rf.services.resource_use import ResourceUses

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from rf.services.providers import ProvidersService

#: Combined score = VECTOR_WEIGHT × cosine + (1 - VECTOR_WEIGHT) × normalised BM25.
VECTOR_WEIGHT = 0.5
MAX_K = 100
MAX_QUERY_CHARS = 10_000
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Staged documents of an upload that never committed are dropped after this long.
STALE_BATCH = timedelta(hours=1)
REEMBED_BATCH = 2000


def _doc_path(path: Any) -> str:
    if not isinstance(path, str) or not path.strip():
        raise UsageError("a document path must be a non-empty string")
    return path.strip().replace("\\", "/")


class KnowledgeService:
    """Knowledge bases: uploads, chunks, embeddings, hybrid search; ``ctx.kb`` for agents."""

    def __init__(self, ctx: ServiceContext, providers: ProvidersService, uses: ResourceUses) -> None:
        self.store = ctx.store
        self.cache_dir = ctx.cache_dir
        self.providers = providers
        self.uses = uses
        self._kb_locks_guard = threading.Lock()
        self._kb_locks: dict[int, threading.RLock] = {}
        self._kb_hashing: embed.HashingEmbedder | None = None

    # ------------------------------------------------------------ plumbing
    def _kb_lock(self, kb_id: int) -> threading.RLock:
        """One lock per KB in this process (the only process that writes the store)."""
        with self._kb_locks_guard:
            return self._kb_locks.setdefault(kb_id, threading.RLock())

    def _kb_row(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str):
            raise UsageError("a knowledge base name must be a string")
        rows = self.store.kb_rows(name)
        if not rows:
            known = [r["name"] for r in self.store.kb_rows()]
            hint = f"known knowledge bases: {', '.join(known)}" if known else f"create it: rf kb create {name}"
            raise NotFound(f"unknown knowledge base {name!r}", hint)
        return rows[0]

    def _hashing_embedder(self) -> embed.HashingEmbedder:
        found = self._kb_hashing
        if found is None:
            found = self._kb_hashing = embed.HashingEmbedder()
        return found

    def _check_embedder(self, spec: str) -> str:
        """Validate an embedder spec against the registered providers; the canonical spec."""
        provider_name, model = embed.parse_spec(spec)
        if provider_name == embed.DEFAULT:
            return embed.DEFAULT
        provider = self.providers.find_provider(provider_name)
        if provider.kind != "openai":
            raise UsageError(f"provider {provider_name!r} is of kind {provider.kind!r}, which has no /embeddings API",
                             "use an OpenAI-compatible provider (rf providers add NAME --kind openai --base-url ...) "
                             "or --embedder default")
        if not model:
            raise UsageError(f"name the embedding model: provider:{provider_name}:MODEL",
                             f"e.g. provider:{provider_name}:text-embedding-3-small")
        return f"provider:{provider_name}:{model}"

    def _embedder(self, spec: str, call: HostCall | None = None) -> embed.HashingEmbedder | embed.ProviderEmbedder:
        provider_name, model = embed.parse_spec(spec)
        if provider_name == embed.DEFAULT:
            return self._hashing_embedder()
        provider = self.providers.find_provider(provider_name)
        key = None
        if provider.credential:
            key = self.providers.provider_secret(provider.credential, provider.name)
            if call is not None:
                call.secret(key)
        # [llm] timeout_s, or less: the calling execution's own timeout comes first.
        limit = float(self.providers.llm_settings().timeout_s)
        timeout, cut_short = call.time_left(limit) if call is not None else (limit, False)
        embedder = embed.ProviderEmbedder(provider.name, provider.base_url or "https://api.openai.com/v1", key,
                                          model or "", timeout_s=timeout)
        if cut_short and call is not None:
            embedder.out_of_time_hint = f"raise timeout_s in agents/{call.agent}/agent.toml"
        return embedder

    def _describe_embedder(self, spec: str) -> str:
        if spec == embed.DEFAULT:
            return self._hashing_embedder().describe()
        return f"{spec} — provider embeddings (OpenAI-compatible /embeddings)"

    def _kb_model(self, row: dict[str, Any], stats: dict[str, int] | None = None) -> KnowledgeBase:
        stats = stats if stats is not None else self.store.kb_stats().get(row["id"], {})
        return KnowledgeBase(
            name=row["name"], embedder=row["embedder"], embedder_description=self._describe_embedder(row["embedder"]),
            dim=row["dim"], chunk_size=row["chunk_size"], overlap=row["overlap"], description=row["description"],
            documents=stats.get("documents", 0), chunks=stats.get("chunks", 0),
            size_bytes=stats.get("size_bytes", 0), created_at=row["created_at"], updated_at=row["updated_at"],
            used_by=[ResourceUse(**u) for u in self.store.resource_uses("kb", row["name"])],
        )

    def _production_users(self, kb: KnowledgeBase) -> list[str]:
        return sorted({u.agent for u in kb.used_by if u.env == "production"})

    # ------------------------------------------------------------ reading
    def list_kbs(self) -> list[KnowledgeBase]:
        """Every knowledge base with its document and chunk counts."""
        stats = self.store.kb_stats()
        return [self._kb_model(r, stats.get(r["id"], {})) for r in self.store.kb_rows()]

    def get_kb(self, name: str) -> KnowledgeBase:
        """One knowledge base, with the embedder it uses in words."""
        return self._kb_model(self._kb_row(name))

    def kb_documents(self, name: str) -> list[KBDocument]:
        """The live documents of a knowledge base, by path."""
        row = self._kb_row(name)
        return [KBDocument(path=d["path"], kind=d["kind"], sha256=d["sha256"], size=d["size"], chars=d["chars"],
                           chunks=d["chunks"], metadata=d["metadata"], created_at=d["created_at"],
                           updated_at=d["updated_at"])
                for d in self.store.kb_document_rows(row["id"])]

    # ------------------------------------------------------------ creating / deleting
    def create_kb(self, name: str, embedder: str = embed.DEFAULT, chunk_size: int = chunking.DEFAULT_CHUNK_SIZE,
                  overlap: int = chunking.DEFAULT_OVERLAP, description: str = "") -> KBChange:
        """A new, empty knowledge base (shared: agents in both environments can search it at once)."""
        check_name("knowledge base", name)
        chunking.check_sizes(chunk_size, overlap)
        spec = self._check_embedder(embedder)
        if not isinstance(description, str):
            raise UsageError("description must be text")
        if self.store.kb_rows(name):
            raise Conflict(f"knowledge base {name!r} already exists",
                           f"upload into it (rf kb upload {name} PATH...) or delete it first (rf kb delete {name})")
        with self.store.unit_of_work() as tx:
            tx.knowledge.insert_kb(name=name, embedder=spec, chunk_size=chunk_size, overlap=overlap,
                                 description=description.strip(), now=utcnow())
        return KBChange("created", self.get_kb(name), [
            f"knowledge bases are shared: staging and production agents can search {name!r} as soon as it has "
            "documents"])

    def delete_kb(self, name: str) -> KBChange:
        """Delete a KB with all its documents (production agents that search it start failing at once)."""
        row = self._kb_row(name)
        kb = self._kb_model(row)
        prod = self._production_users(kb)
        warnings = [f"production agents {', '.join(prod)} searched it; their ctx.kb({name!r}) calls now fail"] if prod \
            else []
        with self._kb_lock(row["id"]), self.store.unit_of_work() as tx:
            tx.knowledge.delete_kb(row)
        self.store.kb_drop_cache(row["id"])
        self.store.forget_resource_uses("kb", name)
        return KBChange("deleted", kb, warnings)

    # ------------------------------------------------------------ uploading
    def kb_upload(self, name: str, files: dict[str, bytes] | None = None, metadata: Any = None,
                  batch: str | None = None, spooled: list[str] | None = None) -> KBUploadResult:
        """Extract, chunk, embed and stage files; without ``batch``, commit them at once.

        With ``batch`` (any id the client picked, e.g. ``up_...``), files are
        only staged; :meth:`kb_commit` makes the whole batch live atomically and
        :meth:`kb_abort` drops it. ``spooled`` names files sent earlier in
        pieces with :meth:`kb_upload_piece`.
        """
        started = time.perf_counter()
        row = self._kb_row(name)
        meta = check_metadata(metadata)
        files = dict(files or {})
        for path in spooled or []:
            files[_doc_path(path)] = self._read_spool(batch, path)
        if not files:
            raise UsageError("no files to upload")
        # Refuse bad input before doing any work: types first, sizes next.
        for path, data in files.items():
            extract.file_type(_doc_path(path))
            if not isinstance(data, bytes):
                raise UsageError(f"{path}: file content must be bytes")
            if len(data) > MAX_FILE_BYTES:
                raise PayloadTooLarge(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        own_batch = batch is None
        batch_id = batch or new_id("up")
        if not isinstance(batch_id, str) or not batch_id or len(batch_id) > 100:
            raise UsageError("batch must be a short id string")
        result = KBUploadResult(kb=name, batch=None if own_batch else batch_id, committed=False)
        kb_id = row["id"]
        with self._kb_lock(kb_id):
            try:
                result.files = self._stage_files(self._kb_row(name), batch_id, files, meta)
            except BaseException:
                if own_batch:
                    self.store.kb_discard_staged(kb_id, batch=batch_id)
                else:
                    self.kb_abort(name, batch_id)
                raise
            result.warnings = [w for f in result.files for w in f.warnings]
            if own_batch:
                done = self._commit(row, batch_id)
                result.committed = True
                result.chunks_added, result.chunks_removed = done.chunks_added, done.chunks_removed
                result.warnings += done.warnings
        result.seconds = round(time.perf_counter() - started, 3)
        return result

    def _stage_files(self, row: dict[str, Any], batch: str, files: dict[str, bytes],
                     custom: dict[str, Any]) -> list[KBFileResult]:
        """Extract, chunk and embed every file, then stage the changed ones in one store call.

        Everything that can fail on bad input (extraction, the embedder) runs
        before anything is written.
        """
        kb_id = row["id"]
        named = {_doc_path(p): d for p, d in files.items()}
        live = {d["path"]: d for d in self.store.kb_document_rows(kb_id, paths=list(named))}
        results: list[KBFileResult] = []
        staged: list[dict[str, Any]] = []
        tokens: list[list[str]] = []
        for path, data in named.items():
            sha = hashlib.sha256(data).hexdigest()
            doc = extract.extract(path, data)
            metadata = json.loads(json.dumps({**doc.meta, **custom}))
            old = live.get(path)
            if old is not None and old["sha256"] == sha and old["metadata"] == metadata:
                results.append(KBFileResult(path=path, status="unchanged", kind=doc.kind, chunks=old["chunks"]))
                continue
            chunks = chunking.chunk(doc, row["chunk_size"], row["overlap"])
            toks = [content_tokens(c.text) for c in chunks]
            tokens += toks
            staged.append({"path": path, "kind": doc.kind, "sha256": sha, "size": len(data), "metadata": metadata,
                           "chunks": [(c.text, c.meta or None, len(t)) for c, t in zip(chunks, toks, strict=True)]})
            results.append(KBFileResult(path=path, status="updated" if old else "added", kind=doc.kind,
                                        chunks=len(chunks), warnings=list(doc.warnings)))
        if staged:
            texts = [c[0] for d in staged for c in d["chunks"]]
            vectors = self._embed_chunks(row["embedder"], texts, tokens)
            self.store.kb_stage_documents(kb_id, batch, staged, vectors, _term_arrays(tokens), utcnow())
        return results

    def _embed_chunks(self, spec: str, texts: list[str], tokens: list[list[str]]) -> npt.NDArray[np.float32]:
        embedder = self._embedder(spec)
        if isinstance(embedder, embed.HashingEmbedder):
            return embedder.embed_tokens(tokens)
        if not texts:
            import numpy as np

            return np.zeros((0, 1), dtype=np.float32)
        return embedder.embed(texts)

    def kb_commit(self, name: str, batch: str) -> KBUploadResult:
        """Make every document staged in ``batch`` live, replacing older versions. Atomic."""
        row = self._kb_row(name)
        with self._kb_lock(row["id"]):
            result = self._commit(row, batch)
        self._drop_spool(batch)
        return result

    def _commit(self, row: dict[str, Any], batch: str) -> KBUploadResult:
        kb_id = row["id"]
        # Uploads that died before committing leave staged rows behind: drop the stale ones.
        if any(d["created_at"] < iso(utcnow() - STALE_BATCH) for d in self.store.kb_document_rows(kb_id, state="staged")):
            self.store.kb_discard_staged(kb_id, older_than=utcnow() - STALE_BATCH)
        staged = self.store.kb_document_rows(kb_id, state="staged", batch=batch)
        replaced = self.store.kb_commit_batch(kb_id, batch, utcnow())
        self.store.kb_maybe_sort_terms(kb_id)
        replaced_paths = {d["path"] for d in replaced}
        files = [KBFileResult(path=d["path"], status="updated" if d["path"] in replaced_paths else "added",
                              kind=d["kind"], chunks=d["chunks"]) for d in staged]
        result = KBUploadResult(kb=row["name"], batch=batch, committed=True, files=files,
                                chunks_added=sum(d["chunks"] for d in staged),
                                chunks_removed=sum(d["chunks"] for d in replaced))
        if staged:
            kb = self._kb_model(self._kb_row(row["name"]))
            prod = self._production_users(kb)
            result.warnings.append(
                f"knowledge bases are shared: production agents ({', '.join(prod)}) see these documents now" if prod
                else "knowledge bases are shared: staging and production agents see these documents now")
        return result

    def kb_abort(self, name: str, batch: str) -> dict[str, Any]:
        """Drop everything staged in ``batch`` (an upload that failed or was interrupted)."""
        row = self._kb_row(name)
        with self._kb_lock(row["id"]):
            dropped = self.store.kb_discard_staged(row["id"], batch=batch)
        self._drop_spool(batch)
        return {"kb": name, "batch": batch, "discarded": dropped}

    # Large files through a server: sent in pieces first, assembled at kb_upload.
    def _spool_dir(self, batch: str | None) -> Path:
        if not isinstance(batch, str) or not batch or "/" in batch or batch.startswith("."):
            raise UsageError("pieces need an upload batch id")
        return self.cache_dir / "kb-uploads" / batch

    def kb_upload_piece(self, name: str, batch: str, path: str, index: int, files: dict[str, bytes]) -> dict[str, Any]:
        """Store piece ``index`` of a large file (``files`` = ``{path: bytes}``) until :meth:`kb_upload`."""
        self._kb_row(name)
        path = _doc_path(path)
        extract.file_type(path)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise UsageError("index must be a non-negative integer")
        data = (files or {}).get(path)
        if not isinstance(data, bytes):
            raise UsageError("files must hold this piece's bytes under its path")
        folder = self._spool_dir(batch)
        folder.mkdir(parents=True, exist_ok=True)
        stem = hashlib.sha256(path.encode()).hexdigest()[:32]
        total = sum(p.stat().st_size for p in folder.glob(f"{stem}.*"))
        if total + len(data) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        (folder / f"{stem}.{index:06d}").write_bytes(data)
        return {"path": path, "index": index, "received": total + len(data)}

    def _read_spool(self, batch: str | None, path: str) -> bytes:
        folder = self._spool_dir(batch)
        stem = hashlib.sha256(_doc_path(path).encode()).hexdigest()[:32]
        parts = sorted(folder.glob(f"{stem}.*"))
        if not parts:
            raise NotFound(f"no pieces of {path} were received in batch {batch}")
        for expected, part in enumerate(parts):
            if part.suffix != f".{expected:06d}":
                raise UsageError(f"piece {expected} of {path} is missing", "send every piece, then upload")
        return b"".join(p.read_bytes() for p in parts)

    def _drop_spool(self, batch: str) -> None:
        try:
            folder = self._spool_dir(batch)
        except UsageError:
            return
        shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------ changing
    def kb_remove_document(self, name: str, path: str) -> KBChange:
        """Remove one document (its chunks vanish from searches in both environments at once)."""
        row = self._kb_row(name)
        path = _doc_path(path)
        with self._kb_lock(row["id"]):
            docs = self.store.kb_document_rows(row["id"], path=path)
            if not docs:
                known = [d["path"] for d in self.store.kb_document_rows(row["id"])]
                near = [p for p in known if p.endswith("/" + path.lstrip("./")) or p.endswith(path)]
                hint = (f"did you mean {near[0]}?" if near else
                        f"list them: rf kb show {name}" if known else "the knowledge base is empty")
                raise NotFound(f"knowledge base {name!r} has no document {path!r}", hint)
            self.store.kb_remove_documents(row["id"], docs, utcnow())
        return KBChange("removed", self.get_kb(name), ["the document is gone for staging and production agents"],
                        removed=[path])

    def set_kb_embedder(self, name: str, embedder: str) -> KBChange:
        """Change a KB's embedder: every chunk is re-embedded, then swapped in at once."""
        started = time.perf_counter()
        row = self._kb_row(name)
        spec = self._check_embedder(embedder)
        if spec == row["embedder"]:
            return KBChange("unchanged", self.get_kb(name), [f"{name!r} already uses {spec}"])
        kb_id = row["id"]
        with self._kb_lock(kb_id):
            row = self._kb_row(name)
            total = self.store.kb_chunk_count(kb_id)
            generation = row["generation"] + 1
            table: str | None = None
            dim: int | None = None
            done = 0
            try:
                for batch in self.store.kb_chunk_batches(kb_id, REEMBED_BATCH):
                    texts = [r[3] for r in batch]
                    vectors = self._embed_chunks(spec, texts, [content_tokens(t) for t in texts])
                    if table is None:
                        dim = int(vectors.shape[1])
                        table = self.store.kb_new_vectors_table(kb_id, generation, dim)
                    self.store.kb_fill_vectors(table, batch, vectors)
                    done += len(batch)
                self.store.kb_swap_embedder(kb_id, embedder=spec, dim=dim, table=table, generation=generation,
                                            expected_chunks=total, now=utcnow())
            except BaseException:
                if table is not None:
                    self.store.kb_drop_table(table)
                raise
        kb = self.get_kb(name)
        return KBChange("embedder", kb, [f"re-embedded {done} chunks with {spec}; searches from staging and "
                                         "production agents use it now"], reembedded=done,
                        seconds=round(time.perf_counter() - started, 3))

    # ------------------------------------------------------------ searching
    def search_kb(self, name: str, query: str, k: int = 5, filter: Any = None,
                  call: HostCall | None = None) -> KBSearchResult:
        """Hybrid search: embeddings + BM25 + metadata filters (``{key: value}`` or ``["key=value"]``).

        From an agent (``call``), a provider embedding gets at most the time the
        execution has left, and the provider's key is redacted from its trace."""
        started = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise UsageError("the search query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise UsageError(f"the search query is longer than {MAX_QUERY_CHARS} characters")
        if isinstance(k, bool) or not isinstance(k, int) or not (1 <= k <= MAX_K):
            raise UsageError(f"k must be between 1 and {MAX_K}")
        filters = parse_pairs(filter, "--filter")
        row = self._kb_row(name)
        hits: list[KBHit] = []
        if row["vectors"]:
            embedder = self._embedder(row["embedder"], call)
            vector = embedder.embed([query])[0]
            if len(vector) != row["dim"]:
                raise Conflict(f"the embedder returned {len(vector)}-dimensional vectors but {name!r} stores "
                               f"{row['dim']}-dimensional ones", f"re-embed: rf kb set-embedder {name} SPEC")
            try:
                rows = self.store.kb_search_rows(row, [float(x) for x in vector], query_terms(query), k, filters,
                                                 VECTOR_WEIGHT)
            except Exception:
                # A re-embed may have swapped the vector table between reading the KB
                # row and the query; if so, search once more against the new one.
                fresh = self._kb_row(name)
                if fresh["vectors"] == row["vectors"] or fresh["dim"] != row["dim"]:
                    raise
                rows = self.store.kb_search_rows(fresh, [float(x) for x in vector], query_terms(query), k, filters,
                                                 VECTOR_WEIGHT)
            for r in rows:
                meta = {**r["doc_meta"], **r["chunk_meta"], "type": r["kind"]}
                hits.append(KBHit(text=r["text"], path=r["path"], chunk=r["chunk"], score=round(r["score"], 6),
                                  vector_score=round(r["vector_score"], 6),
                                  lexical_score=round(r["lexical_score"], 6), metadata=meta))
        return KBSearchResult(kb=name, query=query, k=k, embedder=row["embedder"], hits=hits,
                              took_ms=round((time.perf_counter() - started) * 1000, 2))

    @host_method("kb.search")
    def kb_search_host(self, call: HostCall, name: str, query: str, k: int = 5, filter: Any = None) -> list[dict[str, Any]]:
        """``ctx.kb(name).search``: the same KB whatever the environment (KBs are shared)."""
        call.annotate(kb=name, k=k, query=query[:500] if isinstance(query, str) else query,
                      filter=filter)
        result = self.search_kb(name, query, k, filter, call)
        call.annotate(results=len(result.hits), embedder=result.embedder,
                      top_score=result.hits[0].score if result.hits else None)
        self.uses.note("kb", name, call)
        from rf.models import to_dict

        return [to_dict(h) for h in result.hits]


def _term_arrays(tokens: list[list[str]]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """``(term ids, chunk index, tf)`` columns for the term table."""
    import numpy as np

    terms: list[int] = []
    local: list[int] = []
    tfs: list[int] = []
    for i, toks in enumerate(tokens):
        counts = Counter(map(term_id, toks))
        terms += counts.keys()
        tfs += counts.values()
        local += [i] * len(counts)
    return (np.asarray(terms, dtype=np.int32), np.asarray(local, dtype=np.int64), np.asarray(tfs, dtype=np.int32))
