"""Releases: the one way production changes.

A *release item* is one difference between staging and production (an agent
whose staging commit is not production's, a prompt whose draft is not
published, a connector whose instances differ, a trigger staged for
production). The domain owning each kind plugs it in as a :class:`ReleaseKind` (see
``releases_contract.md``): ``release_pending()`` and
``release_apply(tx, name, before, after)`` (``tx``: the repositories of the
publish's unit of work).

A *plan* is a set of items with their before → after states; its id hashes
them all, so ``publish(plan_id=...)`` publishes exactly what was reviewed or
refuses. Publishing applies every item inside ONE transaction under the
store's write lock: all or nothing, and two publishes serialize.

Production only changes through releases, so production's state for any item
is the ``after`` of the newest release item that touched it. Rollback uses
that: it publishes each item's ``before`` as a new release.

**The eval gate.** A plan runs the eval suite (``agents/NAME/evals/``, in the commit) of every
agent it changes on staging's state (``run_eval(NAME, "staging")``: the commit the release
publishes, draft prompts, staging connectors) and production's commit's own suite in production
(source ``eval``: production's connector instances are called, like ``rf eval --env
production``), and compares them case by case: regressions (passing in production, failing on
staging), new failures (failing cases production's suite lacks), fixed. An agent the plan changes
only through a prompt or connector it uses is evaluated the same way when staging runs
production's commit (otherwise its own unpublished code would be in the comparison: it is listed
as not evaluated). The evidence is stored with the plan id (a plan id is the state: the
stale-plan rule covers the evidence too), so ``publish --plan ID`` checks what was reviewed
without running anything again; a publish refuses regressions unless ``accept_regressions``
with a reason, and the release records the evidence and the reason. No suite, no eval work
(``[releases] require_evals = true`` refuses agents without one). A rollback is not gated: it
is the way back.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rf.errors import Conflict, NotFound, UsageError
from rf.ids import new_id, utcnow
from rf.models import (
    PRODUCTION_RELEASE_KINDS,
    AgentEvalEvidence,
    EvalResult,
    PromoteResult,
    Release,
    ReleaseItem,
    ReleasePlan,
    from_dict,
    to_dict,
)
from rf.services.base import ServiceContext

if TYPE_CHECKING:
    from rf.services.agents import AgentsService
    from rf.services.canary import CanaryGate
    from rf.services.evals import EvalsService
    from rf.store import Store
    from rf.store.interfaces import Repositories

#: Item kinds, in the order they are applied and listed.
KINDS = ("prompt", "connector", "agent", "trigger")


def plan_id_of(items: list[ReleaseItem]) -> str:
    """A short hash of every before → after state in the plan (order-independent)."""
    canon = sorted(json.dumps([i.kind, i.name, i.before, i.after], sort_keys=True, default=str) for i in items)
    return hashlib.sha256("\n".join(canon).encode()).hexdigest()[:16]


def _label(item: ReleaseItem) -> str:
    return f"{item.kind} {item.name}"


_NAME = r"""(['"])([^'"\\\n]+)\{n}"""
#: What agent code names with string literals: ctx.prompts.render/get("p"),
#: ctx.connectors.call/describe/tool("slug", "resource"), ctx.kb("kb"), ctx.data("source").
_PROMPT_REF = re.compile(r"\bprompts\s*\.\s*(?:render|get)\(\s*" + _NAME.format(n=1))
_CONNECTOR_REF = re.compile(r"\bconnectors\s*\.\s*(?:call|describe|tool)\(\s*" + _NAME.format(n=1)
                            + r"(?:\s*,\s*" + _NAME.format(n=3) + ")?")
_KB_REF = re.compile(r"\.\s*kb\(\s*" + _NAME.format(n=1) + r"\s*\)")
_DATA_REF = re.compile(r"\.\s*data\(\s*" + _NAME.format(n=1) + r"\s*\)")
#: ctx.agents.invoke("other", ...): the agents it calls.
_AGENT_REF = re.compile(r"\bagents\s*\.\s*invoke\(\s*" + _NAME.format(n=1))


@dataclass
class AgentUses:
    """What one commit of an agent uses: declared in agent.toml, or named in its code."""

    prompts: set[str] = field(default_factory=set)
    connectors: set[str] = field(default_factory=set)
    resources: set[tuple[str, str]] = field(default_factory=set)  #: (connector, resource) its code calls
    kbs: set[str] = field(default_factory=set)
    data: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)  #: other agents it calls (``[uses] agents``, ctx.agents.invoke)


def code_uses(source: str, uses: AgentUses) -> AgentUses:
    """Add what *source* names with string literals (a name computed at run time cannot be seen)."""
    uses.prompts.update(m.group(2) for m in _PROMPT_REF.finditer(source))
    for m in _CONNECTOR_REF.finditer(source):
        uses.connectors.add(m.group(2))
        if m.group(4):
            uses.resources.add((m.group(2), m.group(4)))
    uses.kbs.update(m.group(2) for m in _KB_REF.finditer(source))
    uses.data.update(m.group(2) for m in _DATA_REF.finditer(source))
    uses.agents.update(m.group(2) for m in _AGENT_REF.finditer(source))
    return uses


class ReleaseKind(Protocol):
    """One kind of release item (:data:`KINDS`), plugged in by the domain that owns it
    (``releases_contract.md``): what is pending, and how an item is applied inside the
    publish's unit of work (``tx``: its repositories)."""

    def release_pending(self) -> list[ReleaseItem]: ...

    def release_apply(self, tx: Repositories, name: str, before: Any, after: Any) -> None: ...


class Publisher(Protocol):
    """What the domains with a one-item publish shortcut (``rf prompts publish``, a connector's,
    a production trigger's) need of the releases domain: the one way production changes."""

    def plan_release(self, items: list[str] | None = None, all: bool = False, with_deps: bool = False,
                     strict: bool = False, evals: bool = True) -> ReleasePlan: ...

    def publish_release(self, items: list[str] | None = None, all: bool = False, plan_id: str | None = None,
                        message: str = "", author: str = "unknown", with_deps: bool = False,
                        strict: bool = False, accept_regressions: bool = False,
                        canary: float | None = None) -> Release: ...


class CommitUses:
    """What a commit holds and uses: its tree, its Python source, the prompts, connectors,
    knowledge bases, data sources and agents it names, whether it has an eval suite. Commits
    are immutable: everything is cached per commit id."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._trees: dict[str, dict[str, str]] = {}
        self._uses: dict[str, AgentUses] = {}

    def prefetch(self, commit_ids: list[str]) -> None:
        """Read the trees of these commits in one query (those not cached yet)."""
        missing = [c for c in commit_ids if c not in self._trees]
        if missing:
            self._trees.update(self.store.get_commit_trees(missing))

    def tree(self, commit_id: str | None) -> dict[str, str]:
        if commit_id is None:
            return {}
        tree = self._trees.get(commit_id)
        if tree is None:
            commit = self.store.get_commit(commit_id)
            tree = self._trees[commit_id] = commit.tree if commit else {}
        return tree

    def changed_files(self, base: str | None, head: str | None) -> int:
        base_tree = self.tree(base)
        head_tree = self.tree(head)
        return sum(1 for p in set(base_tree) | set(head_tree) if base_tree.get(p) != head_tree.get(p))

    def python_source(self, commit_id: str) -> str:
        tree = self.tree(commit_id)
        blobs = self.store.get_blobs([sha for path, sha in tree.items() if path.endswith(".py")])
        return "\n".join(b.decode("utf-8", errors="replace") for b in blobs.values())

    def uses(self, commit_id: str) -> AgentUses:
        """What a commit uses (agent.toml's prompts/connectors and ``[uses] agents``, and what
        its code names)."""
        uses = self._uses.get(commit_id)
        if uses is None:
            config = self.store.get_commit_config(commit_id)
            uses = AgentUses(prompts={p for p in config.get("prompts", []) if isinstance(p, str)},
                             connectors={c for c in config.get("connectors", []) if isinstance(c, str)},
                             agents={a for a in config.get("agents", []) if isinstance(a, str)})
            uses = self._uses[commit_id] = code_uses(self.python_source(commit_id), uses)
        return uses

    def has_suite(self, commit_id: str) -> bool:
        """Does this commit hold an eval suite? (Its tree only: no suite, no eval work.)"""
        from rf.evals.suite import SUITE_DIR, SUITE_EXTENSIONS

        return any(p.startswith(SUITE_DIR + "/") and p.endswith(SUITE_EXTENSIONS) for p in self.tree(commit_id))


class AgentReleases:
    """Agents as release items (kind ``agent``): a staging commit production does not run."""

    def __init__(self, store: Store, agents: AgentsService, commits: CommitUses) -> None:
        self.store = store
        self.agents = agents
        self.commits = commits

    def release_pending(self) -> list[ReleaseItem]:
        items = []
        parents = self.store.commit_parents()
        rows = self.store.agent_rows()
        self.commits.prefetch([c for r in rows for c in (r["staging_commit"], r["production_commit"])
                               if c is not None and r["staging_commit"] != r["production_commit"]])
        for row in rows:
            staging, production = row["staging_commit"], row["production_commit"]
            if staging is None and production is not None:  # deleted in staging (rf agents delete)
                items.append(ReleaseItem(kind="agent", name=row["name"], before=production, after=None,
                                         summary="remove from production (deleted in staging)"))
                continue
            if staging is None or staging == production:
                continue
            chain = parents.get(row["name"], {})
            ahead = self.agents.ahead(chain, staging, production)
            files = self.commits.changed_files(production, staging)
            if production is None:
                summary = f"new in production: {ahead} commit{'s' if ahead != 1 else ''}, {files} file{'s' if files != 1 else ''}"
            else:
                summary = f"{ahead} commit{'s' if ahead != 1 else ''} ahead, {files} file{'s' if files != 1 else ''} changed"
            items.append(ReleaseItem(kind="agent", name=row["name"], summary=summary, before=production, after=staging))
        return items

    def release_apply(self, tx: Repositories, name: str, before: Any, after: Any) -> None:
        current = tx.agents.get_head(name, "production")
        if current != before:
            raise Conflict(f"production changed since the plan: agent {name} now runs {str(current)[:8]}",
                           "re-run rf releases plan")
        if after is not None and not tx.agents.commit_exists(after):
            raise NotFound(f"commit {after} of agent {name} is missing")
        tx.agents.set_head(name, "production", after, utcnow())


class ReleaseHistory:
    """The releases recorded: listed, one by id or id prefix, and production's state they
    imply (what sessions, traces, executions and canaries read of the releases domain)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.store = ctx.store

    def list_releases(self, limit: int = 50) -> list[Release]:
        from rf.config import check_limit

        return [self.release_of(r) for r in self.store.list_releases(check_limit(limit, 10_000))]

    def get_release(self, release_id: str) -> Release:
        rows = self.store.list_releases(2, id_prefix=release_id) if len(release_id) >= 6 else []
        exact = [r for r in rows if r["id"] == release_id]
        if exact or len(rows) == 1:
            return self.release_of((exact or rows)[0])
        if len(rows) > 1:
            raise UsageError(f"release id prefix {release_id!r} is ambiguous", "type more of the id")
        raise NotFound(f"no release {release_id!r}", "see them with: rf releases history")

    @staticmethod
    def release_of(row: dict[str, Any]) -> Release:
        items = [ReleaseItem(kind=i["kind"], name=i["name"], summary=i.get("summary", ""), before=i["before"],
                             after=i["after"]) for i in row["items"]]
        evidence = row.get("evidence") or {}
        return Release(id=row["id"], created_at=row["created_at"], author=row["author"], message=row["message"],
                       plan_id=row["plan_id"], kind=row["kind"], items=items,
                       evals=[from_dict(AgentEvalEvidence, e) for e in evidence.get("evals", [])],
                       accepted_regressions=evidence.get("accepted_regressions"),
                       canary=evidence.get("canary"), weight=evidence.get("weight"), figures=evidence.get("figures"))

    def production_state(self) -> dict[tuple[str, str], Any]:
        """Production's state per item, from the release history (newest wins; a canary's own
        releases never changed production)."""
        state: dict[tuple[str, str], Any] = {}
        for release in reversed(self.store.list_releases(1_000_000)):
            if release["kind"] not in PRODUCTION_RELEASE_KINDS:
                continue
            for item in release["items"]:
                state[(item["kind"], item["name"])] = item["after"]
        return state


class ReleasesService:
    """Plans, the eval gate, publishes, promotes and rollbacks: production's one way to change.

    Each kind of item is a :class:`ReleaseKind` plugged in by the domain that owns it
    (:meth:`plug_in`, in :data:`KINDS` order); a canary publish goes through ``canary`` (a
    :class:`rf.services.canary.CanaryGate`, set once the canary service exists: it applies its
    promote through this service)."""

    def __init__(self, ctx: ServiceContext, history: ReleaseHistory, agents: AgentsService, commits: CommitUses,
                 evals: EvalsService) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.history = history
        self.agents = agents
        self.commits = commits
        self.evals = evals
        self.kinds: dict[str, ReleaseKind] = {}
        self.canary: CanaryGate | None = None
        #: the variables a prompt's draft adds to its published version (set by the prompts domain)
        self.new_prompt_variables: Callable[[str], list[str]] = lambda name: []

    def plug_in(self, kind: str, plugin: ReleaseKind) -> None:
        """Add the plug-in of one kind of item (listed and applied in :data:`KINDS` order)."""
        if kind not in KINDS:
            raise ValueError(f"unknown release item kind {kind!r}")
        self.kinds[kind] = plugin
        self.kinds = {k: self.kinds[k] for k in KINDS if k in self.kinds}

    def _canary(self) -> CanaryGate:
        if self.canary is None:
            raise UsageError("this rf cannot start canary releases")
        return self.canary

    # ------------------------------------------------------------ listing and planning
    def release_items(self) -> list[ReleaseItem]:
        """Every difference between staging and production, all kinds."""
        items: list[ReleaseItem] = []
        for kind in self.kinds.values():
            items.extend(kind.release_pending())
        return items

    def _select(self, pending: list[ReleaseItem], names: list[str] | None, all: bool) -> list[ReleaseItem]:
        """The items named, or every pending item with ``all``. Nothing named is an error, never
        "everything": publishing all must be asked for (``all``, ``--all``) or reviewed (a plan id)."""
        if all:
            if names:
                raise UsageError("name the items or ask for all of them, not both",
                                 "drop --all to publish only the items named")
            return list(pending)
        if not names:
            raise UsageError("no items selected: name the items to publish, or pass --all for every pending item",
                             "see them with: rf releases")
        chosen: list[ReleaseItem] = []
        for ref in names:
            kind, _, name = ref.partition(":") if ":" in ref else ("", "", ref)
            matches = [i for i in pending if i.name == name and (not kind or i.kind == kind)]
            if not matches:
                raise NotFound(f"nothing to publish for {ref!r}",
                               "it may already be in production; see pending items with: rf releases")
            if len(matches) > 1:
                options = ", ".join(f"{i.kind}:{i.name}" for i in matches)
                raise UsageError(f"{ref!r} names more than one item", f"say which: {options}")
            if matches[0] not in chosen:
                chosen.append(matches[0])
        return chosen

    def _dependency_check(self, chosen: list[ReleaseItem], pending: list[ReleaseItem]
                          ) -> tuple[list[ReleaseItem], list[str], list[str], list[str]]:
        """``(missing, warnings, unavailable, still_used)`` of a batch.

        * missing: pending prompt/connector/agent items that the batch's agents use (agent.toml,
          or by name in their code, down to a connector's resources; the agents they call with
          ctx.agents.invoke) but the batch lacks;
        * unavailable: what they use that production lacks and no pending item provides —
          a prompt or connector nowhere, a resource no instance has, a knowledge base or data
          source that does not exist (those are shared by both environments), an agent that
          neither production nor staging runs;
        * still_used: removals (``after`` None) that production still uses once the batch is
          published, naming each user; and resources a connector item drops that production
          agents call;
        * warnings: one line each, plus prompts whose new variables production code may not pass.
        """
        in_batch = {(i.kind, i.name): i for i in chosen}
        pending_by_key = {(i.kind, i.name): i for i in pending}
        missing: list[ReleaseItem] = []
        warnings: list[str] = []
        unavailable: list[str] = []
        still_used: list[str] = []
        agents = [i for i in chosen if i.kind == "agent" and i.after is not None]
        connectors: dict[str, dict[str, set[str]]] | None = None

        def instances() -> dict[str, dict[str, set[str]]]:
            nonlocal connectors
            if connectors is None:
                connectors = {env: {r["slug"]: {res["slug"] for res in r.get("resources", [])}
                                    for r in self.store.connector_rows(env)}
                              for env in ("staging", "production")}
            return connectors

        def need(item: ReleaseItem, dep: ReleaseItem, what: str) -> None:
            if (dep.kind, dep.name) in in_batch or dep in missing:
                return
            missing.append(dep)
            warnings.append(f"agent {item.name} uses {what}, which has unpublished changes "
                            f"({dep.summary}) not in this release")

        def lacks(item: ReleaseItem, what: str, fix: str) -> None:
            if what not in unavailable:
                unavailable.append(what)
            warnings.append(f"agent {item.name} uses {what}, which production does not have ({fix})")

        if agents:
            in_production = {r["name"] for r in self.store.agent_rows() if r["production_commit"] is not None}
            published = {r["name"] for r in self.store.prompt_rows() if r["published_version"] is not None}
            kbs = {r["name"] for r in self.store.kb_rows()}
            sources = {r["name"] for r in self.store.data_source_rows()}
        for item in agents:
            uses = self.commits.uses(str(item.after))
            for name in sorted(uses.prompts):
                dep = pending_by_key.get(("prompt", name))
                if dep is not None and dep.after is not None:
                    need(item, dep, f"prompt {name}")
                elif name not in published:
                    lacks(item, f"prompt {name}", f"create it: rf prompts create {name}, then publish it")
            for slug in sorted(uses.connectors):
                dep = pending_by_key.get(("connector", slug))
                if dep is not None and dep.after is not None:
                    need(item, dep, f"connector {slug}")
                elif slug not in instances()["production"]:
                    lacks(item, f"connector {slug}", f"create it in staging: rf connectors create {slug}, then publish it")
            for slug, resource in sorted(uses.resources):
                dep = pending_by_key.get(("connector", slug))
                batch_item = in_batch.get(("connector", slug))
                publishing = batch_item is not None and batch_item.after is not None
                if resource in instances()["staging" if publishing else "production"].get(slug, set()):
                    continue
                if dep is not None and dep.after is not None and resource in instances()["staging"].get(slug, set()):
                    need(item, dep, f"connector {slug} resource {resource}")
                elif publishing or slug in instances()["production"]:
                    lacks(item, f"connector {slug} resource {resource}",
                          f"add it in staging: rf connectors resources add {slug} {resource} ..., then publish it")
            for name in sorted(uses.agents - {item.name}):
                # Agents call agents of their own environment: production must run the callee.
                dep = pending_by_key.get(("agent", name))
                if dep is not None and dep.after is not None:
                    need(item, dep, f"agent {name}")
                elif name not in in_production or (dep is not None and ("agent", name) in in_batch):
                    lacks(item, f"agent {name}", f"deploy it: rf agents deploy {name}, then promote it")
            for name in sorted(uses.kbs - kbs):
                lacks(item, f"knowledge base {name}",
                      f"knowledge bases are shared by both environments: rf kb create {name}")
            for name in sorted(uses.data - sources):
                lacks(item, f"data source {name}",
                      f"data sources are shared by both environments: rf data add {name} ...")
        self._removal_check(chosen, in_batch, warnings, still_used, instances)
        prompt_vars = self.new_prompt_variables
        prompt_items = [i for i in chosen if i.kind == "prompt" and i.after is not None]
        if prompt_items:
            # prompt -> [(agent, production commit)] for production agents not in this batch (one query)
            rows = [r for r in self.store.agent_rows()
                    if r["production_commit"] is not None and ("agent", r["name"]) not in in_batch]
            users: dict[str, list[tuple[str, str]]] = {}
            for r in rows:
                for used in self.commits.uses(r["production_commit"]).prompts:
                    users.setdefault(used, []).append((r["name"], r["production_commit"]))
            for item in prompt_items:
                if item.name not in users:
                    continue
                new_vars = prompt_vars(item.name)
                for agent_name, prod in users[item.name] if new_vars else []:
                    source = self.commits.python_source(prod)
                    unpassed = [v for v in new_vars if v not in source]
                    if unpassed:
                        warnings.append(
                            f"prompt {item.name} adds variable{'s' if len(unpassed) != 1 else ''} "
                            f"{', '.join(unpassed)}, which production agent {agent_name} does not appear to pass")
        return missing, warnings, unavailable, still_used

    def _removal_check(self, chosen: list[ReleaseItem], in_batch: dict[tuple[str, str], ReleaseItem],
                       warnings: list[str], still_used: list[str], instances: Any) -> None:
        """Removals in the batch that production still uses once it is published (see above)."""
        removals = [i for i in chosen if i.after is None and i.before is not None]
        shrinking = [i for i in chosen if i.kind == "connector" and "@" not in i.name
                     and i.before is not None and i.after is not None]
        if not removals and not shrinking:
            return
        # Production's agents once this batch is published: name -> commit.
        production: dict[str, str] = {}
        for row in self.store.agent_rows():
            item = in_batch.get(("agent", row["name"]))
            commit = (item.after if item is not None else row["production_commit"])
            if commit is not None:
                production[row["name"]] = str(commit)
        triggers: list[dict[str, Any]] = []
        if any(i.kind == "agent" for i in removals):
            triggers = [t for t in self.store.trigger_rows("production", live_only=True)
                        if not (("trigger", t["id"]) in in_batch and _gone(in_batch[("trigger", t["id"])].after))]
        for item in removals:
            users: list[str] = []
            if item.kind == "agent":
                users = [f"trigger {t['name']} ({t['id']})" for t in triggers if t["agent"] == item.name]
                users += [f"agent {agent}" for agent, commit in sorted(production.items())
                          if agent != item.name and item.name in self.commits.uses(commit).agents]
            elif item.kind in ("prompt", "connector"):
                for agent, commit in sorted(production.items()):
                    uses = self.commits.uses(commit)
                    if item.name in (uses.prompts if item.kind == "prompt" else uses.connectors):
                        users.append(f"agent {agent}")
            if users:
                still_used.append(f"{_label(item)} (used by {', '.join(users)})")
                warnings.append(f"removing {_label(item)} from production breaks what still uses it there: "
                                + ", ".join(users))
        for item in shrinking:
            have = instances()["production"].get(item.name, set())
            keep = instances()["staging"].get(item.name, set())
            dropped = have - keep
            for resource in sorted(dropped):
                users = [f"agent {agent}" for agent, commit in sorted(production.items())
                         if (item.name, resource) in self.commits.uses(commit).resources]
                if users:
                    what = f"connector {item.name} resource {resource}"
                    still_used.append(f"{what} (used by {', '.join(users)})")
                    warnings.append(f"publishing {_label(item)} removes resource {resource} from production, "
                                    f"which {', '.join(users)} still call{'s' if len(users) == 1 else ''}")

    def plan_release(self, items: list[str] | None = None, all: bool = False, with_deps: bool = False,
                     strict: bool = False, evals: bool = True) -> ReleasePlan:
        """The exact set of changes a publish would make, with its plan id: the items named,
        or every pending item with ``all=True`` (nothing named is a UsageError).

        With ``evals`` (the default) it is also the release gate's evidence: the eval suite of
        every agent the plan changes, on staging's state against production's (see
        :meth:`_gate_evidence`); stored with the plan, so ``publish --plan ID`` checks exactly the
        evidence reviewed. ``evals=False`` lists the changes only (``rf releases diff``)."""
        plan = self._plan_items(items, all, with_deps, strict)
        if evals:
            self._gate_evidence(plan, reuse=False)
        return plan

    def _plan_items(self, items: list[str] | None, all: bool, with_deps: bool, strict: bool) -> ReleasePlan:
        pending = self.release_items()
        if not pending:
            raise Conflict("nothing to publish: staging and production are the same")
        chosen = self._select(pending, items, all)
        missing, warnings, unavailable, still_used = self._dependency_check(chosen, pending)
        if missing and with_deps:
            added = list(missing)
            chosen = chosen + added
            missing, warnings, unavailable, still_used = self._dependency_check(chosen, pending)
            warnings = [f"added {_label(m)}: a dependency of an agent in this release (--with-deps)"
                        for m in added] + warnings
        if strict and (missing or unavailable or still_used):
            problems = []
            if missing:
                problems.append("it depends on unpublished changes: " + "; ".join(_label(m) for m in missing))
            if unavailable:
                problems.append("production lacks what its agents use: " + "; ".join(unavailable))
            if still_used:
                problems.append("it removes what production still uses: " + "; ".join(still_used))
            hints = []
            if missing:
                hints.append("add the dependencies (--with-deps, or name them)")
            if unavailable:
                hints.append("create what is missing first")
            if still_used:
                hints.append("publish the users' new versions that no longer use it (or remove them) in the "
                             "same release")
            raise Conflict("refused (--strict): " + "; ".join(problems),
                           "; ".join(hints) + "; or drop --strict to publish with warnings")
        order = {k: n for n, k in enumerate(KINDS)}
        chosen.sort(key=lambda i: (order.get(i.kind, 99), i.name))
        plan = ReleasePlan(id=plan_id_of(chosen), items=chosen, missing_dependencies=missing, warnings=warnings,
                           unavailable=unavailable, still_used=still_used)
        self.store.save_plan(plan.id, [to_dict(i) for i in chosen], utcnow())
        return plan

    def publish_release(self, items: list[str] | None = None, all: bool = False, plan_id: str | None = None,
                        message: str = "", author: str = "unknown", with_deps: bool = False,
                        strict: bool = False, accept_regressions: bool = False,
                        canary: float | None = None) -> Release:
        """Publish atomically: every item or none, in one transaction, recorded as a release.

        What to publish is explicit: ``items``, or ``all=True``, or a ``plan_id`` alone
        (exactly the items of that plan, refused if any of them changed since).

        The eval gate: a plan whose agents regress eval cases (passing in production, failing
        on staging's state) is refused unless ``accept_regressions`` with the reason in
        ``message``; the release records the evidence and the reason.

        ``canary``: a percentage of production traffic (above 0, below 100): the plan starts as a
        canary release beside production's instead (rf.services.canary) — the same plan, gate and
        approvals; triggers and removals are refused, and so is a second canary."""
        _check_acceptance(accept_regressions, message)
        if canary is not None:
            from rf.services.canary import check_percent

            canary = check_percent(canary, "--canary", lowest=1e-9, highest=100 - 1e-9)
        if plan_id is not None and not items and not all:
            items = self._plan_item_names(plan_id)
        # The evidence first, outside the write lock: its eval runs record executions. A plan id's
        # stored evidence is reused (same id, same state: the stale-plan rule).
        plan = self._plan_items(items, all, with_deps, strict)
        if plan_id is not None and plan.id != plan_id:
            raise Conflict(self._stale_plan_message(plan_id, plan), "re-run rf releases plan and review again")
        if canary is not None:
            self._canary().check_plan(plan)  # (before any eval work)
        self._gate_evidence(plan, reuse=True)
        accepted = self._check_gate(plan, accept_regressions, message)
        with self.store.write_lock:
            again = self._plan_items(items, all, with_deps, strict)
            if again.id != plan.id:
                raise Conflict(self._stale_plan_message(plan.id, again) + " (while the eval suites ran)",
                               "re-run rf releases plan and review again")
            evidence = {"evals": to_dict(plan.evals), "accepted_regressions": accepted} if plan.evals else None
            if canary is not None:
                return self._canary().start(again, canary, message, author, evidence)
            if self.canary is not None:
                self.canary.refuse_canaried(again.items)
            return self.apply(again.items, again.id, "publish", message or self.default_message(again.items),
                               author, again.warnings, evidence)

    # ------------------------------------------------------------ the eval gate
    def _gate_evidence(self, plan: ReleasePlan, reuse: bool) -> None:
        """Fill ``plan.evals`` (and ``plan.missing_suites``): for every agent the plan changes,
        its suite on staging's state against production's; for agents the plan changes only
        through a prompt or connector they use, the same when staging runs production's commit.
        ``reuse``: the evidence stored with this plan id, when there is some."""
        stored = self.store.get_plan_evals(plan.id) if reuse else None
        if stored is not None:
            plan.evals = [from_dict(AgentEvalEvidence, e) for e in stored]
        else:
            plan.evals = self._run_gate(plan)
            if plan.evals:
                self.store.save_plan_evals(plan.id, to_dict(plan.evals))
        workspace = self.workspace
        if workspace is not None and workspace.release_require_evals:
            plan.missing_suites = [e.agent for e in plan.evals if e.status == "no-suite"]
            plan.warnings = plan.warnings + [
                f"agent {name} has no eval suite, which [releases] require_evals = true requires: "
                "a publish refuses this plan" for name in plan.missing_suites]

    def _run_gate(self, plan: ReleasePlan) -> list[AgentEvalEvidence]:
        evidence: list[AgentEvalEvidence] = []
        direct = {i.name for i in plan.items if i.kind == "agent"}
        for item in plan.items:
            if item.kind != "agent" or item.after is None:
                continue  # (a removal runs nothing)
            after = str(item.after)
            if not self.commits.has_suite(after):
                evidence.append(AgentEvalEvidence(agent=item.name, after_commit=after, before_commit=item.before,
                                                  status="no-suite",
                                                  note=f"no eval suite (agents/{item.name}/evals/): no gate"))
                continue
            evidence.append(self._compare_suites(item.name, after, item.before))
        changed = {(i.kind, i.name) for i in plan.items if i.kind in ("prompt", "connector") and i.after is not None}
        if not changed:
            return evidence
        rows = self.store.agent_rows()
        self.commits.prefetch([r["staging_commit"] for r in rows if r["staging_commit"] is not None])
        for row in rows:
            name, staging, production = row["name"], row["staging_commit"], row["production_commit"]
            if name in direct or staging is None or production is None or not self.commits.has_suite(staging):
                continue
            uses = self.commits.uses(staging)
            via = sorted([f"prompt {p}" for p in uses.prompts if ("prompt", p) in changed]
                         + [f"connector {c}" for c in uses.connectors if ("connector", c) in changed])
            if not via:
                continue
            note = "affected through " + ", ".join(via)
            if staging != production:
                # Staging's run would mix in the agent's own unpublished code: not this plan's effect.
                evidence.append(AgentEvalEvidence(
                    agent=name, after_commit=staging, before_commit=production, status="not-evaluated",
                    note=note + f"; not evaluated: staging runs another commit of {name} (add agent:{name} "
                                "to the release to gate it)"))
                continue
            found = self._compare_suites(name, staging, production)
            found.note = note + " (staging's prompts and connectors against production's)"
            evidence.append(found)
        return evidence

    def _compare_suites(self, name: str, after: str, before: str | None) -> AgentEvalEvidence:
        """Run the suite on staging (``after``) and on production (``before``), case by case."""
        staged = self._suite_run(name, "staging", after)
        found = AgentEvalEvidence(agent=name, after_commit=after, before_commit=before)
        if staged is None:
            found.status, found.note = "no-suite", f"the eval suite of {name} has no cases: no gate"
            return found
        found.after_passed, found.after_total, found.after_run = staged.passed, staged.total, staged.id
        was: dict[str, bool] = {}
        if before is None:
            found.note = "new in production: every failing case is a new failure"
        elif not self.commits.has_suite(before):
            found.note = "production's commit has no eval suite: every failing case is a new failure"
        else:
            # Production's commit runs its own suite in production (source eval): its connector
            # instances and published prompts, as `rf eval NAME --env production` does.
            produced = self._suite_run(name, "production", before)
            if produced is not None:
                found.before_passed, found.before_total, found.before_run = (produced.passed, produced.total,
                                                                             produced.id)
                was = {c.id: c.passed for c in produced.cases}
        for case in staged.cases:
            before_passed = was.get(case.id)
            if case.passed:
                if before_passed is False:
                    found.fixed.append(case.id)
            elif before_passed is True:
                found.regressions.append(case.id)
            elif before_passed is False:
                found.still_failing.append(case.id)
            else:
                found.new_failures.append(case.id)
        return found

    def _suite_run(self, name: str, env: str, commit: str) -> EvalResult | None:
        """``run_eval`` of *env*'s commit (None: a suite with no cases), refused if it moved."""
        try:
            result = self.evals.run_eval(name, env)
        except NotFound:
            if self.commits.has_suite(commit):
                return None  # suite files without cases
            raise
        if result.commit != commit:
            raise Conflict(f"agent {name} changed in {env} while its eval suite ran",
                           "re-run rf releases plan and review again")
        return result

    def _check_gate(self, plan: ReleasePlan, accept_regressions: bool, reason: str) -> str | None:
        """Refuse a plan the gate stops; the accepted reason (or None: nothing to accept)."""
        if plan.missing_suites:
            first = plan.missing_suites[0]
            raise Conflict("refused: [releases] require_evals = true and agent"
                           f"{'s' if len(plan.missing_suites) > 1 else ''} {', '.join(plan.missing_suites)} "
                           "ha" + ("ve" if len(plan.missing_suites) > 1 else "s") + " no eval suite",
                           f"add agents/{first}/evals/smoke.yaml (a list of cases: id, input, expect), deploy it "
                           f"(rf agents deploy {first}), then plan again")
        regressed = [e for e in plan.evals if e.regressions]
        if not regressed:
            return None
        if not accept_regressions:
            what = "; ".join(f"agent {e.agent}: {', '.join(e.regressions)}" for e in regressed)
            raise Conflict(f"refused: eval cases that pass in production fail on staging's state ({what})",
                           f"fix them in staging (see rf eval {regressed[0].agent}), or publish anyway with "
                           '--accept-regressions -m "why" (rf releases publish, rf agents promote)')
        return reason.strip()

    def _plan_item_names(self, plan_id: str) -> list[str]:
        """``kind:name`` of a saved plan's items that are still pending."""
        rows = self.store.get_plan(plan_id)
        if rows is None:
            raise NotFound(f"no plan {plan_id!r}", "make one with: rf releases plan")
        pending = {(i.kind, i.name) for i in self.release_items()}
        names = [f"{row['kind']}:{row['name']}" for row in rows if (row["kind"], row["name"]) in pending]
        if not names:
            raise Conflict(f"nothing in plan {plan_id} is pending any more: it was published, or staging "
                           "went back to production's state", "see what is pending with: rf releases")
        return names

    def _stale_plan_message(self, plan_id: str, plan: ReleasePlan) -> str:
        rows = self.store.get_plan(plan_id)
        if rows is None:
            raise NotFound(f"no plan {plan_id!r}", "make one with: rf releases plan")
        saved = [ReleaseItem(**row) for row in rows]
        now = {(i.kind, i.name): i for i in plan.items}
        changes = []
        for old in saved:
            cur = now.get((old.kind, old.name))
            if cur is None:
                changes.append(f"{_label(old)} is no longer pending")
            elif cur.after != old.after:
                changes.append(f"{_label(old)} changed in staging ({cur.summary})")
            elif cur.before != old.before:
                changes.append(f"{_label(old)} changed in production")
        old_keys = {(i.kind, i.name) for i in saved}
        changes += [f"{_label(i)} is new" for i in plan.items if (i.kind, i.name) not in old_keys]
        return "staging or production changed since you reviewed: " + ("; ".join(changes) or "the plan differs")


    def default_message(self, items: list[ReleaseItem]) -> str:
        if len(items) == 1:
            return f"publish {_label(items[0])}"
        return f"publish {len(items)} items"

    def apply(self, items: list[ReleaseItem], plan_id: str, kind: str, message: str, author: str,
               warnings: list[str], evidence: dict[str, Any] | None = None,
               also: Callable[[Repositories, str], None] | None = None) -> Release:
        """Apply *items* and record the release in one transaction (*also*: more writes of that
        unit of work, given its repositories and the release id: a canary's end with its promote)."""
        release_id = new_id("rel")
        now = utcnow()
        kinds = self.kinds
        with self.store.unit_of_work() as tx:
            for n, item in enumerate(items):
                if item.kind not in kinds:
                    raise UsageError(f"this rf cannot publish {item.kind} items")
                kinds[item.kind].release_apply(tx, item.name, item.before, item.after)
                self._after_release_item(n)
            tx.releases.insert_release(
                release_id=release_id, created_at=now, author=author, message=message, plan_id=plan_id,
                kind=kind,
                items=[{"kind": i.kind, "name": i.name, "before": i.before, "after": i.after,
                        "summary": i.summary} for i in items],
                evidence=evidence,
            )
            if also is not None:
                also(tx, release_id)
        self._after_release_commit(release_id)
        release = self.history.get_release(release_id)
        release.warnings = list(warnings)
        self.announce(release)
        return release

    def _after_release_item(self, n: int) -> None:
        """Called inside the publish transaction once item ``n`` (0-based) is applied. Does
        nothing: tests replace it to stop a publish half-way (tests/rf_publish_pause.py)."""

    def _after_release_commit(self, release_id: str) -> None:
        """Called once a release's transaction has committed. Does nothing (a test seam, as above)."""

    def announce(self, release: Release) -> None:
        """Once *release* committed: forget this process's caches that production's state feeds
        (heads, routing) now, and wait for every other live server on the store to confirm it
        dropped its own once this thread's write lock is released (a slow replica never keeps
        the other servers' writes waiting). Those that did not confirm in time are added to the
        release's warnings, before the publish returns (rf.store.pg_replicas)."""
        self.agents.forget_heads()
        self.store.after_unlock(lambda: release.warnings.extend(self.store.announce_change()))

    # ------------------------------------------------------------ one-item shortcut
    def promote(self, name: str, author: str = "unknown", message: str = "", with_deps: bool = False,
                strict: bool = False, plan_id: str | None = None, accept_regressions: bool = False) -> PromoteResult:
        """Point production at staging's commit: ``publish_release(["agent:NAME"])``, the same plan
        (dependency warnings, ``with_deps``, ``strict``, a reviewed ``plan_id``), the same eval
        gate (``accept_regressions`` with the reason in ``message``) and the same record."""
        _check_acceptance(accept_regressions, message)
        agent = self.agents.get_agent(name)
        if agent.staging_commit is None:
            if agent.production_commit is not None:
                raise Conflict(f"agent {name!r} was deleted in staging: there is nothing to promote",
                               f"remove it from production with: rf releases publish agent:{name} "
                               f"(or deploy it again: rf agents deploy {name})")
            raise NotFound(f"agent {name!r} has nothing in staging", f"deploy it first: rf agents deploy {name}")
        if agent.staging_commit == agent.production_commit:
            return PromoteResult(agent=name, before=agent.production_commit, after=agent.staging_commit,
                                 changed=False)
        release = self.publish_release([f"agent:{name}"], plan_id=plan_id, message=message or f"promote {name}",
                                       author=author, with_deps=with_deps, strict=strict,
                                       accept_regressions=accept_regressions)
        item = next(i for i in release.items if i.kind == "agent" and i.name == name)
        return PromoteResult(agent=name, before=item.before, after=str(item.after), changed=True,
                             release_id=release.id, warnings=list(release.warnings), items=list(release.items))

    def plan_rollback(self, release_id: str, force: bool = False) -> ReleasePlan:
        """What rolling back a release would publish (each item back to its `before`)."""
        target = self.history.get_release(release_id)
        if target.kind not in PRODUCTION_RELEASE_KINDS:
            raise Conflict(f"release {target.id} ({target.kind}) never changed production: nothing to roll back",
                           "a running canary is ended with: rf releases canary abort" if target.kind == "canary"
                           else "roll back a release that changed production (rf releases history)")
        later = [r for r in (self.history.release_of(row) for row in self.store.list_releases(1_000_000))
                 if r.id > target.id and r.kind in PRODUCTION_RELEASE_KINDS]
        touched = {(i.kind, i.name) for i in target.items}
        conflicts = [(r, i) for r in later for i in r.items if (i.kind, i.name) in touched]
        warnings = []
        if conflicts:
            what = "; ".join(f"{_label(i)} in {r.id} ({r.message})" for r, i in conflicts)
            if not force:
                raise Conflict(
                    f"a later release changed the same items: {what}",
                    "roll back the later release first, or pass --force (which reverts those changes too)",
                )
            warnings = [f"--force also reverts {_label(i)} from {r.id} ({r.message})" for r, i in conflicts]
        state = self.history.production_state()
        items = []
        for i in target.items:
            current = state.get((i.kind, i.name))
            if current == i.before:
                continue
            items.append(ReleaseItem(kind=i.kind, name=i.name, summary=f"roll back to {_short(i.before)}",
                                     before=current, after=i.before))
        if not items:
            raise Conflict(f"production already matches the state before {target.id}: nothing to roll back")
        return ReleasePlan(id=plan_id_of(items), items=items, warnings=warnings)

    def rollback_release(self, release_id: str, force: bool = False, message: str = "",
                         author: str = "unknown") -> Release:
        """Return production to its state before a release, as a NEW release (staging untouched)."""
        with self.store.write_lock:
            plan = self.plan_rollback(release_id, force)
            target = self.history.get_release(release_id)
            return self.apply(plan.items, plan.id, "rollback", message or f"roll back {target.id} ({target.message})",
                               author, plan.warnings)


def _check_acceptance(accept_regressions: bool, message: str) -> None:
    if accept_regressions and not message.strip():
        raise UsageError("accepting regressions needs the reason, recorded with the release",
                         '--accept-regressions -m "why they are acceptable"')


def _short(state: Any) -> str:
    if state is None:
        return "nothing (removed from production)"
    text = state if isinstance(state, str) else json.dumps(state, default=str)
    return text[:12]


def _gone(after: Any) -> bool:
    """Does a trigger item with this ``after`` take the trigger out of production?"""
    return after is None or (isinstance(after, dict) and after.get("removed") is True)
