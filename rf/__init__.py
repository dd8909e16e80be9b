"""rf — a local-first platform for building AI agents with staging and production.

Agent code imports :class:`Context` (and the errors it may catch, :class:`RfError`,
:class:`ConnectorError` and :class:`AgentCallError`) from here. Names are resolved lazily
(PEP 562) so that ``import rf`` stays cheap: the CLI's start-up time and
every worker's start-up time depend on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rf._version import __version__

if TYPE_CHECKING:
    from rf.errors import AgentCallError, ConnectorError, RfError
    from rf.runtime.context import Context

__all__ = ["AgentCallError", "ConnectorError", "Context", "RfError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Context":
        from rf.runtime.context import Context

        return Context
    if name in ("RfError", "ConnectorError", "AgentCallError"):  # what agent code catches around ctx calls
        from rf import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'rf' has no attribute {name!r}")
