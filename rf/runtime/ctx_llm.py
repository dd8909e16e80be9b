"""``ctx.llm`` inside the worker (built on ``Context.call_host``).

The worker holds no API keys: every call goes to the host (host method
``llm.chat``), which picks the provider, reads its credential and talks to
it. So ``ctx.llm`` works the same for the built-in mock, OpenAI-compatible
and Anthropic providers, in both environments (providers are shared).

Streaming: with ``stream=True`` the host calls the provider in streaming
mode and sends each text piece to the worker as it arrives;
``ctx.llm.chat(..., stream=True)`` returns a :class:`ChatStream` at once,
which yields the pieces as they come (a generator handler forwarding them
streams the first token to its client before the last one exists). Its
``result``/``text`` wait for the end of the reply. The whole call is still
one host call, and one trace span.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Literal, overload

from rf.llm.types import ChatResult

if TYPE_CHECKING:
    from rf.runtime.context import Context


class ChatStream:
    """The text chunks of a streamed reply, as they arrive; ``result`` is the whole
    :class:`ChatResult` (it waits for the end of the reply)."""

    def __init__(self, source: Any, chunks: list[str] | None = None) -> None:
        # source: the worker's HostStream (live), or a finished ChatResult with its chunks.
        self._source = source
        self._chunks = chunks
        self._result: ChatResult | None = source if isinstance(source, ChatResult) else None

    def __iter__(self) -> Iterator[str]:
        if self._chunks is not None:
            return iter(self._chunks)
        return iter(self._source)

    async def __aiter__(self) -> AsyncIterator[str]:
        """``async for piece in ctx.llm.chat(..., stream=True)`` in an async handler: each
        wait for the next piece happens in a thread, so the handler's other tasks run meanwhile."""
        import asyncio

        pieces = iter(self)
        while True:
            piece = await asyncio.to_thread(next, pieces, None)
            if piece is None:
                return
            yield piece

    @property
    def result(self) -> ChatResult:
        if self._result is None:
            self._result = ChatResult.from_dict(self._source.result())
        return self._result

    @property
    def text(self) -> str:
        return self.result.text

    def __repr__(self) -> str:
        if self._result is None:
            return "ChatStream(streaming)"
        count = len(self._chunks) if self._chunks is not None else len(self._source.pieces)
        return f"ChatStream({count} chunks, provider={self._result.provider!r}, model={self._result.model!r})"


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
             stream: Literal[False] = ..., max_tokens: int | None = ..., *, temperature: float | None = ...,
             top_p: float | None = ..., stop: str | list[str] | None = ...,
             response_format: dict[str, Any] | None = ...) -> ChatResult: ...

    @overload
    def chat(self, messages: list[dict[str, Any]] | str, model: str | None = ..., tools: list[Any] | None = ...,
             *, stream: Literal[True], max_tokens: int | None = ..., temperature: float | None = ...,
             top_p: float | None = ..., stop: str | list[str] | None = ...,
             response_format: dict[str, Any] | None = ...) -> ChatStream: ...

    def chat(self, messages: list[dict[str, Any]] | str, model: str | None = None, tools: list[Any] | None = None,
             stream: bool = False, max_tokens: int | None = None, *, temperature: float | None = None,
             top_p: float | None = None, stop: str | list[str] | None = None,
             response_format: dict[str, Any] | None = None) -> ChatResult | ChatStream:
        """One chat call.

        Args:
            messages: ``[{"role": "system"|"user"|"assistant"|"tool", "content": ...}]``
                (a plain string is one user message). A user message's content may
                be a list of parts, text and images:
                ``{"type": "image_url", "image_url": {"url": "https://..." | "data:image/png;base64,..."}}``.
            model: ``"provider:model"``, ``"model"`` or None (see the class docs).
            tools: tool specs ``{"name", "description", "parameters"}``, or
                Python functions / tool objects (their specs are derived; they
                are *not* run — use :meth:`run_tools` for that).
            stream: return a :class:`ChatStream` of text chunks instead.
            max_tokens: cap on the reply's tokens (OpenAI: sent as
                ``max_completion_tokens`` where the API wants it).
            temperature: sampling temperature, 0–2 (Anthropic: 0–1).
            top_p: nucleus sampling, 0–1.
            stop: a stop sequence or a list of them.
            response_format: structured output — a JSON Schema of an object, or
                OpenAI's ``{"type": "json_schema", "json_schema": {"name", "schema"}}``
                / ``{"type": "json_object"}``. The answer is in ``result.parsed``.

        Provider errors HTTP 429 / 5xx are retried (honouring ``Retry-After``)
        within the execution's time.

        Returns:
            A :class:`~rf.llm.types.ChatResult`: ``text``, ``tool_calls``,
            ``usage``, ``model``, ``provider``, ``parsed``.
        """
        specs = None
        if tools is not None:
            from rf.runtime.tools import tool_specs

            specs = tool_specs(tools)
        params: dict[str, Any] = {"messages": messages, "model": model, "tools": specs, "stream": stream}
        for name, value in (("max_tokens", max_tokens), ("temperature", temperature), ("top_p", top_p),
                            ("stop", stop), ("response_format", response_format)):
            if value is not None:
                params[name] = value
        data = self._ctx.call_host("llm.chat", **params)
        if stream and not isinstance(data, dict):
            return ChatStream(data)  # the worker's live stream of pieces
        result = ChatResult.from_dict(data)
        if stream:
            return ChatStream(result, [str(c) for c in data.get("chunks") or []])
        return result

    def run_tools(self, messages: list[dict[str, Any]] | str, tools: list[Any], model: str | None = None,
                  max_iterations: int = 5, max_tokens: int | None = None, *, temperature: float | None = None,
                  top_p: float | None = None, stop: str | list[str] | None = None) -> ChatResult:
        """Chat, running the tools the model asks for, until it answers (see :func:`rf.runtime.tools.run_tools`)."""
        from rf.runtime.tools import run_tools

        return run_tools(self._ctx, messages, tools, model=model, max_iterations=max_iterations,
                         max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop)
