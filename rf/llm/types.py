"""The neutral shapes of a chat: messages, tool specs, results.

Every provider client takes and returns these; each one translates them to
and from its own wire format. They are plain dicts and dataclasses so they
cross the worker channel as JSON. This module is imported by agent workers
(``ctx.llm``): it must stay light (standard library only).

A **message** is a dict::

    {"role": "system" | "user" | "assistant" | "tool", "content": "text"}

- an assistant message may carry ``"tool_calls": [{"id", "name", "arguments": {...}}]``
  (the OpenAI shape ``{"id", "type": "function", "function": {"name", "arguments": "<json>"}}``
  is accepted too);
- a tool message answers one call: ``{"role": "tool", "tool_call_id": "...", "content": "..."}``
  (``"name"`` optional);
- ``content`` may also be a list of ``{"type": "text", "text": ...}`` parts; they are joined —
  unless a *user* message has image parts ``{"type": "image_url", "image_url": {"url": ...}}``
  (the OpenAI shape; ``url`` is ``https://...`` or a ``data:image/...;base64,...`` URL): its
  content then stays a list of text and image parts (see :func:`content_text`).

A **response format** (structured output) is ``{"name", "schema": <JSON Schema object> | None,
"strict": bool}`` (see :func:`normalize_response_format`): the answer is JSON, parsed into
:attr:`ChatResult.parsed`.

A **tool spec** is ``{"name", "description", "parameters": <JSON Schema object>}``
(the OpenAI ``{"type": "function", "function": {...}}`` and Anthropic
``{"name", "description", "input_schema"}`` shapes are accepted too).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rf.errors import RfError, UsageError

ROLES = ("system", "user", "assistant", "tool")
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ProviderError(RfError):
    """An LLM provider could not be reached or answered with an error.

    The message names the provider and, for HTTP errors, the status and the
    start of the response body — never the API key.
    """

    code = "provider"
    http_status = 502


class ToolLoopError(RfError):
    """``run_tools`` hit ``max_iterations`` while the model still asked for tools.

    ``result`` is the last :class:`ChatResult` (whose ``tool_calls`` were not
    run) and ``messages`` the conversation so far, so a caller can inspect or
    continue it.
    """

    code = "tool_loop"
    http_status = 500

    def __init__(self, message: str, hint: str | None = None, *, result: ChatResult | None = None,
                 messages: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, hint)
        self.result = result
        self.messages = messages or []


@dataclass
class Usage:
    """Token counts of one call (or the sum over a tool loop)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.total_tokens + other.total_tokens)

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt, completion, prompt + completion)

    @classmethod
    def from_dict(cls, data: Any) -> Usage:
        if not isinstance(data, dict):
            return cls()
        p, c = int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0)
        return cls(p, c, int(data.get("total_tokens") or p + c))


@dataclass
class ToolCall:
    """A call the model asks for: run tool ``name`` with ``arguments``."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass
class ChatResult:
    """The answer of one chat call.

    Attributes:
        text: the reply text ("" when the model only asked for tools).
        tool_calls: tools the model asks the caller to run.
        usage: token counts (for ``run_tools``: summed over all rounds).
        model: the model that answered.
        provider: the provider's name in this workspace.
        finish_reason: ``stop``, ``tool_calls`` or ``length`` (normalised across providers).
        messages: for ``run_tools``, the whole conversation including tool
            calls and results (empty for a single ``chat``).
        parsed: with a ``response_format``, the structured answer (the JSON
            value of ``text``); None otherwise.
        retries: how many times the provider was asked again (HTTP 429 / 5xx).
    """

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    finish_reason: str = "stop"
    messages: list[dict[str, Any]] = field(default_factory=list)
    parsed: Any = None
    #: How many times the call was retried (HTTP 429 / 5xx) before this answer.
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "tool_calls": [t.to_dict() for t in self.tool_calls],
            "usage": self.usage.to_dict(),
            "model": self.model,
            "provider": self.provider,
            "finish_reason": self.finish_reason,
        }
        if self.messages:
            out["messages"] = self.messages
        if self.parsed is not None:
            out["parsed"] = self.parsed
        if self.retries:
            out["retries"] = self.retries
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatResult:
        return cls(
            text=str(data.get("text") or ""),
            tool_calls=[ToolCall(str(t["id"]), str(t["name"]), dict(t.get("arguments") or {}))
                        for t in data.get("tool_calls") or []],
            usage=Usage.from_dict(data.get("usage")),
            model=str(data.get("model") or ""),
            provider=str(data.get("provider") or ""),
            finish_reason=str(data.get("finish_reason") or "stop"),
            messages=list(data.get("messages") or []),
            parsed=data.get("parsed"),
            retries=int(data.get("retries") or 0),
        )

    def as_message(self) -> dict[str, Any]:
        """This reply as an assistant message, to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [t.to_dict() for t in self.tool_calls]
        return message


