"""``ctx.prompts`` inside the worker (built on ``Context.call_host``).

The worker never sees the database: the host resolves the prompt for this
execution's environment — the draft in staging (and ``rf test``), the
published version in production — and renders it. A prompt that was never
published makes a production execution fail with the command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rf.runtime.context import Context


@dataclass(frozen=True)
class PromptText:
    """One prompt version as this execution's environment sees it."""

    name: str
    text: str
    version: int
    env: str  #: the environment it was resolved for
    variables: list[str] = field(default_factory=list)  #: ``{{names}}`` the text uses

    def __str__(self) -> str:
        return self.text


class Prompts:
    """``ctx.prompts``: ``render(name, **variables)`` and ``get(name)``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def render(self, prompt: str, /, **variables: Any) -> str:
        """The prompt's text with ``{{variables}}`` filled in (``str()`` of each value).

        The name is positional-only, so variables may be called ``name`` or
        ``prompt``. A missing variable fails with its name; extra ones are
        ignored.
        """
        # str() here, not on the host: any object works, not only JSON values.
        values = {key: value if isinstance(value, str) else str(value) for key, value in variables.items()}
        return str(self._ctx.call_host("prompts.render", name=prompt, variables=values))

    def get(self, prompt: str, /) -> PromptText:
        """The prompt's raw text, version and variables for this environment."""
        data = self._ctx.call_host("prompts.get", name=prompt)
        return PromptText(name=str(data["name"]), text=str(data["text"]), version=int(data["version"]),
                          env=str(data["env"]), variables=[str(v) for v in data.get("variables") or []])
