"""OpenAI-compatible providers: the Chat Completions wire format.

``POST {base_url}/chat/completions`` with ``Authorization: Bearer KEY``. As
with the OpenAI SDK, ``base_url`` includes the version prefix
(``https://api.openai.com/v1``, ``http://localhost:11434/v1`` for Ollama...).

Streaming (``stream: true``) reads server-sent ``data:`` lines carrying
``choices[0].delta`` (text in ``content``, tool calls as ``tool_calls``
deltas keyed by ``index``) until ``data: [DONE]``; usage arrives in a final
chunk because we ask for ``stream_options.include_usage``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rf.llm._http import HttpChat
from rf.llm.types import ChatResult, ToolCall, Usage, parse_arguments

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_FINISH = {"stop": "stop", "tool_calls": "tool_calls", "function_call": "tool_calls", "length": "length"}


def to_wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral messages → Chat Completions messages."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            out.append({
                "role": "assistant",
                "content": m["content"] or None,
                "tool_calls": [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                    for c in m["tool_calls"]
                ],
            })
        elif m["role"] == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def to_wire_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["parameters"]}} for t in tools]


class OpenAIClient(HttpChat):
    """A Chat Completions endpoint (OpenAI, Azure-style gateways, Ollama, vLLM, LM Studio...)."""

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        tools: list[dict[str, Any]],
        max_tokens: int | None = None,
        on_chunk: Callable[[str], None] | None = None,
    ) -> ChatResult:
        url = f"{self.base_url}/chat/completions"
        body: dict[str, Any] = {"model": model, "messages": to_wire_messages(messages)}
        if tools:
            body["tools"] = to_wire_tools(tools)
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if on_chunk is None:
            return self._parse(self.post_json(url, self._headers(), body), model)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return self._stream(url, body, model, on_chunk)

    def _parse(self, data: dict[str, Any], model: str) -> ChatResult:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error(f"provider {self.provider!r} answered without choices: {json.dumps(data)[:300]}")
        message = choices[0].get("message") or {}
        calls = [
            ToolCall(str(c.get("id") or f"call_{i}"), str((c.get("function") or {}).get("name") or ""),
                     parse_arguments((c.get("function") or {}).get("arguments"),
                                     f"provider {self.provider!r} tool call"))
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        usage = data.get("usage") or {}
        return ChatResult(
            text=str(message.get("content") or ""),
            tool_calls=calls,
            usage=Usage.from_dict(usage),
            model=str(data.get("model") or model),
            provider=self.provider,
            finish_reason=_FINISH.get(str(choices[0].get("finish_reason")), "tool_calls" if calls else "stop"),
        )

    def _stream(self, url: str, body: dict[str, Any], model: str, on_chunk: Callable[[str], None]) -> ChatResult:
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage = Usage()
        finish = ""
        answered_model = model
        done = False
        for _event, data in self.post_sse(url, self._headers(), body):
            if data == "[DONE]":
                done = True
                break
            if not isinstance(data, dict):
                continue
            if isinstance(data.get("error"), dict):
                raise self._error(f"provider {self.provider!r} reported an error mid-stream: "
                                  f"{json.dumps(data['error'])[:300]}")
            answered_model = str(data.get("model") or answered_model)
            if isinstance(data.get("usage"), dict):
                usage = Usage.from_dict(data["usage"])
            for choice in data.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    text.append(delta["content"])
                    on_chunk(delta["content"])
                for d in delta.get("tool_calls") or []:
                    slot = calls.setdefault(int(d.get("index", len(calls))), {"id": "", "name": "", "arguments": ""})
                    fn = d.get("function") or {}
                    slot["id"] = d.get("id") or slot["id"]
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
        if not done and not finish:
            raise self._error(f"provider {self.provider!r} ended the stream early (no [DONE])",
                              "the connection may have been cut; try again")
        tool_calls = [
            ToolCall(slot["id"] or f"call_{i}", slot["name"],
                     parse_arguments(slot["arguments"], f"provider {self.provider!r} tool call"))
            for i, slot in sorted(calls.items())
        ]
        return ChatResult(text="".join(text), tool_calls=tool_calls, usage=usage, model=answered_model,
                          provider=self.provider,
                          finish_reason=_FINISH.get(finish, "tool_calls" if tool_calls else "stop"))
