"""Schema migrations. Each entry upgrades the schema by one version.

The version lives in ``meta(key='schema_version')``. Opening a file written by
an older rf applies the missing steps in one transaction; a file written by a
newer rf is refused (we cannot know what its new columns mean).
"""

from __future__ import annotations

#: A legacy span's attributes (JSON text) as they go into a span batch or a root span: an
#: empty text is the empty object (as the old readers showed it), other text that is not JSON is
#: kept under ``unreadable``.
_ATTRIBUTES = ("CASE WHEN {t}.attributes = '' THEN '{{}}' WHEN json_valid({t}.attributes) THEN {t}.attributes"
               " ELSE json_object('unreadable', {t}.attributes)::VARCHAR END")

MIGRATIONS: list[list[str]] = [
    # v1: the spine — agents, commits, blobs, per-env heads, executions, releases.
    [
        """CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
        """CREATE TABLE blobs (
            sha256 VARCHAR PRIMARY KEY,
            size BIGINT NOT NULL,
            data BLOB NOT NULL
        )""",
        """CREATE TABLE agents (
            name VARCHAR PRIMARY KEY,
            description VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE commits (
            id VARCHAR PRIMARY KEY,
            agent VARCHAR NOT NULL,
            parent VARCHAR,
            message VARCHAR NOT NULL,
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            tree VARCHAR NOT NULL,      -- JSON {path: sha256}
            config VARCHAR NOT NULL     -- JSON of the parsed agent.toml
        )""",
        """CREATE TABLE agent_heads (
            agent VARCHAR NOT NULL,
            env VARCHAR NOT NULL,
            commit_id VARCHAR NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (agent, env)
        )""",
        # High-volume: written only through the batching writer (rf.store.writer).
        # No primary key on purpose: ids are unique by construction and an
        # ART index would slow every append.
        """CREATE TABLE executions (
            id VARCHAR NOT NULL,
            env VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            commit_id VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            input VARCHAR,
            output VARCHAR,
            error VARCHAR,
            error_type VARCHAR,
            traceback VARCHAR,
            logs VARCHAR,
            started_at TIMESTAMP NOT NULL,
            ended_at TIMESTAMP NOT NULL,
            duration_ms DOUBLE NOT NULL,
            session_id VARCHAR
        )""",
        """CREATE TABLE releases (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            author VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            plan_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL DEFAULT 'publish'   -- publish | rollback
        )""",
        """CREATE TABLE release_items (
            release_id VARCHAR NOT NULL,
            position INTEGER NOT NULL,
            kind VARCHAR NOT NULL,      -- agent | prompt | connector | trigger
            name VARCHAR NOT NULL,
            before VARCHAR,             -- JSON state in production before
            after VARCHAR,              -- JSON state in production after
            summary VARCHAR NOT NULL DEFAULT '',
            PRIMARY KEY (release_id, position)
        )""",
    ],
    # v2: prompts (prompts, prompt_versions, per-env pointers).
    [
        """CREATE TABLE prompts (
            name VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL   -- last new version or publish
        )""",
        # Versions are immutable: rows are only ever inserted.
        """CREATE TABLE prompt_versions (
            prompt VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            text VARCHAR NOT NULL,
            variables VARCHAR NOT NULL,     -- JSON list of {{names}}, in order of first use
            author VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (prompt, version)
        )""",
        # staging -> the draft version, production -> the published version.
        """CREATE TABLE prompt_pointers (
            prompt VARCHAR NOT NULL,
            env VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (prompt, env)
        )""",
    ],
    # v3: credentials (metadata only; secrets live in the keyring) and connectors.
    [
        # Never a value column: the secret lives in the OS keyring (rf/secrets.py).
        """CREATE TABLE credentials (
            name VARCHAR PRIMARY KEY,
            description VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL,
            rotated_at TIMESTAMP NOT NULL      -- last time the value was set
        )""",
        # One instance per (env, slug). Production rows change only by a release.
        """CREATE TABLE connectors (
            env VARCHAR NOT NULL,
            slug VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,             -- http
            base_url VARCHAR NOT NULL,
            auth VARCHAR NOT NULL,             -- none | api-key | bearer | basic
            credential VARCHAR,                -- a credential NAME, never a value
            api_key_header VARCHAR,
            api_key_query VARCHAR,
            headers VARCHAR NOT NULL,          -- JSON {name: value}
            timeout_s DOUBLE NOT NULL,
            retries INTEGER NOT NULL,
            mock BOOLEAN NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            PRIMARY KEY (env, slug)
        )""",
        """CREATE TABLE connector_resources (
            env VARCHAR NOT NULL,
            connector VARCHAR NOT NULL,
            slug VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            description VARCHAR NOT NULL,
            method VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            params_schema VARCHAR,             -- JSON Schema (object) or NULL
            mock_response VARCHAR,             -- JSON or NULL (no mock)
            PRIMARY KEY (env, connector, slug)
        )""",
        # Content-addressed copies of published instances (config + resources),
        # so a rollback can put an older production state back.
        """CREATE TABLE connector_snapshots (
            hash VARCHAR PRIMARY KEY,
            content VARCHAR NOT NULL           -- JSON
        )""",
    ],
    # v4: LLM providers.
    [
        # Shared by both environments: no env column. The built-in `mock`
        # has no row. `credential` is a credential NAME, never a secret.
        """CREATE TABLE providers (
            name VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,      -- mock | openai | anthropic
            base_url VARCHAR,
            credential VARCHAR,
            model VARCHAR,
            created_at TIMESTAMP NOT NULL
        )""",
        # Which agents call which provider from which environment, so that
        # removing a provider can say what it breaks (updated at most once a
        # minute per row by ctx.llm calls).
        """CREATE TABLE provider_uses (
            provider VARCHAR NOT NULL,
            env VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            last_used_at TIMESTAMP NOT NULL,
            PRIMARY KEY (provider, env, agent)
        )""",
    ],
    # v5: sessions (threads, messages) and memory.
    [
        # Append-only, through the batching writer. A session is
        # (env, agent, session_id); `seq` orders its messages.
        """CREATE TABLE session_messages (
            env VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            session_id VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            role VARCHAR NOT NULL,
            content VARCHAR NOT NULL,   -- JSON
            execution_id VARCHAR,
            created_at TIMESTAMP NOT NULL
        )""",
        # Append-only too: the newest row (highest seq) of (env, key) is the
        # value; a NULL value is a deletion. Superseded rows are compacted away.
        """CREATE TABLE memory (
            env VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            value VARCHAR,              -- JSON; NULL = deleted
            agent VARCHAR,
            execution_id VARCHAR,
            written_at TIMESTAMP NOT NULL
        )""",
    ],
    # v6: trace spans.
    [
        # Append-only, through the batching writer; no index (appends stay
        # cheap). Spans arrive roughly in time order, so DuckDB's per-row-group
        # min/max of start_ns lets a query bounded in time skip most of the table.
        """CREATE TABLE spans (
            env VARCHAR NOT NULL,
            trace_id VARCHAR NOT NULL,
            span_id VARCHAR NOT NULL,
            parent_id VARCHAR,
            execution_id VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            start_ns BIGINT NOT NULL,   -- Unix time, nanoseconds
            end_ns BIGINT NOT NULL,
            status VARCHAR NOT NULL,    -- ok | error
            error VARCHAR,
            attributes VARCHAR NOT NULL -- JSON object
        )""",
    ],
    # v7: release plans, kept so a stale `--plan ID` can say what changed since the review.
    [
        """CREATE TABLE release_plans (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            items VARCHAR NOT NULL      -- JSON [{kind, name, summary, before, after}]
        )""",
    ],
    # v8: triggers, each bound to one environment. A production trigger is
    # staged (live = false) until a release publishes it.
    [
        """CREATE TABLE triggers (
            id VARCHAR PRIMARY KEY,
            env VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,          -- schedule | webhook | watch
            agent VARCHAR NOT NULL,
            schedule VARCHAR,               -- cron expression
            timezone VARCHAR,
            watch_path VARCHAR,
            input VARCHAR,                  -- JSON input template
            headers VARCHAR NOT NULL DEFAULT '[]',   -- webhook headers passed to the agent
            accept VARCHAR NOT NULL DEFAULT 'json',  -- webhook body: json | text
            overlap VARCHAR NOT NULL DEFAULT 'skip', -- skip | allow
            catch_up VARCHAR NOT NULL DEFAULT 'none', -- none | last
            enabled BOOLEAN NOT NULL,
            live BOOLEAN NOT NULL,
            source_id VARCHAR,              -- the trigger this one was duplicated from
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            last_scheduled_at TIMESTAMP     -- newest schedule slot handled (fired or skipped)
        )""",
    ],
    # knowledge bases and data sources, shared by both environments (no env
    # column). Per-KB vector and term tables (kb_<id>_v<gen>, kb_<id>_terms)
    # are created at run time: see rf/store/knowledge.py.
    [
        """CREATE TABLE kbs (
            id INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            embedder VARCHAR NOT NULL,          -- default | provider:NAME:MODEL
            dim INTEGER,                        -- vector size, known after the first embedding
            vectors VARCHAR,                    -- this KB's vector table (kb_<id>_v<generation>)
            generation INTEGER NOT NULL,        -- bumped when the embedder changes (re-embed)
            chunk_size INTEGER NOT NULL,        -- characters
            overlap INTEGER NOT NULL,           -- characters
            description VARCHAR NOT NULL DEFAULT '',
            next_chunk BIGINT NOT NULL,         -- id counters (chunks of a document are contiguous)
            next_doc BIGINT NOT NULL,
            terms_sorted BIGINT NOT NULL,       -- term rows when the term table was last sorted
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
        # No primary key: a changed file is staged next to its live version and swapped atomically.
        """CREATE TABLE kb_documents (
            kb_id INTEGER NOT NULL,
            doc_id BIGINT NOT NULL,
            path VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,              -- text | markdown | html | csv | json | jsonl | pdf
            sha256 VARCHAR NOT NULL,
            size BIGINT NOT NULL,
            chars BIGINT NOT NULL,
            chunks INTEGER NOT NULL,
            first_chunk BIGINT NOT NULL,        -- its chunks are first_chunk .. first_chunk + chunks - 1
            metadata VARCHAR NOT NULL,          -- JSON object (custom --meta and what the file says)
            state VARCHAR NOT NULL,             -- staged | live
            batch VARCHAR,                      -- the upload that staged it
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE kb_chunks (
            kb_id INTEGER NOT NULL,
            chunk_id BIGINT NOT NULL,
            doc_id BIGINT NOT NULL,
            idx INTEGER NOT NULL,               -- position in its document
            text VARCHAR NOT NULL,
            meta VARCHAR,                       -- JSON (page / row / item range) or NULL
            tokens INTEGER NOT NULL             -- content tokens (BM25 document length)
        )""",
        """CREATE TABLE data_sources (
            name VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,              -- csv | parquet | json | duckdb | postgres
            location VARCHAR NOT NULL,          -- absolute file path, or a DSN without password
            credential VARCHAR,                 -- a credential NAME (postgres password), never a value
            description VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
        # Which agents used a KB / data source from which environment (throttled),
        # so that deleting one can say which production agents it breaks.
        """CREATE TABLE resource_uses (
            kind VARCHAR NOT NULL,              -- kb | data
            name VARCHAR NOT NULL,
            env VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            last_used_at TIMESTAMP NOT NULL,
            PRIMARY KEY (kind, name, env, agent)
        )""",
    ],
    # v10: an execution's child spans in one row (its root span stays in `spans`).
    [
        # One appended row per execution instead of one per span: the batching
        # writer's cost is per row, and a trace is always read whole. Older
        # stores keep their child spans in `spans`; readers look in both.
        """CREATE TABLE span_batches (
            env VARCHAR NOT NULL,
            trace_id VARCHAR NOT NULL,
            execution_id VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            start_ns BIGINT NOT NULL,   -- earliest start among the spans (Unix ns)
            end_ns BIGINT NOT NULL,     -- latest end
            count INTEGER NOT NULL,
            spans VARCHAR NOT NULL      -- JSON [[span_id, parent_id, kind, name, start_ns, end_ns,
                                        --        status, error, {attributes}], ...]
        )""",
    ],
    # v11: an execution's root span in its own row (one appended row per execution,
    # not two). Older executions keep their root span in `spans`; readers look in both.
    [
        # JSON [trace_id, span_id, start_ns, end_ns, status, error, {attributes}]
        "ALTER TABLE executions ADD COLUMN root_span VARCHAR",
    ],
    # v12: an execution's session messages in one row (its input, what it appended,
    # its output). Older stores keep theirs in `session_messages`; readers look in both.
    [
        """CREATE TABLE session_turns (
            env VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            session_id VARCHAR NOT NULL,
            seq BIGINT NOT NULL,        -- the first message's seq; the others follow it, one apart
            count INTEGER NOT NULL,
            execution_id VARCHAR,
            started_at TIMESTAMP NOT NULL,  -- the first message's time
            ended_at TIMESTAMP NOT NULL,    -- the last message's time
            messages VARCHAR NOT NULL   -- JSON [[role, content, Unix microseconds], ...]
        )""",
    ],
    # v13: endpoint keys (rf keys): per environment, stored as SHA-256 only.
    [
        """CREATE TABLE endpoint_keys (
            id VARCHAR PRIMARY KEY,
            env VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            prefix VARCHAR NOT NULL,    -- the key's first characters, to recognise it in a list
            key_hash VARCHAR NOT NULL,  -- sha256 hex of the whole key (keys are 256-bit random)
            created_at TIMESTAMP NOT NULL,
            created_by VARCHAR NOT NULL,
            revoked_at TIMESTAMP
        )""",
    ],
    # v14: connector settings per environment, and staged changes of live production triggers.
    [
        # Production settings of a connector, prepared in staging; published as their own release
        # item (connector:SLUG@production). Existing workspaces start with production's current
        # settings, so nothing is pending and a later publish of resources keeps them.
        """CREATE TABLE connector_prepared_settings (
            slug VARCHAR PRIMARY KEY,
            base_url VARCHAR NOT NULL,
            auth VARCHAR NOT NULL,
            credential VARCHAR,                -- a credential NAME, never a value
            api_key_header VARCHAR,
            api_key_query VARCHAR,
            headers VARCHAR NOT NULL,          -- JSON {name: value}
            timeout_s DOUBLE NOT NULL,
            retries INTEGER NOT NULL,
            mock BOOLEAN NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )""",
        """INSERT INTO connector_prepared_settings
           SELECT slug, base_url, auth, credential, api_key_header, api_key_query, headers, timeout_s, retries,
                  mock, updated_at
           FROM connectors WHERE env = 'production'""",
        # A change (pause, resume, edit) staged for a live production trigger: a release item.
        """CREATE TABLE trigger_changes (
            trigger_id VARCHAR PRIMARY KEY,
            state VARCHAR NOT NULL,            -- JSON: its config and `enabled` once published
            created_at TIMESTAMP NOT NULL
        )""",
    ],
    # v15: executions in progress and their wait for a worker. A run that lasts over about a
    # second gets a marker row here (through the batching writer), deleted in the same batch
    # as its final `executions` row; markers left by a server that died become `interrupted`
    # executions at the next start (rf.store.executions). Several rows may exist for one id
    # (marked while still waiting for a worker, then again once it started): the latest wins.
    [
        "ALTER TABLE executions ADD COLUMN queued_ms DOUBLE",  # NULL in rows recorded earlier (read as 0)
        """CREATE TABLE running_executions (
            id VARCHAR NOT NULL,
            env VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            commit_id VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            session_id VARCHAR,
            input VARCHAR,              -- JSON
            started_at TIMESTAMP NOT NULL,  -- the request's arrival
            run_started_at TIMESTAMP,   -- when a worker started it (NULL: still waiting for one)
            marked_at TIMESTAMP NOT NULL,
            owner VARCHAR NOT NULL      -- the process that runs it (pid:random)
        )""",
    ],
    # v16: one storage format. The rows older rf kept in the layouts before v10-v12 move into the
    # current ones, once, and the old tables go (each kind then has one reader and one writer).
    # - `spans` (one row per span): a root span goes into its execution's `root_span` (when the
    #   execution has a row and no root span yet); every other span (children, and a root whose
    #   execution has no row any more, which only an export still showed) goes into
    #   `span_batches`, one row per execution, in the layout the writer produces.
    # - `session_messages` (one row per message): each run of consecutive seqs of one execution
    #   becomes one `session_turns` row, in the layout the writer produces.
    # JSON text is spliced in as stored; text that is not JSON (no rf wrote any; the old readers
    # failed on it) is kept as a JSON string instead of being lost.
    [
        """CREATE TEMP TABLE legacy_roots AS
           SELECT s.rowid AS rid, s.* FROM spans s
           WHERE s.parent_id IS NULL AND EXISTS (
               SELECT 1 FROM executions e WHERE e.id = s.execution_id AND e.env = s.env
                                            AND e.agent = s.agent AND e.root_span IS NULL)
           QUALIFY row_number() OVER (PARTITION BY s.execution_id ORDER BY s.start_ns, s.span_id) = 1""",
        f"""UPDATE executions SET root_span =
               '[' || to_json(r.trace_id) || ',' || to_json(r.span_id) || ',' || r.start_ns || ',' || r.end_ns
               || ',' || to_json(r.status) || ',' || coalesce(to_json(r.error)::VARCHAR, 'null')
               || ',' || {_ATTRIBUTES.format(t="r")} || ']'
           FROM legacy_roots r
           WHERE executions.id = r.execution_id AND executions.env = r.env AND executions.agent = r.agent
             AND executions.root_span IS NULL""",
        f"""INSERT INTO span_batches
           SELECT env, trace_id, execution_id, agent, min(start_ns), max(end_ns), count(*),
                  '[' || string_agg(
                      '[' || to_json(s.span_id) || ',' || coalesce(to_json(s.parent_id)::VARCHAR, 'null')
                      || ',' || to_json(s.kind) || ',' || to_json(s.name) || ',' || s.start_ns || ',' || s.end_ns
                      || ',' || to_json(s.status) || ',' || coalesce(to_json(s.error)::VARCHAR, 'null')
                      || ',' || {_ATTRIBUTES.format(t="s")} || ']',
                      ',' ORDER BY s.start_ns, s.end_ns DESC, s.span_id) || ']'
           FROM spans s WHERE s.rowid NOT IN (SELECT rid FROM legacy_roots)
           GROUP BY env, trace_id, execution_id, agent""",
        """INSERT INTO session_turns
           SELECT env, agent, session_id, min(seq), count(*), execution_id, min(created_at), max(created_at),
                  '[' || string_agg(
                      '[' || to_json(role) || ','
                      || CASE WHEN json_valid(content) THEN content ELSE to_json(content)::VARCHAR END
                      || ',' || epoch_us(created_at) || ']', ',' ORDER BY seq) || ']'
           FROM (SELECT *, seq - row_number() OVER (PARTITION BY env, agent, session_id, execution_id
                                                    ORDER BY seq) AS run
                 FROM session_messages)
           GROUP BY env, agent, session_id, execution_id, run""",
        "DROP TABLE legacy_roots",
        "DROP TABLE spans",
        "DROP TABLE session_messages",
    ],
    # Agents calling agents (ctx.agents.invoke): the execution that made the call, on the
    # child's row (NULL for every execution called from outside, and for rows recorded earlier).
    [
        "ALTER TABLE executions ADD COLUMN parent_id VARCHAR",
    ],
    # Users, roles and personal tokens (SHA-256 only); approvals of release plans; the audit
    # log (append-only: who deployed, published, approved, changed a credential, a user, a token).
    [
        """CREATE TABLE users (
            name VARCHAR PRIMARY KEY,
            role VARCHAR NOT NULL,       -- viewer | developer | publisher | admin
            created_at TIMESTAMP NOT NULL,
            created_by VARCHAR NOT NULL
        )""",
        """CREATE TABLE user_tokens (
            id VARCHAR PRIMARY KEY,
            user_name VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            prefix VARCHAR NOT NULL,     -- the token's first characters, to recognise it in a list
            token_hash VARCHAR NOT NULL, -- sha256 hex of the whole token (256-bit random)
            created_at TIMESTAMP NOT NULL,
            created_by VARCHAR NOT NULL,
            revoked_at TIMESTAMP
        )""",
        """CREATE TABLE plan_authors (
            plan_id VARCHAR PRIMARY KEY,  -- a plan id is a content hash: its first maker is its author
            author VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE plan_approvals (
            plan_id VARCHAR NOT NULL,
            approver VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (plan_id, approver)
        )""",
        """CREATE TABLE audit_log (
            id VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            actor VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            action VARCHAR NOT NULL,     -- the Services method, e.g. deploy, publish_release, add_user
            target VARCHAR NOT NULL,
            detail VARCHAR NOT NULL      -- JSON: the call's non-secret arguments and its result's ids
        )""",
    ],
    # The release gate: a plan's latest eval evidence (what `publish --plan ID` checks), and the
    # evidence a release was published with, with the reason regressions were accepted.
    [
        "ALTER TABLE release_plans ADD COLUMN evals VARCHAR",  # JSON [AgentEvalEvidence]; NULL: not evaluated
        "ALTER TABLE releases ADD COLUMN evidence VARCHAR",  # JSON {evals, accepted_regressions}; NULL: none
    ],
    # Eval runs (rf eval, the release gate): each run's whole result, for rf evals list|show.
    [
        """CREATE TABLE eval_runs (
            id VARCHAR PRIMARY KEY,
            env VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            commit_id VARCHAR NOT NULL,   -- the commit the suite ran, or working-copy
            created_at TIMESTAMP NOT NULL,
            total INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            result VARCHAR NOT NULL       -- JSON: the EvalResult, cases and scores included
        )""",
    ],
    # Canary releases: a release run beside production's on a share of its traffic. Every
    # production execution records the release it ran and, while a canary runs, its arm. The
    # canary's state lives here (not in a server's memory), so replicas on one database agree.
    [
        "ALTER TABLE executions ADD COLUMN release_id VARCHAR",  # production's release it ran (NULL: staging)
        "ALTER TABLE executions ADD COLUMN arm VARCHAR",  # stable | canary while a canary runs, else NULL
        """CREATE TABLE canaries (
            id VARCHAR PRIMARY KEY,        -- the canary's release (kind canary), what its arm records
            status VARCHAR NOT NULL,       -- running | promoted | aborted
            weight DOUBLE NOT NULL,        -- the percentage of production traffic on the canary arm
            stable_release_id VARCHAR,     -- production's release when it started (NULL: none yet)
            state VARCHAR NOT NULL,        -- JSON: what the canary arm runs (agents, prompts, connectors)
            started_at TIMESTAMP NOT NULL,
            started_by VARCHAR NOT NULL,
            ended_at TIMESTAMP,
            ended_by VARCHAR,
            end_release_id VARCHAR,        -- the release that ended it (canary-promote or canary-abort)
            figures VARCHAR                -- JSON: the per-arm figures when it ended (auto-abort's cause)
        )""",
    ],
    # A canary's live scoring (a sample of both arms' executions scored by the live entry of the
    # agent's eval suite), and the release and arm of executions still running (their markers).
    [
        "ALTER TABLE running_executions ADD COLUMN release_id VARCHAR",  # as executions.release_id
        "ALTER TABLE running_executions ADD COLUMN arm VARCHAR",  # as executions.arm
        "ALTER TABLE canaries ADD COLUMN score_dropped BIGINT DEFAULT 0",  # sampled, not scored: the queue was full
        """CREATE TABLE canary_scores (
            canary_id VARCHAR NOT NULL,    -- the canary running when the execution was scored
            execution_id VARCHAR NOT NULL,
            arm VARCHAR NOT NULL,          -- stable | canary
            agent VARCHAR NOT NULL,
            score DOUBLE NOT NULL,         -- the share of the live scorers that passed (0 to 1)
            scores VARCHAR NOT NULL,       -- JSON [EvalScore]: each scorer's verdict and detail
            scored_at TIMESTAMP NOT NULL
        )""",
    ],
    # Replicas: several `rf serve` on one PostgreSQL database (rf.store.pg_replicas). Each live server
    # registers with a heartbeat and confirms the state version it has seen (a release waits for
    # that); each schedule slot is claimed once across servers, and each accepted webhook signature
    # is remembered in the store (the replay guard every server shares). Unused on DuckDB.
    [
        """CREATE TABLE replicas (
            id VARCHAR PRIMARY KEY,          -- the process (rf.store.executions.owner: pid and a random part)
            url VARCHAR NOT NULL,            -- where it serves
            host VARCHAR NOT NULL,           -- the machine's name
            pid BIGINT NOT NULL,
            started_at TIMESTAMP NOT NULL,
            heartbeat_at TIMESTAMP NOT NULL, -- renewed every second; a lapsed one is not waited for
            seen_version BIGINT NOT NULL     -- the newest state version whose caches it has dropped
        )""",
        """CREATE TABLE trigger_slots (
            trigger_id VARCHAR NOT NULL,
            slot TIMESTAMP NOT NULL,         -- the cron slot (UTC)
            replica VARCHAR NOT NULL,        -- the server that fired it
            claimed_at TIMESTAMP NOT NULL,
            PRIMARY KEY (trigger_id, slot)
        )""",
        """CREATE TABLE webhook_signatures (
            key VARCHAR PRIMARY KEY,         -- trigger id and the accepted signature
            expires_at DOUBLE NOT NULL       -- unix seconds: after this the timestamp check refuses it anyway
        )""",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)
