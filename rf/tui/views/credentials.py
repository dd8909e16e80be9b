"""Credentials (shared by both environments): names, storage, who uses them — never values.

Setting or rotating one affects production at once, so the form lists the
production users before anything is saved; like every edit it is offered in
staging only.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Label, Static

from rf.errors import RfError
from rf.models import Credential, CredentialUsage
from rf.tui import render
from rf.tui.calls import run_call
from rf.tui.format import ago, one_line, plural, when
from rf.tui.modals import FormModal
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table


class CredentialForm(FormModal):
    """Set a new credential or rotate one: masked value, description, the production-impact warning."""

    SUBMIT_LABEL = "Save"

    def __init__(self, name: str | None = None, description: str = "") -> None:
        super().__init__(classes="form")
        self.credential = name
        self.description = description
        self.TITLE_TEXT = f"Rotate credential {name}" if name else "New credential"
        self._usage_for: str | None = None

    def compose_form(self) -> ComposeResult:
        yield Static(
            "Credentials are shared by staging and production. The value goes to the OS keyring; "
            "rf never shows it again.",
            classes="field-help",
        )
        if self.credential is None:
            yield Label("Name", classes="field-label")
            yield Input(placeholder="e.g. crm-token", id="name")
            yield self.field_error("name")
        yield Label("Value", classes="field-label")
        yield Input(password=True, placeholder="the secret (hidden)", id="value")
        yield self.field_error("value")
        yield Label("Description", classes="field-label")
        yield Input(self.description, placeholder="optional", id="description")
        yield Static("", id="impact", classes="warning")

    def on_mount(self) -> None:
        if self.credential is None:
            self.query_one("#name", Input).focus()
        else:
            self.query_one("#value", Input).focus()
            self.load_usage(self.credential)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "name" and event.value.strip():
            self.load_usage(event.value.strip())

    def load_usage(self, name: str) -> None:
        from rf.config import check_name

        try:
            check_name("credential", name)
        except RfError:
            return
        if name == self._usage_for:
            return
        self._usage_for = name
        backend = self.rf.backend
        run_call(self, lambda: backend.credential_usage(name), self.show_usage, failed=lambda exc: True, group="usage")

    def show_usage(self, usage: CredentialUsage) -> None:
        impact = self.query_one("#impact", Static)
        if usage.production:
            impact.update(
                Text(
                    "⚠ Changing it affects production at once: "
                    + ", ".join(usage.production)
                    + ". Save only when the new value is ready for them.",
                    style="bold",
                )
            )
        elif usage.users:
            impact.update(
                Text("Not used by production yet: " + ", ".join(
                    f"{u.kind} {u.name}" + (" (prepared production settings)" if u.prepared else " (staging)")
                    for u in usage.users) + ".", style="dim")
            )
        else:
            impact.update(Text("Nothing uses it yet.", style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        from rf.config import check_name

        name = self.credential or self.query_one("#name", Input).value.strip()
        value = self.query_one("#value", Input).value
        ok = True
        if self.credential is None:
            if not name:
                self.show_error("name", "A name is required.")
                ok = False
            else:
                try:
                    check_name("credential", name)
                except RfError as exc:
                    self.show_error("name", exc.message)
                    ok = False
        if not value:
            self.show_error("value", "The value is empty.")
            ok = False
        elif "\n" in value or "\r" in value:
            self.show_error("value", "Credentials are single-line values.")
            ok = False
        if not ok:
            return
        description = self.query_one("#description", Input).value
        backend = self.rf.backend
        self.set_busy(True)
        run_call(
            self,
            lambda: backend.set_credential(name, value, description),
            self.dismiss,
            failed=self.backend_failed("value"),
            group="save",
        )


class CredentialsView(View):
    TITLE = "Credentials"
    KEY = "credentials"
    GROUP = "Shared"
    REQUIRES = ("list_credentials", "set_credential", "credential_usage")
    WRITE_ACTIONS = frozenset({"new", "rotate"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New credential"),
        Binding("o", "rotate", "Set/rotate"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.credentials: list[Credential] = []
        self.place: str | None = None

    def compose_view(self) -> ComposeResult:
        table: DataTable[str | Text] = Table(id="credentials-table", cursor_type="row", zebra_stripes=True)
        for label in ("credential", "description", "storage", "used by", "rotated"):
            table.add_column(label, key=label)
        yield table
        yield Empty("", id="credentials-empty")
        with VerticalScroll(classes="detail"):
            yield Static("", id="credential-detail")

    def reload(self) -> None:
        self.call(self.backend.list_credentials, self.show_credentials)

    def show_credentials(self, credentials: list[Credential]) -> None:
        table = self.query_one("#credentials-table", DataTable)
        keep = self.place or selected_key(table)
        index = table.cursor_row
        self.credentials = credentials
        now = self.now()
        table.clear()
        for c in credentials:
            table.add_row(
                Text(c.name, style="bold"),
                Text(one_line(c.description or "—", 16)),
                Text(one_line(c.storage, 20), style="dim"),
                Text(one_line(", ".join(c.used_by) or "—", 22)),
                ago(c.rotated_at or c.created_at, now),
                key=c.name,
            )
        restore_cursor(table, keep, index)
        empty = self.query_one("#credentials-empty", Empty)
        empty.update(
            "No credentials yet — "
            + (
                "press n to add one (or rf credentials set NAME)."
                if not self.read_only
                else "add them from staging (press e, then n)."
            )
        )
        empty.set_class(not credentials, "-shown")
        table.display = bool(credentials)
        self.set_subtitle(
            f"{plural(len(credentials), 'credential')} · shared by both environments · values never shown"
        )
        self.show_detail()
        self.painted()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.place = str(event.row_key.value)
            self.show_detail()

    def selected(self) -> Credential | None:
        key = self.place or selected_key(self.query_one("#credentials-table", DataTable))
        return next((c for c in self.credentials if c.name == key), None)

    def show_detail(self) -> None:
        c = self.selected()
        self.query_one("#credential-detail", Static).update(self.render_detail(c) if c else "")

    def render_detail(self, c: Credential) -> RenderableType:
        table = render.grid()
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("storage", Text(c.storage))
        table.add_row("created", when(c.created_at))
        table.add_row("rotated", when(c.rotated_at) if c.rotated_at else "never")
        table.add_row("used by", Text("\n".join(c.used_by) or "nothing yet"))
        tip = (
            Text("\no sets a new value (rotate) · the form lists production users first", style="dim")
            if not self.read_only
            else Text("")
        )
        return Group(Text.assemble((c.name, "bold"), "  ", (c.description, "dim"), "\n"), table, tip)

    def action_new(self) -> None:
        if not self.refuse_in_production():
            self.app.push_screen(CredentialForm(), self.saved)

    def action_rotate(self) -> None:
        if self.refuse_in_production():
            return
        c = self.selected()
        if c is None:
            self.action_new()
            return
        self.app.push_screen(CredentialForm(c.name, c.description), self.saved)

    def saved(self, result: Credential | None) -> None:
        if result is None:
            return
        self.place = result.name
        self.rf.notify(f"Credential {result.name} saved ({result.storage}).", title="Saved", markup=False)
        self.reload()

    def commands(self) -> Iterable[Command]:
        if self.read_only:
            return
        yield Command("New credential", self.action_new, "Store a secret in the keyring (key n)")
        for c in self.credentials:
            yield Command(
                f"Rotate credential {c.name}",
                partial(self._rotate, c.name),
                "Set a new value (affects production users at once)",
            )

    def _rotate(self, name: str) -> None:
        self.place = name
        self.action_rotate()
