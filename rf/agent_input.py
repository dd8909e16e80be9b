"""An agent's ``[input] schema`` (agent.toml): the JSON Schema its input must match.

Declared once, used three ways: ``rf agents deploy`` (and ``rf test``) refuse a schema
that is not a valid JSON Schema; every run of a deployed commit (the endpoint, its fast
path, ``/{env}/mcp``, ``rf invoke``, triggers) checks its input against it before a
worker sees it (a 400 that names the field); and ``/{env}/mcp`` publishes it as the
tool's input schema. An agent without one accepts any input, and pays nothing for it.

The schema is written either as a TOML table or as a JSON string::

    [input.schema]
    type = "object"
    required = ["message"]
    properties.message = { type = "string" }

    # or
    [input]
    schema = '{"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}'

Its root must describe an object (``type = "object"``): MCP tools take an arguments
object, and an agent reached as a tool gets exactly that object as its input.

``jsonschema`` is imported only when an agent has a schema.
"""

from __future__ import annotations

import json
from typing import Any

from rf.errors import InvalidAgent, UsageError

_EXAMPLE = ('[input.schema] with type = "object", required = ["message"] and '
            'properties.message = { type = "string" }')

#: The schema of an agent without ``[input]``: any object (what MCP clients are told).
PERMISSIVE: dict[str, Any] = {"type": "object", "additionalProperties": True}


def parse_input_table(source: str, value: Any) -> dict[str, Any] | None:
    """The ``[input]`` table of agent.toml → its checked schema (None when there is none).
    InvalidAgent when the table, or the schema, is not right."""
    if not isinstance(value, dict):
        raise InvalidAgent(f"{source}: input must be a table", f"write it as {_EXAMPLE}")
    schema = value.get("schema")
    if schema is None:
        return None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise InvalidAgent(f"{source}: [input] schema is a string but not JSON: {exc}",
                               f"write a JSON Schema object in the string, or as a table: {_EXAMPLE}") from None
    if not isinstance(schema, dict):
        raise InvalidAgent(f"{source}: [input] schema must be a JSON Schema object (a table or a JSON string)",
                           f"e.g. {_EXAMPLE}")
    if schema.get("type") != "object":
        raise InvalidAgent(
            f"{source}: [input] schema must describe an object (type = \"object\"), not "
            f"{'type ' + repr(schema['type']) if 'type' in schema else 'a schema without a type'}",
            "an agent reached as an MCP tool gets the tool's arguments object as its input; "
            f"e.g. {_EXAMPLE}")
    from jsonschema import exceptions, validators

    cls = validators.validator_for(schema)  # the schema's $schema, else the newest draft
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise InvalidAgent(f"{source}: [input] schema is not a valid JSON Schema: {exc.message}"
                           + (f" (at {where})" if where else ""),
                           "see https://json-schema.org/understanding-json-schema/ ; "
                           f"e.g. {_EXAMPLE}") from None
    return schema


def check_input(config: dict[str, Any], value: Any, env: str, name: str) -> None:
    """UsageError (400) when *value* does not match the commit's ``input_schema``.

    *config* is the commit's cached run configuration (``Services._commit_config``): the
    compiled validator is kept in it, so it is built once per commit."""
    validator = config.get("_input_validator")
    if validator is None:
        from jsonschema import validators

        schema = config["input_schema"]
        validator = config["_input_validator"] = validators.validator_for(schema)(schema)
    if validator.is_valid(value):
        return
    error = _best_error(validator, value)
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise UsageError(
        f"the input does not match the [input] schema of agent {name!r} in {env}: {error.message}"
        + (f" (at input{where})" if where else ""),
        f"see the schema: GET /{env}/agents/{name} (input_schema), or agents/{name}/agent.toml [input]")


def _best_error(validator: Any, value: Any) -> Any:
    from jsonschema import exceptions

    return exceptions.best_match(validator.iter_errors(value))
