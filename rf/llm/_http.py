"""HTTP plumbing shared by the OpenAI and Anthropic clients.

One place turns every httpx failure — timeouts, refused connections, HTTP
error statuses, bodies that are not JSON — into a :class:`ProviderError`
that names the provider, the status and the start of the body, with the API
key scrubbed out of anything that could echo it.

**One HTTP client per provider.** The :class:`httpx.Client` (its connection
pool) is made once per provider by :func:`new_http_client` and kept by
``rf.services.providers``; the :class:`HttpChat` objects built for each call
are cheap wrappers holding that call's key, timeout and deadline, so calls on
several threads share the pool (httpx's pool is thread-safe) but no per-call
state.

**Retries** (tenacity): an answer HTTP 429, 408, 409 or 5xx, or a connection
dropped mid-request, is retried up to :data:`MAX_ATTEMPTS` times in all. The
wait is what the provider asks for (``retry-after-ms`` or ``Retry-After``:
seconds or an HTTP date), else exponential backoff with jitter (0.5 s, 1 s,
2 s… at most 8 s). Never past the deadline: each attempt's timeout is cut to
the time left, and when the next wait would end after the deadline the call
stops at once with the provider's error and a note saying so. Other 4xx
answers (a bad key, a bad request) are not retried. A stream is retried only
while opening it (its status), never after a piece was delivered.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import tenacity

from rf.llm.types import ProviderError

BODY_PREVIEW = 300
#: Attempts per call (the first one included) for retryable answers.
MAX_ATTEMPTS = 5
#: Backoff without a Retry-After: initial wait, cap (seconds; jitter added).
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 8.0
_RETRY_STATUSES = frozenset({408, 409, 429})


class RetryableError(ProviderError):
    """A provider answer worth retrying (429, 5xx...): ``retry_after`` is the wait it asked for."""

    def __init__(self, message: str, hint: str | None = None, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, hint)
        self.status = status
        self.retry_after = retry_after


def retry_after_of(headers: httpx.Headers) -> float | None:
    """The wait a provider asked for: ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def new_http_client() -> httpx.Client:
    """The pooled client of one provider (timeouts are set per request)."""
    # retries=1: a refused/reset *connect* is tried once more at once (a provider's keep-alive
    # connection closed under us); HTTP-level retries are tenacity's (HttpChat._send).
    return httpx.Client(transport=httpx.HTTPTransport(retries=1), timeout=60.0)

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

    def __init__(self, provider: str, base_url: str, api_key: str | None, *, timeout_s: float = 60.0,
                 http: httpx.Client | None = None, deadline: float | None = None,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.timeout_s = timeout_s
        #: The shared client of this provider (see the module doc); a private one when None.
        self.http = http
        #: ``time.monotonic()`` after which no attempt starts and no retry waits (the calling
        #: execution's deadline); None: ``timeout_s`` from the first attempt.
        self.deadline = deadline
        #: whether ``deadline`` is the calling execution's (errors say so)
        self.execution_deadline = deadline is not None
        self.max_attempts = max_attempts
        #: Retries made by the last request (the trace shows them).
        self.retries = 0
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

    def _status_error(self, status: int, body: str, headers: httpx.Headers | None = None) -> ProviderError:
        preview = " ".join(body.split())
        if len(preview) > BODY_PREVIEW:
            preview = preview[:BODY_PREVIEW] + "…"
        hint = _STATUS_HINTS.get(status)
        if hint is None and status >= 500:
            hint = "the provider had an internal error; try again later"
        message = self._scrub(f"provider {self.provider!r} answered HTTP {status}: {preview or '(empty body)'}")
        if status in _RETRY_STATUSES or status >= 500:
            return RetryableError(message, hint, status=status,
                                  retry_after=retry_after_of(headers) if headers is not None else None)
        return ProviderError(message, hint)

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
        except httpx.RemoteProtocolError as exc:  # the connection dropped mid-request: worth another try
            raise RetryableError(self._scrub(
                f"provider {self.provider!r} at {self.base_url} closed the connection: {exc}"),
                "the provider may be overloaded or restarting; try again") from None
        except httpx.HTTPError as exc:
            raise self._error(
                f"cannot reach provider {self.provider!r} at {self.base_url}: {type(exc).__name__}: {exc}",
                "check the provider's base URL (rf providers list) and that the server is running",
            ) from None

    # ------------------------------------------------------------ retries
    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return exc.retry_after
        return self._backoff(state)

    _backoff = (tenacity.wait_exponential(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S)
                + tenacity.wait_random(0, 0.25))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self.max_attempts:
            self._gave_up = f"gave up after {state.attempt_number} attempts"
            return True
        left = self._time_left()
        if left is not None and state.upcoming_sleep >= left:
            self._gave_up = (f"not retried: the next attempt (in {state.upcoming_sleep:.3g} s) would start after "
                             + ("the execution's time runs out" if self.execution_deadline
                                else "the call's time ([llm] timeout_s) runs out")
                             + f" ({max(left, 0):.3g} s left)")
            return True
        return False

    def _send(self, url: str, headers: dict[str, str], body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST ``body``; the response (status < 400), retried as the module doc says."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout_s
        self.retries = 0
        self._gave_up = ""
        http = self.http
        if http is None:
            http = self.http = new_http_client()

        def attempt() -> httpx.Response:
            left = self._time_left()
            timeout = self.timeout_s if left is None else max(min(self.timeout_s, left), 0.001)
            with self._translate(url):
                request = http.build_request("POST", url, headers=headers, json=body, timeout=timeout)
                response = http.send(request, stream=stream)
                if response.status_code >= 400:
                    try:
                        response.read()
                    finally:
                        response.close()
            if response.status_code >= 400:
                raise self._status_error(response.status_code, response.text, response.headers)
            return response

        def count(_state: tenacity.RetryCallState) -> None:
            self.retries += 1

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(RetryableError), wait=self._wait,
                                     stop=self._stop, before_sleep=count, reraise=True)
        try:
            return retrying(attempt)
        except RetryableError as exc:
            if self._gave_up:
                retried = f"; retried {self.retries} time{'s' if self.retries != 1 else ''}" if self.retries else ""
                hint = exc.hint
                if self._gave_up.startswith("not retried"):
                    hint = ("the provider asks to wait longer than the call may take: try again later"
                            + (", or raise the agent's timeout_s in agent.toml" if self.execution_deadline else ""))
                raise ProviderError(f"{exc.message} ({self._gave_up}{retried})", hint) from None
            raise

    # ------------------------------------------------------------ requests
    def post_json(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; the JSON object answered (ProviderError otherwise)."""
        response = self._send(url, headers, body, stream=False)
        text = response.text
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
        response = self._send(url, headers, body, stream=True)
        try:
            yield from self._events(url, response)
        finally:
            response.close()

    def _events(self, url: str, response: httpx.Response) -> Iterator[tuple[str, Any]]:
        with self._translate(url):
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
