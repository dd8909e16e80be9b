"""Endpoint keys: who may call an environment's endpoints (``rf keys``).

A key belongs to one environment: a staging key opens ``/staging/...`` and
nothing else. The key is 256 random bits shown once at creation; the store
keeps its SHA-256 (a fast hash is enough for a random key: there is nothing
to guess) and the first characters, so a list can say which key is which.
The server checks a presented key against an in-memory map of live hashes,
refreshed whenever a key is created or revoked — one hash and one dict
lookup per request.

Keys are access control, not production state: creating or revoking a
production key changes who may call production, never what production
runs, so it is not a release (like credentials, which are shared).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from rf.config import check_name
from rf.errors import NotFound, UsageError
from rf.ids import new_id, utcnow
from rf.models import EndpointKey, KeyCreated, check_env
from rf.services.base import ServiceContext

_ENV_TAG = {"staging": "stg", "production": "prd"}


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class KeysService:
    """Endpoint keys: create, list, revoke, and the check of a presented key."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.store = ctx.store
        self._key_cache: dict[str, tuple[str, str]] | None = None
        self._key_lock = threading.Lock()

    def create_key(self, env: str, name: str = "default", author: str = "unknown") -> KeyCreated:
        """A new endpoint key for ``env``: returned once, stored as its hash."""
        check_env(env)
        check_name("key", name)
        if any(k["name"] == name for k in self.store.key_rows(env)):
            raise UsageError(f"{env} already has a key named {name!r}",
                             f"pick another --name, or revoke it first: rf keys revoke {name} --env {env}")
        secret = f"rf_{_ENV_TAG[env]}_{secrets.token_urlsafe(32)}"
        key_id = new_id("key")
        with self.store.unit_of_work() as tx:
            tx.keys.insert_key(key_id=key_id, env=env, name=name, prefix=secret[:11],
                                  key_hash=key_hash(secret), created_by=author, now=utcnow())
        self._key_cache = None
        row = next(r for r in self.store.key_rows(env) if r["id"] == key_id)
        return KeyCreated(key=EndpointKey(**row), secret=secret)

    def list_keys(self, env: str | None = None, include_revoked: bool = False) -> list[EndpointKey]:
        """Endpoint keys (metadata only), of one environment or both."""
        if env is not None:
            check_env(env)
        return [EndpointKey(**r) for r in self.store.key_rows(env, include_revoked=include_revoked)]

    def revoke_key(self, key: str, env: str | None = None) -> EndpointKey:
        """Revoke a key by id or name (``env`` when both environments have that name)."""
        if env is not None:
            check_env(env)
        rows = [r for r in self.store.key_rows(env) if key in (r["id"], r["name"])]
        if not rows:
            where = f" in {env}" if env else ""
            raise NotFound(f"no live endpoint key {key!r}{where}", "see them with: rf keys list")
        if len(rows) > 1:
            raise UsageError(f"both environments have a key named {key!r}", "say which with --env")
        with self.store.unit_of_work() as tx:
            tx.keys.revoke_key_row(rows[0]["id"], utcnow())
        self._key_cache = None
        return EndpointKey(**next(r for r in self.store.key_rows(include_revoked=True) if r["id"] == rows[0]["id"]))

    def has_endpoint_keys(self, env: str) -> bool:
        return any(e == env for e, _ in self._live_keys().values())

    def check_endpoint_key(self, env: str, presented: str) -> bool:
        """Whether ``presented`` is a live key of ``env`` (constant-time on the hash)."""
        if not presented:
            return False
        found = self._live_keys().get(key_hash(presented))
        return found is not None and hmac.compare_digest(found[0], env)

    def _live_keys(self) -> dict[str, tuple[str, str]]:
        cache = self._key_cache
        if cache is None:
            with self._key_lock:
                cache = self._key_cache
                if cache is None:
                    cache = self._key_cache = self.store.live_key_hashes()
        return cache
