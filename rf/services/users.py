"""Users, roles, personal tokens and the audit log (``rf users``, ``rf tokens``, ``rf audit``).

**Who is calling.** Every Services call runs as an *actor* (name, role), held in a context
variable. The server sets it for each management request from the token the request
presented (:func:`call_as`; ``rf.server.guard`` resolves the token): the per-start token of
``.rf/server.json`` is the workspace owner, a personal token is its user. Nothing sets it
in-process (the CLI without a server, the dashboard's own calls, the scheduler's threads):
that is the owner, who is always an admin.

**Roles, in the service layer.** Each management route names the least role it needs
(:attr:`rf.api.Route.role`: viewer < developer < publisher < admin, each may do what the
ones before it may). :func:`guard_routes` wraps every Services method that is a route with
that check, so the rule holds whatever the surface, and for calls one method makes to
another: a developer's ``rf triggers edit ... --now`` reaches ``publish_release`` and is
refused there with "publisher role needed". The check is one context-variable read and
one dict lookup.

**The actor is the author.** A method with an ``author`` parameter that is not given one
gets the actor's name; over HTTP the parameter is the server's own (a request that sends
``author`` is refused), so deploys, releases and approvals are recorded under the name
the token belongs to.

**Tokens** are 256 random bits shown once; the store keeps their SHA-256 and first
characters (like endpoint keys, :mod:`rf.services.keys`). The server checks a presented
token against an in-memory map of live hashes, refreshed when a user, role or token changes.

**Audit log.** The routes in :data:`rf.api.AUDITED` (deploys, releases, approvals,
credentials, providers, data sources, keys, users, tokens) append one row per successful
call: actor, role, action, target and the call's non-secret arguments — never a value,
a DSN or a token.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rf.config import check_name
from rf.errors import Forbidden, NotFound, UsageError
from rf.ids import new_id, parse_iso, utcnow
from rf.models import ROLES, Approval, AuditEntry, PlanApprovals, TokenCreated, User, UserCreated, UserToken, Whoami
from rf.services.base import ServiceContext

RANK: dict[str, int] = {role: i for i, role in enumerate(ROLES)}
TOKEN_PREFIX = "rf_pat_"  #: personal access token


@dataclass(frozen=True)
class Actor:
    """Who a call runs as."""

    name: str
    role: str
    owner: bool = False
    token_id: str = ""


_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("rf_actor", default=None)
_AUDITING: contextvars.ContextVar[bool] = contextvars.ContextVar("rf_auditing", default=False)


@functools.cache
def owner() -> Actor:
    """The workspace owner: the OS user running this process (git user.name, else the login name)."""
    from rf.config import git_author

    return Actor(name=git_author(), role="admin", owner=True)


def current_actor() -> Actor:
    actor = _ACTOR.get()
    return actor if actor is not None else owner()


def call_as(actor: Actor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` run as ``actor`` (the server: one management request)."""
    reset = _ACTOR.set(actor)
    try:
        return fn(*args, **kwargs)
    finally:
        _ACTOR.reset(reset)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_role(role: Any) -> str:
    if role not in RANK:
        raise UsageError(f"unknown role {role!r}", "use one of: " + ", ".join(ROLES))
    return str(role)


def refused(actor: Actor, role: str, what: str) -> Forbidden:
    return Forbidden(f"{role} role needed to {what} ({actor.name} is {actor.role})",
                     f"ask an admin: rf users set-role {actor.name} {role}")


def require(role: str, what: str) -> Actor:
    """The current actor, if its role is at least ``role``; else Forbidden naming the role needed."""
    actor = current_actor()
    if RANK[actor.role] < RANK[role]:
        raise refused(actor, role, what)
    return actor


#: Arguments an audit row may carry (never a credential value, a DSN, a token, a file).
_AUDIT_ARGS = frozenset({"env", "items", "all", "plan_id", "message", "role", "force", "with_deps", "strict",
                         "dry_run", "target", "kind", "user", "name", "now", "accept_regressions", "canary",
                         "percent"})
#: Routes that publish to production without a reviewed plan of their own: with ``[releases]
#: approvals = N`` each needs a plan id with N approvals (a rollback does not: it is the way back).
_PUBLISHING = frozenset({"publish_release", "promote", "publish_prompt", "publish_connector"})
#: Fields of a call's answer that say what it produced (a release id, a commit...).
_AUDIT_RESULT = ("id", "release_id", "commit", "version", "published_version")


