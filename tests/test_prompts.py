"""Prompts: immutable versions, draft (staging) vs published (production).

Real DuckDB files, real agent executions in worker subprocesses, a real
``rf serve`` for the HTTP backend, and the real ``rf`` command (with a real
editor subprocess) for the CLI: a few commands per test as real subprocesses, the
rest through the same entry point in-process (run_rf_here).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.client import Backend, HttpBackend, open_local
from rf.config import snapshot_dir
from rf.errors import Conflict, NotFound, ProductionReadOnly, UsageError
from rf.services import templates
from rf.services.users import owner

V1 = "Hello {{ name }}, welcome to {{product}}.\nKeep answers short.\n"
V2 = "Hi {{ name }}, welcome to {{product}}!\nKeep answers short and kind.\n"
REFUSAL = "edit in staging, then publish: rf prompts publish greet"


@pytest.fixture(params=["local", "http"])
def backend(request: pytest.FixtureRequest, ws: Any) -> Iterator[Backend]:
    if request.param == "local":
        b: Backend = open_local(ws)
        try:
            yield b
        finally:
            b.close()
    else:
        srv = start_server(ws.root)
        try:
            b = HttpBackend(srv.url, srv.token, ws)
            b.raw_server = srv  # type: ignore[attr-defined]  # for the raw-request checks below
            yield b
        finally:
            srv.stop()


# ------------------------------------------------------------ templates
def test_template_variables_whitespace_escapes_and_json() -> None:
    t = templates.parse("Hi {{name}} / {{ name }} / {{  tone_2 }}; \\{{literal}} {\"a\": {\"b\": 1}}")
    assert t.variables == ["name", "tone_2"]
    assert t.render({"name": "Ada", "tone_2": 3, "extra": "ignored"}) == 'Hi Ada / Ada / 3; {{literal}} {"a": {"b": 1}}'
    assert templates.parse("no variables").variables == []
    with pytest.raises(templates.MissingVariables) as missing:
        t.render({"name": "Ada"})
    assert missing.value.names == ["tone_2"]


@pytest.mark.parametrize(
    ("text", "problem", "line", "column"),
    [
        ("{{name", "unclosed '{{'", 1, 1),
        ("ok\nsay {{ name\nthen }}", "unclosed '{{'", 2, 5),
        ("a {{}} b", "empty placeholder", 1, 3),
        ("x\n\n  {{ bad-name! }}", "invalid variable name 'bad-name!'", 3, 3),
        ("{{ 1st }}", "invalid variable name '1st'", 1, 1),
        ("{{ a {{ b }}", "unclosed '{{'", 1, 1),
    ],
)
def test_template_syntax_errors_have_positions(text: str, problem: str, line: int, column: int) -> None:
    with pytest.raises(templates.TemplateSyntaxError) as info:
        templates.parse(text)
    assert problem in info.value.problem
    assert (info.value.line, info.value.column) == (line, column)
    assert f"line {line}, column {column}" in str(info.value)


# ------------------------------------------------------------ both backends
def test_versions_pointers_and_publish(backend: Backend) -> None:
    created = backend.create_prompt("greet", V1, "ada", "first")
    assert created.created and created.version.version == 1 and created.version.draft
    assert created.version.variables == ["name", "product"] and created.published_version is None
    assert backend.get_prompt("greet").text == V1
    with pytest.raises(NotFound) as unpublished:
        backend.get_prompt("greet", "production")
    assert unpublished.value.hint and "rf prompts publish greet" in unpublished.value.hint
    assert backend.diff_prompt("greet").published_text is None

    first = backend.publish_prompt("greet", "ada")
    assert first.changed and (first.before, first.after) == (None, 1) and first.release_id
    assert not backend.publish_prompt("greet", "ada").changed  # nothing to publish: says so

    same = backend.set_prompt("greet", V1, "ada", "no-op")
    assert not same.created and same.version.version == 1
    second = backend.set_prompt("greet", V2, "bob", "friendlier")
    assert second.created and second.version.version == 2 and second.published_version == 1
    # Creating a version moves the draft; production does not move.
    assert backend.get_prompt("greet", "staging").version == 2
    production = backend.get_prompt("greet", "production")
    assert (production.version, production.text, production.env) == (1, V1, "production")
    assert backend.get_prompt("greet", version=1).text == V1
    with pytest.raises(NotFound):
        backend.get_prompt("greet", version=9)

    [listed] = backend.list_prompts()
    assert (listed.name, listed.draft_version, listed.published_version, listed.versions) == ("greet", 2, 1, 2)
    history = backend.prompt_history("greet")
    # (over HTTP the author is the token's user, never what the caller says: here the owner)
    by = (lambda name: owner().name) if backend.kind == "http" else (lambda name: name)
    assert [(v.version, v.draft, v.published, v.author, v.message) for v in history] == [
        (2, True, False, by("bob"), "friendlier"), (1, False, True, by("ada"), "first")]

    d = backend.diff_prompt("greet")
    assert (d.published_version, d.draft_version, d.published_text, d.draft_text, d.changed) == (1, 2, V1, V2, True)

    with pytest.raises(Conflict):  # the reviewed draft (v1) is no longer the draft
        backend.publish_prompt("greet", "ada", "", 1)
    published = backend.publish_prompt("greet", "ada", "ship it", 2)
    assert (published.before, published.after) == (1, 2)
    assert backend.get_prompt("greet", "production").text == V2
    assert not backend.diff_prompt("greet").changed


def test_production_edits_are_refused(backend: Backend) -> None:
    backend.create_prompt("greet", V1, "ada")
    with pytest.raises(ProductionReadOnly) as refused:
        backend.set_prompt("greet", V2, "ada", "", env="production")
    assert "production is read-only" in refused.value.message and refused.value.hint == REFUSAL
    with pytest.raises(ProductionReadOnly):
        backend.create_prompt("other", V1, "ada", "", env="production")
    with pytest.raises(UsageError):
        backend.set_prompt("greet", V2, "ada", "", env="qa")
    srv = getattr(backend, "raw_server", None)
    if srv is not None:  # a raw request to the management API is refused the same way
        r = httpx.post(f"{srv.url}/api/prompts/greet/versions", json={"text": V2, "env": "production"},
                       headers={"Authorization": f"Bearer {srv.token}"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "production_read_only" and r.json()["error"]["hint"] == REFUSAL
    assert [v.version for v in backend.prompt_history("greet")] == [1]
    assert [p.name for p in backend.list_prompts()] == ["greet"]


def test_bad_input_is_refused_and_nothing_stored(backend: Backend) -> None:
    with pytest.raises(UsageError) as bad:
        backend.create_prompt("greet", "Hello {{ name", "ada")
    assert "invalid template in prompt 'greet'" in bad.value.message and "line 1, column 7" in bad.value.message
    with pytest.raises(UsageError) as empty_name:
        backend.create_prompt("", V1, "ada")
    assert "invalid prompt name" in empty_name.value.message and empty_name.value.hint
    with pytest.raises(UsageError):
        backend.create_prompt("Bad Name", V1, "ada")
    with pytest.raises(UsageError) as empty:
        backend.create_prompt("greet", "   \n", "ada")
    assert "empty" in empty.value.message
    with pytest.raises(NotFound) as unknown:
        backend.set_prompt("ghost", V1, "ada")
    assert unknown.value.hint and "rf prompts create ghost" in unknown.value.hint
    for call in (lambda: backend.get_prompt("ghost"), lambda: backend.prompt_history("ghost"),
                 lambda: backend.diff_prompt("ghost"), lambda: backend.publish_prompt("ghost", "ada")):
        with pytest.raises(NotFound):
            call()
    assert backend.list_prompts() == []

    backend.create_prompt("greet", V1, "ada")
    with pytest.raises(Conflict) as exists:
        backend.create_prompt("greet", V2, "ada")
    assert exists.value.hint and "rf prompts set greet" in exists.value.hint
    with pytest.raises(UsageError) as bad_edit:
        backend.set_prompt("greet", "fine line\n{{ bad-name! }}", "ada")
    assert "line 2, column 1" in bad_edit.value.message
    assert [v.version for v in backend.prompt_history("greet")] == [1]
    assert backend.get_prompt("greet").text == V1


# ------------------------------------------------------------ real executions
AGENT_TOML = 'description = "Greets"\nentrypoint = "agent:handle"\ntimeout_s = 20\nprompts = ["greet", "ghost"]\n'
AGENT_PY = """\
def handle(input, ctx):
    if input.get("missing"):
        return ctx.prompts.render("greet", name="Ada")
    p = ctx.prompts.get("greet")
    text = ctx.prompts.render("greet", name=input["name"], product="Acme", unused=1)
    return {"text": text, "version": p.version, "env": p.env, "variables": p.variables}
