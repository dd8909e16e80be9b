"""The built-in scorers of eval cases: ``expect: {scorer: argument}``.

Each scorer checks its argument when the suite loads (a bad one fails ``rf agents deploy``)
and scores one attempt of a case. Text scorers read the **text of the output**: a string
output as it is, any other value as its JSON (so ``contains: Ada`` finds ``{"message":
"hello, Ada"}``); when the execution failed, its error message.

=============  =======================================================================
scorer         argument
=============  =======================================================================
equals         any JSON value: the whole output equals it (``1`` = ``1.0``; ``true`` ≠ ``1``)
contains       a string or a list of strings: each occurs in the text (case-sensitive)
not_contains   a string or a list of strings: none occurs in the text
regex          a pattern (or a list): each matches somewhere in the text (``re.search``; ``(?i)`` for case)
json_schema    a JSON Schema (2020-12): the output validates
number         ``{path: "a.b.0", value: 3, tolerance: 0.1, min: 0, max: 5}``: the number at ``path``
               (dots; list indexes as numbers; no path: the output) is ``value ± tolerance``
               (tolerance default 0) and within ``[min, max]``; a bare number is ``{value: N}``
max_ms         a number: the slowest turn's ``duration_ms`` (the run, not the wait for a worker) is at most it
calls          ``{must: [...], must_not: [...]}`` (a list: ``must``): calls the run made, read from
               its trace — a connector resource as ``SLUG.RESOURCE`` (``crm.get-customer``), any
               other host call or custom span by its span name (``llm.chat``, ``kb.search``)
similar        a reference text, or ``{text: ..., threshold: 0.5}``: cosine similarity of the text
               and the reference with the knowledge-base's offline embedder (default 0.5)
judge          a rubric, or ``{rubric: ..., model: "provider:model"}``: an LLM provider grades the
               output (the default provider and model unless named). The offline ``mock``
               provider passes when every quoted term of the rubric (``"..."``, `````...`````)
               occurs in the output (case-insensitive), or, with none quoted, when the output is
               not empty — deterministic, so judged suites run offline
status         ``succeeded`` (the default of every case) or ``failed``: what the run must end as
=============  =======================================================================

**Live scorers** (:data:`LIVE_SCORERS`) need nothing from a case — no input, no expected value
of its own — so a suite's ``live:`` entry (rf.evals.suite) may apply them to any output: a
sample of production's executions while a canary runs (rf.services.canary_scoring). ``equals``
and ``similar`` compare with a case's expected answer and ``status`` is the failure rate's
business: they are not live scorers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rf.models import EvalScore

DEFAULT_SIMILARITY = 0.5
_SHOWN = 120  #: characters of a value shown in a failure's detail


@dataclass
class Observed:
    """What one attempt of a case produced (the last turn's output, the slowest turn)."""

    status: str  #: succeeded | failed (the last turn; an earlier failed turn ends the attempt)
    output: Any
    error: str | None
    duration_ms: float
    execution_ids: list[str] = field(default_factory=list)
    input: Any = None  #: the last turn's input (given to a judge)

    @property
    def text(self) -> str:
        if self.status != "succeeded":
            return self.error or ""
        return output_text(self.output)


class Tools(Protocol):
    """What the model-based and trace-based scorers need from the host (rf.services.evals)."""

    def calls(self, execution_ids: list[str]) -> tuple[set[str], int]:
        """The names of the calls the executions made, and how many connector calls could not be
        named (a ``minimal`` trace keeps no attributes)."""
        ...

    def similarity(self, a: str, b: str) -> float: ...

    def chat(self, messages: list[dict[str, Any]], model: str | None) -> str: ...


@dataclass(frozen=True)
class Scorer:
    check: Callable[[Any], Any]  #: the checked argument, or ValueError saying what is wrong
    score: Callable[[Any, Observed, Tools], EvalScore]
    usage: str  #: the hint of a bad argument


def output_text(output: Any) -> str:
    """The text scorers read: a string as it is, None as "", anything else as its JSON."""
    if isinstance(output, str):
        return output
    if output is None:
        return ""
    return json.dumps(output, ensure_ascii=False)


def shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 = 1.0), booleans apart from numbers, dict order ignored."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# ------------------------------------------------------------ argument checks
def _strings(arg: Any) -> list[str]:
    items = [arg] if isinstance(arg, str) else arg
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
        raise ValueError("expected a non-empty string or a list of them")
    return list(items)


