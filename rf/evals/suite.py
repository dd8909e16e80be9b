"""Eval suites: ``agents/NAME/evals/*.yaml`` / ``*.yml`` / ``*.jsonl``, read and checked.

A suite is versioned with the code it checks: its files are part of the agent's commit, and
``rf agents deploy`` refuses a commit whose suite (or a recordings file beside it,
rf.evals.tape) does not load (:func:`load_suite` raises
:class:`~rf.errors.InvalidAgent` naming the file, the line and the fix).

A **case** is an object with these keys (JSONL: one object per line; YAML: a list of them)::

    id: greets                 # unique in the suite; letters, digits and _ . : - (at most 64)
    input: {"name": "Ada"}     # the agent's input (any JSON value) ...
    inputs: [{...}, {...}]     # ... or several turns, run in order in one session
    expect:                    # each key names a scorer and holds its argument
      contains: Ada
      max_ms: 500
    repeat: 3                  # optional: run the case k times (1..100; default 1)
    pass: any                  # optional: any = pass@k, all = every run must pass (default)
    description: ...           # optional, shown nowhere but the file

The scorers and their arguments are in :mod:`rf.evals.scorers`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rf.errors import InvalidAgent

#: Where an agent's suite lives, relative to its directory.
SUITE_DIR = "evals"
SUITE_EXTENSIONS = (".yaml", ".yml", ".jsonl")
CASE_KEYS = ("id", "input", "inputs", "expect", "repeat", "pass", "description")
CASE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_REPEAT = 100
PASS_RULES = ("all", "any")

_CASE_EXAMPLE = '{"id": "greets", "input": {"name": "Ada"}, "expect": {"contains": "Ada"}}'


@dataclass
class Case:
    """One eval case, checked (each scorer's argument already in its checked form)."""

    id: str
    file: str  #: the suite file, relative to the agent directory
    line: int  #: where the case starts in that file (1-based)
    inputs: list[Any]  #: one input per turn
    expect: dict[str, Any] = field(default_factory=dict)
    repeat: int = 1
    pass_rule: str = "all"
    multi_turn: bool = False  #: given as ``inputs`` (run in one session)
    description: str = ""


@dataclass
class Suite:
    """An agent's eval cases, in file order (files sorted by path)."""

    files: list[str] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)

    def select(self, case_id: str | None) -> list[Case]:
        """Every case, or the one named ``case_id`` (NotFound, listing the ids, if none)."""
        if case_id is None:
            return list(self.cases)
        chosen = [c for c in self.cases if c.id == case_id]
        if not chosen:
            from rf.errors import NotFound

            ids = ", ".join(c.id for c in self.cases[:20]) + (" …" if len(self.cases) > 20 else "")
            raise NotFound(f"no eval case {case_id!r}", f"the suite's cases: {ids or 'none'}")
        return chosen