"""


def test_prompts_resolve_per_environment_in_real_executions(ws: Any) -> None:
    write_agent(ws.root, "greeter", AGENT_PY, AGENT_TOML)
    files = snapshot_dir(ws.root / "agents" / "greeter")
    b = open_local(ws)
    try:
        b.create_prompt("greet", V1, "ada")
        deployed = b.deploy("greeter", files, "v1", "ada")
        assert deployed.warnings == [
            "agent.toml lists prompt 'ghost', which does not exist: rf prompts create ghost"]

        staging = b.invoke("staging", "greeter", {"name": "Ada"})
        assert staging.status == "succeeded", staging.error
        assert staging.output == {"text": "Hello Ada, welcome to Acme.\nKeep answers short.\n", "version": 1,
                                  "env": "staging", "variables": ["name", "product"]}

        # Production runs the agent, but the prompt exists only as a draft.
        b.promote("greeter", "ada")
        failed = b.invoke("production", "greeter", {"name": "Ada"})
        assert failed.status == "failed"
        assert failed.error and "'greet'" in failed.error and "rf prompts publish greet" in failed.error

        b.publish_prompt("greet", "ada")
        b.set_prompt("greet", V2, "ada")
        staging = b.invoke("staging", "greeter", {"name": "Ada"})
        production = b.invoke("production", "greeter", {"name": "Ada"})
        assert staging.output["text"].startswith("Hi Ada, welcome to Acme!") and staging.output["version"] == 2
        assert production.output["text"].startswith("Hello Ada, welcome to Acme.")
        assert production.output["version"] == 1 and production.output["env"] == "production"

        test_run = b.run_test("greeter", files, {"name": "Tess"})  # rf test: staging, so the draft
        assert test_run.output["version"] == 2 and test_run.output["env"] == "staging"

        missing = b.invoke("staging", "greeter", {"missing": True})
        assert missing.status == "failed" and missing.error
        assert "'greet' v2 needs variable 'product'" in missing.error
    finally:
        b.close()


def test_host_methods_annotate_the_call(ws: Any) -> None:
    from rf.services.host import HostCall

    b = open_local(ws)
    try:
        b.create_prompt("greet", V1, "ada")
        call = HostCall(env="staging", agent="a", execution_id="ex_1")
        handle = b.services.host_handler(call)
        got = handle("prompts.get", {"name": "greet"})
        assert got == {"name": "greet", "text": V1, "version": 1, "env": "staging", "variables": ["name", "product"]}
        assert handle("prompts.render", {"name": "greet", "variables": {"name": "A", "product": "B"}}).startswith(
            "Hello A, welcome to B.")
        assert call.state["span_attributes"] == {"prompt": "greet", "version": 1}
        with pytest.raises(NotFound) as info:
            b.services.host_handler(HostCall(env="production", agent="a", execution_id="ex_2"))(
                "prompts.get", {"name": "greet"})
        assert "rf prompts publish greet" in info.value.message
    finally:
        b.close()


# ------------------------------------------------------------ the CLI
def test_cli_create_list_show_history_diff_publish(ws: Any) -> None:
    root = ws.root
    (root / "v1.txt").write_text(V1)
    (root / "v2.txt").write_text(V2)
    r = run_rf("prompts", "create", "greet", "--file", "v1.txt", "-m", "first", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "greet v1 as the draft" in r.stderr and "rf prompts publish greet" in r.stderr
    r = run_rf_here("prompts", "set", "greet", "--file", "v1.txt", cwd=root)
    assert r.returncode == 0 and "identical to draft v1 — nothing saved" in r.stderr
    r = run_rf("prompts", "publish", "greet", cwd=root)  # nobody can confirm
    assert r.returncode == 2 and "--yes" in r.stderr
    assert run_rf_here("prompts", "publish", "greet", "--yes", cwd=root).returncode == 0
    r = run_rf_here("prompts", "set", "greet", "--file", "v2.txt", "-m", "friendlier", cwd=root)
    assert r.returncode == 0 and "production still has v1" in r.stderr

    listed = json.loads(run_rf_here("prompts", "list", "--json", cwd=root).stdout)
    assert [(p["name"], p["draft_version"], p["published_version"]) for p in listed] == [("greet", 2, 1)]
    r = run_rf_here("prompts", "show", "greet", "--env", "production", cwd=root)
    assert r.stdout == V1 and "v1 (published)" in r.stderr
    assert run_rf_here("prompts", "show", "greet", "--version", "2", "--json", cwd=root).stdout.count('"version": 2') == 1
    r = run_rf_here("prompts", "history", "greet", cwd=root)
    assert "v2" in r.stdout and "draft" in r.stdout and "published" in r.stdout and "friendlier" in r.stdout

    r = run_rf_here("prompts", "diff", "greet", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "published v1" in r.stdout and "draft v2" in r.stdout
    assert "Hello" in r.stdout and "Hi" in r.stdout and "kind." in r.stdout  # both versions' words
    # Side by side: the old and the new first line share one output row.
    assert any("Hello" in line and "Hi" in line for line in r.stdout.splitlines())
    unified = run_rf_here("prompts", "diff", "greet", "--unified", cwd=root).stdout
    assert "-Hello {{ name }}, welcome to {{product}}." in unified
    assert "+Hi {{ name }}, welcome to {{product}}!" in unified

    r = run_rf_here("prompts", "publish", "greet", "--yes", "--json", cwd=root)
    result = json.loads(r.stdout)
    assert (result["before"], result["after"], result["changed"]) == (1, 2, True)


def test_cli_production_refusal_and_bad_input(ws: Any) -> None:
    root = ws.root
    (root / "f.txt").write_text(V2)
    assert run_rf("prompts", "create", "greet", "--text", V1, cwd=root).returncode == 0
    r = run_rf("prompts", "set", "greet", "--file", "f.txt", "--env", "production", cwd=root)
    assert r.returncode == 1 and "production is read-only" in r.stderr and REFUSAL in r.stderr
    r = run_rf_here("prompts", "create", "bad", "--text", "Hi {{}}", cwd=root)
    assert r.returncode == 2 and "empty placeholder" in r.stderr and "line 1, column 4" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_rf_here("prompts", "set", "ghost", "--file", "f.txt", cwd=root)
    assert r.returncode == 1 and "prompt 'ghost' does not exist" in r.stderr and "rf prompts create ghost" in r.stderr
    r = run_rf_here("prompts", "create", "x", cwd=root)
    assert r.returncode == 2 and "--file FILE or --text TEXT" in r.stderr
    assert _versions(ws) == {"greet": [1]}


def _versions(ws: Any) -> dict[str, list[int]]:
    """What the store holds, read in-process (cheaper than another `rf` subprocess)."""
    b = open_local(ws)
    try:
        return {p.name: [v.version for v in b.prompt_history(p.name)] for p in b.list_prompts()}
    finally:
        b.close()


def _editor(tmp_path: Path, body: str) -> dict[str, str]:
    script = tmp_path / "editor.py"
    script.write_text("import sys\nfrom pathlib import Path\np = Path(sys.argv[1])\n" + body)
    return {"EDITOR": f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", "VISUAL": ""}


def test_cli_edit_with_a_real_editor(ws: Any, tmp_path: Path) -> None:
    root = ws.root
    b = open_local(ws)
    b.create_prompt("greet", "Hello {{name}}", "ada")
    b.close()

    rewrite = _editor(tmp_path, "p.write_text(p.read_text().replace('Hello', 'Howdy') + '\\n')\n")
    r = run_rf("prompts", "edit", "greet", "-m", "cowboy", cwd=root, env=rewrite)
    assert r.returncode == 0, r.stderr
    assert "greet v2 as the draft" in r.stderr
    b = open_local(ws)
    shown = b.get_prompt("greet")
    b.close()
    # The newline the editor appended is not taken as part of the edit.
    assert (shown.text, shown.version, shown.message) == ("Howdy {{name}}", 2, "cowboy")

    untouched = _editor(tmp_path, "pass\n")
    r = run_rf_here("prompts", "edit", "greet", cwd=root, env=untouched)
    assert r.returncode == 0 and "no changes" in r.stderr

    broken = _editor(tmp_path, "p.write_text('Howdy {{name')\n")
    r = run_rf_here("prompts", "edit", "greet", cwd=root, env=broken)
    assert r.returncode == 2 and "unclosed '{{'" in r.stderr and "your text is kept in" in r.stderr
    kept = Path(r.stderr.split("your text is kept in ")[1].split(" — ")[0])
    assert kept.read_text() == "Howdy {{name"

    r = run_rf_here("prompts", "edit", "greet", "--env", "production", cwd=root, env=rewrite)
    assert r.returncode == 1 and REFUSAL in r.stderr
    assert _versions(ws) == {"greet": [2, 1]}
