"""``ctx.agents`` inside the worker (built on ``Context.call_host``).

An agent calls another agent **of its own environment**: in staging (and under
``rf test``) the other agent's staging commit, in production its production
commit. The host runs it as a child execution of this one (its ``parent_id``,
source ``agent:<caller>``, the same trace id) in a worker of its own, within
the time this execution has left; a call back into an agent already in the
chain, or deeper than the depth limit, is refused before anything runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rf.runtime.context import Context


class Agents:
    """``ctx.agents``: ``invoke(name, input, session_id=None)``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def invoke(self, agent: str, input: Any = None, /, session_id: str | None = None) -> Any:
        """Run *agent* with *input* (JSON-able) and return its output (a generator's: the list
        of what it yielded).

        Its failure raises :class:`rf.AgentCallError` (``execution_id``, ``error``), which the
        caller may catch; so does a call refused before it ran (a cycle, the depth limit, no
        time left). An agent not deployed in this environment raises ``rf.errors.NotFound``.
        *session_id* continues a session of *agent* (its own, in this environment).
        """
        return self._ctx.call_host("agents.invoke", name=agent, input=input, session_id=session_id)