def _patterns(arg: Any) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in _strings(arg):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
    return compiled


def _any(arg: Any) -> Any:
    return arg


def _schema(arg: Any) -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(arg, dict):
        raise ValueError("expected a JSON Schema object, e.g. {type: object, required: [message]}")
    try:
        Draft202012Validator.check_schema(arg)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return arg


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(arg: Any) -> dict[str, Any]:
    if _is_number(arg):
        arg = {"value": arg}
    if not isinstance(arg, dict):
        raise ValueError("expected a number or {path, value, tolerance, min, max}")
    unknown = [k for k in arg if k not in ("path", "value", "tolerance", "min", "max")]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    for key in ("value", "tolerance", "min", "max"):
        if key in arg and not _is_number(arg[key]):
            raise ValueError(f"{key} must be a number, not {arg[key]!r}")
    if not any(k in arg for k in ("value", "min", "max")):
        raise ValueError("give value (with an optional tolerance), min or max")
    if arg.get("tolerance", 0) < 0:
        raise ValueError("tolerance must not be negative")
    path = arg.get("path", "")
    if not isinstance(path, str):
        raise ValueError("path must be text, e.g. totals.amount or items.0.price")
    return {"path": path, "value": arg.get("value"), "tolerance": arg.get("tolerance", 0),
            "min": arg.get("min"), "max": arg.get("max")}


def _max_ms(arg: Any) -> float:
    if not _is_number(arg) or arg <= 0:
        raise ValueError(f"expected a positive number of milliseconds, not {arg!r}")
    return float(arg)


def _calls(arg: Any) -> dict[str, list[str]]:
    if isinstance(arg, list | str):
        arg = {"must": arg}
    if not isinstance(arg, dict) or not arg:
        raise ValueError("expected {must: [...], must_not: [...]}")
    unknown = [k for k in arg if k not in ("must", "must_not")]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    return {key: _strings(arg[key]) if key in arg else [] for key in ("must", "must_not")}


def _similar(arg: Any) -> dict[str, Any]:
    if isinstance(arg, str):
        arg = {"text": arg}
    if not isinstance(arg, dict) or not isinstance(arg.get("text"), str) or not arg["text"].strip():
        raise ValueError("expected a reference text, or {text: ..., threshold: 0.5}")
    unknown = [k for k in arg if k not in ("text", "threshold")]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    threshold = arg.get("threshold", DEFAULT_SIMILARITY)
    if not _is_number(threshold) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a number in (0, 1], not {threshold!r}")
    return {"text": arg["text"], "threshold": float(threshold)}


def _judge(arg: Any) -> dict[str, Any]:
    if isinstance(arg, str):
        arg = {"rubric": arg}
    if not isinstance(arg, dict) or not isinstance(arg.get("rubric"), str) or not arg["rubric"].strip():
        raise ValueError("expected a rubric, or {rubric: ..., model: provider:model}")
    unknown = [k for k in arg if k not in ("rubric", "model")]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    model = arg.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise ValueError("model must be text, e.g. openai:gpt-4o-mini")
    return {"rubric": arg["rubric"], "model": model}


def _status(arg: Any) -> str:
    if arg not in ("succeeded", "failed"):
        raise ValueError(f"expected succeeded or failed, not {arg!r}")
    return str(arg)


# ------------------------------------------------------------ scoring
def _result(name: str, passed: bool, detail: str, score: float | None = None) -> EvalScore:
    return EvalScore(scorer=name, passed=passed, detail=detail, score=score)


