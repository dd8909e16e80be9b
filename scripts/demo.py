#!/usr/bin/env python3
"""`make demo`: the whole staging → production workflow on a throw-away workspace.

Every step runs the real `rf` command (as a user would type it) and the real
server, on 127.0.0.1, then prints what happened. Exits non-zero if any step
does not behave as described, so CI runs it as a test.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
RF = [str(BIN / "rf")] if (BIN / "rf").exists() else [sys.executable, "-m", "rf"]
AMBER, EMERALD, BOLD, DIM, RESET = "\033[38;5;214m", "\033[38;5;42m", "\033[1m", "\033[2m", "\033[0m"
if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
    AMBER = EMERALD = BOLD = DIM = RESET = ""


def step(title: str) -> None:
    print(f"\n{BOLD}── {title}{RESET}", flush=True)


def rf(*args: str, cwd: Path, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a real `rf` command; print it and (unless quiet) what it printed."""
    print(f"{DIM}$ rf {shlex.join(args)}{RESET}", flush=True)
    proc = subprocess.run([*RF, *args], cwd=cwd, text=True, capture_output=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "110"}, timeout=120)
    shown = proc.stderr if quiet else proc.stdout + proc.stderr
    for line in shown.rstrip().splitlines():
        print(f"  {line}")
    if check and proc.returncode != 0:
        raise SystemExit(f"demo failed: `rf {' '.join(args)}` exited {proc.returncode}")
    return proc


