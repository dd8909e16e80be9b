"""``rf eval``: run an agent's eval suite against one environment's state.

- **staging**: the deployed staging commit, its suite read from that commit; or, with
  ``files`` (``rf eval --local``), the working copy and its suite, run like ``rf test``;
- **production**: the published commit and its suite, in production (production's prompts,
  connector instances and memory — like ``rf invoke --env production``; nothing of
  production's configuration changes).

Every turn of every case is one execution through the real runtime (``invoke`` /
the working-copy run of ``rf test``), recorded with source ``eval``; attempts run a few
at a time on a thread pool no wider than the environment's ``max_workers_per_agent`` (so an
eval never queues behind itself, nor takes a worker the pool would not give an agent).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from rf.config import check_name
from rf.errors import NotFound, UsageError
from rf.ids import iso, new_id, utcnow
from rf.models import WORKING_COPY, EvalResult, Execution, check_env
from rf.services.base import AgentRuns, ServiceContext, TraceReads

if TYPE_CHECKING:
    from rf.services.providers import ProvidersService

#: Attempts run at a time, at most (and never more than the pool gives one agent).
MAX_EVAL_WORKERS = 4


class _Tools:
    """The scorers' view of the host: trace spans, the offline embedder, the provider layer."""

    def __init__(self, traces: TraceReads, providers: ProvidersService) -> None:
        self.traces = traces
        self.providers = providers
        self._embedder: Any = None
        self._lock = threading.Lock()

    def calls(self, execution_ids: list[str]) -> tuple[set[str], int]:
        names: set[str] = set()
        unnamed = 0
        for execution_id in execution_ids:
            for span in self.traces.get_trace(execution_id).spans:
                if span.parent_id is None or span.kind == "runtime":
                    continue  # the run itself, and the runtime's own (a cold start, a wait for a worker)
                attrs = span.attributes or {}
                if span.kind == "connector" and span.name == "connectors.call":
                    if isinstance(attrs.get("connector"), str) and isinstance(attrs.get("resource"), str):
                        names.add(f"{attrs['connector']}.{attrs['resource']}")
                    else:
                        unnamed += 1
                names.add(span.name)
        return names, unnamed

    def similarity(self, a: str, b: str) -> float:
        with self._lock:  # the embedder's word caches are plain dicts
            if self._embedder is None:
                from rf.kb.embed import HashingEmbedder

                self._embedder = HashingEmbedder()
            vectors = self._embedder.embed([a, b])
        return float(vectors[0] @ vectors[1])

    def chat(self, messages: list[dict[str, Any]], model: str | None) -> str:
        provider, model_name = self.providers.resolve_model(model)
        client = self.providers.chat_client(provider)
        return client.chat(messages, model=model_name, tools=[]).text


