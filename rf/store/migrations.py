"""Schema migrations. Each entry upgrades the schema by one version.

The version lives in ``meta(key='schema_version')``. Opening a file written by
an older rf applies the missing steps in one transaction; a file written by a
newer rf is refused (we cannot know what its new columns mean).
"""

from __future__ import annotations

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
        # High-volume: written only through the batching writer (Appender).
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
            PRIMARY KEY (release_id, position)
        )""",
    ],
    # v2: prompts (prompts, prompt_versions, per-env pointers).
    [],
    # v3: credentials (metadata only; secrets live in the keyring) and connectors.
    [],
    # v4: LLM providers.
    [],
    # v5: sessions (threads, messages) and memory.
    [],
    # v6: trace spans.
    [],
]

SCHEMA_VERSION = len(MIGRATIONS)
