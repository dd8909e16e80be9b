"""Modal screens: confirmations, help, and the base of small forms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from rf.errors import RfError
from rf.tui.widgets import RfFooter

if TYPE_CHECKING:
    from rf.tui.app import RfApp


class ConfirmModal(ModalScreen[bool]):
    """Show what will happen (a diff, a plan) and ask before doing it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("y", "confirm", "Confirm"),
    ]

    def __init__(
        self, title: str, body: RenderableType | str, *, confirm: str = "Confirm", danger: bool = False, note: str = ""
    ) -> None:
        super().__init__(classes="confirm")
        self._title = title
        self._body = body
        self._confirm = confirm
        self._danger = danger
        self._note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._title, id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-body"):
                yield Static(self._body, markup=isinstance(self._body, str))
            if self._note:
                yield Static(self._note, id="dialog-note", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self._confirm, id="confirm", variant="error" if self._danger else "success")
        yield RfFooter()

    def on_mount(self) -> None:
        self.query_one("#confirm", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_confirm(self) -> None:
        self.dismiss(True)


class ChoiceModal(ModalScreen[str | None]):
    """Like :class:`ConfirmModal`, with several ways to go ahead: dismisses with the chosen
    button's id (None on cancel). ``choices``: ``(id, label, variant)``, the last one focused."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: RenderableType | str, choices: list[tuple[str, str, str]],
                 *, note: str = "") -> None:
        super().__init__(classes="confirm")
        self._title = title
        self._body = body
        self._choices = choices
        self._note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._title, id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-body"):
                yield Static(self._body, markup=isinstance(self._body, str))
            if self._note:
                yield Static(self._note, id="dialog-note", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                for choice, label, variant in self._choices:
                    yield Button(label, id=f"choice-{choice}", variant=variant)  # type: ignore[arg-type]
        yield RfFooter()

    def on_mount(self) -> None:
        if self._choices:
            self.query_one(f"#choice-{self._choices[-1][0]}", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id or ""
        self.dismiss(button.removeprefix("choice-") if button.startswith("choice-") else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormModal(ModalScreen[Any]):
    """A small form: fields, an inline error line per field, Save/Cancel.

    Subclasses compose their fields inside :meth:`compose_form` and call
    :meth:`show_error` (by field) for bad input; nothing is saved while an
    error is shown. Errors the backend raises are shown with
    :meth:`backend_failed`, next to the field they name when known.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Save", priority=True),
    ]
    TITLE_TEXT = ""
    SUBMIT_LABEL = "Save"

    @property
    def rf(self) -> RfApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.TITLE_TEXT, id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-body"):
                yield from self.compose_form()
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.SUBMIT_LABEL, id="submit", variant="success")
        yield RfFooter()

    def compose_form(self) -> ComposeResult:
        yield from ()

    @staticmethod
    def field_error(field: str) -> Label:
        """The inline error line under a field (hidden while empty)."""
        return Label("", id=f"{field}-error", classes="field-error", markup=False)

    def show_error(self, field: str, message: str) -> None:
        label = self.query_one(f"#{field}-error", Label)
        label.update(message)
        label.set_class(bool(message), "-shown")

    def clear_errors(self) -> None:
        for label in self.query(".field-error").results(Label):
            label.update("")
            label.remove_class("-shown")

    def backend_failed(self, field: str) -> Any:
        """A ``failed`` callback for :func:`rf.tui.calls.run_call`: RfErrors inline under ``field``."""

        def failed(exc: Exception) -> bool:
            self.set_busy(False)
            if isinstance(exc, RfError):
                self.show_error(field, exc.message + (f" — {exc.hint}" if exc.hint else ""))
                return True
            return False

        return failed

    def set_busy(self, busy: bool) -> None:
        self.query_one("#submit", Button).disabled = busy

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        self.clear_errors()
        self.submit()

    def submit(self) -> None:
        """Validate, then save (override)."""


GLOBAL_KEYS = [
    ("e", "switch staging ⇄ production (or click the badge); the view keeps its place"),
    ("1–9, 0", "go to a view (or click the sidebar)"),
    ("ctrl+p", "command palette: every action"),
    ("r", "reload this view"),
    ("ctrl+b", "show / hide the sidebar (hidden at first on a terminal under 100 columns)"),
    ("tab / shift+tab", "move between the parts of a view"),
    ("?", "this help"),
    ("q", "quit"),
]


def help_renderable(view_title: str, view_keys: list[tuple[str, str]]) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def keys_table(rows: list[tuple[str, str]]) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
        table.add_column(style="bold #f59e0b", no_wrap=True, min_width=16)
        table.add_column()
        for key, what in rows:
            table.add_row(key, what)
        return table

    parts: list[RenderableType] = [
        Text("rf dashboard", style="bold"),
        Text.assemble(
            ("Staging", "bold #f59e0b"),
            " is where every edit happens. ",
            ("Production", "bold #10b981"),
            " is read-only: it changes only when you publish from Releases (or promote an agent).\n",
        ),
        Text("Everywhere", style="bold underline"),
        keys_table(GLOBAL_KEYS),
    ]
    if view_keys:
        parts += [Text(""), Text(view_title, style="bold underline"), keys_table(view_keys)]
    parts.append(
        Text(
            "\nLists refresh every 2 seconds: new executions, sessions and spans appear by themselves. "
            "Errors show up as notifications.",
            style="dim",
        )
    )
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, view_title: str, view_keys: list[tuple[str, str]]) -> None:
        super().__init__(classes="help")
        self._body = help_renderable(view_title, view_keys)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            with VerticalScroll(id="dialog-body"):
                yield Static(self._body)
            with Horizontal(id="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")
        yield RfFooter()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
