"""The agents domain: agents, commits, executions (run in the worker pool), status."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rf.agent_input import check_input
from rf.config import (
    DEFAULT_MESSAGE_FIELD,
    DEFAULT_TRACE,
    DEFAULT_TRACE_MAX_CHARS,
    ENVIRONMENTS,
    NAME_RE,
    NAME_RULE,
    AgentConfig,
    check_limit,
    check_name,
    parse_agent_toml,
)
from rf.errors import AgentCallError, Conflict, InvalidAgent, NotFound, ProductionReadOnly, UsageError
from rf.evals.tape import Tape  # (at run time: the server reads invoke's annotations)
from rf.ids import datetime_of_ns, iso, iso_of_ns, new_id, now_ns, utcnow
from rf.models import (
    WORKING_COPY,
    Agent,
    AgentDiff,
    AgentStatus,
    Commit,
    DeleteResult,
    DeployResult,
    Execution,
    ReleaseItem,
    Status,
    check_env,
)
from rf.services import diffs
from rf.services.base import ReleaseReads, ServiceContext
from rf.services.host import HostCall, HostTable, host_method, host_table
from rf.services.sessions import check_session_id, finish_execution
from rf.services.traces import ExecutionTrace, _new_span_id, dispatch, replay_final

if TYPE_CHECKING:
    from rf.runtime.pool import WorkerKey, WorkerPool, WorkerSetup
    from rf.services.canary import CanaryWatch, RoutingCache

_log = logging.getLogger("rf.services")

#: How deep agents may call agents by default (``ctx.agents.invoke``; see AgentsService.agent_call_depth).
AGENT_CALL_DEPTH = 4
#: Of the time a calling execution has left, the share kept back from the agent it calls (at
#: most _CALL_RESERVE_S): the caller's time to handle the answer before its own timeout.
_CALL_RESERVE_SHARE = 0.2
_CALL_RESERVE_S = 1.0
#: Less than this left for the agent called: the call is refused (it could not even start).
_CALL_MIN_S = 0.05


def shown_name(name: object, most: int = 64) -> str:
    """*name* quoted for a message, cut to *most* characters (a request can send any length)."""
    text = str(name)
    return repr(text) if len(text) <= most else f"{text[:most]!r}… ({len(text)} characters)"


def tree_of(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}


def tree_hash(tree: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


class AgentsService:
    """Agents, commits, executions (the worker pool runs them), status. Thread-safe.

    Production executions take their arm from *routing* (rf.services.canary); a list of
    executions resolves its release filter through *releases*. What agent code may call
    (:meth:`host_methods`) is this service's ``@host_method``s and those of
    :attr:`host_services`; what a deploy warns about, :attr:`deploy_checks` (both set by the
    :class:`rf.services.Services` facade, which builds every service).
    """

    def __init__(self, ctx: ServiceContext, routing: RoutingCache, releases: ReleaseReads) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.routing = routing
        self.releases = releases
        #: the domain services whose ``@host_method``s agent code reaches too
        self.host_services: tuple[object, ...] = ()
        self._host_methods: HostTable | None = None
        #: the checks a deploy runs on agent.toml (each returns warnings: prompts, connectors)
        self.deploy_checks: list[Callable[[AgentConfig], list[str]]] = []
        #: the server's canary check (``rf.services.canary.CanaryWatch``), told when canary executions end
        self.canary_watch: CanaryWatch | None = None
        # Hot-path caches for invoke. Commits are immutable; heads only move
        # through this object (the process that owns the store), which clears
        # the cache on every such write.
        self._heads: dict[tuple[str, str], str] = {}
        self._heads_generation = 0
        self._configs: dict[str, dict[str, Any]] = {}
        self._code_dirs: dict[str, Path] = {}
        self._trees: dict[str, dict[str, str]] = {}  #: commit trees checked at each worker start
        self._code_lock = ctx.code_lock  #: one check (and repair) of a code directory at a time
        ctx.prepare = self._prepare_worker
        pool = ctx.started_pool
        if pool is not None and pool.prepare is None:
            pool.prepare = self._prepare_worker

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (started on first use)."""
        return self.ctx.pool

    @property
    def cache_dir(self) -> Path:
        return self.ctx.cache_dir

    @property
    def server_url(self) -> str | None:
        """The URL of the server serving this workspace (None: none, or not yet)."""
        return self.ctx.server_url

    # ------------------------------------------------------------ status
    def status(self) -> Status:
        from rf.store import describe_store

        ws = self.workspace
        return Status(
            workspace=ws.name if ws else "(in-memory)",
            workspace_path=str(ws.root) if ws else "",
            server_url=self.server_url,
            backend="local",
            agents=[
                AgentStatus(a.name, a.description, a.staging_commit, a.production_commit, a.commits_ahead)
                for a in self.list_agents()
            ],
            schema_version=self.store.schema_version,
            store=describe_store(self.store),
            replicas=self.store.live_replicas(),
        )

    # ------------------------------------------------------------ agents
    def ahead(self, parents: dict[str, str | None], staging: str | None, production: str | None) -> int:
        """Commits reachable from staging that production's chain does not contain."""
        prod_chain: set[str] = set()
        cur = production
        while cur is not None and cur not in prod_chain:
            prod_chain.add(cur)
            cur = parents.get(cur)
        count = 0
        seen: set[str] = set()
        cur = staging
        while cur is not None and cur not in prod_chain and cur not in seen:
            seen.add(cur)
            count += 1
            cur = parents.get(cur)
        return count

    def list_agents(self) -> list[Agent]:
        rows = self.store.agent_rows()
        parents = self.store.commit_parents()
        agents = []
        for row in rows:
            if row["staging_commit"] is None and row["production_commit"] is None:
                continue  # deleted in both environments (its commits and executions stay readable)
            agent = Agent(**row)
            agent.commits_ahead = self.ahead(parents.get(agent.name, {}), agent.staging_commit,
                                              agent.production_commit)
            agents.append(agent)
        return agents

    def get_agent(self, name: str) -> Agent:
        rows = self.store.agent_rows(name)
        if not rows:
            raise self._unknown_agent(name)
        if rows[0]["staging_commit"] is None and rows[0]["production_commit"] is None:
            raise NotFound(f"agent {name!r} was deleted (in staging and production)",
                           f"its commits stay readable: rf agents history {name}; deploy it again: "
                           f"rf agents deploy {name}")
        agent = Agent(**rows[0])
        parents = self.store.commit_parents([name]).get(name, {})
        agent.commits_ahead = self.ahead(parents, agent.staging_commit, agent.production_commit)
        # Each environment's trace mode, as its commit runs it (configurations are cached per commit).
        agent.trace = {env: self.commit_config(commit)["trace"][env]
                       for env, commit in (("staging", agent.staging_commit), ("production", agent.production_commit))
                       if commit is not None}
        return agent

    def deployed_agents(self, env: str) -> list[tuple[Agent, str, dict[str, Any]]]:
        """``(agent, commit, configuration)`` of every agent deployed in ``env``: what
        ``/{env}/mcp`` lists as tools (the configuration's ``description`` and
        ``input_schema`` are that commit's agent.toml). In production, an agent a running canary
        brings (on its arm only) is listed with the canary's commit."""
        check_env(env)
        deployed = []
        canary_agents: dict[str, str] = {}
        if env == "production":
            routing = self.routing.current()
            canary_agents = routing.canary.agents if routing.canary is not None else {}
        for agent in self.list_agents():
            commit = agent.staging_commit if env == "staging" else (agent.production_commit
                                                                    or canary_agents.get(agent.name))
            if commit is not None:
                deployed.append((agent, commit, self.commit_config(commit)))
        return deployed

    def _unknown_agent(self, name: str) -> NotFound:
        # The hint never lists the other agents: an endpoint caller without a key must not
        # learn what else the workspace runs (rf agents list shows them to the developer).
        if not isinstance(name, str) or not NAME_RE.match(name):
            # No agent can have this name (deploy checks it): a 404 like any unknown agent,
            # with the rule, and never a look at the file system (a 300-character name
            # would fail there: ENAMETOOLONG).
            return NotFound(f"unknown agent {shown_name(name)}", f"not a valid agent name: {NAME_RULE}")
        hint = "see the deployed agents with: rf agents list"
        try:
            in_agents_dir = (self.workspace is not None
                             and (self.workspace.agents_dir / name / "agent.toml").is_file())
        except OSError:  # an unreadable agents/ directory: only the hint depends on it
            in_agents_dir = False
        if in_agents_dir:
            hint = f"it exists in agents/ but was never deployed: rf agents deploy {name}"
        return NotFound(f"unknown agent {name!r}", hint)

    def deploy(self, name: str, files: dict[str, bytes], message: str = "", author: str = "unknown") -> DeployResult:
        """Snapshot files into a commit and point **staging** at it (never production)."""
        check_name("agent", name)
        if "agent.toml" not in files:
            raise InvalidAgent(f"agent {name!r} has no agent.toml", 'add agents/NAME/agent.toml with: entrypoint = "agent:handle"')
        config = parse_agent_toml(name, files["agent.toml"].decode("utf-8", errors="replace"),
                                  source=f"agents/{name}/agent.toml")
        if any(path.startswith("evals/") for path in files):
            from rf.evals import load_suite

            load_suite(files, agent=name)  # a suite that does not load never reaches a commit (InvalidAgent)
        tree = tree_of(files)
        parent = self.store.get_head(name, "staging")
        if parent is not None:
            head = self.store.get_commit(parent)
            if head is not None and head.tree == tree:
                return DeployResult(agent=name, commit=head, created=False)
        self._validate_code(files, config)
        warnings = self._deploy_warnings(config)
        now = utcnow()
        created_at = iso(now)
        message = message.strip() or "deploy"
        commit_id = hashlib.sha256(
            json.dumps([name, parent, tree_hash(tree), message, author, created_at]).encode()
        ).hexdigest()
        commit = Commit(id=commit_id, agent=name, parent=parent, message=message, author=author,
                        created_at=created_at, tree=tree)
        blobs = {sha: files[path] for path, sha in tree.items()}
        with self.store.unit_of_work() as tx:
            tx.agents.put_blobs(blobs)
            tx.agents.upsert_agent(name, config.description, now)
            tx.agents.insert_commit(commit, now, _config_dict(config))
            tx.agents.set_head(name, "staging", commit_id, now)
        self.heads_changed()
        return DeployResult(agent=name, commit=commit, created=True, warnings=warnings)

    def _deploy_warnings(self, config: AgentConfig) -> list[str]:
        """What :attr:`deploy_checks` warn about (unknown prompts/connectors agent.toml lists)."""
        return [warning for check in self.deploy_checks for warning in check(config)]

    def _validate_code(self, files: dict[str, bytes], config: AgentConfig) -> None:
        from rf.runtime.check import validate_agent_code

        with tempfile.TemporaryDirectory(prefix="rf-check-") as tmp:
            root = Path(tmp) / config.name
            _write_files(root, files)
            # Imported like a worker would: the allow-listed environment plus this commit's [env].
            validate_agent_code(root, config.entrypoint, agent_env=config.env_values())

    def history(self, name: str) -> list[Commit]:
        """Every commit of an agent, newest first (a deleted agent's too: history stays readable)."""
        if not self.store.agent_rows(name):
            raise self._unknown_agent(name)
        return self.store.list_commits(name)

    def delete_agent(self, name: str, env: str = "staging") -> DeleteResult:
        """Delete an agent from staging at once (its staging endpoint stops answering). Production is
        never changed here: if it runs the agent, removing it there is the pending release item
        ``agent:NAME`` (production's commit → nothing), published like any other change. Commits,
        executions and releases stay readable; deployed again, the agent comes back."""
        check_env(env)
        if env == "production":
            raise ProductionReadOnly(
                f"production is read-only: cannot delete agent {name!r} there directly",
                f"delete it in staging, then publish the removal: rf agents delete {name}; "
                f"rf releases publish agent:{name}",
            )
        agent = self.get_agent(name)
        if agent.staging_commit is None:
            raise Conflict(f"agent {name!r} is already deleted in staging; production still runs it",
                           f"remove it from production: rf releases publish agent:{name}")
        with self.store.unit_of_work() as tx:
            tx.agents.set_head(name, "staging", None, utcnow())
        self.heads_changed()
        warnings = [f"staging trigger {t['name']} ({t['id']}) runs agent {name}: it fails until you delete it "
                    f"(rf triggers delete {t['id']}) or deploy the agent again"
                    for t in self.store.trigger_rows("staging") if t["agent"] == name]
        item = None
        if agent.production_commit is not None:
            item = ReleaseItem(kind="agent", name=name, summary="remove from production (deleted in staging)",
                               before=agent.production_commit, after=None)
        return DeleteResult(kind="agent", name=name, env="staging", item=item, warnings=warnings)

    def resolve_commit(self, name: str, ref: str) -> str:
        """A commit id from a ref: full id, unique prefix, or an env name."""
        if ref in ("staging", "production"):
            head = self.store.get_head(name, ref)
            if head is None:
                raise NotFound(f"agent {name!r} has no {ref} commit")
            return head
        matches = self.store.find_commits(name, ref)
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"agent {name!r} has no commit {ref!r}", f"see: rf agents history {name}")
        raise UsageError(f"commit prefix {ref!r} is ambiguous", "type more characters of the id")

    def diff_agent(self, name: str, base: str | None = None, head: str | None = None) -> AgentDiff:
        """Per-file diff production → staging (or between two refs)."""
        agent = self.get_agent(name)
        base_id = self.resolve_commit(name, base) if base else agent.production_commit
        head_id = self.resolve_commit(name, head) if head else agent.staging_commit
        base_c = self.store.get_commit(base_id) if base_id else None
        head_c = self.store.get_commit(head_id) if head_id else None
        base_tree = base_c.tree if base_c else {}
        head_tree = head_c.tree if head_c else {}
        blobs = self.store.get_blobs(
            [s for p, s in base_tree.items() if head_tree.get(p) != s]
            + [s for p, s in head_tree.items() if base_tree.get(p) != s]
        )
        files = diffs.tree_diff(base_tree, head_tree, blobs)
        commits: list[Commit] = []
        if head_id:
            parents = self.store.commit_parents([name]).get(name, {})
            prod_chain: set[str] = set()
            c = base_id
            while c is not None and c not in prod_chain:
                prod_chain.add(c)
                c = parents.get(c)
            chain_ids = []
            c = head_id
            while c is not None and c not in prod_chain and c not in chain_ids:
                chain_ids.append(c)
                c = parents.get(c)
            by_id = {cm.id: cm for cm in self.store.list_commits(name)}
            commits = [by_id[i] for i in chain_ids if i in by_id]
            for cm in commits:
                cm.tree = {}
        return AgentDiff(agent=name, base=base_id, head=head_id, commits=commits, files=files)

    # ------------------------------------------------------------ code on disk
    def code_dir(self, commit_id: str) -> Path:
        """The commit's files on disk (written once, atomically, read-only, from blobs).

        Cheap on the hot path (no stat() once known); every new worker checks the
        directory against the commit first (:meth:`_prepare_worker`)."""
        known = self._code_dirs.get(commit_id)
        if known is not None:
            return known  # already on disk: no stat() per request
        target = self.cache_dir / "commits" / commit_id
        if target.is_dir():
            self._code_dirs[commit_id] = target
            return target
        tree = self.commit_tree(commit_id)
        self._code_dirs[commit_id] = _materialize(target, self.commit_files(tree))
        return target

    def working_copy_dir(self, name: str, files: dict[str, bytes]) -> tuple[str, Path]:
        """``rf test``'s copy of the working files (read-only, checked on every call)."""
        tree = tree_of(files)
        digest = tree_hash(tree)[:20]
        target = self.cache_dir / "working-copy" / name / digest
        self._ensure_code(target, tree, lambda: files, f"working copy of agent {name!r}")
        return digest, target

    def commit_tree(self, commit_id: str) -> dict[str, str]:
        tree = self._trees.get(commit_id)
        if tree is None:
            commit = self.store.get_commit(commit_id)
            if commit is None:
                raise NotFound(f"commit {commit_id} is missing from the store")
            tree = self._trees[commit_id] = commit.tree
        return tree

    def commit_files(self, tree: dict[str, str]) -> dict[str, bytes]:
        blobs = self.store.get_blobs(list(tree.values()))
        return {path: blobs[sha] for path, sha in tree.items()}

    def _prepare_worker(self, key: WorkerKey, code_dir: str) -> WorkerSetup:
        """The pool's hook before a new worker starts (a cold start; warm runs never get here):
        check every file of the commit's directory against the commit (repairing it from the
        store if it differs), and give the commit's own ``[env]`` values."""
        from rf.runtime.pool import WorkerSetup

        _, name, label = key
        root = Path(code_dir)
        toml: bytes | None
        if label.startswith(WORKING_COPY + ":"):
            # rf test: working_copy_dir checked (and repaired) these files just before the run.
            toml, problem = (root / "agent.toml").read_bytes(), None
            source = f"agents/{name}/agent.toml"
        else:
            tree = self.commit_tree(label)
            toml, problem = self._ensure_code(root, tree, lambda: self.commit_files(tree),
                                              f"agent {name!r} commit {label}")
            source = f"agent.toml of agent {name!r} commit {label[:12]}"
            if problem is not None:
                # Workers of this commit that already run may have imported a changed file lazily.
                self.pool.retire(lambda other: other[2] == label)
        # Deployed commits (and rf test's copy, checked just before) are read as they were
        # accepted: a key an older rf let through must not stop the commit's workers.
        config = parse_agent_toml(name, (toml or b"").decode("utf-8", errors="replace"), source=source,
                                  strict=False)
        return WorkerSetup(env=config.env_values(), problem=problem)

    def _ensure_code(self, root: Path, tree: dict[str, str], load: Callable[[], dict[str, bytes]],
                     what: str) -> tuple[bytes | None, str | None]:
        """Make *root* hold exactly *tree*, read-only: ``(agent.toml's bytes, what differed)``.

        A missing directory is written (a first use); one whose files differ from *tree* (a
        changed, extra or missing file) is removed and written again from *load()*, with a
        warning; one whose files are right but not read-only gets its modes back."""
        with self._code_lock:
            if not root.is_dir():
                files = load()
                _materialize(root, files)
                return files.get("agent.toml"), None
            problems, modes_wrong, toml = _tree_problems(root, tree)
            if not problems:
                if modes_wrong:
                    _lock_down(root)
                return toml, None
            problem = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
            _log.warning("%s: the files in %s do not match what was deployed (%s); "
                         "re-created them from the store", what, root, problem)
            files = load()
            _replace(root, files)
            return files.get("agent.toml"), problem

    # ------------------------------------------------------------ executions
    def invoke(
        self,
        env: str,
        name: str,
        input: Any = None,
        session_id: str | None = None,
        source: str = "invoke",
        on_chunk: Callable[[Any], None] | None = None,
        tape: Tape | None = None,
    ) -> Execution:
        """Run the commit ``env`` points at and record the execution (in production, the
        commit of the arm the request is routed to: see rf.services.canary; *tape*: recorded
        connector answers, for a replay or a replay-only eval: see rf.evals.tape)."""
        return self.invoke_routed(self._arm(env, session_id, source), env, name, input, session_id, source,
                                  on_chunk, tape)

    def invoke_routed(self, arm: Any, env: str, name: str, input: Any = None, session_id: str | None = None,
                      source: str = "invoke", on_chunk: Callable[[Any], None] | None = None,
                      tape: Tape | None = None) -> Execution:
        """:meth:`invoke` on the arm :meth:`check_invoke` routed the request to (a stream checks
        before it answers, then runs: one routing decision for both)."""
        commit_id = self._arm_target(env, name, arm)
        config = self.commit_config(commit_id)
        if config.get("input_schema") is not None:  # [input] schema (none: nothing to pay)
            check_input(config, input, env, name)
        return self._run(
            env=env, name=name, commit_label=commit_id, code_dir=self.code_dir(commit_id),
            entrypoint=config.get("entrypoint", "agent:handle"), timeout_s=float(config.get("timeout_s", 60.0)),
            input=input, session_id=session_id, source=source, on_chunk=on_chunk,
            trace=config["trace"][env], trace_max_chars=int(config.get("trace_max_chars", DEFAULT_TRACE_MAX_CHARS)),
            session_fields=config["session"], arm=arm, tape=tape,
        )

    def _arm(self, env: str, session_id: str | None, source: str) -> Any:
        """The arm a production execution runs (``rf.services.canary.Arm``; None in staging):
        decided here once for every surface, from the cached routing (no store read)."""
        if env != "production":
            return None
        return self.routing.current().pick(session_id if isinstance(session_id, str) else None, source)

    def _arm_target(self, env: str, name: str, arm: Any) -> str:
        """The commit agent ``name`` runs on *arm*: the canary's, else the environment's head.
        An agent production has only on the canary arm is NotFound on stable, saying so."""
        if arm is not None and arm.agents:
            commit_id = arm.agents.get(name)
            if commit_id is not None:
                return str(commit_id)
        try:
            return self.target(env, name)
        except NotFound:
            routing = self.routing.cached if arm is not None and arm.arm == "stable" else None
            if routing is None or routing.canary is None or name not in routing.canary.agents:
                raise
            raise NotFound(
                f"agent {name!r} is in production only on the canary arm (canary {routing.canary_id} at "
                f"{routing.weight:g} %), and this request was routed to stable",
                "a session keeps its arm: another session id may reach it; or give the canary all of "
                "production: rf releases canary weight 100, or promote it: rf releases canary promote") from None

    def reachable_commit(self, env: str, name: str) -> str | None:
        """The commit agent *name* runs in *env* on some arm — in production, stable's, else a
        running canary's (an agent the canary brings): what a surface that lists or describes
        an environment's agents shows. None (no error) when there is none."""
        try:
            return self.target(env, name)
        except NotFound:
            if env != "production":
                return None
        routing = self.routing.current()
        return routing.canary.agents.get(name) if routing.canary is not None else None

    def target(self, env: str, name: str) -> str:
        """The commit ``env`` runs for agent ``name`` (NotFound, with the fix, if none)."""
        check_env(env)
        key = (name, env)
        commit_id = self._heads.get(key)
        if commit_id is None:
            generation = self._heads_generation
            commit_id = self.store.get_head(name, env)
            if commit_id is not None and generation == self._heads_generation:
                self._heads[key] = commit_id
                if generation != self._heads_generation:  # cleared meanwhile (another thread): not cached
                    self._heads.pop(key, None)
        if commit_id is None:
            if not self.store.agent_rows(name):
                raise self._unknown_agent(name)
            if env == "production":
                raise NotFound(
                    f"agent {name!r} is not in production yet",
                    f"promote staging when it looks good: rf agents promote {name}",
                )
            raise NotFound(f"agent {name!r} has no staging deployment", f"deploy it: rf agents deploy {name}")
        return commit_id

    def check_invoke(self, env: str, name: str, input: Any = None, session_id: str | None = None,
                     source: str = "endpoint") -> Any:
        """What :meth:`invoke` checks before it runs, for answers that must fail before they
        start (a stream): the request routed to its production arm, the commit it runs there
        (NotFound if none: on stable, an agent only the canary has says so), and the input
        against its ``[input] schema`` (UsageError). The arm (None in staging): run it with
        :meth:`invoke_routed`, so the check and the run see the same arm."""
        arm = self._arm(env, session_id, source)
        commit_id = self._arm_target(env, name, arm)
        config = self.commit_config(commit_id)
        if config.get("input_schema") is not None:
            check_input(config, input, env, name)
        return arm

    def commit_config(self, commit_id: str) -> dict[str, Any]:
        """The commit's stored configuration (``_config_dict``), with ``trace`` as
        ``{env: mode}`` and ``session`` as the ``(input, output)`` message fields, or None when
        both are ``message``; commits deployed by an older rf are read the same way."""
        config = self._configs.get(commit_id)
        if config is None:
            config = self._configs[commit_id] = run_config(self.store.get_commit_config(commit_id))
        return config

    def heads_changed(self) -> list[str]:
        """Forget cached heads after any write that moves one, here and in every other server on
        the store (replicas on PostgreSQL: rf.store.pg_replicas). Returns once every live
        replica confirmed it dropped its caches too — the replicas that did not within the
        bound (none on DuckDB: one process owns the store)."""
        self.forget_heads()
        unconfirmed: list[str] = self.store.announce_change()
        return unconfirmed

    def forget_heads(self) -> None:
        """Forget this process's cached heads and routing (also: another replica announced a change).

        The generation counter stops a read that started before the write from
        caching the old head after the clear.
        """
        self._heads_generation += 1
        self._heads.clear()
        self.routing.forget()  # production's arms name the release production runs

    def run_test(
        self,
        name: str,
        files: dict[str, bytes],
        input: Any = None,
        session_id: str | None = None,
        on_chunk: Callable[[Any], None] | None = None,
    ) -> Execution:
        """``rf test``: run working-copy files in **staging** mode (never production)."""
        return self.run_working_copy(name, files, input, session_id, on_chunk)

    def run_working_copy(self, name: str, files: dict[str, bytes], input: Any = None, session_id: str | None = None,
                          on_chunk: Callable[[Any], None] | None = None, source: str = "test",
                          tape: Tape | None = None) -> Execution:
        """:meth:`run_test` with the execution's *source* (``eval`` for ``rf eval --local``)."""
        check_name("agent", name)
        if "agent.toml" not in files:
            raise InvalidAgent(f"agent {name!r} has no agent.toml", 'add agent.toml with: entrypoint = "agent:handle"')
        config = parse_agent_toml(name, files["agent.toml"].decode("utf-8", errors="replace"),
                                  source=f"agents/{name}/agent.toml")
        if config.input_schema is not None:
            check_input({"input_schema": config.input_schema}, input, "staging", name)
        digest, code_dir = self.working_copy_dir(name, files)
        return self._run(
            env="staging", name=name, commit_label=WORKING_COPY, code_dir=code_dir,
            entrypoint=config.entrypoint, timeout_s=config.timeout_s, input=input, session_id=session_id,
            source=source, on_chunk=on_chunk, pool_label=f"{WORKING_COPY}:{digest}",
            trace=config.trace["staging"], trace_max_chars=config.trace_max_chars,
            session_fields=run_config(_config_dict(config))["session"], tape=tape,
        )

    def _run(
        self,
        *,
        env: str,
        name: str,
        commit_label: str,
        code_dir: Path,
        entrypoint: str,
        timeout_s: float,
        input: Any,
        session_id: str | None,
        source: str,
        on_chunk: Callable[[Any], None] | None,
        pool_label: str | None = None,
        trace: str = DEFAULT_TRACE,
        trace_max_chars: int = DEFAULT_TRACE_MAX_CHARS,
        session_fields: tuple[str, str] | None = None,
        parent: HostCall | None = None,
        arm: Any = None,
        tape: Tape | None = None,
    ) -> Execution:
        """Run one execution in a worker and record it: its trace (a root span around the
        run, a child span per host call, in the environment's trace mode), and, if it
        succeeded, its session messages and memory writes (see rf.services.sessions).
        *parent*: the execution whose agent called this one (``ctx.agents.invoke``); *arm*:
        the production arm it runs (rf.services.canary)."""
        prepared = self._prepare_run(env=env, name=name, commit_label=commit_label, input=input,
                                     session_id=session_id, source=source, stream=on_chunk is not None,
                                     trace=trace, trace_max_chars=trace_max_chars, session_fields=session_fields,
                                     parent=parent, arm=arm, tape=tape)
        call, tracer, request = prepared
        try:
            result = self.pool.run(
                (env, name, pool_label or commit_label), code_dir, entrypoint, request,
                timeout_s=timeout_s, on_chunk=on_chunk, host=self.host_handler(call), on_start=tracer.started,
            )
        except BaseException:
            self.store.running.untrack(request.execution_id)  # not recorded: nor left "running"
            raise
        return self._finish_run(prepared, result, commit_label=commit_label, input=input)

    async def ainvoke(self, env: str, name: str, input: Any = None, session_id: str | None = None,
                      source: str = "endpoint") -> Execution:
        """:meth:`invoke` for the server's event loop: no thread hop when a warm worker is idle
        (see ``WorkerPool.arun``). Same records, same errors."""
        arm = self._arm(env, session_id, source)
        commit_id = self._arm_target(env, name, arm)
        config = self.commit_config(commit_id)
        if config.get("input_schema") is not None:  # [input] schema (none: nothing to pay)
            check_input(config, input, env, name)
        code_dir = self.code_dir(commit_id)
        prepared = self._prepare_run(env=env, name=name, commit_label=commit_id, input=input,
                                     session_id=session_id, source=source, stream=False,
                                     trace=config["trace"][env],
                                     trace_max_chars=int(config.get("trace_max_chars", DEFAULT_TRACE_MAX_CHARS)),
                                     session_fields=config["session"], arm=arm)
        call, tracer, request = prepared
        try:
            result = await self.pool.arun(
                (env, name, commit_id), code_dir, config.get("entrypoint", "agent:handle"), request,
                timeout_s=float(config.get("timeout_s", 60.0)), host=self.host_handler(call), on_start=tracer.started,
            )
        except BaseException:  # e.g. cancelled while waiting for a worker
            self.store.running.untrack(request.execution_id)  # not recorded: nor left "running"
            raise
        return self._finish_run(prepared, result, commit_label=commit_id, input=input)

    def _prepare_run(self, *, env: str, name: str, commit_label: str, input: Any, session_id: str | None,
                     source: str, stream: bool, trace: str, trace_max_chars: int,
                     session_fields: tuple[str, str] | None = None, parent: HostCall | None = None,
                     arm: Any = None, tape: Tape | None = None) -> Any:
        """The execution's call, trace and run request. *trace* is the mode of *env* for
        this commit (``[trace]`` in agent.toml); *session_fields*, the input and output fields
        its session keeps as messages (``[session]``; None: ``message`` for both); *parent*,
        the calling execution of a child one (``ctx.agents.invoke``): the child records it as
        its ``parent_id`` and joins its trace (same trace id)."""
        from rf.runtime.pool import RunRequest

        check_session_id(session_id)
        execution_id = new_id("ex")
        call = HostCall(env=env, agent=name, execution_id=execution_id, session_id=session_id,
                        commit=commit_label, source=source, arm=arm, tape=tape)
        if parent is not None:
            call.parent_id = parent.execution_id
            call.chain = (*parent.chain, parent.agent)
            if parent.tape is not None:  # a replayed execution's calls to other agents replay too
                call.tape = parent.tape
        if session_fields is not None and session_id is not None:
            call.state["session_fields"] = session_fields  # read by rf.services.sessions.finish_execution
        tracer = ExecutionTrace.begin(self.store, call, trace, trace_max_chars, now_ns())  # timing starts
        parent_trace = parent.state.get("trace") if parent is not None else None
        if parent_trace is not None:  # one trace across the calling execution and this one
            tracer.trace_id = parent_trace.trace_id
        tracer.input = input
        # In flight: shown as running if it lasts (rf.store.executions.RunningMarkers).
        self.store.running.track(execution_id, tracer, None if arm is None else (arm.release_id, arm.arm))
        request = RunRequest(execution_id=execution_id, env=env, agent=name, input=input,
                             session_id=session_id, stream=stream, trace_root=tracer.root_id)
        return call, tracer, request

    def _finish_run(self, prepared: Any, result: Any, *, commit_label: str, input: Any) -> Execution:
        """Record the execution. ``started_at`` is when the request arrived, ``queued_ms`` its
        wait until a worker started it (a busy pool, a cold start), ``duration_ms`` the rest, up
        to now: ``ended_at - started_at = queued_ms + duration_ms``. A run that never started
        (no worker could) has ``queued_ms`` 0 and the whole time as its duration."""
        call, tracer, request = prepared
        if result.queue_wait is not None:  # every worker was busy: the trace shows the wait
            tracer.queue_wait(*result.queue_wait)
        if result.worker_start is not None:  # a cold start: the trace shows the wait
            tracer.worker_start(*result.worker_start, result.worker_pid)
        if result.code_repair is not None:  # its code directory had been changed on disk
            repair_start, repair_end, problem = result.code_repair
            tracer._child(_new_span_id(), tracer.root_id, "runtime", "code.verify", repair_start,
                          max(repair_end, repair_start), "error", f"code directory repaired: {problem}",
                          {"commit": commit_label})
        if result.ops or result.spans:
            # Deferred ctx calls and custom spans that rode on the worker's "done"
            # message; a failure among them fails the execution (see finish_execution).
            replay_final(self.host_methods(), call, result.ops, result.spans)
        ended_ns = now_ns()
        start_ns, run_ns = tracer.start_ns, tracer.run_ns or tracer.start_ns
        started, ended = datetime_of_ns(start_ns), datetime_of_ns(ended_ns)
        execution = Execution(
            id=request.execution_id, env=call.env, agent=call.agent, commit=commit_label, source=call.source,
            status=result.status, input=input, output=result.output, error=result.error,
            error_type=result.error_type, traceback=result.traceback, logs=result.logs,
            started_at=iso_of_ns(start_ns), ended_at=iso_of_ns(ended_ns), duration_ms=round(max(ended_ns - run_ns, 0) / 1e6, 3),
            session_id=call.session_id, queued_ms=round(max(run_ns - start_ns, 0) / 1e6, 3),
            parent_id=call.parent_id,
        )
        arm = call.arm
        if arm is not None:  # production: the release it ran, and its arm while a canary runs
            execution.release_id, execution.arm = arm.release_id, arm.arm
        store = self.store
        writer = store.writer
        writer.begin_group()  # the record and what the execution wrote: one commit
        try:
            finish_execution(store, call, execution, started, ended)  # may turn it into a failure first
            root_span = tracer.finish(execution, ended_ns)
            store.record_execution(execution, started, ended, root_span)
        finally:
            store.running.untrack(request.execution_id)  # its running marker, if any, goes with this batch
            writer.end_group()
            # The trace points back at the call: without this, every execution would
            # leave a reference cycle for the garbage collector to find.
            call.state.pop("trace", None)
        if execution.arm is not None and self.canary_watch is not None:
            self.canary_watch.ended(execution)  # the canary check (auto-abort) looks soon; live scoring samples
        return execution

    def host_methods(self) -> HostTable:
        """What agent code may call: the ``@host_method``s of this object and of
        :attr:`host_services` (built once)."""
        table = self._host_methods
        if table is None:
            table = self._host_methods = host_table(self, *self.host_services)
        return table

    def host_handler(self, call: HostCall) -> Callable[[str, dict[str, Any]], Any]:
        """What ``ctx.call_host`` reaches for one execution (see rf.services.host)."""
        table = self.host_methods()

        def handle(method: str, params: dict[str, Any]) -> Any:
            # Each call runs in a span of the execution's trace (rf.services.traces).
            return dispatch(table, call, method, params)

        return handle

    # ------------------------------------------------------------ agents calling agents
    #: How deep agents may call agents: A → B → C → D → E is depth 4; E calling on is refused.
    agent_call_depth = AGENT_CALL_DEPTH

    @host_method("agents.invoke")
    def _host_agents_invoke(self, call: HostCall, name: Any = None, input: Any = None,
                            session_id: Any = None) -> Any:
        """``ctx.agents.invoke(name, input, session_id=None)``: run agent *name*'s commit of
        the caller's environment (staging's under ``rf test``) as a child execution of *call*,
        with at most the time *call* has left, and answer its output. Refused before anything
        runs: a cycle (an agent already in the chain of calls), a chain deeper than
        :attr:`agent_call_depth`. The child's failure is an :class:`AgentCallError` naming it.

        The child runs in another worker (its own agent's key) while the caller's worker waits
        for this answer; the refusals above are what keep a chain from holding every worker of
        the environment (a call back into a busy agent could wait for itself)."""
        if not isinstance(name, str) or not name:
            raise UsageError("ctx.agents.invoke: name the agent to call",
                             'e.g. ctx.agents.invoke("other", {"message": "hi"})')
        if session_id is not None and not isinstance(session_id, str):
            raise UsageError("ctx.agents.invoke: session_id must be a string (or None)")
        chain = (*call.chain, call.agent)
        shown = " → ".join((*chain, name))
        if name in chain:
            raise AgentCallError(f"agent call cycle refused: {shown}",
                                 "an agent cannot call an agent that is already waiting on it (directly or "
                                 "through others): break the cycle", agent=name)
        if len(chain) > self.agent_call_depth:
            raise AgentCallError(f"agent call depth limit ({self.agent_call_depth}) reached: {shown}",
                                 "agents may call agents at most this deep: flatten the chain", agent=name)
        # The caller's arm (a canary's agents too): NotFound (with the fix) when it is not in this environment.
        commit_id = self._arm_target(call.env, name, call.arm)
        config = self.commit_config(commit_id)
        if config.get("input_schema") is not None:
            check_input(config, input, call.env, name)
        timeout_s = float(config.get("timeout_s", 60.0))
        if call.deadline is not None:
            # The child gets what the caller has left, minus a share for the caller to handle
            # the answer (or the failure) before its own timeout.
            left = call.deadline - time.monotonic()
            budget = left - min(_CALL_RESERVE_S, left * _CALL_RESERVE_SHARE)
            if budget < _CALL_MIN_S:
                raise AgentCallError(f"no time left to call agent {name}: execution {call.execution_id} "
                                     f"times out in {max(left, 0):.2f}s", "raise timeout_s in agent.toml of "
                                     f"agent {call.agent}", agent=name)
            timeout_s = min(timeout_s, budget)
        execution = self._run(
            env=call.env, name=name, commit_label=commit_id, code_dir=self.code_dir(commit_id),
            entrypoint=config.get("entrypoint", "agent:handle"), timeout_s=timeout_s, input=input,
            session_id=session_id, source=f"agent:{call.agent}", on_chunk=None, trace=config["trace"][call.env],
            trace_max_chars=int(config.get("trace_max_chars", DEFAULT_TRACE_MAX_CHARS)),
            session_fields=config["session"], parent=call, arm=call.arm,
        )
        call.annotate(child_execution_id=execution.id)  # on this call's span: the way down the trace
        if execution.status != "succeeded":
            raise AgentCallError(
                f"agent {name} failed (execution {execution.id}): {execution.error or execution.status}",
                f"see it: rf executions show {execution.id} --env {call.env}", agent=name,
                execution_id=execution.id, error=execution.error, error_type=execution.error_type)
        return execution.output

    def list_executions(
        self,
        env: str = "staging",
        agent: str | None = None,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
        before: str | None = None,
        release: str | None = None,
        arm: str | None = None,
    ) -> list[Execution]:
        """Executions of one environment, newest first; ``release`` (an id or prefix) and ``arm``
        (stable, canary): production's executions of that release / canary arm."""
        from rf.services.canary import arm_filters

        check_env(env)
        if status is not None and status not in EXECUTION_STATUSES:
            raise UsageError(f"unknown status {status!r}", "use one of: " + ", ".join(EXECUTION_STATUSES))
        check_limit(limit, 10_000)
        release_id, arm = arm_filters(self.releases, release, arm)
        return self.store.list_executions(env, agent=agent, status=status, source=source, limit=limit,
                                          before=before, release_id=release_id, arm=arm)

    def get_execution(self, execution_id: str, env: str | None = None) -> Execution:
        """One execution; with ``env`` given, one of another environment is 'not found'."""
        ex = self.store.get_execution(execution_id)
        if ex is None and len(execution_id) >= 4:
            matches = self.store.find_executions(execution_id)
            if len(matches) == 1:
                ex = self.store.get_execution(matches[0])
            elif len(matches) > 1:
                raise UsageError(f"execution id prefix {execution_id!r} is ambiguous", "type more of the id")
        if ex is None or (env is not None and ex.env != check_env(env)):
            where = f" in {env}" if env else ""
            raise NotFound(f"no execution {execution_id!r}{where}", "list them: rf executions list --env ENV")
        return ex


