"""Prompts: draft (staging) and published (production) versions, history, side-by-side diff, editor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Label, Static, TabbedContent, TabPane, TextArea

from rf.errors import NotFound, RfError
from rf.models import DeleteResult, Prompt, PromptDiff, PromptSaveResult, PromptVersion
from rf.tui import render
from rf.tui.calls import run_call
from rf.tui.format import ENV_COLORS, ago, one_line, plural
from rf.tui.modals import ConfirmModal, FormModal
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table


@dataclass
class PromptDetail:
    name: str
    version: PromptVersion | None  #: this environment's version (None: not published)
    history: list[PromptVersion] = field(default_factory=list)
    diff: PromptDiff | None = None


class PromptEditor(FormModal):
    """Edit a prompt's text (saves a new draft version) or create a prompt."""

    SUBMIT_LABEL = "Save draft"

    def __init__(self, name: str | None = None, text: str = "", version: int | None = None) -> None:
        super().__init__(classes="form wide")
        self.prompt = name
        self.initial = text
        self.TITLE_TEXT = (
            f"Edit prompt {name} (draft v{version}) — saving makes a new draft version in staging"
            if name
            else "New prompt (staging) — version 1 becomes the draft"
        )

    def compose_form(self) -> ComposeResult:
        if self.prompt is None:
            yield Label("Name", classes="field-label")
            yield Input(placeholder="e.g. support-system", id="name")
            yield self.field_error("name")
        yield Label("Text", classes="field-label")
        yield Static(
            "Use {{variable}} for values agents pass to ctx.prompts.render. ctrl+s saves, escape cancels.",
            classes="field-help",
        )
        yield TextArea(self.initial, id="text", soft_wrap=True, show_line_numbers=True)
        yield self.field_error("text")
        yield Label("Message", classes="field-label")
        yield Input(placeholder="what changed (optional)", id="message")
        yield self.field_error("message")

    def on_mount(self) -> None:
        (self.query_one("#name", Input) if self.prompt is None else self.query_one("#text", TextArea)).focus()

    def submit(self) -> None:
        from rf.config import check_name

        text = self.query_one("#text", TextArea).text
        message = self.query_one("#message", Input).value.strip()
        name = self.prompt
        ok = True
        if name is None:
            name = self.query_one("#name", Input).value.strip()
            if not name:
                self.show_error("name", "A name is required.")
                ok = False
            else:
                try:
                    check_name("prompt", name)
                except RfError as exc:
                    self.show_error("name", exc.message + (f" — {exc.hint}" if exc.hint else ""))
                    ok = False
        if not text.strip():
            self.show_error("text", "The text is empty: a prompt needs some text.")
            ok = False
        if not ok:
            return
        backend = self.rf.backend
        creating = self.prompt is None
        prompt_name = name

        def save() -> PromptSaveResult:
            from rf.config import git_author

            if creating:
                return backend.create_prompt(prompt_name, text, git_author(), message)
            return backend.set_prompt(prompt_name, text, git_author(), message)

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if isinstance(exc, RfError):
                field_name = "name" if creating and "exists" in exc.message else "text"
                self.show_error(field_name, exc.message + (f" — {exc.hint}" if exc.hint else ""))
                return True
            return False

        self.set_busy(True)
        run_call(self, save, self.dismiss, failed=failed, group="save")


