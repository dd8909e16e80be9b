"""OpenTelemetry export: spans as OTLP/JSON, and OTLP/HTTP to a collector.

:func:`to_otlp` turns rf spans into an ``ExportTraceServiceRequest`` in the
OTLP/JSON encoding (the protobuf JSON mapping, with trace and span ids as hex
strings and 64-bit integers as strings, as the OTLP specification says):

- one ``resourceSpans`` entry per (environment, agent), with the resource
  attributes ``service.name = "rf/<agent>"`` and ``deployment.environment``
  (and ``deployment.environment.name``) ``= <env>``, so any OpenTelemetry
  tool can filter by environment;
- span kind SERVER for the root span of an execution, CLIENT for calls that
  leave the process (LLM, connectors), INTERNAL for the rest;
- status OK or ERROR (with the error message);
- rf's own attributes under ``rf.`` (``rf.kind``, ``rf.execution_id``,
  ``rf.input``, ``rf.output`` as JSON text...), custom span attributes as
  they are, and
  on LLM spans the GenAI semantic-convention attributes
  (``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``...).

:func:`send` POSTs it to ``<endpoint>/v1/traces`` (OTLP/HTTP, JSON body), in
batches. Standard library only: the CLI imports this module on demand.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from rf.errors import RfError, UsageError
from rf.models import Span

SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_CODE_OK = 1
STATUS_CODE_ERROR = 2

_CLIENT_KINDS = {"llm", "connector"}
#: rf's own span attributes, exported under the ``rf.`` prefix.
_RF_KEYS = {"input", "output", "commit", "source", "session_id", "error_type", "child_errors"}
#: Batch size for OTLP/HTTP requests (collectors commonly cap request bodies).
BATCH_SPANS = 2000


def any_value(value: Any) -> dict[str, Any]:
    """A JSON value as an OTLP ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": str(k), "value": any_value(v)} for k, v in value.items()]}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def _kv(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": any_value(value)}


def gen_ai_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """GenAI semantic-convention attributes from what ``ctx.llm`` recorded on a span."""
    out: dict[str, Any] = {"gen_ai.operation.name": "chat"}
    system = attributes.get("provider_kind") or attributes.get("provider")
    if system:
        out["gen_ai.system"] = str(system)
        out["gen_ai.provider.name"] = str(system)
    model = attributes.get("model")
    if model:
        out["gen_ai.request.model"] = str(model)
        out["gen_ai.response.model"] = str(model)
    usage = attributes.get("usage")
    if isinstance(usage, dict):
        tokens_in = usage.get("input_tokens", usage.get("prompt_tokens"))
        tokens_out = usage.get("output_tokens", usage.get("completion_tokens"))
        if isinstance(tokens_in, int):
            out["gen_ai.usage.input_tokens"] = tokens_in
        if isinstance(tokens_out, int):
            out["gen_ai.usage.output_tokens"] = tokens_out
    if attributes.get("finish_reason"):
        out["gen_ai.response.finish_reasons"] = [str(attributes["finish_reason"])]
    return out


def otlp_span(span: Span) -> dict[str, Any]:
    """One span in the OTLP/JSON encoding."""
    attributes: list[dict[str, Any]] = [
        _kv("rf.kind", span.kind), _kv("rf.execution_id", span.execution_id), _kv("rf.env", span.env),
    ]
    for key, value in span.attributes.items():
        if value is None:
            continue
        if key in ("input", "output") and not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)  # one readable text value in any OTLP tool
        attributes.append(_kv(f"rf.{key}" if key in _RF_KEYS else key, value))
    if span.kind == "llm":
        attributes += [_kv(k, v) for k, v in gen_ai_attributes(span.attributes).items()]
    if span.parent_id is None:
        kind = SPAN_KIND_SERVER
    elif span.kind in _CLIENT_KINDS:
        kind = SPAN_KIND_CLIENT
    else:
        kind = SPAN_KIND_INTERNAL
    status: dict[str, Any] = {"code": STATUS_CODE_ERROR if span.status == "error" else STATUS_CODE_OK}
    if span.error:
        status["message"] = span.error
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": kind,
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": attributes,
        "status": status,
    }
    if span.parent_id:
        out["parentSpanId"] = span.parent_id
    return out


def to_otlp(spans: Iterable[Span], *, version: str = "") -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` for ``spans``."""
    if not version:
        from rf._version import __version__ as version
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for span in spans:
        groups.setdefault((span.env, span.agent), []).append(otlp_span(span))
    resource_spans = []
    for (env, agent), items in sorted(groups.items()):
        resource_spans.append({
            "resource": {"attributes": [
                _kv("service.name", f"rf/{agent}"),
                _kv("deployment.environment", env),
                _kv("deployment.environment.name", env),
                _kv("telemetry.sdk.name", "rf"),
            ]},
            "scopeSpans": [{"scope": {"name": "rf", "version": version}, "spans": items}],
        })
    return {"resourceSpans": resource_spans}


def traces_url(endpoint: str) -> str:
    """``<endpoint>/v1/traces`` (unless the endpoint already names that path)."""
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"invalid --endpoint {endpoint!r}", "use the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318")
    path = parsed.path.rstrip("/")
    if not path.endswith("/v1/traces"):
        path += "/v1/traces"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, parsed.query, ""))


def send(endpoint: str, spans: Sequence[Span], *, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> int:
    """POST spans as OTLP/HTTP JSON to ``<endpoint>/v1/traces``, in batches; the number of requests."""
    url = traces_url(endpoint)
    parsed = urllib.parse.urlsplit(url)
    target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    requests = 0
    for start in range(0, max(len(spans), 1), BATCH_SPANS):
        body = json.dumps(to_otlp(spans[start:start + BATCH_SPANS]), ensure_ascii=False).encode("utf-8")
        conn_cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parsed.hostname or "127.0.0.1", parsed.port, timeout=timeout)
        try:
            conn.request("POST", target, body=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            answer = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RfError(f"cannot send traces to {url}: {exc}",
                          "check that the collector is running and accepts OTLP/HTTP (usually port 4318)") from None
        finally:
            conn.close()
        if not 200 <= resp.status < 300:
            text = answer.decode("utf-8", "replace").strip()[:200]
            raise RfError(f"the collector at {url} answered {resp.status}" + (f": {text}" if text else ""),
                          "check the endpoint URL and the collector's logs")
        requests += 1
    return requests
