"""``ctx.session`` inside the worker: this execution's conversation, in its environment.

``history()`` returns earlier messages (role/content) of the session the
caller named (``session_id``), oldest first — not the current input, which
the handler has in hand; ``history(for_llm=True)`` gives them ready for
``ctx.llm.chat``. ``append()`` adds a message; like the user input and
the agent's output (which rf appends by itself: the input's ``message`` field
and the output's, or the fields agent.toml's ``[session]`` names, else the
whole value), it is committed when the execution succeeds. Appending the
turn's own input (as ``user``) or output (as ``assistant``) does not record
it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rf.errors import PayloadTooLarge, UsageError
from rf.models import MEMORY_MAX_VALUE_BYTES, SESSION_ROLES
from rf.runtime.ctx_trace import encode_json, outbox

if TYPE_CHECKING:
    from rf.runtime.context import Context


class Session:
    """``ctx.session``: ``id``, ``history(limit=None, for_llm=False)``, ``append(role, content)``."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, env={self._ctx.env!r})"

    @property
    def id(self) -> str | None:
        """The session id the caller gave (None when the execution has no session)."""
        return self._ctx.session_id

    def history(self, limit: int | None = None, *, for_llm: bool = False) -> list[dict[str, Any]]:
        """Messages ``{"role", "content"}`` of this session, oldest first (the newest ``limit``).

        ``for_llm=True`` gives them as ``ctx.llm.chat`` takes them: content that
        is not text (e.g. an input without a ``message``, or a dict an agent
        appended) becomes readable text (:func:`as_text`: a dict one
        ``field: value`` line per field), and ``tool`` messages are left out —
        a session keeps no tool-call ids, and providers refuse a tool result
        that answers no call in the same request::

            messages = ctx.session.history(for_llm=True) + [{"role": "user", "content": text}]
            reply = ctx.llm.chat(messages)
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise UsageError("ctx.session.history: limit must be a whole number ≥ 0")
        if self.id is None or limit == 0:
            return []
        result: list[dict[str, Any]] = self._ctx.call_host("session.history", limit=limit)
        if for_llm:
            return [{"role": m["role"], "content": as_text(m["content"])} for m in result if m["role"] != "tool"]
        return result

    def append(self, role: str, content: Any) -> None:
        """Add a message (role: user, assistant, system or tool; content: a JSON value)."""
        if self.id is None:
            raise UsageError("ctx.session.append: this execution has no session",
                             'invoke with a session id: rf invoke AGENT --session ID, or {"session_id": ...}')
        if role not in SESSION_ROLES:
            raise UsageError(f"ctx.session.append: role must be one of {', '.join(SESSION_ROLES)}, not {role!r}")
        try:
            text = encode_json(content)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"ctx.session.append: content is not JSON-serializable: {exc}") from None
        size = len(text.encode("utf-8"))
        if size > MEMORY_MAX_VALUE_BYTES:
            raise PayloadTooLarge(f"ctx.session.append: content is too large ({size // 1024} KiB; "
                                  f"the limit is {MEMORY_MAX_VALUE_BYTES // 1024} KiB)")
        outbox(self._ctx).defer("session.append", {"role": role, "content": content}, size)


def as_text(content: Any) -> str:
    """A session message's content as an LLM reads it: text as it is; a dict (an output or
    input without a message field) one ``field: value`` line per field, a value that is not
    text as its JSON; anything else its JSON text::

        {"reply": "Refunded.", "order": 42}  ->  "reply: Refunded.\norder: 42"
    """
    if isinstance(content, str):
        return content
    if isinstance(content, dict) and content:
        return "\n".join(f"{key}: {value if isinstance(value, str) else encode_json(value)}"
                         for key, value in content.items())
    return encode_json(content)