class EvalsService:
    """``run_eval``: an agent's eval suite, run and scored (see the module docstring)."""

    def __init__(self, ctx: ServiceContext, agents: AgentRuns, traces: TraceReads, providers: ProvidersService) -> None:
        self.store = ctx.store
        self.agents = agents
        self.traces = traces
        self.providers = providers

    def run_eval(self, name: str, env: str = "staging", case: str | None = None, repeat: int | None = None,
                 files: dict[str, bytes] | None = None, live: bool = False, record: bool = False) -> EvalResult:
        """Run agent *name*'s eval suite (``evals/`` of the commit *env* runs, or of *files*:
        the working copy, staging only) and score it: one case (*case*), each case *repeat*
        times (default: the case's own ``repeat``). A failing case is a result, not an error;
        an agent without a suite, an unknown case or a bad argument is an error.

        Connector calls are answered from each case's recording (``evals/NAME.recordings.json``,
        rf.evals.tape); a call it does not hold fails its case, unless *live* (then it reaches the
        environment's instance). *record* (staging only) runs each case once against staging's
        instances and returns what they answered in ``recordings`` (``rf eval --record`` writes
        them next to the suite files)."""
        from rf.evals.runner import run_cases
        from rf.evals.suite import SUITE_DIR, load_suite, suite_files
        from rf.evals.tape import Tape, load_recordings, recordings_path

        check_env(env)
        check_name("agent", name)
        if not isinstance(live, bool) or not isinstance(record, bool):
            raise UsageError("live and record must be true or false")
        if record and env != "staging":
            raise UsageError("--record calls the connectors' staging instances: it runs in staging only",
                             f"record in staging: rf eval {name} --record")
        if record and repeat not in (None, 1):
            raise UsageError("--record runs each case once", "drop --repeat")
        if repeat is not None and (isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 100):
            raise UsageError(f"repeat must be a whole number from 1 to 100, not {repeat!r}", "e.g. --repeat 5")
        if files is not None:
            if env != "staging":
                raise UsageError("the working copy runs in staging only (like rf test)",
                                 f"evaluate production's published commit without --local: rf eval {name} --env production")
            if "agent.toml" not in files:
                from rf.errors import InvalidAgent

                raise InvalidAgent(f"agent {name!r} has no agent.toml",
                                   'add agents/NAME/agent.toml with: entrypoint = "agent:handle"')
            commit, source_files = WORKING_COPY, files
            where = f"agents/{name}/{SUITE_DIR}/"
        else:
            commit = self.agents.target(env, name)
            tree = self.agents.commit_tree(commit)
            source_files = self.agents.commit_files({p: s for p, s in tree.items() if p.startswith(SUITE_DIR + "/")})
            where = f"{SUITE_DIR}/ of {env}'s commit {commit[:12]}"
        suite = load_suite(source_files, agent=name)
        if not suite.cases:
            hint = (f"add agents/{name}/{SUITE_DIR}/smoke.yaml (a list of cases: id, input, expect), then "
                    f"rf eval {name} --local, or deploy it: rf agents deploy {name}")
            if not suite_files(source_files):
                raise NotFound(f"agent {name!r} has no eval suite ({where} holds no .yaml, .yml or .jsonl file)", hint)
            raise NotFound(f"the eval suite of agent {name!r} has no cases ({where})", hint)
        cases = suite.select(case)
        recordings = load_recordings(source_files, agent=name)
        tapes: dict[str, Tape] = {}  # when recording: each case's (one attempt each)

        def execute_for(c: Any, k: int) -> Any:
            where = recordings_path(c.file)
            tape = Tape([] if record else recordings.get(c.id, []), live=live, recording=record,
                        source=f"{where} (case {c.id})")
            if record:
                tapes[c.id] = tape
            if files is not None:
                def run_local(input: Any, session_id: str | None) -> Execution:
                    return self.agents.run_working_copy(name, files, input, session_id, source="eval", tape=tape)
                return run_local

            def run(input: Any, session_id: str | None) -> Execution:
                return self.agents.invoke(env, name, input, session_id, source="eval", tape=tape)
            return run

        limits = self.agents.pool.limits_of(env)
        workers = max(1, min(MAX_EVAL_WORKERS, limits.max_workers_per_agent))
        run_id = new_id("ev")
        started = utcnow()
        clock = time.perf_counter()
        results = run_cases(cases, None, _Tools(self.traces, self.providers), run_id=run_id, workers=workers,
                            repeat=1 if record else repeat, execute_for=execute_for)
        passed = sum(r.passed for r in results)
        recorded: dict[str, dict[str, list[Any]]] = {}
        if record:  # each case's calls, in the order they were made, by recordings file
            for c in cases:
                tape = tapes.get(c.id)
                recorded.setdefault(recordings_path(c.file), {})[c.id] = [
                    r.to_json() for r in (tape.recorded if tape is not None else [])]
        result = EvalResult(
            id=run_id, agent=name, env=env, commit=commit, files=suite.files, cases=results, total=len(results),
            passed=passed, failed=len(results) - passed, pass_rate=round(passed / len(results), 4),
            started_at=iso(started), duration_ms=round((time.perf_counter() - clock) * 1000, 3), workers=workers,
            connectors="record" if record else "live" if live else "replay", recordings=recorded,
        )
        from rf.models import to_dict

        with self.store.unit_of_work() as tx:  # kept for rf evals list|show
            tx.evals.insert_eval_run(run_id, env, name, commit, started, result.total, passed,
                                           to_dict(result))
        return result

    def list_eval_runs(self, agent: str | None = None, env: str | None = None, limit: int = 50) -> list[EvalResult]:
        """Stored eval runs, newest first (``rf evals list``): each run's totals, without its cases."""
        from rf.config import check_limit
        from rf.models import from_dict

        if agent is not None:
            check_name("agent", agent)
        if env is not None:
            check_env(env)
        rows = self.store.eval_run_results(agent, env, check_limit(limit, 10_000))
        return [from_dict(EvalResult, {**row, "cases": []}) for row in rows]

    def get_eval_run(self, run_id: str) -> EvalResult:
        """One stored eval run with every case and score (``rf evals show ID``; a unique prefix will do)."""
        from rf.models import from_dict

        if not isinstance(run_id, str) or not run_id.strip() or len(run_id) > 64:
            raise UsageError("give an eval run id", "list them: rf evals list")
        rows = self.store.eval_run_results(run_id=run_id.strip(), limit=2)
        if len(rows) > 1:
            raise UsageError(f"eval run id prefix {run_id!r} is ambiguous", "type more of the id")
        if not rows:
            raise NotFound(f"no eval run {run_id!r}", "list them: rf evals list")
        return from_dict(EvalResult, rows[0])
