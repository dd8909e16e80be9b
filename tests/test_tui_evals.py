"""Pilot tests of the dashboard's eval evidence (issue 18): the Evals screen (stored runs, each
case's result, its output against its expectation, the suites per agent) and the Releases
screen (the plan's eval evidence before publishing; regressions published only with a reason).

A real in-process store (LocalBackend), as tests/test_tui.py: the module builds one workspace
(an agent with a suite, deployed, promoted, evaluated in both environments, then a staging
commit that regresses two cases) and each test works on a copy of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_tui import SIZE, make_app, notifications, screen_text, settle
from textual.widgets import Button, DataTable, Input, Label

from conftest import write_agent
from rf.client import LocalBackend, open_local
from rf.config import init_workspace, load_workspace, snapshot_dir
from rf.errors import NotFound, UsageError
from rf.tui.modals import ConfirmModal
from rf.tui.views.evals import EvalsView
from rf.tui.views.releases import PublishModal, ReleasesView

pytestmark = pytest.mark.anyio

AGENT_TOML = 'description = "answers by name"\nentrypoint = "agent:handle"\ntimeout_s = 20\n'
AGENT_PY = '''
def handle(input, ctx):
    name = (input or {}).get("name", "world")
    return {"message": GREETING + ", " + name, "n": len(name)}

GREETING = "hello"
'''
SUITE = """\
- id: greets
  description: says hello by name
  input: {name: Ada}
  expect: {contains: "hello, Ada"}
- id: exact
  input: {name: Bob}
  expect:
    equals: {message: "hello, Bob", n: 3}
- id: shaped
  input: {name: Cy}
  expect:
    json_schema: {type: object, required: [message, n]}
    regex: "^\\\\{.*Cy"
- id: wishful
  input: {name: Di}
  expect:
    equals: {message: "goodbye, Di", n: 2}
"""


def static_text(app: object, selector: str, width: int = 160) -> str:
    """What a Static holds, rendered as plain text (Rich renderables included)."""
    import io

    from rich.console import Console
    from textual.widgets import Static

    console = Console(width=width, file=io.StringIO(), no_color=True)
    console.print(app.query_one(selector, Static).content)  # type: ignore[attr-defined]
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RF_SECRETS_FILE", str(tmp_path / "secrets.json"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


def _bot(root: Path, greeting: str = "hello") -> None:
    write_agent(root, "bot", AGENT_PY.replace('GREETING = "hello"', f'GREETING = "{greeting}"'), AGENT_TOML,
                extra={"evals/smoke.yaml": SUITE})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bot: production and staging at v1 (3 of 4 cases pass: `wishful` never does), one stored
    run in each environment (staging's by the promote's release gate); then staging at v2 ("howdy"), which breaks `greets` and `exact`."""
    ws = init_workspace(tmp_path_factory.mktemp("evals") / "ws")
    _bot(ws.root)
    b = open_local(ws)
    try:
        b.deploy("bot", snapshot_dir(ws.agents_dir / "bot"), "v1", "ada")
        b.promote("bot", "ada")  # the release gate's run of staging's suite is stored: 3 of 4
        b.run_eval("bot", "production")
        _bot(ws.root, greeting="howdy")
        b.deploy("bot", snapshot_dir(ws.agents_dir / "bot"), "v2: howdy", "ada")
        b.services.store.flush()
    finally:
        b.close()
    return ws.root


@pytest.fixture
def backend(template: Path, tmp_path: Path) -> Iterator[LocalBackend]:
    root = tmp_path / "ws"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("cache"))
    b = open_local(load_workspace(root))
    try:
        yield b
    finally:
        b.close()


# ------------------------------------------------------------ the Evals screen


