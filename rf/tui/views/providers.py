"""LLM providers (shared by both environments): list, detail, a test round trip; edits in staging."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static

from rf.errors import RfError
from rf.models import Provider, ProviderChange, ProviderTest
from rf.tui import render
from rf.tui.calls import run_call
from rf.tui.format import duration, one_line, plural, when
from rf.tui.modals import ConfirmModal, FormModal
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

KINDS = ("openai", "anthropic", "mock")


class ProviderForm(FormModal):
    SUBMIT_LABEL = "Add"
    TITLE_TEXT = "Add an LLM provider (shared: production agents can use it at once)"

    def compose_form(self) -> ComposeResult:
        yield Label("Name", classes="field-label")
        yield Input(placeholder="e.g. openai", id="name")
        yield self.field_error("name")
        yield Label("Kind", classes="field-label")
        yield Select[str]([(k, k) for k in KINDS], value="openai", allow_blank=False, id="kind")
        yield Label("Base URL (empty: the kind's official API)", classes="field-label")
        yield Input(placeholder="https://api.openai.com/v1", id="base_url")
        yield self.field_error("base_url")
        yield Label("Credential (name of the API key)", classes="field-label")
        yield Input(placeholder="e.g. openai-key", id="credential")
        yield self.field_error("credential")
        yield Label("Default model", classes="field-label")
        yield Input(placeholder="optional, e.g. gpt-4o-mini", id="model")
        yield self.field_error("form")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def submit(self) -> None:
        from rf.config import check_name

        name = self.query_one("#name", Input).value.strip()
        kind_value = self.query_one("#kind", Select).value
        kind = kind_value if isinstance(kind_value, str) else "openai"
        base_url = self.query_one("#base_url", Input).value.strip() or None
        credential = self.query_one("#credential", Input).value.strip() or None
        model = self.query_one("#model", Input).value.strip() or None
        try:
            check_name("provider", name)
        except RfError as exc:
            self.show_error("name", "A name is required." if not name else exc.message)
            return
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            self.show_error("base_url", "Use an http:// or https:// URL.")
            return
        backend = self.rf.backend

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            lowered = exc.message.lower()
            where = (
                "credential"
                if "credential" in lowered or "api key" in lowered
                else "base_url"
                if "url" in lowered
                else "name"
                if "exists" in lowered or "name" in lowered
                else "form"
            )
            self.show_error(where, exc.message + (f" — {exc.hint}" if exc.hint else ""))
            return True

        self.set_busy(True)
        run_call(
            self,
            lambda: backend.add_provider(name, kind, base_url, credential, model),
            self.dismiss,
            failed=failed,
            group="save",
        )


class ProvidersView(View):
    TITLE = "Providers"
    KEY = "providers"
    GROUP = "Shared"
    REQUIRES = ("list_providers",)
    WRITE_ACTIONS = frozenset({"add", "make_default", "remove"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "test", "Test"),
        Binding("n", "add", "Add"),
        Binding("D", "make_default", "Make default"),
        Binding("delete", "remove", "Remove", key_display="del"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.providers: list[Provider] = []
        self.place: str | None = None
        self.tests: dict[str, ProviderTest | str] = {}

    def compose_view(self) -> ComposeResult:
        table: DataTable[str | Text] = Table(id="providers-table", cursor_type="row", zebra_stripes=True)
        for label in ("provider", "kind", "model", "base URL", "credential", ""):
            table.add_column(label, key=label)
        yield table
        yield Empty("No providers.", id="providers-empty")
        with VerticalScroll(classes="detail"):
            yield Static("", id="provider-detail")

    def reload(self) -> None:
        self.call(self.backend.list_providers, self.show_providers)

    def show_providers(self, providers: list[Provider]) -> None:
        table = self.query_one("#providers-table", DataTable)
        keep = self.place or selected_key(table)
        index = table.cursor_row
        self.providers = providers
        table.clear()
        for p in providers:
            mark = (
                Text("default", style="bold #60a5fa")
                if p.default
                else Text("built-in", style="dim")
                if p.builtin
                else Text("")
            )
            table.add_row(
                Text(p.name, style="bold"),
                p.kind,
                Text(p.model or "—"),
                Text(one_line(p.base_url or "—", 34)),
                Text(p.credential or "—"),
                mark,
                key=p.name,
            )
        restore_cursor(table, keep, index)
        self.query_one("#providers-empty", Empty).set_class(not providers, "-shown")
        table.display = bool(providers)
        self.set_subtitle(f"{plural(len(providers), 'provider')} · shared by both environments")
        self.show_detail()
        self.painted()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.place = str(event.row_key.value)
            self.show_detail()

    def selected(self) -> Provider | None:
        key = self.place or selected_key(self.query_one("#providers-table", DataTable))
        return next((p for p in self.providers if p.name == key), None)

    def show_detail(self) -> None:
        p = self.selected()
        self.query_one("#provider-detail", Static).update(self.render_detail(p) if p else "")

    def render_detail(self, p: Provider) -> RenderableType:
        table = render.grid()
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("kind", p.kind)
        table.add_row("base URL", Text(p.base_url or "— (offline)"))
        table.add_row("credential", Text(p.credential or "—"))
        table.add_row("default model", Text(p.model or "—"))
        table.add_row("added", when(p.created_at) if p.created_at else "built in")
        uses = render.grid()
        uses.add_column()
        uses.add_column()
        uses.add_column(style="dim")
        for u in p.used_by:
            uses.add_row(render.env_text(u.env), u.agent, when(u.last_used_at))
        parts: list[RenderableType] = [
            Text.assemble((p.name, "bold"), "  ", ("default provider" if p.default else "", "#60a5fa"), "\n"),
            table,
            render.heading("\nUsed by"),
        ]
        parts.append(uses if p.used_by else Text("no agent has called it yet", style="dim"))
        result = self.tests.get(p.name)
        if isinstance(result, ProviderTest):
            parts += [
                render.heading("\nLast test"),
                Text(f"{result.model} answered in {duration(result.latency_ms)}: {one_line(result.text, 80)}"),
            ]
        elif isinstance(result, str):
            parts += [render.heading("\nLast test"), Text(result, style="#f87171")]
        return Group(*parts)

    def action_test(self) -> None:
        p = self.selected()
        if p is None:
            return
        backend = self.backend
        self.rf.notify(f"Testing {p.name}…", timeout=2)

        def done(result: ProviderTest) -> None:
            self.tests[p.name] = result
            self.rf.notify(f"{p.name} answered in {duration(result.latency_ms)}.", title="Provider works", markup=False)
            self.show_detail()

        def failed(exc: Exception) -> bool:
            self.tests[p.name] = str(getattr(exc, "message", exc))
            self.show_detail()
            return False

        self.call(lambda: backend.test_provider(p.name), done, failed=failed, group="test")

    def action_add(self) -> None:
        if not self.refuse_in_production():
            self.app.push_screen(ProviderForm(classes="form"), self.changed)

    def changed(self, change: ProviderChange | None) -> None:
        if change is None:
            return
        self.place = change.provider.name
        self.rf.notify(f"Provider {change.provider.name}: {change.action}.", title="Saved", markup=False)
        for w in change.warnings:
            self.rf.notify(w, severity="warning", markup=False)
        self.reload()

    def action_make_default(self) -> None:
        if self.refuse_in_production():
            return
        p = self.selected()
        if p is not None:
            backend = self.backend
            self.call(lambda: backend.set_default_provider(p.name), self.changed, group="default")

    def action_remove(self) -> None:
        if self.refuse_in_production():
            return
        p = self.selected()
        if p is None:
            return
        backend = self.backend

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.place = None
                self.call(lambda: backend.remove_provider(p.name), self.changed, group="remove")

        self.app.push_screen(
            ConfirmModal(
                f"Remove provider {p.name}?",
                Text("Providers are shared: production agents calling it fail at once."),
                confirm="Remove",
                danger=True,
            ),
            confirmed,
        )

    def commands(self) -> Iterable[Command]:
        for p in self.providers:
            yield Command(f"Test provider {p.name}", partial(self._test, p.name), "One real round trip")

    def _test(self, name: str) -> None:
        self.place = name
        self.action_test()
