"""``RfApp``: the dashboard shell — header with the environment badge, sidebar, views, footer.

The app talks only to a Backend (the same methods the CLI uses); it never
opens the store itself. Views load their data in thread workers
(:mod:`rf.tui.calls`), and every failure ends in :meth:`RfApp.report_error`.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import ContentSwitcher, Static

from rf.errors import Conflict, NotFound, ProductionReadOnly, RfError, ServerError
from rf.tui.commands import RfCommands
from rf.tui.modals import HelpScreen
from rf.tui.views import VIEW_CLASSES
from rf.tui.views.base import View
from rf.tui.widgets import READ_ONLY_TEXT, EnvBadge, NavItem, ReadOnlyBanner, RfFooter, SectionTitle

if TYPE_CHECKING:
    from rf.client import Backend
    from rf.config import Workspace

SHORTCUTS = "1234567890"
#: The production badge asks whether a canary runs at most this often (seconds), while production
#: is shown; the Releases view's own polling answers it for free (see RfApp.canary_seen).
CANARY_POLL_S = 5.0
#: Below this many columns the sidebar starts hidden (the views need the room); ctrl+b toggles it.
SIDEBAR_MIN_COLUMNS = 100

#: App actions that make no sense while a dialog is open.
_MAIN_SCREEN_ONLY = {"switch_env", "show", "reload", "help"}


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


class RfApp(App[None]):
    """The rf dashboard over one Backend."""

    CSS_PATH: ClassVar[list[str | PurePath]] = ["app.tcss", *(cls.CSS_FILE for cls in VIEW_CLASSES if cls.CSS_FILE)]
    TITLE = "rf"
    COMMANDS = App.COMMANDS | {RfCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "switch_env", "Switch env"),
        Binding("r", "reload", "Reload", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", show=False),
        *(
            Binding(SHORTCUTS[n], f"show('{cls.KEY}')", cls.TITLE, show=False)
            for n, cls in enumerate(VIEW_CLASSES[: len(SHORTCUTS)])
        ),
    ]

    env: reactive[str] = reactive("staging", init=False)

    def __init__(
        self,
        backend: Backend,
        *,
        workspace: Workspace | None = None,
        env: str = "staging",
        server_url: str | None = None,
        start_view: str = "agents",
        clock: Callable[[], _dt.datetime] = utc_now,
        poll_interval: float | None = 2.0,
        trace_file: Path | None = None,
        notices: list[str] | None = None,
        server_pending: bool = False,
        warm_views: tuple[str, ...] = ("executions", "releases"),
    ) -> None:
        super().__init__()
        self.backend = backend
        self.workspace = workspace if workspace is not None else getattr(backend, "workspace", None)
        self.set_reactive(RfApp.env, env)
        self.server_url = server_url
        self.server_pending = server_pending  #: the embedded server is still starting (rf ui)
        self.warm_views: tuple[str, ...] = warm_views
        self.clock = clock
        self.poll_interval = poll_interval
        self.view_classes = list(VIEW_CLASSES)
        self.current_view = start_view if any(start_view == c.KEY for c in VIEW_CLASSES) else "agents"
        self.trace_file = trace_file
        self._views: dict[str, View] = {}
        self._server_lock = threading.Lock()
        self._first_paint_callbacks: list[Callable[[], Any]] = []
        self._last_error: tuple[str, float] | None = None
        self._mounted = False
        self.painted_log: list[tuple[str, str]] = []  #: (view, env) each time fresh data was painted
        self._notices = notices or []
        self._sidebar_choice: bool | None = None  #: ctrl+b's choice (None: by the terminal's width)
        #: the running canary release (id, weight %) as last seen, for the production badge
        self.canary: tuple[str, float] | None = None
        self._canary_checked = -CANARY_POLL_S  #: time.monotonic() of the last look (or request)

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        ws_name = self.workspace.name if self.workspace is not None else "rf"
        with Horizontal(id="header"):
            yield Static("◆ rf", id="brand")
            yield Static(ws_name, id="workspace-name", markup=False)
            yield EnvBadge(self.env, id="env-badge")
            yield Static("", id="server-url", markup=False)
        yield ReadOnlyBanner()  # the read-only banner in production (every view), a reminder in staging
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                group = None
                for n, cls in enumerate(self.view_classes):
                    if group != cls.GROUP:
                        group = cls.GROUP
                        yield SectionTitle(group)
                    item = NavItem(cls.KEY, cls.TITLE, self.shortcut(n))
                    item.set_class(not cls.available(), "-unavailable")
                    yield item
            # Views are mounted when first shown: a small DOM keeps start-up and
            # the environment switch (which restyles every widget) fast.
            with ContentSwitcher(id="views", initial=f"view-{self.current_view}"):
                yield self._new_view(self.current_view)
        yield RfFooter()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_sidebar(event.size.width)

    def _fit_sidebar(self, width: int) -> None:
        """Show the sidebar on a terminal at least SIDEBAR_MIN_COLUMNS wide, unless ctrl+b said otherwise."""
        shown = self._sidebar_choice if self._sidebar_choice is not None else width >= SIDEBAR_MIN_COLUMNS
        self.query_one("#sidebar").display = shown

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#sidebar")
        self._sidebar_choice = not sidebar.display
        sidebar.display = self._sidebar_choice

    def shortcut(self, index: int) -> str:
        return SHORTCUTS[index] if index < len(SHORTCUTS) else ""

    def on_mount(self) -> None:
        with self._server_lock:
            self._mounted = True
        self._fit_sidebar(self.size.width)
        self._mark_nav()
        self._show_server()
        self.query_one(ReadOnlyBanner).show_env(self.env, self.active_view.BANNER or READ_ONLY_TEXT)
        self.view(self.current_view).activate()
        if self.poll_interval:
            self.set_interval(self.poll_interval, self._poll)
        if self.env == "production":
            self.check_canary()
        for notice in self._notices:
            self.notify(notice, markup=False)

    def _show_server(self) -> None:
        url = self.server_url
        pending = "server starting…" if self.server_pending else ""
        self.query_one("#server-url", Static).update(f"server {url}" if url else pending)

    def server_ready(self, url: str | None, notices: list[str]) -> None:
        """The embedded server is up (called from its thread, maybe before the app runs)."""
        self.server_pending = False

        def apply() -> None:
            self.server_url = url
            self._show_server()
            for notice in notices:
                self.notify(notice, markup=False)

        with self._server_lock:
            if not self._mounted:
                self.server_url = url
                self._notices += notices
                return
        try:
            self.call_from_thread(apply)
        except RuntimeError:
            pass  # the app has already exited

    # ------------------------------------------------------------ views
    def _new_view(self, key: str) -> View:
        cls = next(c for c in self.view_classes if key == c.KEY)
        view = self._views[key] = cls()
        return view

    def views(self) -> Iterator[View]:
        """The views mounted so far (each is mounted the first time it is shown)."""
        return iter(list(self._views.values()))

    def view(self, key: str) -> View:
        return self._views[key]

    @property
    def active_view(self) -> View:
        return self.view(self.current_view)

    def _mark_nav(self) -> None:
        for item in self.query(NavItem):
            item.set_class(item.key == self.current_view, "-active")

    async def action_show(self, key: str) -> None:
        if not any(key == c.KEY for c in self.view_classes):
            return
        switcher = self.query_one("#views", ContentSwitcher)
        if key not in self._views:
            await switcher.mount(self._new_view(key))
        self.current_view = key
        switcher.current = f"view-{key}"
        self._mark_nav()
        self.query_one(ReadOnlyBanner).show_env(self.env, self.view(key).BANNER or READ_ONLY_TEXT)
        self.view(key).activate()

    async def on_nav_item_chosen(self, event: NavItem.Chosen) -> None:
        await self.action_show(event.key)

    async def open_executions(self, *, agent: str | None = None) -> None:
        """The Executions view filtered to one agent (from Agents)."""
        from rf.tui.views.executions import ExecutionsView

        await self.action_show(ExecutionsView.KEY)
        view = self.view(ExecutionsView.KEY)
        assert isinstance(view, ExecutionsView)
        view.set_filter(agent=agent)
        view.reload()

    async def open_trace(self, *, execution_id: str) -> None:
        """The Traces view on one execution's trace."""
        from rf.tui.views.traces import TracesView

        if not TracesView.available():
            self.notify("Traces are not available in this build.", severity="warning")
            return
        await self.action_show(TracesView.KEY)
        view = self.view(TracesView.KEY)
        assert isinstance(view, TracesView)
        view.open_execution(execution_id)
        view.reload()

    async def run_view_command(self, key: str, run: Callable[[], Any]) -> None:
        """A palette command of a view: show the view, then run it."""
        if self.current_view != key:
            await self.action_show(key)
        result = run()
        if inspect.isawaitable(result):
            await result

    async def _warm_up(self) -> None:
        """After the first paint, mount the busiest views (hidden) so their first visit only loads data."""
        switcher = self.query_one("#views", ContentSwitcher)
        for key in self.warm_views:
            if key not in self._views and any(key == c.KEY for c in self.view_classes):
                view = self._new_view(key)
                view.display = False
                await switcher.mount(view)

    # ------------------------------------------------------------ environment
    def action_switch_env(self) -> None:
        self.env = "production" if self.env == "staging" else "staging"

    def on_env_badge_clicked(self, event: EnvBadge.Clicked) -> None:
        if not isinstance(self.screen, ModalScreen):
            self.action_switch_env()

    def watch_env(self, env: str) -> None:
        # Only the badge and the banner line change: a class on the screen would
        # restyle every widget, and a banner appearing would reflow the layout.
        self.query_one(EnvBadge).set_env(env)
        self.query_one(ReadOnlyBanner).show_env(env)
        self.active_view.env_changed()  # reloads and refreshes the footer's bindings
        if env == "production" and time.monotonic() - self._canary_checked >= CANARY_POLL_S:
            self.check_canary()

    # ------------------------------------------------------------ the production badge's canary
    def canary_seen(self, running: tuple[str, float] | None) -> None:
        """What a look at production found (the badge's own check, or a view that fetched the
        canary anyway, e.g. Releases): the badge shows it, and the next check waits."""
        self._canary_checked = time.monotonic()
        self.canary = running
        self.query_one(EnvBadge).set_canary(None if running is None else running[1])

    def check_canary(self) -> None:
        """Ask (off the event loop) whether a canary release runs; at most one question in flight."""
        from rf.tui.calls import run_call
        from rf.tui.views.canary import running_canary

        self._canary_checked = time.monotonic()
        backend = self.backend
        # A failure is not shown: the views report the same backend trouble themselves.
        run_call(self, lambda: running_canary(backend), self.canary_seen, failed=lambda exc: True,
                 group="app:canary", description="canary")

    # ------------------------------------------------------------ other actions
    def action_reload(self) -> None:
        self.active_view.reload()

    def action_help(self) -> None:
        view = self.active_view
        keys = []
        for binding in view.BINDINGS:
            if isinstance(binding, Binding) and binding.show:
                action = binding.action.split("(")[0]
                if view.check_action(action, ()) is False:
                    continue
                keys.append((binding.key_display or binding.key, binding.description))
        self.push_screen(HelpScreen(view.TITLE, keys))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in _MAIN_SCREEN_ONLY and isinstance(self.screen, ModalScreen))

    def get_system_commands(self, screen: Screen[Any]) -> Iterator[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title not in ("Maximize", "Screenshot"):
                yield command

    # ------------------------------------------------------------ live
    def _poll(self) -> None:
        if isinstance(self.screen, ModalScreen):
            return
        view = self.active_view
        if (
            view.LIVE
            and view.available()
            and not any(w.is_running for w in self.workers if w.group.startswith(f"{view.KEY}:"))
        ):
            view.poll()
        if (self.env == "production" and time.monotonic() - self._canary_checked >= CANARY_POLL_S
                and not any(w.is_running for w in self.workers if w.group == "app:canary")):
            self.check_canary()

    # ------------------------------------------------------------ errors and timing
    def report_error(self, exc: BaseException) -> None:
        """The one place failures are shown: a notification with the message and the next step."""
        if isinstance(exc, RfError):
            title = {
                ProductionReadOnly: "Production is read-only",
                Conflict: "Refused",
                NotFound: "Not found",
                ServerError: "Server",
            }.get(type(exc), "Error")
            message = exc.message + (f"\n{exc.hint}" if exc.hint else "")
        else:
            title = "Unexpected error"
            message = f"{type(exc).__name__}: {exc}"
        # A failing live poll would repeat the same error every 2 s: show it once while it lasts.
        now = time.monotonic()
        if self._last_error is not None and self._last_error[0] == message and now - self._last_error[1] < 15:
            self._last_error = (message, now)
            return
        self._last_error = (message, now)
        self.notify(message, title=title, severity="error", timeout=10, markup=False)

    def after_first_paint(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the first view has painted its data (rf ui starts its web server then)."""
        self._first_paint_callbacks.append(callback)

    def view_painted(self, view: View) -> None:
        if not self.painted_log:
            for callback in self._first_paint_callbacks:
                self.call_after_refresh(callback)
            if self.warm_views:
                self.call_after_refresh(self._warm_up)
        self.painted_log.append((view.KEY, self.env))
        if self.trace_file is not None:
            self.call_after_refresh(self._trace, {"event": "painted", "view": view.KEY, "env": self.env})

    def _trace(self, event: dict[str, Any]) -> None:
        assert self.trace_file is not None
        event["t"] = time.time()
        event["cpu"] = time.process_time()  # this process's CPU so far (every thread): load-independent
        with self.trace_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")
