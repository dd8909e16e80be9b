"""Canary releases: release N+1 on a share of production traffic beside release N.

``rf releases publish --canary PERCENT`` (``publish_release(..., canary=PERCENT)``) plans,
gates and approves exactly like a publish, then records the plan as a release of kind
``canary`` and a row of ``canaries`` instead of moving production. Production then has two
*arms*: stable (what production's heads, pointers and instances say) and canary (the same,
with the canary's items over it: agents' commits, prompts' versions, connectors' instances).

**Routing.** Every production execution gets one arm, decided once in the service layer
(:class:`RoutingCache` builds a :class:`Routing`; ``AgentsService.invoke`` /
``ainvoke`` call :meth:`Routing.pick`), so the native endpoint, the OpenAI-compatible one, MCP,
triggers and ``rf invoke`` route alike. With a session id the arm is a stable hash of (canary,
session): a session keeps its arm while the canary runs (raising the weight only moves stable
sessions to the canary, lowering it the reverse); without one, each request draws. An agent
called by another (``ctx.agents.invoke``) runs on its caller's arm, and eval runs (the release
gate's production side) always on stable. The whole execution resolves that arm's state: its
:class:`Arm` rides on the ``HostCall``, so prompts and connectors see the same side as the code.

**Cost.** The routing is cached like the environment heads (rebuilt after any release, deploy
or canary change in this process, and by :class:`CanaryWatch` every few seconds when another
replica changed it): no store read per request.

**Deciding.** ``canary weight`` and ``canary abort`` are releases without items (kinds
``canary-weight``, ``canary-abort``: production unchanged, recorded in the history);
``canary promote`` applies the canary's items as a release of kind ``canary-promote`` in one
transaction with the end of the canary — the same before → after checks as any publish, so a
rollback afterwards works like any rollback. ``[releases.canary] auto_abort`` lets the server
abort by itself (:meth:`CanaryService.check_canary`, run by :class:`CanaryWatch` after canary
executions end) and records the figures that triggered it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rf.errors import Conflict, NotFound, UsageError
from rf.ids import new_id, utcnow
from rf.models import (
    Canary,
    CanaryArm,
    CanaryRunning,
    Connector,
    ConnectorResource,
    Release,
    ReleaseItem,
    from_dict,
    to_dict,
)
from rf.services.base import ReleaseReads, ServiceContext

if TYPE_CHECKING:
    from rf.models import ReleasePlan
    from rf.services.connectors import ConnectorsService
    from rf.services.releases import ReleaseHistory, ReleasesService
    from rf.store import Store
    from rf.store.interfaces import Repositories

_log = logging.getLogger("rf.services.canary")

#: Sources that never take the canary arm: an eval run states which commit it runs (the gate's
#: production side compares against stable).
STABLE_ONLY_SOURCES = frozenset({"eval"})
#: What a canary release cannot hold (publish them on their own first).
NOT_CANARIED = "triggers and removals are not canaried"
_Z = 1.959963984540054  #: the normal quantile of a two-sided 95 % interval


@dataclass(frozen=True)
class Arm:
    """What one production execution runs: its release and arm, and the canary's state over
    production's (empty on stable). Read-only; shared by every execution of the arm."""

    release_id: str | None
    arm: str | None = None  #: stable | canary while a canary runs; None otherwise
    agents: dict[str, str] = field(default_factory=dict)  #: agent → commit
    prompts: dict[str, int] = field(default_factory=dict)  #: prompt → version
    connectors: dict[str, Connector] = field(default_factory=dict)  #: slug → the instance it sees


@dataclass
class Routing:
    """Production's arms now: cached by the services, rebuilt when a release or the canary changes."""

    stable: Arm
    canary: Arm | None = None
    canary_id: str = ""
    weight: float = 0.0
    started_at: str = ""
    #: a session whose 64-bit hash is below this takes the canary arm
    threshold: int = 0

    def pick(self, session_id: str | None, source: str) -> Arm:
        canary = self.canary
        if canary is None or source in STABLE_ONLY_SOURCES:
            return self.stable
        if session_id is not None:
            digest = hashlib.blake2b(f"{self.canary_id}\0{session_id}".encode(), digest_size=8).digest()
            return canary if int.from_bytes(digest, "big") < self.threshold else self.stable
        return canary if random.random() * 100.0 < self.weight else self.stable


