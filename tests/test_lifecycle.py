"""Small things a new user hit over the life of a workspace (issue: environment guarantees)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

from conftest import RF


def test_the_actor_is_the_login_name_when_user_is_unset(ws: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_") and k not in ("USER", "USERNAME", "LOGNAME")}
    env["HOME"] = str(tmp_path)  # no git user.name either
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    r = subprocess.run([*RF, "agents", "deploy", "hello", "-m", "v1"], cwd=ws.root, env=env, text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*RF, "agents", "history", "hello", "--json"], cwd=ws.root, env=env, text=True,
                       capture_output=True, timeout=60)
    author = json.loads(r.stdout)[0]["author"]
    assert author == pwd.getpwuid(os.getuid()).pw_name != "unknown"


def test_a_new_rf_toml_points_at_no_placeholder_site(ws: Any) -> None:
    text = (ws.root / "rf.toml").read_text()
    assert "example.invalid" not in text and "http" not in text.splitlines()[0]