#: What ``status`` an execution can have (``running`` while it runs; see rf.store.executions).
EXECUTION_STATUSES = ("succeeded", "failed", "running", "interrupted")

def _config_dict(config: AgentConfig) -> dict[str, Any]:
    """What a commit stores of its agent.toml (``commits.config``): what runs need without
    reading the file. ``trace`` is ``{env: mode}`` (a single mode in commits of older rf)."""
    return {
        "description": config.description,
        "entrypoint": config.entrypoint,
        "timeout_s": config.timeout_s,
        "prompts": config.prompts,
        "connectors": config.connectors,
        "trace": dict(config.trace),
        "trace_max_chars": config.trace_max_chars,
        "session": {"input": config.session_input, "output": config.session_output},
        **({"input_schema": config.input_schema} if config.input_schema is not None else {}),
        **({"agents": config.uses_agents} if config.uses_agents else {}),
    }


def run_config(stored: dict[str, Any]) -> dict[str, Any]:
    """A commit's stored configuration ready for runs: ``trace`` always ``{env: mode}`` (older
    commits stored one mode for both), ``session`` the ``(input, output)`` message fields or
    None for the default (``message``: nothing to look up at the end of each execution)."""
    config = dict(stored)
    trace = config.get("trace", DEFAULT_TRACE)
    if not isinstance(trace, dict):
        trace = dict.fromkeys(ENVIRONMENTS, trace)
    config["trace"] = {env: str(trace.get(env, DEFAULT_TRACE)) for env in ENVIRONMENTS}
    session = config.get("session") or {}
    fields = (str(session.get("input", DEFAULT_MESSAGE_FIELD)), str(session.get("output", DEFAULT_MESSAGE_FIELD)))
    config["session"] = None if fields == (DEFAULT_MESSAGE_FIELD, DEFAULT_MESSAGE_FIELD) else fields
    return config


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    """Write *files* under *root*, each readable by its owner only (mode 0o400)."""
    base = root.resolve()
    for rel, data in files.items():
        path = (root / rel).resolve()
        if not path.is_relative_to(base):
            raise InvalidAgent(f"file path {rel!r} escapes the agent directory")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        with os.fdopen(fd, "wb") as out:
            out.write(data)