def _score_equals(arg: Any, seen: Observed, tools: Tools) -> EvalScore:
    if same(seen.output, arg):
        return _result("equals", True, "output equals the expected value")
    return _result("equals", False, f"expected {shown(arg)}, got {shown(seen.output)}")


def _score_contains(arg: list[str], seen: Observed, tools: Tools) -> EvalScore:
    text = seen.text
    missing = [s for s in arg if s not in text]
    if missing:
        return _result("contains", False, f"missing {', '.join(map(repr, missing))} in {shown(text)}")
    return _result("contains", True, f"found {', '.join(map(repr, arg))}")


def _score_not_contains(arg: list[str], seen: Observed, tools: Tools) -> EvalScore:
    text = seen.text
    found = [s for s in arg if s in text]
    if found:
        return _result("not_contains", False, f"found {', '.join(map(repr, found))} in {shown(text)}")
    return _result("not_contains", True, f"none of {', '.join(map(repr, arg))}")


def _score_regex(arg: list[re.Pattern[str]], seen: Observed, tools: Tools) -> EvalScore:
    text = seen.text
    unmatched = [p.pattern for p in arg if p.search(text) is None]
    if unmatched:
        return _result("regex", False, f"no match for {', '.join(map(repr, unmatched))} in {shown(text)}")
    return _result("regex", True, f"matched {', '.join(repr(p.pattern) for p in arg)}")


def _score_schema(arg: dict[str, Any], seen: Observed, tools: Tools) -> EvalScore:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(arg).iter_errors(seen.output))
    if error is None:
        return _result("json_schema", True, "output matches the schema")
    where = "/".join(str(p) for p in error.absolute_path)
    return _result("json_schema", False, f"{'at ' + where + ': ' if where else ''}{error.message}"[:300])


def _at_path(output: Any, path: str) -> Any:
    value = output
    for part in [p for p in path.split(".") if p] if path else []:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise LookupError(f"no {part!r} at {path!r} in {shown(output)}")
    return value


def _score_number(arg: dict[str, Any], seen: Observed, tools: Tools) -> EvalScore:
    where = f"at {arg['path']!r}" if arg["path"] else "output"
    try:
        value = _at_path(seen.output, arg["path"])
    except LookupError as exc:
        return _result("number", False, str(exc))
    if not _is_number(value):
        return _result("number", False, f"{where} is {shown(value)}, not a number")
    problems = []
    if arg["value"] is not None and abs(value - arg["value"]) > arg["tolerance"]:
        tolerance = f" ± {arg['tolerance']}" if arg["tolerance"] else ""
        problems.append(f"expected {arg['value']}{tolerance}")
    if arg["min"] is not None and value < arg["min"]:
        problems.append(f"below min {arg['min']}")
    if arg["max"] is not None and value > arg["max"]:
        problems.append(f"above max {arg['max']}")
    if problems:
        return _result("number", False, f"{where} is {value}: {', '.join(problems)}", float(value))
    return _result("number", True, f"{where} is {value}", float(value))


def _score_max_ms(arg: float, seen: Observed, tools: Tools) -> EvalScore:
    ms = round(seen.duration_ms, 1)
    if seen.duration_ms <= arg:
        return _result("max_ms", True, f"{ms} ms ≤ {arg:g} ms", seen.duration_ms)
    return _result("max_ms", False, f"{ms} ms > {arg:g} ms", seen.duration_ms)


def _score_calls(arg: dict[str, list[str]], seen: Observed, tools: Tools) -> EvalScore:
    names, unnamed = tools.calls(seen.execution_ids)
    missing = [n for n in arg["must"] if n not in names]
    forbidden = [n for n in arg["must_not"] if n in names]
    problems = []
    if missing:
        problems.append(f"not called: {', '.join(missing)}")
    if forbidden:
        problems.append(f"called: {', '.join(forbidden)}")
    if unnamed and (missing or arg["must_not"]):
        problems.append(f"{unnamed} connector call(s) could not be named: the trace mode is minimal "
                        "(set [trace] staging = \"standard\" in agent.toml)")
    if problems:
        seen_names = ", ".join(sorted(names)) or "none"
        return _result("calls", False, f"{'; '.join(problems)} (calls made: {seen_names})")
    return _result("calls", True, f"calls made: {', '.join(sorted(names)) or 'none'}")


