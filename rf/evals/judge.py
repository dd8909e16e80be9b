"""The ``judge`` scorer: an LLM provider grades an output against a rubric.

The request goes through the normal provider layer (the default provider and model, or
``model: provider:model``): a system message that starts with
:data:`rf.llm.mock.JUDGE_MARKER` and asks for a JSON verdict, and a user message holding
``{"rubric", "input", "output"}`` as JSON. The reply's first JSON object with a boolean
``pass`` is the verdict (``score`` and ``reason`` optional); a reply that starts with PASS or
FAIL is read too. The offline ``mock`` provider recognises the marker and answers a
deterministic verdict (see :func:`rf.llm.mock.judge_verdict`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from rf.errors import RfError
from rf.evals.scorers import Tools
from rf.llm.mock import JUDGE_MARKER

SYSTEM = (
    f"{JUDGE_MARKER}. You grade the output of an AI agent against a rubric. The user message is JSON "
    'with "rubric", "input" (what the agent was given) and "output" (what it answered). '
    'Answer with only a JSON object: {"pass": true or false, "score": a number from 0 to 1, '
    '"reason": "one short sentence"}.'
)
_MAX_OUTPUT = 20_000  #: characters of the output sent to the judge


def judge(tools: Tools, rubric: str, input: Any, output: str, model: str | None) -> tuple[bool, float | None, str]:
    """``(passed, score, reason)`` of one output. A provider error fails the score (its message
    as the reason) rather than the whole eval run."""
    request = json.dumps({"rubric": rubric, "input": input, "output": output[:_MAX_OUTPUT]},
                         ensure_ascii=False, default=str)
    try:
        reply = tools.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": request}], model)
    except RfError as exc:
        return False, None, f"the judge could not answer: {exc.message}"
    return parse_verdict(reply)


def parse_verdict(reply: str) -> tuple[bool, float | None, str]:
    """The verdict in a judge's reply (a reply that holds none fails, quoting it)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", reply):
        try:
            value, _ = decoder.raw_decode(reply, match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("pass"), bool):
            score = value.get("score")
            score = float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
            reason = str(value.get("reason") or ("passes the rubric" if value["pass"] else "fails the rubric"))
            return value["pass"], score, reason[:300]
    word = reply.strip().split(maxsplit=1)[0].strip(".:,").upper() if reply.strip() else ""
    if word in ("PASS", "FAIL"):
        return word == "PASS", None, reply.strip()[:300]
    return False, None, f"the judge's reply holds no verdict: {reply.strip()[:200]!r}"
