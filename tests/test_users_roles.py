"""Users, roles, personal tokens, the audit log and plan approvals (issue 20, part 1).

Through a real `rf serve` and the real CLI signed in with `RF_SERVER_URL` + `RF_TOKEN`:
each role against a representative command of each class of routes (read, staging edit,
publish, admin), refused with the role it needs or allowed; the actor recorded in the
audit log is the token's user (a request's own `author` is refused); tokens are shown
once and kept hashed; revoking one locks it out; `rf login` saves a token for a server.
In-process, every role × every route of :data:`rf.api.ROUTES` is checked against the
route's role.

Each test runs one or two commands as real `rf` subprocesses (run_rf; `rf login` reads its token
on stdin), the rest through the same entry point in-process (run_rf_here: the same output and
exit codes, the same RF_SERVER_URL/RF_TOKEN environment, no interpreter start).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server
from rf import api
from rf.errors import Forbidden
from rf.models import ROLES

RANK = {role: i for i, role in enumerate(ROLES)}


# ---------------------------------------------------------------- the table itself
def test_every_route_has_a_role_and_every_mutating_route_is_named() -> None:
    for r in api.ROUTES:
        assert r.role in ROLES, r.name
    named = api.READ_BODY_ROUTES | api.DEVELOPER_ROUTES | api.PUBLISHER_ROUTES | api.ADMIN_ROUTES
    unnamed = {r.name for r in api.ROUTES if r.method != "GET"} - named
    assert unnamed == set(), "name these routes' role in rf/api.py (they are admin-only until then)"
    # every audited route exists (a typo would silently record nothing)
    assert api.AUDITED - set(api.BY_NAME) == set()


def test_every_role_against_every_route_in_process() -> None:
    """The service layer refuses a call below the route's role (naming it) before doing
    anything, and lets every role at or above it through."""
    from rf.services import Services
    from rf.services.users import Actor, call_as
    from rf.store import Store

    services = Services(Store.open(None), None)
    try:
        for r in api.ROUTES:
            method = getattr(services, r.name)
            for role in ROLES:
                actor = Actor(name="someone", role=role)
                try:
                    call_as(actor, method, **{p: "x" for p in r.path_params()})
                except Forbidden as exc:
                    assert RANK[role] < RANK[r.role], (r.name, role, exc.message)
                    assert exc.message.startswith(f"{r.role} role needed to "), exc.message
                    assert f"rf users set-role someone {r.role}" in (exc.hint or "")
                    continue
                except Exception:  # (past the role check: arguments, not found...)
                    pass
                assert RANK[role] >= RANK[r.role], (r.name, role, "allowed below its role")
    finally:
        services.close()
        services.store.close()


# ---------------------------------------------------------------- through a real server
@pytest.fixture
def team(ws: Any) -> Iterator[tuple[Any, ServerProc, dict[str, str]]]:
    """A server and one user per role (their first tokens, from `rf users add --json`)."""
    srv = start_server(ws.root)
    try:
        assert run_rf("agents", "deploy", "hello", "-m", "v1", cwd=ws.root).returncode == 0
        tokens = {}
        for role in ROLES:
            r = run_rf_here("users", "add", role[:3] + "-user", "--role", role, "--json", cwd=ws.root)
            assert r.returncode == 0, r.stderr
            created = json.loads(r.stdout)
            assert set(created) == {"name", "role", "token"} and created["role"] == role
            tokens[role] = created["token"]
        yield ws, srv, tokens
    finally:
        srv.stop()


def as_user(ws: Any, srv: ServerProc, token: str, *args: str, run: Any = run_rf_here) -> Any:
    return run(*args, cwd=ws.root, env={"RF_SERVER_URL": srv.url, "RF_TOKEN": token})


#: One representative command per class of routes: (its route, the command line).
CLASSES: dict[str, tuple[str, list[str]]] = {
    "viewer": ("list_agents", ["agents", "list", "--json"]),
    "developer": ("deploy", ["agents", "deploy", "hello", "-m", "by {role}"]),
    "publisher": ("promote", ["agents", "promote", "hello", "--yes"]),
    "admin": ("create_key", ["keys", "create", "--env", "staging", "--name", "k-{role}"]),
}


def test_each_role_against_each_class_of_command(team: tuple[Any, ServerProc, dict[str, str]]) -> None:
    ws, srv, tokens = team
    assert set(CLASSES) == set(ROLES)
    for needed, (route, _) in CLASSES.items():
        assert api.BY_NAME[route].role == needed, route  # the table the server enforces
    for role, token in tokens.items():
        for needed, (route, argv) in CLASSES.items():
            args = [a.format(role=role[:3]) for a in argv]
            if route == "deploy":  # (a change each time, so each deploy makes a commit)
                (ws.root / "agents" / "hello" / "note.txt").write_text(role)
            real = (role, needed) in (("developer", "publisher"), ("admin", "admin"))  # a refusal, a success
            r = as_user(ws, srv, token, *args, run=run_rf if real else run_rf_here)
            if RANK[role] >= RANK[needed]:
                assert r.returncode == 0, (role, args, r.stderr)
            else:
                assert r.returncode != 0, (role, args, "allowed below its role")
                assert f"{needed} role needed to " in r.stderr, (role, args, r.stderr)
                assert f"rf users set-role {role[:3]}-user {needed}" in r.stderr, r.stderr
    # the refusal is a 403 over HTTP, with the same words
    resp = httpx.post(srv.url + "/api/agents/hello/promote", json={},
                      headers={"authorization": f"Bearer {tokens['developer']}"})
    assert resp.status_code == 403
    assert resp.json()["error"]["message"].startswith("publisher role needed to promote")
    # a developer's trigger change --now is a release: a publisher's
    from rf.client import HttpBackend

    owner = HttpBackend(srv.url, srv.token, ws)  # (the server's own token: the workspace owner)
    copy = owner.duplicate_trigger(owner.create_trigger("hello", "schedule", schedule="0 1 * * *").id, "production")
    owner.publish_release([f"trigger:{copy.id}"], message="trigger live")
    r = as_user(ws, srv, tokens["developer"], "triggers", "edit", copy.id, "--env", "production", "--now", "--schedule", "0 2 * * *")
    assert r.returncode != 0 and "publisher role needed to edit trigger --now" in r.stderr, r.stderr
    r = as_user(ws, srv, tokens["developer"], "triggers", "edit", copy.id, "--env", "production", "--schedule", "0 2 * * *")
    assert r.returncode == 0, r.stderr  # (staged as a release item: a developer's)
    r = as_user(ws, srv, tokens["publisher"], "triggers", "edit", copy.id, "--env", "production", "--now", "--schedule", "0 3 * * *", "--yes")
    assert r.returncode == 0, r.stderr


def test_the_actor_comes_from_the_token(team: tuple[Any, ServerProc, dict[str, str]]) -> None:
    ws, srv, tokens = team
    (ws.root / "agents" / "hello" / "note.txt").write_text("dev change")
    assert as_user(ws, srv, tokens["developer"], "agents", "deploy", "hello", "-m", "by dev",
                   run=run_rf).returncode == 0
    history = json.loads(as_user(ws, srv, tokens["viewer"], "agents", "history", "hello", "--json").stdout)
    assert history[0]["author"] == "dev-user" and history[0]["message"] == "by dev"
    assert as_user(ws, srv, tokens["publisher"], "agents", "promote", "hello", "--yes").returncode == 0
    # a request cannot say who it is
    resp = httpx.post(srv.url + "/api/agents/hello/promote", json={"author": "mallory"},
                      headers={"authorization": f"Bearer {tokens['publisher']}"})
    assert resp.status_code == 400
    assert "'author' cannot be set by a request" in resp.json()["error"]["message"]
    r = as_user(ws, srv, tokens["admin"], "audit", "--json")
    assert r.returncode == 0, r.stderr
    entries = json.loads(r.stdout)
    by_action = {(e["action"], e["actor"], e["role"]) for e in entries}
    assert ("deploy", "dev-user", "developer") in by_action
    assert ("promote", "pub-user", "publisher") in by_action
    assert ("add_user", srv_owner(ws, srv), "admin") in by_action  # the owner added the users
    assert not any(e["actor"] == "mallory" for e in entries)
    release = next(e for e in entries if e["action"] == "promote")
    assert release["target"] == "hello"
    # --since filters (an hour ahead: nothing yet)
    later = as_user(ws, srv, tokens["admin"], "audit", "--since", "2999-01-01", "--json")
    assert json.loads(later.stdout) == []


def srv_owner(ws: Any, srv: ServerProc) -> str:
    r = run_rf_here("users", "whoami", "--json", cwd=ws.root)  # (.rf/server.json: the owner's token)
    me = json.loads(r.stdout)
    assert me["owner"] is True and me["role"] == "admin"
    return str(me["name"])


def test_tokens_are_shown_once_kept_hashed_and_revocable(team: tuple[Any, ServerProc, dict[str, str]]) -> None:
    ws, srv, tokens = team
    dev = tokens["developer"]
    created = as_user(ws, srv, dev, "tokens", "create", "--name", "laptop", "--json", run=run_rf)
    assert created.returncode == 0, created.stderr
    second = json.loads(created.stdout)
    secret = second["secret"]
    listed = as_user(ws, srv, dev, "tokens", "list", "--json")
    assert secret not in listed.stdout and dev not in listed.stdout
    assert {t["name"] for t in json.loads(listed.stdout)} == {"default", "laptop"}
    # another user's tokens are an admin's business
    r = as_user(ws, srv, dev, "tokens", "list", "--user", "vie-user")
    assert r.returncode != 0 and "admin role needed" in r.stderr
    assert as_user(ws, srv, secret, "users", "whoami").stdout.startswith("dev-user (developer")
    # revoke: refused from the next request on
    assert as_user(ws, srv, dev, "tokens", "revoke", second["token"]["id"]).returncode == 0
    r = as_user(ws, srv, secret, "agents", "list")
    assert r.returncode != 0 and "missing, wrong or revoked API token" in r.stderr
    assert as_user(ws, srv, dev, "agents", "list").returncode == 0  # the other token still works
    # a role change applies to the next request; removing a user locks out their tokens
    assert run_rf_here("users", "set-role", "dev-user", "viewer", cwd=ws.root).returncode == 0
    r = as_user(ws, srv, dev, "agents", "deploy", "hello")
    assert r.returncode != 0 and "developer role needed" in r.stderr
    assert run_rf_here("users", "remove", "dev-user", cwd=ws.root).returncode == 0
    assert as_user(ws, srv, dev, "agents", "list").returncode != 0
    # only an admin manages users
    r = as_user(ws, srv, tokens["publisher"], "users", "add", "eve", "--role", "admin")
    assert r.returncode != 0 and "admin role needed to add user" in r.stderr
    # at rest: no token anywhere in the store (only SHA-256 and the first characters)
    srv.stop()
    stored = b"".join(p.read_bytes() for p in (ws.root / ".rf").iterdir() if p.is_file() and ".duckdb" in p.name)
    assert stored
    for token in (*tokens.values(), secret):
        assert token.encode() not in stored
        assert token[len("rf_pat_"):].encode() not in stored
    import hashlib

    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored


def test_rf_login_saves_a_token_for_the_server(team: tuple[Any, ServerProc, dict[str, str]]) -> None:
    ws, srv, tokens = team
    bad = run_rf("login", srv.url, cwd=ws.root, input="rf_pat_wrong\n")
    assert bad.returncode != 0 and not (ws.root / ".rf" / "login.json").exists()
    r = run_rf("login", srv.url, cwd=ws.root, input=tokens["publisher"] + "\n")
    assert r.returncode == 0, r.stderr
    assert "as pub-user (publisher)" in r.stdout + r.stderr
    login = ws.root / ".rf" / "login.json"
    assert tokens["publisher"] not in login.read_text()  # (the URL only; the token is in the keyring)
    assert login.stat().st_mode & 0o077 == 0
    me = json.loads(run_rf_here("users", "whoami", "--json", cwd=ws.root).stdout)
    assert me["name"] == "pub-user" and me["role"] == "publisher"
    r = run_rf_here("users", "add", "eve", cwd=ws.root)
    assert r.returncode != 0 and "admin role needed" in r.stderr
    assert run_rf_here("logout", cwd=ws.root).returncode == 0
    me = json.loads(run_rf_here("users", "whoami", "--json", cwd=ws.root).stdout)
    assert me["owner"] is True  # back to the workspace's own server, as its owner


def test_required_approvals(ws: Any) -> None:
    toml = ws.root / "rf.toml"
    toml.write_text(toml.read_text() + "\n[releases]\napprovals = 1\n")
    srv = start_server(ws.root)
    try:
        assert run_rf("agents", "deploy", "hello", "-m", "v1", cwd=ws.root).returncode == 0
        tokens = {name: json.loads(run_rf_here("users", "add", name, "--role", "publisher", "--json",
                                               cwd=ws.root).stdout)["token"] for name in ("ann", "ben")}

        def ann(*args: str) -> Any:
            return as_user(ws, srv, tokens["ann"], *args)

        def ben(*args: str) -> Any:
            return as_user(ws, srv, tokens["ben"], *args)

        plan = json.loads(ann("releases", "plan", "agent:hello", "--json").stdout)["id"]
        r = ann("releases", "publish", "--plan", plan, "--yes")
        assert r.returncode != 0 and f"plan {plan} has 0 of the 1 approval(s)" in r.stderr, r.stderr
        r = ann("releases", "approve", plan)
        assert r.returncode != 0 and "its author cannot approve it" in r.stderr, r.stderr
        r = ann("agents", "promote", "hello", "--yes")  # (a fresh plan of ann's own: no approvals)
        assert r.returncode != 0 and "approval" in r.stderr, r.stderr
        assert ben("releases", "approve", plan, "-m", "looks right").returncode == 0
        shown = json.loads(ann("releases", "plan", "show", plan, "--json").stdout)
        assert shown["required"] == 1 and [a["approver"] for a in shown["approvals"]] == ["ben"]
        assert shown["approvals"][0]["message"] == "looks right"
        # a plan that goes stale loses its approvals: staging moved, the plan id is another
        (ws.root / "agents" / "hello" / "note.txt").write_text("more")
        assert run_rf_here("agents", "deploy", "hello", "-m", "v2", cwd=ws.root).returncode == 0
        r = ann("releases", "publish", "--plan", plan, "--yes")
        assert r.returncode != 0, r.stderr
        fresh = json.loads(ann("releases", "plan", "agent:hello", "--json").stdout)["id"]
        assert fresh != plan
        r = ann("releases", "publish", "--plan", fresh, "--yes")
        assert r.returncode != 0 and "has 0 of the 1" in r.stderr
        assert ben("releases", "approve", fresh).returncode == 0
        r = ann("releases", "publish", "--plan", fresh, "--yes", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["author"] == "ann"
        audit = json.loads(run_rf_here("audit", "--json", cwd=ws.root).stdout)
        assert ("approve_plan", "ben", fresh) in {(e["action"], e["actor"], e["target"]) for e in audit}
    finally:
        srv.stop()


def test_workspace_without_a_server_acts_as_the_owner(ws: Any) -> None:
    """In-process (no server), the CLI is the workspace owner: an admin, recorded under its name."""
    r = run_rf("users", "add", "zoe", "--role", "viewer", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    users = json.loads(run_rf_here("users", "list", "--json", cwd=ws.root).stdout)
    assert users[0]["owner"] is True and users[0]["role"] == "admin"
    assert [u["name"] for u in users[1:]] == ["zoe"]
    audit = json.loads(run_rf_here("audit", "--json", cwd=ws.root).stdout)
    assert audit[0]["action"] == "add_user" and audit[0]["actor"] == users[0]["name"]


def test_releases_approvals_setting_is_checked(ws: Any) -> None:
    from rf.config import find_workspace
    from rf.errors import WorkspaceError

    toml = ws.root / "rf.toml"
    base = toml.read_text()
    toml.write_text(base + "\n[releases]\napprovals = 2\n")
    assert find_workspace(str(ws.root)).release_approvals == 2
    for bad in ("-1", "true", '"two"'):
        toml.write_text(base + f"\n[releases]\napprovals = {bad}\n")
        with pytest.raises(WorkspaceError, match=r"\[releases\] approvals must be a whole number"):
            find_workspace(str(ws.root))
