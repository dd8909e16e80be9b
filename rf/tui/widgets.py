"""Small reusable widgets: the environment badge, the read-only banner, the sidebar."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual import events
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

STAGING_TEXT = "Staging: every edit happens here. Production changes only when you publish from Releases (key 5)."
READ_ONLY_TEXT = "Production is read-only. Press e to switch to staging to make changes; publish them from Releases."


class Table(DataTable[Any]):
    """The dashboard's DataTable: a header painted between adding rows and measuring them stays right.

    Textual caches each rendered cell without its width and re-measures the
    columns on the next idle pass (``_update_dimensions``), clearing only the
    line cache. A header painted in between (a busy machine, a key press at
    the wrong moment) kept the old, narrower column widths over rows drawn
    with the new ones. Clearing the cell caches after each re-measure fixes
    that; it happens once per batch of new rows, not per paint.
    """

    def _update_dimensions(self, new_rows: Any) -> None:
        super()._update_dimensions(new_rows)
        self._clear_caches()

    def set_columns(self, labels: Sequence[str]) -> bool:
        """Make the columns these (each keyed by its label): True when they changed, which
        clears the rows (e.g. an ``arm`` column that only production executions of a canary need)."""
        if [str(c.key.value) for c in self.ordered_columns] == list(labels):
            return False
        self.clear(columns=True)
        for label in labels:
            self.add_column(label, key=label)
        return True


class EnvBadge(Static):
    """`STAGING` (amber) or `PRODUCTION` (emerald); a click switches environment.

    While a canary release runs, the production badge says so (``PRODUCTION · canary 10 %``):
    the app tells it with :meth:`set_canary` from its polling (see ``RfApp.canary_seen``).
    """

    DEFAULT_CSS = """
    EnvBadge {
        width: auto;
        padding: 0 1;
        text-style: bold;
        color: #1c1917;
        background: #f59e0b;
    }
    EnvBadge.-production {
        background: #10b981;
        color: #052e16;
    }
    EnvBadge:hover {
        text-style: bold reverse;
    }
    """

    class Clicked(Message):
        """The badge was clicked: switch environment."""

    def __init__(self, env: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tooltip = "Switch environment (e)"
        self.env = env
        self.canary_weight: float | None = None  #: the running canary's share of production, if one runs
        self.set_env(env)

    def set_env(self, env: str) -> None:
        self.env = env
        self.set_class(env == "production", "-production")
        self._show()

    def set_canary(self, weight: float | None) -> None:
        """A canary release runs on ``weight`` % of production (None: none runs)."""
        if weight != self.canary_weight:
            self.canary_weight = weight
            self._show()

    @property
    def label(self) -> str:
        """The badge's text, e.g. ``PRODUCTION · canary 10 %``."""
        if self.env == "production" and self.canary_weight is not None:
            return f"PRODUCTION · canary {self.canary_weight:g} %"
        return self.env.upper()

    def _show(self) -> None:
        self.update(f" {self.label} ")

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(self.Clicked())


class ReadOnlyBanner(Static):
    """The line under the header: in production the read-only banner, in staging a quiet reminder.

    It keeps its one line in both environments, so switching repaints a line
    instead of reflowing the whole screen.
    """

    DEFAULT_CSS = """
    ReadOnlyBanner {
        width: 1fr;
        height: 1;
        padding: 0 1;
        color: #fcd34d 70%;
        background: #f59e0b 8%;
    }
    ReadOnlyBanner.-production {
        color: #d1fae5;
        background: #065f46;
        text-style: bold;
    }
    """

    def __init__(self) -> None:
        super().__init__("", markup=False)
        self.production_text = READ_ONLY_TEXT

    def show_env(self, env: str, production_text: str | None = None) -> None:
        if production_text is not None:
            self.production_text = production_text
        self.set_class(env == "production", "-production")
        self.update(self.production_text if env == "production" else STAGING_TEXT)


class NavItem(Static):
    """One entry of the sidebar; a click shows its view."""

    DEFAULT_CSS = """
    NavItem {
        width: 1fr;
        padding: 0 1;
    }
    NavItem:hover {
        background: $boost;
    }
    NavItem.-active {
        background: $accent 30%;
        text-style: bold;
    }
    NavItem.-unavailable {
        color: $text-muted;
    }
    """

    class Chosen(Message):
        def __init__(self, key: str) -> None:
            self.key = key
            super().__init__()

    def __init__(self, key: str, label: str, shortcut: str) -> None:
        super().__init__(f"{label:<14}[dim]{shortcut}[/dim]", id=f"nav-{key}")
        self.key = key

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(self.Chosen(self.key))


class SectionTitle(Static):
    """A dim group heading in the sidebar."""

    DEFAULT_CSS = """
    SectionTitle {
        color: $text-muted;
        padding: 1 1 0 1;
        text-style: italic;
    }
    """


class Empty(Static):
    """An empty state that says what to do next."""

    DEFAULT_CSS = """
    Empty {
        color: $text-muted;
        padding: 1 2;
        display: none;
    }
    Empty.-shown {
        display: block;
    }
    """


class RfFooter(Footer):
    """Textual's footer, recomposed only when the keys it shows change.

    The stock footer rebuilds every key widget on each bindings update (a
    focus move, a reload); that is a good part of an environment switch's
    cost, and most updates change nothing visible.
    """

    _shown: tuple[tuple[str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._recompose_if_changed)

    async def _recompose_if_changed(self) -> None:
        shown = tuple(
            (binding.key, binding.description, enabled)
            for (_, binding, enabled, _) in self.screen.active_bindings.values()
            if binding.show
        )
        if shown == self._shown:
            return
        self._shown = shown
        await self.recompose()
