"""HTTP plumbing shared by the OpenAI and Anthropic clients.

One place turns every httpx failure — timeouts, refused connections, HTTP
error statuses, bodies that are not JSON — into a :class:`ProviderError`
that names the provider, the status and the start of the body, with the API
key scrubbed out of anything that could echo it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from rf.llm.types import ProviderError

BODY_PREVIEW = 300

_STATUS_HINTS = {
    400: "the provider rejected the request; check the model name and the messages",
    401: "the API key was refused; check the provider's credential (rf credentials set NAME)",
    403: "the API key may not use this model or endpoint",
    404: "check the provider's base URL and the model name",
    408: "the provider timed out; try again",
    413: "the request is too large for the provider",
    429: "rate limited or out of quota at the provider; wait and try again",
}


class HttpChat:
    """Base of the wire-format clients: POST JSON, read JSON or server-sent events."""

    def __init__(self, provider: str, base_url: str, api_key: str | None, *, timeout_s: float = 60.0) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.timeout_s = timeout_s
        #: Set when ``timeout_s`` is the time the calling execution has left (shorter than
        #: ``[llm] timeout_s``): a timeout then says so, with this hint.
        self.out_of_time_hint: str | None = None

    # ------------------------------------------------------------ errors
    def _scrub(self, text: str) -> str:
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return text

    def _error(self, message: str, hint: str | None = None) -> ProviderError:
        return ProviderError(self._scrub(message), hint)

    def _status_error(self, status: int, body: str) -> ProviderError:
        preview = " ".join(body.split())
        if len(preview) > BODY_PREVIEW:
            preview = preview[:BODY_PREVIEW] + "…"
        hint = _STATUS_HINTS.get(status)
        if hint is None and status >= 500:
            hint = "the provider had an internal error; try again later"
        return self._error(f"provider {self.provider!r} answered HTTP {status}: {preview or '(empty body)'}", hint)

    @contextmanager
    def _translate(self, url: str) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException:
            if self.out_of_time_hint:
                raise self._error(f"provider {self.provider!r} did not answer before the execution's time ran out"
                                  f" ({url})", self.out_of_time_hint) from None
            raise self._error(
                f"provider {self.provider!r} did not answer within {self.timeout_s:g} s ({url})",
                "the provider may be slow or overloaded; raise [llm] timeout_s in rf.toml or try again",
            ) from None
        except httpx.HTTPError as exc:
            raise self._error(
                f"cannot reach provider {self.provider!r} at {self.base_url}: {type(exc).__name__}: {exc}",
                "check the provider's base URL (rf providers list) and that the server is running",
            ) from None

    # ------------------------------------------------------------ requests
    def post_json(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; the JSON object answered (ProviderError otherwise)."""
        with self._translate(url), httpx.Client(timeout=self.timeout_s) as client:
            response = client.post(url, headers=headers, json=body)
            text = response.text
        if response.status_code >= 400:
            raise self._status_error(response.status_code, text)
        try:
            data = json.loads(text)
        except ValueError:
            raise self._error(f"provider {self.provider!r} answered with non-JSON data: {text[:BODY_PREVIEW]!r}",
                              "check that the base URL points at the API, not a web page") from None
        if not isinstance(data, dict):
            raise self._error(f"provider {self.provider!r} answered with unexpected JSON: {text[:BODY_PREVIEW]!r}")
        return data

    def post_sse(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """POST ``body`` and yield ``(event, data)`` per server-sent event.

        ``event`` is the ``event:`` field ("" when absent, as with OpenAI);
        ``data`` is the parsed JSON of the ``data:`` lines, or the raw string
        when it is not JSON (e.g. ``[DONE]``).
        """
        headers = {**headers, "Accept": "text/event-stream"}
        with self._translate(url), httpx.Client(timeout=self.timeout_s) as client, \
                client.stream("POST", url, headers=headers, json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise self._status_error(response.status_code, response.text)
            event, data_lines = "", list[str]()
            for line in response.iter_lines():
                if line == "":
                    if data_lines:
                        yield event, _decode("\n".join(data_lines))
                    event, data_lines = "", []
                elif line.startswith(":"):
                    continue  # comment / keep-alive
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data_lines.append(value)
            if data_lines:
                yield event, _decode("\n".join(data_lines))


def _decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data
