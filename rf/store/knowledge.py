"""SQL for knowledge bases: documents, chunks, vectors, the term table, hybrid search.

Layout (see migration "knowledge bases and data sources"):

- ``kbs`` — one row per KB (shared: no environment column): its embedder,
  vector size, chunking parameters and id counters.
- ``kb_documents`` — one row per uploaded file; ``state`` is ``staged`` while
  an upload is in flight and ``live`` once committed. A changed file is staged
  next to its live predecessor and swapped in one transaction, so a search
  never sees half a document.
- ``kb_chunks`` — chunk text, index, metadata and length, for every KB.
- ``kb_<id>_v<generation>`` — per KB: ``(chunk_id, doc_id, tokens,
  embedding FLOAT[dim])``. One table per KB because an ``ARRAY`` column has
  one fixed size and KBs differ (384 for the offline embedder, 1536 for some
  provider models); the generation changes when the embedder does (the new
  table is filled first, then swapped in).
- ``kb_<id>_terms`` — per KB: ``(term, chunk_id, tf)``, the lexical index
  (term = CRC-32 id of a content token). It is periodically rewritten sorted
  by term: DuckDB keeps min/max per row group, so a sorted table lets a
  query for five terms skip almost every row group.

Search is one SQL statement: cosine similarity of every live (and filtered)
chunk's vector with the query's, BM25 over the term-table rows of the query
terms, and the two combined (see :meth:`KnowledgeMixin.kb_search_rows`).

Embeddings arrive as numpy float32 matrices and enter DuckDB as one
registered numpy column per dimension, assembled into the ``FLOAT[dim]``
array in SQL: converting Python lists of floats costs ~100× more.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import TYPE_CHECKING, Any

from rf.ids import iso

if TYPE_CHECKING:
    import contextlib

    import duckdb
    import numpy as np
    import numpy.typing as npt

#: BM25 parameters (the usual ones).
BM25_K1 = 1.2
BM25_B = 0.75
#: Rewrite the term table sorted when it has grown by this factor since the last sort.
RESORT_GROWTH = 1.5
#: Below this many rows, vectors go in as one flat column (see insert_vectors).
SMALL_INSERT = 200
#: In-memory copies of vector tables (see KnowledgeMixin._vector_source).
CACHE_DB = "rf_kb_cache"
CACHE_MAX_BYTES = 512 * 1024 * 1024

_KB_COLUMNS = ("id, name, embedder, dim, vectors, generation, chunk_size, overlap, description, created_at, "
               "updated_at")
_DOC_COLUMNS = ("doc_id, path, kind, sha256, size, chars, chunks, first_chunk, metadata, state, batch, created_at, "
                "updated_at")


def vectors_table(kb_id: int, generation: int) -> str:
    return f"kb_{int(kb_id)}_v{int(generation)}"


def terms_table(kb_id: int) -> str:
    return f"kb_{int(kb_id)}_terms"


class KnowledgeMixin:
    """Mixed into :class:`rf.store.Store`."""

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    if TYPE_CHECKING:

        def transaction(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]: ...

    # ------------------------------------------------------------ knowledge bases
    @staticmethod
    def _kb_row(r: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": r[0], "name": r[1], "embedder": r[2], "dim": r[3], "vectors": r[4], "generation": r[5],
                "chunk_size": r[6], "overlap": r[7], "description": r[8], "created_at": iso(r[9]),
                "updated_at": iso(r[10])}

    def kb_rows(self, name: str | None = None, cur: duckdb.DuckDBPyConnection | None = None) -> list[dict[str, Any]]:
        c = cur or self.cursor()
        sql = f"SELECT {_KB_COLUMNS} FROM kbs"
        params: list[Any] = []
        if name is not None:
            sql += " WHERE name = ?"
            params.append(name)
        return [self._kb_row(r) for r in c.execute(sql + " ORDER BY name", params).fetchall()]

    def kb_stats(self) -> dict[int, dict[str, int]]:
        """Live documents, chunks and bytes per KB id."""
        rows = self.cursor().execute(
            "SELECT kb_id, count(*), coalesce(sum(chunks), 0), coalesce(sum(size), 0) FROM kb_documents "
            "WHERE state = 'live' GROUP BY kb_id").fetchall()
        return {r[0]: {"documents": r[1], "chunks": int(r[2]), "size_bytes": int(r[3])} for r in rows}

    def insert_kb(self, *, name: str, embedder: str, chunk_size: int, overlap: int,
                  description: str, now: dt.datetime) -> int:
        cur = self._write_cursor()
        row = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM kbs").fetchone()
        kb_id = int(row[0]) if row else 1
        cur.execute(
            "INSERT INTO kbs (id, name, embedder, dim, vectors, generation, chunk_size, overlap, description, "
            "next_chunk, next_doc, terms_sorted, created_at, updated_at) "
            "VALUES (?, ?, ?, NULL, NULL, 0, ?, ?, ?, 0, 0, 0, ?, ?)",
            [kb_id, name, embedder, chunk_size, overlap, description, now, now])
        cur.execute(f"CREATE TABLE {terms_table(kb_id)} (term INTEGER NOT NULL, chunk_id BIGINT NOT NULL, "
                    "tf INTEGER NOT NULL)")
        return kb_id

    def delete_kb(self, kb: dict[str, Any]) -> None:
        cur = self._write_cursor()
        kb_id = kb["id"]
        self._kb_vectors_changed(kb_id)
        if kb["vectors"]:
            cur.execute(f"DROP TABLE IF EXISTS {kb['vectors']}")
        cur.execute(f"DROP TABLE IF EXISTS {terms_table(kb_id)}")
        cur.execute("DELETE FROM kb_chunks WHERE kb_id = ?", [kb_id])
        cur.execute("DELETE FROM kb_documents WHERE kb_id = ?", [kb_id])
        cur.execute("DELETE FROM kbs WHERE id = ?", [kb_id])

    def touch_kb(self, cur: duckdb.DuckDBPyConnection, kb_id: int, now: dt.datetime) -> None:
        cur.execute("UPDATE kbs SET updated_at = ? WHERE id = ?", [now, kb_id])

    def _ensure_vectors(self, cur: duckdb.DuckDBPyConnection, kb_id: int, dim: int) -> str:
        """The KB's vector table, created (with the dimension of its first embeddings) if needed."""
        row = cur.execute("SELECT dim, vectors, generation FROM kbs WHERE id = ?", [kb_id]).fetchone()
        if row is None:
            from rf.errors import NotFound

            raise NotFound("the knowledge base was deleted meanwhile")
        if row[1] is not None:
            if row[0] != dim:
                from rf.errors import Conflict

                raise Conflict(f"the embedder returned {dim}-dimensional vectors but this knowledge base stores "
                               f"{row[0]}-dimensional ones (did the provider's model change?)",
                               "re-embed everything with: rf kb set-embedder NAME SPEC")
            return str(row[1])
        table = vectors_table(kb_id, row[2])
        cur.execute(f"CREATE TABLE {table} (chunk_id BIGINT NOT NULL, doc_id BIGINT NOT NULL, "
                    f"tokens INTEGER NOT NULL, embedding FLOAT[{int(dim)}] NOT NULL)")
        cur.execute("UPDATE kbs SET dim = ?, vectors = ? WHERE id = ?", [dim, table, kb_id])
        return table

    # ------------------------------------------------------------ documents
    def _doc_row(self, r: tuple[Any, ...]) -> dict[str, Any]:
        return {"doc_id": r[0], "path": r[1], "kind": r[2], "sha256": r[3], "size": r[4], "chars": r[5],
                "chunks": r[6], "first_chunk": r[7], "metadata": json.loads(r[8]), "state": r[9], "batch": r[10],
                "created_at": iso(r[11]), "updated_at": iso(r[12])}

    def kb_document_rows(self, kb_id: int, *, path: str | None = None, paths: list[str] | None = None,
                         state: str | None = "live",
                         batch: str | None = None, cur: duckdb.DuckDBPyConnection | None = None) -> list[dict[str, Any]]:
        c = cur or self.cursor()
        where: list[str] = ["kb_id = ?"]
        params: list[Any] = [kb_id]
        if path is not None:
            where.append("path = ?")
            params.append(path)
        if paths is not None:
            if not paths:
                return []
            where.append(f"path IN ({', '.join('?' for _ in paths)})")
            params += list(paths)
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if batch is not None:
            where.append("batch = ?")
            params.append(batch)
        sql = f"SELECT {_DOC_COLUMNS} FROM kb_documents WHERE {' AND '.join(where)} ORDER BY path, doc_id"
        return [self._doc_row(r) for r in c.execute(sql, params).fetchall()]

    def kb_stage_documents(self, kb_id: int, batch: str, docs: list[dict[str, Any]],
                           vectors: npt.NDArray[np.float32],
                           terms: tuple[npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int32]],
                           now: dt.datetime) -> list[int]:
        """Insert documents as ``staged`` — rows, chunks, vectors, terms — in one transaction.

        Each doc is ``{path, kind, sha256, size, metadata, chunks: [(text,
        meta, tokens)]}``; ``vectors`` has one row per chunk of all docs, in
        order; ``terms`` are parallel arrays ``(term, chunk position among all
        chunks, tf)``. A staged copy of the same path in the same batch is
        replaced. Returns the doc ids. Nothing is visible to searches until
        :meth:`kb_commit_batch`. One transaction and one insert per table for
        the whole call keeps the per-file cost to a few hundred microseconds.
        """
        import numpy as np

        counts = [len(d["chunks"]) for d in docs]
        n = sum(counts)
        with self.transaction() as cur:
            earlier = [d for d in self.kb_document_rows(kb_id, state="staged", batch=batch, cur=cur)
                       if d["path"] in {x["path"] for x in docs}]
            self._delete_documents(cur, kb_id, earlier)
            vec_table = self._ensure_vectors(cur, kb_id, int(vectors.shape[1])) if n else ""
            row = cur.execute(
                "UPDATE kbs SET next_chunk = next_chunk + ?, next_doc = next_doc + ? WHERE id = ? "
                "RETURNING next_chunk, next_doc", [n, len(docs), kb_id]).fetchone()
            if row is None:
                from rf.errors import NotFound

                raise NotFound("the knowledge base was deleted meanwhile")
            first, first_doc = int(row[0]) - n, int(row[1]) - len(docs)
            doc_ids = list(range(first_doc, first_doc + len(docs)))
            starts: Any = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) + first if docs else []
            self._register_insert(cur, "kb_documents", {
                "doc_id": np.asarray(doc_ids, dtype=np.int64),
                "path": np.array([d["path"] for d in docs], dtype=object),
                "kind": np.array([d["kind"] for d in docs], dtype=object),
                "sha256": np.array([d["sha256"] for d in docs], dtype=object),
                "size": np.array([d["size"] for d in docs], dtype=np.int64),
                "chars": np.array([sum(len(c[0]) for c in d["chunks"]) for d in docs], dtype=np.int64),
                "chunks": np.asarray(counts, dtype=np.int32),
                "first_chunk": np.asarray(starts, dtype=np.int64),
                "metadata": np.array([json.dumps(d["metadata"], ensure_ascii=False) for d in docs], dtype=object),
            }, f"SELECT {int(kb_id)}, doc_id, path, kind, sha256, size, chars, chunks, first_chunk, metadata, "
               f"'staged', {_literal(batch)}, TIMESTAMP '{now.isoformat(sep=' ')}', "
               f"TIMESTAMP '{now.isoformat(sep=' ')}' FROM {{src}}")
            if n:
                all_chunks = [c for d in docs for c in d["chunks"]]
                ids = np.arange(first, first + n, dtype=np.int64)
                owners = np.repeat(np.asarray(doc_ids, dtype=np.int64), counts)
                tokens = np.array([c[2] for c in all_chunks], dtype=np.int32)
                self._register_insert(cur, "kb_chunks", {
                    "chunk_id": ids,
                    "doc_id": owners,
                    "idx": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
                    "text": np.array([c[0] for c in all_chunks], dtype=object),
                    "meta": np.array([json.dumps(c[1], ensure_ascii=False) if c[1] else None for c in all_chunks],
                                     dtype=object),
                    "tokens": tokens,
                }, f"SELECT {int(kb_id)}, chunk_id, doc_id, idx, text, meta, tokens FROM {{src}}")
                self.insert_vectors(cur, vec_table, ids, owners, tokens, vectors)
                term, position, tf = terms
                if len(term):
                    self._register_insert(cur, terms_table(kb_id), {
                        "term": term, "chunk_id": position.astype(np.int64) + first, "tf": tf,
                    }, "SELECT term, chunk_id, tf FROM {src}")
        self._kb_vectors_changed(kb_id)
        return doc_ids

    @staticmethod
    def _register_insert(cur: duckdb.DuckDBPyConnection, table: str, columns: dict[str, Any], select: str) -> None:
        name = "_rf_insert_src"
        cur.register(name, columns)
        try:
            cur.execute(f"INSERT INTO {table} {select.format(src=name)}")
        finally:
            cur.unregister(name)

    def insert_vectors(self, cur: duckdb.DuckDBPyConnection, table: str, chunk_ids: npt.NDArray[np.int64],
                       doc_ids: npt.NDArray[np.int64], tokens: npt.NDArray[np.int32],
                       vectors: npt.NDArray[np.float32]) -> None:
        """Rows of a vector table from numpy columns; the array is assembled in SQL (fast path)."""
        import numpy as np

        dim = int(vectors.shape[1])
        n = int(vectors.shape[0])
        if n < SMALL_INSERT:
            # Few rows: one flat column regrouped in SQL beats registering `dim` columns.
            name = "_rf_insert_flat"
            cur.register(name, {"i": np.arange(n * dim, dtype=np.int64),
                                "v": np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)})
            try:
                self._register_insert(cur, table, {"r": np.arange(n, dtype=np.int64), "chunk_id": chunk_ids,
                                                   "doc_id": doc_ids, "tokens": tokens},
                                      f"SELECT s.chunk_id, s.doc_id, s.tokens, x.e FROM {{src}} s JOIN "
                                      f"(SELECT i // {dim} AS r, list(v ORDER BY i)::FLOAT[{dim}] AS e "
                                      f"FROM {name} GROUP BY 1) x USING (r)")
            finally:
                cur.unregister(name)
            return
        cols: dict[str, Any] = {"chunk_id": chunk_ids, "doc_id": doc_ids, "tokens": tokens}
        for j in range(dim):
            cols[f"e{j}"] = np.ascontiguousarray(vectors[:, j], dtype=np.float32)
        array = "[" + ", ".join(f"e{j}" for j in range(dim)) + f"]::FLOAT[{dim}]"
        self._register_insert(cur, table, cols, f"SELECT chunk_id, doc_id, tokens, {array} FROM {{src}}")

    def _delete_documents(self, cur: duckdb.DuckDBPyConnection, kb_id: int, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        self._kb_vectors_changed(kb_id)
        row = cur.execute("SELECT vectors FROM kbs WHERE id = ?", [kb_id]).fetchone()
        vec_table = row[0] if row else None
        ids = [d["doc_id"] for d in docs]
        ranges = [(d["first_chunk"], d["first_chunk"] + d["chunks"] - 1) for d in docs if d["chunks"]]
        if ranges:
            cond = " OR ".join("chunk_id BETWEEN ? AND ?" for _ in ranges)
            flat = [x for r in ranges for x in r]
            cur.execute(f"DELETE FROM {terms_table(kb_id)} WHERE {cond}", flat)
            if vec_table:
                cur.execute(f"DELETE FROM {vec_table} WHERE {cond}", flat)
            cur.execute(f"DELETE FROM kb_chunks WHERE kb_id = ? AND ({cond})", [kb_id, *flat])
        marks = ", ".join("?" for _ in ids)
        cur.execute(f"DELETE FROM kb_documents WHERE kb_id = ? AND doc_id IN ({marks})", [kb_id, *ids])

    def kb_commit_batch(self, kb_id: int, batch: str, now: dt.datetime) -> list[dict[str, Any]]:
        """Make a batch's staged documents live, replacing live ones with the same path. Atomic.

        Returns the live documents that were replaced."""
        with self.transaction() as cur:
            staged = self.kb_document_rows(kb_id, state="staged", batch=batch, cur=cur)
            replaced = self.kb_document_rows(kb_id, paths=[d["path"] for d in staged], state="live", cur=cur)
            self._delete_documents(cur, kb_id, replaced)
            cur.execute("UPDATE kb_documents SET state = 'live', batch = NULL, updated_at = ? "
                        "WHERE kb_id = ? AND batch = ? AND state = 'staged'", [now, kb_id, batch])
            if staged or replaced:
                self.touch_kb(cur, kb_id, now)
        return replaced

    def kb_discard_staged(self, kb_id: int, *, batch: str | None = None, older_than: dt.datetime | None = None) -> int:
        """Drop staged documents of a batch (or every batch staged before ``older_than``)."""
        with self.transaction() as cur:
            docs = [d for d in self.kb_document_rows(kb_id, state="staged", batch=batch, cur=cur)
                    if older_than is None or d["created_at"] < iso(older_than)]
            self._delete_documents(cur, kb_id, docs)
        return len(docs)

    def kb_update_document_metadata(self, kb_id: int, doc_id: int, metadata: dict[str, Any],
                                    now: dt.datetime) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE kb_documents SET metadata = ?, updated_at = ? WHERE kb_id = ? AND doc_id = ?",
                        [json.dumps(metadata, ensure_ascii=False), now, kb_id, doc_id])
            self.touch_kb(cur, kb_id, now)

    def kb_remove_documents(self, kb_id: int, docs: list[dict[str, Any]], now: dt.datetime) -> None:
        with self.transaction() as cur:
            self._delete_documents(cur, kb_id, docs)
            self.touch_kb(cur, kb_id, now)

    # ------------------------------------------------------------ maintenance
    def kb_maybe_sort_terms(self, kb_id: int) -> bool:
        """Rewrite the term table sorted by term once it grew enough since the last sort.

        Sorted, DuckDB's per-row-group min/max let a few-term query skip most
        of the table; appends since the last sort only cost a scan of the tail.
        Growth-triggered (×1.5), so the total rewrite work stays proportional
        to the table's final size.
        """
        table = terms_table(kb_id)
        with self.transaction() as cur:
            row = cur.execute(f"SELECT (SELECT count(*) FROM {table}), terms_sorted FROM kbs WHERE id = ?",
                              [kb_id]).fetchone()
            if row is None:
                return False
            total, sorted_rows = int(row[0]), int(row[1])
            if total < 50_000 or total < sorted_rows * RESORT_GROWTH:
                return False
            cur.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {table} ORDER BY term, chunk_id")
            cur.execute("UPDATE kbs SET terms_sorted = ? WHERE id = ?", [total, kb_id])
        return True

    # ------------------------------------------------------------ re-embedding
    def kb_chunk_batches(self, kb_id: int, batch_size: int = 2000) -> Any:
        """Every chunk of a KB (staged included) as ``(chunk_ids, doc_ids, tokens, texts)`` batches."""
        last = -1
        cur = self.cursor()
        while True:
            rows = cur.execute(
                "SELECT chunk_id, doc_id, tokens, text FROM kb_chunks WHERE kb_id = ? AND chunk_id > ? "
                "ORDER BY chunk_id LIMIT ?", [kb_id, last, batch_size]).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    def kb_chunk_count(self, kb_id: int) -> int:
        row = self.cursor().execute("SELECT count(*) FROM kb_chunks WHERE kb_id = ?", [kb_id]).fetchone()
        return int(row[0]) if row else 0

    def kb_new_vectors_table(self, kb_id: int, generation: int, dim: int) -> str:
        table = vectors_table(kb_id, generation)
        with self.transaction() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} (chunk_id BIGINT NOT NULL, doc_id BIGINT NOT NULL, "
                        f"tokens INTEGER NOT NULL, embedding FLOAT[{int(dim)}] NOT NULL)")
        return table

    def kb_fill_vectors(self, table: str, rows: list[tuple[Any, ...]], vectors: npt.NDArray[np.float32]) -> None:
        import numpy as np

        with self.transaction() as cur:
            self.insert_vectors(cur, table, np.array([r[0] for r in rows], dtype=np.int64),
                                np.array([r[1] for r in rows], dtype=np.int64),
                                np.array([r[2] for r in rows], dtype=np.int32), vectors)

    def kb_drop_table(self, table: str) -> None:
        with self.transaction() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")

    def kb_swap_embedder(self, kb_id: int, *, embedder: str, dim: int | None, table: str | None, generation: int,
                         expected_chunks: int, now: dt.datetime) -> None:
        """Point the KB at its re-embedded vector table and drop the old one (atomic)."""
        with self.transaction() as cur:
            row = cur.execute("SELECT vectors FROM kbs WHERE id = ?", [kb_id]).fetchone()
            if row is None:
                from rf.errors import NotFound

                raise NotFound("the knowledge base was deleted meanwhile")
            now_chunks = cur.execute("SELECT count(*) FROM kb_chunks WHERE kb_id = ?", [kb_id]).fetchone()
            if now_chunks is None or int(now_chunks[0]) != expected_chunks:
                from rf.errors import Conflict

                raise Conflict("documents changed while re-embedding; nothing was changed", "run the command again")
            old = row[0]
            self._kb_vectors_changed(kb_id)
            cur.execute("UPDATE kbs SET embedder = ?, dim = ?, vectors = ?, generation = ?, updated_at = ? "
                        "WHERE id = ?", [embedder, dim, table, generation, now, kb_id])
            if old and old != table:
                cur.execute(f"DROP TABLE IF EXISTS {old}")

    # ------------------------------------------------------------ in-memory vector cache
    def _kb_vectors_changed(self, kb_id: int) -> None:
        """Any write to a KB's vector rows: cached copies of them are stale from now on."""
        gens: dict[int, int] = self.__dict__.setdefault("_kb_vec_gen", {})
        gens[kb_id] = gens.get(kb_id, 0) + 1

    def _vector_source(self, kb: dict[str, Any]) -> str:
        """The table a search scans for a KB's vectors: an in-memory copy once the KB is searched repeatedly.

        On disk DuckDB stores the FLOAT[dim] arrays ALPRD-compressed, and
        decompressing them is most of a search's cost (~3× a scan of an
        uncompressed in-memory copy). So the process that owns the store
        (``rf serve``) keeps an in-memory copy (``ATTACH ':memory:'``) of the
        vector tables it searches, rebuilt lazily after any write to the KB.
        The first search of a version scans the disk (a one-shot CLI search
        never pays for a copy); the second builds the copy. KBs whose vectors
        exceed :data:`CACHE_MAX_BYTES` are always scanned on disk.
        """
        kb_id, table = int(kb["id"]), str(kb["vectors"])
        gens: dict[int, int] = self.__dict__.setdefault("_kb_vec_gen", {})
        key = (table, gens.get(kb_id, 0))
        cache: dict[int, tuple[tuple[str, int], str | None, int]] = self.__dict__.setdefault("_kb_vec_cache", {})
        found = cache.get(kb_id)
        if found is not None and found[0] == key and found[1] is not None:
            return found[1]
        seen = found[2] + 1 if found is not None and found[0] == key else 1
        if seen < 2:
            cache[kb_id] = (key, None, seen)
            return table
        lock = self.__dict__.setdefault("_kb_cache_lock", threading.Lock())
        with lock:
            found = cache.get(kb_id)
            if found is not None and found[0] == key and found[1] is not None:
                return found[1]
            cur = self.cursor()
            row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
            size = (int(row[0]) if row else 0) * int(kb["dim"] or 0) * 4
            if size > CACHE_MAX_BYTES:
                cache[kb_id] = (key, None, -(10**9))  # never cached
                return table
            name = f"{CACHE_DB}.kb_{kb_id}"
            try:
                cur.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {CACHE_DB}")
                cur.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT chunk_id, doc_id, tokens, embedding FROM {table}")
            except Exception:  # noqa: BLE001 - the cache is an optimisation: fall back to the disk
                return table
            cache[kb_id] = (key, name, seen)
            return name

    def kb_drop_cache(self, kb_id: int) -> None:
        self._kb_vectors_changed(kb_id)
        cache: dict[int, Any] = self.__dict__.setdefault("_kb_vec_cache", {})
        if cache.pop(kb_id, None) is not None:
            try:
                self.cursor().execute(f"DROP TABLE IF EXISTS {CACHE_DB}.kb_{int(kb_id)}")
            except Exception:  # noqa: BLE001 - nothing to drop
                pass

    # ------------------------------------------------------------ search
    def kb_search_rows(
        self,
        kb: dict[str, Any],
        query_vector: list[float],
        terms: list[int],
        k: int,
        filters: dict[str, list[str]],
        vector_weight: float,
    ) -> list[dict[str, Any]]:
        """Top ``k`` live chunks by ``w·cosine + (1-w)·BM25/max(BM25)``, with both parts.

        The vector part covers every live chunk that passes the filters; the
        lexical part is BM25 (k1=1.2, b=0.75, document length = content
        tokens) over the term-table rows of the query's terms, normalised by
        the best lexical score of this query so both parts lie in [0, 1].
        """
        if not kb["vectors"]:
            return []
        table = self._vector_source(kb)
        dim = int(kb["dim"])
        kb_id = int(kb["id"])
        doc_where, doc_params = _filter_sql(filters)
        w = float(vector_weight)
        # The cosine is computed in the scan, before any join: moving FLOAT[dim]
        # arrays through a hash join costs more than the similarity itself.
        sql = f"""
        WITH docs AS (
            SELECT doc_id FROM kb_documents WHERE kb_id = $kb AND state = 'live'{doc_where}
        ),
        vec AS MATERIALIZED (
            SELECT chunk_id, doc_id, tokens, array_cosine_similarity(embedding, $q::FLOAT[{dim}]) AS vs
            FROM {table}
        ),
        live AS MATERIALIZED (SELECT chunk_id, tokens, vs FROM vec WHERE doc_id IN (SELECT doc_id FROM docs)),
        stats AS (SELECT greatest(count(*), 1)::DOUBLE AS n, greatest(avg(tokens), 1)::DOUBLE AS avgdl FROM live),
        hits AS (
            SELECT t.chunk_id, t.term, t.tf, l.tokens FROM {terms_table(kb_id)} t JOIN live l USING (chunk_id)
            WHERE t.term IN (SELECT unnest($terms::INTEGER[]))
        ),
        df AS (SELECT term, count(*)::DOUBLE AS df FROM hits GROUP BY term),
        lex AS MATERIALIZED (
            SELECT h.chunk_id,
                   sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))
                       * h.tf * ({BM25_K1} + 1)
                       / (h.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * h.tokens / stats.avgdl))) AS ls
            FROM hits h JOIN df USING (term) CROSS JOIN stats
            GROUP BY h.chunk_id
        ),
        best AS (SELECT max(ls) AS m FROM lex),
        scored AS (
            SELECT l.chunk_id, l.vs, coalesce(x.ls, 0) AS ls, coalesce(x.ls / nullif(best.m, 0), 0) AS ln
            FROM live l LEFT JOIN lex x USING (chunk_id) CROSS JOIN best
        )
        SELECT chunk_id, vs, ln, ls, {w} * vs + {1 - w} * ln AS score
        FROM scored WHERE {w} * vs + {1 - w} * ln > 0 ORDER BY score DESC, chunk_id LIMIT $k
        """
        params: dict[str, Any] = {"kb": kb_id, "q": query_vector, "terms": terms, "k": k, **doc_params}
        top = self.cursor().execute(sql, params).fetchall()
        if not top:
            return []
        ids = [r[0] for r in top]
        # One point lookup per hit (UNION ALL): an IN list becomes a join that
        # reads every chunk's text, while `chunk_id = ?` is pushed into the scan.
        lookup = " UNION ALL ".join(
            "SELECT chunk_id, doc_id, idx, text, meta FROM kb_chunks WHERE kb_id = ? AND chunk_id = ?" for _ in ids)
        chunk_rows = self.cursor().execute(lookup, [x for i in ids for x in (kb_id, i)]).fetchall()
        doc_ids = sorted({r[1] for r in chunk_rows})
        docs = {r[0]: r for r in self.cursor().execute(
            f"SELECT doc_id, path, kind, metadata FROM kb_documents WHERE kb_id = ? AND doc_id IN "
            f"({', '.join('?' for _ in doc_ids)})", [kb_id, *doc_ids]).fetchall()} if doc_ids else {}
        details = {r[0]: (r[0], r[2], r[3], r[4], *docs[r[1]][1:]) for r in chunk_rows if r[1] in docs}
        out = []
        for chunk_id, vs, ln, ls, score in top:
            d = details.get(chunk_id)
            if d is None:  # replaced between the two statements: skip rather than fail
                continue
            out.append({"chunk_id": chunk_id, "chunk": d[1], "text": d[2],
                        "chunk_meta": json.loads(d[3]) if d[3] else {}, "path": d[4], "kind": d[5],
                        "doc_meta": json.loads(d[6]), "vector_score": float(vs), "lexical_score": float(ln),
                        "bm25": float(ls), "score": float(score)})
        return out


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_pointer(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _filter_sql(filters: dict[str, list[str]]) -> tuple[str, dict[str, Any]]:
    """``AND ...`` conditions on kb_documents for ``{key: [values]}`` (values of one key are OR-ed).

    ``path`` matches the document path (a glob when it contains ``*?[``),
    ``type`` the document type; any other key a metadata value (as text).
    """
    parts: list[str] = []
    params: dict[str, Any] = {}
    for i, (key, values) in enumerate(sorted(filters.items())):
        alts = []
        for j, value in enumerate(values):
            p = f"f{i}_{j}"
            params[p] = value
            if key == "path":
                alts.append(f"path GLOB ${p}" if any(c in value for c in "*?[") else f"path = ${p}")
            elif key == "type":
                alts.append(f"kind = ${p}")
            else:
                params[f"k{i}"] = _json_pointer(key)
                alts.append(f"json_extract_string(metadata, $k{i}) = ${p}")
        parts.append("(" + " OR ".join(alts) + ")")
    return "".join(f" AND {p}" for p in parts), params
