"""``eval_suite``: an agent's eval suite as a commit holds it (read-only; the Evals screen).

A stored eval run (``rf evals show``) keeps each case's output and scores but not what the case
expected; the suite lives in the agent's commit (``evals/``), so the dashboard reads it from the
commit the run ran, to put the output next to its expectation.
"""

from __future__ import annotations

import re
from typing import Any

from rf.config import check_name
from rf.errors import NotFound, UsageError
from rf.models import EvalCaseSpec, EvalSuite, check_env
from rf.services.base import AgentRuns, ServiceContext


def _plain(value: Any) -> Any:
    """A checked scorer argument as JSON (a compiled regex as its pattern)."""
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class EvalSuitesService:
    """``eval_suite``: read an agent's suite from a commit (see the module docstring)."""

    def __init__(self, ctx: ServiceContext, agents: AgentRuns) -> None:
        self.store = ctx.store
        self.agents = agents

    def eval_suite(self, name: str, env: str = "staging", commit: str | None = None) -> EvalSuite:
        """Agent *name*'s eval suite in the commit *env* runs, or in *commit* (one of the agent's
        commits, e.g. a stored eval run's). No suite is an empty one (``files`` and ``cases``
        empty), not an error; an unknown agent or commit is NotFound."""
        from rf.evals.suite import SUITE_DIR, load_suite

        check_env(env)
        check_name("agent", name)
        if commit is None:
            commit = self.agents.target(env, name)
        else:
            if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{6,64}", commit):
                raise UsageError(f"not a commit id: {commit!r}", f"see the agent's commits: rf agents history {name}")
            found = self.store.get_commit(commit)
            if found is None or found.agent != name:
                raise NotFound(f"agent {name!r} has no commit {commit}",
                               f"see the agent's commits: rf agents history {name}")
        tree = self.agents.commit_tree(commit)
        files = self.agents.commit_files({p: s for p, s in tree.items() if p.startswith(SUITE_DIR + "/")})
        suite = load_suite(files, agent=name)
        return EvalSuite(
            agent=name, env=env, commit=commit, files=list(suite.files),
            cases=[EvalCaseSpec(id=c.id, file=c.file, line=c.line, inputs=list(c.inputs), expect=_plain(c.expect),
                                repeat=c.repeat, pass_rule=c.pass_rule, multi_turn=c.multi_turn,
                                description=c.description) for c in suite.cases],
        )
