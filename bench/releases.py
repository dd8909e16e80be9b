#!/usr/bin/env python3
"""Benchmark: computing releases for a big workspace, and publishing it.

Builds (in a throw-away store) 200 agents with 50 files each whose staging
commit changes half of the files, 500 prompts (half with a new draft) and 100
connectors (half with staging changes), everything first published once so
production is populated. Then measures, in-process (no CLI start-up):

- ``release_items()``      — what `rf releases` computes
- ``plan_release(all=True)`` — what `rf releases plan --all` computes
- the same plan made by one publisher, approved by two others and read back
  (``[releases] approvals = 2``; issue 20's "a plan with approvals < 500 ms")
- ``publish_release(...)`` — publishing that whole plan (one transaction)

Prints medians. Target (issue 5): the computation < 500 ms. `--quick` uses a
tenth of the sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rf.config import init_workspace
from rf.ids import iso, utcnow
from rf.models import Commit
from rf.services import Services
from rf.store import Store


def make_commit(services: Services, agent: str, parent: str | None, files: dict[str, bytes], msg: str) -> str:
    """Write a commit straight into the store (deploy's validation subprocess is not what we measure)."""
    tree = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    now = utcnow()
    cid = hashlib.sha256(json.dumps([agent, parent, tree, msg, iso(now)]).encode()).hexdigest()
    commit = Commit(id=cid, agent=agent, parent=parent, message=msg, author="bench", created_at=iso(now), tree=tree)
    store = services.store
    with store.unit_of_work():
        store.put_blobs({tree[p]: d for p, d in files.items()})
        store.upsert_agent(agent, "bench agent", now)
        store.insert_commit(commit, now, {"entrypoint": "agent:handle", "prompts": [], "connectors": []})
        store.set_head(agent, "staging", cid, now)
    return cid


def build(services: Services, agents: int, files: int, prompts: int, connectors: int) -> None:
    for a in range(agents):
        name = f"agent-{a:03d}"
        v1 = {f"mod_{f:02d}.py": f"# {name} file {f}\nVALUE = {f}\n".encode() * 20 for f in range(files)}
        make_commit(services, name, None, v1, "v1")
    for p in range(prompts):
        services.create_prompt(f"prompt-{p:03d}", f"You are prompt {p}. Talk to {{{{user}}}}.", "bench")
    for c in range(connectors):
        slug = f"conn-{c:03d}"
        services.create_connector(slug, f"https://api{c}.example.com")
        for r in range(3):
            services.add_resource(slug, f"res-{r}", "GET", f"/items/{{id}}/r{r}")
    services.publish_release(all=True, author="bench", message="baseline")
    # the staging changes a release would publish
    for a in range(agents):
        name = f"agent-{a:03d}"
        head = services.store.get_head(name, "staging")
        v2 = {f"mod_{f:02d}.py": (f"# {name} file {f} v2\n" if f % 2 == 0 else f"# {name} file {f}\n").encode() * 20
              + f"VALUE = {f}\n".encode() for f in range(files)}
        make_commit(services, name, head, v2, "v2")
    for p in range(0, prompts, 2):
        services.set_prompt(f"prompt-{p:03d}", f"You are prompt {p}, version 2. Talk to {{{{user}}}}.", "bench")
    for c in range(0, connectors, 2):
        services.edit_connector(f"conn-{c:03d}", base_url=f"https://v2.api{c}.example.com")


def median_ms(fn: object, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    sizes = dict(agents=200 // scale, files=50, prompts=500 // scale, connectors=100 // scale)
    tmp = Path(tempfile.mkdtemp(prefix="rf-bench-releases-"))
    os.environ.setdefault("XDG_DATA_HOME", str(tmp / "data"))
    try:
        ws = init_workspace(tmp / "ws")
        store = Store.open(ws.db_path)
        services = Services(store, ws)
        t0 = time.perf_counter()
        build(services, **sizes)
        print(f"workspace: {sizes} (built in {time.perf_counter() - t0:.1f} s)")
        items_ms, items = median_ms(services.release_items, args.runs)
        plan_ms, _plan = median_ms(lambda: services.plan_release(all=True), args.runs)
        n = len(items)  # type: ignore[arg-type]
        print(f"pending items: {n}")
        print(f"release_items()          median {items_ms:8.1f} ms")
        print(f"plan_release(all=True)   median {plan_ms:8.1f} ms")
        # With required approvals ([releases] approvals = 2): a plan made by its author, approved by
        # two other publishers, then read back as `rf releases plan show ID` does (issue 20).
        from rf.services.users import Actor, call_as

        ada, ben, cal = (Actor(name=n, role="publisher") for n in ("ada", "ben", "cal"))
        services.workspace.raw.setdefault("releases", {})["approvals"] = 2  # as rf.toml would say

        def with_approvals() -> object:
            made = call_as(ada, services.plan_release, all=True)
            call_as(ben, services.approve_plan, made.id, "ok")
            call_as(cal, services.approve_plan, made.id, "ok")
            return call_as(ada, services.plan_approvals, made.id)

        approvals_ms, approved = median_ms(with_approvals, args.runs)
        print(f"plan + 2 approvals + read median {approvals_ms:8.1f} ms  "
              f"({len(approved.approvals)} approvals)")  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        release = call_as(ada, services.publish_release, plan_id=approved.plan_id)  # type: ignore[attr-defined]
        publish_ms = (time.perf_counter() - t0) * 1000
        print(f"publish_release (1 run)         {publish_ms:8.1f} ms  ({len(release.items)} items, one transaction)")
        worst = max(items_ms, plan_ms, approvals_ms)
        verdict = "PASS" if worst < 500 else "WARN"
        print(f"{verdict}: computation {worst:.0f} ms (target < 500 ms)")
        services.close()
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
