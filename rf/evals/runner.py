"""Running a suite: every attempt of every case on a small thread pool, then scoring.

The runner knows nothing of environments or commits: it is given ``execute(input,
session_id)`` (one execution through the real runtime, source ``eval``; see
rf.services.evals) and the scorers' :class:`~rf.evals.scorers.Tools`. Attempts run in
parallel (``workers`` at a time); a multi-turn case runs its turns in order, in one session,
and an earlier turn that fails ends that attempt. Results come back in suite order, so
later work (a release's eval gate, replay) can compare runs case by case.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rf.errors import RfError
from rf.evals.scorers import Observed, Tools, score_attempt
from rf.evals.suite import Case
from rf.models import EvalAttempt, EvalCaseResult, Execution

#: ``execute(input, session_id)``: one recorded execution.
Execute = Callable[[Any, "str | None"], Execution]


def run_cases(cases: list[Case], execute: Execute | None, tools: Tools, *, run_id: str, workers: int = 2,
              repeat: int | None = None,
              execute_for: Callable[[Case, int], Execute] | None = None) -> list[EvalCaseResult]:
    """Run and score *cases* (each ``repeat`` times: the case's own unless given).
    *execute_for(case, k)*, when given, makes the ``execute`` of attempt *k* of *case* (e.g. one
    that answers connector calls from that case's recording, rf.evals.tape)."""
    jobs = [(case, k) for case in cases for k in range(repeat or case.repeat)]

    def one(job: tuple[Case, int]) -> EvalAttempt:
        case, k = job
        run = execute_for(case, k) if execute_for is not None else execute
        assert run is not None, "run_cases needs execute or execute_for"
        return run_attempt(case, k, run, tools, run_id)

    if workers <= 1 or len(jobs) <= 1:
        attempts = [one(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="rf-eval") as pool:
            attempts = list(pool.map(one, jobs))
    results: list[EvalCaseResult] = []
    at = 0
    for case in cases:
        count = repeat or case.repeat
        mine = attempts[at:at + count]
        at += count
        passes = sum(a.passed for a in mine)
        passed = passes > 0 if case.pass_rule == "any" else passes == count
        results.append(EvalCaseResult(id=case.id, file=case.file, line=case.line, passed=passed,
                                      pass_rule=case.pass_rule, repeat=count, passes=passes,
                                      duration_ms=max((a.duration_ms for a in mine), default=0.0),
                                      attempts=mine))
    return results


def run_attempt(case: Case, k: int, execute: Execute, tools: Tools, run_id: str) -> EvalAttempt:
    """One attempt: its turns (one session when there are several), then every scorer."""
    session_id = f"eval:{run_id}:{case.id}:{k + 1}" if case.multi_turn else None
    ids: list[str] = []
    slowest = 0.0
    last: Execution | None = None
    for turn in case.inputs:
        try:
            last = execute(turn, session_id)
        except RfError as exc:  # refused before it ran (its input schema, a full pool...): this attempt fails
            error = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return EvalAttempt(passed=False, execution_ids=ids, error=error, duration_ms=slowest,
                               session_id=session_id)
        ids.append(last.id)
        slowest = max(slowest, last.duration_ms)
        if last.status != "succeeded":
            break
    assert last is not None  # a case has at least one input (rf.evals.suite)
    seen = Observed(status=last.status, output=last.output, error=last.error, duration_ms=slowest,
                    execution_ids=ids, input=last.input)
    scores = score_attempt(case.expect, seen, tools)
    return EvalAttempt(passed=all(s.passed for s in scores), execution_ids=ids, output=last.output,
                       error=last.error, duration_ms=slowest, session_id=session_id, scores=scores)
