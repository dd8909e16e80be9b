"""Live eval scoring of a running canary: a sample of both arms' executions scored by the
``live:`` entry of the agent's eval suite (rf.evals.suite), off the request path.

``[releases.canary] score_sample = 0.1`` in rf.toml: while a canary runs, that fraction of the
succeeded production executions of either arm (not eval runs) is offered to
:class:`LiveScorer`. The request path pays a random draw and a ``put_nowait`` on a bounded
queue (:data:`QUEUE_SIZE`); when the queue is full the execution is dropped and counted (the
canary's ``score_dropped``). One thread of the server scores what is queued — a judge's model
call may take seconds, and so never delays a response nor the auto-abort check — and records
each score in the store (``canary_scores``), so every replica's ``rf releases canary`` reads the
same figures.

**Which expectations.** One live entry per agent for the whole canary, applied to both arms so
their means compare: the suite of the agent's commit on the canary arm (what the release under
test says its outputs must be), else production's. An agent without a live entry is not scored.
Failed executions are not scored: the failure rate counts them.

**The score** of an execution is the share of the live entry's scorers that passed (0 to 1); an
arm's figure is the mean. The difference of means (canary − stable) gets a 95 % interval by the
normal approximation with Welch's standard error, each arm taken with one pseudo-observation of
0 and one of 1 added (as Agresti and Caffo do for two proportions): a score that only ever passes
or fails keeps a variance, so a handful of executions cannot claim certainty.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
from typing import TYPE_CHECKING, Any

from rf.errors import InvalidAgent, NotFound

if TYPE_CHECKING:
    from rf.models import Execution

_log = logging.getLogger("rf.services.canary")

#: Sampled executions waiting to be scored, at most (more are dropped and counted).
QUEUE_SIZE = 256
_Z = 1.959963984540054  #: the normal quantile of a two-sided 95 % interval
#: Sources that are not production's traffic (rf.services.canary.STABLE_ONLY_SOURCES).
_NOT_TRAFFIC = frozenset({"eval"})


def adjusted(n: int, total: float, squares: float) -> tuple[float, float]:
    """An arm's mean score and the variance of that mean, with a pseudo-observation of 0 and one
    of 1 added (see the module docstring)."""
    m = n + 2
    mean = (total + 1.0) / m
    variance = max((squares + 1.0 - m * mean * mean) / (m - 1), 0.0)
    return mean, variance / m


def mean_interval(n: int, total: float, squares: float) -> tuple[float, float]:
    """A 95 % interval of an arm's mean score (``(0, 1)`` with none scored)."""
    if n == 0:
        return 0.0, 1.0
    mean, var = adjusted(n, total, squares)
    half = _Z * math.sqrt(var)
    return max(0.0, mean - half), min(1.0, mean + half)


def difference(canary: tuple[int, float, float], stable: tuple[int, float, float]) -> tuple[float, float, float]:
    """Canary's mean score minus stable's (as observed) and its 95 % interval (Welch, normal
    approximation, on the adjusted means). Each arm: ``(n, sum, sum of squares)``."""
    (n1, s1, q1), (n2, s2, q2) = canary, stable
    observed = (s1 / n1 if n1 else 0.0) - (s2 / n2 if n2 else 0.0)
    m1, v1 = adjusted(n1, s1, q1)
    m2, v2 = adjusted(n2, s2, q2)
    half = _Z * math.sqrt(v1 + v2)
    return observed, max(-1.0, m1 - m2 - half), min(1.0, m1 - m2 + half)


