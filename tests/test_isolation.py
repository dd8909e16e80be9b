"""Isolation, proved by a property-based stateful test.

Hypothesis mixes deploys, promotes, invocations with sessions and memory
writes in both environments, ``rf test`` runs and memory deletions, and after
every step checks that no execution, session, memory key or span of one
environment is visible from the other, and that ``rf test`` wrote only
staging state. The store is real (a DuckDB file), agent code runs in real
worker processes, in-process through the LocalBackend.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from conftest import write_agent
from rf.client import Backend, open_local
from rf.config import init_workspace, snapshot_dir
from rf.errors import NotFound, ProductionReadOnly
from rf.runtime.pool import remove_tree

ENVS = ("staging", "production")
TOML = 'entrypoint = "agent:handle"\ntimeout_s = 20\n'
CODE = """
VERSION = {version}

def handle(input, ctx):
    seen = ctx.memory.get(input["key"])
    with ctx.trace.span("write", env=ctx.env):
        ctx.memory.set(input["key"], {{"env": ctx.env, "v": input["v"]}})
    history = ctx.session.history() if ctx.session.id else []
    return {{"env": ctx.env, "seen": seen, "history": history, "version": VERSION}}
"""

sessions = st.sampled_from(["s1", "s2", None])
keys = st.sampled_from(["a", "user:1:b"])
values = st.integers(0, 99)


class Isolation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="rf-iso-"))
        self.ws = init_workspace(self.tmp / "ws")
        self.agent_dir = write_agent(self.ws.root, "iso", CODE.format(version=0), TOML)
        self.b: Backend = open_local(self.ws)
        self.deployed: int | None = None  # version in staging
        self.promoted: int | None = None  # version in production
        self.executions: dict[str, set[str]] = {env: set() for env in ENVS}
        self.sessions: dict[str, dict[str, int]] = {env: {} for env in ENVS}  # id -> messages
        self.memory: dict[str, dict[str, Any]] = {env: {} for env in ENVS}
        self.tests: set[str] = set()

    def teardown(self) -> None:
        self.b.close()
        remove_tree(self.tmp)

    # ------------------------------------------------------------ steps
    @initialize()
    def both_environments_live(self) -> None:
        """Start with the agent in both environments, so most steps can cross them."""
        self.deploy(0)
        self.promote()

    @rule(version=st.integers(0, 1))
    def deploy(self, version: int) -> None:
        (self.agent_dir / "agent.py").write_text(CODE.format(version=version))
        self.b.deploy("iso", snapshot_dir(self.agent_dir), f"v{version}", "prop")
        self.deployed = version

    @precondition(lambda self: self.deployed is not None)
    @rule()
    def promote(self) -> None:
        self.b.promote("iso", "prop")
        self.promoted = self.deployed

    @rule(env=st.sampled_from(ENVS), session=sessions, key=keys, v=values)
    def invoke(self, env: str, session: str | None, key: str, v: int) -> None:
        running = self.deployed if env == "staging" else self.promoted
        if running is None:
            with pytest.raises(NotFound):
                self.b.invoke(env, "iso", {"key": key, "v": v}, session)
            return
        ex = self.b.invoke(env, "iso", {"key": key, "v": v}, session)
        self._record(env, ex, session, key, v)
        assert ex.output["version"] == running

    @rule(session=sessions, key=keys, v=values)
    def rf_test(self, session: str | None, key: str, v: int) -> None:
        ex = self.b.run_test("iso", snapshot_dir(self.agent_dir), {"key": key, "v": v}, session)
        assert ex.env == "staging" and ex.source == "test"
        self.tests.add(ex.id)
        self._record("staging", ex, session, key, v)

    @rule(env=st.sampled_from(ENVS), key=keys)
    def delete_memory(self, env: str, key: str) -> None:
        if env == "production":
            with pytest.raises(ProductionReadOnly):
                self.b.delete_memory(key, env)
        elif key in self.memory[env]:
            assert self.b.delete_memory(key, env).keys == [key]
            del self.memory[env][key]
        else:
            with pytest.raises(NotFound):
                self.b.delete_memory(key, env)

    def _record(self, env: str, ex: Any, session: str | None, key: str, v: int) -> None:
        assert ex.status == "succeeded", ex.error
        assert ex.env == env and ex.output["env"] == env
        # What the agent read before writing: its own environment's last value, or nothing.
        assert ex.output["seen"] == self.memory[env].get(key)
        if session is not None:
            assert len(ex.output["history"]) == self.sessions[env].get(session, 0)
            self.sessions[env][session] = self.sessions[env].get(session, 0) + 2
        self.executions[env].add(ex.id)
        self.memory[env][key] = {"env": env, "v": v}

    # ------------------------------------------------------------ the property
    @invariant()
    def nothing_crosses_environments(self) -> None:
        for env in ENVS:
            other = "production" if env == "staging" else "staging"
            executions = self.b.list_executions(env, limit=1000)
            assert {e.id for e in executions} == self.executions[env]
            assert all(e.env == env for e in executions)
            listed = self.b.list_sessions(env)
            assert {s.id: s.messages for s in listed} == self.sessions[env]
            assert all(s.env == env for s in listed)
            assert {m.key: m.value for m in self.b.list_memory(env)} == self.memory[env]
            traces = self.b.list_traces(env, limit=1000)
            assert {t.execution_id for t in traces} == self.executions[env]
            assert all(t.env == env for t in traces)
            if executions:
                newest = executions[0].id
                assert {s.env for s in self.b.get_trace(newest, env).spans} == {env}
                with pytest.raises(NotFound):
                    self.b.get_trace(newest, other)
                with pytest.raises(NotFound):
                    self.b.get_execution(newest, other)
            assert all(s.env == env for s in self.b.export_spans(env))
        # rf test wrote only staging state.
        assert {e.id for e in self.b.list_executions("staging", source="test", limit=1000)} == self.tests
        assert self.b.list_executions("production", source="test") == []


Isolation.TestCase.settings = settings(
    max_examples=5, stateful_step_count=10, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestIsolation = Isolation.TestCase
