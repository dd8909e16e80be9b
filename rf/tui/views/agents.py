"""Agents: both environments' commits; deploy (working copy → staging) and promote (→ production)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Label, Static

from rf.models import Agent, Commit, DeleteResult, DeployResult, Execution, PromoteResult, ReleasePlan
from rf.tui import render
from rf.tui.format import ENV_COLORS, one_line, plural, short
from rf.tui.modals import ChoiceModal, ConfirmModal, FormModal
from rf.tui.views.base import Command, View, restore_cursor, selected_key
from rf.tui.widgets import Empty, Table

if TYPE_CHECKING:
    from rf.client import Backend

EMPTY = "No agents yet — deploy one with rf agents deploy NAME or press d."
EMPTY_PRODUCTION = (
    "No agent is in production yet — promote one from staging (press e, then p) or publish from Releases."
)


@dataclass
class AgentRow:
    name: str
    agent: Agent | None  #: None: only in agents/ (never deployed)
    local: bool  #: has a directory under agents/ (deployable)


@dataclass
class AgentDetail:
    name: str
    agent: Agent | None
    commits: list[Commit] = field(default_factory=list)
    executions: list[Execution] | None = None  #: None until loaded (a second, slower query)
    env: str = ""


def fetch_detail(backend: Backend, row: AgentRow, env: str) -> AgentDetail:
    """Commit history of one agent (a Backend call: off the UI thread).

    Its recent executions come in a second call (:meth:`AgentsView.load_recent`):
    with millions of executions that query is the slow part, and the list and
    the commits should not wait for it.
    """
    if row.agent is None:
        return AgentDetail(row.name, None, executions=[], env=env)
    from rf.errors import NotFound

    try:
        agent = backend.get_agent(row.name)  # with each environment's trace mode (the list has none)
    except NotFound:  # deleted meanwhile: the row's copy
        agent = row.agent
    return AgentDetail(row.name, agent, backend.history(row.name), env=env)


class DeployModal(FormModal):
    """Deploy the working copy of an agent to staging, with a commit message."""

    SUBMIT_LABEL = "Deploy"

    def __init__(self, name: str) -> None:
        super().__init__(classes="form")
        self.agent = name
        self.TITLE_TEXT = f"Deploy agents/{name} to staging"

    def compose_form(self) -> ComposeResult:
        yield Static(
            "Snapshots the agent's directory into a commit and points staging at it. "
            "Production does not change until you promote or publish.",
            classes="field-help",
        )
        yield Label("Commit message", classes="field-label")
        yield Input(placeholder="what changed (optional)", id="message")
        yield self.field_error("message")

    def on_mount(self) -> None:
        self.query_one("#message", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_submit()

    def submit(self) -> None:
        from rf.tui.calls import run_call

        message = self.query_one("#message", Input).value.strip()
        backend = self.rf.backend
        ws = self.rf.workspace
        name = self.agent

        def deploy() -> DeployResult:
            from rf.config import git_author, resolve_agent_dir, snapshot_dir
            from rf.errors import WorkspaceError

            if ws is None:
                raise WorkspaceError(
                    "this dashboard has no workspace directory to deploy from", "run rf ui inside the workspace"
                )
            agent_name, directory = resolve_agent_dir(ws, name)
            return backend.deploy(agent_name, snapshot_dir(directory), message, git_author())

        self.set_busy(True)
        run_call(self, deploy, self.dismiss, failed=self.backend_failed("message"), group="deploy")


class AgentsView(View):
    TITLE = "Agents"
    KEY = "agents"
    GROUP = "Build"
    CSS_FILE = "views/agents.tcss"
    LIVE = True
    WRITE_ACTIONS = frozenset({"deploy", "promote", "delete"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "deploy", "Deploy"),
        Binding("p", "promote", "Promote"),
        Binding("x", "executions", "Executions"),
        Binding("delete", "delete", "Delete", key_display="del"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[AgentRow] = []
        self.place: str | None = None
        self._detail_for: tuple[str, str] | None = None
        self.detail: AgentDetail | None = None

    def compose_view(self) -> ComposeResult:
        table: DataTable[str | Text] = Table(id="agents-table", cursor_type="row", zebra_stripes=True)
        table.add_column("agent", key="agent")
        table.add_column("description", key="description")
        table.add_column(Text("staging", style=f"bold {ENV_COLORS['staging']}"), key="staging")
        table.add_column(Text("production", style=f"bold {ENV_COLORS['production']}"), key="production")
        table.add_column("", key="status")
        yield table
        yield Empty(EMPTY, id="agents-empty")
        with VerticalScroll(id="agent-detail", classes="detail"):
            yield Static("", id="agent-detail-body")

    # ------------------------------------------------------------ data
    def reload(self) -> None:
        backend, ws, env = self.backend, self.rf.workspace, self.env
        place = self.place

        def fetch() -> tuple[list[AgentRow], AgentDetail | None]:
            agents = backend.list_agents()
            names = {a.name for a in agents}
            local: list[str] = []
            if ws is not None:
                from rf.config import list_agent_dirs

                local = list_agent_dirs(ws)
            rows = [AgentRow(a.name, a, a.name in local) for a in agents]
            if env == "staging":
                rows += [AgentRow(n, None, True) for n in local if n not in names]
            rows.sort(key=lambda r: r.name)
            # The selected agent's detail in the same call: one round trip paints the whole view.
            row = next((r for r in rows if r.name == place), rows[0] if rows else None)
            return rows, fetch_detail(backend, row, env) if row is not None else None

        self.call(fetch, self.show_data)

    def show_data(self, data: tuple[list[AgentRow], AgentDetail | None]) -> None:
        rows, detail = data
        self.show_rows(rows)
        if detail is not None and self.selected() is not None and self.selected().name == detail.name:  # type: ignore[union-attr]
            self._detail_for = (detail.name, self.env)
            self.show_detail(detail)
        else:
            self.load_detail()
        self.painted()

    def show_rows(self, rows: list[AgentRow]) -> None:
        table = self.query_one("#agents-table", DataTable)
        changed = (
            [(r.name, r.agent) for r in rows] != [(r.name, r.agent) for r in self.rows]
            or self.loaded_env != self.env
            or table.row_count != len(rows)
        )
        self.rows = rows
        if changed:
            keep = self.place or selected_key(table)
            index = table.cursor_row
            table.clear()
            for r in rows:
                table.add_row(*self._cells(r), key=r.name)
            restore_cursor(table, keep, index)
            self.place = selected_key(table)
            self._detail_for = None
        empty = self.query_one("#agents-empty", Empty)
        empty.update(EMPTY if self.env == "staging" else EMPTY_PRODUCTION)
        empty.set_class(not rows, "-shown")
        table.display = bool(rows)
        self.query_one("#agent-detail", VerticalScroll).display = bool(rows)
        deployed = sum(1 for r in rows if r.agent is not None)
        ahead = sum(1 for r in rows if r.agent is not None and r.agent.commits_ahead and r.agent.production_commit)
        local = len(rows) - deployed  # in agents/ only
        self.set_subtitle(plural(deployed, "agent") + (" deployed" if local else "")
                          + (f" · {local} not deployed yet" if local else "")
                          + (f" · {ahead} with changes to promote" if ahead else ""))

    def _cells(self, r: AgentRow) -> tuple[str | Text, ...]:
        a = r.agent
        if a is None:
            return (
                Text(r.name, style="bold"),
                Text("(in agents/, not deployed)", style="dim"),
                "—",
                "—",
                Text("press d to deploy", style="yellow"),
            )
        if a.staging_commit is None:
            status = Text("deleted in staging: removal to publish", style="yellow")
        elif a.production_commit is None:
            status = Text("not promoted yet", style="yellow")
        elif a.commits_ahead:
            status = Text(plural(a.commits_ahead, "commit") + " ahead", style=ENV_COLORS["staging"])
        else:
            status = Text("in sync", style="dim")
        current = ENV_COLORS[self.env]
        staging = Text(short(a.staging_commit), style=f"bold {current}" if self.env == "staging" else "")
        production = Text(short(a.production_commit), style=f"bold {current}" if self.env == "production" else "")
        return Text(a.name, style="bold"), Text(one_line(a.description, 36)), staging, production, status

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "agents-table" or event.row_key.value is None:
            return
        self.place = str(event.row_key.value)
        self.load_detail()

    def selected(self) -> AgentRow | None:
        name = self.place or selected_key(self.query_one("#agents-table", DataTable))
        return next((r for r in self.rows if r.name == name), None)

    def load_detail(self, force: bool = False) -> None:
        row = self.selected()
        body = self.query_one("#agent-detail-body", Static)
        if row is None:
            body.update("")
            self._detail_for = None
            return
        key = (row.name, self.env)
        if key == self._detail_for and not force:
            return
        self._detail_for = key
        backend, env = self.backend, self.env
        self.call(lambda: fetch_detail(backend, row, env), self.show_detail, group="detail")

    def show_detail(self, d: AgentDetail) -> None:
        prev, self.detail = self.detail, d
        pending = d.executions is None
        if pending and prev is not None and prev.name == d.name and prev.env == d.env:
            d.executions = prev.executions  # keep showing them while the fresh ones load (no flicker)
        self.query_one("#agent-detail-body", Static).update(self.render_detail(d))
        if pending:
            self.load_recent(d)

    def load_recent(self, d: AgentDetail) -> None:
        backend, env = self.backend, self.env

        def done(executions: list[Execution]) -> None:
            if self.detail is d:
                d.executions = executions
                self.query_one("#agent-detail-body", Static).update(self.render_detail(d))

        self.call(lambda: backend.list_executions(env, agent=d.name, limit=8), done, group="recent")

    def base_url(self) -> str:
        if self.rf.server_url:
            return self.rf.server_url
        ws = self.rf.workspace
        return f"http://{ws.host}:{ws.port}" if ws is not None else "http://127.0.0.1:7410"

    def render_detail(self, d: AgentDetail) -> RenderableType:
        now = self.now()
        if d.agent is None:
            return Text.assemble(
                (d.name, "bold"),
                "\n\nNot deployed yet. ",
                ("Press d to deploy agents/" + d.name + " to staging.", "yellow"),
            )
        a = d.agent
        parts: list[RenderableType] = [Text.assemble((a.name, "bold"), "  ", a.description)]
        parts.append(render.heading("\nEndpoints"))
        table = render.grid()
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        for env in ("staging", "production"):
            commit = a.staging_commit if env == "staging" else a.production_commit
            label = render.env_text(env)
            url = f"POST {self.base_url()}/{env}/agents/{a.name}"
            where = Text(f"commit {short(commit)}" if commit else "not promoted yet", style="dim")
            table.add_row(label, Text(url, style="" if commit else "dim"), where)
            if env in a.trace:  # the trace mode this environment's commit runs (agent.toml [trace])
                table.add_row("", Text(f"trace {a.trace[env]}", style="dim"), "")
        parts.append(table)
        if a.production_commit and a.commits_ahead:
            parts.append(
                Text(
                    f"staging is {plural(a.commits_ahead, 'commit')} ahead of production"
                    + (" — press p to promote" if not self.read_only else ""),
                    style=ENV_COLORS["staging"],
                )
            )
        parts.append(render.heading("\nCommits (newest first)"))
        parts.append(render.commits_table(d.commits, now, staging=a.staging_commit, production=a.production_commit))
        parts.append(Text.assemble("\n", render.heading("Recent executions in "), render.env_text(self.env)))
        if d.executions is None:
            parts.append(Text("loading…", style="dim"))
        elif d.executions:
            parts.append(render.executions_table(d.executions, now))
        else:
            parts.append(Text(f"none yet in {self.env}", style="dim"))
        return Group(*parts)

    # ------------------------------------------------------------ actions
    def action_deploy(self) -> None:
        if self.refuse_in_production():
            return
        row = self.selected()
        if row is None:
            if self.rf.workspace is None:
                self.rf.notify("No agent directory to deploy from.", severity="warning")
                return
            self.rf.notify(
                "No agents in agents/ — create agents/NAME/agent.toml and agent.py, then press d.", severity="warning"
            )
            return
        if not row.local:
            self.rf.notify(
                f"agents/{row.name} does not exist in this workspace: nothing to deploy from.", severity="warning"
            )
            return

        def done(result: DeployResult | None) -> None:
            if result is None:
                return
            for w in result.warnings:
                self.rf.notify(w, severity="warning", markup=False)
            if result.created and result.commit is not None:
                self.rf.notify(
                    f"Deployed {row.name} to staging: commit {short(result.commit.id)}", title="Deployed", markup=False
                )
            else:
                self.rf.notify(
                    f"{row.name}: no changes since commit "
                    f"{short(result.commit.id if result.commit else None)} — staging unchanged",
                    markup=False,
                )
            self.reload()

        self.app.push_screen(DeployModal(row.name), done)

    def action_promote(self) -> None:
        """The release of agent:NAME, as ``rf agents promote``: its diff and plan (dependency
        warnings), then publish exactly that plan — with its dependencies when chosen."""
        if self.refuse_in_production():
            return
        row = self.selected()
        if row is None or row.agent is None or row.agent.staging_commit is None:
            self.rf.notify("Deploy this agent to staging first (press d).", severity="warning")
            return
        a = row.agent
        if a.staging_commit == a.production_commit:
            self.rf.notify(
                f"{a.name}: production already runs staging's commit {short(a.staging_commit)}.", markup=False
            )
            return
        backend, now = self.backend, self.now()

        def promote(plan: ReleasePlan, with_deps: bool) -> None:
            def run() -> PromoteResult:
                from rf.config import git_author

                return backend.promote(a.name, git_author(), with_deps=with_deps, plan_id=plan.id)

            def done(result: PromoteResult) -> None:
                extra = [i for i in result.items if (i.kind, i.name) != ("agent", a.name)]
                self.rf.notify(
                    f"Promoted {a.name} to production: {short(result.before)} → {short(result.after)}"
                    + (f" with {', '.join(f'{i.kind} {i.name}' for i in extra)}" if extra else "")
                    + (f" (release {result.release_id})" if result.release_id else ""),
                    title="Promoted",
                    markup=False,
                )
                for w in result.warnings:
                    self.rf.notify(w, severity="warning", markup=False)
                self.reload()

            self.call(run, done, group="promote")

        def fetch() -> tuple[object, ReleasePlan, ReleasePlan | None]:
            plan = backend.plan_release([f"agent:{a.name}"])
            with_deps = backend.plan_release([f"agent:{a.name}"], with_deps=True) if plan.missing_dependencies else None
            return backend.diff_agent(a.name), plan, with_deps

        def show(data: tuple[object, ReleasePlan, ReleasePlan | None]) -> None:
            diff, plan, with_deps = data
            body = Group(render.agent_diff(diff, now), Text(""), render.release_plan(plan))  # type: ignore[arg-type]
            title = f"Promote {a.name} to production ({short(a.production_commit)} → {short(a.staging_commit)})?"
            note = "Production changes at once for every caller."
            if with_deps is None:
                self.app.push_screen(ConfirmModal(title, body, confirm="Promote", note=note),
                                     lambda ok: promote(plan, False) if ok else None)
                return
            deps = ", ".join(f"{m.kind} {m.name}" for m in plan.missing_dependencies)

            def chosen(choice: str | None) -> None:
                if choice == "deps":
                    promote(with_deps, True)
                elif choice == "alone":
                    promote(plan, False)

            self.app.push_screen(
                ChoiceModal(title, body, [("alone", "Promote alone", "warning"),
                                          ("deps", "Promote with dependencies", "success")],
                            note=f"{note} It uses unpublished {deps}: promote with them (one release), or alone."),
                chosen,
            )

        self.call(fetch, show, group="promote")

    def action_delete(self) -> None:
        """Delete the agent from staging at once; its removal from production is a release item."""
        if self.refuse_in_production():
            return
        row = self.selected()
        if row is None or row.agent is None or row.agent.staging_commit is None:
            self.rf.notify("Nothing to delete in staging: this agent is not deployed there.", severity="warning")
            return
        a = row.agent
        backend = self.backend
        where = (
            f"Production keeps running {short(a.production_commit)} until you publish its removal "
            f"(Releases: agent {a.name}, remove from production)."
            if a.production_commit
            else "It is not in production: it leaves the lists."
        )

        def confirmed(ok: bool | None) -> None:
            if not ok:
                return

            def done(result: DeleteResult) -> None:
                self.rf.notify(
                    f"Deleted {a.name} in staging."
                    + (" Its removal from production waits in Releases." if result.item is not None else ""),
                    title="Deleted",
                    markup=False,
                )
                for w in result.warnings:
                    self.rf.notify(w, severity="warning", markup=False)
                self.reload()

            self.call(lambda: backend.delete_agent(a.name), done, group="delete")

        self.app.push_screen(
            ConfirmModal(
                f"Delete agent {a.name} from staging?",
                Text("Its staging endpoint stops answering at once. Commits, executions and releases stay "
                     f"readable.\n\n{where}"),
                confirm="Delete",
                danger=True,
            ),
            confirmed,
        )

    async def action_executions(self) -> None:
        row = self.selected()
        await self.rf.open_executions(agent=row.name if row else None)

    def commands(self) -> Iterable[Command]:
        for r in self.rows:
            if not self.read_only and r.local:
                yield Command(
                    f"Deploy agent {r.name} to staging",
                    partial(self._act, r.name, self.action_deploy),
                    "Snapshot agents/NAME into a staging commit",
                )
            if (
                not self.read_only
                and r.agent is not None
                and r.agent.staging_commit
                and r.agent.staging_commit != r.agent.production_commit
            ):
                yield Command(
                    f"Promote agent {r.name} to production",
                    partial(self._act, r.name, self.action_promote),
                    "Review the diff, then promote",
                )
            if not self.read_only and r.agent is not None and r.agent.staging_commit:
                yield Command(
                    f"Delete agent {r.name} from staging",
                    partial(self._act, r.name, self.action_delete),
                    "Production's removal becomes a release item",
                )
            if r.agent is not None:
                yield Command(
                    f"Executions of agent {r.name}",
                    partial(self.rf.open_executions, agent=r.name),
                    f"Executions in {self.env}",
                )

    def _act(self, name: str, action: Callable[[], None]) -> None:
        table = self.query_one("#agents-table", DataTable)
        self.place = name
        restore_cursor(table, name, table.cursor_row)
        action()
