"""Triggers: run agents without a caller. Each trigger belongs to ONE environment.

New triggers are staging edits. A production trigger exists only as a staged
copy of a staging one (``duplicate_trigger(id, env="production")``), which is
a release item and goes live when published. Production triggers cannot be
edited, enabled/disabled or deleted directly (a staged, never-published copy
may be discarded).

Firing runs the agent with ``Services.invoke`` in the trigger's environment
(so it uses that environment's commit) with source ``trigger:<id>``; nothing
here can make a trigger fire in the other environment. The scheduler that
decides *when* lives in :mod:`rf.services.scheduler` and runs inside the
server.

Webhooks (``POST /{env}/hooks/{id}``) must be signed: header
``X-RF-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``
(several ``v1=`` values are accepted, so a secret can be rotated). A
timestamp more than :data:`WEBHOOK_TOLERANCE_S` away from the server's clock
is refused, and so is a signature already accepted (:class:`ReplayGuard`).
Every refusal — unknown trigger, the other environment's trigger, a disabled
or not-yet-live one, no signature, a wrong one, a stale one, a replay — is
the same 401 answer (:func:`webhook_refused`), so a caller learns nothing
about which trigger ids exist; the server log says which it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import heapq
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rf.config import check_name
from rf.errors import Conflict, NotFound, ProductionReadOnly, RfError, Unauthorized, UsageError
from rf.ids import new_id, parse_iso, utcnow
from rf.models import Execution, ReleaseItem, Trigger, check_env
from rf.services.base import ServiceBase

if TYPE_CHECKING:
    from collections.abc import Iterator

    import duckdb

KINDS = ("schedule", "webhook", "watch")
#: Fields that define what a trigger does (a published copy must match them).
CONFIG_FIELDS = ("name", "kind", "agent", "schedule", "timezone", "watch_path", "input", "headers", "accept",
                 "overlap", "catch_up")


def validate_cron(expr: str) -> str:
    from croniter import croniter

    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise UsageError(f"invalid cron expression {expr!r}",
                         'use five fields: minute hour day-of-month month day-of-week, e.g. "*/5 * * * *"')
    return expr


def validate_timezone(name: str | None) -> str | None:
    if name is None:
        return None
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown timezone {name!r}", "use an IANA name such as Europe/Paris or UTC") from None
    return name


def next_fire(schedule: str, timezone: str | None, after: dt.datetime) -> dt.datetime:
    """The first cron slot strictly after ``after`` (naive UTC in, naive UTC out)."""
    import zoneinfo

    from croniter import croniter

    tz = zoneinfo.ZoneInfo(timezone or "UTC")
    local = after.replace(tzinfo=dt.UTC).astimezone(tz)
    nxt: dt.datetime = croniter(schedule, local).get_next(dt.datetime)
    return nxt.astimezone(dt.UTC).replace(tzinfo=None)


def _secret_name(trigger_id: str) -> str:
    return f"webhook-{trigger_id}"


log = logging.getLogger("rf.triggers")

# ---------------------------------------------------------------- webhook signatures

#: How far a signature's timestamp may be from the server's clock (seconds, either way).
WEBHOOK_TOLERANCE_S = 300
#: The request header carrying ``t=...,v1=...``.
SIGNATURE_HEADER = "X-RF-Signature"
#: At most this many accepted signatures are remembered at once (5 minutes' worth).
REPLAY_MAX_ENTRIES = 100_000
_MAX_HEADER = 2048
_MAX_V1 = 8


def sign_webhook(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-RF-Signature`` value for ``body`` sent at ``timestamp`` (default now)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def parse_signature(header: str) -> tuple[int, list[str]] | None:
    """``(timestamp, [v1 hex digests])`` from an ``X-RF-Signature`` value; None when malformed."""
    if not header or len(header) > _MAX_HEADER:
        return None
    t: int | None = None
    v1: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        value = value.strip()
        if key == "t":
            if t is not None or not (value.isascii() and value.isdigit()) or len(value) > 12:
                return None
            t = int(value)
        elif key == "v1":
            value = value.lower()
            if len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
                return None
            v1.append(value)
        # other schemes (v0, ...) are ignored, as in Stripe's
    if t is None or not v1 or len(v1) > _MAX_V1:
        return None
    return t, v1


def webhook_refused() -> Unauthorized:
    """The one answer to every refused webhook request (a caller cannot tell why)."""
    return Unauthorized("webhook signature missing, wrong or expired",
                        "sign t.body with the trigger's secret; see rf triggers show ID")


class TooManyWebhooks(RfError):
    """More correctly signed webhook requests in the window than the replay guard can remember."""

    code = "too_many_requests"
    http_status = 429


class ReplayGuard:
    """Signatures accepted in the last :data:`WEBHOOK_TOLERANCE_S` seconds (either side).

    A signature is remembered until its timestamp leaves the window (after that the
    timestamp check refuses it anyway), so memory is bounded by the request rate; past
    ``max_entries`` live entries new requests are refused (fail closed) rather than an
    entry forgotten early. With a ``path``, each accepted signature is also appended
    to that file and the live ones are read back when the server starts again, so a
    restart does not reopen the window. Only correctly signed requests are recorded:
    a caller without the secret cannot fill it.
    """

    def __init__(self, path: Path | None = None, max_entries: int = REPLAY_MAX_ENTRIES) -> None:
        self.path = path
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._appended = 0
        self._loaded = False

    def _prune(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            expiry, key = heapq.heappop(heap)
            if self._expiry.get(key) == expiry:
                del self._expiry[key]

    def _load(self, now: float) -> None:
        self._loaded = True
        if self.path is None:
            return
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read %s (%s): webhook replays are checked from now on only", self.path, exc)
            return
        for line in lines:
            expiry_text, _, key = line.partition(" ")
            try:
                expiry = float(expiry_text)
            except ValueError:
                continue
            if key and expiry > now and len(self._expiry) < self.max_entries:
                self._expiry[key] = expiry
                heapq.heappush(self._heap, (expiry, key))
        self._compact()

    def _compact(self) -> None:
        """Rewrite the file with the live entries only (atomically)."""
        if self.path is None:
            return
        import tempfile

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".webhook-seen-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(f"{expiry:.0f} {key}\n" for key, expiry in self._expiry.items())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write %s (%s)", self.path, exc)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
        self._appended = 0

    def check_and_add(self, key: str, expiry: float, now: float) -> bool:
        """Remember ``key`` until ``expiry``; False if it was already there (a replay)."""
        with self._lock:
            if not self._loaded:
                self._load(now)
            self._prune(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self.max_entries:
                raise TooManyWebhooks(
                    f"more than {self.max_entries} signed webhook requests in {2 * WEBHOOK_TOLERANCE_S // 60} minutes",
                    "retry in a few seconds")
            self._expiry[key] = expiry
            heapq.heappush(self._heap, (expiry, key))
            if self.path is not None:
                if self._appended > max(1024, 2 * len(self._expiry)):
                    self._compact()
                else:
                    try:
                        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # owner-only
                        with os.fdopen(fd, "a", encoding="utf-8") as f:
                            f.write(f"{expiry:.0f} {key}\n")
                        self._appended += 1
                    except OSError as exc:
                        log.warning("cannot write %s (%s)", self.path, exc)
            return True

    def __len__(self) -> int:
        return len(self._expiry)


_GUARDS: dict[str, ReplayGuard] = {}
_GUARDS_LOCK = threading.Lock()


def replay_guard(state_dir: Path | None) -> ReplayGuard:
    """The process's guard for one workspace (``.rf/webhook-signatures``), or an in-memory one."""
    key = str(state_dir) if state_dir is not None else ""
    with _GUARDS_LOCK:
        guard = _GUARDS.get(key)
        if guard is None:
            guard = _GUARDS[key] = ReplayGuard(state_dir / "webhook-signatures" if state_dir is not None else None)
        return guard