async def test_evals_screen_shows_runs_cases_and_output_against_expectation(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("0")
        await settle(pilot)
        assert app.current_view == "evals"
        view = app.query_one(EvalsView)
        assert [(r.agent, r.env, r.passed, r.total) for r in view.runs] == [("bot", "staging", 3, 4)]
        text = screen_text(app)
        assert "3/4" in text and "1 stored run in staging" in text
        # the first failing case is selected: its expected value and its output side by side
        assert view.case_place == "wishful"
        cases = app.query_one("#eval-cases", DataTable)
        assert cases.row_count == 4
        detail = static_text(app, "#eval-case-body")
        assert "expected (equals)" in detail and "goodbye, Di" in detail and "hello, Di" in detail
        assert "✗" in detail and "equals" in detail
        # a text scorer: each expected string found or missing, the output below
        await pilot.press("tab")  # the cases table
        await settle(pilot)
        assert app.focused is cases
        await pilot.press("up", "up", "up")
        await settle(pilot)
        assert view.case_place == "greets"
        detail = static_text(app, "#eval-case-body")
        assert "says hello by name" in detail and "✓ contains 'hello, Ada'" in detail
        # failed only
        await pilot.press("f")
        await settle(pilot)
        assert cases.row_count == 1 and view.case_place == "wishful"
        await pilot.press("f")
        await settle(pilot)
        assert cases.row_count == 4
        # t opens the case's execution in Traces
        await pilot.press("t")
        await settle(pilot)
        assert app.current_view == "traces"

        # production has its own runs
        await pilot.press("0", "e")
        await settle(pilot)
        assert [(r.env, r.passed) for r in view.runs] == [("production", 3)]
        assert "1 stored run in production" in screen_text(app)


async def test_evals_suites_tab_lists_each_agent_and_filters_runs(backend: LocalBackend) -> None:
    backend.run_eval("bot", "staging")  # v2 in staging: 1 of 4
    write_agent(backend.workspace.root, "plain")
    backend.deploy("plain", snapshot_dir(backend.workspace.agents_dir / "plain"), "no suite", "ada")
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("0")
        await settle(pilot)
        view = app.query_one(EvalsView)
        assert [r.passed for r in view.runs] == [1, 3]  # newest first
        await pilot.press("s")
        await settle(pilot)
        assert view.tab == "evals-suites"
        suites = app.query_one("#eval-suites", DataTable)
        assert [row[0] for row in view.suites] == ["bot", "plain"]
        text = screen_text(app)
        assert "4 cases in evals/smoke.yaml" in text and "1/4" in text  # bot's suite, its latest run
        assert "greets" in text and "equals" in text
        await pilot.press("down")
        await settle(pilot)
        assert "No eval suite: add agents/plain/evals/smoke.yaml" in screen_text(app)
        await pilot.press("up", "enter")  # bot's runs
        await settle(pilot)
        assert view.tab == "evals-runs" and view.agent == "bot"
        assert "agent bot (c: all agents)" in screen_text(app)
        await pilot.press("c")
        await settle(pilot)
        assert view.agent is None
        assert suites.row_count == 2


def test_eval_suite_reads_a_commits_suite_and_refuses_another_agents_commit(backend: LocalBackend) -> None:
    staging = backend.get_agent("bot")
    suite = backend.eval_suite("bot", "production")
    assert suite.commit == staging.production_commit and suite.files == ["evals/smoke.yaml"]
    exact = next(c for c in suite.cases if c.id == "exact")
    assert exact.expect == {"equals": {"message": "hello, Bob", "n": 3}} and exact.line == 5
    shaped = next(c for c in suite.cases if c.id == "shaped")
    assert shaped.expect["regex"] == ["^\\{.*Cy"]  # a checked pattern, back as its text
    with pytest.raises(NotFound):
        backend.eval_suite("bot", "staging", "0" * 64)
    with pytest.raises(UsageError):
        backend.eval_suite("bot", "staging", "not a commit")


# ------------------------------------------------------------ Releases: evidence before publishing


async def test_publish_shows_the_eval_evidence_and_needs_a_reason_for_regressions(backend: LocalBackend) -> None:
    before = backend.get_agent("bot").production_commit
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        view = app.query_one(ReleasesView)
        assert [(i.kind, i.name) for i in view.items] == [("agent", "bot")]
        await pilot.press("v")  # the evidence, without publishing
        await settle(pilot)
        text = screen_text(app)
        assert "3/4" in text and "1/4" in text and "greets, exact" in text
        assert "publishing them needs a reason" in text
        await pilot.press("p")
        await settle(pilot)
        modal = app.screen
        assert isinstance(modal, PublishModal)
        text = screen_text(app)
        assert "2 eval cases regress" in text and "greets, exact" in text
        button = modal.query_one("#submit", Button)
        assert "regressions" in str(button.label)
        await pilot.press("ctrl+s")  # no reason: refused inline, nothing published
        await settle(pilot)
        assert isinstance(app.screen, PublishModal)
        assert "A reason is required" in str(modal.query_one("#reason-error", Label).render())
        assert backend.get_agent("bot").production_commit == before
        modal.query_one("#reason", Input).value = "greeting copy changes on purpose"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, PublishModal)
        assert any("Published release" in m and "regressions accepted" in m for m in notifications(app))
        bot = backend.get_agent("bot")
        assert bot.production_commit == bot.staging_commit
        release = backend.list_releases(1)[0]
        assert release.accepted_regressions == "greeting copy changes on purpose"
        assert release.evals[0].regressions == ["greets", "exact"]
        # the history shows the evidence and the reason
        await pilot.press("h")
        await settle(pilot)
        await pilot.press("up", "up")  # the newest release
        await settle(pilot)
        text = screen_text(app)
        assert "regressions accepted: greeting copy changes on purpose" in text


async def test_publish_without_regressions_is_a_plain_confirmation_with_the_evidence(backend: LocalBackend) -> None:
    _bot(backend.workspace.root)  # back to "hello": no regression
    (backend.workspace.agents_dir / "bot" / "notes.txt").write_text("v3\n")
    backend.deploy("bot", snapshot_dir(backend.workspace.agents_dir / "bot"), "v3", "ada")
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        text = screen_text(app)
        assert "3/4 → 3/4" in text.replace("  ", " ") or ("3/4" in text and "no regressions" in text)
        assert "no regressions" in text
        await pilot.press("y")
        await settle(pilot)
        bot = backend.get_agent("bot")
        assert bot.production_commit == bot.staging_commit
        assert backend.list_releases(1)[0].accepted_regressions is None