def call(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def show_call(env: str, url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    color = AMBER if env == "staging" else EMERALD
    print(f"{DIM}$ curl -X POST {url} -d '{json.dumps(body)}'{RESET}")
    status, data = call(url, body)
    print(f"  {color}{env.upper()}{RESET} {status} {json.dumps(data)}")
    return status, data


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"demo failed: expected {what}")
    print(f"  {EMERALD}✓{RESET} {what}")


def main() -> int:
    keep = "--keep" in sys.argv
    tmp = Path(tempfile.mkdtemp(prefix="rf-demo-"))
    # The demo's secrets stay in its throw-away directory: never in your OS keyring.
    os.environ["XDG_DATA_HOME"] = str(tmp / "data")
    os.environ["PYTHON_KEYRING_BACKEND"] = "rf.secrets.FileKeyring"
    ws = tmp / "demo"
    server: subprocess.Popen[str] | None = None
    try:
        step("1. create a workspace from the `hello` example")
        rf("init", str(ws), "--example", "hello", cwd=tmp)

        step("2. run the working copy locally — rf test is always staging")
        proc = rf("test", "hello", "--input", '{"name": "Ada"}', "--json", cwd=ws, quiet=True)
        ex = json.loads(proc.stdout)
        expect(ex["output"] == {"message": "hello, Ada"} and ex["env"] == "staging", "rf test ran in staging")

        step("3. deploy to staging (deploy never touches production)")
        rf("agents", "deploy", "hello", "-m", "first version", cwd=ws)
        proc = rf("agents", "deploy", "hello", cwd=ws)
        expect("no changes" in proc.stderr, "deploying unchanged code makes no commit")

        step("4. start the server: one endpoint URL per environment")
        print(f"{DIM}$ rf serve --port 0 &{RESET}")
        server = subprocess.Popen([*RF, "serve", "--port", "0"], cwd=ws, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env={**os.environ, "NO_COLOR": "1"})
        info_file = ws / ".rf" / "server.json"
        deadline = time.time() + 30
        while not info_file.exists():
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("demo failed: rf serve did not start:\n" + (server.stdout.read() if server.stdout else ""))
            time.sleep(0.05)
        base = json.loads(info_file.read_text())["url"]
        print(f"  serving at {base}")

        step("5. call staging, then production (not promoted yet)")
        status, data = show_call("staging", f"{base}/staging/agents/hello", {"input": {"name": "Ada"}})
        expect(status == 200 and data["output"] == {"message": "hello, Ada"}, "staging serves the deployed commit")
        status, data = show_call("production", f"{base}/production/agents/hello", {"input": {"name": "Ada"}})
        expect(status == 404, "production answers 404 until the agent is promoted")

        step("6. promote staging to production")
        rf("agents", "promote", "hello", "--yes", cwd=ws)
        status, data = show_call("production", f"{base}/production/agents/hello", {"input": {"name": "Grace"}})
        expect(status == 200 and data["output"] == {"message": "hello, Grace"}, "production serves the promoted commit")

        step("7. change the code and deploy again: staging moves, production stays")
        agent_py = ws / "agents" / "hello" / "agent.py"
        agent_py.write_text(agent_py.read_text().replace('f"hello, {name}"', 'f"hi there, {name}!"'))
        rf("agents", "deploy", "hello", "-m", "friendlier greeting", cwd=ws)
        rf("agents", "diff", "hello", cwd=ws)
        _, s = show_call("staging", f"{base}/staging/agents/hello", {"input": {"name": "Linus"}})
        _, p = show_call("production", f"{base}/production/agents/hello", {"input": {"name": "Linus"}})
        expect(s["output"] != p["output"], "staging and production run different commits")
        rf("status", cwd=ws)

        step("8. executions are recorded per environment, never mixed")
        rf("executions", "list", "--env", "staging", cwd=ws)
        rf("executions", "list", "--env", "production", cwd=ws)
        prod = json.loads(rf("executions", "list", "--env", "production", "--json", cwd=ws, quiet=True).stdout)
        expect(all(e["env"] == "production" for e in prod) and len(prod) == 2,
               "production lists only its own 2 executions")

        step("9. promote the new greeting")
        rf("agents", "promote", "hello", "--yes", cwd=ws)
        _, p = show_call("production", f"{base}/production/agents/hello", {"input": {"name": "Linus"}})
        expect(p["output"] == {"message": "hi there, Linus!"}, "production now serves the new greeting")
        rf("agents", "history", "hello", cwd=ws)
        stop(server)
        server = None
        support_bot(tmp)
        print(f"\n{BOLD}demo complete{RESET} — workspaces: {tmp if keep else '(removed; use --keep to keep them)'}")
        return 0
    finally:
        stop(server)
        if not keep:
            from rf.runtime.pool import remove_tree  # commit caches are read-only

            remove_tree(tmp)


def stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_server(ws: Path) -> tuple[subprocess.Popen[str], str]:
    print(f"{DIM}$ rf serve --port 0 &{RESET}")
    server = subprocess.Popen([*RF, "serve", "--port", "0"], cwd=ws, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    info_file = ws / ".rf" / "server.json"
    deadline = time.time() + 30
    while not info_file.exists():
        if server.poll() is not None or time.time() > deadline:
            raise SystemExit("demo failed: rf serve did not start:\n" + (server.stdout.read() if server.stdout else ""))
        time.sleep(0.05)
    base = json.loads(info_file.read_text())["url"]
    print(f"  serving at {base}")
    return server, base


def support_bot(tmp: Path) -> None:
    """Part 2: prompts, a connector with a credential, the mock LLM — all resolved per environment;
    then its eval suite gating a prompt change (part 4)."""
    ws = tmp / "support"
    crm: subprocess.Popen[str] | None = None
    server: subprocess.Popen[str] | None = None
    try:
        step("10. the support-bot example: prompts, a CRM connector with a credential, the offline mock LLM")
        rf("init", str(ws), "--example", "support-bot", cwd=tmp, quiet=True)
        crm = subprocess.Popen([sys.executable, str(ws / "crm" / "fake_crm.py"), "--port", "0", "--token", "s3cret"],
                               text=True, stdout=subprocess.PIPE)
        assert crm.stdout is not None
        port = crm.stdout.readline().strip()
        print(f"  fake CRM on 127.0.0.1:{port}: /live (real customers) and /sandbox (test data)")
        token = subprocess.run([*RF, "credentials", "set", "crm-token", "--from-stdin", "--yes"], cwd=ws, text=True,
                               input="s3cret", capture_output=True, env={**os.environ, "NO_COLOR": "1"})
        print(f"{DIM}$ echo ***** | rf credentials set crm-token --from-stdin --yes{RESET}\n  {token.stderr.strip()}")
        expect(token.returncode == 0, "the credential value is stored outside DuckDB (shared by both environments)")
        rf("connectors", "create", "crm", "--base-url", f"http://127.0.0.1:{port}/live", "--auth", "bearer",
           "--credential", "crm-token", cwd=ws)
        rf("connectors", "resources", "add", "crm", "get-customer", "--method", "GET", "--path", "/customers/{id}",
           cwd=ws)
        rf("prompts", "create", "support-system", "--file", "prompts/support-system.txt", cwd=ws)
        rf("prompts", "create", "support-greeting", "--file", "prompts/support-greeting.txt", cwd=ws)

        step("11. test locally in staging: draft prompt v1, staging CRM instance")
        out = json.loads(rf("test", "support", "--input", '{"customer_id": "42", "message": "How do refunds work?"}',
                            "--json", cwd=ws, quiet=True).stdout)["output"]
        print(f"  {AMBER}STAGING{RESET} {json.dumps(out)}")
        expect(out["prompt_version"] == 1 and out["crm"] == "live", "rf test resolved the draft prompt and staging CRM")

        step("12. release everything together: agent, prompts and connector in one batch")
        rf("agents", "deploy", "support", "-m", "support bot v1", cwd=ws)
        rf("releases", cwd=ws)
        rf("releases", "publish", "--all", "--yes", "-m", "launch support bot", cwd=ws)

        step("13. keep iterating in staging: a new prompt draft and the sandbox CRM")
        draft = ws / "prompts" / "support-system-v2.txt"
        draft.write_text("You are {{product}}'s support assistant. Greet {{customer}} by name. Answer in one sentence.\n")
        rf("prompts", "set", "support-system", "--file", str(draft), cwd=ws)
        rf("connectors", "edit", "crm", "--base-url", f"http://127.0.0.1:{port}/sandbox", cwd=ws)
        rf("connectors", "resources", "add", "crm", "list-orders", "--method", "GET",
           "--path", "/customers/{id}/orders", cwd=ws)
        rf("prompts", "diff", "support-system", cwd=ws)
        rf("releases", cwd=ws)

        step("13b. publish the CRM's new resource: its settings stay per environment")
        rf("connectors", "diff", "crm", cwd=ws)
        rf("connectors", "publish", "crm", "--yes", "-m", "CRM: list orders", cwd=ws)
        prod_crm = json.loads(rf("connectors", "show", "crm", "--env", "production", "--json", cwd=ws,
                                 quiet=True).stdout)
        staging_crm = json.loads(rf("connectors", "show", "crm", "--json", cwd=ws, quiet=True).stdout)
        expect(prod_crm["base_url"].endswith("/live") and staging_crm["base_url"].endswith("/sandbox")
               and {r["slug"] for r in prod_crm["resources"]} == {"get-customer", "list-orders"},
               "the second publish carried the new resource, not staging's sandbox URL: "
               "production's connector still points at the live CRM")

        step("14. the same agent, two environments: different prompt versions and CRM instances")
        server, base = start_server(ws)
        body = {"input": {"customer_id": "42", "message": "hello"}}
        _, s = show_call("staging", f"{base}/staging/agents/support", body)
        _, p = show_call("production", f"{base}/production/agents/support", body)
        so, po = s["output"], p["output"]
        assert isinstance(so, dict) and isinstance(po, dict)
        expect(so["prompt_version"] == 2 and po["prompt_version"] == 1,
               "staging renders draft v2, production the published v1")
        expect(so["crm"] == "sandbox" and po["crm"] == "live",
               "staging calls the sandbox CRM, production the live one (same slug, two instances)")
        rf("executions", "list", "--env", "production", "--agent", "support", cwd=ws)
        openai_clients(ws, base)
        eval_gate(ws)
    finally:
        stop(server)
        stop(crm)


def openai_clients(ws: Path, base: str) -> None:
    """Part 3: the support bot through the `openai` client library, on each environment's /v1 URL."""
    step("15. any OpenAI client: base_url = /staging/v1 or /production/v1, model = the agent's name")
    try:
        from openai import OpenAI
    except ImportError:
        raise SystemExit("demo failed: the openai package is not installed (pip install openai)") from None
    executions: dict[str, str] = {}
    for env, color in (("staging", AMBER), ("production", EMERALD)):
        client = OpenAI(base_url=f"{base}/{env}/v1", api_key="unused-on-loopback", max_retries=0)
        print(f'{DIM}>>> client = OpenAI(base_url="{base}/{env}/v1", api_key="...")\n'
              f'>>> client.chat.completions.create(model="support", '
              f'messages=[{{"role": "user", "content": "How do refunds work?"}}]){RESET}')
        models = [m.id for m in client.models.list()]
        reply = client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "How do refunds work?"}])
        print(f"  {color}{env.upper()}{RESET} models {models} → {reply.choices[0].message.content!r}")
        expect(models == ["support"] and "Refunds" in (reply.choices[0].message.content or ""),
               f"{env} answers the OpenAI client with the support bot's reply")
        executions[env] = reply.id.removeprefix("chatcmpl-")
    shown = {env: json.loads(rf("executions", "show", ex_id, "--env", env, "--json", cwd=ws, quiet=True).stdout)
             for env, ex_id in executions.items()}
    for env, ex in shown.items():
        print(f"  {env}: execution {ex['id']} (source {ex['source']}): {json.dumps(ex['output'])}")
    expect(all(ex["source"] == "openai" for ex in shown.values())
           and shown["staging"]["output"]["prompt_version"] == 2 and shown["production"]["output"]["prompt_version"] == 1
           and shown["staging"]["output"]["crm"] == "sandbox" and shown["production"]["output"]["crm"] == "live",
           "the OpenAI door runs the same executions (source openai): staging's draft prompt and sandbox CRM, "
           "production's published prompt and live CRM")


