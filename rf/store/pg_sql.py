"""DuckDB SQL as PostgreSQL runs it: the one place statements are translated, and the schema.

rf's store mixins (rf/store/*.py) are written in DuckDB's dialect with ``?``
placeholders. :func:`translate` turns a statement into what psycopg sends to
PostgreSQL, once per distinct text (cached):

- ``?`` becomes ``%s`` and ``$name`` becomes ``%(name)s``, outside string
  literals and quoted identifiers; a literal ``%`` is doubled (psycopg's own
  placeholder character);
- ``INSERT OR REPLACE INTO t (cols) ...`` becomes ``INSERT ... ON CONFLICT
  (t's primary key) DO UPDATE SET`` the other columns (primary keys are read
  from the DuckDB migrations themselves: :data:`PRIMARY_KEYS`); ``INSERT OR
  IGNORE`` becomes ``ON CONFLICT DO NOTHING``;
- ``rowid`` becomes ``ctid``, ``strlen(`` ``octet_length(``;
- whole fragments DuckDB has and PostgreSQL has not (``QUALIFY`` of the latest
  running marker) are replaced by their equivalent (:data:`FRAGMENTS`).

What cannot be translated this way (other ``QUALIFY``, ``arg_max``, numpy
registrations, ``FLOAT[dim]`` arrays) is in rf.store.pg_overrides: methods
of the mixins rewritten for PostgreSQL.

Migrations: :data:`PG_MIGRATIONS` has one entry per version of
rf.store.migrations.MIGRATIONS (a test asserts the two lists stay in step).
``None`` means "the DuckDB statements, with types translated" (``DOUBLE`` →
``DOUBLE PRECISION``, ``BLOB`` → ``BYTEA``); a list replaces them for
PostgreSQL. A new migration adds its entry here in the same commit.
"""

from __future__ import annotations

import functools
import re

from rf.store.migrations import MIGRATIONS

#: Per schema version (index 0 = v1): None = translate the DuckDB statements; a list = run these instead.
PG_MIGRATIONS: list[list[str] | None] = [
    None,  # v1 the spine
    None,  # v2 prompts
    None,  # v3 credentials, connectors
    None,  # v4 providers
    None,  # v5 sessions, memory (the old one-row-per-message tables; dropped by v16)
    None,  # v6 spans (the old one-row-per-span table; dropped by v16)
    None,  # v7 release plans
    None,  # v8 triggers
    None,  # v9 knowledge bases, data sources
    None,  # v10 span_batches
    None,  # v11 executions.root_span
    None,  # v12 session_turns
    None,  # v13 endpoint keys
    None,  # v14 connector settings, trigger changes
    None,  # v15 running executions
    # v16 moved rows of the pre-v10 layouts (DuckDB SQL: QUALIFY, to_json, json_valid): a PostgreSQL
    # store never had any (it starts at the current layout), so only the old tables go.
    ["DROP TABLE spans", "DROP TABLE session_messages"],
    None,  # v17 executions.parent_id
    None,  # v18 users, tokens, approvals, audit log
    None,  # v19 release gate evidence
    None,  # v20 eval runs
    None,  # v21 canary releases
    None,  # v22 live canary scores, running executions release/arm
    None,  # v23 replicas, schedule slot claims, webhook signatures
]

#: Indexes PostgreSQL gets on top of the DuckDB schema (DuckDB relies on zone maps where a row store
#: needs an index). Created with IF NOT EXISTS at every open, so they follow the tables as they come.
PG_INDEXES = (
    "CREATE INDEX IF NOT EXISTS executions_id ON executions (id)",
    "CREATE INDEX IF NOT EXISTS executions_env_id ON executions (env, id)",
    "CREATE INDEX IF NOT EXISTS span_batches_execution ON span_batches (execution_id)",
    "CREATE INDEX IF NOT EXISTS span_batches_env_start ON span_batches (env, start_ns)",
    "CREATE INDEX IF NOT EXISTS session_turns_session ON session_turns (env, session_id, agent, seq)",
    "CREATE INDEX IF NOT EXISTS memory_env_key ON memory (env, key, seq)",
    "CREATE INDEX IF NOT EXISTS running_executions_id ON running_executions (id)",
    "CREATE INDEX IF NOT EXISTS kb_chunks_chunk ON kb_chunks (kb_id, chunk_id)",
    "CREATE INDEX IF NOT EXISTS kb_documents_kb ON kb_documents (kb_id, state, path)",
    "CREATE INDEX IF NOT EXISTS audit_log_created ON audit_log (created_at)",
)

