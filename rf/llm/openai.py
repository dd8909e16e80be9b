"""OpenAI-compatible providers: the Chat Completions wire format.

``POST {base_url}/chat/completions`` with ``Authorization: Bearer KEY``. As
with the OpenAI SDK, ``base_url`` includes the version prefix
(``https://api.openai.com/v1``, ``http://localhost:11434/v1`` for Ollama...).

Streaming (``stream: true``) reads server-sent ``data:`` lines carrying
``choices[0].delta`` (text in ``content``, tool calls as ``tool_calls``
deltas keyed by ``index``) until ``data: [DONE]``; usage arrives in a final
chunk because we ask for ``stream_options.include_usage``.

Parameters: ``temperature``, ``top_p`` and ``stop`` are sent as given;
``response_format`` as ``{"type": "json_schema", "json_schema": {name, schema,
strict}}`` (or ``{"type": "json_object"}``), the answer's text parsed as JSON
into ``ChatResult.parsed``; image parts of user messages go as they are
(``{"type": "image_url", ...}``). ``max_tokens`` is sent as
``max_completion_tokens`` to the official API (``api.openai.com``, where
``max_tokens`` is deprecated and refused by reasoning models) and to any
server for the reasoning families (``o1``, ``o3``, ``o4``, ``gpt-5``…); other
OpenAI-compatible servers (Ollama, vLLM, LM Studio...) get ``max_tokens``,
which they all understand (:func:`max_tokens_field`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rf.llm._http import HttpChat
from rf.llm.types import ChatResult, ToolCall, Usage, parse_arguments, parse_structured

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Model families that refuse ``max_tokens`` (reasoning models): they need ``max_completion_tokens``.
_COMPLETION_TOKENS_MODELS = ("o1", "o3", "o4", "gpt-5")


def max_tokens_field(base_url: str, model: str) -> str:
    """The body field that caps the reply: ``max_completion_tokens`` for the official API and
    the reasoning families, ``max_tokens`` for other OpenAI-compatible servers."""
    from urllib.parse import urlsplit

    if (urlsplit(base_url).hostname or "").endswith("api.openai.com"):
        return "max_completion_tokens"
    family = model.rsplit("/", 1)[-1].lower()
    if any(family == f or family.startswith(f + "-") or family.startswith(f + ".") for f in _COMPLETION_TOKENS_MODELS):
        return "max_completion_tokens"
    return "max_tokens"


def to_wire_response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["schema"] is None:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": fmt["name"], "schema": fmt["schema"]}
    if fmt["strict"]:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}

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
        temperature: float | None = None,
        top_p: float | None = None,
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatResult:
        url = f"{self.base_url}/chat/completions"
        body: dict[str, Any] = {"model": model, "messages": to_wire_messages(messages)}
        if tools:
            body["tools"] = to_wire_tools(tools)
        if max_tokens is not None:
            body[max_tokens_field(self.base_url, model)] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if top_p is not None:
            body["top_p"] = top_p
        if stop:
            body["stop"] = stop
        if response_format is not None:
            body["response_format"] = to_wire_response_format(response_format)
        if on_chunk is None:
            result = self._parse(self.post_json(url, self._headers(), body), model)
        else:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
            result = self._stream(url, body, model, on_chunk)
        if response_format is not None and not result.tool_calls:
            result.parsed = parse_structured(result.text, f"provider {self.provider!r}")
        result.retries = self.retries
        return result

    def _parse(self, data: dict[str, Any], model: str) -> ChatResult:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error(f"provider {self.provider!r} answered without choices: {json.dumps(data)[:300]}")
        message = choices[0].get("message") or {}
        if message.get("refusal") and not message.get("content"):
            raise self._error(f"model {data.get('model') or model!r} of provider {self.provider!r} refused: "
                              f"{str(message['refusal'])[:300]}", "rephrase the request")
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