def plan_id(proc: subprocess.CompletedProcess[str]) -> str:
    """The id `rf releases plan` printed ("plan ID ...")."""
    for line in proc.stdout.splitlines():
        if line.startswith("plan "):
            return line.split()[1]
    raise SystemExit("demo failed: rf releases plan printed no plan id")


def eval_gate(ws: Path) -> None:
    """Part 4: the support bot's eval suite (agents/support/evals/) gates a prompt change."""
    step("16. evidence before production: a greeting edit that loses the customer's name")
    bad = ws / "prompts" / "support-greeting-v2.txt"
    bad.write_text("Hello there!\n")
    rf("prompts", "set", "support-greeting", "--file", str(bad), "-m", "shorter greeting", cwd=ws)
    proc = rf("releases", "plan", "prompt:support-greeting", cwd=ws)
    expect("greets-by-name" in proc.stdout + proc.stderr and "regressions" in proc.stderr,
           "the plan ran the support bot's eval suite on both states: greets-by-name regresses")
    proc = rf("releases", "publish", "--plan", plan_id(proc), "--yes", cwd=ws, check=False)
    expect(proc.returncode == 1 and "refused" in proc.stderr, "the publish is refused (nothing changed in production)")

    step("17. fix the greeting in staging: the suite passes again, the publish goes through")
    good = ws / "prompts" / "support-greeting-v3.txt"
    good.write_text("Hi {{customer}}, thanks for writing!\n")
    rf("prompts", "set", "support-greeting", "--file", str(good), "-m", "greet by name again", cwd=ws)
    proc = rf("releases", "publish", "prompt:support-greeting", "--yes", "-m", "greet by name, warmer", cwd=ws)
    shown = proc.stdout + proc.stderr
    expect("5/5" in shown and "regressions" not in shown and "published release" in shown,
           "no regressions: the suite passes on staging's state as in production's, and the fix is published "
           "(every eval run is kept: rf evals list, the dashboard's Evals screen)")


if __name__ == "__main__":
    sys.exit(main())
