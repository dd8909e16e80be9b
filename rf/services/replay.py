"""``rf replay``: recorded executions of one environment run again on staging's state.

Production traffic is the best test suite there is; a replay runs it against a change before
the change is published:

1. **Which executions**: the agent's newest ``last`` ones of ``from_env`` (production), those
   since ``since``, or the ones named; only runs that came from outside (an endpoint, a
   trigger, ``rf invoke``...): not eval runs, not earlier replays, not executions another agent
   called (they replay inside their caller). Ones still running are skipped.
2. **What was recorded**: the input; the session's messages up to that turn (the replayed turn
   sees them as its ``ctx.session.history()``); and every connector call of its trace (also
   those of the agents it called), whose requests and responses the trace keeps (standard
   mode: bodies up to 64 KiB; ``minimal`` keeps none: such a call cannot be answered, and the
   result says so).
3. **How it runs**: each input is one execution of staging's commit through the real runtime
   (``invoke``, source ``replay``, in staging: production is never touched), a few at a time
   (rf.evals.runner). Its connector calls are answered from the recording when the request
   matches (rf.evals.tape); a call nothing recorded is listed and fails that run, unless
   ``live_connectors`` (then staging's instance answers). LLM calls go to the providers as
   configured, or to the built-in mock (``llm="mock"``).
4. **What it tells**: per execution the status before → after, the output changes (JSON
   paths), the latency delta; in all, how many are the same, changed, newly failing, fixed
   (rf.evals.replay).

A replayed execution with a session runs in a session of its own (``replay:ID:N``) so that it
never joins a real staging conversation; its history comes from the recording. Memory is
staging's own (``staging:``): a replay does not copy production memory.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rf.config import check_name
from rf.errors import NotFound, UsageError
from rf.ids import iso, new_id, parse_iso, utcnow
from rf.models import Execution, ReplayedExecution, ReplayResult, Span, check_env
from rf.services.base import AgentRuns, ServiceContext, TraceReads

if TYPE_CHECKING:
    from rf.evals.tape import Recorded, Tape

#: At most this many executions per replay (and ``last`` when nothing else is given).
MAX_REPLAY = 10_000
DEFAULT_LAST = 20
#: Runs at a time, at most (and never more than the pool gives one agent).
MAX_REPLAY_WORKERS = 4
#: Sources that are not traffic: eval runs, earlier replays, rf test.
NOT_TRAFFIC = ("eval", "replay", "test")
LLM_MODES = ("configured", "mock")
_PAGE = 1000
_MARGIN_NS = 60 * 1_000_000_000
#: More executions than this read their spans in one pass over the window (else one trace each).
_BATCH_SPANS = 20


class ReplayService:
    """``replay``: see the module docstring."""

    def __init__(self, ctx: ServiceContext, agents: AgentRuns, traces: TraceReads) -> None:
        self.store = ctx.store
        self.agents = agents
        self.traces = traces

    def replay(self, name: str, from_env: str = "production", against: str = "staging", last: int | None = None,
               since: str | None = None, execution_ids: list[str] | None = None, live_connectors: bool = False,
               llm: str = "configured") -> ReplayResult:
        """Run agent *name*'s recorded executions of *from_env* again on *against*'s state (see
        the module docstring): the newest *last* (default 20), those *since* (``2h``, ``7d``, an
        ISO time), or *execution_ids*. Connector calls are answered from each execution's
        recording; an unrecorded one fails its run unless *live_connectors*. *llm*:
        ``configured`` or ``mock``."""
        from rf.evals.runner import run_cases
        from rf.evals.suite import Case
        from rf.services.traces import parse_since

        check_name("agent", name)
        check_env(from_env)
        check_env(against)
        if against != "staging":
            raise UsageError("a replay runs on staging's state only (production changes through releases)",
                             f"rf replay {name} --from production --against staging")
        if llm not in LLM_MODES:
            raise UsageError(f"--llm must be one of {', '.join(LLM_MODES)}, not {llm!r}",
                             "configured: the providers as set up; mock: the built-in offline mock")
        if not isinstance(live_connectors, bool):
            raise UsageError("live_connectors must be true or false")
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= MAX_REPLAY):
            raise UsageError(f"--last must be a whole number from 1 to {MAX_REPLAY}, not {last!r}", "e.g. --last 50")
        if execution_ids is not None and (not isinstance(execution_ids, list) or len(execution_ids) > MAX_REPLAY
                                          or not all(isinstance(i, str) and i for i in execution_ids)):
            raise UsageError(f"execution ids must be a list of at most {MAX_REPLAY} ids",
                             f"list them: rf executions list --env {from_env} --agent {name}")
        if execution_ids and (last is not None or since is not None):
            raise UsageError("name executions, or pick them with --last/--since, not both",
                             "drop --last/--since, or the --execution ids")
        since_ns = parse_since(since)
        commit = self.agents.target(against, name)  # NotFound (with the fix) when staging has no deployment
        if execution_ids:
            recorded = [self._recorded_execution(name, from_env, i) for i in dict.fromkeys(execution_ids)]
        else:
            recorded = self._traffic(name, from_env, last if last is not None or since_ns is not None
                                     else DEFAULT_LAST, since_ns)
        if not recorded:
            window = f" since {since}" if since else ""
            raise NotFound(f"agent {name!r} has no recorded {from_env} executions to replay{window}",
                           f"its executions: rf executions list --env {from_env} --agent {name}")
        recorded.sort(key=lambda e: e.id)  # oldest first (ids sort by time)
        calls = self._recorded_calls(from_env, name, recorded, contiguous=not execution_ids)
        histories = self._histories(from_env, name, recorded)

        from rf.evals.tape import Tape

        replay_id = new_id("rp")
        by_id = {e.id: e for e in recorded}
        tapes: dict[str, Tape] = {}
        cases = [Case(id=e.id, file="", line=0, inputs=[e.input]) for e in recorded]
        sessions = {e.id: f"replay:{replay_id}:{n}" for n, e in enumerate(recorded, 1) if e.session_id}
        replayed: dict[str, Execution] = {}

        def execute_for(case: Case, k: int) -> Any:
            ex = by_id[case.id]
            answers, _ = calls.get(ex.id, ([], []))
            tape = tapes[ex.id] = Tape(answers, live=live_connectors, llm_mock=llm == "mock",
                                       history=histories.get(ex.id), source=f"{from_env} execution {ex.id}")

            def run(input: Any, session_id: str | None) -> Execution:
                done = self.agents.invoke(against, name, input, sessions.get(ex.id), source="replay", tape=tape)
                replayed[ex.id] = done
                return done
            return run

        limits = self.agents.pool.limits_of(against)
        workers = max(1, min(MAX_REPLAY_WORKERS, limits.max_workers_per_agent))
        started = utcnow()
        clock = time.perf_counter()
        results = run_cases(cases, None, _NoTools(), run_id=replay_id, workers=workers, repeat=1,
                            execute_for=execute_for)
        from rf.evals.replay import json_changes, outcome

        executions: list[ReplayedExecution] = []
        for ex, result in zip(recorded, results, strict=True):
            attempt = result.attempts[0]
            after = replayed.get(ex.id)
            tape = tapes[ex.id]
            before_ok = ex.status == "succeeded"
            after_ok = after is not None and after.status == "succeeded"
            after_error = after.error if after is not None else attempt.error
            kind = outcome(before_ok, after_ok, ex.output if before_ok else ex.error,
                           after.output if after is not None and after_ok else after_error)
            executions.append(ReplayedExecution(
                execution_id=ex.id, outcome=kind, before_status=ex.status,
                after_status=after.status if after is not None else "failed",
                replay_execution_id=after.id if after is not None else None, input=ex.input,
                session_id=ex.session_id, before_output=ex.output,
                after_output=after.output if after is not None else None, before_error=ex.error,
                after_error=None if after_ok else after_error, before_ms=ex.duration_ms,
                after_ms=after.duration_ms if after is not None else 0.0,
                delta_ms=round((after.duration_ms if after is not None else 0.0) - ex.duration_ms, 3),
                changes=json_changes(ex.output, after.output) if after is not None and before_ok and after_ok
                and kind == "changed" else [],
                replayed_calls=tape.served, live_calls=tape.live_calls, unmatched=list(tape.unmatched),
                not_recorded=calls.get(ex.id, ([], []))[1],
            ))
        counts = {k: sum(e.outcome == k for e in executions) for k in ("same", "changed", "newly_failing", "fixed")}
        return ReplayResult(
            id=replay_id, agent=name, from_env=from_env, against=against, commit=commit, llm=llm,
            live_connectors=live_connectors, executions=executions, total=len(executions), **counts,
            unmatched=sum(bool(e.unmatched) for e in executions), started_at=iso(started),
            duration_ms=round((time.perf_counter() - clock) * 1000, 3), workers=workers,
        )

    # ------------------------------------------------------------ what was recorded
    def _recorded_execution(self, name: str, env: str, execution_id: str) -> Execution:
        ex = self.agents.get_execution(execution_id, env)  # NotFound (in env) / ambiguous prefix: clear errors
        if ex.agent != name:
            raise UsageError(f"execution {ex.id} is agent {ex.agent!r}'s, not {name!r}'s",
                             f"replay it with: rf replay {ex.agent} --execution {ex.id}")
        if ex.status not in ("succeeded", "failed"):
            raise UsageError(f"execution {ex.id} is {ex.status}: only finished executions can be replayed",
                             "wait for it to end, or pick another")
        return ex

    def _traffic(self, name: str, env: str, last: int | None, since_ns: int | None) -> list[Execution]:
        """The newest finished executions that came from outside (see the module docstring)."""
        from rf.services.traces import id_time_ns

        want = min(last or MAX_REPLAY, MAX_REPLAY)
        found: list[Execution] = []
        before: str | None = None
        while len(found) < want:
            page = self.store.list_executions(env, agent=name, limit=_PAGE, before=before)
            if not page:
                break
            for ex in page:
                if since_ns is not None and (id_time_ns(ex.id) or 0) < since_ns:
                    return found
                if (ex.parent_id is None and ex.status in ("succeeded", "failed")
                        and ex.source.split(":", 1)[0] not in NOT_TRAFFIC):
                    found.append(ex)
                    if len(found) >= want:
                        break
            before = page[-1].id
            if len(page) < _PAGE:
                break
        return found

    def _recorded_calls(self, env: str, name: str, recorded: list[Execution],
                        contiguous: bool) -> dict[str, tuple[list[Recorded], list[str]]]:
        """Each execution's recorded connector calls (and those its trace kept too little of)."""
        from rf.evals.tape import recorded_from_spans
        from rf.services.traces import id_time_ns, span_of

        spans: dict[str, list[Span]] = {}
        if contiguous and len(recorded) > _BATCH_SPANS:
            # One pass over the window the executions span (they are the newest ones).
            oldest = min(id_time_ns(e.id) or 0 for e in recorded) - _MARGIN_NS
            wanted = {e.id for e in recorded}
            for row in self.store.spans_of(env, agent=name, since_ns=oldest, limit=10_000_000):
                if row[4] in wanted and row[3] is not None:
                    spans.setdefault(row[4], []).append(span_of(row))
        else:
            for ex in recorded:
                try:
                    spans[ex.id] = [s for s in self.traces.get_trace(ex.id, env).spans if s.parent_id is not None]
                except NotFound:  # no trace (e.g. removed by rf gc): nothing recorded
                    spans[ex.id] = []
        out: dict[str, tuple[list[Recorded], list[str]]] = {}
        for ex in recorded:
            mine = spans.get(ex.id, [])
            if any(s.name == "agents.invoke" for s in mine) and contiguous and len(recorded) > _BATCH_SPANS:
                mine = [s for s in self.traces.get_trace(ex.id, env).spans if s.parent_id is not None]  # its callees'
            mine.sort(key=lambda s: s.start_ns)
            out[ex.id] = recorded_from_spans(mine)
        return out

    def _histories(self, env: str, name: str, recorded: list[Execution]) -> dict[str, list[dict[str, Any]]]:
        """Each session turn's history: the session's messages before that execution's own."""
        cache: dict[str, list[tuple[Any, ...]]] = {}
        out: dict[str, list[dict[str, Any]]] = {}
        for ex in recorded:
            if not ex.session_id:
                continue
            rows = cache.get(ex.session_id)
            if rows is None:
                rows = cache[ex.session_id] = self.store.session_messages(env, ex.session_id, name)
            cut = next((i for i, r in enumerate(rows) if r[3] == ex.id), None)
            if cut is None:  # a failed turn kept no messages: those written before it started
                start = parse_iso(ex.started_at) if ex.started_at else None
                cut = sum(1 for r in rows if start is None or r[4] < start)
            out[ex.id] = [{"role": r[1], "content": r[2]} for r in rows[:cut]]
        return out


class _NoTools:
    """A replay scores nothing but the status (rf.evals.scorers.Tools, unused)."""

    def calls(self, execution_ids: list[str]) -> tuple[set[str], int]:
        return set(), 0

    def similarity(self, a: str, b: str) -> float:
        return 0.0

    def chat(self, messages: list[dict[str, Any]], model: str | None) -> str:
        return ""
