"""The built-in ``mock`` provider: offline and deterministic.

It needs no network and no key, so a new workspace can run agents that call
``ctx.llm`` straight away, and tests get the same answer every time:

- after a tool result (the last message has role ``tool``) it answers
  ``"mock reply: <tool result>"``, so a tool loop always ends;
- otherwise the first rule of ``[[llm.mock.rules]]`` in ``rf.toml`` whose
  ``match`` occurs in the last user message answers (a ``reply`` text, or a
  scripted ``tool_call``);
- otherwise it echoes: ``"mock reply: <last user message>"``;
- an eval judge's request (the system message starts with :data:`JUDGE_MARKER`, see
  rf.evals.judge) gets a deterministic verdict instead (:func:`judge_verdict`).

A ``tool_call`` rule only fires when the request offers a tool of that name
(a real model cannot call a tool it was not given); otherwise the next rule
is tried. Token usage counts whitespace-separated words: prompt = every
message's content, completion = the reply (or the tool call's name and JSON
arguments; an image counts as one word). Streaming splits the reply into at
most three word-aligned chunks.

It takes the parameters the real providers take: ``stop`` cuts the reply
before the first stop sequence, ``max_tokens`` after that many words;
``temperature`` and ``top_p`` are accepted and change nothing (it is
deterministic). With a ``response_format`` the answer is JSON: a rule's
``reply`` when it is a JSON object, else a minimal valid instance of the
schema (:func:`instance_of`: every listed property, strings ``"mock"``,
numbers their minimum or 0, the first ``enum``/``anyOf`` choice...).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rf.config import RF_TOML_KEYS, check_keys
from rf.errors import WorkspaceError
from rf.llm.types import TOOL_NAME_RE, ChatResult, ToolCall, Usage, content_images, content_text, last_user_text

DEFAULT_MODEL = "mock"
PREFIX = "mock reply: "
#: How an eval judge's request starts its system message (rf.evals.judge).
JUDGE_MARKER = "rf eval judge"
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|`([^`]+)`')


def judge_verdict(request: str) -> str:
    """The mock's verdict on a judge request (JSON ``{"rubric", "output", ...}``), as JSON
    ``{"pass", "score", "reason"}``: it passes when every quoted term of the rubric
    (``"..."``, ``“...”`` or ```...```) occurs in the output, ignoring case; a rubric without
    quoted terms passes when the output is not empty."""
    try:
        data = json.loads(request)
        rubric, output = str(data["rubric"]), str(data.get("output") or "")
    except (ValueError, TypeError, KeyError):
        return json.dumps({"pass": False, "score": 0, "reason": "mock judge: the request is not a judge's JSON"})
    terms = [next(g for g in m.groups() if g) for m in _QUOTED.finditer(rubric)]
    if not terms:
        passed = bool(output.strip())
        return json.dumps({"pass": passed, "score": 1 if passed else 0,
                           "reason": "mock judge: the output is " + ("not empty" if passed else "empty")})
    missing = [t for t in terms if t.lower() not in output.lower()]
    reason = (f"mock judge: missing {', '.join(map(repr, missing))}" if missing
              else f"mock judge: found {', '.join(map(repr, terms))}")
    return json.dumps({"pass": not missing, "score": round(1 - len(missing) / len(terms), 3), "reason": reason})


@dataclass
class MockRule:
    """One scripted answer: when ``match`` is in the last user message, reply or call a tool."""

    match: str
    regex: bool = False
    reply: str | None = None
    tool_name: str | None = None
    tool_arguments: dict[str, Any] = field(default_factory=dict)
    _pattern: re.Pattern[str] | None = None

    def matches(self, text: str) -> bool:
        if self._pattern is not None:
            return self._pattern.search(text) is not None
        return self.match in text


def parse_rules(llm_config: dict[str, Any], source: str = "rf.toml") -> list[MockRule]:
    """Read ``[[llm.mock.rules]]`` (clear errors, naming the rule, for bad entries)."""
    mock = llm_config.get("mock", {})
    if not isinstance(mock, dict):
        raise WorkspaceError(f"{source}: [llm.mock] must be a table", "see the [[llm.mock.rules]] example in the docs")
    # Its keys (and each rule's) are declared once, in rf.config.RF_TOML_KEYS.
    check_keys(mock, RF_TOML_KEYS, source, "rf.toml", WorkspaceError, table="llm.mock")
    raw_rules = mock.get("rules", [])
    if not isinstance(raw_rules, list):
        raise WorkspaceError(f"{source}: llm.mock.rules must be an array of tables", "write each rule as [[llm.mock.rules]]")
    rules: list[MockRule] = []
    for i, raw in enumerate(raw_rules, start=1):
        where = f"{source}: [[llm.mock.rules]] #{i}"
        if not isinstance(raw, dict):
            raise WorkspaceError(f"{where} must be a table")
        match = raw.get("match")
        if not isinstance(match, str) or not match:
            raise WorkspaceError(f"{where} needs match = \"text\" (a substring of the last user message)")
        regex = raw.get("regex", False)
        if not isinstance(regex, bool):
            raise WorkspaceError(f"{where}: regex must be true or false")
        pattern = None
        if regex:
            try:
                pattern = re.compile(match)
            except re.error as exc:
                raise WorkspaceError(f"{where}: match is not a valid regular expression: {exc}") from None
        reply, tool_call = raw.get("reply"), raw.get("tool_call")
        if (reply is None) == (tool_call is None):
            raise WorkspaceError(f"{where} needs exactly one of reply or tool_call",
                                 'e.g. reply = "Refunds take 5 days." or tool_call = { name = "lookup", arguments = { id = "42" } }')
        rule = MockRule(match=match, regex=regex, _pattern=pattern)
        if reply is not None:
            if not isinstance(reply, str):
                raise WorkspaceError(f"{where}: reply must be a string")
            rule.reply = reply
        else:
            if not isinstance(tool_call, dict) or not isinstance(tool_call.get("name"), str) \
                    or not TOOL_NAME_RE.match(tool_call["name"]):
                raise WorkspaceError(f"{where}: tool_call needs a valid name",
                                     'e.g. tool_call = { name = "crm__get-customer", arguments = { id = "42" } }')
            arguments = tool_call.get("arguments", {})
            if not isinstance(arguments, dict):
                raise WorkspaceError(f"{where}: tool_call.arguments must be a table")
            rule.tool_name = tool_call["name"]
            rule.tool_arguments = arguments
        rules.append(rule)
    return rules


def words(text: str) -> int:
    return len(text.split())


def chunks_of(text: str, parts: int = 3) -> list[str]:
    """Split ``text`` into at most ``parts`` word-aligned pieces that join back to it."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    if not tokens:
        return [text] if text else []
    size = -(-len(tokens) // parts)
    return ["".join(tokens[i:i + size]) for i in range(0, len(tokens), size)]


def instance_of(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small, deterministic value valid for the JSON Schema ``schema`` (common keywords)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 20:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key) if isinstance(target, dict) else None
        return instance_of(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return instance_of(schema[key][0], root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties")
        return {name: instance_of(sub, root, depth + 1) for name, sub in props.items()} if isinstance(props, dict) else {}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [instance_of(schema.get("items"), root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = low if isinstance(low, int | float) and not isinstance(low, bool) else 0
        if "exclusiveMinimum" in schema and value == schema["exclusiveMinimum"]:
            value += 1
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = "mock"
    size = int(schema.get("minLength") or 0)
    return text + "k" * max(size - len(text), 0)


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


class MockClient:
    """The mock provider (see the module docstring for its behaviour)."""

    def __init__(self, provider: str, rules: list[MockRule]) -> None:
        self.provider = provider
        self.rules = rules

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
        prompt_tokens = sum(words(content_text(m["content"])) + len(content_images(m["content"]))
                            + sum(words(json.dumps(t["arguments"])) + 1 for t in m.get("tool_calls", []))
                            for m in messages)
        offered = {t["name"] for t in tools}
        text, calls = "", []
        if messages[-1]["role"] == "tool":
            text = PREFIX + content_text(messages[-1]["content"])
        elif messages[0]["role"] == "system" and str(messages[0]["content"]).startswith(JUDGE_MARKER):
            text = judge_verdict(last_user_text(messages))
        else:
            question = last_user_text(messages)
            for rule in self.rules:
                if not rule.matches(question):
                    continue
                if rule.reply is not None:
                    text = rule.reply
                    break
                if rule.tool_name in offered:
                    assert rule.tool_name is not None
                    seed = json.dumps([len(messages), rule.tool_name, rule.tool_arguments], sort_keys=True)
                    call_id = "call_mock_" + hashlib.sha256(seed.encode()).hexdigest()[:12]
                    calls = [ToolCall(call_id, rule.tool_name, dict(rule.tool_arguments))]
                    break
            else:
                text = PREFIX + question
        parsed = None
        if response_format is not None and not calls:
            parsed = _json_object(text)
            if parsed is None:
                parsed = instance_of(response_format["schema"]) if response_format["schema"] is not None else {}
            text = json.dumps(parsed, ensure_ascii=False)
        text, stopped = _cut_at_stop(text, stop) if parsed is None else (text, False)
        if max_tokens is not None and words(text) > max_tokens:
            text = " ".join(text.split()[:max_tokens])
            finish = "length"
        else:
            finish = "tool_calls" if calls else "stop"
        completion = words(text) + sum(1 + words(json.dumps(c.arguments)) for c in calls)
        if on_chunk is not None:
            for piece in chunks_of(text):
                on_chunk(piece)
        if stopped and finish == "tool_calls":
            finish = "stop"
        return ChatResult(text=text, tool_calls=calls, usage=Usage.of(prompt_tokens, completion), model=model,
                          provider=self.provider, finish_reason=finish,
                          parsed=parsed if finish != "length" else None)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
