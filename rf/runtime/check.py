"""Validate agent code before it is deployed.

Why a subprocess: importing the entrypoint runs the agent's module-level
code, which may do anything (crash, hang, print, mutate ``sys.path``). A
fresh worker process (the same ``python -m rf.runtime.worker`` the pool runs,
so the checks and the error messages are exactly those of a real run) imports
it and reports ``ready`` or what went wrong; it is then killed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rf.errors import InvalidAgent, RfError
from rf.runtime.pool import WorkerProcess, signal_name, worker_env
from rf.runtime.protocol import ProtocolError
from rf.runtime.worker import parse_entrypoint

_HINTS = {
    "entrypoint": "set entrypoint in agent.toml to 'module:function', e.g. 'agent:handle'",
    "no_module": "check the entrypoint in agent.toml and that the module file is in the agent directory",
    "syntax": "fix the syntax error, then deploy again",
    "import": "fix the error raised while importing the module, then deploy again",
    "missing_attr": "define the handler function, e.g. def handle(input, ctx): ..., or fix the entrypoint",
    "not_callable": "the entrypoint must name a function: def handle(input, ctx): ...",
}


def validate_agent_code(code_dir: Path, entrypoint: str, *, timeout_s: float = 20.0, python: str | None = None,
                        agent_env: dict[str, str] | None = None) -> None:
    """Import *entrypoint* from *code_dir* in a fresh subprocess and check it
    names a callable. Raises :class:`rf.errors.InvalidAgent` saying what is
    wrong and where, e.g. ``cannot import module 'agent' (agent.py:3:
    SyntaxError: invalid syntax)``.

    The subprocess is started like a real worker: the allow-listed environment plus
    *agent_env* (the agent's ``[env]`` values), in an empty working directory of its own."""
    module, _ = parse_entrypoint(entrypoint)  # InvalidAgent on a malformed string
    directory = os.fspath(code_dir)
    if not os.path.isdir(directory):
        raise InvalidAgent(f"agent code directory {directory} does not exist")
    try:
        worker = WorkerProcess(("check", "check", "check"), directory, entrypoint, python=python,
                               env=worker_env(agent_env=agent_env))
    except OSError as exc:
        raise RfError(
            f"cannot start Python to check the agent code: {exc}",
            "check the Python interpreter rf is configured to use",
        ) from None
    try:
        try:
            message = worker.recv(time.monotonic() + timeout_s)
        except TimeoutError:
            worker.kill(dump=True)
            _, dump = worker.read_capture()
            location = worker.location_in(dump)
            where = f" (stuck at {location})" if location else ""
            raise InvalidAgent(
                f"importing module {module!r} did not finish within {timeout_s:g} s{where}",
                "module-level code must not block; move slow work into the handler",
            ) from None
        except ProtocolError as exc:
            raise InvalidAgent(f"checking the agent code failed: {exc}") from None
        if message is None:
            code = worker.reap()
            _, dump = worker.read_capture()
            location = worker.location_in(dump)
            at = f" at {location}" if location else ""
            if code is None:
                how = "by closing its output"
            elif code < 0:
                how = f"by a crash (signal {signal_name(-code)}{at})"
            else:
                how = f"with exit code {code}"
            raise InvalidAgent(
                f"importing module {module!r} ended the Python process {how}",
                "module-level code must not exit or crash the interpreter",
            )
        kind = message.get("t")
        if kind == "ready":
            return
        if kind == "init_error":
            error_kind = str(message.get("kind"))
            raise InvalidAgent(str(message.get("message")), _HINTS.get(error_kind))
        raise InvalidAgent(f"checking the agent code failed: unexpected {kind!r} message")
    finally:
        worker.destroy()