def wilson(failures: int, n: int) -> tuple[float, float]:
    """Wilson 95 % score interval of a proportion (``(0, 1)`` with no observation)."""
    if n == 0:
        return 0.0, 1.0
    p = failures / n
    z2 = _Z * _Z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = _Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """``p1 - p2`` and its 95 % interval by Newcombe's hybrid score method (from the Wilson
    intervals of each proportion)."""
    p1 = k1 / n1 if n1 else 0.0
    p2 = k2 / n2 if n2 else 0.0
    l1, u1 = wilson(k1, n1)
    l2, u2 = wilson(k2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def verdict(low: float, high: float, n_stable: int, n_canary: int) -> str:
    """A plain reading of the failure-rate difference (canary − stable)."""
    if n_stable == 0 or n_canary == 0:
        return "no difference yet"
    if low > 0:
        return "canary worse"
    if high < 0:
        return "canary better"
    return "no difference yet"


def check_percent(percent: Any, what: str, *, lowest: float, highest: float) -> float:
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent) \
            or not lowest <= percent <= highest:
        span = "above 0 and below 100" if lowest > 0 else f"from {lowest:g} to {highest:g}"
        raise UsageError(f"{what} must be a percentage {span}, not {percent!r}",
                         "e.g. --canary 10 (a tenth of production's traffic on the new release)")
    return float(percent)


ARMS = ("stable", "canary")


def arm_filters(releases: ReleaseReads, release: Any, arm: Any) -> tuple[str | None, str | None]:
    """``(release id, arm)`` of a list's filters: a release id prefix resolved to its id (NotFound,
    with the fix, for none), an arm checked (stable or canary)."""
    if arm is not None and arm not in ARMS:
        raise UsageError(f"unknown arm {arm!r}", "use stable or canary (the arms of a canary release)")
    release_id = None
    if release is not None:
        release_id = releases.get_release(str(release)).id
    return release_id, arm


class RoutingCache:
    """Production's arms (:class:`Routing`), loaded from the store (two reads) and cached until
    something changes them: shared by the agents service (every production execution picks its
    arm here: no store read per request), the canary service and the live scorer."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._routing: Routing | None = None
        self._generation = 0

    @property
    def cached(self) -> Routing | None:
        """The cached routing, None when it must be loaded again (no store read)."""
        return self._routing

    def current(self) -> Routing:
        """The cached routing, else loaded."""
        routing = self._routing
        return routing if routing is not None else self.load()

    def load(self) -> Routing:
        """Production's arms from the store, cached unless :meth:`forget` ran meanwhile."""
        generation = self._generation
        row = self.store.running_canary()
        # Production's whole state in one read: an execution on stable takes its commit and its
        # prompts from this one snapshot, so it never runs half of a release that is being
        # published (code from one, a prompt from the next).
        release_id, agents, prompts = self.store.production_state()
        stable = Arm(release_id=release_id, arm=None, agents=agents, prompts=prompts)
        if row is None:
            routing = Routing(stable=stable)
        else:
            state = row["state"]
            canary = Arm(
                release_id=row["id"], arm="canary", agents=dict(state.get("agents", {})),
                prompts={k: int(v) for k, v in state.get("prompts", {}).items()},
                connectors={slug: _connector(c) for slug, c in state.get("connectors", {}).items()})
            weight = float(row["weight"])
            routing = Routing(stable=Arm(release_id=release_id, arm="stable", agents=agents, prompts=prompts),
                              canary=canary,
                              canary_id=row["id"], weight=weight, threshold=int(weight / 100.0 * 2.0 ** 64),
                              started_at=row["started_at"])
        if generation == self._generation:
            self._routing = routing
            if generation != self._generation:  # cleared meanwhile (another thread): not cached
                self._routing = None
        return routing

    def forget(self) -> None:
        """Drop the cached routing (a release, a deploy, a canary change; another replica's).
        The generation counter stops a load that started before from caching the old one."""
        self._generation += 1
        self._routing = None


