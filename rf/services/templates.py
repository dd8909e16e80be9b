"""Prompt templates: ``{{variable}}`` placeholders, parsed once, rendered often.

The syntax is deliberately tiny, because prompts are prose written for a
model, not programs:

- ``{{name}}`` (spaces allowed inside: ``{{ name }}``) is replaced by the
  variable ``name``; names are Python identifiers, so every variable can be
  passed as a keyword argument (``ctx.prompts.render("p", name=...)``).
- ``\\{{`` is a literal ``{{`` (the backslash is dropped).
- A lone ``}}`` is plain text: prompts often show JSON examples such as
  ``{"a": {"b": 1}}`` and must not need escaping for them.

Anything else that opens ``{{`` is an error *with its line and column*, found
when the prompt is saved — so a broken template never reaches an execution.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rf.errors import UsageError

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OPEN = re.compile(r"\\?\{\{")

SYNTAX_HINT = "write variables as {{name}} (letters, digits and _, not starting with a digit); write a literal {{ as \\{{"


@dataclass(frozen=True)
class Variable:
    """A placeholder in a parsed template."""

    name: str
    line: int
    column: int


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and variables, in order."""

    parts: tuple[str | Variable, ...]

    @property
    def variables(self) -> list[str]:
        """Variable names in order of first use, each once."""
        seen: dict[str, None] = {}
        for part in self.parts:
            if isinstance(part, Variable):
                seen.setdefault(part.name, None)
        return list(seen)

    def missing(self, values: Mapping[str, Any]) -> list[str]:
        return [name for name in self.variables if name not in values]

    def render(self, values: Mapping[str, Any]) -> str:
        """Substitute ``values`` (``str()`` of each); extra values are ignored.

        Raises :class:`MissingVariables` naming every variable not given.
        """
        missing = self.missing(values)
        if missing:
            raise MissingVariables(missing)
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, Variable):
                value = values[part.name]
                out.append(value if isinstance(value, str) else str(value))
            else:
                out.append(part)
        return "".join(out)


class MissingVariables(Exception):
    """Render was not given every variable (the caller names the prompt)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


class TemplateSyntaxError(Exception):
    """A template that cannot be parsed; ``line``/``column`` are 1-based."""

    def __init__(self, problem: str, line: int, column: int) -> None:
        super().__init__(f"{problem} at line {line}, column {column}")
        self.problem = problem
        self.line = line
        self.column = column

    def to_rf_error(self, what: str) -> UsageError:
        """A user-facing error: ``what`` says which text it was (e.g. "prompt 'greet'")."""
        return UsageError(f"invalid template in {what}: {self}", SYNTAX_HINT)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _shorten(s: str, limit: int = 40) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def parse(text: str) -> Template:
    """Parse ``text``; raise :class:`TemplateSyntaxError` at the first bad placeholder.

    A placeholder must close on the line it opens: an opening ``{{`` whose
    line has no ``}}`` is reported as unclosed right there, instead of
    swallowing the rest of the prompt into one bogus variable name.
    """
    parts: list[str | Variable] = []
    literal: list[str] = []
    pos = 0
    while True:
        match = _OPEN.search(text, pos)
        if match is None:
            literal.append(text[pos:])
            break
        start = match.start()
        literal.append(text[pos:start])
        if match.group().startswith("\\"):
            literal.append("{{")
            pos = match.end()
            continue
        inner_start = match.end()
        line_end = text.find("\n", inner_start)
        if line_end < 0:
            line_end = len(text)
        close = text.find("}}", inner_start, line_end)
        reopen = text.find("{{", inner_start, close if close >= 0 else line_end)
        if close < 0 or reopen >= 0:
            raise TemplateSyntaxError("unclosed '{{' (no matching '}}' on its line)", *_position(text, start))
        inner = text[inner_start:close]
        name = inner.strip()
        if not name:
            raise TemplateSyntaxError("empty placeholder '{{}}'", *_position(text, start))
        if not IDENTIFIER.match(name):
            raise TemplateSyntaxError(f"invalid variable name {_shorten(name)!r}", *_position(text, start))
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(Variable(name, *_position(text, start)))
        pos = close + 2
    tail = "".join(literal)
    if tail:
        parts.append(tail)
    return Template(tuple(p for p in parts if p != ""))


def variables(text: str) -> list[str]:
    """The variable names of ``text`` (raises :class:`TemplateSyntaxError`)."""
    return parse(text).variables