def suite_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The suite's files among an agent directory's ``{path: bytes}`` (``evals/**.yaml|yml|jsonl``)."""
    return {path: data for path, data in sorted(files.items())
            if path.startswith(SUITE_DIR + "/") and path.endswith(SUITE_EXTENSIONS)}


def load_suite(files: dict[str, bytes], agent: str | None = None) -> Suite:
    """Read and check the suite among an agent directory's files (others are ignored).

    Every problem is an :class:`InvalidAgent` error whose message starts with
    ``agents/AGENT/evals/FILE:LINE`` and whose hint says what to write instead."""
    suite = Suite()
    seen: dict[str, str] = {}
    for path, data in suite_files(files).items():
        shown = f"agents/{agent}/{path}" if agent else path
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidAgent(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                               "save the suite file as UTF-8") from None
        raw = _read_jsonl(text, shown) if path.endswith(".jsonl") else _read_yaml(text, shown)
        suite.files.append(path)
        for obj, line, lines in raw:
            case = _case(obj, path, shown, line, lines)
            where = f"{shown}:{line}"
            if case.id in seen:
                raise InvalidAgent(f"{where}: case id {case.id!r} is already used at {seen[case.id]}",
                                   "give each case of the suite its own id")
            seen[case.id] = where
            suite.cases.append(case)
    from rf.evals.tape import load_recordings

    load_recordings(files, agent)  # its recordings files (rf eval --record) must read too
    return suite


#: One raw case: (the object, the line it starts on, the lines of its keys: "expect.contains" -> 12).
_Raw = tuple[Any, int, dict[str, int]]


def _read_jsonl(text: str, shown: str) -> list[_Raw]:
    cases: list[_Raw] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InvalidAgent(f"{shown}:{number}: not valid JSON: {exc}",
                               f"write one case object per line, e.g. {_CASE_EXAMPLE}") from None
        cases.append((obj, number, {}))
    return cases


def _read_yaml(text: str, shown: str) -> list[_Raw]:
    import yaml

    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidAgent(f"{shown}{line}: not valid YAML: {problem}",
                           "a suite file is a list of cases: '- id: greets' then 'input:' and 'expect:' "
                           "indented under it") from None
    if data is None:
        return []  # an empty file: no cases yet
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode):
        raise InvalidAgent(f"{shown}:1: a suite file holds a list of cases, not a {type(data).__name__}",
                           "start each case with '- id: NAME' (a YAML list)")
    cases: list[_Raw] = []
    for obj, node in zip(data, root.value, strict=True):
        lines: dict[str, int] = {}
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[str(key.value)] = key.start_mark.line + 1
                if key.value == "expect" and isinstance(value, yaml.MappingNode):
                    for scorer, _ in value.value:
                        lines[f"expect.{scorer.value}"] = scorer.start_mark.line + 1
        cases.append((obj, node.start_mark.line + 1, lines))
    return cases


def _case(obj: Any, path: str, shown: str, line: int, lines: dict[str, int]) -> Case:
    from rf.evals.scorers import SCORERS, check_argument

    def fail(message: str, hint: str, key: str | None = None) -> InvalidAgent:
        at = lines.get(key, line) if key else line
        return InvalidAgent(f"{shown}:{at}: {message}", hint)

    if not isinstance(obj, dict):
        raise fail(f"a case must be an object, not {type(obj).__name__}", f"e.g. {_CASE_EXAMPLE}")
    case_id = obj.get("id")
    if not isinstance(case_id, str) or not CASE_ID_RE.fullmatch(case_id):
        got = "no id" if case_id is None else f"id {case_id!r}"
        raise fail(f"a case needs an id (1 to 64 letters, digits and _ . : -); this one has {got}",
                   "add e.g. id: greets", "id")
    label = f"case {case_id!r}"
    unknown = [k for k in obj if k not in CASE_KEYS]
    if unknown:
        raise fail(f"{label}: unknown key {unknown[0]!r}", f"a case has: {', '.join(CASE_KEYS)}", str(unknown[0]))
    if ("input" in obj) == ("inputs" in obj):
        raise fail(f"{label} needs exactly one of input (one run) or inputs (a list of turns in one session)",
                   "add e.g. input: {\"name\": \"Ada\"}")
    multi = "inputs" in obj
    if multi:
        inputs = obj["inputs"]
        if not isinstance(inputs, list) or not inputs:
            raise fail(f"{label}: inputs must be a non-empty list (one input per turn)",
                       "e.g. inputs: [{\"message\": \"hi\"}, {\"message\": \"and then?\"}]", "inputs")
    else:
        inputs = [obj["input"]]
    expect = obj.get("expect", {})
    if expect is None:
        expect = {}
    if not isinstance(expect, dict):
        raise fail(f"{label}: expect must be an object of scorer: argument",
                   "e.g. expect: {contains: Ada, max_ms: 500}", "expect")
    checked: dict[str, Any] = {}
    for scorer, argument in expect.items():
        key = f"expect.{scorer}"
        if scorer not in SCORERS:
            from difflib import get_close_matches

            close = get_close_matches(str(scorer), list(SCORERS), n=1)
            maybe = f"did you mean {close[0]!r}? " if close else ""
            raise fail(f"{label}: unknown scorer {scorer!r}", f"{maybe}scorers: {', '.join(SCORERS)}", key)
        try:
            checked[scorer] = check_argument(scorer, argument)
        except ValueError as exc:
            raise fail(f"{label}: {scorer}: {exc}", SCORERS[scorer].usage, key) from None
    repeat = obj.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
        raise fail(f"{label}: repeat must be a whole number from 1 to {MAX_REPEAT}, not {repeat!r}",
                   "e.g. repeat: 3 with pass: any (pass@3) or pass: all", "repeat")
    rule = obj.get("pass", "all")
    if rule not in PASS_RULES:
        raise fail(f"{label}: pass must be all or any, not {rule!r}",
                   "all: every repeat must pass; any: one is enough (pass@k)", "pass")
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise fail(f"{label}: description must be text", "e.g. description: greets by name", "description")
    return Case(id=case_id, file=path, line=line, inputs=list(inputs), expect=checked, repeat=repeat,
                pass_rule=rule, multi_turn=multi, description=description)
