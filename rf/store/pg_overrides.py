"""Store methods whose DuckDB SQL has no mechanical PostgreSQL translation, rewritten.

:class:`PgOverrides` comes first in :class:`rf.store.pg.PgStore`'s bases, so each method here
replaces the mixin method of the same name (same signature, same result). Everything else runs
the mixins' own SQL through rf.store.pg_sql.translate.

- sessions: ``QUALIFY`` (newest turns, latest memory row per key) → window functions and
  ``DISTINCT ON`` (``arg_max`` is defined in the database: rf.store.pg_sql.PG_FUNCTIONS);
- the file: no file to measure (``pg_database_size``), no ``CHECKPOINT`` to run;
- knowledge bases: numpy registrations → ``COPY``; ``FLOAT[dim]`` vectors → pgvector's
  ``vector(dim)`` or float4 ``bytea``; ``GLOB`` and ``json_extract_string`` filters →
  regular expressions and ``jsonb`` paths; the search: candidates (live chunks that pass the
  filters) and their cosine from PostgreSQL (pgvector) or numpy (bytea), BM25 over the term
  table's rows of the query terms, combined exactly as the DuckDB statement does.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import TYPE_CHECKING, Any

from rf.ids import datetime_of_micros
from rf.store.knowledge import BM25_B, BM25_K1, terms_table, vectors_table

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from rf.store.pg import PgCursor


class PgOverrides:
    """Mixed first into :class:`rf.store.pg.PgStore`."""

    if TYPE_CHECKING:
        vector_mode: str

        def cursor(self) -> PgCursor: ...
        def flush(self) -> None: ...
        def transaction(self) -> Any: ...
        def _kb_vectors_changed(self, kb_id: int) -> None: ...
        def _write_cursor(self) -> PgCursor: ...

    # ------------------------------------------------------------ sessions
    def session_messages(
        self, env: str, session_id: str, agent: str, *, limit: int | None = None
    ) -> list[tuple[int, str, Any, str | None, _dt.datetime]]:
        if limit == 0:
            return []
        self.flush()
        where = "env = ? AND session_id = ? AND agent = ?"
        params: list[Any] = [env, session_id, agent]
        if limit is None:
            sql = f"SELECT seq, count, messages, execution_id FROM session_turns WHERE {where} ORDER BY seq"
        else:
            sql = (f"SELECT seq, count, messages, execution_id FROM (SELECT seq, count, messages, execution_id,"
                   f" sum(count) OVER (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING) - count AS newer"
                   f" FROM session_turns WHERE {where}) t WHERE newer < ? ORDER BY seq")
            params.append(limit)
        rows = self.cursor().execute(sql, params).fetchall()
        out: list[tuple[int, str, Any, str | None, _dt.datetime]] = []
        for seq, _count, messages, execution_id in rows:
            for i, (role, content, at_us) in enumerate(json.loads(messages)):
                out.append((seq + i, role, content, execution_id, datetime_of_micros(at_us)))
        return out[-limit:] if limit is not None else out

    def memory_items(
        self, env: str, prefix: str = "", *, limit: int | None = None, values: bool = True
    ) -> list[tuple[str, str | None, int, _dt.datetime, str | None, str | None]]:
        self.flush()
        sql = f"""SELECT key, {'value' if values else 'NULL'}, octet_length(value), written_at, agent, execution_id
                 FROM (SELECT DISTINCT ON (key) * FROM memory WHERE env = ? AND starts_with(key, ?)
                       ORDER BY key, seq DESC) latest
                 WHERE value IS NOT NULL ORDER BY key"""
        params: list[Any] = [env, prefix]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self.cursor().execute(sql, params).fetchall()

    def delete_memory(self, env: str, *, key: str | None = None, prefix: str | None = None) -> list[str]:
        self.flush()
        with self.transaction() as cur:
            if key is not None:
                cond, param = "key = ?", key
            else:
                cond, param = "starts_with(key, ?)", prefix or ""
            live = cur.execute(
                f"""SELECT key FROM (SELECT DISTINCT ON (key) key, value FROM memory WHERE env = ? AND {cond}
                        ORDER BY key, seq DESC) latest
                    WHERE value IS NOT NULL ORDER BY key""",
                [env, param],
            ).fetchall()
            cur.execute(f"DELETE FROM memory WHERE env = ? AND {cond}", [env, param])
        return [r[0] for r in live]

    # ------------------------------------------------------------ the file
    def store_bytes(self) -> int:
        """The database's size on the server."""
        row = self.cursor().execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL's autovacuum reuses the space of deleted rows."""

    # ------------------------------------------------------------ knowledge bases
    def insert_kb(self, *, name: str, embedder: str, chunk_size: int, overlap: int,
                  description: str, now: _dt.datetime) -> int:
        from rf.store.knowledge import KnowledgeMixin

        kb_id: int = KnowledgeMixin.insert_kb(self, name=name, embedder=embedder,  # type: ignore[arg-type]
                                              chunk_size=chunk_size, overlap=overlap, description=description,
                                              now=now)
        table = terms_table(kb_id)
        self._write_cursor().execute(f"CREATE INDEX {table}_term ON {table} (term)")
        return kb_id

    def _vector_kind(self, cur: Any, table: str) -> str:
        """How *table* holds its vectors: ``pgvector`` or ``float4-bytea`` (a KB keeps the kind it was made
        with, whatever the store chose at this start: the extension may have come or gone since)."""
        kinds: dict[str, str] = self.__dict__.setdefault("_vector_kinds", {})
        found = kinds.get(table)
        if found is None:
            row = cur.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema()"
                              " AND table_name = ? AND column_name = 'embedding'", [table]).fetchone()
            found = kinds[table] = "float4-bytea" if row is None or row[0] == "bytea" else "pgvector"
        return found

    def _vector_column(self, dim: int) -> str:
        return f"vector({int(dim)})" if self.vector_mode == "pgvector" else "bytea"

    def _ensure_vectors(self, cur: Any, kb_id: int, dim: int) -> str:
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
        self._create_vectors(cur, table, dim)
        cur.execute("UPDATE kbs SET dim = ?, vectors = ? WHERE id = ?", [dim, table, kb_id])
        return table

    def _create_vectors(self, cur: Any, table: str, dim: int) -> None:
        self.__dict__.setdefault("_vector_kinds", {}).pop(table, None)
        cur.execute(f"CREATE TABLE {table} (chunk_id BIGINT NOT NULL, doc_id BIGINT NOT NULL, "
                    f"tokens INTEGER NOT NULL, embedding {self._vector_column(dim)} NOT NULL)")
        cur.execute(f"CREATE INDEX {table}_doc ON {table} (doc_id)")

    def kb_new_vectors_table(self, kb_id: int, generation: int, dim: int) -> str:
        table = vectors_table(kb_id, generation)
        with self.transaction() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            self._create_vectors(cur, table, dim)
        return table

    @staticmethod
    def _register_insert(cur: Any, table: str, columns: dict[str, Any], select: str) -> None:
        """The rows of numpy *columns* into *table* through COPY. *select* is the DuckDB statement's
        ``SELECT a, b, 'literal', ... FROM {src}``: its column names and literals, in order."""
        items = _select_items(select)
        names = list(columns)
        n = len(next(iter(columns.values()))) if columns else 0
        lists = {k: (v.tolist() if hasattr(v, "tolist") else list(v)) for k, v in columns.items()}
        sources: list[Any] = []
        for item in items:
            if item in lists:
                sources.append(lists[item])
            else:
                sources.append(_literal_value(item))
        with cur.connection.cursor() as raw, raw.copy(f"COPY {table} FROM STDIN") as copy:
            for i in range(n):
                copy.write_row([s[i] if isinstance(s, list) else s for s in sources])
        del names

    def insert_vectors(self, cur: Any, table: str, chunk_ids: npt.NDArray[np.int64],
                       doc_ids: npt.NDArray[np.int64], tokens: npt.NDArray[np.int32],
                       vectors: npt.NDArray[np.float32]) -> None:
        import numpy as np

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._vector_kind(cur, table) == "pgvector":
            values: list[Any] = ["[" + ",".join(map(repr, row.tolist())) + "]" for row in vectors]
        else:
            values = [row.astype("<f4").tobytes() for row in vectors]
        with cur.connection.cursor() as raw, raw.copy(
                f"COPY {table} (chunk_id, doc_id, tokens, embedding) FROM STDIN") as copy:
            for chunk, doc, tok, value in zip(chunk_ids.tolist(), doc_ids.tolist(), tokens.tolist(), values,
                                              strict=True):
                copy.write_row((chunk, doc, tok, value))

    def kb_maybe_sort_terms(self, kb_id: int) -> bool:
        """Nothing to sort: the term table has an index on ``term``."""
        return False

    def _vector_source(self, kb: dict[str, Any]) -> str:
        return str(kb["vectors"])

    def kb_drop_cache(self, kb_id: int) -> None:
        self._kb_vectors_changed(kb_id)

    def kb_search_rows(
        self,
        kb: dict[str, Any],
        query_vector: list[float],
        terms: list[int],
        k: int,
        filters: dict[str, list[str]],
        vector_weight: float,
    ) -> list[dict[str, Any]]:
        import numpy as np

        if not kb["vectors"]:
            return []
        table = str(kb["vectors"])
        kb_id = int(kb["id"])
        doc_where, doc_params = _filter_sql(filters)
        docs_sql = f"SELECT doc_id FROM kb_documents WHERE kb_id = ? AND state = 'live'{doc_where}"
        cur = self.cursor()
        if self._vector_kind(cur, table) == "pgvector":
            query = "[" + ",".join(map(repr, [float(x) for x in query_vector])) + "]"
            rows = cur.execute(
                f"SELECT v.chunk_id, v.tokens, 1 - (v.embedding <=> ?::vector) FROM {table} v"
                f" WHERE v.doc_id IN ({docs_sql})", [query, kb_id, *doc_params]).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            tokens = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
            vs = np.fromiter((0.0 if r[2] is None else r[2] for r in rows), dtype=np.float64, count=len(rows))
        else:
            rows = cur.execute(f"SELECT v.chunk_id, v.tokens, v.embedding FROM {table} v"
                               f" WHERE v.doc_id IN ({docs_sql})", [kb_id, *doc_params]).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            tokens = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
            dim = int(kb["dim"])
            matrix = (np.frombuffer(b"".join(bytes(r[2]) for r in rows), dtype="<f4").reshape(len(rows), dim)
                      if rows else np.zeros((0, dim), dtype=np.float32))
            q = np.asarray(query_vector, dtype=np.float32)
            norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(q))
            dots = matrix @ q
            vs = np.divide(dots, norms, out=np.zeros(len(rows), dtype=np.float64), where=norms > 0).astype(np.float64)
        if not len(ids):
            return []
        # BM25 over the live candidates (as the DuckDB statement: n and avgdl of the live set).
        n = max(len(ids), 1)
        avgdl = max(float(tokens.mean()), 1.0)
        ls = np.zeros(len(ids), dtype=np.float64)
        if terms:
            hits = cur.execute(f"SELECT chunk_id, term, tf FROM {terms_table(kb_id)} WHERE term = ANY(?::integer[])",
                               [list(terms)]).fetchall()
            position = {int(c): i for i, c in enumerate(ids.tolist())}
            live_hits = [(position[c], t, tf) for c, t, tf in hits if c in position]
            df: dict[int, int] = {}
            for _, term, _tf in live_hits:
                df[term] = df.get(term, 0) + 1
            for i, term, tf in live_hits:
                freq = float(df[term])
                idf = np.log(1 + (n - freq + 0.5) / (freq + 0.5))
                ls[i] += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * tokens[i] / avgdl))
        best = float(ls.max()) if len(ls) else 0.0
        ln = ls / best if best else np.zeros(len(ids), dtype=np.float64)
        w = float(vector_weight)
        score = w * vs + (1 - w) * ln
        keep = np.nonzero(score > 0)[0]
        order = keep[np.lexsort((ids[keep], -score[keep]))][:k]
        if not len(order):
            return []
        top = [(int(ids[i]), float(vs[i]), float(ln[i]), float(ls[i]), float(score[i])) for i in order]
        chunk_rows = cur.execute(
            "SELECT chunk_id, doc_id, idx, text, meta FROM kb_chunks WHERE kb_id = ? AND chunk_id = ANY(?::bigint[])",
            [kb_id, [t[0] for t in top]]).fetchall()
        doc_ids = sorted({r[1] for r in chunk_rows})
        docs = {r[0]: r for r in cur.execute(
            "SELECT doc_id, path, kind, metadata FROM kb_documents WHERE kb_id = ? AND doc_id = ANY(?::bigint[])",
            [kb_id, doc_ids]).fetchall()} if doc_ids else {}
        details = {r[0]: (r[0], r[2], r[3], r[4], *docs[r[1]][1:]) for r in chunk_rows if r[1] in docs}
        out = []
        for chunk_id, vsc, lnc, lsc, sc in top:
            d = details.get(chunk_id)
            if d is None:  # replaced between the statements: skip rather than fail
                continue
            out.append({"chunk_id": chunk_id, "chunk": d[1], "text": d[2],
                        "chunk_meta": json.loads(d[3]) if d[3] else {}, "path": d[4], "kind": d[5],
                        "doc_meta": json.loads(d[6]), "vector_score": vsc, "lexical_score": lnc,
                        "bm25": lsc, "score": sc})
        return out


