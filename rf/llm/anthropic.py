"""Anthropic providers: the Messages API wire format.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``
headers. As with Anthropic's SDK, ``base_url`` is the API root *without* the
version (``https://api.anthropic.com``).

Translation from the neutral shape: system messages are joined into the
separate ``system`` field; an assistant's tool calls become ``tool_use``
content blocks; tool results become ``tool_result`` blocks of a *user*
message; consecutive messages of one role are merged into one turn (the API
wants user and assistant turns to alternate). ``max_tokens`` is required by
the API: 4096 unless the caller gives one. ``temperature`` and ``top_p`` go as
given, ``stop`` as ``stop_sequences``. Image parts (OpenAI's ``image_url``)
become ``{"type": "image", "source": ...}`` blocks: ``base64`` for a data URL,
``url`` otherwise.

Structured output: the Messages API has no ``response_format``; the schema
becomes the ``input_schema`` of one extra tool (named as the format) that the
model is forced to call (``tool_choice: {"type": "tool", "name": ...}``). That
call's input is the answer: ``ChatResult.parsed``, with its JSON as ``text``
(and as the only chunk when streaming), and not a tool call. A request that
also offers tools is refused: forcing the answer tool would keep the model
from calling them (run the tool loop first, then ask for the structured answer).

Streaming reads the server-sent events ``message_start`` (model, input
tokens), ``content_block_start``/``content_block_delta`` (``text_delta`` or
``input_json_delta`` for a tool call's arguments), ``message_delta`` (stop
reason, output tokens) and ``message_stop``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rf.errors import UsageError
from rf.llm._http import HttpChat
from rf.llm.types import ChatResult, ToolCall, Usage, parse_arguments, parse_data_url

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def to_wire(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Neutral messages → (system prompt, Messages API turns)."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            if m["content"]:
                system_parts.append(m["content"])
            continue
        blocks: list[dict[str, Any]] = []
        if role == "tool":
            role = "user"
            blocks.append({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]})
        elif isinstance(m["content"], list):  # text and image parts (user messages only)
            blocks.extend(_wire_part(part) for part in m["content"] if part.get("type") != "text" or part["text"])
        else:
            if m["content"]:
                blocks.append({"type": "text", "text": m["content"]})
            for c in m.get("tool_calls", []):
                blocks.append({"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]})
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise UsageError("the conversation has no user message", "Anthropic models need at least one user message")
    return "\n\n".join(system_parts), turns


def _wire_part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    url = part["image_url"]["url"]
    data = parse_data_url(url)
    if data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": data[0], "data": data[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def to_wire_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in tools]


def _usage(data: Any) -> tuple[int, int]:
    if not isinstance(data, dict):
        return 0, 0
    prompt = sum(int(data.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens",
                                                 "cache_read_input_tokens"))
    return prompt, int(data.get("output_tokens") or 0)


class AnthropicClient(HttpChat):
    """The Anthropic Messages API (or a compatible gateway)."""

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
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
        url = f"{self.base_url}/v1/messages"
        system, turns = to_wire(messages)
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens or DEFAULT_MAX_TOKENS, "messages": turns}
        if system:
            body["system"] = system
        if tools and response_format is not None:
            raise UsageError("an Anthropic provider cannot take tools and response_format in one call",
                             "its structured output is a forced tool call: run the tools first, then ask for "
                             "the structured answer in a call without tools")
        if tools:
            body["tools"] = to_wire_tools(tools)
        if temperature is not None:
            body["temperature"] = temperature
        if top_p is not None:
            body["top_p"] = top_p
        if stop:
            body["stop_sequences"] = stop
        answer_tool = None
        if response_format is not None:
            answer_tool = response_format["name"]
            schema = response_format["schema"] or {"type": "object"}
            body["tools"] = [{"name": answer_tool, "description": "Give your answer by calling this tool: its "
                              "input is the answer, in the requested JSON schema.", "input_schema": schema}]
            body["tool_choice"] = {"type": "tool", "name": answer_tool}
        if on_chunk is None:
            result = self._parse(self.post_json(url, self._headers(), body), model)
        else:
            body["stream"] = True
            # the answer tool's input is sent once it is whole (see _structured)
            result = self._stream(url, body, model, on_chunk if answer_tool is None else lambda _piece: None)
        if answer_tool is not None:
            self._structured(result, answer_tool, on_chunk)
        result.retries = self.retries
        return result

    def _structured(self, result: ChatResult, answer_tool: str, on_chunk: Callable[[str], None] | None) -> None:
        """The forced answer tool's input → ``parsed`` (and ``text``, the one chunk when streaming)."""
        answer = next((c for c in result.tool_calls if c.name == answer_tool), None)
        if answer is None:
            raise self._error(f"provider {self.provider!r} did not call the structured-output tool "
                              f"{answer_tool!r} it was forced to call (finish: {result.finish_reason})",
                              "raise max_tokens (the answer may be cut short) or try again")
        result.tool_calls = [c for c in result.tool_calls if c is not answer]
        result.parsed = answer.arguments
        result.text = json.dumps(answer.arguments, ensure_ascii=False)
        if result.finish_reason == "tool_calls":
            result.finish_reason = "stop"
        if on_chunk is not None:
            on_chunk(result.text)

    def _parse(self, data: dict[str, Any], model: str) -> ChatResult:
        if data.get("type") == "error":
            raise self._error(f"provider {self.provider!r} reported an error: {json.dumps(data.get('error'))[:300]}")
        content = data.get("content")
        if not isinstance(content, list):
            raise self._error(f"provider {self.provider!r} answered without content: {json.dumps(data)[:300]}")
        text, calls = [], []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                text.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                calls.append(ToolCall(str(block.get("id")), str(block.get("name")),
                                      parse_arguments(block.get("input"), f"provider {self.provider!r} tool call")))
        prompt, completion = _usage(data.get("usage"))
        return ChatResult(text="".join(text), tool_calls=calls, usage=Usage.of(prompt, completion),
                          model=str(data.get("model") or model), provider=self.provider,
                          finish_reason=_FINISH.get(str(data.get("stop_reason")), "tool_calls" if calls else "stop"))

    def _stream(self, url: str, body: dict[str, Any], model: str, on_chunk: Callable[[str], None]) -> ChatResult:
        text: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        prompt = completion = 0
        answered_model = model
        stop_reason = ""
        stopped = False
        for event, data in self.post_sse(url, self._headers(), body):
            if not isinstance(data, dict):
                continue
            kind = event or str(data.get("type") or "")
            if kind == "error":
                raise self._error(f"provider {self.provider!r} reported an error mid-stream: "
                                  f"{json.dumps(data.get('error'))[:300]}")
            if kind == "message_start":
                message = data.get("message") or {}
                answered_model = str(message.get("model") or answered_model)
                prompt, completion = _usage(message.get("usage"))
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                blocks[int(data.get("index", len(blocks)))] = {
                    "type": block.get("type"), "id": block.get("id"), "name": block.get("name"), "json": "",
                }
                if block.get("type") == "text" and block.get("text"):
                    text.append(block["text"])
                    on_chunk(block["text"])
            elif kind == "content_block_delta":
                delta = data.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    text.append(delta["text"])
                    on_chunk(delta["text"])
                elif delta.get("type") == "input_json_delta":
                    slot = blocks.setdefault(int(data.get("index", 0)), {"type": "tool_use", "json": ""})
                    slot["json"] += delta.get("partial_json") or ""
            elif kind == "message_delta":
                stop_reason = str((data.get("delta") or {}).get("stop_reason") or stop_reason)
                usage = data.get("usage") or {}
                if usage.get("output_tokens") is not None:
                    completion = int(usage["output_tokens"])
                if usage.get("input_tokens") is not None:
                    prompt = _usage(usage)[0]
            elif kind == "message_stop":
                stopped = True
                break
        if not stopped:
            raise self._error(f"provider {self.provider!r} ended the stream early (no message_stop)",
                              "the connection may have been cut; try again")
        calls = [
            ToolCall(str(b.get("id")), str(b.get("name")),
                     parse_arguments(b["json"] or "{}", f"provider {self.provider!r} tool call"))
            for _, b in sorted(blocks.items()) if b.get("type") == "tool_use"
        ]
        return ChatResult(text="".join(text), tool_calls=calls, usage=Usage.of(prompt, completion),
                          model=answered_model, provider=self.provider,
                          finish_reason=_FINISH.get(stop_reason, "tool_calls" if calls else "stop"))
