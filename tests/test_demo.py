"""`make demo` runs scripts/demo.py: the README's main path, run as a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_whole_workflow() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in (
        "rf test ran in staging",
        "deploying unchanged code makes no commit",
        "production answers 404 until the agent is promoted",
        "production serves the promoted commit",
        "staging and production run different commits",
        "production lists only its own 2 executions",
        "production now serves the new greeting",
        "rf test resolved the draft prompt and staging CRM",
        "staging renders draft v2, production the published v1",
        "production's connector still points at the live CRM",
        "staging calls the sandbox CRM, production the live one",
        "staging answers the OpenAI client with the support bot's reply",
        "production answers the OpenAI client with the support bot's reply",
        "the OpenAI door runs the same executions (source openai)",
        "greets-by-name regresses",
        "the publish is refused (nothing changed in production)",
        "no regressions: the suite passes on staging's state",
        "demo complete",
    ):
        assert expected in out, expected
    assert "Traceback" not in out


def test_makefile_and_ci_use_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