def _score_similar(arg: dict[str, Any], seen: Observed, tools: Tools) -> EvalScore:
    value = tools.similarity(seen.text, arg["text"])
    passed = value >= arg["threshold"]
    sign = "≥" if passed else "<"
    return _result("similar", passed, f"similarity {value:.3f} {sign} {arg['threshold']:g}", round(value, 4))


def _score_judge(arg: dict[str, Any], seen: Observed, tools: Tools) -> EvalScore:
    from rf.evals.judge import judge

    passed, score, reason = judge(tools, arg["rubric"], seen.input, seen.text, arg["model"])
    return _result("judge", passed, reason, score)


def _score_status(arg: str, seen: Observed, tools: Tools) -> EvalScore:
    if seen.status == arg:
        return _result("status", True, f"the run {arg}")
    why = f": {seen.error}" if seen.error else ""
    return _result("status", False, f"expected the run to have {arg}; it {seen.status}{why}"[:300])


#: Every scorer by the name a case's ``expect`` uses (the order of ``rf eval``'s details).
SCORERS: dict[str, Scorer] = {
    "status": Scorer(_status, _score_status, "status: succeeded | failed"),
    "equals": Scorer(_any, _score_equals, "equals: any JSON value (the whole output)"),
    "contains": Scorer(_strings, _score_contains, "contains: a string or a list of strings"),
    "not_contains": Scorer(_strings, _score_not_contains, "not_contains: a string or a list of strings"),
    "regex": Scorer(_patterns, _score_regex, "regex: a Python regular expression (or a list of them)"),
    "json_schema": Scorer(_schema, _score_schema, "json_schema: a JSON Schema object, e.g. {type: object}"),
    "number": Scorer(_number, _score_number,
                     "number: {path: a.b, value: 3, tolerance: 0.1} (or min/max), or a bare number"),
    "max_ms": Scorer(_max_ms, _score_max_ms, "max_ms: a number of milliseconds, e.g. 500"),
    "calls": Scorer(_calls, _score_calls, "calls: {must: [crm.get-customer], must_not: [crm.delete-customer]}"),
    "similar": Scorer(_similar, _score_similar, "similar: a reference text, or {text: ..., threshold: 0.5}"),
    "judge": Scorer(_judge, _score_judge, "judge: a rubric, or {rubric: ..., model: provider:model}"),
}


#: The scorers a suite's ``live:`` entry may use: those that read the output (and its duration,
#: trace or input) against a fixed rule, with no expected value that belongs to one case.
LIVE_SCORERS = ("contains", "not_contains", "regex", "json_schema", "number", "max_ms", "calls", "judge")


def check_argument(scorer: str, argument: Any) -> Any:
    """The checked form of a scorer's argument (ValueError saying what is wrong)."""
    return SCORERS[scorer].check(argument)


def score_attempt(expect: dict[str, Any], seen: Observed, tools: Tools) -> list[EvalScore]:
    """Every scorer of a case on one attempt, in :data:`SCORERS` order. ``status: succeeded``
    is implied (a run that failed fails its case) unless the case expects ``status``."""
    results = []
    for name, scorer in SCORERS.items():
        if name == "status":
            results.append(_score_status(expect.get("status", "succeeded"), seen, tools))
        elif name in expect:
            results.append(scorer.score(expect[name], seen, tools))
    return results


def score_live(expect: dict[str, Any], seen: Observed, tools: Tools) -> list[EvalScore]:
    """The scorers of a ``live:`` entry on one live output (a succeeded execution), in
    :data:`SCORERS` order; nothing implied."""
    return [scorer.score(expect[name], seen, tools) for name, scorer in SCORERS.items() if name in expect]
