"""OpenAPI 3 (JSON or YAML) → connector resources.

Only what a connector call needs is read: each operation becomes a resource
(slug from ``operationId``, else ``method-path``), its path and query
parameters plus a JSON request body's properties become one object JSON
Schema (the shape ``ctx.connectors.call(..., **params)`` takes), and an
``example`` of the success response becomes the mock response. Local
``$ref``s are resolved; anything rf cannot use (header/cookie parameters,
non-JSON bodies) is skipped rather than guessed at.

Pure functions, no I/O: the service validates everything first and stores
nothing when the spec is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rf.errors import UsageError
from rf.models import ConnectorResource

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_MAX_REF_DEPTH = 32


@dataclass
class ParsedSpec:
    base_url: str | None  #: ``servers[0].url`` with variables filled, if absolute
    resources: list[ConnectorResource] = field(default_factory=list)
    title: str = ""


def slugify(text: str) -> str:
    """``getCustomer`` → ``get-customer``; ``GET /a/{id}`` → ``get-a-id`` (a valid rf name)."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", text)
    text = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return text[:63].rstrip("-") or "op"


def load(text: str, source: str = "the spec") -> dict[str, Any]:
    """Parse JSON, else YAML; refuse anything that is not an OpenAPI 3 document."""
    data: Any
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1})" if where is not None else ""
            raise UsageError(f"{source} is neither valid JSON nor valid YAML{at}",
                             "give an OpenAPI 3 document in JSON or YAML") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not an OpenAPI document (expected an object at the top level)",
                         "give an OpenAPI 3 document in JSON or YAML")
    version = data.get("openapi")
    if version is None and "swagger" in data:
        raise UsageError(f"{source} is Swagger/OpenAPI 2, which rf does not read",
                         "convert it to OpenAPI 3 first (e.g. with swagger2openapi)")
    if not isinstance(version, str) or not version.startswith("3."):
        raise UsageError(f"{source} has no 'openapi: 3.x' field", "rf reads OpenAPI 3.0 and 3.1 documents")
    if not isinstance(data.get("paths"), dict) or not data["paths"]:
        raise UsageError(f"{source} has no paths", "an OpenAPI document lists its operations under 'paths'")
    return data


def parse(text: str, source: str = "the spec") -> ParsedSpec:
    """Resources (and the server URL) described by an OpenAPI 3 document."""
    spec = load(text, source)
    resolver = _Resolver(spec)
    resources: list[ConnectorResource] = []
    seen: set[str] = set()
    for path, item in spec["paths"].items():
        if not isinstance(path, str) or not path.startswith("/"):
            raise UsageError(f"{source}: path {path!r} must start with '/'")
        item = resolver.resolve(item)
        if not isinstance(item, dict):
            raise UsageError(f"{source}: paths.{path} is not an object")
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            op = resolver.resolve(op)
            if not isinstance(op, dict):
                raise UsageError(f"{source}: {method.upper()} {path} is not an object")
            where = f"{method.upper()} {path}"
            op_id = op.get("operationId")
            base = slugify(op_id) if isinstance(op_id, str) and op_id.strip() else slugify(f"{method}-{path}")
            slug, n = base, 2
            while slug in seen:
                slug = f"{base[:60]}-{n}"
                n += 1
            seen.add(slug)
            summary = str(op.get("summary") or "")
            description = str(op.get("description") or "")
            resources.append(ConnectorResource(
                slug=slug,
                name=summary.strip() or slug,
                description=(description or summary).strip(),
                method=method.upper(),
                path=path,
                params_schema=_params_schema(resolver, [*_list(shared, where), *_list(op.get("parameters"), where)],
                                             op.get("requestBody"), path, where),
                mock_response=_example(resolver, op.get("responses")),
            ))
    if not resources:
        raise UsageError(f"{source} has no operations", f"rf reads the methods {', '.join(METHODS)} under paths")
    info = spec.get("info")
    title = str(info.get("title", "")) if isinstance(info, dict) else ""
    return ParsedSpec(base_url=_server_url(spec), resources=resources, title=title)


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UsageError(f"{where}: parameters must be a list")
    return value