def guard_routes(target: object, users: UsersService) -> None:
    """Wrap each management route method of *target* (a domain service, or the
    :class:`rf.services.Services` facade) with its role check, the actor as the default
    ``author``, and (for :data:`rf.api.AUDITED` routes) the audit record kept by *users*.

    The guarded method replaces the plain one on the instance, so a call one service makes to
    another's route (triggers → ``publish_release``) passes the same check. A facade method
    that only forwards to a domain service (``__rf_delegate__``) is left alone: the domain's
    own method is the guarded one."""
    for route in _routes_of(type(target)):
        if route.name not in vars(target):
            setattr(target, route.name, _guarded(getattr(target, route.name), route, users))


_ROUTES_OF: dict[type, tuple[Any, ...]] = {}


def _routes_of(cls: type) -> tuple[Any, ...]:
    """The routes (rf.api.Route) whose method *cls* defines (not only forwards); found once per class."""
    found = _ROUTES_OF.get(cls)
    if found is None:
        from rf import api

        found = _ROUTES_OF[cls] = tuple(
            route for route in api.ROUTES
            if (fn := getattr(cls, route.name, None)) is not None and not getattr(fn, "__rf_delegate__", None))
    return found


@functools.cache
def _params(fn: Callable[..., Any]) -> list[str]:
    """The parameters of a route method after ``self`` (read once per method, not per Services)."""
    return list(inspect.signature(fn).parameters)[1:]


def _guarded(fn: Callable[..., Any], route: Any, users: UsersService) -> Callable[..., Any]:
    rank = RANK[route.role]
    role = route.role
    what = route.name.replace("_", " ")
    params = _params(getattr(fn, "__func__", fn))
    author_at = params.index("author") if "author" in params else None
    # `now=True` on a trigger change publishes a one-item release: a publisher's act.
    now_at = params.index("now") if "now" in params else None
    audited = route.audit
    name = route.name
    plan_at = params.index("plan_id") if "plan_id" in params else None
    publishes = name in _PUBLISHING

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        actor = _ACTOR.get() or owner()
        if RANK[actor.role] < rank:
            raise refused(actor, role, what)
        if now_at is not None and RANK[actor.role] < RANK["publisher"] and (
                kwargs.get("now") or (len(args) > now_at and args[now_at])):
            raise refused(actor, "publisher", f"{what} --now (a release)")
        if author_at is not None and len(args) <= author_at and "author" not in kwargs:
            kwargs["author"] = actor.name
        if publishes:
            plan_id = kwargs.get("plan_id") if plan_at is None or len(args) <= plan_at else args[plan_at]
            users._check_approvals(what, plan_id)
        if name == "plan_release":
            plan = fn(*args, **kwargs)
            users._planned(actor, plan.id)
            return plan
        if not audited or _AUDITING.get():
            return fn(*args, **kwargs)
        reset = _AUDITING.set(True)  # (one row for the outermost audited call: not its inner ones)
        try:
            result = fn(*args, **kwargs)
        finally:
            _AUDITING.reset(reset)
        users._audit(actor, name, route, fn, args, kwargs, result)
        return result

    guarded.__rf_guarded__ = True  # type: ignore[attr-defined]
    return guarded


