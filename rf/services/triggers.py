"""Triggers: run agents without a caller. Each trigger belongs to ONE environment.

New triggers are staging edits, and staging triggers are edited directly
(``edit_trigger``, ``set_trigger_enabled``). A production trigger exists only
as a staged copy of a staging one (``duplicate_trigger(id, env="production")``),
which is a release item and goes live when published. A live production
trigger is never changed directly: ``edit_trigger(id, env="production", ...)``
(pause, resume, schedule, input, agent...) *stages* the change (table
``trigger_changes``) as the release item ``trigger:ID``, before → after, and
``now=True`` publishes that one item at once through the releases service
(an explicit, recorded one-item release: the emergency stop). A staged,
never-published copy may be discarded.

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
from rf.models import Execution, ReleaseItem, Trigger, TriggerChangeResult, check_env
from rf.services.base import ServiceContext

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rf.services.agents import AgentsService
    from rf.services.releases import Publisher
    from rf.services.scheduler import TriggerHealth
    from rf.store.interfaces import Repositories

KINDS = ("schedule", "webhook", "watch")
#: Fields that define what a trigger does (a published copy must match them).
CONFIG_FIELDS = ("name", "kind", "agent", "schedule", "timezone", "watch_path", "input", "headers", "accept",
                 "overlap", "catch_up")


#: What a production trigger's release item compares: its config and whether it is enabled.
STATE_FIELDS = (*CONFIG_FIELDS, "enabled")
#: Labels of state fields in change summaries.
STATE_LABELS = {"name": "name", "kind": "kind", "agent": "agent", "schedule": "schedule", "timezone": "timezone",
                "watch_path": "watch path", "input": "input", "headers": "headers", "accept": "body",
                "overlap": "overlap", "catch_up": "catch up", "enabled": "enabled"}


def trigger_state(t: Trigger | dict[str, Any]) -> dict[str, Any]:
    """A trigger's state as a release item sees it (config + enabled)."""
    get = t.get if isinstance(t, dict) else lambda f: getattr(t, f)
    return {f: get(f) for f in STATE_FIELDS}


#: The staged change (and a release item's ``after``) that removes a live production trigger.
REMOVED: dict[str, Any] = {"removed": True}


def is_removal(state: Any) -> bool:
    """Is this state the :data:`REMOVED` marker?"""
    return isinstance(state, dict) and state.get("removed") is True


def normalized_state(state: Any) -> dict[str, Any] | None:
    """Release items recorded before ``enabled`` was part of the state meant enabled."""
    if state is None:
        return None
    if is_removal(state):
        return dict(REMOVED)
    return {**state, "enabled": bool(state.get("enabled", True))}


def _short_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:39] + "…"


