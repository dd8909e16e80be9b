"""Request fuzzing for rf serve: every management route (from rf.api.ROUTES and the schema
each route's body struct has), the agent endpoints, session reads and webhooks, with values
of the right type and of every wrong one. Shared by tests/test_fuzz.py (a bounded, seeded
run in CI) and bench/fuzz_api.py (a long run that prints cases tried and failures)."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rf import api

WEIRD_STRINGS = [
    "", " ", "a" * 300, "../../etc/passwd", "production", "staging", "hello", "crm", "NUL\x00byte",
    "ünïcödé ✓", "%s%n", "{{name}}", "DROP TABLE agents;", "-1", "1e309", "null", "\\", "/", "?x=1",
    "x" * 5000, "tr_" + "0" * 20, "ex_deadbeef", "agent:handle", "*/5 * * * *", "nope nope", "\ud7ff",
]
NAMES = ["hello", "crm", "greeting", "other", "get", "x", "Hello", "a-b", "a_b"]


@dataclass(frozen=True)
class Deep:
    """A list nested ``depth`` levels (spliced into the JSON text by :func:`encode`)."""

    depth: int


def _deep(depth: int) -> Any:
    return Deep(depth)


def encode(value: Any) -> str:
    """JSON text of a case's value; a :class:`Deep` becomes ``[[[...1...]]]``."""
    import json

    def default(o: Any) -> Any:
        if isinstance(o, Deep):
            return f"__deep_{o.depth}__"
        raise TypeError(type(o).__name__)

    text = json.dumps(value, default=default)
    for depth in {10, 63, 64, 65, 200, 1000}:
        text = text.replace(f'"__deep_{depth}__"', "[" * depth + "1" + "]" * depth)
    return text


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**70), 10**30])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, -1e-300])
    if kind in (4, 5):
        return rng.choice(WEIRD_STRINGS + NAMES)
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return {rng.choice(WEIRD_STRINGS + NAMES + ["input", "text", "env"]): random_json(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    return _deep(rng.choice([10, 63, 64, 65, 200, 1000]))


def value_for(schema: dict[str, Any], defs: dict[str, Any], rng: random.Random) -> Any:
    """A value of the schema's type most of the time, anything else sometimes."""
    if rng.random() < 0.25:
        return random_json(rng)
    if "$ref" in schema:
        return value_for(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, rng)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return value_for(rng.choice(schema[key]), defs, rng)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    tp = schema.get("type")
    if tp == "string":
        return rng.choice(WEIRD_STRINGS + NAMES)
    if tp == "integer":
        return rng.choice([0, 1, -1, 5, 10_000, 2**40, 2**64])
    if tp == "number":
        return rng.choice([0, 0.5, -1.5, 1e12, 1e308])
    if tp == "boolean":
        return rng.choice([True, False])
    if tp == "null":
        return None
    if tp == "array":
        item = schema.get("items", {})
        return [value_for(item, defs, rng) for _ in range(rng.randrange(3))]
    if tp == "object":
        props = schema.get("properties")
        if props:
            return {k: value_for(v, defs, rng) for k, v in props.items() if rng.random() < 0.7}
        extra = schema.get("additionalProperties", {})
        return {rng.choice(NAMES + WEIRD_STRINGS[:5]): value_for(extra if isinstance(extra, dict) else {}, defs, rng)
                for _ in range(rng.randrange(3))}
    return random_json(rng)


def path_value(rng: random.Random, known: list[str]) -> str:
    value = rng.choice(known + NAMES + WEIRD_STRINGS[:8] + ["a" * 300, "%2e%2e", "x.y", "ex-" + "f" * 40])
    return "".join(ch if ch not in "/?#" else "_" for ch in value) or "x"


@dataclass
class Case:
    method: str
    path: str
    body: Any = None  #: JSON body (None: no body)
    query: dict[str, Any] | None = None
    auth: str = "token"  #: token | none


def api_cases(specs: dict[str, Any], rng: random.Random, known: list[str]) -> Iterator[Case]:
    """One case per management route, round-robin: ``specs`` maps route names to the
    server's RequestSpec (rf.server.app builds them: ``request_specs()``)."""
    routes = [r for r in api.ROUTES if r.name in specs]
    while True:
        for r in routes:
            spec = specs[r.name]
            path = r.path
            for p in r.path_params():
                path = path.replace("{" + p + "}", path_value(rng, known))
            schema = spec.schema
            defs = spec.defs
            fields = {k: value_for(v, defs, rng) for k, v in schema.get("properties", {}).items() if rng.random() < 0.8}
            if rng.random() < 0.1:
                fields[rng.choice(["source", "author", "bogus", "on_chunk", "self"])] = random_json(rng)
            if r.method == "GET":
                query = {k: (v if isinstance(v, str) else encode(v)) for k, v in fields.items()}
                yield Case("GET", "/api" + path, query=query)
            else:
                body: Any = fields if rng.random() > 0.05 else random_json(rng)
                yield Case(r.method, "/api" + path, body=body)


def endpoint_cases(rng: random.Random, known: list[str]) -> Iterator[Case]:
    """Agent endpoints, session reads and webhooks, without a token (as anyone on the machine)."""
    while True:
        env = rng.choice(["staging", "production", "prod", "x"])
        name = path_value(rng, known)
        which = rng.randrange(4)
        if which == 0:
            body = {"input": random_json(rng)} if rng.random() < 0.8 else random_json(rng)
            if rng.random() < 0.3 and isinstance(body, dict):
                body["session_id"] = rng.choice([None, 5, "s1", "a" * 300, ["x"]])
            yield Case("POST", f"/{env}/agents/{name}", body=body, auth="none")
        elif which == 1:
            yield Case("GET", f"/{env}/agents/{name}", auth="none")
        elif which == 2:
            yield Case("GET", f"/{env}/agents/{name}/sessions/{path_value(rng, known)}", auth="none")
        else:
            yield Case("POST", f"/{env}/hooks/{path_value(rng, known)}", body=random_json(rng), auth="none")


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.printable) for _ in range(n))
