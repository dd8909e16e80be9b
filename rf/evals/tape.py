"""Recorded connector answers: what a replay and a replay-only eval answer ``ctx.connectors.call`` from.

A :class:`Tape` rides on one execution (``HostCall.tape``, and on the child executions that
execution calls with ``ctx.agents.invoke``). When agent code calls a connector, the host
(rf.services.connectors) asks the tape first:

- a recorded call with the same **request** — connector, resource, HTTP method (of the
  resource as the environment running it defines it) and parameters (as agent code passed
  them) — answers it: its response, or its error (a :class:`~rf.errors.ConnectorError` with
  the recorded status and body). A request made more often than it was recorded gets the last
  recorded answer again: nothing external is called a second time;
- a connector in mock mode answers as usual (that is not an external call);
- otherwise the call is **unmatched**: it is listed (:attr:`Tape.unmatched`) and fails the
  execution (even if agent code catches the error), unless the tape is ``live`` — then the
  environment's instance is called for real, and, when the tape is ``recording``, its answer
  is kept (:attr:`Tape.recorded`, secrets redacted) for ``rf eval --record``.

Where recordings come from: the spans of a production execution (rf.services.replay; the
trace keeps connector bodies up to :data:`BODY_MAX` characters, see rf.services.traces), or a
suite's recordings file (``evals/NAME.recordings.json``, next to ``evals/NAME.yaml``; written by
``rf eval --record``, reviewed and committed with the agent like the suite itself).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

#: The most characters of JSON a trace keeps of a connector or LLM request or response body in
#: ``standard`` mode (whatever ``trace_max_chars`` says): a longer body is cut, marked
#: ``body_truncated``, and that call cannot be answered from the recording.
BODY_MAX = 64 * 1024
#: A recordings file sits next to its suite file: ``evals/smoke.yaml`` → ``evals/smoke.recordings.json``.
RECORDINGS_SUFFIX = ".recordings.json"
RECORDINGS_VERSION = 1


@dataclass
class Recorded:
    """One recorded connector call: the request, then its response or its error."""

    connector: str
    resource: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    response: Any = None
    #: the call failed: ``{"message", "status", "body"}`` (a ConnectorError when replayed)
    error: dict[str, Any] | None = None

    def key(self) -> str:
        return request_key(self.connector, self.resource, self.method, self.params)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"connector": self.connector, "resource": self.resource, "method": self.method,
                                "params": self.params}
        if self.error is not None:
            data["error"] = self.error
        else:
            data["response"] = self.response
        return data

    def answer(self) -> Any:
        """The recorded response (a copy: agent code may change what it gets), or the recorded error raised."""
        if self.error is not None:
            from rf.errors import ConnectorError

            status = self.error.get("status")
            raise ConnectorError(str(self.error.get("message") or f"connector {self.connector}.{self.resource} failed"),
                                 "answered from the recording (replay)", status if isinstance(status, int) else None,
                                 self.error.get("body") if isinstance(self.error.get("body"), str) else None)
        return json.loads(json.dumps(self.response))

    def describe(self) -> str:
        return describe_request(self.connector, self.resource, self.method, self.params)


def request_key(connector: str, resource: str, method: str, params: Any) -> str:
    """What two calls must share to be the same request (parameters compared as JSON values)."""
    return json.dumps([connector, resource, method.upper(), params or {}], sort_keys=True, separators=(",", ":"),
                      default=repr)


def describe_request(connector: str, resource: str, method: str, params: Any) -> str:
    text = json.dumps(params or {}, sort_keys=True, separators=(", ", ": "), default=repr)
    if len(text) > 200:
        text = text[:200] + "…"
    return f"{connector}.{resource} {method.upper()} {text}"


class Tape:
    """Recorded answers for one execution (see the module docstring). Thread-safe: an
    execution's host calls, and its child executions', may be served on other threads."""

    def __init__(self, calls: list[Recorded] | tuple[Recorded, ...] = (), *, live: bool = False,
                 recording: bool = False, llm_mock: bool = False, history: list[dict[str, Any]] | None = None,
                 source: str = "the recording") -> None:
        self._answers: dict[str, list[Recorded]] = {}
        for recorded in calls:
            self._answers.setdefault(recorded.key(), []).append(recorded)
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()
        #: call staging's instances when nothing was recorded (``--live`` / ``--live-connectors``)
        self.live = live or recording
        #: keep what live calls answer (``rf eval --record``)
        self.recording = recording
        #: LLM calls go to the built-in mock provider (``rf replay --llm mock``)
        self.llm_mock = llm_mock
        #: the session's messages before this turn (a replay of a production turn); None: the session's own
        self.history = history
        #: where the recorded answers came from, for messages ("production execution ex_…", "evals/x.recordings.json")
        self.source = source
        self.unmatched: list[str] = []  #: requests nothing recorded answered (and that did not go out)
        self.served = 0  #: calls answered from the recording
        self.live_calls = 0  #: calls that went out (live)
        self.recorded: list[Recorded] = []  #: what live calls answered, when recording

    def __len__(self) -> int:
        return sum(len(v) for v in self._answers.values())

    def answer(self, connector: str, resource: str, method: str, params: Any) -> Recorded | None:
        """The recorded answer to this request (the n-th for its n-th call, then the last), or None."""
        key = request_key(connector, resource, method, params)
        with self._lock:
            answers = self._answers.get(key)
            if not answers:
                return None
            n = self._used.get(key, 0)
            self._used[key] = n + 1
            self.served += 1
            return answers[min(n, len(answers) - 1)]

    def miss(self, connector: str, resource: str, method: str, params: Any) -> str:
        """Note an unmatched request; returns its description."""
        shown = describe_request(connector, resource, method, params)
        with self._lock:
            self.unmatched.append(shown)
        return shown

    def went_live(self, recorded: Recorded | None) -> None:
        """A call went out; when recording, keep its (redacted) answer."""
        with self._lock:
            self.live_calls += 1
            if self.recording and recorded is not None:
                self.recorded.append(recorded)


# ---------------------------------------------------------------- recordings files

def recordings_path(suite_file: str) -> str:
    """``evals/smoke.yaml`` → ``evals/smoke.recordings.json``."""
    stem = suite_file.rsplit(".", 1)[0]
    return stem + RECORDINGS_SUFFIX


def load_recordings(files: dict[str, bytes], agent: str | None = None) -> dict[str, list[Recorded]]:
    """Every case's recorded calls, from the recordings files among an agent directory's files
    (``{case id: [Recorded, ...]}``); InvalidAgent naming the file when one is malformed."""
    from rf.errors import InvalidAgent

    found: dict[str, list[Recorded]] = {}
    for path, data in sorted(files.items()):
        if not (path.startswith("evals/") and path.endswith(RECORDINGS_SUFFIX)):
            continue
        shown = f"agents/{agent}/{path}" if agent else path
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidAgent(f"{shown}: not valid JSON: {exc}", _fix(agent, shown)) from None
        cases = doc.get("cases") if isinstance(doc, dict) else None
        if not isinstance(cases, dict):
            raise InvalidAgent(f"{shown}: a recordings file is an object with \"cases\": {{case id: [calls]}}",
                               _fix(agent, shown))
        for case_id, calls in check_recordings(cases, shown, agent).items():
            found.setdefault(case_id, []).extend(calls)
    return found


def _fix(agent: str | None, shown: str) -> str:
    return f"record it again: rf eval {agent or 'AGENT'} --record (or delete {shown})"


def check_recordings(cases: dict[str, Any], shown: str, agent: str | None = None) -> dict[str, list[Recorded]]:
    """``{case id: [call as JSON]}`` checked and read (InvalidAgent naming *shown* and the call)."""
    from rf.errors import InvalidAgent

    found: dict[str, list[Recorded]] = {}
    for case_id, calls in cases.items():
        if not isinstance(calls, list):
            raise InvalidAgent(f"{shown}: case {case_id!r}: the recorded calls must be a list", _fix(agent, shown))
        kept: list[Recorded] = []
        for n, call in enumerate(calls, start=1):
            if not (isinstance(call, dict) and isinstance(call.get("connector"), str)
                    and isinstance(call.get("resource"), str) and isinstance(call.get("method"), str)
                    and isinstance(call.get("params", {}), dict)
                    and (("response" in call) != isinstance(call.get("error"), dict))):
                raise InvalidAgent(f"{shown}: case {case_id!r}, call {n}: needs connector, resource, method, "
                                   "params and either response or error", _fix(agent, shown))
            kept.append(Recorded(connector=call["connector"], resource=call["resource"], method=call["method"],
                                 params=call.get("params") or {}, response=call.get("response"),
                                 error=call.get("error")))
        found[str(case_id)] = kept
    return found


def dump_recordings(cases: dict[str, list[Recorded]], *, agent: str, commit: str, recorded_at: str,
                    previous: bytes | None = None) -> str:
    """A recordings file's text: *cases* merged over *previous* (the file as it was: cases not
    run this time keep their recordings). Sorted and indented, so a review diff stays small."""
    kept: dict[str, Any] = {}
    if previous:
        try:
            old = json.loads(previous.decode("utf-8"))
            if isinstance(old, dict) and isinstance(old.get("cases"), dict):
                kept.update(old["cases"])
        except (UnicodeDecodeError, ValueError):
            pass  # a broken file is replaced
    for case_id, calls in cases.items():
        kept[case_id] = [c.to_json() for c in calls]
    doc = {
        "about": f"connector answers recorded by `rf eval {agent} --record`; evals answer these requests "
                 "from here instead of calling the connector (an unrecorded call fails its case unless --live)",
        "version": RECORDINGS_VERSION, "agent": agent, "commit": commit, "recorded_at": recorded_at,
        "cases": dict(sorted(kept.items())),
    }
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- recordings in a trace

def recorded_from_spans(spans: list[Any]) -> tuple[list[Recorded], list[str]]:
    """The connector calls among an execution's spans (rf.models.Span, in time order), as
    recordings; and the calls the trace did not keep enough of (``minimal`` mode: no bodies; a
    body cut at :data:`BODY_MAX`), described. A call refused before it went out (bad
    parameters) is neither: running it again refuses it again."""
    calls: list[Recorded] = []
    missing: list[str] = []
    for span in spans:
        if span.kind != "connector" or span.name != "connectors.call":
            continue
        attrs = span.attributes or {}
        method = attrs.get("method")
        request = attrs.get("input")
        if not isinstance(method, str):
            if not attrs:  # minimal mode keeps no attributes at all
                missing.append("connectors.call (trace mode minimal: no request or response kept)")
            continue  # refused before any request was made
        connector, resource = attrs.get("connector"), attrs.get("resource")
        label = f"{connector}.{resource} {method}"
        if attrs.get("body_truncated") or not isinstance(request, dict):
            missing.append(f"{label} (body over {BODY_MAX // 1024} KiB: cut in the trace)")
            continue
        params = request.get("params") or {}
        if span.status == "error":
            error = {"message": span.error or "failed", "status": attrs.get("status"),
                     "body": attrs.get("response_body")}
            calls.append(Recorded(str(connector), str(resource), method, params, error=error))
        elif "output" in attrs:
            calls.append(Recorded(str(connector), str(resource), method, params, response=attrs["output"]))
        else:
            missing.append(f"{label} (no response kept)")
    return calls, missing