class UsersService:
    """Users, roles, personal tokens, approvals of release plans and the audit log."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.store = ctx.store
        self.workspace = ctx.workspace
        self._token_cache: dict[str, tuple[str, str, str]] | None = None
        self._token_lock = threading.Lock()

    # ------------------------------------------------------------ who is calling
    def actor_for_token(self, presented: str) -> Actor | None:
        """The user a personal token belongs to (None: unknown or revoked). One hash, one lookup."""
        if not presented.startswith(TOKEN_PREFIX):
            return None
        found = self._live_tokens().get(token_hash(presented))
        if found is None:
            return None
        return Actor(name=found[0], role=found[1], token_id=found[2])

    def _live_tokens(self) -> dict[str, tuple[str, str, str]]:
        cache = self._token_cache
        if cache is None:
            with self._token_lock:
                cache = self._token_cache
                if cache is None:
                    cache = self._token_cache = self.store.live_token_hashes()
        return cache

    def whoami(self) -> Whoami:
        """The caller: its name (what changes are recorded under) and role."""
        a = current_actor()
        return Whoami(name=a.name, role=a.role, owner=a.owner, token_id=a.token_id)

    # ------------------------------------------------------------ users
    def list_users(self) -> list[User]:
        """The workspace owner (always admin), then every user."""
        me = owner()
        return [User(name=me.name, role="admin", owner=True),
                *(User(**r) for r in self.store.user_rows())]

    def _user(self, name: str) -> User:
        for row in self.store.user_rows():
            if row["name"] == name:
                return User(**row)
        raise NotFound(f"no user {name!r}", "see them with: rf users list")

    def add_user(self, name: str, role: str = "developer") -> UserCreated:
        """Add a user with a role; the answer holds their first personal token (shown once)."""
        check_name("user", name)
        check_role(role)
        if name == owner().name:
            raise UsageError(f"{name!r} is the workspace owner (always admin)", "pick another name")
        if any(r["name"] == name for r in self.store.user_rows()):
            raise UsageError(f"user {name!r} exists", f"change the role: rf users set-role {name} {role}")
        actor = current_actor()
        with self.store.unit_of_work() as tx:
            tx.users.insert_user(name=name, role=role, created_by=actor.name, now=utcnow())
        created = self._new_token(name, "default", actor)
        return UserCreated(name=name, role=role, token=created.secret)

    def remove_user(self, name: str) -> User:
        """Remove a user: their tokens stop working at once (the audit log keeps their past)."""
        user = self._user(name)
        with self.store.unit_of_work() as tx:
            tx.users.delete_user_row(name, utcnow())
        self._token_cache = None
        return user

    def set_user_role(self, name: str, role: str) -> User:
        """Change a user's role (from their next request on)."""
        check_role(role)
        self._user(name)
        with self.store.unit_of_work() as tx:
            tx.users.set_user_role_row(name, role)
        self._token_cache = None
        return self._user(name)

    # ------------------------------------------------------------ personal tokens
    def _for_user(self, user: str | None, what: str) -> str:
        """The user a token call is about: the caller's own, or (admins) another's."""
        actor = current_actor()
        if user is None or (user == actor.name and not actor.owner):
            if actor.owner:
                raise UsageError("the workspace owner signs in with the server's own token (.rf/server.json)",
                                 "name the user: --user NAME; or add yourself: rf users add NAME --role admin")
            return actor.name
        require("admin", f"{what} another user's tokens")
        self._user(user)
        return user

    def _new_token(self, user: str, name: str, actor: Any) -> TokenCreated:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = new_id("tok")
        with self.store.unit_of_work() as tx:
            tx.users.insert_token(token_id=token_id, user=user, name=name, prefix=secret[:12],
                                    token_hash=token_hash(secret), created_by=actor.name, now=utcnow())
        self._token_cache = None
        row = next(r for r in self.store.token_rows(user) if r["id"] == token_id)
        return TokenCreated(token=UserToken(**row), secret=secret)

    def create_token(self, name: str = "default", user: str | None = None) -> TokenCreated:
        """A new personal token (yours, or an admin's for ``user``): returned once, stored as its hash."""
        check_name("token", name)
        who = self._for_user(user, "create")
        if any(t["name"] == name for t in self.store.token_rows(who)):
            raise UsageError(f"{who} already has a token named {name!r}",
                             f"pick another --name, or revoke it first: rf tokens revoke {name}")
        return self._new_token(who, name, current_actor())

    def list_tokens(self, user: str | None = None, all_users: bool = False,
                    include_revoked: bool = False) -> list[UserToken]:
        """Personal tokens (metadata only): yours, one user's or everyone's (admins)."""
        if all_users:
            require("admin", "list every user's tokens")
            who: str | None = None
        else:
            who = self._for_user(user, "list")
        return [UserToken(**r) for r in self.store.token_rows(who, include_revoked=include_revoked)]

    def revoke_token(self, token: str) -> UserToken:
        """Revoke a personal token by id (or by name, among your own): refused from its next request on."""
        actor = current_actor()
        rows = [r for r in self.store.token_rows() if r["id"] == token
                or (r["name"] == token and r["user"] == actor.name and not actor.owner)]
        if not rows:
            raise NotFound(f"no live personal token {token!r}", "see them with: rf tokens list")
        row = rows[0]
        if row["user"] != actor.name or actor.owner:
            require("admin", "revoke another user's tokens")
        with self.store.unit_of_work() as tx:
            tx.users.revoke_token_row(row["id"], utcnow())
        self._token_cache = None
        return UserToken(**next(r for r in self.store.token_rows(include_revoked=True) if r["id"] == row["id"]))

    # ------------------------------------------------------------ approvals of release plans
    def required_approvals(self) -> int:
        return self.workspace.release_approvals if self.workspace is not None else 0

    def plan_approvals(self, plan_id: str) -> PlanApprovals:
        """A plan's approvals and how many a publish needs (``[releases] approvals`` in rf.toml)."""
        author = self.store.plan_author(plan_id)
        if author is None:
            raise NotFound(f"no release plan {plan_id!r} was made on this server",
                           "make one: rf releases plan ITEM... (its id is in the answer)")
        rows = self.store.approval_rows(plan_id)
        return PlanApprovals(plan_id=plan_id, author=author, required=self.required_approvals(),
                             approvals=[Approval(**r) for r in rows if r["approver"] != author])

    def approve_plan(self, plan_id: str, message: str = "") -> PlanApprovals:
        """Approve a release plan as a publisher other than its author (``rf releases approve``)."""
        actor = current_actor()
        author = self.store.plan_author(plan_id)
        if author is None:
            raise NotFound(f"no release plan {plan_id!r} was made on this server",
                           "make one: rf releases plan ITEM... (its id is in the answer)")
        if author == actor.name:
            raise UsageError(f"{actor.name} made plan {plan_id}: its author cannot approve it",
                             f"ask another publisher: rf releases approve {plan_id}")
        with self.store.unit_of_work() as tx:
            tx.users.insert_approval(plan_id=plan_id, approver=actor.name, message=message, now=utcnow())
        return self.plan_approvals(plan_id)

    def _planned(self, actor: Actor, plan_id: str) -> None:
        """Remember who first made a plan (its author: the one who cannot approve it)."""
        with self.store.unit_of_work() as tx:
            tx.users.insert_plan_author(plan_id, actor.name, utcnow())

    def _check_approvals(self, action: str, plan_id: Any) -> None:
        """With ``[releases] approvals = N``, a publish needs a plan with N approvals by others."""
        needed = self.required_approvals()
        if needed <= 0:
            return
        if not plan_id:
            raise UsageError(f"this workspace needs {needed} approval(s) of a release plan before a publish "
                             f"({action} was given no plan)",
                             "rf releases plan ITEM... ; another publisher: rf releases approve PLAN_ID ; "
                             "then rf releases publish --plan PLAN_ID")
        author = self.store.plan_author(str(plan_id))
        got = [r for r in self.store.approval_rows(str(plan_id)) if r["approver"] != author]
        if len(got) < needed:
            raise UsageError(f"plan {plan_id} has {len(got)} of the {needed} approval(s) it needs",
                             f"another publisher approves it: rf releases approve {plan_id}")

    # ------------------------------------------------------------ audit log
    def list_audit(self, since: str | None = None, limit: int = 200) -> list[AuditEntry]:
        """Recorded changes, newest first (``since``: an ISO time)."""
        from rf.config import check_limit

        check_limit(limit, 10_000)
        when = None
        if since:
            try:
                when = parse_iso(since)
            except ValueError:
                raise UsageError(f"--since {since!r} is not a time", "use ISO 8601, e.g. 2026-01-31 or "
                                 "2026-01-31T09:00:00Z (rf audit also takes a span ago: 30m, 12h, 7d)") from None
        return [AuditEntry(**r) for r in self.store.audit_rows(when, limit)]

    def _audit(self, actor: Actor, action: str, route: Any, fn: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any], result: Any) -> None:
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs).arguments
        except TypeError:
            bound = dict(kwargs)
        path = route.path_params()
        target = " ".join(str(bound[p]) for p in path if p in bound)
        detail: dict[str, Any] = {k: v for k, v in bound.items()
                                  if k in _AUDIT_ARGS and k not in path and v not in (None, "", False, [])}
        for field in _AUDIT_RESULT:
            value = getattr(result, field, None)
            if field == "commit" and value is not None and not isinstance(value, str):
                value = getattr(value, "id", None)
            if isinstance(value, str | int) and not isinstance(value, bool):
                detail.setdefault(field if field != "id" else "result_id", value)
        if action == "plan_release":
            target = getattr(result, "id", "")
        elif action == "publish_release" and not target:
            target = str(detail.get("result_id", ""))
        elif action == "add_user":
            target = str(bound.get("name", ""))
        elif action == "create_token":
            token = getattr(result, "token", None)
            target = str(getattr(token, "user", "") or bound.get("user") or "")
            detail["token_id"] = str(getattr(token, "id", ""))
        with self.store.unit_of_work() as tx:
            tx.users.insert_audit(entry_id=new_id("aud"), now=utcnow(), actor=actor.name, role=actor.role,
                                    action=action, target=target, detail=detail)


