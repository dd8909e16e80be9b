"""Connectors: this environment's instances, their settings (credential names, never values) and resources.

In staging, resources can be added, changed and removed; production gets
them by publishing the connector from Releases. Settings (base URL, auth,
credential, timeout...) belong to each environment: the settings form (s)
edits staging's at once, or prepares production's, which Releases then lists
as their own item (``connector:SLUG@production``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import partial
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Select, Static, TextArea

from rf.errors import RfError
from rf.models import Connector, ConnectorResource, ConnectorSettings
from rf.tui import render
from rf.tui.calls import run_call
from rf.tui.format import ago, one_line, plural
from rf.tui.modals import ConfirmModal, FormModal
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


def parse_json_field(text: str, what: str, *, object_only: bool = False) -> tuple[Any, str]:
    """(value, error) of an optional JSON field; empty text is (None, "")."""
    if not text.strip():
        return None, ""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, f"{what} is not valid JSON: {exc}"
    if object_only and not isinstance(value, dict):
        return None, f'{what} must be a JSON object (a JSON Schema such as {{"type": "object"}})'
    return value, ""


class ResourceForm(FormModal):
    """Add a resource to a staging connector, or change one."""

    def __init__(self, connector: str, resource: ConnectorResource | None = None) -> None:
        super().__init__(classes="form wide")
        self.connector = connector
        self.resource = resource
        self.SUBMIT_LABEL = "Save" if resource else "Add"
        self.TITLE_TEXT = (
            f"Edit resource {resource.slug} of connector {connector} (staging)"
            if resource
            else f"Add a resource to connector {connector} (staging)"
        )

    def compose_form(self) -> ComposeResult:
        r = self.resource
        yield self.field_error("form")
        if r is None:
            yield Label("Resource slug", classes="field-label")
            yield Input(placeholder="e.g. get-customer", id="slug")
            yield self.field_error("slug")
        with Horizontal(classes="field-row"):
            yield Select[str](
                [(m, m) for m in METHODS], value=r.method if r else "GET", allow_blank=False, id="method", compact=True
            )
            yield Input(r.path if r else "", placeholder="/customers/{id}", id="path", compact=True)
        yield self.field_error("path")
        yield Label("Description", classes="field-label")
        yield Input(r.description if r else "", id="description")
        yield Label("Parameters schema (JSON Schema object, optional)", classes="field-label")
        yield TextArea(
            json.dumps(r.params_schema, indent=2) if r and r.params_schema else "", id="schema", classes="json"
        )
        yield self.field_error("schema")
        yield Label("Mock response (JSON, optional)", classes="field-label")
        yield TextArea(
            json.dumps(r.mock_response, indent=2) if r and r.mock_response is not None else "",
            id="mock",
            classes="json",
        )
        yield self.field_error("mock")

    def on_mount(self) -> None:
        (self.query_one("#slug", Input) if self.resource is None else self.query_one("#path", Input)).focus()

    def submit(self) -> None:
        from rf.config import check_name

        ok = True
        slug = self.resource.slug if self.resource else self.query_one("#slug", Input).value.strip()
        if self.resource is None:
            if not slug:
                self.show_error("slug", "A slug is required.")
                ok = False
            else:
                try:
                    check_name("resource", slug)
                except RfError as exc:
                    self.show_error("slug", exc.message)
                    ok = False
        method_value = self.query_one("#method", Select).value
        method = method_value if isinstance(method_value, str) else "GET"
        path = self.query_one("#path", Input).value.strip()
        if not path.startswith("/"):
            self.show_error("path", "The path must start with / (e.g. /customers/{id}).")
            ok = False
        schema, error = parse_json_field(self.query_one("#schema", TextArea).text, "the schema", object_only=True)
        if error:
            self.show_error("schema", error)
            ok = False
        mock_text = self.query_one("#mock", TextArea).text
        mock, error = parse_json_field(mock_text, "the mock response")
        if error:
            self.show_error("mock", error)
            ok = False
        if not ok:
            return
        description = self.query_one("#description", Input).value
        backend, connector, existing = self.rf.backend, self.connector, self.resource

        def save() -> Connector:
            if existing is None:
                return backend.add_resource(
                    connector, slug, method, path, params_schema=schema, mock_response=mock, description=description
                )
            return backend.edit_resource(
                connector,
                slug,
                method=method,
                path=path,
                params_schema=schema,
                mock_response=mock,
                description=description,
                clear_schema=schema is None,
                clear_mock=not mock_text.strip(),
            )

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            text = exc.message + (f" — {exc.hint}" if exc.hint else "")
            lowered = exc.message.lower()
            where = (
                "path"
                if "path" in lowered or "method" in lowered
                else "schema"
                if "schema" in lowered
                else "mock"
                if "mock" in lowered
                else "slug"
                if existing is None and ("resource" in lowered and "already" in lowered)
                else "form"
            )
            self.show_error(where, text)
            return True

        self.set_busy(True)
        run_call(self, save, self.dismiss, failed=failed, group="save")


AUTH_KINDS = ("none", "api-key", "bearer", "basic")


class ConnectorForm(FormModal):
    """Create the staging instance of a new connector (production gets it by publishing)."""

    TITLE_TEXT = "New connector (staging)"
    SUBMIT_LABEL = "Create"

    def __init__(self) -> None:
        super().__init__(classes="form")

    def compose_form(self) -> ComposeResult:
        yield self.field_error("form")
        yield Label("Slug", classes="field-label")
        yield Input(placeholder="e.g. crm", id="slug")
        yield self.field_error("slug")
        yield Label("Base URL", classes="field-label")
        yield Input(placeholder="https://api.example.com/v1", id="base-url")
        yield self.field_error("base-url")
        yield Label("Auth", classes="field-label")
        yield Select[str]([(a, a) for a in AUTH_KINDS], value="none", allow_blank=False, id="auth", compact=True)
        yield Label("Credential name (not the value)", classes="field-label")
        yield Input(placeholder="e.g. crm-token (optional)", id="credential")
        yield self.field_error("credential")
        yield Label("Timeout (seconds)", classes="field-label")
        yield Input("30", id="timeout")
        yield self.field_error("timeout")

    def on_mount(self) -> None:
        self.query_one("#slug", Input).focus()

    def submit(self) -> None:
        ok = True
        slug = self.query_one("#slug", Input).value.strip()
        if not slug:
            self.show_error("slug", "A slug is required.")
            ok = False
        base_url = self.query_one("#base-url", Input).value.strip()
        if not base_url.startswith(("http://", "https://")):
            self.show_error("base-url", "The base URL must start with http:// or https://.")
            ok = False
        auth_value = self.query_one("#auth", Select).value
        auth = auth_value if isinstance(auth_value, str) else "none"
        credential = self.query_one("#credential", Input).value.strip() or None
        timeout_text = self.query_one("#timeout", Input).value.strip() or "30"
        try:
            timeout = float(timeout_text)
        except ValueError:
            self.show_error("timeout", "The timeout must be a number of seconds.")
            ok = False
        if not ok:
            return
        backend = self.rf.backend

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            text = exc.message + (f" — {exc.hint}" if exc.hint else "")
            lowered = exc.message.lower()
            where = (
                "slug"
                if "connector" in lowered and ("already" in lowered or "name" in lowered)
                else "base-url"
                if "url" in lowered
                else "credential"
                if "credential" in lowered
                else "timeout"
                if "timeout" in lowered
                else "form"
            )
            self.show_error(where, text)
            return True

        self.set_busy(True)
        run_call(
            self,
            lambda: backend.create_connector(slug, base_url, auth, credential, timeout_s=timeout),
            self.dismiss,
            failed=failed,
            group="save",
        )


class ConnectorSettingsForm(FormModal):
    """A connector's settings: staging's (saved at once) or production's (prepared here, published from Releases)."""

    SUBMIT_LABEL = "Save"

    def __init__(self, connector: Connector, target: str = "staging") -> None:
        super().__init__(classes="form")
        self.connector = connector
        self.target = target
        self.TITLE_TEXT = f"Settings of connector {connector.slug}"

    def _settings(self, target: str) -> dict[str, Any]:
        view = self.connector.settings
        if view is None:
            return {}
        if target == "production":
            return view.prepared or view.production or view.staging or {}
        return view.staging or {}

    def compose_form(self) -> ComposeResult:
        current = self._settings(self.target)
        yield self.field_error("form")
        yield Label("Settings of", classes="field-label")
        yield Select[str](
            [("staging (saved at once)", "staging"), ("production (prepared; a release item)", "production")],
            value=self.target, allow_blank=False, id="target", compact=True)
        yield Label("Base URL", classes="field-label")
        yield Input(current.get("base_url", ""), id="base-url")
        yield self.field_error("base-url")
        yield Label("Auth", classes="field-label")
        yield Select[str]([(a, a) for a in AUTH_KINDS], value=current.get("auth") or "none", allow_blank=False,
                          id="auth", compact=True)
        yield Label("Credential name (not the value)", classes="field-label")
        yield Input(current.get("credential") or "", placeholder="e.g. crm-token (optional)", id="credential")
        yield self.field_error("credential")
        yield Label("Timeout (seconds)", classes="field-label")
        yield Input(f"{current.get('timeout_s', 30):g}", id="timeout")
        yield self.field_error("timeout")

    def on_mount(self) -> None:
        self.query_one("#base-url", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "target" or not isinstance(event.value, str) or event.value == self.target:
            return
        self.target = event.value
        current = self._settings(self.target)
        self.query_one("#base-url", Input).value = current.get("base_url", "")
        self.query_one("#auth", Select).value = current.get("auth") or "none"
        self.query_one("#credential", Input).value = current.get("credential") or ""
        self.query_one("#timeout", Input).value = f"{current.get('timeout_s', 30):g}"
        self.clear_errors()

    def submit(self) -> None:
        base_url = self.query_one("#base-url", Input).value.strip()
        if not base_url.startswith(("http://", "https://")):
            self.show_error("base-url", "The base URL must start with http:// or https://.")
            return
        try:
            timeout = float(self.query_one("#timeout", Input).value.strip() or "30")
        except ValueError:
            self.show_error("timeout", "The timeout must be a number of seconds.")
            return
        auth_value = self.query_one("#auth", Select).value
        auth = auth_value if isinstance(auth_value, str) else "none"
        credential = self.query_one("#credential", Input).value.strip()
        backend, slug, target = self.rf.backend, self.connector.slug, self.target

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if not isinstance(exc, RfError):
                return False
            lowered = exc.message.lower()
            where = ("base-url" if "url" in lowered else "credential" if "credential" in lowered
                     else "timeout" if "timeout" in lowered else "form")
            self.show_error(where, exc.message + (f" — {exc.hint}" if exc.hint else ""))
            return True

        self.set_busy(True)
        run_call(
            self,
            lambda: (target, backend.edit_connector(slug, base_url=base_url, auth=auth, credential=credential,
                                                    timeout_s=timeout, target=target)),
            self.dismiss,
            failed=failed,
            group="save",
        )


class ConnectorsView(View):
    TITLE = "Connectors"
    KEY = "connectors"
    GROUP = "Build"
    CSS_FILE = "views/connectors.tcss"
    REQUIRES = ("list_connectors",)
    WRITE_ACTIONS = frozenset({"new_connector", "edit_settings", "add_resource", "edit_resource", "remove_resource",
                               "delete_connector"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_connector", "New connector"),
        Binding("s", "edit_settings", "Settings"),
        Binding("a", "add_resource", "Add resource"),
        Binding("m", "edit_resource", "Edit resource"),
        Binding("delete", "remove_resource", "Remove resource", key_display="del"),
        Binding("D", "delete_connector", "Delete connector"),
        Binding("tab", "focus_next_table", "Resources/connectors", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.connectors: list[Connector] = []
        self.place: str | None = None
        self.resource_place: str | None = None

    def compose_view(self) -> ComposeResult:
        table: DataTable[str | Text] = Table(id="connectors-table", cursor_type="row", zebra_stripes=True)
        for label in ("connector", "base URL", "auth", "credential", "resources", "mode", "updated"):
            table.add_column(label, key=label)
        yield table
        yield Empty("", id="connectors-empty")
        with Horizontal(id="connector-detail", classes="detail"):
            yield Static("", id="connector-config")
            resources: DataTable[str | Text] = Table(id="resources-table", cursor_type="row")
            for label in ("resource", "method", "path", "mock"):
                resources.add_column(label, key=label)
            yield resources

    def reload(self) -> None:
        backend, env = self.backend, self.env
        self.call(lambda: backend.list_connectors(env), self.show_connectors)

    def show_connectors(self, connectors: list[Connector]) -> None:
        table = self.query_one("#connectors-table", DataTable)
        keep = self.place or selected_key(table)
        index = table.cursor_row
        self.connectors = connectors
        now = self.now()
        table.clear()
        for c in connectors:
            table.add_row(
                Text(c.slug, style="bold"),
                Text(one_line(c.base_url, 36)),
                c.auth,
                Text(c.credential or "—", style="" if c.credential else "dim"),
                str(len(c.resources)),
                Text("mock", style="yellow") if c.mock else "live",
                ago(c.updated_at, now),
                key=c.slug,
            )
        restore_cursor(table, keep, index)
        empty = self.query_one("#connectors-empty", Empty)
        empty.update(
            f"No connectors in {self.env} yet — "
            + (
                "press n (or rf connectors create SLUG --base-url URL)."
                if self.env == "staging"
                else "create them in staging, then publish from Releases."
            )
        )
        empty.set_class(not connectors, "-shown")
        table.display = bool(connectors)
        self.query_one("#connector-detail", Horizontal).display = bool(connectors)
        self.set_subtitle(f"{plural(len(connectors), 'instance')} in {self.env}")
        self.show_detail()
        self.painted()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is None:
            return
        if event.data_table.id == "connectors-table":
            if self.place != str(event.row_key.value):
                self.place = str(event.row_key.value)
                self.resource_place = None
                self.show_detail()
        elif event.data_table.id == "resources-table":
            self.resource_place = str(event.row_key.value)

    def selected(self) -> Connector | None:
        key = self.place or selected_key(self.query_one("#connectors-table", DataTable))
        return next((c for c in self.connectors if c.slug == key), None)

    def selected_resource(self) -> ConnectorResource | None:
        c = self.selected()
        if c is None:
            return None
        key = self.resource_place or selected_key(self.query_one("#resources-table", DataTable))
        return next((r for r in c.resources if r.slug == key), None)

    def show_detail(self) -> None:
        c = self.selected()
        self.query_one("#connector-config", Static).update(self.render_config(c) if c else "")
        resources = self.query_one("#resources-table", DataTable)
        keep = self.resource_place
        resources.clear()
        for r in c.resources if c else []:
            resources.add_row(
                Text(r.slug, style="bold"),
                r.method,
                Text(r.path),
                "yes" if r.mock_response is not None else "—",
                key=r.slug,
            )
        restore_cursor(resources, keep)

    def render_config(self, c: Connector) -> RenderableType:
        table = render.grid()
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("environment", render.env_text(c.env))
        table.add_row("kind", c.kind)
        table.add_row("base URL", Text(c.base_url))
        table.add_row("auth", c.auth)
        table.add_row(
            "credential", Text(f"{c.credential} (name only; the value stays in the keyring)" if c.credential else "—")
        )
        if c.api_key_header or c.api_key_query:
            table.add_row(
                "api key in", Text(f"header {c.api_key_header}" if c.api_key_header else f"query ?{c.api_key_query}=")
            )
        table.add_row("headers", Text(", ".join(f"{k}: {v}" for k, v in c.headers.items()) or "—"))
        table.add_row("timeout", f"{c.timeout_s:g} s, {plural(c.retries, 'retry', 'retries')}")
        table.add_row("mode", "mock responses" if c.mock else "live calls")
        if c.settings is not None:
            self.settings_rows(table, c)
        tip = ("s: settings (staging's, or production's) · a adds a resource · m edits · del removes · "
               "tab moves between tables") if not self.read_only else ""
        return Group(Text.assemble((c.slug, "bold"), "\n"), table, Text(f"\n{tip}", style="dim"))

    @staticmethod
    def settings_rows(table: Any, c: Connector) -> None:
        """The other environment's base URL, and production's prepared settings when pending."""
        view: ConnectorSettings | None = c.settings
        if view is None:
            return
        other = "production" if c.env == "staging" else "staging"
        theirs = view.production if other == "production" else view.staging
        table.add_row(f"{other} URL", Text(theirs["base_url"] if theirs else "— (no instance)",
                                           style="" if theirs else "dim"))
        if view.pending:
            table.add_row("prepared", Text(view.summary + " — publish from Releases", style="yellow"))
        elif view.production is None and view.prepared is not None:
            table.add_row("prepared", Text(f"production: {view.prepared['base_url']} (used by the first publish)",
                                           style="yellow"))

    # ------------------------------------------------------------ actions
    def action_focus_next_table(self) -> None:
        tables = [self.query_one("#connectors-table", DataTable), self.query_one("#resources-table", DataTable)]
        focused = self.app.focused
        (tables[1] if focused is tables[0] else tables[0]).focus()

    def _done(self, what: str) -> Any:
        def done(result: Connector | None) -> None:
            if result is None:
                return
            self.rf.notify(
                f"{what} — publish the connector from Releases to change production.",
                title="Saved in staging",
                markup=False,
            )
            self.reload()

        return done

    def action_new_connector(self) -> None:
        if self.refuse_in_production():
            return

        def created(result: Connector | None) -> None:
            if result is None:
                return
            self.place = result.slug
            self._done(f"Connector {result.slug} created")(result)

        self.app.push_screen(ConnectorForm(), created)

    def action_edit_settings(self) -> None:
        if self.refuse_in_production():
            return
        c = self.selected()
        if c is None:
            self.rf.notify("Create a connector first (key n).", severity="warning")
            return

        def saved(answer: tuple[str, Connector] | None) -> None:
            if answer is None:
                return
            target, result = answer
            if target == "production":
                view = result.settings
                what = ("publish them from Releases (connector " + c.slug + "@production)" if view and view.pending
                        else "its first publish uses them" if view and view.production is None
                        else "production already has them")
                self.rf.notify(f"Production settings of {c.slug} prepared — {what}.", title="Prepared",
                               markup=False)
                self.reload()
                return
            self.rf.notify(f"Settings of {c.slug} saved in staging (production keeps its own).",
                           title="Saved in staging", markup=False)
            self.reload()

        self.app.push_screen(ConnectorSettingsForm(c), saved)

    def action_add_resource(self) -> None:
        if self.refuse_in_production():
            return
        c = self.selected()
        if c is None:
            self.rf.notify("Create a connector first: rf connectors create SLUG --base-url URL", severity="warning")
            return
        self.app.push_screen(ResourceForm(c.slug), self._done(f"Resource added to {c.slug}"))

    def action_edit_resource(self) -> None:
        if self.refuse_in_production():
            return
        c, r = self.selected(), self.selected_resource()
        if c is None or r is None:
            self.rf.notify("Select a resource first (tab moves to the resources table).", severity="warning")
            return
        self.app.push_screen(ResourceForm(c.slug, r), self._done(f"Resource {r.slug} of {c.slug} changed"))

    def action_remove_resource(self) -> None:
        if self.refuse_in_production():
            return
        c, r = self.selected(), self.selected_resource()
        if c is None or r is None:
            self.rf.notify("Select a resource first (tab moves to the resources table).", severity="warning")
            return
        backend = self.backend

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.resource_place = None
                run_call(
                    self,
                    lambda: backend.remove_resource(c.slug, r.slug),
                    self._done(f"Resource {r.slug} removed from {c.slug}"),
                    group="connectors:remove",
                )

        self.app.push_screen(
            ConfirmModal(
                f"Remove resource {r.slug} from connector {c.slug} (staging)?",
                Text(f"{r.method} {r.path}\nProduction keeps it until you publish."),
                confirm="Remove",
                danger=True,
            ),
            confirmed,
        )

    def action_delete_connector(self) -> None:
        if self.refuse_in_production():
            return
        c = self.selected()
        if c is None:
            self.rf.notify("No connector selected.", severity="warning")
            return
        backend, slug = self.backend, c.slug

        def deleted(result: Connector | None) -> None:
            if result is None:
                return
            self.place = None
            items = [i for i in backend.release_items() if i.kind == "connector" and i.name == slug]
            self.rf.notify(
                f"Connector {slug} deleted from staging."
                + (" Production keeps its instance until you publish its removal from Releases." if items else ""),
                title="Deleted in staging",
                markup=False,
            )
            self.reload()

        def confirmed(ok: bool | None) -> None:
            if ok:
                run_call(self, lambda: backend.delete_connector(slug), deleted, group="connectors:delete")

        in_production = any(p.slug == slug for p in backend.list_connectors("production"))
        self.app.push_screen(
            ConfirmModal(
                f"Delete connector {slug} from staging?",
                Text(f"{len(c.resources)} resource(s), base URL {c.base_url}.\n"
                     + ("Production keeps its instance until you publish its removal (Releases)."
                        if in_production else "Production never had it.")),
                confirm="Delete",
                danger=True,
            ),
            confirmed,
        )

    def commands(self) -> Iterable[Command]:
        if self.read_only:
            return
        yield Command("New connector", self.action_new_connector, "Create a staging connector (key n)")
        if self.connectors:
            yield Command("Edit the selected connector's settings", self.action_edit_settings,
                          "Staging's, or prepare production's (key s)")
            yield Command("Delete the selected connector", self.action_delete_connector,
                          "From staging at once; production's removal is a release item (key D)")
        for c in self.connectors:
            yield Command(f"Add a resource to connector {c.slug}", partial(self._add, c.slug), "Staging instance")

    def _add(self, slug: str) -> None:
        self.place = slug
        restore_cursor(self.query_one("#connectors-table", DataTable), slug)
        self.show_detail()
        self.action_add_resource()
