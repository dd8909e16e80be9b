"""Releases: the one way production changes.

A *release item* is one difference between staging and production (an agent
whose staging commit is not production's, a prompt whose draft is not
published, a connector whose instances differ, a trigger staged for
production). Each capability plugs its kind in with two methods (see
``releases_contract.md``): ``_release_pending_<kind>()`` and
``_release_apply_<kind>(cur, name, before, after)``.

A *plan* is a set of items with their before → after states; its id hashes
them all, so ``publish(plan_id=...)`` publishes exactly what was reviewed or
refuses. Publishing applies every item inside ONE transaction under the
store's write lock: all or nothing, and two publishes serialize.

Production only changes through releases, so production's state for any item
is the ``after`` of the newest release item that touched it. Rollback uses
that: it publishes each item's ``before`` as a new release.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from rf.errors import Conflict, NotFound, UsageError
from rf.ids import new_id, utcnow
from rf.models import PromoteResult, Release, ReleaseItem, ReleasePlan, to_dict
from rf.services.base import ServiceBase

if TYPE_CHECKING:
    import duckdb

#: Item kinds, in the order they are applied and listed.
KINDS = ("prompt", "connector", "agent", "trigger")


def plan_id_of(items: list[ReleaseItem]) -> str:
    """A short hash of every before → after state in the plan (order-independent)."""
    canon = sorted(json.dumps([i.kind, i.name, i.before, i.after], sort_keys=True, default=str) for i in items)
    return hashlib.sha256("\n".join(canon).encode()).hexdigest()[:16]


def _label(item: ReleaseItem) -> str:
    return f"{item.kind} {item.name}"


class ReleasesService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""

    # ------------------------------------------------------------ agents as release items
    def _release_pending_agent(self) -> list[ReleaseItem]:
        items = []
        parents = self.store.commit_parents()
        rows = self.store.agent_rows()
        cache: dict[str, dict[str, str]] = self.__dict__.setdefault("_tree_cache", {})
        missing = [c for r in rows for c in (r["staging_commit"], r["production_commit"])
                   if c is not None and c not in cache and r["staging_commit"] != r["production_commit"]]
        cache.update(self.store.get_commit_trees(missing))
        for row in rows:
            staging, production = row["staging_commit"], row["production_commit"]
            if staging is None or staging == production:
                continue
            chain = parents.get(row["name"], {})
            ahead = self._ahead(chain, staging, production)  # type: ignore[attr-defined]
            files = self._changed_files(production, staging)
            if production is None:
                summary = f"new in production: {ahead} commit{'s' if ahead != 1 else ''}, {files} file{'s' if files != 1 else ''}"
            else:
                summary = f"{ahead} commit{'s' if ahead != 1 else ''} ahead, {files} file{'s' if files != 1 else ''} changed"
            items.append(ReleaseItem(kind="agent", name=row["name"], summary=summary, before=production, after=staging))
        return items

    def _changed_files(self, base: str | None, head: str | None) -> int:
        base_tree = self._tree(base)
        head_tree = self._tree(head)
        return sum(1 for p in set(base_tree) | set(head_tree) if base_tree.get(p) != head_tree.get(p))

    def _tree(self, commit_id: str | None) -> dict[str, str]:
        if commit_id is None:
            return {}
        cache: dict[str, dict[str, str]] = self.__dict__.setdefault("_tree_cache", {})
        tree = cache.get(commit_id)
        if tree is None:
            commit = self.store.get_commit(commit_id)
            tree = cache[commit_id] = commit.tree if commit else {}
        return tree

    def _release_apply_agent(self, cur: duckdb.DuckDBPyConnection, name: str, before: Any, after: Any) -> None:
        row = cur.execute(
            "SELECT commit_id FROM agent_heads WHERE agent = ? AND env = 'production'", [name]
        ).fetchone()
        current = row[0] if row else None
        if current != before:
            raise Conflict(f"production changed since the plan: agent {name} now runs {str(current)[:8]}",
                           "re-run rf releases plan")
        if after is not None and cur.execute("SELECT 1 FROM commits WHERE id = ?", [after]).fetchone() is None:
            raise NotFound(f"commit {after} of agent {name} is missing")
        self.store.set_head(cur, name, "production", after, utcnow())

    # ------------------------------------------------------------ listing and planning
    def release_items(self) -> list[ReleaseItem]:
        """Every difference between staging and production, all kinds."""
        items: list[ReleaseItem] = []
        for kind in KINDS:
            pending = getattr(self, f"_release_pending_{kind}", None)
            if pending is not None:
                items.extend(pending())
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

    def _dependency_check(self, chosen: list[ReleaseItem], pending: list[ReleaseItem]) -> tuple[list[ReleaseItem], list[str]]:
        """Pending prompts/connectors that agents in the batch declare but the batch lacks,
        and prompts whose new variables production agent code may not pass."""
        in_batch = {(i.kind, i.name) for i in chosen}
        pending_by_key = {(i.kind, i.name): i for i in pending}
        missing: list[ReleaseItem] = []
        warnings: list[str] = []
        agent_configs = self.store.get_commit_configs(
            [str(i.after) for i in chosen if i.kind == "agent" and i.after is not None])
        for item in chosen:
            if item.kind != "agent" or item.after is None:
                continue
            config = agent_configs.get(str(item.after), {})
            for dep_kind, key in (("prompt", "prompts"), ("connector", "connectors")):
                for dep in config.get(key, []):
                    dep_item = pending_by_key.get((dep_kind, dep))
                    if dep_item is not None and (dep_kind, dep) not in in_batch and dep_item not in missing:
                        missing.append(dep_item)
                        warnings.append(f"agent {item.name} uses {dep_kind} {dep}, which has unpublished changes "
                                        f"({dep_item.summary}) not in this release")
        prompt_vars = getattr(self, "_release_prompt_new_variables", None)
        prompt_items = [i for i in chosen if i.kind == "prompt"] if prompt_vars is not None else []
        if prompt_items:
            # prompt -> [(agent, production commit)] for production agents not in this batch (one query)
            rows = [r for r in self.store.agent_rows()
                    if r["production_commit"] is not None and ("agent", r["name"]) not in in_batch]
            configs = self.store.get_commit_configs([r["production_commit"] for r in rows])
            users: dict[str, list[tuple[str, str]]] = {}
            for r in rows:
                for used in configs.get(r["production_commit"], {}).get("prompts", []):
                    users.setdefault(used, []).append((r["name"], r["production_commit"]))
            for item in prompt_items:
                if item.name not in users:
                    continue
                new_vars: list[str] = prompt_vars(item.name)  # type: ignore[misc]
                for agent_name, prod in users[item.name] if new_vars else []:
                    source = self._python_source(prod)
                    unpassed = [v for v in new_vars if v not in source]
                    if unpassed:
                        warnings.append(
                            f"prompt {item.name} adds variable{'s' if len(unpassed) != 1 else ''} "
                            f"{', '.join(unpassed)}, which production agent {agent_name} does not appear to pass")
        return missing, warnings

    def _python_source(self, commit_id: str) -> str:
        tree = self._tree(commit_id)
        blobs = self.store.get_blobs([sha for path, sha in tree.items() if path.endswith(".py")])
        return "\n".join(b.decode("utf-8", errors="replace") for b in blobs.values())

    def plan_release(self, items: list[str] | None = None, all: bool = False, with_deps: bool = False,
                     strict: bool = False) -> ReleasePlan:
        """The exact set of changes a publish would make, with its plan id: the items named,
        or every pending item with ``all=True`` (nothing named is a UsageError)."""
        pending = self.release_items()
        if not pending:
            raise Conflict("nothing to publish: staging and production are the same")
        chosen = self._select(pending, items, all)
        missing, warnings = self._dependency_check(chosen, pending)
        if missing and with_deps:
            added = list(missing)
            chosen = chosen + added
            missing, warnings = self._dependency_check(chosen, pending)
            warnings = [f"added {_label(m)}: a dependency of an agent in this release (--with-deps)"
                        for m in added] + warnings
        if missing and strict:
            raise Conflict(
                "this release depends on unpublished changes: " + "; ".join(_label(m) for m in missing),
                "add them (--with-deps, or name them) or drop --strict",
            )
        order = {k: n for n, k in enumerate(KINDS)}
        chosen.sort(key=lambda i: (order.get(i.kind, 99), i.name))
        plan = ReleasePlan(id=plan_id_of(chosen), items=chosen, missing_dependencies=missing, warnings=warnings)
        self.store.save_plan(plan.id, [to_dict(i) for i in chosen], utcnow())
        return plan

    def publish_release(self, items: list[str] | None = None, all: bool = False, plan_id: str | None = None,
                        message: str = "", author: str = "unknown", with_deps: bool = False,
                        strict: bool = False) -> Release:
        """Publish atomically: every item or none, in one transaction, recorded as a release.

        What to publish is explicit: ``items``, or ``all=True``, or a ``plan_id`` alone
        (exactly the items of that plan, refused if any of them changed since)."""
        with self.store.write_lock:
            if plan_id is not None and not items and not all:
                items = self._plan_item_names(plan_id)
            plan = self.plan_release(items, all, with_deps, strict)
            if plan_id is not None and plan.id != plan_id:
                raise Conflict(self._stale_plan_message(plan_id, plan), "re-run rf releases plan and review again")
            return self._apply(plan.items, plan.id, "publish", message or self._default_message(plan.items),
                               author, plan.warnings)

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


    def _default_message(self, items: list[ReleaseItem]) -> str:
        if len(items) == 1:
            return f"publish {_label(items[0])}"
        return f"publish {len(items)} items"

    def _apply(self, items: list[ReleaseItem], plan_id: str, kind: str, message: str, author: str,
               warnings: list[str]) -> Release:
        release_id = new_id("rel")
        now = utcnow()
        with self.store.transaction() as cur:
            for n, item in enumerate(items):
                apply = getattr(self, f"_release_apply_{item.kind}", None)
                if apply is None:
                    raise UsageError(f"this rf cannot publish {item.kind} items")
                apply(cur, item.name, item.before, item.after)
                self._after_release_item(n)
            self.store.insert_release(
                cur, release_id=release_id, created_at=now, author=author, message=message, plan_id=plan_id,
                kind=kind,
                items=[{"kind": i.kind, "name": i.name, "before": i.before, "after": i.after,
                        "summary": i.summary} for i in items],
            )
        self._after_release_commit(release_id)
        self._release_applied()
        release = self.get_release(release_id)
        release.warnings = warnings
        return release

    def _after_release_item(self, n: int) -> None:
        """Called inside the publish transaction once item ``n`` (0-based) is applied. Does
        nothing: tests replace it to stop a publish half-way (tests/rf_publish_pause.py)."""

    def _after_release_commit(self, release_id: str) -> None:
        """Called once a release's transaction has committed. Does nothing (a test seam, as above)."""

    def _release_applied(self) -> None:
        """Forget caches that production state feeds (heads etc.)."""
        changed = getattr(self, "_heads_changed", None)
        if changed is not None:
            changed()

    # ------------------------------------------------------------ one-item shortcut
    def promote(self, name: str, author: str = "unknown", message: str = "") -> PromoteResult:
        """Point production at staging's commit: a one-item release (same path as publish)."""
        agent = self.get_agent(name)  # type: ignore[attr-defined]
        if agent.staging_commit is None:
            raise NotFound(f"agent {name!r} has nothing in staging", f"deploy it first: rf agents deploy {name}")
        if agent.staging_commit == agent.production_commit:
            return PromoteResult(agent=name, before=agent.production_commit, after=agent.staging_commit,
                                 changed=False)
        release = self.publish_release([f"agent:{name}"], message=message or f"promote {name}", author=author)
        item = release.items[0]
        return PromoteResult(agent=name, before=item.before, after=str(item.after), changed=True,
                             release_id=release.id)

    # ------------------------------------------------------------ history
    def list_releases(self, limit: int = 50) -> list[Release]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError("limit must be a positive integer")
        return [self._release(r) for r in self.store.list_releases(limit)]

    def get_release(self, release_id: str) -> Release:
        rows = self.store.list_releases(2, id_prefix=release_id) if len(release_id) >= 6 else []
        exact = [r for r in rows if r["id"] == release_id]
        if exact or len(rows) == 1:
            return self._release((exact or rows)[0])
        if len(rows) > 1:
            raise UsageError(f"release id prefix {release_id!r} is ambiguous", "type more of the id")
        raise NotFound(f"no release {release_id!r}", "see them with: rf releases history")

    @staticmethod
    def _release(row: dict[str, Any]) -> Release:
        items = [ReleaseItem(kind=i["kind"], name=i["name"], summary=i.get("summary", ""), before=i["before"],
                             after=i["after"]) for i in row["items"]]
        return Release(id=row["id"], created_at=row["created_at"], author=row["author"], message=row["message"],
                       plan_id=row["plan_id"], kind=row["kind"], items=items)

    def _production_state(self) -> dict[tuple[str, str], Any]:
        """Production's state per item, from the release history (newest wins)."""
        state: dict[tuple[str, str], Any] = {}
        for release in reversed(self.store.list_releases(1_000_000)):
            for item in release["items"]:
                state[(item["kind"], item["name"])] = item["after"]
        return state

    def plan_rollback(self, release_id: str, force: bool = False) -> ReleasePlan:
        """What rolling back a release would publish (each item back to its `before`)."""
        target = self.get_release(release_id)
        later = [r for r in self.list_releases(1_000_000) if r.id > target.id]
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
        state = self._production_state()
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
            target = self.get_release(release_id)
            return self._apply(plan.items, plan.id, "rollback", message or f"roll back {target.id} ({target.message})",
                               author, plan.warnings)


def _short(state: Any) -> str:
    if state is None:
        return "nothing (removed from production)"
    text = state if isinstance(state, str) else json.dumps(state, default=str)
    return text[:12]
