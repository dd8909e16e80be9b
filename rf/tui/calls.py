"""Backend calls off the UI thread.

Every Backend call may block (DuckDB, HTTP, a subprocess that validates agent
code), so the dashboard never makes one on Textual's event loop. ``run_call``
runs it in a thread worker and hands the result back on the loop. A failure
goes to ``failed`` when the caller shows it inline (a form field), otherwise to
the app's one error handler (:meth:`rf.tui.app.RfApp.report_error`): a
notification, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from textual.worker import Worker, get_current_worker

if TYPE_CHECKING:
    from textual.dom import DOMNode

T = TypeVar("T")


class ErrorReporter(Protocol):
    def report_error(self, exc: BaseException) -> None: ...


def run_call(
    node: DOMNode,
    fn: Callable[[], T],
    done: Callable[[T], Any] | None = None,
    *,
    failed: Callable[[Exception], bool] | None = None,
    group: str = "load",
    exclusive: bool = True,
    description: str = "",
) -> Worker[None]:
    """Run ``fn`` in a thread worker owned by ``node``; call ``done(result)`` on the event loop.

    ``exclusive`` (the default) cancels the group's earlier calls, and a
    cancelled call never delivers: a slow answer for the previous environment
    cannot overwrite the current one. ``failed(exc)`` returns True when it
    showed the error itself.
    """
    app = node.app

    def deliver(callback: Callable[[], Any]) -> None:
        def guarded() -> None:
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - a rendering bug becomes a notification, not a crash
                reporter: ErrorReporter = app  # type: ignore[assignment]
                reporter.report_error(exc)

        try:
            app.call_from_thread(guarded)
        except RuntimeError:
            pass  # the app is shutting down: nobody is left to show it

    def on_error(exc: Exception) -> None:
        if failed is not None and failed(exc):
            return
        reporter: ErrorReporter = app  # type: ignore[assignment]
        reporter.report_error(exc)

    def job() -> None:
        worker = get_current_worker()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is shown to the user, none crashes the app
            if not worker.is_cancelled:
                deliver(partial(on_error, exc))
            return
        if not worker.is_cancelled and done is not None:
            deliver(lambda: done(result))

    return node.run_worker(
        job,
        thread=True,
        group=group,
        exclusive=exclusive,
        exit_on_error=False,
        description=description or getattr(fn, "__name__", ""),
    )