class LiveScorer:
    """The server's live scoring (see the module docstring): :meth:`offer` on the request path,
    a thread that scores and records."""

    def __init__(self, services: Any, *, sample: float, maxsize: int = QUEUE_SIZE) -> None:
        self.services = services
        self.sample = sample
        self._queue: queue.Queue[Execution] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._dropped = 0  #: dropped since the last count written to the store
        #: (canary id, agents with no live entry under it): read by offer, replaced, never changed
        self._unscored: tuple[str, frozenset[str]] = ("", frozenset())
        self._specs: dict[str, dict[str, Any] | None] = {}  #: commit → its suite's live entry
        self._canary_id = ""
        self._tools: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scored = 0  #: executions this scorer recorded (for tests and the log)

    # ------------------------------------------------------------ the request path
    def offer(self, execution: Execution) -> None:
        """An execution on an arm ended: maybe queue it for scoring (never blocks)."""
        sample = self.sample
        if (sample <= 0 or execution.status != "succeeded" or execution.source in _NOT_TRAFFIC
                or (sample < 1 and random.random() >= sample)):
            return
        canary_id, unscored = self._unscored
        if execution.agent in unscored:
            routing = self.services.routing.cached
            if routing is not None and routing.canary_id == canary_id:
                return  # (under another canary its suite may have a live entry: look again)
        try:
            self._queue.put_nowait(execution)
        except queue.Full:
            with self._lock:
                self._dropped += 1

    # ------------------------------------------------------------ the thread
    def start(self) -> None:
        if self.sample <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="rf-canary-scoring", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                execution: Execution | None = self._queue.get(timeout=0.5)
            except queue.Empty:
                execution = None
            if self._stop.is_set():
                return
            try:
                if execution is not None:
                    self.score(execution)
                self._write_dropped()
            except Exception:  # noqa: BLE001 - one bad score must not end the thread
                _log.exception("scoring a canary execution failed")

    def _write_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if not dropped:
            return
        routing = self.services.routing.current()
        if routing.canary is not None:
            with self.services.store.unit_of_work() as tx:
                tx.releases.add_canary_dropped(routing.canary_id, dropped)

    def score(self, execution: Execution) -> float | None:
        """Score one execution by its agent's live entry and record it (None: not scored — the
        canary ended meanwhile, or the agent has no live entry)."""
        from rf.evals.scorers import Observed, score_live
        from rf.ids import utcnow
        from rf.logsetup import KNOWN
        from rf.models import to_dict

        services = self.services
        routing = services.routing.current()
        if routing.canary is None or execution.arm not in ("stable", "canary"):
            return None
        if execution.arm == "canary" and execution.release_id != routing.canary_id:
            return None  # an earlier canary's
        if routing.canary_id != self._canary_id:
            self._canary_id, self._specs = routing.canary_id, {}
        spec = self._spec(execution.agent, routing)
        if spec is None:
            canary_id, unscored = self._unscored
            self._unscored = (routing.canary_id, (unscored if canary_id == routing.canary_id else frozenset())
                              | {execution.agent})
            return None
        if self._tools is None:
            from rf.services.evals import _Tools

            self._tools = _Tools(services, services.providers)
        seen = Observed(status=execution.status, output=execution.output, error=execution.error,
                        duration_ms=execution.duration_ms, execution_ids=[execution.id], input=execution.input)
        scores = score_live(spec, seen, self._tools)
        if KNOWN.active:  # (a detail quotes the output, a judge's reason may too)
            KNOWN.load()
            for s in scores:
                s.detail = KNOWN.text(s.detail)
        value = sum(1 for s in scores if s.passed) / len(scores)
        with services.store.unit_of_work() as tx:
            tx.releases.insert_canary_score(
                canary_id=routing.canary_id, execution_id=execution.id, arm=execution.arm,
                agent=execution.agent, score=value, scores=to_dict(scores), scored_at=utcnow())
        self.scored += 1
        return value

    def _spec(self, agent: str, routing: Any) -> dict[str, Any] | None:
        """The live entry that scores *agent* under this canary (both arms): its canary commit's
        suite, else production's."""
        from rf.evals.suite import SUITE_DIR, load_suite

        services = self.services
        commit = routing.canary.agents.get(agent)
        if commit is None:
            try:
                commit = services.target("production", agent)
            except NotFound:
                return None
        if commit in self._specs:
            return self._specs[commit]
        tree = services.commit_tree(commit)
        files = services.commit_files({p: s for p, s in tree.items() if p.startswith(SUITE_DIR + "/")})
        try:
            spec = load_suite(files, agent=agent).live
        except InvalidAgent:  # (checked at deploy: a commit of an older rf)
            spec = None
        self._specs[commit] = spec
        return spec