class CanaryGate(Protocol):
    """What publishing needs of the canary domain (:class:`CanaryService`)."""

    def check_plan(self, plan: ReleasePlan) -> None: ...

    def start(self, plan: ReleasePlan, percent: float, message: str, author: str,
              evidence: dict[str, Any] | None) -> Release: ...

    def refuse_canaried(self, items: list[ReleaseItem]) -> None: ...


class CanaryService:
    """Starting, watching and deciding canary releases. Publishing reaches it through
    :class:`CanaryGate` (``releases.canary``); it applies a promote through the releases service."""

    def __init__(self, ctx: ServiceContext, routing: RoutingCache, history: ReleaseHistory,
                 releases: ReleasesService, connectors: ConnectorsService) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.routing = routing
        self.history = history
        self.releases = releases
        self.connectors = connectors

    def _routing_changed(self, announce: bool = True) -> None:
        """Forget the cached routing (a canary change in this process); with ``announce``, wait
        for the other replicas on the store to confirm they did too, once the write lock is
        released (rf.store.pg_replicas)."""
        self.routing.forget()
        if announce:
            self.store.after_unlock(self.store.announce_change)

    # ------------------------------------------------------------ starting
    def check_plan(self, plan: ReleasePlan) -> None:
        """Refuse what a canary cannot hold, and a second canary."""
        refused = [i for i in plan.items if i.kind == "trigger" or i.after is None]
        if refused:
            names = " ".join(f"{i.kind}:{i.name}" for i in refused)
            raise UsageError(f"refused: {NOT_CANARIED} ({', '.join(f'{i.kind} {i.name}' for i in refused)})",
                             f"publish them separately first: rf releases publish {names}; then start the "
                             "canary with the other items")
        running = self.store.running_canary()
        if running is not None:
            raise Conflict(f"canary {running['id']} is running ({running['weight']:g} % of production): "
                           "one canary at a time",
                           "promote it (rf releases canary promote) or abort it (rf releases canary abort) first")

    def start(self, plan: ReleasePlan, percent: float, message: str, author: str,
                      evidence: dict[str, Any] | None) -> Release:
        """Inside the publish's write lock: record release N+1 as a running canary (production
        unchanged). The canary arm's state is resolved now, so staging moving on later changes
        nothing: agents' commits and prompts' versions as planned, connectors' instances as the
        publish would make them (applied in a transaction that is rolled back)."""
        self.check_plan(plan)
        items = plan.items
        connectors = self._canary_connectors([i for i in items if i.kind == "connector"])
        state = {
            "agents": {i.name: i.after for i in items if i.kind == "agent"},
            "prompts": {i.name: i.after for i in items if i.kind == "prompt"},
            "connectors": {slug: to_dict(c) for slug, c in connectors.items()},
        }
        release_id = new_id("rel")
        now = utcnow()
        with self.store.unit_of_work() as tx:
            stable_release = tx.releases.production_release_id()
            self._snapshot_connector_items(tx, [i for i in items if i.kind == "connector"])
            tx.releases.insert_release(
                release_id=release_id, created_at=now, author=author,
                message=message or f"canary at {percent:g} %: " + self.releases.default_message(items),
                plan_id=plan.id, kind="canary",
                items=[{"kind": i.kind, "name": i.name, "before": i.before, "after": i.after, "summary": i.summary}
                       for i in items],
                evidence={**(evidence or {}), "canary": release_id, "weight": percent})
            tx.releases.insert_canary(canary_id=release_id, weight=percent, stable_release_id=stable_release,
                                     state=state, started_at=now, started_by=author)
        release = self.history.get_release(release_id)
        release.warnings = list(plan.warnings)
        self.releases.announce(release)
        return release

    def _canary_connectors(self, items: list[ReleaseItem]) -> dict[str, Connector]:
        """The production instance of each connector the items change, as publishing them would
        leave it: applied in a transaction that is then rolled back."""
        if not items:
            return {}

        class _Undo(Exception):
            pass

        found: dict[str, Connector] = {}
        try:
            with self.store.unit_of_work() as tx:
                for item in items:
                    self.connectors.release_apply(tx, item.name, item.before, item.after)
                for slug in {i.name.partition("@")[0] for i in items}:
                    c = self.connectors.find(slug, "production", tx)
                    if c is not None:
                        found[slug] = c
                raise _Undo
        except _Undo:
            pass
        return found

    def _snapshot_connector_items(self, tx: Repositories, items: list[ReleaseItem]) -> None:
        """Keep each connector item's ``after`` content as a snapshot, so a promote applies what
        the canary ran even once staging has moved on (the apply falls back to snapshots)."""
        from rf.services.connectors import (
            SETTINGS_ITEM,
            creation_content,
            hash_content,
            settings_hash,
            settings_of,
            shared_of,
        )

        for item in items:
            slug = item.name.partition("@")[0]
            prepared = tx.connectors.prepared_settings(slug).get(slug)
            if item.name.endswith(SETTINGS_ITEM):
                if prepared is not None and settings_hash(prepared) == item.after:
                    tx.connectors.put_connector_snapshot(str(item.after), {"settings": prepared})
                continue
            staging = self.connectors.find(slug, "staging", tx)
            if staging is None:
                continue
            chosen = prepared if prepared is not None else settings_of(staging)
            for candidate in (shared_of(staging), creation_content(staging, chosen)):
                if hash_content(candidate) == item.after:
                    tx.connectors.put_connector_snapshot(str(item.after), candidate)

    def refuse_canaried(self, items: list[ReleaseItem]) -> None:
        """A publish may not change what a running canary holds (its promote would then not
        apply): say to decide the canary first."""
        running = self.store.running_canary()
        if running is None:
            return
        held = {(i["kind"], i["name"].partition("@")[0]) for i in self._canary_items(running["id"])}
        clash = [i for i in items if (i.kind, i.name.partition("@")[0]) in held]
        if clash:
            raise Conflict(f"canary {running['id']} holds {', '.join(f'{i.kind} {i.name}' for i in clash)}: "
                           "production's version of it cannot change while the canary runs",
                           "promote the canary (rf releases canary promote) or abort it (rf releases canary "
                           "abort), then publish")

    def _canary_items(self, canary_id: str) -> list[dict[str, Any]]:
        rows = self.store.list_releases(2, id_prefix=canary_id)
        row = next((r for r in rows if r["id"] == canary_id), None)
        return list(row["items"]) if row else []

    # ------------------------------------------------------------ watching
    def canary_running(self) -> CanaryRunning | None:
        """The running canary's id, weight and start, or None (no error): cheap enough for a
        badge — the cached routing, no store read once it is loaded."""
        routing = self.routing.current()
        if routing.canary is None:
            return None
        return CanaryRunning(id=routing.canary_id, weight=routing.weight, started_at=routing.started_at)

    def canary_status(self, canary_id: str | None = None) -> Canary:
        """The running canary (else the newest one, or the one named) with, per arm, its
        executions, failures and failure rate, p50/p95 duration; the difference of failure rates
        with its 95 % interval and a plain verdict."""
        row = self.store.get_canary(canary_id)
        if row is None:
            if canary_id is not None:
                raise NotFound(f"no canary {canary_id!r}", "see the releases: rf releases history")
            raise NotFound("no canary release has run yet",
                           "start one: rf releases plan ITEM... ; rf releases publish --plan ID --canary 10")
        return self._canary_model(row)

    def _canary_model(self, row: dict[str, Any], figures: dict[str, dict[str, Any]] | None = None) -> Canary:
        if figures is None:
            figures = self.store.canary_arm_figures(row["started"], row["ended"])
        config = self.config()
        canary = Canary(
            id=row["id"], status=row["status"], weight=row["weight"], stable_release_id=row["stable_release_id"],
            started_at=row["started_at"], started_by=row["started_by"], ended_at=row["ended_at"],
            ended_by=row["ended_by"], end_release_id=row["end_release_id"], figures=row["figures"],
            items=[ReleaseItem(kind=i["kind"], name=i["name"], summary=i.get("summary", ""), before=i["before"],
                               after=i["after"]) for i in self._canary_items(row["id"])],
            auto_abort={"auto_abort": config.auto_abort, "max_failure_rate_delta": config.max_failure_rate_delta,
                        "min_executions": config.min_executions, "max_score_delta": config.max_score_delta,
                        "min_scored": config.min_scored},
        )
        for arm in ("stable", "canary"):
            got = figures.get(arm, {})
            n, k = int(got.get("executions", 0)), int(got.get("failures", 0))
            low, high = wilson(k, n)
            canary.arms.append(CanaryArm(
                arm=arm, release_id=got.get("release_id", row["id"] if arm == "canary" else row["stable_release_id"]),
                executions=n, failures=k, failure_rate=round(k / n, 6) if n else 0.0,
                failure_rate_low=round(low, 6), failure_rate_high=round(high, 6),
                p50_ms=got.get("p50_ms"), p95_ms=got.get("p95_ms")))
        stable, on_canary = canary.arms
        d, low, high = newcombe(on_canary.failures, on_canary.executions, stable.failures, stable.executions)
        canary.failure_rate_delta, canary.delta_low, canary.delta_high = round(d, 6), round(low, 6), round(high, 6)
        readings = [verdict(low, high, stable.executions, on_canary.executions)]
        if stable.executions and on_canary.executions:
            canary.reasons.append(
                f"failure rate: canary {on_canary.failure_rate:.1%} vs stable {stable.failure_rate:.1%} "
                f"({d * 100:+.1f} points, 95 % interval {low * 100:+.1f} to {high * 100:+.1f}): {readings[0]}")
        readings.append(self._canary_scores(canary, row))
        canary.verdict = ("canary worse" if "canary worse" in readings else
                          "canary better" if "canary better" in readings else "no difference yet")
        return canary

    def _canary_scores(self, canary: Canary, row: dict[str, Any]) -> str:
        """The live scores of both arms (rf.services.canary_scoring) on *canary*: their reading."""
        from rf.services.canary_scoring import difference, mean_interval

        canary.score_sample = self.config().score_sample
        canary.score_dropped = int(row.get("score_dropped") or 0)
        figures = self.store.releases.canary_score_figures(row["id"])
        sums = {}
        for a in canary.arms:
            got = figures.get(a.arm)
            if not got:
                continue
            n, total, squares = got["scored"], got["sum"], got["sum_squares"]
            sums[a.arm] = (n, total, squares)
            low, high = mean_interval(n, total, squares)
            a.scored, a.score_passed = n, got["passed"]
            a.score_mean, a.score_low, a.score_high = round(total / n, 6), round(low, 6), round(high, 6)
        if sums:
            canary.score_misses = self.store.releases.canary_scores(row["id"], 5)
        if len(sums) < 2:
            return "no difference yet"
        d, low, high = difference(sums["canary"], sums["stable"])
        canary.score_delta, canary.score_delta_low, canary.score_delta_high = round(d, 6), round(low, 6), round(high, 6)
        reading = "canary worse" if high < 0 else "canary better" if low > 0 else "no difference yet"
        stable, on_canary = canary.arms
        canary.reasons.append(
            f"live score: canary {on_canary.score_mean:.2f} vs stable {stable.score_mean:.2f} ({d:+.2f}, 95 % "
            f"interval {low:+.2f} to {high:+.2f}; {on_canary.scored} and {stable.scored} scored): {reading}")
        return reading

    def config(self) -> Any:
        from rf.config import CanaryConfig

        workspace = self.workspace
        return workspace.canary if workspace is not None else CanaryConfig()

    def check_canary(self) -> Release | None:
        """The server's check after canary executions end: refresh the cached routing when the
        store's canary differs from it (another replica changed it), and, with ``[releases.canary]
        auto_abort``, abort a canary whose failure rate or live score is worse than stable's by
        more than the rule allows (:func:`_abort_reason`). The abort (if any)."""
        row = self.store.running_canary()
        cached = self.routing.cached
        if cached is not None and (cached.canary_id, cached.weight) != (
                (row["id"], float(row["weight"])) if row else ("", 0.0)):
            self._routing_changed(announce=False)  # (another replica changed it, and announced it)
        config = self.config()
        if row is None or not config.auto_abort:
            return None
        canary = self._canary_model(row)
        why = _abort_reason(canary, config)
        if why is None:
            return None
        try:
            release = self._end_canary(row["id"], "aborted", why, "rf (auto-abort)", canary)
        except Conflict:  # decided meanwhile (by a person, or another replica)
            return None
        _log.warning("canary %s aborted: %s", row["id"], why)
        return release

    # ------------------------------------------------------------ deciding
    def _running(self) -> dict[str, Any]:
        row = self.store.releases.running_canary()
        if row is None:
            raise NotFound("no canary is running", "see the last one: rf releases canary; start one: "
                                                   "rf releases publish --plan ID --canary 10")
        return row

    def set_canary_weight(self, percent: float, message: str = "", author: str = "unknown") -> Canary:
        """Move the running canary's share of production traffic (0-100 %), recorded in the
        history as a release of kind ``canary-weight`` (production unchanged)."""
        weight = check_percent(percent, "the canary's weight", lowest=0.0, highest=100.0)
        with self.store.write_lock:
            row = self._running()
            text = f"canary {row['id']}: weight {row['weight']:g} % → {weight:g} %" + (
                f" ({message.strip()})" if message.strip() else "")
            with self.store.unit_of_work() as tx:
                tx.releases.set_canary_weight(row["id"], weight)
                tx.releases.insert_release(release_id=new_id("rel"), created_at=utcnow(), author=author,
                                          message=text, plan_id="", kind="canary-weight", items=[],
                                          evidence={"canary": row["id"], "weight": weight, "was": row["weight"]})
            self._routing_changed()
        return self.canary_status(row["id"])

    def promote_canary(self, message: str = "", author: str = "unknown") -> Release:
        """Make the running canary the whole of production: its items applied as a release of
        kind ``canary-promote`` (the same checks as a publish), ending the canary in the same
        transaction. Approved at its start: no further approval."""
        with self.store.write_lock:
            row = self._running()
            return self._end_canary(row["id"], "promoted", message, author, self._canary_model(row))

    def abort_canary(self, message: str = "", author: str = "unknown") -> Release:
        """Send every production request back to stable at once; recorded as a release of kind
        ``canary-abort`` with the per-arm figures (production unchanged)."""
        with self.store.write_lock:
            row = self._running()
            return self._end_canary(row["id"], "aborted", message, author, self._canary_model(row))

    def _end_canary(self, canary_id: str, status: str, message: str, author: str, canary: Canary) -> Release:
        figures = {"arms": to_dict(canary.arms), "failure_rate_delta": canary.failure_rate_delta,
                   "delta_low": canary.delta_low, "delta_high": canary.delta_high, "verdict": canary.verdict,
                   "weight": canary.weight}
        if canary.score_delta is not None:
            figures.update(score_delta=canary.score_delta, score_delta_low=canary.score_delta_low,
                           score_delta_high=canary.score_delta_high)
        with self.store.write_lock:
            row = self.store.running_canary()
            if row is None or row["id"] != canary_id:
                raise Conflict(f"canary {canary_id} is not running any more", "see it: rf releases canary")
            items = [ReleaseItem(kind=i.kind, name=i.name, summary=i.summary, before=i.before, after=i.after)
                     for i in canary.items]
            if status == "promoted":
                text = f"promote canary {canary_id}" + (f": {message.strip()}" if message.strip() else "")

                def end(tx: Repositories, release_id: str) -> None:
                    tx.releases.end_canary(canary_id, status=status, ended_at=utcnow(), ended_by=author,
                                          end_release_id=release_id, figures=figures)

                try:
                    release = self.releases.apply(
                        items, _plan_of(items), "canary-promote", text, author, [],
                        {"canary": canary_id, "figures": figures}, also=end)
                except Conflict as exc:
                    raise Conflict(f"cannot promote canary {canary_id}: {exc.message}",
                                   "production changed under the canary: abort it (rf releases canary abort) "
                                   "and start a new one from a fresh plan") from None
                return release  # (its routing forgotten and announced with the release: releases.announce)
            text = f"abort canary {canary_id}" + (f": {message.strip()}" if message.strip() else "")
            release_id = new_id("rel")
            with self.store.unit_of_work() as tx:
                tx.releases.insert_release(release_id=release_id, created_at=utcnow(), author=author,
                                          message=text, plan_id="", kind="canary-abort", items=[],
                                          evidence={"canary": canary_id, "figures": figures})
                tx.releases.end_canary(canary_id, status=status, ended_at=utcnow(), ended_by=author,
                                      end_release_id=release_id, figures=figures)
            release = self.history.get_release(release_id)
            self.releases.announce(release)  # (everyone back on stable, in every replica)
            return release


