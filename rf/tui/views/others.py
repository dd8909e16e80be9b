"""Triggers, knowledge bases, data sources: list + detail when this build's Backend offers them.

In staging each view also offers the edits the CLI can make: new triggers
(and staged production copies), knowledge base search and uploads, data
source queries and new file sources. Production hides them all, except the
production Triggers screen's pause/resume and edit: each opens a dialog that
names what will change and either stages it as a release item or publishes
that one item at once (a recorded one-item release).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Select, Static, TextArea

from rf.errors import RfError, UsageError
from rf.kb.files import collect_files, document_path
from rf.tui.calls import run_call
from rf.tui.format import one_line
from rf.tui.modals import ChoiceModal, FormModal
from rf.tui.views.base import Command
from rf.tui.views.connectors import parse_json_field
from rf.tui.views.generic import ListView
from rf.tui.widgets import RfFooter, Table

if TYPE_CHECKING:
    from rf.client import Backend
    from rf.models import DataQueryResult, KBSearchResult, KBUploadResult, Trigger, TriggerChangeResult

TRIGGER_KINDS = ("schedule", "webhook", "watch")
PIECE_BYTES = 512 * 1024  #: as rf kb upload: over HTTP a bigger file is sent in pieces


def _message(exc: RfError) -> str:
    return exc.message + (f" — {exc.hint}" if exc.hint else "")


# ------------------------------------------------------------ triggers


class TriggerForm(FormModal):
    """A new staging trigger: schedule (cron), webhook, or watch (a path)."""

    TITLE_TEXT = "New trigger (staging)"
    SUBMIT_LABEL = "Create"

    def __init__(self, agent: str = "") -> None:
        super().__init__(classes="form wide")
        self.agent = agent

    def compose_form(self) -> ComposeResult:
        yield self.field_error("form")
        yield Label("Agent", classes="field-label")
        yield Input(self.agent, placeholder="e.g. hello", id="agent")
        yield self.field_error("agent")
        yield Label("Kind", classes="field-label")
        yield Select[str]([(k, k) for k in TRIGGER_KINDS], value="schedule", allow_blank=False, id="kind", compact=True)
        yield Label("Cron expression (schedule) or path (watch); empty for a webhook", classes="field-label")
        yield Input(placeholder="*/5 * * * *", id="spec")
        yield self.field_error("spec")
        yield Label("Input (JSON, optional)", classes="field-label")
        yield TextArea("", id="input", classes="json")
        yield self.field_error("input")
        yield Label("Name (optional)", classes="field-label")
        yield Input(placeholder="defaults to AGENT-KIND", id="name")
        yield self.field_error("name")

    def on_mount(self) -> None:
        self.query_one("#agent", Input).focus()

    def submit(self) -> None:
        ok = True
        agent = self.query_one("#agent", Input).value.strip()
        if not agent:
            self.show_error("agent", "An agent is required.")
            ok = False
        kind_value = self.query_one("#kind", Select).value
        kind = kind_value if isinstance(kind_value, str) else "schedule"
        spec = self.query_one("#spec", Input).value.strip()
        if kind == "schedule" and not spec:
            self.show_error("spec", 'A schedule trigger needs a cron expression (e.g. "*/5 * * * *").')
            ok = False
        if kind == "watch" and not spec:
            self.show_error("spec", "A watch trigger needs a path (e.g. ./inbox).")
            ok = False
        text = self.query_one("#input", TextArea).text
        value, error = parse_json_field(text, "the input")
        if error:
            self.show_error("input", error)
            ok = False
        if not ok:
            return
        name = self.query_one("#name", Input).value.strip() or None
        backend = self.rf.backend

        def create() -> Trigger:
            return backend.create_trigger(
                agent,
                kind,
                schedule=spec if kind == "schedule" else None,
                watch_path=spec if kind == "watch" else None,
                input=value,
                name=name,
            )

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            lowered = exc.message.lower()
            where = (
                "agent"
                if "agent" in lowered
                else "spec"
                if any(w in lowered for w in ("cron", "schedule", "path", "timezone"))
                else "input"
                if "input" in lowered
                else "name"
                if "name" in lowered
                else "form"
            )
            self.show_error(where, _message(exc))
            return True

        self.set_busy(True)
        run_call(self, create, self.dismiss, failed=failed, group="save")


class TriggerEditForm(FormModal):
    """Change a trigger. Staging: saved at once. Production: checked, then the view asks
    whether to stage the change as a release item or publish it now."""

    SUBMIT_LABEL = "Save"

    def __init__(self, trigger: Trigger) -> None:
        super().__init__(classes="form wide")
        self.trigger = trigger
        production = trigger.env == "production"
        self.TITLE_TEXT = (f"Change production trigger {trigger.name} (a release item)" if production
                           else f"Edit trigger {trigger.name} (staging)")
        self.SUBMIT_LABEL = "Review" if production else "Save"

    def compose_form(self) -> ComposeResult:
        import json

        t = self.trigger
        yield self.field_error("form")
        yield Label("Name", classes="field-label")
        yield Input(t.name, id="name")
        yield self.field_error("name")
        yield Label("Agent", classes="field-label")
        yield Input(t.agent, id="agent")
        yield self.field_error("agent")
        if t.kind == "schedule":
            yield Label("Cron expression", classes="field-label")
            yield Input(t.schedule or "", id="spec")
            yield self.field_error("spec")
        yield Label("Input (JSON, optional)", classes="field-label")
        yield TextArea(json.dumps(t.input, indent=2) if t.input is not None else "", id="input", classes="json")
        yield self.field_error("input")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def changes(self) -> dict[str, Any] | None:
        """The fields that differ from the trigger (None: a field has an error)."""
        t = self.trigger
        out: dict[str, Any] = {}
        name = self.query_one("#name", Input).value.strip()
        agent = self.query_one("#agent", Input).value.strip()
        if not name:
            self.show_error("name", "A name is required.")
            return None
        if not agent:
            self.show_error("agent", "An agent is required.")
            return None
        if name != t.name:
            out["name"] = name
        if agent != t.agent:
            out["agent"] = agent
        if t.kind == "schedule":
            spec = self.query_one("#spec", Input).value.strip()
            if not spec:
                self.show_error("spec", 'A schedule trigger needs a cron expression (e.g. "*/5 * * * *").')
                return None
            if spec != t.schedule:
                out["schedule"] = spec
        text = self.query_one("#input", TextArea).text
        value, error = parse_json_field(text, "the input")
        if error:
            self.show_error("input", error)
            return None
        if value != t.input:
            out["input" if value is not None else "clear_input"] = value if value is not None else True
        return out

    def submit(self) -> None:
        changes = self.changes()
        if changes is None:
            return
        if not changes:
            self.show_error("form", "Nothing changed.")
            return
        backend, t = self.rf.backend, self.trigger
        production = t.env == "production"

        def save() -> tuple[dict[str, Any], TriggerChangeResult]:
            # Production: a preview (nothing changes yet); the view asks how to publish it.
            return changes, backend.edit_trigger(t.id, env=t.env, preview=production, **changes)

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            lowered = exc.message.lower()
            where = ("spec" if "cron" in lowered or "schedule" in lowered else "agent" if "agent" in lowered
                     else "input" if "input" in lowered else "name" if "name" in lowered else "form")
            if where == "spec" and t.kind != "schedule":
                where = "form"
            self.show_error(where, _message(exc))
            return True

        self.set_busy(True)
        run_call(self, save, self.dismiss, failed=failed, group="save")


def production_change_body(result: TriggerChangeResult) -> Text:
    """What a production trigger change does, field by field (before → after), for the dialog."""
    import json

    item = result.item
    text = Text()
    if item is None:
        return text
    text.append(item.summary + "\n\n", style="bold")
    before, after = item.before or {}, item.after or {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            def shown(v: Any, key: str = key) -> str:
                return ("enabled" if v else "paused") if key == "enabled" else one_line(json.dumps(v), 40)

            text.append(f"  {key}: ", style="bold")
            text.append(shown(before.get(key)), style="#f87171")
            text.append(" → ")
            text.append(shown(after.get(key)) + "\n", style="#34d399")
    text.append("\nStage for release: a pending item (trigger:" + item.name + "), published from Releases.\n"
                "Publish now: a one-item release at once, recorded in the release history (roll back from there).",
                style="dim")
    return text


def _signing_note(trigger: Trigger) -> str:
    """How callers use a new webhook's secret (shown under it, once)."""
    return ("Copy it now: rf never shows it again. Callers sign each request with it:\n"
            "X-RF-Signature: t=UNIX_SECONDS,v1=hex HMAC-SHA256(secret, t + \".\" + body)\n"
            "within 5 minutes of the server's clock; each signature is accepted once.\n"
            f"Examples (curl, Python): rf triggers show {trigger.id}"
            + (f"\nURL: {trigger.url}" if getattr(trigger, "url", None) else ""))