def describe_trigger_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``pause``, ``resume``, ``schedule */5 * * * * → 0 * * * *``... (comma separated)."""
    parts = []
    if before.get("enabled", True) != after.get("enabled", True):
        parts.append("resume" if after.get("enabled", True) else "pause")
    for f in CONFIG_FIELDS:
        if before.get(f) != after.get(f):
            parts.append(f"{STATE_LABELS[f]} {_short_value(before.get(f))} → {_short_value(after.get(f))}")
    return ", ".join(parts) or "no change"


def validate_cron(expr: str) -> str:
    from croniter import croniter

    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise UsageError(f"invalid cron expression {expr!r}",
                         'use five fields: minute hour day-of-month month day-of-week, e.g. "*/5 * * * *"'
                         ' (a sixth, last, is seconds)')
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


class TriggersService:
    """Triggers (each bound to one environment) and firing them; the release plug-in of kind
    ``trigger`` (a production trigger's change goes through *publisher*, the releases domain;
    firing runs the agent through *agents*)."""

    def __init__(self, ctx: ServiceContext, agents: AgentsService, publisher: Publisher) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.agents = agents
        self.publisher = publisher
        #: In the server: the last errors of the scheduler's watchers and tick loop (set by its Scheduler).
        self.trigger_health: TriggerHealth | None = None

    # ------------------------------------------------------------ reading
    def _trigger_model(self, row: dict[str, Any], now: dt.datetime | None = None,
                       staged: dict[str, Any] | None = None) -> Trigger:
        t = Trigger(**row)
        if staged is not None and t.env == "production" and t.live:
            after = normalized_state(staged)
            assert after is not None
            if is_removal(after):
                t.staged_change = after
                t.staged_summary = "remove from production"
            elif after != trigger_state(t):
                t.staged_change = after
                t.staged_summary = describe_trigger_change(trigger_state(t), after)
        if t.kind == "schedule" and t.schedule and t.enabled and t.live:
            base = parse_iso(t.last_scheduled_at) if t.last_scheduled_at else (now or utcnow())
            base = max(base, now or utcnow())
            from rf.ids import iso

            try:
                t.next_fire_at = iso(next_fire(t.schedule, t.timezone, base))
            except (KeyError, ValueError):  # a time zone this machine lacks, say: the scheduler reports it
                t.next_fire_at = None
        if t.kind == "webhook":
            t.url = f"/{t.env}/hooks/{t.id}"
        health = self.trigger_health
        if health is not None and t.live and t.enabled and t.kind in ("schedule", "watch"):
            from rf.services.scheduler import TICK_KEY

            # A schedule trigger also shows the tick loop's error: the one still failing, else the latest.
            records = [h for h in (health.get(t.id), health.get(TICK_KEY) if t.kind == "schedule" else None)
                       if h is not None]
            if records:
                h = max(records, key=lambda r: (r.retry_at is not None, r.error_at or ""))
                t.error, t.error_at, t.restarts, t.retry_at = h.error, h.error_at, h.restarts, h.retry_at
        return t

    def list_triggers(self, env: str = "staging") -> list[Trigger]:
        check_env(env)
        now = utcnow()
        staged = self.store.trigger_changes() if env == "production" else {}
        return [self._trigger_model(r, now, staged.get(r["id"])) for r in self.store.trigger_rows(env)]

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
        staged = self.store.trigger_changes().get(row["id"]) if row["env"] == "production" else None
        return self._trigger_model(row, staged=staged)

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
        from rf.models import require_staging

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
        with self._forget_secret_on_error(trigger_id if secret else None), self.store.unit_of_work() as tx:
            tx.triggers.insert_trigger(row, utcnow())
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
        with self._forget_secret_on_error(new if secret else None), self.store.unit_of_work() as tx:
            tx.triggers.insert_trigger(row, utcnow())
        t = self.get_trigger(new)
        t.secret = secret
        return t

    def _editable(self, trigger_id: str, what: str, command: str = "edit") -> Trigger:
        t = self.get_trigger(trigger_id)
        if t.env == "production":
            raise ProductionReadOnly(
                f"production is read-only: cannot {what} trigger {t.id} directly",
                f"stage it as a release item: rf triggers {command} {t.id} --env production, then publish it "
                f"(rf releases publish trigger:{t.id}), or add --now to publish that one change at once",
            )
        return t

    def set_trigger_enabled(self, trigger_id: str, enabled: bool) -> Trigger:
        t = self._editable(trigger_id, "enable" if enabled else "disable", "resume" if enabled else "pause")
        with self.store.unit_of_work() as tx:
            tx.triggers.update_trigger(t.id, utcnow(), enabled=enabled)
        return self.get_trigger(t.id)

    def delete_trigger(self, trigger_id: str, env: str | None = None, now: bool = False, author: str = "unknown",
                       message: str = "", preview: bool = False) -> TriggerChangeResult:
        """Delete a trigger. A staging trigger, or a production copy never published, goes at once.

        A *live* production trigger is never deleted directly: its removal is staged as the
        release item ``trigger:ID`` ("remove from production"), published like any other
        change; ``now=True`` publishes that one item at once (a recorded one-item release).
        Rolling that release back restores the trigger, webhook secret included (the secret
        of a removed production webhook stays in the keyring for that reason). ``env``, when
        given, must be the trigger's environment; ``preview`` changes nothing.
        """
        t = self.get_trigger(trigger_id, env)
        if now and not (t.env == "production" and t.live):
            raise UsageError("--now applies to live production triggers: this delete takes effect at once anyway")
        if t.env == "production" and t.live:
            with self.store.write_lock:
                t = self.get_trigger(t.id)
                live = trigger_state(t)
                item = ReleaseItem(kind="trigger", name=t.id, summary=f"trigger {t.name} (production): remove from "
                                   "production", before=live, after=dict(REMOVED))
                if preview:
                    return TriggerChangeResult(trigger=t, changed=True, staged=not now, summary="remove from production",
                                               item=item)
                with self.store.unit_of_work() as tx:
                    tx.triggers.put_trigger_change(t.id, dict(REMOVED), utcnow())
            if not now:
                return TriggerChangeResult(trigger=self.get_trigger(t.id), changed=True, staged=True,
                                           summary="remove from production", item=item)
            release = self.publisher.publish_release(
                [f"trigger:{t.id}"], author=author, message=message or f"remove trigger {t.name} from production now")
            return TriggerChangeResult(trigger=t, changed=True, summary="remove from production",
                                       item=release.items[0], release_id=release.id)
        if preview:
            return TriggerChangeResult(trigger=t, changed=True, summary="delete")
        with self.store.unit_of_work() as tx:
            tx.triggers.delete_trigger(t.id)
        if t.kind == "webhook":
            self._delete_webhook_secret(t)
        return TriggerChangeResult(trigger=t, changed=True, summary="delete")

    # ------------------------------------------------------------ editing
    def edit_trigger(
        self,
        trigger_id: str,
        env: str = "staging",
        schedule: str | None = None,
        timezone: str | None = None,
        input: Any = None,
        clear_input: bool = False,
        agent: str | None = None,
        name: str | None = None,
        enabled: bool | None = None,
        overlap: str | None = None,
        catch_up: str | None = None,
        now: bool = False,
        author: str = "unknown",
        message: str = "",
        preview: bool = False,
    ) -> TriggerChangeResult:
        """Change a trigger; only the arguments given (not None) change.

        ``env`` names the trigger's environment (a production trigger is only changed
        with ``env="production"``). A staging trigger, or a production copy not yet
        published, changes at once. A live production trigger's change is *staged*:
        the release item ``trigger:ID`` (before → after) publishes it, and ``now=True``
        publishes that one item at once (a recorded one-item release, through
        ``publish_release``; never a direct write). ``preview=True`` changes nothing
        and answers what would change (the item's before → after), for a confirmation.
        """
        check_env(env)
        t = self.get_trigger(trigger_id)
        if t.env != env:
            if t.env == "production":
                raise ProductionReadOnly(
                    f"production is read-only: trigger {t.id} is a production trigger",
                    f"stage the change for it: rf triggers edit {t.id} --env production ... (or pause/resume), "
                    f"then publish it (rf releases publish trigger:{t.id}), or add --now to publish it at once")
            raise NotFound(f"no trigger {t.id!r} in {env}", f"it is a {t.env} trigger: use --env {t.env}")
        if now and t.env != "production":
            raise UsageError("--now applies to production triggers: a staging change applies at once")
        changes = {"schedule": schedule, "timezone": timezone, "agent": agent, "name": name, "enabled": enabled,
                   "overlap": overlap, "catch_up": catch_up}
        with self.store.write_lock:
            t = self.get_trigger(t.id)
            current = trigger_state(t)
            if t.env == "production" and t.live:
                return self._stage_production_change(t, changes, input, clear_input, now, author, message, preview)
            after = self._changed_state(t, current, changes, input, clear_input)
            if after == current:
                return TriggerChangeResult(trigger=t, changed=False, summary="no change")
            summary = describe_trigger_change(current, after)
            if preview:
                item = ReleaseItem(kind="trigger", name=t.id, summary=f"trigger {t.name} ({t.env}): {summary}",
                                   before=current, after=after)
                return TriggerChangeResult(trigger=t, changed=True, summary=summary, item=item,
                                           staged=t.env == "production" and not now)
            with self.store.unit_of_work() as tx:
                extra = {"last_scheduled_at": utcnow()} if self._restarts_schedule(current, after) else {}
                tx.triggers.set_trigger_state(t.id, after, utcnow(), **extra)
            if now:  # a staged production copy: publish it (it goes live) as a one-item release
                release = self.publisher.publish_release([f"trigger:{t.id}"], author=author,
                                               message=message or f"publish trigger {t.name} (production)")
                return TriggerChangeResult(trigger=self.get_trigger(t.id), changed=True, summary=summary,
                                           item=release.items[0], release_id=release.id)
            return TriggerChangeResult(trigger=self.get_trigger(t.id), changed=True, summary=summary,
                                       staged=t.env == "production")

    def _stage_production_change(self, t: Trigger, changes: dict[str, Any], input: Any, clear_input: bool,
                                 now: bool, author: str, message: str, preview: bool) -> TriggerChangeResult:
        """Stage (and with ``now`` publish) a change of a live production trigger. Called under the write lock."""
        live = trigger_state(t)
        earlier = t.staged_change  # a change already staged (None: none)
        if now:
            # Publish exactly live + these changes; an earlier staged change stays pending, with them on top.
            after = self._changed_state(t, live, changes, input, clear_input)
        else:  # on top of a change already staged (a staged removal is replaced by this change)
            base = live if earlier is None or is_removal(earlier) else earlier
            after = self._changed_state(t, base, changes, input, clear_input)
        summary = describe_trigger_change(live, after)
        label = f"trigger {t.name} (production): {summary}"
        if preview:
            if after == live:
                return TriggerChangeResult(trigger=t, changed=earlier is not None and not now,
                                           summary="no change" if earlier is None or now else "staged change discarded")
            return TriggerChangeResult(trigger=t, changed=True, staged=not now, summary=summary,
                                       item=ReleaseItem(kind="trigger", name=t.id, summary=label, before=live,
                                                        after=after))
        with self.store.unit_of_work() as tx:
            if after == live:
                tx.triggers.delete_trigger_change(t.id)
            else:
                tx.triggers.put_trigger_change(t.id, after, utcnow())
        if after == live:
            if now and earlier is not None:  # nothing to publish; the earlier staged change stays
                with self.store.unit_of_work() as tx:
                    tx.triggers.put_trigger_change(t.id, earlier, utcnow())
            return TriggerChangeResult(trigger=self.get_trigger(t.id), changed=earlier is not None and not now,
                                       summary="no change" if earlier is None or now else "staged change discarded")
        if not now:
            item = ReleaseItem(kind="trigger", name=t.id, summary=label, before=live, after=after)
            return TriggerChangeResult(trigger=self.get_trigger(t.id), changed=True, staged=True, summary=summary,
                                       item=item)
        release = self.publisher.publish_release(
            [f"trigger:{t.id}"], author=author, message=message or f"{summary} trigger {t.name} (production) now")
        if earlier is not None and not is_removal(earlier):
            rebased = self._changed_state(t, earlier, changes, input, clear_input)
            with self.store.unit_of_work() as tx:
                if rebased != after:
                    tx.triggers.put_trigger_change(t.id, rebased, utcnow())
        return TriggerChangeResult(trigger=self.get_trigger(t.id), changed=True, summary=summary,
                                   item=release.items[0], release_id=release.id)

    def _changed_state(self, t: Trigger, base: dict[str, Any], changes: dict[str, Any], input: Any,
                       clear_input: bool) -> dict[str, Any]:
        """``base`` with ``changes`` applied, validated like a new trigger's."""
        state = dict(base)
        if changes["schedule"] is not None or changes["timezone"] is not None:
            if t.kind != "schedule":
                raise UsageError(f"trigger {t.id} is a {t.kind} trigger: only schedule triggers have a schedule")
            if changes["schedule"] is not None:
                state["schedule"] = validate_cron(changes["schedule"])
            if changes["timezone"] is not None:
                state["timezone"] = validate_timezone(changes["timezone"] or None) if changes["timezone"] else None
        if changes["agent"] is not None:
            check_name("agent", changes["agent"])
            if not self.store.agent_rows(changes["agent"]):
                raise NotFound(f"unknown agent {changes['agent']!r}", f"deploy it first: rf agents deploy {changes['agent']}")
            state["agent"] = changes["agent"]
        if changes["name"] is not None:
            if not isinstance(changes["name"], str) or not changes["name"].strip():
                raise UsageError("a trigger's name cannot be empty")
            state["name"] = changes["name"].strip()
        if changes["enabled"] is not None:
            state["enabled"] = bool(changes["enabled"])
        if changes["overlap"] is not None:
            if changes["overlap"] not in ("skip", "allow"):
                raise UsageError("overlap must be skip or allow")
            state["overlap"] = changes["overlap"]
        if changes["catch_up"] is not None:
            if changes["catch_up"] not in ("none", "last"):
                raise UsageError("catch_up must be none or last")
            state["catch_up"] = changes["catch_up"]
        if clear_input and input is not None:
            raise UsageError("give either a new input or clear it, not both")
        if clear_input:
            state["input"] = None
        elif input is not None:
            if t.kind == "watch" and not isinstance(input, dict):
                raise UsageError("a watch trigger's input must be a JSON object (the changes are added to it)")
            state["input"] = input
        return state

    @staticmethod
    def _restarts_schedule(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
        """Slots count from now when a trigger goes live, is resumed or gets a new schedule
        (a paused trigger never fires the slots it missed)."""
        if before is None:
            return True
        return (after.get("enabled", True) and not before.get("enabled", True)) or any(
            before.get(f) != after.get(f) for f in ("schedule", "timezone"))

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
        if not t.enabled:
            raise Conflict(f"trigger {t.id} is {'paused' if t.env == 'production' else 'disabled'}: it does not fire",
                           f"resume it: rf triggers resume {t.id} --env production --now" if t.env == "production"
                           else f"enable it: rf triggers enable {t.id}")
        payload = input if input is not None else self.trigger_input(t)
        return self.agents.invoke(t.env, t.agent, payload, None, f"trigger:{t.id}")

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
            replay_key, expiry = f"{trigger_id}:{matched}", stamp + WEBHOOK_TOLERANCE_S + 1
            if self.store.shared:  # replicas: the signatures every server accepted, in the store
                fresh = self.store.claim_webhook_signature(replay_key, expiry)
            else:
                guard = replay_guard(self.workspace.state_dir if self.workspace is not None else None)
                fresh = guard.check_and_add(replay_key, expiry, now)
            if not fresh:
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
        return self.agents.invoke(env, t.agent, payload, None, f"trigger:{t.id}")

    # ------------------------------------------------------------ releases plug-in
    @staticmethod
    def _trigger_config(t: Trigger) -> dict[str, Any]:
        return {f: getattr(t, f) for f in CONFIG_FIELDS}

    def release_pending(self) -> list[ReleaseItem]:
        """Staged production copies (new, go live when published) and the changes staged
        for live production triggers (pause, resume, edits), each before → after."""
        items = []
        changes = self.store.trigger_changes()
        for row in self.store.trigger_rows("production"):
            t = self._trigger_model(row)
            if not row["live"]:
                what = {"schedule": f"schedule {t.schedule}" + (f" ({t.timezone})" if t.timezone else ""),
                        "webhook": "webhook", "watch": f"watch {t.watch_path}"}[t.kind]
                paused = "" if t.enabled else " (paused)"
                items.append(ReleaseItem(kind="trigger", name=t.id,
                                         summary=f"new {what} → agent {t.agent} ({t.name}){paused}",
                                         before=None, after=trigger_state(t)))
                continue
            staged = normalized_state(changes.get(t.id))
            current = trigger_state(t)
            if is_removal(staged):
                items.append(ReleaseItem(kind="trigger", name=t.id, before=current, after=dict(REMOVED),
                                         summary=f"trigger {t.name} (production): remove from production"))
            elif staged is not None and staged != current:
                items.append(ReleaseItem(
                    kind="trigger", name=t.id, before=current, after=staged,
                    summary=f"trigger {t.name} (production): {describe_trigger_change(current, staged)}"))
        return items

    def release_apply(self, tx: Repositories, name: str, before: Any, after: Any) -> None:
        """Make production trigger ``name`` the state ``after`` (None: not live, i.e. staged again)."""
        row = tx.triggers.get_trigger_row(name)
        if row is not None and row["env"] != "production":
            raise Conflict(f"trigger {name} is not a production trigger", "re-run rf releases plan")
        if row is None:
            current: dict[str, Any] | None = dict(REMOVED)
        else:
            current = trigger_state(row) if row["live"] else None
        if current != normalized_state(before):
            if row is None:
                raise Conflict(f"production trigger {name} no longer exists", "re-run rf releases plan")
            raise Conflict(f"production changed since the plan: trigger {name}", "re-run rf releases plan")
        now = utcnow()
        if is_removal(after):  # removed from production (its webhook secret stays, for a rollback)
            tx.triggers.delete_trigger(name)  # (and its staged change)
            return
        if after is None:
            tx.triggers.update_trigger(name, now, live=False)
            return
        state = normalized_state(after)
        assert state is not None
        if row is None:  # a rollback of its removal: the trigger comes back as it was
            tx.triggers.insert_trigger({"id": name, "env": "production", **state, "live": True}, now)
            tx.triggers.update_trigger(name, now, last_scheduled_at=now)
            return
        extra: dict[str, Any] = {"live": True}
        # Published (or resumed, or rescheduled): slots count from now, never the ones missed meanwhile.
        if self._restarts_schedule(current, state):
            extra["last_scheduled_at"] = now
        tx.triggers.set_trigger_state(name, state, now, **extra)
        staged = tx.triggers.trigger_changes().get(name)
        if staged is not None and normalized_state(staged) == state:
            tx.triggers.delete_trigger_change(name)
