"""``ctx.llm`` inside the worker (built on ``Context.call_host``).

The worker holds no API keys: every call goes to the host (host method
``llm.chat``), which picks the provider, reads its credential and talks to
it. So ``ctx.llm`` works the same for the built-in mock, OpenAI-compatible
and Anthropic providers, in both environments (providers are shared).

Streaming, and why it is simple: with ``stream=True`` the host calls the
provider in streaming mode and returns once the reply is complete, with the
text pieces as they arrived; ``ctx.llm.chat(..., stream=True)`` then returns
a :class:`ChatStream` that yields those pieces. Agent code written against
an iterator (e.g. a generator handler forwarding chunks to an SSE client)
works unchanged; what it does not get yet is the first token before the
last one has arrived. One request/response per call keeps the worker channel
simple and every host call one trace span.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, overload

from rf.llm.types import ChatResult

if TYPE_CHECKING:
    from rf.runtime.context import Context


class ChatStream:
    """The text chunks of a streamed reply; ``result`` is the whole :class:`ChatResult`."""

    def __init__(self, result: ChatResult, chunks: list[str]) -> None:
        self.result = result
        self._chunks = chunks

    def __iter__(self) -> Iterator[str]:
        return iter(self._chunks)

    @property
    def text(self) -> str:
        return self.result.text

    def __repr__(self) -> str:
        return f"ChatStream({len(self._chunks)} chunks, provider={self.result.provider!r}, model={self.result.model!r})"


class LLM:
    """``ctx.llm``: chat with the workspace's LLM providers.

    ``model`` picks the provider and model: ``"provider:model"``, a bare
    model name (the default provider), or None (the default provider and its
    default model). The default provider is ``[llm] default`` in rf.toml —
    the built-in, offline ``mock`` in a new workspace.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    @overload
    def chat(self, messages: list[dict[str, Any]] | str, model: str | None = ..., tools: list[Any] | None = ...,
             stream: Literal[False] = ..., max_tokens: int | None = ...) -> ChatResult: ...

    @overload
    def chat(self, messages: list[dict[str, Any]] | str, model: str | None = ..., tools: list[Any] | None = ...,
             *, stream: Literal[True], max_tokens: int | None = ...) -> ChatStream: ...

    def chat(self, messages: list[dict[str, Any]] | str, model: str | None = None, tools: list[Any] | None = None,
             stream: bool = False, max_tokens: int | None = None) -> ChatResult | ChatStream:
        """One chat call.

        Args:
            messages: ``[{"role": "system"|"user"|"assistant"|"tool", "content": ...}]``
                (a plain string is one user message).
            model: ``"provider:model"``, ``"model"`` or None (see the class docs).
            tools: tool specs ``{"name", "description", "parameters"}``, or
                Python functions / tool objects (their specs are derived; they
                are *not* run — use :meth:`run_tools` for that).
            stream: return a :class:`ChatStream` of text chunks instead.
            max_tokens: cap on the reply's tokens.

        Returns:
            A :class:`~rf.llm.types.ChatResult`: ``text``, ``tool_calls``,
            ``usage``, ``model``, ``provider``.
        """
        specs = None
        if tools is not None:
            from rf.runtime.tools import tool_specs

            specs = tool_specs(tools)
        params: dict[str, Any] = {"messages": messages, "model": model, "tools": specs, "stream": stream}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        data = self._ctx.call_host("llm.chat", **params)
        result = ChatResult.from_dict(data)
        if stream:
            return ChatStream(result, [str(c) for c in data.get("chunks") or []])
        return result

    def run_tools(self, messages: list[dict[str, Any]] | str, tools: list[Any], model: str | None = None,
                  max_iterations: int = 5, max_tokens: int | None = None) -> ChatResult:
        """Chat, running the tools the model asks for, until it answers (see :func:`rf.runtime.tools.run_tools`)."""
        from rf.runtime.tools import run_tools

        return run_tools(self._ctx, messages, tools, model=model, max_iterations=max_iterations,
                         max_tokens=max_tokens)
