"""Tools for LLM calls: specs from Python functions, and the tool loop.

A *tool* is either

- a plain Python function — its spec is derived from the signature: the
  name, the docstring (first part → description; a Google-style ``Args:``
  section → parameter descriptions) and the type hints (``str``, ``int``,
  ``float``, ``bool``, ``list``/``list[X]``, ``dict``, ``Literal[...]``,
  ``X | None``); parameters without a default are required; or
- an object with ``name``, ``description``, ``parameters`` (a JSON Schema
  object) and ``__call__(**kwargs)`` — e.g. ``ctx.connectors.tool(slug, resource)``;
- or, for :meth:`LLM.chat` only, a ready JSON spec ``{"name", "description", "parameters"}``.

:func:`run_tools` (also ``ctx.llm.run_tools``) is the loop: ask the model;
if it asks for tools, run them, append the calls and their results, ask
again — until a reply without tool calls. Decisions:

- ``max_iterations`` counts *model calls*. If the model still asks for tools
  after that many, :class:`~rf.llm.types.ToolLoopError` is raised (carrying
  the last result and the conversation): returning a half-finished answer
  silently would be worse.
- A tool that raises, gets bad arguments or does not exist does not end the
  loop: the model receives ``{"error": "..."}`` as that call's result (so it
  can correct itself) and the agent's log gets a warning line.
- A tool's return value is sent as is when it is a string, else as JSON.
- The returned result's ``usage`` is the sum over every round, and
  ``messages`` holds the whole conversation (calls and results included).

Runs inside the worker: standard library only.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rf.errors import UsageError
from rf.llm.types import TOOL_NAME_RE, ChatResult, ToolCall, ToolLoopError, Usage, tool_result, user

if TYPE_CHECKING:
    from rf.runtime.context import Context

_SIMPLE: dict[Any, str] = {str: "string", bool: "boolean", int: "integer", float: "number"}
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _schema(hint: Any, where: str) -> dict[str, Any]:
    """JSON Schema of one parameter type hint."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (list, tuple, set) or origin in (list, tuple, set):
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Ellipsis:
            item = _schema(args[0], where)
            if item:
                schema["items"] = item
        return schema
    if hint is dict or origin is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        values = list(args)
        kinds = {type(v) for v in values}
        schema = {"enum": values}
        if len(kinds) == 1 and next(iter(kinds)) in _SIMPLE:
            schema["type"] = _SIMPLE[next(iter(kinds))]
        return schema
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _schema(rest[0], where)
        return {"anyOf": [_schema(a, where) for a in rest]}
    raise UsageError(f"{where} has type {getattr(hint, '__name__', hint)!s}, which a tool cannot take",
                     "tool parameters may be str, int, float, bool, list, dict, Literal[...] or X | None")


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a docstring (Google style ``Args:``)."""
    doc = inspect.getdoc(fn) or ""
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        m = _SECTION.match(line)
        if m:
            section, current = m.group(1).lower(), None
            continue
        if section is None:
            description.append(line)
        elif section in ("args", "arguments", "parameters"):
            arg = _ARG_LINE.match(line)
            if arg and not line.startswith((" " * 8, "\t\t")):
                current = arg.group(1).lstrip("*")
                params[current] = arg.group(2).strip()
            elif current and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
    return "\n".join(description).strip(), params


def _hints(fn: Callable[..., Any], name: str, signature: inspect.Signature) -> dict[str, Any]:
    """Resolved type hints; a string annotation that cannot be resolved is an error, not "any"."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - e.g. a forward reference to a local class: resolve one by one below
        pass
    hints: dict[str, Any] = {}
    for param in signature.parameters.values():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, getattr(fn, "__globals__", {}), {})  # the agent's own annotation
            except Exception:  # noqa: BLE001
                raise UsageError(f"tool {name!r}: parameter {param.name!r} has type {annotation!r}, which cannot "
                                 "be resolved",
                                 "tool parameters may be str, int, float, bool, list, dict, Literal[...] or X | None"
                                 ) from None
        hints[param.name] = annotation
    return hints


