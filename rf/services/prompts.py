"""Prompts: immutable versions; draft (staging) and published (production) pointers.

A prompt is a name and its versions 1..n, each an immutable text with the
variables it uses. Nothing is ever edited in place: saving text makes a new
version and moves the **draft** pointer (what staging — and ``rf test`` —
sees). Production sees the **published** pointer, which moves only through a
publish (a release), so a prompt edit can never change what production
agents say until someone reviews the diff and publishes it.

Templates are validated when saved (:mod:`rf.services.templates`), so a
syntax error surfaces at ``rf prompts set`` with its line and column, never
in the middle of a production execution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rf.config import check_name
from rf.errors import Conflict, NotFound, ProductionReadOnly, UsageError
from rf.ids import iso, utcnow
from rf.models import (
    DeleteResult,
    Prompt,
    PromptDiff,
    PromptPublishResult,
    PromptSaveResult,
    PromptVersion,
    ReleaseItem,
    check_env,
    require_staging,
)
from rf.services import templates
from rf.services.base import ServiceContext
from rf.services.host import HostCall, host_method

if TYPE_CHECKING:
    from rf.config import AgentConfig
    from rf.services.releases import CommitUses, Publisher
    from rf.store.interfaces import Repositories

#: Larger texts are refused: a prompt is sent with every model call, and the
#: HTTP API caps request bodies at 1 MiB anyway.
MAX_PROMPT_CHARS = 256 * 1024

PUBLISH_HINT = "edit in staging, then publish: rf prompts publish {name}"


class PromptsService:
    """Prompts and their versions; the release plug-in of kind ``prompt`` (publishing goes
    through *publisher*, the releases domain; *commits* tells which agents use a prompt)."""

    def __init__(self, ctx: ServiceContext, publisher: Publisher, commits: CommitUses) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.publisher = publisher
        self.commits = commits
        self._templates: dict[tuple[str, int], templates.Template] = {}

    # ------------------------------------------------------------ helpers
    def _parsed(self, v: PromptVersion) -> templates.Template:
        """The parsed template of a version, cached by (name, version).

        Versions are immutable, so an entry never goes stale, and the hot
        path (``ctx.prompts.render`` in every execution) parses once.
        """
        cache = self._templates
        key = (v.name, v.version)
        parsed = cache.get(key)
        if parsed is None:
            parsed = cache[key] = templates.parse(v.text)
        return parsed

    @staticmethod
    def _unknown_prompt(name: str) -> NotFound:
        return NotFound(f"prompt {name!r} does not exist",
                        f"create it in staging: rf prompts create {name} --file FILE (see: rf prompts list)")

    def _prompt_row(self, name: str) -> dict[str, Any]:
        rows = self.store.prompt_rows(name)
        if not rows:
            raise self._unknown_prompt(name)
        return rows[0]

    @staticmethod
    def _check_text(name: str, text: Any) -> list[str]:
        """Validate a prompt text; return its variables (nothing is stored on error)."""
        if not isinstance(text, str):
            raise UsageError("prompt text must be a string")
        if not text.strip():
            raise UsageError(f"the text for prompt {name!r} is empty", "give the text with --file FILE or --text TEXT")
        if len(text) > MAX_PROMPT_CHARS:
            raise UsageError(f"the text for prompt {name!r} is too long ({len(text)} characters; "
                             f"the limit is {MAX_PROMPT_CHARS})", "keep prompts under 256 KiB")
        if "\x00" in text:
            raise UsageError(f"the text for prompt {name!r} contains a NUL character", "is it a binary file?")
        try:
            return templates.variables(text)
        except templates.TemplateSyntaxError as exc:
            raise exc.to_rf_error(f"prompt {name!r}") from None

    @staticmethod
    def _check_meta(author: Any, message: Any) -> None:
        if not isinstance(author, str) or not isinstance(message, str):
            raise UsageError("author and message must be strings")

    @staticmethod
    def _mark(v: PromptVersion, draft: int | None, published: int | None) -> PromptVersion:
        v.draft = v.version == draft
        v.published = v.version == published
        return v

    # ------------------------------------------------------------ edits (staging only)
    def create_prompt(self, name: str, text: str, author: str = "unknown", message: str = "",
                      env: str = "staging") -> PromptSaveResult:
        """Create a prompt: version 1, the draft. Production gets it only when published."""
        require_staging(env, f"create prompt {name!r} in production", PUBLISH_HINT.format(name=name))
        check_name("prompt", name)
        self._check_meta(author, message)
        variables = self._check_text(name, text)
        now = utcnow()
        version = PromptVersion(name=name, version=1, text=text, variables=variables, author=author,
                                message=message)
        published = None
        with self.store.unit_of_work() as tx:
            if tx.prompts.prompt_exists(name):
                if tx.prompts.get_prompt_pointer(name, "staging") is not None:
                    raise Conflict(f"prompt {name!r} already exists",
                                   f"make a new draft version: rf prompts set {name} --file FILE (or rf prompts edit {name})")
                # Deleted in staging (archived): created again as its next version; history stays.
                version.version = tx.prompts.next_prompt_version(name)
                published = tx.prompts.get_prompt_pointer(name, "production")
                tx.prompts.touch_prompt(name, now)
            else:
                tx.prompts.insert_prompt(name, now)
            tx.prompts.insert_prompt_version(version, now)
            tx.prompts.set_prompt_pointer(name, "staging", version.version, now)
        version.created_at, version.draft, version.env = iso(now), True, "staging"
        version.published = published == version.version
        return PromptSaveResult(name=name, version=version, created=True, published_version=published)

    def set_prompt(self, name: str, text: str, author: str = "unknown", message: str = "",
                   env: str = "staging") -> PromptSaveResult:
        """Save ``text`` as a new version and make it the draft (production does not move).

        Text identical to the current draft makes no version (``created`` is
        False) — re-saving a file must not clutter the history.
        """
        require_staging(env, f"edit prompt {name!r}", PUBLISH_HINT.format(name=name))
        check_name("prompt", name)
        self._check_meta(author, message)
        variables = self._check_text(name, text)
        now = utcnow()
        with self.store.unit_of_work() as tx:
            if not tx.prompts.prompt_exists(name):
                raise NotFound(f"prompt {name!r} does not exist",
                               f"create it first: rf prompts create {name} --file FILE")
            draft = tx.prompts.get_prompt_pointer(name, "staging")
            if draft is None:
                raise NotFound(f"prompt {name!r} was deleted in staging (archived)",
                               f"create it again: rf prompts create {name} --file FILE (its versions stay: "
                               f"rf prompts history {name})")
            published = tx.prompts.get_prompt_pointer(name, "production")
            current = tx.prompts.get_prompt_version(name, draft) if draft is not None else None
            if current is not None and current.text == text:
                version, created = current, False
            else:
                number = tx.prompts.next_prompt_version(name)
                version = PromptVersion(name=name, version=number, text=text, variables=variables,
                                        author=author, message=message, created_at=iso(now))
                tx.prompts.insert_prompt_version(version, now)
                tx.prompts.set_prompt_pointer(name, "staging", number, now)
                tx.prompts.touch_prompt(name, now)
                created = True
        version.env = "staging"
        return PromptSaveResult(name=name, version=self._mark(version, version.version, published),
                                created=created, published_version=published)

    # ------------------------------------------------------------ reads
    def list_prompts(self, archived: bool = False) -> list[Prompt]:
        """Every prompt with its draft and published versions; prompts deleted in both
        environments (archived) only with ``archived=True``."""
        prompts = []
        for row in self.store.prompt_rows():
            gone = row["draft_version"] is None and row["published_version"] is None
            if gone and not archived:
                continue
            prompts.append(Prompt(**row, archived=gone))
        return prompts

    def delete_prompt(self, name: str, env: str = "staging") -> DeleteResult:
        """Delete a prompt from staging at once: archived — no draft any more, every version stays
        readable (``rf prompts history``). If production has a published version, removing it
        there is the pending release item ``prompt:NAME`` (vN → nothing)."""
        check_env(env)
        check_name("prompt", name)
        if env == "production":
            raise ProductionReadOnly(
                f"production is read-only: cannot delete prompt {name!r} there directly",
                f"delete it in staging, then publish the removal: rf prompts delete {name}; "
                f"rf releases publish prompt:{name}")
        with self.store.write_lock:
            row = self._prompt_row(name)
            if row["draft_version"] is None:
                raise Conflict(f"prompt {name!r} is already deleted in staging"
                               + ("; production still has it" if row["published_version"] is not None else ""),
                               f"remove it from production: rf releases publish prompt:{name}"
                               if row["published_version"] is not None else f"see: rf prompts history {name}")
            now = utcnow()
            with self.store.unit_of_work() as tx:
                tx.prompts.set_prompt_pointer(name, "staging", None, now)
                tx.prompts.touch_prompt(name, now)
        warnings = []
        uses = self.commits.uses
        for agent in self.store.agent_rows():
            if agent["staging_commit"] is not None and name in uses(agent["staging_commit"]).prompts:
                warnings.append(f"staging agent {agent['name']} uses prompt {name}: its staging runs fail "
                                "until you change it or create the prompt again")
        item = None
        if row["published_version"] is not None:
            item = ReleaseItem(kind="prompt", name=name, before=row["published_version"], after=None,
                               summary=f"remove from production (deleted in staging; production has "
                                       f"v{row['published_version']})")
        return DeleteResult(kind="prompt", name=name, env="staging", item=item, warnings=warnings)

    def get_prompt(self, name: str, env: str = "staging", version: int | None = None) -> PromptVersion:
        """The version ``env`` sees (staging: the draft; production: the published one), or version N."""
        check_env(env)
        check_name("prompt", name)
        row = self._prompt_row(name)
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise UsageError(f"invalid version {version!r}", "versions are numbered 1, 2, 3...")
            v = self.store.get_prompt_version(name, version)
            if v is None:
                raise NotFound(f"prompt {name!r} has no version {version} (it has 1..{row['versions']})",
                               f"see: rf prompts history {name}")
        else:
            number = row["draft_version"] if env == "staging" else row["published_version"]
            if number is None and env == "staging":
                raise NotFound(f"prompt {name!r} was deleted in staging (archived)",
                               f"its versions stay readable: rf prompts history {name} (or --version N)")
            if number is None:
                raise NotFound(f"prompt {name!r} is not published: production has no version of it",
                               f"review and publish the draft: rf prompts publish {name}")
            v = self.store.get_prompt_version(name, number)
            assert v is not None
            v.env = env
        return self._mark(v, row["draft_version"], row["published_version"])

    def prompt_history(self, name: str) -> list[PromptVersion]:
        """Every version, newest first, marking the draft and the published one."""
        check_name("prompt", name)
        row = self._prompt_row(name)
        return [self._mark(v, row["draft_version"], row["published_version"])
                for v in self.store.list_prompt_versions(name)]

    def diff_prompt(self, name: str) -> PromptDiff:
        """Published (production) vs draft (staging): both versions and texts."""
        check_name("prompt", name)
        row = self._prompt_row(name)
        published = (self.store.get_prompt_version(name, row["published_version"])
                     if row["published_version"] is not None else None)
        if row["draft_version"] is None:  # deleted in staging: publishing removes it from production
            return PromptDiff(name=name, published_version=row["published_version"], draft_version=None,
                              published_text=published.text if published else None, draft_text="",
                              changed=published is not None, deleted=True)
        draft = self.store.get_prompt_version(name, row["draft_version"])
        assert draft is not None
        return PromptDiff(
            name=name, published_version=row["published_version"], draft_version=draft.version,
            published_text=published.text if published else None, draft_text=draft.text,
            changed=row["published_version"] != draft.version,
        )

    # ------------------------------------------------------------ publish (the release path)
    def publish_prompt(self, name: str, author: str = "unknown", message: str = "",
                       draft_version: int | None = None) -> PromptPublishResult:
        """Point production at the draft: a one-item release, recorded with it atomically.

        ``draft_version`` is the draft the caller reviewed (e.g. the version
        ``rf prompts publish`` showed in its diff): if the draft moved since,
        the publish is refused rather than shipping text nobody looked at.
        """
        check_name("prompt", name)
        self._check_meta(author, message)
        message = message or f"publish prompt {name}"
        row = self._prompt_row(name)
        if row["draft_version"] is None:
            raise Conflict(f"prompt {name!r} was deleted in staging: there is no draft to publish",
                           f"remove it from production: rf releases publish prompt:{name}")
        before, after = row["published_version"], int(row["draft_version"])
        if draft_version is not None and draft_version != after:
            raise Conflict(f"the draft of prompt {name!r} is now v{after}, not the v{draft_version} you reviewed",
                           f"review it again: rf prompts diff {name}")
        if before == after:
            return PromptPublishResult(name=name, before=before, after=after, changed=False)
        # The releases service is the one path production changes through (plans, dependency
        # checks, the eval gate; see releases_contract.md). The plan of exactly this item first,
        # with the gate's evidence (eval runs may take a while: never under the write lock, which
        # on PostgreSQL is every server's), then its publish by plan id, which refuses if the
        # draft or production moved meanwhile (a stale plan) and reuses that evidence.
        plan = self.publisher.plan_release([f"prompt:{name}"])
        if [(i.kind, i.name, i.before, i.after) for i in plan.items] != [("prompt", name, before, after)]:
            raise Conflict(f"prompt {name!r} changed while its publish was planned",
                           f"review it again: rf prompts diff {name}")
        release = self.publisher.publish_release(plan_id=plan.id, message=message, author=author)
        return PromptPublishResult(name=name, before=before, after=after, changed=True, release_id=str(release.id))

    # Release plug-in (see rf/services/releases_contract.md).
    def release_pending(self) -> list[ReleaseItem]:
        """Every prompt whose draft is not the published version."""
        items = []
        for name, draft, published in self.store.prompt_pointer_pairs():
            if draft == published:
                continue
            if draft is None:  # deleted in staging (archived), still published
                items.append(ReleaseItem(kind="prompt", name=name, before=published, after=None,
                                         summary=f"remove from production (deleted in staging; production "
                                                 f"has v{published})"))
                continue
            summary = (f"new: draft v{draft}, never published" if published is None
                       else f"draft v{draft} vs published v{published}")
            items.append(ReleaseItem(kind="prompt", name=name, summary=summary, before=published, after=draft))
        return items

    def new_variables(self, name: str) -> list[str]:
        """Variables the draft uses that the published version does not (for release warnings):
        production agent code may not pass them yet."""
        row = self._prompt_row(name)
        if row["draft_version"] is None:
            return []
        draft = self.store.get_prompt_version(name, row["draft_version"])
        published = (self.store.get_prompt_version(name, row["published_version"])
                     if row["published_version"] is not None else None)
        old = set(published.variables) if published else set()
        return [v for v in (draft.variables if draft else []) if v not in old]

    def release_apply(self, tx: Repositories, name: str, before: Any, after: Any) -> None:
        """Inside the unit of work ``tx``: point production at version ``after`` (None: unpublish).

        Refuses (Conflict) when production no longer points at ``before`` —
        someone published meanwhile — or ``after`` is not a stored version.
        """
        current = tx.prompts.get_prompt_pointer(name, "production")
        if current != before:
            raise Conflict(f"production's version of prompt {name!r} changed meanwhile "
                           f"(expected {_v(before)}, found {_v(current)})", "review the change again and re-run")
        if after is not None and tx.prompts.get_prompt_version(name, int(after)) is None:
            raise Conflict(f"prompt {name!r} has no version {after} to publish", f"see: rf prompts history {name}")
        now = utcnow()
        tx.prompts.set_prompt_pointer(name, "production", None if after is None else int(after), now)
        tx.prompts.touch_prompt(name, now)

    # ------------------------------------------------------------ deploy hook
    def deploy_warnings(self, config: AgentConfig) -> list[str]:
        """Warn about prompts that agent.toml lists but that do not exist (a deploy check)."""
        warnings: list[str] = []
        listed = [p for p in config.prompts if isinstance(p, str)]
        existing = self.store.existing_prompts(listed)
        for name in listed:
            if name not in existing:
                warnings.append(f"agent.toml lists prompt {name!r}, which does not exist: rf prompts create {name}")
            elif self.store.get_prompt_pointer(name, "staging") is None:
                warnings.append(f"agent.toml lists prompt {name!r}, which was deleted in staging: "
                                f"rf prompts create {name}")
        return warnings

    # ------------------------------------------------------------ agent code (ctx.prompts)
    def _resolve_for(self, call: HostCall, name: Any) -> PromptVersion:
        """The version an execution sees: the draft in staging, the published one in production.

        Error messages name the fix in the first line, because an execution
        error shows only its first line.
        """
        if not isinstance(name, str):
            raise UsageError("ctx.prompts: the prompt name must be a string")
        check_name("prompt", name)
        arm = call.arm  # production: a running canary's version on its canary arm
        canaried = arm.prompts.get(name) if arm is not None and arm.prompts else None
        v = (self.store.resolve_prompt(name, call.env) if canaried is None
             else self.store.get_prompt_version(name, canaried))
        if v is None:
            if not self.store.prompt_exists(name):
                raise NotFound(f"prompt {name!r} does not exist (create it: rf prompts create {name})",
                               f"create it in staging: rf prompts create {name} --file FILE")
            if call.env == "staging":
                raise NotFound(f"prompt {name!r} was deleted in staging (create it again: rf prompts create {name})",
                               f"create it again in staging: rf prompts create {name} --file FILE")
            raise NotFound(
                f"prompt {name!r} is not published, so production has no version of it "
                f"(publish the draft: rf prompts publish {name})",
                f"review and publish the draft: rf prompts publish {name}",
            )
        v.env = call.env
        call.annotate(prompt=name, version=v.version)
        return v

    @host_method("prompts.get")
    def _host_prompts_get(self, call: HostCall, name: str) -> dict[str, Any]:
        v = self._resolve_for(call, name)
        return {"name": v.name, "text": v.text, "version": v.version, "env": call.env, "variables": v.variables}

    @host_method("prompts.render")
    def _host_prompts_render(self, call: HostCall, name: str, variables: dict[str, Any] | None = None) -> str:
        if variables is not None and not isinstance(variables, dict):
            raise UsageError("ctx.prompts.render: variables must be keyword arguments")
        v = self._resolve_for(call, name)
        return self.render_prompt_version(v, variables or {})

    def render_prompt_version(self, v: PromptVersion, values: dict[str, Any]) -> str:
        """Render one version; a missing variable names itself, the prompt and the version."""
        try:
            return self._parsed(v).render(values)
        except templates.MissingVariables as exc:
            names = exc.names
            plural = "s" if len(names) > 1 else ""
            listed = ", ".join(repr(n) for n in names)
            example = ", ".join(f"{n}=..." for n in names)
            raise UsageError(
                f"prompt {v.name!r} v{v.version} needs variable{plural} {listed}, which {'were' if plural else 'was'} not given",
                f"pass {'them' if plural else 'it'}: ctx.prompts.render({v.name!r}, {example})",
            ) from None


def _v(version: Any) -> str:
    return "nothing published" if version is None else f"v{version}"