def _abort_reason(canary: Canary, config: Any) -> str | None:
    """Why ``[releases.canary] auto_abort`` aborts *canary* now (None: it does not): a failure rate
    above stable's by more than ``max_failure_rate_delta`` once the canary arm has
    ``min_executions``; or, with ``max_score_delta``, a mean live score below stable's by more
    than that once both arms have ``min_scored`` scored executions and the 95 % interval of the
    difference lies below zero (a few unlucky samples never abort)."""
    stable, on_canary = canary.arms
    if on_canary.executions >= config.min_executions:
        excess = on_canary.failure_rate - stable.failure_rate
        if excess > config.max_failure_rate_delta:
            return (f"auto-abort: the canary's failure rate {on_canary.failure_rate:.1%} ({on_canary.failures} of "
                    f"{on_canary.executions}) exceeds stable's {stable.failure_rate:.1%} ({stable.failures} of "
                    f"{stable.executions}) by {excess:.1%}, more than max_failure_rate_delta "
                    f"{config.max_failure_rate_delta:.1%}")
    limit = config.max_score_delta
    if (limit is None or canary.score_delta is None or canary.score_delta_high is None
            or min(stable.scored, on_canary.scored) < config.min_scored):
        return None
    if -canary.score_delta > limit and canary.score_delta_high < 0:
        return (f"auto-abort: the canary's mean live score {on_canary.score_mean:.2f} ({on_canary.scored} scored) "
                f"is below stable's {stable.score_mean:.2f} ({stable.scored} scored) by {-canary.score_delta:.2f} "
                f"(95 % interval {-canary.score_delta_high:.2f} to {-(canary.score_delta_low or 0):.2f}), more "
                f"than max_score_delta {limit:g}")
    return None


