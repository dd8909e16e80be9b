"""The command palette (ctrl+p): every action of the dashboard, in one searchable list."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from rf.tui.app import RfApp


class RfCommands(Provider):
    """Navigation, environment, and the current data's actions (edits only in staging)."""

    def _entries(self) -> list[tuple[str, Callable[[], Any], str]]:
        app = cast("RfApp", self.app)
        other = "production" if app.env == "staging" else "staging"
        entries: list[tuple[str, Callable[[], Any], str]] = [
            (f"Switch to {other}", app.action_switch_env, "Show the other environment (key e)"),
            ("Help", app.action_help, "Keys and the environment rules (key ?)"),
            ("Reload view", app.action_reload, "Fetch this view again (key r)"),
        ]
        for n, cls in enumerate(app.view_classes):
            key = app.shortcut(n)
            entries.append(
                (
                    f"Go to {cls.TITLE}",
                    partial(app.action_show, cls.KEY),
                    f"Open the {cls.TITLE} view" + (f" (key {key})" if key else ""),
                )
            )
        for view in app.views():
            for command in view.commands():
                entries.append((command.title, partial(app.run_view_command, view.KEY, command.run), command.help))
        return entries

    async def discover(self) -> Hits:
        for title, run, help in self._entries():
            yield DiscoveryHit(title, run, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, run, help in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run, text=title, help=help)