def _params_schema(resolver: _Resolver, params: list[Any], body: Any, path: str, where: str) -> dict[str, Any] | None:
    properties: dict[str, Any] = {}
    required: list[str] = []
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in params:  # operation-level parameters override path-level ones (same name and place)
        p = resolver.resolve(raw)
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or p.get("in") not in (
                "path", "query", "header", "cookie"):
            raise UsageError(f"{where}: a parameter has no valid 'name' and 'in'",
                             "each parameter needs name and in (path, query, header or cookie)")
        by_key[(p["in"], p["name"])] = p
    for (place, name), p in by_key.items():
        if place not in ("path", "query"):
            continue  # headers/cookies are connector settings, not call parameters
        schema = resolver.inline(p.get("schema", {}))
        if not isinstance(schema, dict):
            schema = {}
        if isinstance(p.get("description"), str) and "description" not in schema:
            schema = {**schema, "description": p["description"]}
        properties[name] = schema
        if place == "path" or p.get("required") is True:
            required.append(name)
    for name in re.findall(r"{([^{}]+)}", path):
        if name not in properties:
            properties[name] = {"type": "string"}
            required.append(name)
    body = resolver.resolve(body) if body is not None else None
    if isinstance(body, dict) and isinstance(body.get("content"), dict):
        media = next((v for k, v in body["content"].items() if "json" in str(k)), None)
        schema = resolver.inline(media.get("schema")) if isinstance(media, dict) else None
        if isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
            properties.update(schema["properties"])
            body_required = schema.get("required", [])
            if body.get("required") is True and isinstance(body_required, list):
                required += [r for r in body_required if isinstance(r, str)]
    if not properties:
        return None
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(dict.fromkeys(required))
    return out


def _example(resolver: _Resolver, responses: Any) -> Any:
    """An example of the first 2xx JSON response (the mock answer), if the spec gives one."""
    responses = resolver.resolve(responses)
    if not isinstance(responses, dict):
        return None
    for code, raw in sorted(responses.items(), key=lambda kv: str(kv[0])):  # YAML may give int keys
        if not str(code).startswith("2"):
            continue
        resp = resolver.resolve(raw)
        content = resp.get("content") if isinstance(resp, dict) else None
        if not isinstance(content, dict):
            continue
        for media_type, media in content.items():
            if "json" not in str(media_type) or not isinstance(media, dict):
                continue
            if "example" in media:
                return resolver.inline(media["example"])
            examples = media.get("examples")
            if isinstance(examples, dict):
                for ex in examples.values():
                    ex = resolver.resolve(ex)
                    if isinstance(ex, dict) and "value" in ex:
                        return resolver.inline(ex["value"])
            schema = resolver.inline(media.get("schema"))
            if isinstance(schema, dict) and "example" in schema:
                return schema["example"]
    return None


def _server_url(spec: dict[str, Any]) -> str | None:
    servers = spec.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return None
    url = servers[0].get("url")
    if not isinstance(url, str):
        return None
    variables = servers[0].get("variables")
    if isinstance(variables, dict):
        for name, var in variables.items():
            if isinstance(var, dict) and "default" in var:
                url = url.replace("{" + str(name) + "}", str(var["default"]))
    return url if re.match(r"^https?://[^/{}\s]+", url) else None


class _Resolver:
    """Local ``$ref`` resolution (``#/components/...``); cycles become ``{}`` (anything)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise UsageError(f"external reference {ref!r} is not supported",
                             "bundle the spec into one file first (e.g. redocly bundle)")
        node: Any = self.spec
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise UsageError(f"reference {ref!r} points at nothing in the spec")
        return node

    def resolve(self, node: Any, depth: int = 0) -> Any:
        """Follow a top-level ``$ref`` chain."""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            depth += 1
            if depth > _MAX_REF_DEPTH:
                return {}
            node = self._lookup(node["$ref"])
        return node

    def inline(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        """Resolve every ``$ref`` inside ``node`` (a schema or an example)."""
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref in stack or len(stack) > _MAX_REF_DEPTH:
                    return {}  # recursive schema: accept anything below this point
                return self.inline(self._lookup(ref), (*stack, ref))
            return {k: self.inline(v, stack) for k, v in node.items()}
        if isinstance(node, list):
            return [self.inline(v, stack) for v in node]
        return node