class TriggersService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""

    # ------------------------------------------------------------ reading
    def _trigger_model(self, row: dict[str, Any], now: dt.datetime | None = None) -> Trigger:
        t = Trigger(**row)
        if t.kind == "schedule" and t.schedule and t.enabled and t.live:
            base = parse_iso(t.last_scheduled_at) if t.last_scheduled_at else (now or utcnow())
            base = max(base, now or utcnow())
            from rf.ids import iso

            t.next_fire_at = iso(next_fire(t.schedule, t.timezone, base))
        if t.kind == "webhook":
            t.url = f"/{t.env}/hooks/{t.id}"
        return t

    def list_triggers(self, env: str = "staging") -> list[Trigger]:
        check_env(env)
        now = utcnow()
        return [self._trigger_model(r, now) for r in self.store.trigger_rows(env)]

    def get_trigger(self, trigger_id: str, env: str | None = None) -> Trigger:
        row = self.store.get_trigger_row(trigger_id)
        if row is None:
            matches = self.store.find_triggers(trigger_id)
            if len(matches) == 1:
                row = self.store.get_trigger_row(matches[0])
            elif len(matches) > 1:
                raise UsageError(f"{trigger_id!r} matches more than one trigger", "use the full id")
        if row is None or (env is not None and row["env"] != check_env(env)):
            where = f" in {env}" if env else ""
            raise NotFound(f"no trigger {trigger_id!r}{where}", "list them: rf triggers list --env ENV")
        return self._trigger_model(row)

    # ------------------------------------------------------------ creating (staging)
    def create_trigger(
        self,
        agent: str,
        kind: str,
        schedule: str | None = None,
        timezone: str | None = None,
        watch_path: str | None = None,
        input: Any = None,
        name: str | None = None,
        headers: list[str] | None = None,
        accept: str = "json",
        overlap: str = "skip",
        catch_up: str = "none",
        env: str = "staging",
    ) -> Trigger:
        """A new trigger in **staging** (new triggers are staging edits)."""
        from rf.services.core import require_staging

        require_staging(env, "create triggers there",
                        "create it in staging, then stage a production copy: rf triggers duplicate ID --env production")
        check_name("agent", agent)
        if not self.store.agent_rows(agent):
            raise NotFound(f"unknown agent {agent!r}", f"deploy it first: rf agents deploy {agent}")
        if kind not in KINDS:
            raise UsageError(f"unknown trigger kind {kind!r}", "use --schedule CRON, --webhook or --watch PATH")
        if overlap not in ("skip", "allow"):
            raise UsageError("overlap must be skip or allow")
        if catch_up not in ("none", "last"):
            raise UsageError("catch_up must be none or last")
        if accept not in ("json", "text"):
            raise UsageError("accept must be json or text")
        fields: dict[str, Any] = {}
        if kind == "schedule":
            if not schedule:
                raise UsageError("a schedule trigger needs a cron expression", 'e.g. --schedule "*/5 * * * *"')
            fields["schedule"] = validate_cron(schedule)
            fields["timezone"] = validate_timezone(timezone)
        elif timezone is not None:
            raise UsageError("--tz applies to schedule triggers only")
        if kind == "watch":
            if not watch_path:
                raise UsageError("a watch trigger needs a path", "e.g. --watch ./inbox")
            path = Path(watch_path).expanduser()
            if not path.is_absolute() and self.workspace is not None:
                path = self.workspace.root / path
            if not path.exists():
                raise UsageError(f"watch path {str(path)!r} does not exist", "create it first, or fix the path")
            fields["watch_path"] = str(path.resolve())
        if input is not None and kind == "watch" and not isinstance(input, dict):
            raise UsageError("a watch trigger's --input must be a JSON object (the changes are added to it)")
        trigger_id = new_id("tr")
        row = {
            "id": trigger_id, "env": env, "name": name or f"{agent}-{kind}", "kind": kind, "agent": agent,
            "input": input, "headers": [h.lower() for h in (headers or [])], "accept": accept, "overlap": overlap,
            "catch_up": catch_up, "enabled": True, "live": True, **fields,
        }
        secret = self._new_webhook_secret(trigger_id) if kind == "webhook" else None
        with self._forget_secret_on_error(trigger_id if secret else None), self.store.transaction() as cur:
            self.store.insert_trigger(cur, row, utcnow())
        t = self.get_trigger(trigger_id)
        t.secret = secret
        return t

    def _new_webhook_secret(self, trigger_id: str) -> str:
        from rf.secrets import SecretStore

        value = secrets.token_urlsafe(24)
        SecretStore(self._workspace_id()).set(_secret_name(trigger_id), value)
        return value

    def _workspace_id(self) -> str:
        return self.workspace.id if self.workspace is not None else "in-memory"

    @contextlib.contextmanager
    def _forget_secret_on_error(self, trigger_id: str | None) -> Iterator[None]:
        """A secret stored for a trigger whose row could not be written is removed again."""
        try:
            yield
        except BaseException:
            if trigger_id is not None:
                from rf.secrets import SecretStore

                with contextlib.suppress(RfError):
                    SecretStore(self._workspace_id()).delete(_secret_name(trigger_id))
            raise

    def _delete_webhook_secret(self, t: Trigger) -> None:
        from rf.secrets import SecretStore

        try:
            SecretStore(self._workspace_id()).delete(_secret_name(t.id))
        except RfError as exc:
            raise RfError(f"deleted trigger {t.id}, but its webhook secret is still in the keyring: {exc.message}",
                          exc.hint) from None

    def duplicate_trigger(self, trigger_id: str, env: str = "production") -> Trigger:
        """Copy a trigger to the other environment. A production copy is STAGED:
        it is a release item and goes live only when published."""
        check_env(env)
        src = self.get_trigger(trigger_id)
        if src.env == env:
            raise UsageError(f"trigger {src.id} is already in {env}", "duplicate it into the other environment")
        new = new_id("tr")
        row = {f: getattr(src, f) for f in CONFIG_FIELDS}
        row.update({"id": new, "env": env, "enabled": True, "live": env == "staging", "source_id": src.id})
        secret = self._new_webhook_secret(new) if src.kind == "webhook" else None
        with self._forget_secret_on_error(new if secret else None), self.store.transaction() as cur:
            self.store.insert_trigger(cur, row, utcnow())
        t = self.get_trigger(new)
        t.secret = secret
        return t

    def _editable(self, trigger_id: str, what: str) -> Trigger:
        t = self.get_trigger(trigger_id)
        if t.env == "production":
            raise ProductionReadOnly(
                f"production is read-only: cannot {what} trigger {t.id}",
                "edit the staging trigger, then stage a copy (rf triggers duplicate ID --env production) and publish it",
            )
        return t

    def set_trigger_enabled(self, trigger_id: str, enabled: bool) -> Trigger:
        t = self._editable(trigger_id, "enable" if enabled else "disable")
        with self.store.transaction() as cur:
            self.store.update_trigger(cur, t.id, utcnow(), enabled=enabled)
        return self.get_trigger(t.id)

    def delete_trigger(self, trigger_id: str) -> Trigger:
        t = self.get_trigger(trigger_id)
        if t.env == "production" and t.live:
            raise ProductionReadOnly(
                f"production is read-only: cannot delete live trigger {t.id}",
                "roll back the release that published it: rf releases history, then rf releases rollback ID",
            )
        with self.store.transaction() as cur:
            self.store.delete_trigger(cur, t.id)
        if t.kind == "webhook":
            self._delete_webhook_secret(t)
        return t

    # ------------------------------------------------------------ firing
    def trigger_input(self, t: Trigger, extra: dict[str, Any] | None = None) -> Any:
        if extra is None:
            return t.input if t.input is not None else {}
        base = dict(t.input) if isinstance(t.input, dict) else {}
        base.update(extra)
        return base

    def fire_trigger(self, trigger_id: str, input: Any = None) -> Execution:
        """Run a trigger once now, in its own environment (``rf triggers fire``)."""
        t = self.get_trigger(trigger_id)
        if not t.live:
            raise Conflict(f"trigger {t.id} is staged for production and not live yet",
                           f"publish it: rf releases publish trigger:{t.id}")
        payload = input if input is not None else self.trigger_input(t)
        return self.invoke(t.env, t.agent, payload, None, f"trigger:{t.id}")  # type: ignore[attr-defined,no-any-return]

    def webhook(self, env: str, trigger_id: str, body: bytes, headers: dict[str, str]) -> Execution:
        """``POST /{env}/hooks/{id}``: check the signature, build the input, run the agent.

        Every refusal is the same :func:`webhook_refused` answer; the reason goes to the log.
        """
        check_env(env)
        now = time.time()
        lower = {k.lower(): v for k, v in headers.items()}
        row = self.store.get_trigger_row(trigger_id) if len(trigger_id) <= 64 else None
        from rf.secrets import SecretStore

        # Looked up whatever the row says, so an unknown id costs the same work as a known one.
        secret = SecretStore(self._workspace_id()).get(_secret_name(trigger_id[:64])) or ""
        reason = None
        if row is None or row["kind"] != "webhook":
            reason = "no such webhook trigger"
        elif row["env"] != env:
            reason = f"the trigger is in {row['env']}"
        elif not row["live"]:
            reason = f"the trigger is staged, not live: rf releases publish trigger:{trigger_id}"
        elif not row["enabled"]:
            reason = f"the trigger is disabled: rf triggers enable {trigger_id}"
        elif not secret:
            reason = "its secret is missing from the keyring"
        parsed = parse_signature(lower.get(SIGNATURE_HEADER.lower(), ""))
        if parsed is None:
            stamp, candidates = 0, ["0" * 64]
            reason = reason or f"no {SIGNATURE_HEADER} header, or a malformed one (t=UNIX_SECONDS,v1=HEX)"
        else:
            stamp, candidates = parsed
        key = (secret or "\0no secret").encode()
        expected = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        matched = None
        for candidate in candidates:  # each compared in constant time, all of them compared
            if hmac.compare_digest(candidate.encode(), expected.encode()):
                matched = candidate
        if reason is None and abs(now - stamp) > WEBHOOK_TOLERANCE_S:
            reason = f"the timestamp is {now - stamp:+.0f} s from the server's clock (at most ±{WEBHOOK_TOLERANCE_S})"
        if reason is None and matched is None:
            reason = "wrong signature (not HMAC-SHA256 of t.body with this trigger's secret)"
        if reason is None and matched is not None:
            guard = replay_guard(self.workspace.state_dir if self.workspace is not None else None)
            if not guard.check_and_add(f"{trigger_id}:{matched}", stamp + WEBHOOK_TOLERANCE_S + 1, now):
                reason = "a replay: this signature was already accepted"
        if reason is not None:
            log.warning("webhook %s %r refused: %s", env, trigger_id[:64], reason)
            raise webhook_refused()
        assert row is not None
        t = self._trigger_model(row)
        payload: Any
        if t.accept == "json":
            try:
                payload = json.loads(body) if body.strip() else {}
            except ValueError:
                raise UsageError("webhook body is not valid JSON", "send JSON, or create the trigger with --accept text") from None
        else:
            payload = body.decode("utf-8", errors="replace")
        if t.headers:
            payload = {"body": payload, "headers": {h: lower[h] for h in t.headers if h in lower}}
        if t.input is not None and isinstance(t.input, dict) and isinstance(payload, dict):
            payload = {**t.input, **payload}
        return self.invoke(env, t.agent, payload, None, f"trigger:{t.id}")  # type: ignore[attr-defined,no-any-return]

    # ------------------------------------------------------------ releases plug-in
    @staticmethod
    def _trigger_config(t: Trigger) -> dict[str, Any]:
        return {f: getattr(t, f) for f in CONFIG_FIELDS}

    def _release_pending_trigger(self) -> list[ReleaseItem]:
        items = []
        for row in self.store.trigger_rows("production"):
            if row["live"]:
                continue
            t = self._trigger_model(row)
            what = {"schedule": f"schedule {t.schedule}" + (f" ({t.timezone})" if t.timezone else ""),
                    "webhook": "webhook", "watch": f"watch {t.watch_path}"}[t.kind]
            items.append(ReleaseItem(kind="trigger", name=t.id, summary=f"new {what} → agent {t.agent} ({t.name})",
                                     before=None, after=self._trigger_config(t)))
        return items

    def _release_apply_trigger(self, cur: duckdb.DuckDBPyConnection, name: str, before: Any, after: Any) -> None:
        row = self.store.get_trigger_row(name, cur)
        if row is None or row["env"] != "production":
            raise Conflict(f"production trigger {name} no longer exists", "re-run rf releases plan")
        current = self._trigger_config(Trigger(**row)) if row["live"] else None
        if current != before:
            raise Conflict(f"production changed since the plan: trigger {name}", "re-run rf releases plan")
        if after is not None and self._trigger_config(Trigger(**row)) != after:
            raise Conflict(f"the staged trigger {name} changed since the plan", "re-run rf releases plan")
        # Published: live from now on; schedule slots count from the publish, not from creation.
        self.store.update_trigger(cur, name, utcnow(), live=after is not None, last_scheduled_at=utcnow())