class PromptsView(View):
    TITLE = "Prompts"
    KEY = "prompts"
    GROUP = "Build"
    CSS_FILE = "views/prompts.tcss"
    REQUIRES = ("list_prompts", "get_prompt", "prompt_history", "diff_prompt")
    WRITE_ACTIONS = frozenset({"edit", "new", "delete"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "edit", "Edit draft"),
        Binding("n", "new", "New prompt"),
        Binding("v", "next_tab", "Text/history/diff"),
        Binding("delete", "delete", "Delete", key_display="del"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[Prompt] = []
        self.place: str | None = None
        self.detail: PromptDetail | None = None
        self._detail_for: tuple[str, str, int | None, int | None] | None = None

    def compose_view(self) -> ComposeResult:
        table: DataTable[str | Text] = Table(id="prompts-table", cursor_type="row", zebra_stripes=True)
        table.add_column("prompt", key="prompt")
        table.add_column(Text("draft", style=f"bold {ENV_COLORS['staging']}"), key="draft")
        table.add_column(Text("published", style=f"bold {ENV_COLORS['production']}"), key="published")
        table.add_column("", key="status")
        table.add_column("variables", key="variables")
        table.add_column("updated", key="updated")
        yield table
        yield Empty("", id="prompts-empty")
        with TabbedContent(initial="prompt-text-tab", id="prompt-tabs", classes="detail"):
            with TabPane("Text", id="prompt-text-tab"), VerticalScroll():
                yield Static("", id="prompt-text")
            with TabPane("History", id="prompt-history-tab"), VerticalScroll():
                yield Static("", id="prompt-history")
            with TabPane("Diff (published → draft)", id="prompt-diff-tab"), VerticalScroll():
                yield Static("", id="prompt-diff")

    # ------------------------------------------------------------ data
    def reload(self) -> None:
        self.call(self.backend.list_prompts, self.show_prompts)

    def show_prompts(self, prompts: list[Prompt]) -> None:
        table = self.query_one("#prompts-table", DataTable)
        keep = self.place or selected_key(table)
        index = table.cursor_row
        self.prompts = prompts
        now = self.now()
        table.clear()
        for p in prompts:
            if p.draft_version is None:
                status = Text("deleted in staging: removal to publish", style="yellow")
            elif p.published_version is None:
                status = Text("never published", style="yellow")
            elif p.published_version != p.draft_version:
                status = Text("draft not published", style=ENV_COLORS["staging"])
            else:
                status = Text("in sync", style="dim")
            mine = self.env == "staging"
            table.add_row(
                Text(p.name, style="bold"),
                Text(f"v{p.draft_version}" if p.draft_version else "deleted",
                     style=f"bold {ENV_COLORS['staging']}" if mine else ""),
                Text(
                    f"v{p.published_version}" if p.published_version else "—",
                    style=f"bold {ENV_COLORS['production']}" if not mine else "",
                ),
                status,
                Text(one_line(", ".join(p.variables) or "—", 30)),
                ago(p.updated_at, now),
                key=p.name,
            )
        restore_cursor(table, keep, index)
        empty = self.query_one("#prompts-empty", Empty)
        empty.update(
            "No prompts yet — press n to create one (or rf prompts create NAME --file FILE)."
            if self.env == "staging"
            else "No prompts yet — create them in staging (press e, then n), then publish from Releases."
        )
        empty.set_class(not prompts, "-shown")
        table.display = bool(prompts)
        self.query_one("#prompt-tabs", TabbedContent).display = bool(prompts)
        pending = sum(1 for p in prompts if p.published_version != p.draft_version)  # deleted ones too
        self.set_subtitle(
            plural(len(prompts), "prompt")
            + (f" · {pending} with unpublished drafts" if pending else "")
            + f" · showing {'draft' if self.env == 'staging' else 'published'} versions"
        )
        self.load_detail(force=True)
        self.painted()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "prompts-table" and event.row_key.value is not None:
            self.place = str(event.row_key.value)
            self.load_detail()

    def selected(self) -> Prompt | None:
        key = self.place or selected_key(self.query_one("#prompts-table", DataTable))
        return next((p for p in self.prompts if p.name == key), None)

    def load_detail(self, force: bool = False) -> None:
        p = self.selected()
        if p is None:
            self.detail = None
            return
        marker = (p.name, self.env, p.draft_version, p.published_version)
        if marker == self._detail_for and not force:
            return
        self._detail_for = marker
        backend, env = self.backend, self.env

        def fetch() -> PromptDetail:
            try:
                version: PromptVersion | None = backend.get_prompt(p.name, env)
            except NotFound:
                version = None  # production: never published
            return PromptDetail(p.name, version, backend.prompt_history(p.name), backend.diff_prompt(p.name))

        self.call(fetch, self.show_detail, group="detail")

    def show_detail(self, d: PromptDetail) -> None:
        self.detail = d
        self.query_one("#prompt-text", Static).update(self.render_text(d))
        self.query_one("#prompt-history", Static).update(self.render_history(d))
        if d.diff is not None and d.diff.deleted:
            diff: RenderableType = Text(
                f"prompt {d.name}: deleted in staging — publishing removes "
                f"v{d.diff.published_version} from production." if d.diff.changed else
                f"prompt {d.name}: deleted in staging; production has no version either.", style="yellow")
        else:
            diff = render.prompt_diff(d.diff) if d.diff else ""
        self.query_one("#prompt-diff", Static).update(diff)

    def render_text(self, d: PromptDetail) -> RenderableType:
        if d.version is None and self.env == "staging":
            return Text.assemble(
                (d.name, "bold"),
                " was deleted in staging (archived): its versions stay readable in History.\n",
                ("Production keeps its version until the removal is published from Releases.", "dim"),
            )
        if d.version is None:
            return Text.assemble(
                (d.name, "bold"),
                " is not published: production has no version of it yet.\n",
                ("Publish the draft from Releases (key 4).", "dim"),
            )
        v = d.version
        which = "draft" if self.env == "staging" else "published"
        head = Text.assemble(
            (d.name, "bold"),
            f"  v{v.version} ({which} · {self.env})  ",
            (f"by {v.author} · {v.message or 'no message'}", "dim"),
        )
        variables = Text("variables: " + (", ".join(v.variables) or "none"), style="dim")
        hint = Text("i edits the draft (saves a new version)", style="dim") if not self.read_only else Text("")
        return Group(head, variables, hint, Text(""), Text(v.text))

    def render_history(self, d: PromptDetail) -> RenderableType:
        table = render.grid(header=True)
        table.add_column("version", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("author", style="dim")
        table.add_column("message")
        table.add_column("when", style="dim", no_wrap=True)
        now = self.now()
        for v in d.history:
            marks = Text()
            if v.draft:
                marks.append("draft ", style=f"bold {ENV_COLORS['staging']}")
            if v.published:
                marks.append("published", style=f"bold {ENV_COLORS['production']}")
            table.add_row(f"v{v.version}", marks, v.author, one_line(v.message or "—", 40), ago(v.created_at, now))
        return table

    # ------------------------------------------------------------ actions
    def action_next_tab(self) -> None:
        tabs = self.query_one("#prompt-tabs", TabbedContent)
        order = ["prompt-text-tab", "prompt-history-tab", "prompt-diff-tab"]
        tabs.active = order[(order.index(tabs.active) + 1) % len(order)] if tabs.active in order else order[0]

    def action_edit(self) -> None:
        if self.refuse_in_production():
            return
        p = self.selected()
        if p is None:
            self.action_new()
            return
        backend = self.backend

        def open_editor(v: PromptVersion) -> None:
            self.app.push_screen(PromptEditor(p.name, v.text, v.version), self.saved)

        self.call(lambda: backend.get_prompt(p.name, "staging"), open_editor, group="edit")

    def action_new(self) -> None:
        if self.refuse_in_production():
            return
        self.app.push_screen(PromptEditor(), self.saved)

    def action_delete(self) -> None:
        """Delete (archive) the prompt in staging at once; its removal from production is a release item."""
        if self.refuse_in_production():
            return
        p = self.selected()
        if p is None or p.draft_version is None:
            self.rf.notify("Nothing to delete in staging: this prompt has no draft there.", severity="warning")
            return
        backend = self.backend
        where = (f"Production keeps v{p.published_version} until you publish its removal from Releases."
                 if p.published_version is not None else "It was never published: production has nothing to remove.")

        def confirmed(ok: bool | None) -> None:
            if not ok:
                return

            def done(result: DeleteResult) -> None:
                self.rf.notify(
                    f"Deleted prompt {p.name} in staging (archived)."
                    + (" Its removal from production waits in Releases." if result.item is not None else ""),
                    title="Deleted",
                    markup=False,
                )
                for w in result.warnings:
                    self.rf.notify(w, severity="warning", markup=False)
                self.reload()

            self.call(lambda: backend.delete_prompt(p.name), done, group="delete")

        self.app.push_screen(
            ConfirmModal(
                f"Delete prompt {p.name} from staging?",
                Text(f"Staging loses its draft at once; all {plural(p.versions, 'version')} stay readable "
                     f"(History).\n\n{where}"),
                confirm="Delete",
                danger=True,
            ),
            confirmed,
        )

    def saved(self, result: PromptSaveResult | None) -> None:
        if result is None:
            return
        if result.created:
            self.place = result.name
            self.rf.notify(
                f"Saved {result.name} v{result.version.version} as the staging draft. Publish it from Releases.",
                title="Draft saved",
                markup=False,
            )
        else:
            self.rf.notify(
                f"{result.name}: the text equals draft v{result.version.version} — nothing saved.", markup=False
            )
        self.reload()

    def commands(self) -> Iterable[Command]:
        if not self.read_only:
            yield Command("New prompt", self.action_new, "Create a prompt in staging (key n)")
            for p in self.prompts:
                yield Command(f"Edit prompt {p.name}", partial(self._edit, p.name), "Save a new draft version")
                if p.draft_version is not None:
                    yield Command(f"Delete prompt {p.name} from staging", partial(self._delete, p.name),
                                  "Archive it; production's removal becomes a release item")

    def _delete(self, name: str) -> None:
        self.place = name
        restore_cursor(self.query_one("#prompts-table", DataTable), name)
        self.action_delete()

    def _edit(self, name: str) -> None:
        self.place = name
        restore_cursor(self.query_one("#prompts-table", DataTable), name)
        self.action_edit()


__all__ = ["PromptEditor", "PromptsView"]