#: DuckDB functions rf's SQL uses that PostgreSQL lacks, defined in the database at every open (idempotent,
#: under the migration lock): ``arg_max(text, bigint)`` (the text at the largest key, NULL texts and keys
#: skipped) and ``arg_max_null`` (NULL texts kept), as DuckDB's.
PG_FUNCTIONS = (
    """DO $$ BEGIN CREATE TYPE rf_text_at AS (v text, k bigint, set boolean);
       EXCEPTION WHEN duplicate_object THEN NULL; END $$""",
    """CREATE OR REPLACE FUNCTION rf_arg_max_step(s rf_text_at, v text, k bigint) RETURNS rf_text_at
       LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN v IS NULL OR k IS NULL THEN s
           WHEN s IS NULL OR NOT (s).set OR k > (s).k THEN ROW(v, k, true)::rf_text_at ELSE s END $$""",
    """CREATE OR REPLACE FUNCTION rf_arg_max_null_step(s rf_text_at, v text, k bigint) RETURNS rf_text_at
       LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN k IS NULL THEN s
           WHEN s IS NULL OR NOT (s).set OR k > (s).k THEN ROW(v, k, true)::rf_text_at ELSE s END $$""",
    """CREATE OR REPLACE FUNCTION rf_arg_max_final(s rf_text_at) RETURNS text
       LANGUAGE sql IMMUTABLE AS $$ SELECT (s).v $$""",
    """CREATE OR REPLACE AGGREGATE arg_max(text, bigint)
       (SFUNC = rf_arg_max_step, STYPE = rf_text_at, FINALFUNC = rf_arg_max_final)""",
    """CREATE OR REPLACE AGGREGATE arg_max_null(text, bigint)
       (SFUNC = rf_arg_max_null_step, STYPE = rf_text_at, FINALFUNC = rf_arg_max_final)""",
    # What servers cache (environment heads, production's arms) changes only with these tables:
    # each such statement bumps the state version and notifies every server IN ITS OWN
    # TRANSACTION (a notification is delivered at commit), so a change is never committed
    # unannounced — not even by a process that dies right after its commit (rf.store.pg_replicas).
    """CREATE OR REPLACE FUNCTION rf_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE v bigint;
       BEGIN
         INSERT INTO meta (key, value) VALUES ('state_version', '1') ON CONFLICT (key) DO UPDATE
           SET value = (CAST(meta.value AS BIGINT) + 1)::text RETURNING CAST(value AS BIGINT) INTO v;
         PERFORM pg_notify('rf_state', v::text);
         RETURN NULL;
       END $$""",
    *(f"""DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'rf_state_{table}') THEN
           CREATE TRIGGER rf_state_{table} AFTER INSERT OR UPDATE OR DELETE ON {table}
             FOR EACH STATEMENT EXECUTE FUNCTION rf_state_changed();
         END IF;
       END $$""" for table in ("agent_heads", "releases", "canaries")),
)

_TYPES = ((re.compile(r"\bDOUBLE\b"), "DOUBLE PRECISION"), (re.compile(r"\bBLOB\b"), "BYTEA"))


def pg_statements(version: int) -> list[str]:
    """The PostgreSQL statements of schema step *version* (1-based)."""
    given = PG_MIGRATIONS[version - 1]
    if given is not None:
        return list(given)
    out = []
    for statement in MIGRATIONS[version - 1]:
        for pattern, replacement in _TYPES:
            statement = pattern.sub(replacement, statement)
        out.append(statement)
    return out