def _lock_down(root: Path) -> None:
    """Files 0o400, directories 0o500: nothing under *root* is writable, nor readable by others."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IRUSR)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IRUSR | stat.S_IXUSR)
    os.chmod(root, stat.S_IRUSR | stat.S_IXUSR)


def _tree_problems(root: Path, tree: dict[str, str]) -> tuple[list[str], bool, bytes | None]:
    """Compare the directory *root* with *tree* (``path -> sha256``): ``(what differs, whether
    any mode is not read-only, agent.toml's bytes)``. Every file is read and hashed; a file or
    directory the tree does not have (``__pycache__`` too), a missing one, a link or anything
    but a regular file is a difference."""
    problems: list[str] = []
    modes_wrong = False
    toml: bytes | None = None
    dirs = {parent.as_posix() for rel in tree for parent in Path(rel).parents if parent != Path(".")}
    seen: set[str] = set()

    def unreadable(exc: OSError) -> None:
        problems.append(f"cannot read {exc.filename}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        if stat.S_IMODE(os.lstat(dirpath).st_mode) & 0o277:
            modes_wrong = True
        for name in list(dirnames):
            rel = prefix + name
            if rel not in dirs or os.path.islink(os.path.join(dirpath, name)):
                problems.append(f"{rel}/ is not in the commit")
                dirnames.remove(name)
        for name in filenames:
            rel = prefix + name
            seen.add(rel)
            path = os.path.join(dirpath, name)
            expected = tree.get(rel)
            if expected is None:
                problems.append(f"{rel} is not in the commit")
                continue
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                problems.append(f"{rel} is not a regular file")
                continue
            if stat.S_IMODE(info.st_mode) & 0o277:
                modes_wrong = True
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                problems.append(f"cannot read {rel}")
                continue
            if hashlib.sha256(data).hexdigest() != expected:
                problems.append(f"{rel} was changed")
            elif rel == "agent.toml":
                toml = data
    problems.extend(f"{rel} is missing" for rel in sorted(tree.keys() - seen))
    return problems, modes_wrong, toml


def _materialize(target: Path, files: dict[str, bytes]) -> Path:
    """Write *files* as the read-only directory *target* (a temp dir, then renamed, so a
    half-written tree is never used); an existing *target* is kept as it is."""
    if target.is_dir():
        return target
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        _write_files(tmp, files)
        _lock_down(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():  # lost a race with another writer: theirs is identical
                raise
    finally:
        if tmp.exists():
            from rf.runtime.pool import remove_tree

            remove_tree(tmp)
    return target


def _replace(target: Path, files: dict[str, bytes]) -> None:
    """Swap *target* for a fresh copy of *files*: the old one is moved aside first (a worker
    starting meanwhile never sees a half-deleted directory), then deleted."""
    from rf.runtime.pool import remove_tree

    aside = target.with_name(f".old-{target.name}-{new_id('x')}")
    target.rename(aside)
    try:
        _materialize(target, files)
    finally:
        remove_tree(aside)
