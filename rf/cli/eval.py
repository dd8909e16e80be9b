"""``rf eval AGENT``: run an agent's eval suite against an environment (CI-friendly)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rf.cli.app import EnvOption, JsonOption, backend, check_env, workspace
from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.models import EvalCaseResult, EvalResult


def eval_suite(
    agent: Annotated[str | None, typer.Argument(help="Agent name (default: the agent directory you are in).")] = None,
    env: EnvOption = "staging",
    case: Annotated[str | None, typer.Option("--case", "-c", help="Run only the case with this id.")] = None,
    repeat: Annotated[int | None, typer.Option("--repeat", "-r", min=1, max=100,
                                               help="Run each case K times (default: each case's own repeat).")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write the result as JUnit XML to FILE (CI).",
                                               metavar="FILE")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run the working copy and its suite (staging mode, like "
                                                        "rf test) instead of the deployed commit.")] = False,
    live: Annotated[bool, typer.Option("--live", help="Let connector calls a case's recording does not hold reach "
                                                      "the instances (default: they fail the case).")] = False,
    record: Annotated[bool, typer.Option("--record", help="Run each case once against staging's connector "
                                                          "instances and write what they answered to "
                                                          "evals/NAME.recordings.json (review and commit it).")] = False,
    json_out: JsonOption = False,
) -> None:
    """Run the agent's eval suite (agents/NAME/evals/); exit code 1 when a case fails.

    Staging runs its deployed commit (or the working copy with --local), production its
    published one; each run is an execution with source eval. Connector calls are answered
    from the cases' recordings (rf eval --record makes them); an unrecorded call fails its
    case unless --live."""
    check_env(env)
    if record and env != "staging":
        raise UsageError("--record calls the connectors' staging instances: it runs in staging only",
                         "drop --env production")
    files = None
    directory: Path | None = None
    if local:
        from rf.config import resolve_agent_dir, snapshot_dir

        if env != "staging":
            raise UsageError("--local runs the working copy, in staging only (like rf test)",
                             "drop --local to evaluate production's published commit")
        name, directory = resolve_agent_dir(workspace(), agent)
        files = snapshot_dir(directory)
    elif agent is None:
        from rf.config import resolve_agent_dir

        name, directory = resolve_agent_dir(workspace(), None)
    else:
        name = agent
        if record:  # the recordings go into the working copy, next to its suite
            from rf.config import resolve_agent_dir

            name, directory = resolve_agent_dir(workspace(), agent)
    with backend() as b:
        # (files only when there are some: the HTTP backend sends a {path: bytes} map as base64)
        extra: dict[str, Any] = {"files": files} if files is not None else {}
        result = b.run_eval(name, env, case, repeat, live=live, record=record, **extra)
    written = write_recordings(result, directory) if record and directory is not None else []
    if junit is not None:
        write_junit(result, junit)
    if json_out:
        from rf.cli.output import print_json

        print_json(result)
    else:
        print_result(result)
        if record:
            from rf.cli.output import info

            calls = sum(len(c) for cases in result.recordings.values() for c in cases.values())
            for path in written:
                info(f"recorded {path} — review it and commit it with the agent (rf agents deploy {name})")
            if not written:
                info(f"no recordings written: the cases made {calls} connector calls")
    raise typer.Exit(0 if result.failed == 0 else 1)


def write_recordings(result: EvalResult, directory: Path) -> list[str]:
    """``rf eval --record``: each recordings file merged into the working copy (cases not run
    keep theirs); the files written, as paths from the workspace."""
    from rf.evals.tape import check_recordings, dump_recordings

    written: list[str] = []
    for rel, cases in sorted(result.recordings.items()):
        target = directory / rel
        if not rel.startswith("evals/") or ".." in Path(rel).parts:
            raise UsageError(f"the server named a recordings file outside evals/: {rel!r}")
        if not any(cases.values()) and not target.exists():
            continue  # no connector calls and no file yet: nothing to keep
        recorded = check_recordings(cases, f"agents/{result.agent}/{rel}", result.agent)
        previous = target.read_bytes() if target.exists() else None
        text = dump_recordings(recorded, agent=result.agent, commit=result.commit, recorded_at=result.started_at,
                               previous=previous)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
        written.append(f"agents/{result.agent}/{rel}")
    return written


def _details(case: EvalCaseResult) -> str:
    """Why a case failed (its first failing attempt's scores), or what passed."""
    attempt = next((a for a in case.attempts if not a.passed), None)
    if attempt is None:
        names = [s.scorer for s in case.attempts[0].scores if s.scorer != "status"] if case.attempts else []
        return ", ".join(names) or "succeeded"
    failing = [f"{s.scorer}: {s.detail}" for s in attempt.scores if not s.passed]
    if not failing and attempt.error:
        failing = [attempt.error]
    return "; ".join(failing)


def print_result(result: EvalResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import duration, env_label, err, fit_table, out, short

    err.print(f"eval [bold]{result.agent}[/bold] · {env_label(result.env)} · {short(result.commit)} · "
              f"{', '.join(result.files)} · [dim]{result.id}[/dim]")
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("case")
    table.add_column("result")
    table.add_column("runs", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("details", overflow="fold")
    for case in result.cases:
        mark = "[ok]✓ pass[/ok]" if case.passed else "[fail]✗ fail[/fail]"
        runs = f"{case.passes}/{case.repeat} {case.pass_rule}" if case.repeat > 1 else ""
        table.add_row(escape(case.id), mark, runs, f"{case.duration_ms:.1f}", escape(_details(case)))
    out.print(fit_table(table, flex=("details",), optional=("runs",)))
    for case in result.cases:  # in full: the table may have cut them
        if not case.passed:
            out.print(f"[fail]✗[/fail] {escape(case.id)} [dim]({escape(case.file)}:{case.line})[/dim]: "
                      f"{escape(_details(case))}", soft_wrap=True)
    style = "ok" if result.failed == 0 else "fail"
    out.print(f"[{style}]{result.passed}/{result.total} passed[/{style}] ({result.pass_rate:.0%}) · "
              f"{result.failed} failed · {duration(result.duration_ms)} · {result.workers} at a time")


def write_junit(result: EvalResult, path: Path) -> None:
    """The result as JUnit XML: one testsuite (the agent and environment), one testcase per
    case (classname: the agent and suite file), a ``failure`` with each failing score."""
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", {
        "name": f"rf eval {result.agent} ({result.env})", "tests": str(result.total),
        "failures": str(result.failed), "errors": "0", "skipped": "0",
        "time": f"{result.duration_ms / 1000:.3f}", "timestamp": result.started_at,
    })
    props = ET.SubElement(suite, "properties")
    for key, value in (("env", result.env), ("commit", result.commit), ("eval_id", result.id)):
        ET.SubElement(props, "property", {"name": key, "value": value})
    for case in result.cases:
        stem = Path(case.file).with_suffix("").as_posix().replace("/", ".")
        element = ET.SubElement(suite, "testcase", {
            "classname": f"{result.agent}.{stem}", "name": case.id, "time": f"{case.duration_ms / 1000:.3f}",
            "file": case.file, "line": str(case.line),
        })
        if not case.passed:
            lines = []
            for k, attempt in enumerate(case.attempts, start=1):
                status = "passed" if attempt.passed else "failed"
                lines.append(f"run {k}: {status} (executions: {', '.join(attempt.execution_ids) or 'none'})")
                lines += [f"  {s.scorer}: {'ok' if s.passed else 'FAIL'} {s.detail}" for s in attempt.scores]
                if attempt.error and not attempt.scores:
                    lines.append(f"  error: {attempt.error}")
            failure = ET.SubElement(element, "failure", {"message": _details(case)[:500], "type": "eval"})
            failure.text = "\n".join(lines)
    root = ET.Element("testsuites", {"name": "rf eval", "tests": str(result.total), "failures": str(result.failed)})
    root.append(suite)
    ET.indent(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}", "give --junit a writable file path") from None


def register(app: typer.Typer) -> None:
    app.command(name="eval", rich_help_panel="Run")(eval_suite)