def function_spec(fn: Callable[..., Any]) -> dict[str, Any]:
    """The tool spec ``{name, description, parameters}`` of a plain Python function."""
    name = getattr(fn, "__name__", "")
    if not TOOL_NAME_RE.match(name):
        raise UsageError(f"cannot use {fn!r} as a tool: its name {name!r} is not a valid tool name",
                         "tool names use letters, digits, '_' and '-' (at most 64 characters)")
    if inspect.iscoroutinefunction(fn):
        raise UsageError(f"tool {name!r} is an async function", "tools must be plain (synchronous) functions")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        raise UsageError(f"cannot read the signature of tool {name!r}") from None
    hints = _hints(fn, name, signature)
    description, param_docs = _doc_parts(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise UsageError(f"tool {name!r}: parameter {param.name!r} is positional-only",
                             "tools are called with keyword arguments")
        schema = _schema(hints.get(param.name, inspect.Parameter.empty), f"tool {name!r}: parameter {param.name!r}")
        if param.name in param_docs:
            schema["description"] = param_docs[param.name]
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif param.default is not None:
            try:
                json.dumps(param.default)
                schema["default"] = param.default
            except (TypeError, ValueError):
                pass
        properties[param.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return {"name": name, "description": description, "parameters": parameters}


def _is_tool_object(tool: Any) -> bool:
    return callable(tool) and all(hasattr(tool, a) for a in ("name", "description", "parameters")) \
        and not inspect.isfunction(tool) and not inspect.ismethod(tool)


def _object_spec(tool: Any) -> dict[str, Any]:
    parameters = tool.parameters
    if not isinstance(parameters, dict):
        raise UsageError(f"tool {tool.name!r}: parameters must be a JSON Schema object (a dict)")
    return {"name": str(tool.name), "description": str(tool.description or ""), "parameters": parameters}


def tool_specs(tools: list[Any]) -> list[dict[str, Any]]:
    """JSON specs for a mix of spec dicts, tool objects and Python functions."""
    if not isinstance(tools, list | tuple):
        raise UsageError("tools must be a list (of functions, tool objects or specs)")
    specs = []
    for tool in tools:
        if isinstance(tool, dict):
            specs.append(tool)
        elif _is_tool_object(tool):
            specs.append(_object_spec(tool))
        elif callable(tool):
            specs.append(function_spec(tool))
        else:
            raise UsageError(f"cannot use {tool!r} as a tool",
                             "pass functions, objects with name/description/parameters/__call__, or spec dicts")
    return specs


def _registry(tools: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Callable[..., Any]]]:
    specs: list[dict[str, Any]] = []
    runners: dict[str, Callable[..., Any]] = {}
    if not isinstance(tools, list | tuple) or not tools:
        raise UsageError("run_tools needs a non-empty list of tools (functions or tool objects)")
    for tool in tools:
        if isinstance(tool, dict):
            raise UsageError(f"run_tools cannot run the spec {tool.get('name')!r}: it is only a description",
                             "pass the Python function (or tool object) itself")
        spec = _object_spec(tool) if _is_tool_object(tool) else function_spec(tool) if callable(tool) else None
        if spec is None:
            raise UsageError(f"cannot use {tool!r} as a tool")
        if spec["name"] in runners:
            raise UsageError(f"two tools are named {spec['name']!r}")
        specs.append(spec)
        runners[spec["name"]] = tool
    return specs, runners


def _run_one(ctx: Context, runners: dict[str, Callable[..., Any]], call: ToolCall) -> str:
    fn = runners.get(call.name)
    if fn is None:
        error = f"unknown tool {call.name!r}; available: {', '.join(runners)}"
    else:
        try:
            value = fn(**call.arguments)
        except Exception as exc:  # noqa: BLE001 - the model gets the error and may correct itself
            error = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(value, str):
                return value
            try:
                return json.dumps(value, ensure_ascii=False, default=str)
            except (TypeError, ValueError) as exc:
                error = f"the result of {call.name!r} is not JSON-serializable: {exc}"
    ctx.logger.warning("tool %s failed: %s", call.name, error)
    return json.dumps({"error": error}, ensure_ascii=False)


def run_tools(ctx: Context, messages: list[dict[str, Any]] | str, tools: list[Any], model: str | None = None,
              max_iterations: int = 5, max_tokens: int | None = None, *, temperature: float | None = None,
              top_p: float | None = None, stop: str | list[str] | None = None) -> ChatResult:
    """Chat and run the tools the model asks for, until it answers without tool calls.
    ``temperature``, ``top_p`` and ``stop`` go with every chat call of the loop.

    See the module docstring for the rules (errors, ``max_iterations``).
    """
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise UsageError("max_iterations must be a positive integer")
    specs, runners = _registry(tools)
    conversation: list[dict[str, Any]] = [user(messages)] if isinstance(messages, str) else list(messages)
    usage = Usage()
    result = ChatResult()
    for _ in range(max_iterations):
        result = ctx.llm.chat(conversation, model=model, tools=specs, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, stop=stop)
        usage = usage + result.usage
        conversation.append(result.as_message())
        if not result.tool_calls:
            result.usage = usage
            result.messages = conversation
            return result
        for call in result.tool_calls:
            conversation.append(tool_result(call.id, _run_one(ctx, runners, call), name=call.name))
    asked = ", ".join(sorted({c.name for c in result.tool_calls}))
    result.usage = usage
    result.messages = conversation
    raise ToolLoopError(
        f"the model still asked for tools ({asked}) after {max_iterations} model calls",
        "raise max_iterations, or check what the tools return (see the agent's logs)",
        result=result, messages=conversation,
    )
