"""``ctx.connectors`` inside the worker (built on ``Context.call_host``).

The worker holds no configuration and no secrets: ``call`` sends the slug,
resource and parameters to the host, which resolves the connector instance
*of this execution's environment*, adds the credential and makes the HTTP
request. So the same agent code talks to the staging API under
``rf test``/staging and to the production API in production.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rf.runtime.context import Context

_TOOL_NAME_RE = re.compile(r"[^a-zA-Z0-9_-]")


def tool_name(slug: str, resource: str) -> str:
    """``crm`` + ``get-customer`` → ``crm__get-customer`` (LLM APIs allow ``[a-zA-Z0-9_-]{1,64}``)."""
    return _TOOL_NAME_RE.sub("_", f"{slug}__{resource}")[:64]


class Connectors:
    """This environment's connector instances."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def call(self, slug: str, resource: str, mock: bool = False, **params: Any) -> Any:
        """Call ``resource`` of connector ``slug``; returns the parsed JSON answer (or text).

        Path parameters (``/customers/{id}``) are filled from ``params``; the
        rest go in the query (GET/DELETE) or the JSON body (POST/PUT/PATCH).
        ``mock=True`` returns the resource's mock response without any
        network call. Errors (unknown resource, missing parameter, HTTP
        status, timeout) raise :class:`rf.errors.RfError` with a clear message.
        """
        return self._ctx.call_host("connectors.call", slug=slug, resource=resource, params=params, mock=mock)

    def describe(self, slug: str, resource: str) -> dict[str, Any]:
        """``{"name", "description", "parameters", "method", "path", ...}`` of a resource."""
        result: dict[str, Any] = self._ctx.call_host("connectors.describe", slug=slug, resource=resource)
        return result

    def tool(self, slug: str, resource: str, mock: bool = False) -> ConnectorTool:
        """The resource as an LLM tool: ``name``, ``description``, ``parameters``, and callable."""
        info = self.describe(slug, resource)
        return ConnectorTool(self, slug, resource, str(info.get("description", "")),
                             dict(info.get("parameters") or {"type": "object", "properties": {}}), mock=mock)


class ConnectorTool:
    """A connector resource usable as an LLM tool (function calling).

    ``name`` is ``<slug>__<resource>`` restricted to ``[a-zA-Z0-9_-]`` (what
    OpenAI and Anthropic accept); ``parameters`` is the resource's JSON
    Schema, path parameters included. Calling the tool performs the call.
    """

    def __init__(self, connectors: Connectors, slug: str, resource: str, description: str,
                 parameters: dict[str, Any], *, mock: bool = False) -> None:
        self._connectors = connectors
        self.slug = slug
        self.resource = resource
        self.name = tool_name(slug, resource)
        self.description = description
        self.parameters = parameters
        self.mock = mock

    def __call__(self, **kwargs: Any) -> Any:
        return self._connectors.call(self.slug, self.resource, mock=self.mock, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style function description of this tool."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def __repr__(self) -> str:
        return f"ConnectorTool({self.name!r})"
