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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rf.config import check_name
from rf.errors import Conflict, NotFound, ProductionReadOnly, Unauthorized, UsageError
from rf.ids import new_id, parse_iso, utcnow
from rf.models import Execution, ReleaseItem, Trigger, check_env
from rf.services.base import ServiceBase

if TYPE_CHECKING:
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
        with self.store.transaction() as cur:
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
        with self.store.transaction() as cur:
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
        """``POST /{env}/hooks/{id}``: check the secret, build the input, run the agent."""
        check_env(env)
        row = self.store.get_trigger_row(trigger_id)
        if row is None or row["env"] != env or row["kind"] != "webhook" or not row["live"]:
            raise NotFound(f"no webhook trigger {trigger_id!r} in {env}")
        t = self._trigger_model(row)
        if not t.enabled:
            raise Conflict(f"trigger {t.id} is disabled", "enable it: rf triggers enable ID")
        from rf.secrets import SecretStore

        secret = SecretStore(self._workspace_id()).get(_secret_name(t.id)) or ""
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization", "")
        signature = lower.get("x-rf-signature", "")
        ok = False
        if secret and auth.lower().startswith("bearer "):
            ok = hmac.compare_digest(auth[7:].strip().encode(), secret.encode())
        if secret and not ok and signature:
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(signature.strip().encode(), expected.encode())
        if not ok:
            raise Unauthorized(
                "missing or wrong webhook secret",
                "send Authorization: Bearer SECRET, or X-RF-Signature: sha256=HMAC_SHA256(SECRET, body) in hex",
            )
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