def _plan_of(items: list[ReleaseItem]) -> str:
    from rf.services.releases import plan_id_of

    return plan_id_of(items)


def _connector(data: dict[str, Any]) -> Connector:
    c = from_dict(Connector, data)
    c.resources = [r if isinstance(r, ConnectorResource) else from_dict(ConnectorResource, r) for r in c.resources]
    return c


class CanaryWatch:
    """The server's canary check (:meth:`CanaryService.check_canary`): woken when canary
    executions end (:meth:`ended`: an event set, and the live scorer's sampling — nothing else
    per execution), at most once every ``interval_s``; also every ``refresh_s`` whatever
    happens, so a canary another replica started, changed or ended reaches this one's routing.
    Its :class:`~rf.services.canary_scoring.LiveScorer` scores a sample of both arms on a thread
    of its own (a judge's call never delays the check)."""

    def __init__(self, services: Any, *, interval_s: float = 1.0, refresh_s: float = 5.0) -> None:
        from rf.services.canary_scoring import LiveScorer

        self.services = services
        self.agents = services.agents
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self._event = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.note: Callable[[], None] = self._event.set
        self.scorer = LiveScorer(services, sample=services.canary.config().score_sample)

    def ended(self, execution: Any) -> None:
        """An execution on an arm ended (the request path: cheap)."""
        self._event.set()
        self.scorer.offer(execution)

    def start(self) -> None:
        self.agents.canary_watch = self
        self._thread = threading.Thread(target=self._loop, name="rf-canary-watch", daemon=True)
        self._thread.start()
        self.scorer.start()

    def stop(self) -> None:
        self._stop.set()
        self._event.set()
        if self.agents.canary_watch is self:
            self.agents.canary_watch = None
        self.scorer.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._event.wait(self.refresh_s)
            self._event.clear()
            if self._stop.is_set():
                return
            try:
                self.services.check_canary()
            except Exception:  # noqa: BLE001 - a failed check must not end the thread: it runs again
                _log.exception("canary check failed")
            self._stop.wait(self.interval_s)
