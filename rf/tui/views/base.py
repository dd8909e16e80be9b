"""The base of every dashboard view (one per sidebar entry)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from rf import api
from rf.tui.calls import run_call

if TYPE_CHECKING:
    import datetime as _dt

    from textual.dom import DOMNode
    from textual.widget import Widget
    from textual.worker import Worker

    from rf.client import Backend
    from rf.tui.app import RfApp

T = TypeVar("T")


@dataclass
class Command:
    """One command palette entry a view offers."""

    title: str
    run: Callable[[], Any]
    help: str = ""


class View(Vertical):
    """A screen of the dashboard, shown in the main area next to the sidebar.

    Subclasses load their data with :meth:`call` (a thread worker) in
    :meth:`reload`, remember their place (the selected row's key) so a reload
    for the other environment keeps it, and list the actions that change
    state in ``WRITE_ACTIONS``: those are hidden while production is shown.
    """

    TITLE: ClassVar[str] = ""
    KEY: ClassVar[str] = ""
    GROUP: ClassVar[str] = ""
    LIVE: ClassVar[bool] = False  #: poll while visible (new executions, sessions, spans)
    WRITE_ACTIONS: ClassVar[frozenset[str]] = frozenset()  #: staging-only actions
    REQUIRES: ClassVar[tuple[str, ...]] = ()  #: Backend methods the view needs
    BANNER: ClassVar[str | None] = None  #: this view's text for the production banner (default: READ_ONLY_TEXT)
    CSS_FILE: ClassVar[str] = ""  #: the view's stylesheet, relative to rf/tui/

    def __init__(self) -> None:
        super().__init__(id=f"view-{self.KEY}", classes="view")
        self.loaded_env: str | None = None  #: the environment the data on screen belongs to

    # ------------------------------------------------------------ context
    @property
    def rf(self) -> RfApp:
        return cast("RfApp", self.app)

    @property
    def backend(self) -> Backend:
        return self.rf.backend

    @property
    def env(self) -> str:
        return self.rf.env

    @property
    def read_only(self) -> bool:
        return self.env == "production"

    def now(self) -> _dt.datetime:
        return self.rf.clock()

    @classmethod
    def missing(cls) -> list[str]:
        """Backend methods this view needs that this build does not offer."""
        return [name for name in cls.REQUIRES if name not in api.BY_NAME]

    @classmethod
    def available(cls) -> bool:
        return not cls.missing()

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static(self.TITLE, classes="view-title", id=f"{self.KEY}-title")
        if self.missing():
            yield Static(
                f"{self.TITLE} are not available in this build of rf (the backend has no {', '.join(self.missing())}).",
                classes="unavailable",
            )
            return
        yield from self.compose_view()

    def compose_view(self) -> ComposeResult:
        yield from ()

    def set_subtitle(self, text: str) -> None:
        self.query_one(f"#{self.KEY}-title", Static).update(Text.assemble((self.TITLE, "bold"), "  ", (text, "dim")))

    def on_mount(self) -> None:
        self.set_subtitle("")

    # ------------------------------------------------------------ lifecycle (called by the app)
    def activate(self) -> None:
        """The view became visible: load it (for the current environment) and focus it."""
        self.focus_default()
        if self.available():
            self.reload()

    def env_changed(self) -> None:
        """The environment switched while this view is visible: reload, keep the place."""
        self.refresh_bindings()
        if self.available():
            self.reload()

    def reload(self) -> None:
        """Fetch this view's data for ``self.env`` (override)."""

    def poll(self) -> None:
        """Live refresh every ~2 s while visible (LIVE views override with a cheap query)."""
        self.reload()

    def focus_default(self) -> None:
        if self.rf.current_view != self.KEY:
            return  # mounted ahead of time (warm-up) or hidden: never steal the focus
        for table in self.query(DataTable):
            if self._shown(table):
                table.focus()
                return
        # Nothing to list (an empty view): focus the view itself so its keys (n: new …) still work.
        self.can_focus = True
        self.focus()

    def _shown(self, widget: Widget) -> bool:
        """Whether ``widget`` and its containers up to this view are displayed."""
        node: DOMNode | None = widget
        while node is not None and node is not self:
            if not node.display:
                return False
            node = node.parent
        return True

    def painted(self) -> None:
        """Tell the app that fresh data is on screen (bench and tests listen)."""
        self.loaded_env = self.env
        focused = self.app.focused
        if (
            focused is None
            or not focused.display
            or (focused is self and any(t.display for t in self.query(DataTable)))
        ):
            self.focus_default()  # the focused table was hidden (or came back): keep the keys working
        self.rf.view_painted(self)

    # ------------------------------------------------------------ backend calls
    def call(
        self,
        fn: Callable[[], T],
        done: Callable[[T], Any] | None = None,
        *,
        failed: Callable[[Exception], bool] | None = None,
        group: str = "load",
        exclusive: bool = True,
    ) -> Worker[None]:
        """Run a Backend call off the event loop; drop the answer if the environment switched meanwhile."""
        env = self.env

        def deliver(result: T) -> None:
            if self.env == env and done is not None:
                done(result)

        return run_call(self, fn, deliver, failed=failed, group=f"{self.KEY}:{group}", exclusive=exclusive)

    def dynamic(self, name: str) -> Callable[..., Any]:
        """A Backend method by name (for capabilities added after this view was typed)."""
        return cast("Callable[..., Any]", getattr(self.backend, name))

    # ------------------------------------------------------------ read-only rule
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Write actions are hidden (footer, palette, help) while production is shown.
        return not (action in self.WRITE_ACTIONS and self.read_only)

    def refuse_in_production(self) -> bool:
        """Guard for write actions reached some other way: True (and a notice) in production."""
        if self.read_only:
            self.rf.notify(
                "Production is read-only: press e to switch to staging, then publish from Releases.",
                title="Read-only",
                severity="warning",
            )
            return True
        return False

    # ------------------------------------------------------------ palette
    def commands(self) -> Iterable[Command]:
        """Palette entries of this view (write ones only in staging)."""
        return ()


def restore_cursor(table: DataTable[Any], key: str | None, fallback: int = 0) -> None:
    """Put the cursor back on row ``key`` (else the same index, clamped)."""
    if table.row_count == 0:
        return
    row = fallback
    if key is not None:
        try:
            row = table.get_row_index(key)
        except RowDoesNotExist:  # the row is gone: keep the index
            row = fallback
    table.move_cursor(row=max(0, min(row, table.row_count - 1)), animate=False, scroll=True)


def selected_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor."""
    if table.row_count == 0:
        return None
    try:
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    except CellDoesNotExist:
        return None
    return None if key.value is None else str(key.value)