# ------------------------------------------------------------------ message helpers


def system(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str, tool_calls: list[ToolCall] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [t.to_dict() for t in tool_calls]
    return message


def tool_result(call_id: str, content: str, name: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "tool", "tool_call_id": call_id, "content": content}
    if name:
        message["name"] = name
    return message


# ------------------------------------------------------------------ validation


_IMAGE_HINT = ('an image part is {"type": "image_url", "image_url": {"url": "https://..."}} or a base64 '
               '"data:image/png;base64,..." URL')
_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+);base64,([A-Za-z0-9+/=\s]+)$")


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,XXXX`` → (``image/png``, ``XXXX``); None for any other URL."""
    m = _DATA_URL.match(url)
    return (m.group(1), "".join(m.group(2).split())) if m else None


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    if isinstance(image, str):
        image = {"url": image}
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not (url.startswith(("https://", "http://")) or parse_data_url(url)):
        raise UsageError(f"{where} is not a valid image part", _IMAGE_HINT)
    out: dict[str, Any] = {"url": url}
    if isinstance(image, dict) and isinstance(image.get("detail"), str):
        out["detail"] = image["detail"]
    return {"type": "image_url", "image_url": out}


def _content_of(content: Any, where: str, role: str) -> str | list[dict[str, Any]]:
    """A message's content: a string, or (a user message with images) a list of text/image parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                if role != "user":
                    raise UsageError(f"{where}.content[{i}]: only user messages may hold images")
                if part.get("type") == "image":
                    raise UsageError(f"{where}.content[{i}] uses Anthropic's image shape", _IMAGE_HINT)
                parts.append(_image_part(part, f"{where}.content[{i}]"))
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise UsageError(f"{where}.content[{i}] is not a text or image part",
                                 'use a string, or parts like {"type": "text", "text": "..."}; ' + _IMAGE_HINT)
        if any(p["type"] == "image_url" for p in parts):
            return parts
        return "".join(p["text"] for p in parts)
    raise UsageError(f"{where}.content must be a string (got {type(content).__name__})")


def content_text(content: Any) -> str:
    """The text of a normalized message's content (image parts left out)."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")


def content_images(content: Any) -> list[str]:
    """The image URLs of a normalized message's content."""
    if not isinstance(content, list):
        return []
    return [p["image_url"]["url"] for p in content if isinstance(p, dict) and p.get("type") == "image_url"]