class SecretModal(ModalScreen[None]):
    """A webhook's secret, shown once (it is never shown again)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, title: str, secret: str, note: str) -> None:
        super().__init__(classes="confirm")
        self._title = title
        self.secret = secret
        self._note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._title, id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-body"):
                yield Static(Text.assemble(("Secret (shown only now): ", "bold"), (self.secret, "bold #f59e0b")))
                yield Static(self._note, markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")
        yield RfFooter()

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class TriggersView(ListView):
    TITLE = "Triggers"
    KEY = "triggers"
    GROUP = "Build"
    REQUIRES = ("list_triggers",)
    LIST_METHOD = "list_triggers"
    PER_ENV = True
    NAME_FIELD = "id"
    COLUMNS = ("name", "kind", "agent", "enabled", "schedule", "next_fire_at", "url")
    EMPTY_TEXT = "No triggers in this environment — create one in staging: press n (or rf triggers create --agent AGENT --schedule CRON)"
    NOUN = "trigger"
    WRITE_ACTIONS = frozenset({"toggle_enabled", "new_trigger", "stage_production_copy"})
    BANNER = ("Production triggers change only by release: p pauses or resumes, m edits — each staged as a "
              "release item or published now. Press e for staging.")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_enabled", "Enable/disable"),
        Binding("p", "pause_resume", "Pause/resume"),
        Binding("m", "edit_trigger", "Edit"),
        Binding("n", "new_trigger", "New trigger"),
        Binding("c", "stage_production_copy", "Stage production copy"),
    ]

    def selected_item(self) -> Any:
        return next((i for i in self.items if self.key_of(i) == self.place), self.items[0] if self.items else None)

    def cell(self, item: Any, column: str) -> str | Text:
        if column == "enabled" and item.failure():  # the server is retrying its watcher / the scheduler
            return Text("yes · " + ("watcher failed" if item.kind == "watch" else "scheduler failed"), style="bold red")
        return super().cell(item, column)

    def render_item(self, item: Any) -> RenderableType:
        details = super().render_item(item)
        failure = item.failure()
        if not failure:
            return details
        return Group(Text(failure, style="bold red"), Text(f"restarts: {item.restarts}", style="dim"), Text(""),
                     details)

    def action_toggle_enabled(self) -> None:
        if self.refuse_in_production():
            return
        item: Any = next((i for i in self.items if self.key_of(i) == self.place), None)
        if item is None:
            return
        enabled = not item.enabled
        self.call(lambda: self.backend.set_trigger_enabled(item.id, enabled), lambda _: self.reload(), group="toggle")

    def action_pause_resume(self) -> None:
        """Staging: enable/disable at once. Production: a dialog naming the change (stage it, or publish now)."""
        item = next((i for i in self.items if self.key_of(i) == self.place), None) or self.selected_item()
        if item is None:
            return
        if not self.read_only:
            self.place = item.id
            self.action_toggle_enabled()
            return
        backend, pause = self.backend, bool(item.enabled)
        self.call(lambda: backend.edit_trigger(item.id, env="production", enabled=not pause, now=True, preview=True),
                  lambda result: self.ask_production_change(item, {"enabled": not pause}, result,
                                                            "Pause" if pause else "Resume"),
                  group="preview")

    def action_edit_trigger(self) -> None:
        item = next((i for i in self.items if self.key_of(i) == self.place), None) or self.selected_item()
        if item is None:
            self.rf.notify("Create a trigger first (key n, in staging).", severity="warning")
            return
        if item.env == "production" and not item.live:
            self.rf.notify("This production copy is staged, not live: edit its staging trigger, or publish it "
                           "from Releases.", severity="warning")
            return

        def edited(answer: tuple[dict[str, Any], TriggerChangeResult] | None) -> None:
            if answer is None:
                return
            changes, result = answer
            if item.env == "production":
                self.ask_production_change(item, changes, result, "Change")
                return
            self.reload()
            self.rf.notify(f"Trigger {item.name}: {result.summary}", title="Saved in staging", markup=False)

        self.app.push_screen(TriggerEditForm(item), edited)

    def ask_production_change(self, item: Trigger, changes: dict[str, Any], preview: TriggerChangeResult,
                              verb: str) -> None:
        """The confirm dialog of a production trigger change: it names the change; stage or publish now."""
        if not preview.changed or preview.item is None:
            self.rf.notify(f"Trigger {item.name}: nothing to change in production.", markup=False)
            return
        backend = self.backend

        def chosen(choice: str | None) -> None:
            if choice not in ("stage", "now"):
                return
            from rf.config import git_author

            now = choice == "now"

            def done(result: TriggerChangeResult) -> None:
                self.reload()
                if result.release_id:
                    self.rf.notify(f"Trigger {item.name}: {result.summary} — published now (release "
                                   f"{result.release_id}).", title="Production changed", markup=False)
                else:
                    self.rf.notify(f"Trigger {item.name}: {result.summary} — staged; publish it from Releases.",
                                   title="Staged", markup=False)

            self.call(lambda: backend.edit_trigger(item.id, env="production", now=now, author=git_author(),
                                                   **changes),
                      done, group="production-change")

        self.app.push_screen(
            ChoiceModal(f"{verb} trigger {item.name} in production?", production_change_body(preview),
                        [("now", "Publish now", "error"), ("stage", "Stage for release", "primary")]),
            chosen,
        )

    def action_new_trigger(self) -> None:
        if self.refuse_in_production():
            return
        current = self.selected_item()

        def created(trigger: Trigger | None) -> None:
            if trigger is None:
                return
            self.place = trigger.id
            self.reload()
            if trigger.secret:
                # After the form's screen is fully gone (pushing from its dismiss callback leaves keys stuck).
                self.app.call_after_refresh(
                    self.app.push_screen,
                    SecretModal(
                        f"Webhook trigger {trigger.name} created (staging)",
                        trigger.secret,
                        _signing_note(trigger),
                    ),
                )
            else:
                self.rf.notify(
                    f"Trigger {trigger.name} created — press c to stage a production copy.",
                    title="Saved in staging",
                    markup=False,
                )

        self.app.push_screen(TriggerForm(current.agent if current is not None else ""), created)

    def action_stage_production_copy(self) -> None:
        if self.refuse_in_production():
            return
        item = self.selected_item()
        if item is None:
            self.rf.notify("Create a trigger first (key n).", severity="warning")
            return
        backend = self.backend

        def done(copy: Trigger) -> None:
            self.reload()
            if copy.secret:  # a webhook copy has its own secret, shown only now
                self.app.push_screen(SecretModal(
                    f"Production copy of {item.name} staged ({copy.id}) — publish it from Releases",
                    copy.secret, _signing_note(copy)))
                return
            self.rf.notify(
                f"Production copy of {item.name} staged ({copy.id}) — publish it from Releases.",
                title="Staged",
                markup=False,
            )

        self.call(lambda: backend.duplicate_trigger(item.id, "production"), done, group="duplicate")

    def commands(self) -> Iterable[Command]:
        if self.items:
            where = "a release item, or published now" if self.read_only else "staging, at once"
            yield Command("Pause or resume the selected trigger", self.action_pause_resume, f"{where} (key p)")
            yield Command("Edit the selected trigger", self.action_edit_trigger, f"{where} (key m)")
        if self.read_only:
            return
        yield Command("New trigger", self.action_new_trigger, "Schedule, webhook or watch, in staging (key n)")
        if self.items:
            yield Command(
                "Stage a production copy of the selected trigger",
                self.action_stage_production_copy,
                "A release item, live once published (key c)",
            )


# ------------------------------------------------------------ knowledge


def upload_path(backend: Backend, kb: str, path: Path, root: Path | None) -> tuple[KBUploadResult, int]:
    """Upload a file or folder into ``kb`` as one batch (all or nothing); the result and the skipped count."""
    from rf.ids import new_id

    files, skipped = collect_files([path])
    if not files:
        raise UsageError(
            "no supported files to upload" + (f" ({len(skipped)} skipped for their type)" if skipped else ""),
            "supported: .txt .md .html .csv .json .jsonl .pdf",
        )
    backend.get_kb(kb)  # unknown KB: fail before reading anything
    batch = new_id("up")
    try:
        for file in files:
            doc = document_path(file, root)
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {file}: {exc.strerror}") from None
            if backend.kind == "http" and len(data) > PIECE_BYTES:  # as rf kb upload: big files in pieces
                for index, start in enumerate(range(0, len(data), PIECE_BYTES)):
                    backend.kb_upload_piece(kb, batch, doc, index, {doc: data[start : start + PIECE_BYTES]})
                backend.kb_upload(kb, {}, None, batch, [doc])
            else:
                backend.kb_upload(kb, {doc: data}, None, batch)
        return backend.kb_commit(kb, batch), len(skipped)
    except BaseException:
        try:
            backend.kb_abort(kb, batch)
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise


class KBSearchModal(FormModal):
    """Search a knowledge base; the hits (with scores) are listed below the box."""

    SUBMIT_LABEL = "Search"

    def __init__(self, kb: str) -> None:
        super().__init__(classes="form wide")
        self.kb = kb
        self.TITLE_TEXT = f"Search knowledge base {kb}"
        self.result: KBSearchResult | None = None

    def compose_form(self) -> ComposeResult:
        yield Label("Query", classes="field-label")
        yield Input(placeholder="what are you looking for?", id="query")
        yield self.field_error("query")
        yield Static("", id="hits")

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        query = self.query_one("#query", Input).value.strip()
        if not query:
            self.show_error("query", "Type something to search for.")
            return
        backend, kb = self.rf.backend, self.kb
        self.set_busy(True)
        run_call(self, lambda: backend.search_kb(kb, query, k=5), self.show_hits, failed=self.backend_failed("query"))

    def show_hits(self, result: KBSearchResult) -> None:
        self.set_busy(False)
        self.result = result
        if not result.hits:
            self.query_one("#hits", Static).update(Text("No hits.", style="dim"))
            return
        lines: list[Text | str] = []
        for n, hit in enumerate(result.hits, 1):
            lines.append(
                Text.assemble(
                    (f"{n}. {hit.path}", "bold"),
                    f"  #{hit.chunk}  ",
                    (f"score {hit.score:.3f}", "#f59e0b"),
                    (f" (vector {hit.vector_score:.2f}, lexical {hit.lexical_score:.2f})", "dim"),
                    "\n   ",
                    one_line(hit.text, 100),
                )
            )
        footer = Text(f"{len(result.hits)} hits in {result.took_ms:.0f} ms ({result.embedder})", style="dim")
        self.query_one("#hits", Static).update(
            Text("\n").join([*(Text(x) if isinstance(x, str) else x for x in lines), footer])
        )


class KBUploadModal(FormModal):
    """Upload a file or a folder to a knowledge base (one all-or-nothing batch)."""

    SUBMIT_LABEL = "Upload"

    def __init__(self, kb: str, root: Path | None) -> None:
        super().__init__(classes="form")
        self.kb = kb
        self.root = root
        self.TITLE_TEXT = f"Upload to knowledge base {kb}"

    def compose_form(self) -> ComposeResult:
        yield Static(
            "A file or a folder (.txt .md .html .csv .json .jsonl .pdf); unchanged files are skipped. "
            "Knowledge bases are shared: production agents see the documents as soon as the upload completes.",
            classes="field-help",
        )
        yield Label("Path", classes="field-label")
        yield Input(placeholder="./docs", id="path")
        yield self.field_error("path")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        text = self.query_one("#path", Input).value.strip()
        if not text:
            self.show_error("path", "A file or folder is required.")
            return
        path = Path(text).expanduser()
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        backend, kb, root = self.rf.backend, self.kb, self.root
        self.set_busy(True)
        run_call(
            self,
            lambda: upload_path(backend, kb, path, root),
            self.dismiss,
            failed=self.backend_failed("path"),
            group="save",
        )


class KBCreateForm(FormModal):
    """A new knowledge base: what ``rf kb create`` takes (name, embedder, chunk size, overlap,
    description). Knowledge bases are shared: the dialog says production sees it too."""

    TITLE_TEXT = "New knowledge base (shared)"
    SUBMIT_LABEL = "Create"

    def __init__(self) -> None:
        super().__init__(classes="form")

    def compose_form(self) -> ComposeResult:
        from rf.kb import chunking

        yield Static(
            "Knowledge bases are shared: production agents see this one too, and can search it as soon "
            "as it has documents.",
            classes="field-help",
        )
        yield Label("Name", classes="field-label")
        yield Input(placeholder="e.g. docs", id="name")
        yield self.field_error("name")
        yield Label("Embedder: default (offline) or provider:NAME:MODEL", classes="field-label")
        yield Input("default", id="embedder")
        yield self.field_error("embedder")
        yield Label("Chunk size (characters)", classes="field-label")
        yield Input(str(chunking.DEFAULT_CHUNK_SIZE), id="chunk-size")
        yield self.field_error("chunk-size")
        yield Label("Overlap (characters shared by consecutive chunks)", classes="field-label")
        yield Input(str(chunking.DEFAULT_OVERLAP), id="overlap")
        yield self.field_error("overlap")
        yield Label("Description (optional)", classes="field-label")
        yield Input(placeholder="what it holds", id="description")
        yield self.field_error("form")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def submit(self) -> None:
        values = {f: self.query_one(f"#{f}", Input).value.strip()
                  for f in ("name", "embedder", "chunk-size", "overlap", "description")}
        numbers: dict[str, int] = {}
        ok = True
        if not values["name"]:
            self.show_error("name", "A name is required.")
            ok = False
        for field in ("chunk-size", "overlap"):
            try:
                numbers[field] = int(values[field])
            except ValueError:
                self.show_error(field, "A whole number of characters.")
                ok = False
        if not ok:
            return
        backend = self.rf.backend

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            lowered = exc.message.lower()
            where = ("chunk-size" if "chunk-size" in lowered else "overlap" if "overlap" in lowered
                     else "embedder" if "embed" in lowered or "provider" in lowered
                     else "name" if "name" in lowered or "already" in lowered else "form")
            self.show_error(where, _message(exc))
            return True

        self.set_busy(True)
        run_call(
            self,
            lambda: backend.create_kb(values["name"], values["embedder"] or "default", numbers["chunk-size"],
                                      numbers["overlap"], values["description"]),
            self.dismiss, failed=failed, group="save",
        )


class KnowledgeView(ListView):
    TITLE = "Knowledge"
    KEY = "knowledge"
    GROUP = "Shared"
    REQUIRES = ("list_kbs",)
    LIST_METHOD = "list_kbs"
    COLUMNS = ("name", "embedder", "documents", "chunks", "description")
    EMPTY_TEXT = "No knowledge bases yet — press n to create one (or rf kb create NAME), then u to upload files."
    NOUN = "knowledge base"
    WRITE_ACTIONS = frozenset({"upload", "new_kb"})  # searching only reads: offered in production too
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search", key_display="/"),
        Binding("u", "upload", "Upload"),
        Binding("n", "new_kb", "New knowledge base"),
    ]

    def selected_name(self) -> str | None:
        item = next((i for i in self.items if self.key_of(i) == self.place), self.items[0] if self.items else None)
        return None if item is None else self.key_of(item)

    def action_search(self) -> None:
        name = self.selected_name()
        if name is None:
            self.rf.notify("Create a knowledge base first: rf kb create NAME", severity="warning")
            return
        self.app.push_screen(KBSearchModal(name))

    def action_new_kb(self) -> None:
        if self.refuse_in_production():
            return

        def created(change: Any) -> None:
            if change is None:
                return
            self.place = change.kb.name
            self.rf.notify(
                f"Knowledge base {change.kb.name} created (shared: production sees it too). Press u to upload files.",
                title="Created", markup=False,
            )
            self.reload()

        self.app.push_screen(KBCreateForm(), created)

    def action_upload(self) -> None:
        if self.refuse_in_production():
            return
        name = self.selected_name()
        if name is None:
            self.rf.notify("Create a knowledge base first: press n (or rf kb create NAME)", severity="warning")
            return
        root = self.rf.workspace.root if self.rf.workspace is not None else None

        def uploaded(answer: tuple[KBUploadResult, int] | None) -> None:
            if answer is None:
                return
            result, skipped = answer
            counts: dict[str, int] = {}
            for f in result.files:
                counts[f.status] = counts.get(f.status, 0) + 1
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no files"
            message = f"{summary}; +{result.chunks_added} / -{result.chunks_removed} chunks"
            if skipped:
                message += f"; {skipped} skipped for their type"
            self.rf.notify(message, title=f"Uploaded to {name}", markup=False)
            self.reload()

        self.app.push_screen(KBUploadModal(name, root), uploaded)

    def commands(self) -> Iterable[Command]:
        if not self.read_only:
            yield Command("New knowledge base", self.action_new_kb, "Shared: production sees it too (key n)")
        if not self.items:
            return
        yield Command("Search the selected knowledge base", self.action_search, "Hybrid search, top 5 (key /)")
        if not self.read_only:
            yield Command("Upload to the selected knowledge base", self.action_upload, "A file or a folder (key u)")


# ------------------------------------------------------------ data sources


class DataQueryModal(FormModal):
    """One read-only SQL query on a data source; the rows in a table below."""

    SUBMIT_LABEL = "Run"

    def __init__(self, source: str) -> None:
        super().__init__(classes="form wide")
        self.source = source
        self.TITLE_TEXT = f"Query data source {source}"
        self.result: DataQueryResult | None = None

    def compose_form(self) -> ComposeResult:
        yield Label(f"SQL (read-only; the source is the table {self.source}; at most 100 rows)", classes="field-label")
        yield Input(f"SELECT * FROM {self.source}", id="sql")
        yield self.field_error("sql")
        yield Static("", id="query-summary")
        table: DataTable[str] = Table(id="rows-table", zebra_stripes=True)
        table.display = False
        yield table

    def on_mount(self) -> None:
        self.query_one("#sql", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        sql = self.query_one("#sql", Input).value.strip()
        if not sql:
            self.show_error("sql", "Type a SELECT statement.")
            return
        backend, source = self.rf.backend, self.source
        self.set_busy(True)
        run_call(
            self, lambda: backend.query_data(source, sql, limit=100), self.show_rows, failed=self.backend_failed("sql")
        )

    def show_rows(self, result: DataQueryResult) -> None:
        self.set_busy(False)
        self.result = result
        table = self.query_one("#rows-table", DataTable)
        table.clear(columns=True)
        for column in result.columns:
            table.add_column(column, key=column)
        for row in result.rows:
            table.add_row(*(one_line("—" if row.get(c) is None else str(row.get(c)), 40) for c in result.columns))
        table.display = True
        more = " (more rows exist)" if result.truncated else ""
        self.query_one("#query-summary", Static).update(
            Text(f"{result.row_count} rows{more} in {result.took_ms:.0f} ms", style="dim")
        )


class DataSourceForm(FormModal):
    """Register a file (csv / parquet / json) as a data source."""

    TITLE_TEXT = "Add a data source (file)"
    SUBMIT_LABEL = "Add"

    def __init__(self, root: Path | None) -> None:
        super().__init__(classes="form")
        self.root = root

    def compose_form(self) -> ComposeResult:
        yield Static(
            "Data sources are shared by both environments; the file is checked before anything is stored.",
            classes="field-help",
        )
        yield Label("Name", classes="field-label")
        yield Input(placeholder="e.g. orders", id="name")
        yield self.field_error("name")
        yield Label("File (.csv .parquet .json)", classes="field-label")
        yield Input(placeholder="./data/orders.csv", id="path")
        yield self.field_error("path")
        yield self.field_error("form")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def submit(self) -> None:
        ok = True
        name = self.query_one("#name", Input).value.strip()
        if not name:
            self.show_error("name", "A name is required.")
            ok = False
        text = self.query_one("#path", Input).value.strip()
        if not text:
            self.show_error("path", "A file is required.")
            ok = False
        if not ok:
            return
        path = Path(text).expanduser()
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        backend = self.rf.backend

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            lowered = exc.message.lower()
            where = "name" if "name" in lowered or "already" in lowered else "path"
            self.show_error(where, _message(exc))
            return True

        self.set_busy(True)
        run_call(
            self, lambda: backend.add_data_source(name, "file", str(path)), self.dismiss, failed=failed, group="save"
        )


class DataSourcesView(ListView):
    TITLE = "Data sources"
    KEY = "data"
    GROUP = "Shared"
    REQUIRES = ("list_data_sources",)
    LIST_METHOD = "list_data_sources"
    COLUMNS = ("name", "kind", "location", "description")
    EMPTY_TEXT = "No data sources yet — press n to add a file (or rf data add NAME …)"
    NOUN = "data source"
    WRITE_ACTIONS = frozenset({"add_source"})  # queries are read-only: offered in production too
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "query", "Query", key_display="/"),
        Binding("n", "add_source", "Add data source"),
    ]

    def selected_name(self) -> str | None:
        item = next((i for i in self.items if self.key_of(i) == self.place), self.items[0] if self.items else None)
        return None if item is None else self.key_of(item)

    def action_query(self) -> None:
        name = self.selected_name()
        if name is None:
            self.rf.notify("Add a data source first (key n).", severity="warning")
            return
        self.app.push_screen(DataQueryModal(name))

    def action_add_source(self) -> None:
        if self.refuse_in_production():
            return
        root = self.rf.workspace.root if self.rf.workspace is not None else None

        def added(change: Any) -> None:
            if change is None:
                return
            self.place = change.source.name
            for warning in change.warnings:
                self.rf.notify(warning, severity="warning", markup=False)
            self.rf.notify(
                f"Data source {change.source.name} added ({change.source.kind}).", title="Added", markup=False
            )
            self.reload()

        self.app.push_screen(DataSourceForm(root), added)

    def commands(self) -> Iterable[Command]:
        if not self.read_only:
            yield Command("Add a data source", self.action_add_source, "A csv / parquet / json file (key n)")
        if self.items:
            yield Command("Query the selected data source", self.action_query, "Read-only SQL, 100 rows (key /)")