def _select_items(select: str) -> list[str]:
    """The items of ``SELECT a, b, 'x', TIMESTAMP '...' FROM {src}``, split at top-level commas."""
    body = select.strip()[len("SELECT "):]
    body = body[: body.rindex(" FROM ")]
    items, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(body):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            items.append(body[start:i].strip())
            start = i + 1
    items.append(body[start:].strip())
    return items


def _literal_value(item: str) -> Any:
    """A constant of a DuckDB SELECT list (an integer, 'text', TIMESTAMP '...', NULL) as a Python value."""
    if item.upper() == "NULL":
        return None
    if re.fullmatch(r"-?\d+", item):
        return int(item)
    found = re.fullmatch(r"(?:TIMESTAMP\s+)?'((?:[^']|'')*)'", item, re.I)
    if found is None:
        raise ValueError(f"cannot copy the value {item!r}")
    text = found.group(1).replace("''", "'")
    return _dt.datetime.fromisoformat(text) if item.upper().startswith("TIMESTAMP") else text


def _glob_regex(pattern: str) -> str:
    """A DuckDB GLOB pattern as an anchored POSIX regular expression."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                inner = pattern[i + 1:end]
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + "$"


def _filter_sql(filters: dict[str, list[str]]) -> tuple[str, list[Any]]:
    """rf.store.knowledge._filter_sql for PostgreSQL (positional parameters)."""
    parts: list[str] = []
    params: list[Any] = []
    for key, values in sorted(filters.items()):
        alts = []
        for value in values:
            if key == "path":
                if any(c in value for c in "*?["):
                    alts.append("path ~ ?")
                    params.append(_glob_regex(value))
                else:
                    alts.append("path = ?")
                    params.append(value)
            elif key == "type":
                alts.append("kind = ?")
                params.append(value)
            else:
                alts.append("(metadata::jsonb ->> ?) = ?")
                params += [key, value]
        parts.append("(" + " OR ".join(alts) + ")")
    return "".join(f" AND {p}" for p in parts), params