def _primary_keys() -> dict[str, tuple[str, ...]]:
    """Each table's primary key, read from the DuckDB migrations (``PRIMARY KEY (a, b)`` or ``col TYPE
    PRIMARY KEY``)."""
    keys: dict[str, tuple[str, ...]] = {}
    for step in MIGRATIONS:
        for statement in step:
            found = re.match(r"\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+)\s*\((.*)\)\s*$", statement, re.S)
            if not found:
                continue
            table, body = found.groups()
            body = re.sub(r"--[^\n]*", "", body)
            whole = re.search(r"PRIMARY KEY\s*\(([^)]*)\)", body)
            if whole:
                keys[table] = tuple(c.strip() for c in whole.group(1).split(","))
                continue
            single = re.search(r"(\w+)\s+\w+\s+PRIMARY KEY", body)
            if single:
                keys[table] = (single.group(1),)
    return keys


PRIMARY_KEYS = _primary_keys()

#: DuckDB fragments and what PostgreSQL runs instead (exact text, outside literals).
FRAGMENTS = {
    # rf.store.executions._LATEST: the latest marker of each running execution (after a WHERE).
    "QUALIFY row_number() OVER (PARTITION BY id ORDER BY marked_at DESC) = 1":
        "AND NOT EXISTS (SELECT 1 FROM running_executions _later WHERE _later.id = running_executions.id"
        " AND (_later.marked_at > running_executions.marked_at OR (_later.marked_at = running_executions.marked_at"
        " AND _later.ctid > running_executions.ctid)))",
}

#: Literals and quoted identifiers (left alone), and the tokens translated outside them.
_TOKENS = re.compile(r"""('(?:[^']|'')*')|("(?:[^"]|"")*")|(\?)|(%)|\$([A-Za-z_]\w*)|\b(rowid|strlen\()""",
                     re.I)
_WORDS = {"rowid": "ctid", "strlen(": "octet_length("}
_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.I | re.S)
_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\s+", re.I)


class TranslationError(ValueError):
    """A statement rf cannot run on PostgreSQL (a bug: every store method must have a PG form)."""


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """*sql* (DuckDB dialect, ``?`` or ``$name`` placeholders) as psycopg runs it on PostgreSQL."""
    suffix = ""
    replace = _REPLACE.match(sql)
    if replace:
        table, columns = replace.group(1), [c.strip() for c in replace.group(2).split(",")]
        key = PRIMARY_KEYS.get(table)
        if key is None:
            raise TranslationError(f"INSERT OR REPLACE INTO {table}: the table has no primary key")
        others = [c for c in columns if c not in key]
        action = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in others)) if others else "DO NOTHING"
        suffix = f" ON CONFLICT ({', '.join(key)}) {action}"
        sql = "INSERT INTO " + sql[sql.upper().index("INTO ") + 5:]
    elif re.match(r"^\s*INSERT\s+OR\s+REPLACE\b", sql, re.I):
        raise TranslationError("INSERT OR REPLACE without a column list cannot be translated for PostgreSQL")
    elif _IGNORE.match(sql):
        sql = _IGNORE.sub("INSERT INTO ", sql, count=1)
        suffix = " ON CONFLICT DO NOTHING"
    for duck, pg in FRAGMENTS.items():
        if duck in sql:
            sql = sql.replace(duck, pg)

    def one(m: re.Match[str]) -> str:
        if m.group(1) or m.group(2):
            return m.group(0).replace("%", "%%")
        if m.group(3):
            return "%s"
        if m.group(4):
            return "%%"
        if m.group(5):
            return f"%({m.group(5)})s"
        return _WORDS[m.group(6).lower()]

    out = _TOKENS.sub(one, sql)
    if suffix:
        out = out.rstrip().rstrip(";") + suffix
    return out