def parse_arguments(raw: Any, where: str = "tool call") -> dict[str, Any]:
    """Tool-call arguments as a dict (from a dict, a JSON string or nothing)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            raise ProviderError(f"{where}: arguments are not valid JSON: {raw[:200]!r}") from None
        if isinstance(value, dict):
            return value
    raise ProviderError(f"{where}: arguments must be a JSON object (got {str(raw)[:200]!r})")


def _tool_call(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be an object with id, name and arguments")
    fn: dict[str, Any] = raw["function"] if isinstance(raw.get("function"), dict) else raw
    name, call_id = fn.get("name"), raw.get("id")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where} has no name")
    if not isinstance(call_id, str) or not call_id:
        raise UsageError(f"{where} has no id")
    try:
        arguments = parse_arguments(fn.get("arguments"), where)
    except ProviderError as exc:
        raise UsageError(exc.message) from None
    return {"id": call_id, "name": name, "arguments": arguments}


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate a conversation and return it in the neutral shape (see module doc)."""
    if isinstance(messages, str):
        messages = [user(messages)]
    if not isinstance(messages, list) or not messages:
        raise UsageError("messages must be a non-empty list of {role, content} objects",
                         'e.g. [{"role": "user", "content": "Hello"}]')
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise UsageError(f"{where} must be an object like {{\"role\": \"user\", \"content\": \"...\"}}")
        role = raw.get("role")
        if role not in ROLES:
            raise UsageError(f"{where}.role is {role!r}", f"use one of: {', '.join(ROLES)}")
        message: dict[str, Any] = {"role": role, "content": _content_of(raw.get("content"), where, role)}
        if role == "assistant" and raw.get("tool_calls"):
            calls = raw["tool_calls"]
            if not isinstance(calls, list):
                raise UsageError(f"{where}.tool_calls must be a list")
            message["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
        if role == "tool":
            call_id = raw.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise UsageError(f"{where} is a tool result without tool_call_id",
                                 "answer a tool call with {\"role\": \"tool\", \"tool_call_id\": CALL_ID, \"content\": ...}")
            message["tool_call_id"] = call_id
            if isinstance(raw.get("name"), str):
                message["name"] = raw["name"]
        out.append(message)
    return out


def normalize_tools(tools: Any) -> list[dict[str, Any]]:
    """Validate tool specs and return them as ``{name, description, parameters}``."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise UsageError("tools must be a list of tool specs",
                         'e.g. [{"name": "get_weather", "description": "...", "parameters": {"type": "object", ...}}]')
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, raw in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise UsageError(f"{where} must be an object with name, description and parameters")
        spec: dict[str, Any] = raw["function"] if raw.get("type") == "function" and isinstance(raw.get("function"), dict) else raw
        name = spec.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            raise UsageError(f"{where} has an invalid name {name!r}",
                             "tool names use letters, digits, '_' and '-' (at most 64 characters)")
        if name in seen:
            raise UsageError(f"{where}: two tools are named {name!r}")
        seen.add(name)
        params = spec.get("parameters", spec.get("input_schema"))
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise UsageError(f"{where} ({name}): parameters must be a JSON Schema object",
                             'e.g. {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}')
        description = spec.get("description") or ""
        if not isinstance(description, str):
            raise UsageError(f"{where} ({name}): description must be a string")
        out.append({"name": name, "description": description, "parameters": params})
    return out


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return content_text(message["content"])
    return ""


# ------------------------------------------------------------------ sampling and structured output

def normalize_response_format(value: Any) -> dict[str, Any] | None:
    """``response_format`` → ``{"name", "schema", "strict"}`` (None for plain text).

    Accepted: OpenAI's ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"?}}``,
    ``{"type": "json_object"}`` (any JSON object: ``schema`` None), ``{"type": "text"}``, or a
    bare JSON Schema of an object (``{"type": "object", "properties": {...}}``; named ``answer``).
    """
    if value is None:
        return None
    hint = ('e.g. {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object", '
            '"properties": {"city": {"type": "string"}}, "required": ["city"]}}}, or the bare schema')
    if not isinstance(value, dict):
        raise UsageError("response_format must be an object", hint)
    kind = value.get("type")
    if kind == "text" and len(value) == 1:
        return None
    if kind == "json_object":
        return {"name": "answer", "schema": None, "strict": False}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise UsageError("response_format.json_schema must be an object with a schema", hint)
        name, schema, strict = spec.get("name", "answer"), spec["schema"], spec.get("strict", False)
    elif kind == "object" or "properties" in value:
        name, schema, strict = "answer", value, False
    else:
        raise UsageError(f"response_format has an unknown type {kind!r}", hint)
    if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
        raise UsageError(f"response_format name {name!r} is invalid",
                         "use letters, digits, '_' and '-' (at most 64 characters)")
    if schema.get("type", "object") != "object":
        raise UsageError("response_format schema must describe a JSON object (\"type\": \"object\")",
                         "wrap other values in an object property")
    if not isinstance(strict, bool):
        raise UsageError("response_format.json_schema.strict must be true or false")
    return {"name": name, "schema": schema, "strict": strict}


def normalize_sampling(temperature: Any = None, top_p: Any = None, stop: Any = None,
                       max_tokens: Any = None) -> dict[str, Any]:
    """Validate the sampling parameters; the ones given, as ``{name: value}`` (stop as a list)."""
    out: dict[str, Any] = {}
    for name, value, high in (("temperature", temperature, 2.0), ("top_p", top_p, 1.0)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= high):
            raise UsageError(f"{name} must be a number between 0 and {high:g} (got {value!r})")
        out[name] = value
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not stops or not all(isinstance(x, str) and x for x in stops):
            raise UsageError("stop must be a non-empty string or a list of them", 'e.g. stop=["\\n\\n", "END"]')
        out["stop"] = stops
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise UsageError("max_tokens must be a positive integer")
        out["max_tokens"] = max_tokens
    return out


def parse_structured(text: str, where: str) -> Any:
    """The JSON answer of a structured-output call (ProviderError when the model sent no JSON)."""
    try:
        return json.loads(text)
    except ValueError:
        raise ProviderError(f"{where} did not answer with JSON as response_format asked: {text[:200]!r}",
                            "check the schema, raise max_tokens (the answer may be cut short) or try again") from None


def split_model(model: str | None) -> tuple[str | None, str | None]:
    """``"provider:model"`` → (provider, model); ``"model"`` → (None, model); None → (None, None).

    Only the first ``:`` splits, so ``"local:llama3:8b"`` is provider
    ``local``, model ``llama3:8b``. ``"provider:"`` means the provider's
    default model.
    """
    if model is None:
        return None, None
    if not isinstance(model, str) or not model.strip():
        raise UsageError("model must be a non-empty string like 'gpt-4o-mini' or 'PROVIDER:MODEL'")
    provider, sep, rest = model.partition(":")
    if not sep:
        return None, model
    return provider, rest or None
