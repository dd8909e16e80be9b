"""``rf traces``: span trees per execution, per environment; OpenTelemetry export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import EnvFilterOption, EnvOption, ExecutionIdArg, JsonOption, backend, check_env
from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.models import Span

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Traces: span trees per execution.")

SinceOption = Annotated[str | None, typer.Option("--since", help="Only newer: 30m, 2h, 7d, or a UTC date/time.")]
BAR_WIDTH = 32


@app.command("list")
def list_traces(
    env: EnvOption = "staging",
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent.")] = None,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many (newest first).")] = 20,
    release: Annotated[str | None, typer.Option("--release", help="Only production's of this release (an id or "
                                                                  "prefix).")] = None,
    arm: Annotated[str | None, typer.Option("--arm", help="Only those on this arm of a canary release: stable or "
                                                          "canary.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Traces of one environment, newest first (one per execution)."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import duration, env_label, fit_table, out, print_json, when

    check_env(env)
    with backend() as b:
        rows = b.list_traces(env, agent, since, limit, release, arm)
    if json_out:
        print_json(rows)
        return
    if not rows:
        out.print(f"no traces in {env_label(env)}" + (f" for agent {agent}" if agent else ""))
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title=f"traces · {env_label(env)}",
                  title_justify="left")
    table.add_column("execution", style="dim", no_wrap=True)
    table.add_column("agent")
    table.add_column("status")
    arms = any(t.arm for t in rows)  # (a canary ran: which arm each execution took)
    if arms:
        table.add_column("arm")
    table.add_column("started (UTC)", style="dim")
    table.add_column("duration", justify="right")
    table.add_column("error", overflow="ellipsis", max_width=50, no_wrap=True)
    for t in rows:
        st = "[ok]ok[/ok]" if t.status == "ok" else "[fail]error[/fail]"
        table.add_row(t.execution_id, t.agent, st, *([t.arm or ""] if arms else []), when(t.started_at),
                      duration(t.duration_ms), escape(t.error or ""))
    out.print(fit_table(table, last_resort=("started (UTC)",)))


def _tree(spans: list[Span]) -> list[tuple[Span, str]]:
    """Spans in tree order, each with its indentation prefix (├─ │ └─)."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    roots: list[Span] = []
    for s in spans:
        if s.parent_id is None or s.parent_id not in ids:
            roots.append(s)
        else:
            children.setdefault(s.parent_id, []).append(s)
    ordered: list[tuple[Span, str]] = []

    def walk(span: Span, lead: str, branch: str) -> None:
        ordered.append((span, lead + branch))
        kids = sorted(children.get(span.span_id, []), key=lambda s: s.start_ns)
        next_lead = lead + ("" if not branch else ("│  " if branch == "├─ " else "   "))
        for i, kid in enumerate(kids):
            walk(kid, next_lead, "└─ " if i == len(kids) - 1 else "├─ ")

    for root in sorted(roots, key=lambda s: (s.parent_id is not None, s.start_ns)):
        walk(root, "", "")
    return ordered


def _bar(span: Span, t0: int, total: int, width: int = BAR_WIDTH) -> str:
    """Where the span sits in the execution's time: spaces, then a bar (at least one mark)."""
    if total <= 0:
        return "━"
    start = round((span.start_ns - t0) / total * width)
    length = (span.end_ns - span.start_ns) / total * width
    start = max(0, min(start, width - 1))
    marks = "━" * max(1, round(length)) if length >= 0.5 else "╸"
    return " " * start + marks[: width - start]


def _details(span: Span) -> str:
    """A short line: the error, or the attributes that say what the span did."""
    if span.error:
        return span.error
    attrs = span.attributes
    if span.kind == "llm":
        usage = attrs.get("usage") if isinstance(attrs.get("usage"), dict) else {}
        tokens = f" {usage.get('prompt_tokens', '?')}→{usage.get('completion_tokens', '?')} tokens" if usage else ""
        return f"{attrs.get('provider', '')} {attrs.get('model', '')}{tokens}".strip()
    if span.kind == "connector":
        return " ".join(str(attrs[k]) for k in ("method", "url", "status") if attrs.get(k) is not None)
    shown = {k: v for k, v in attrs.items() if k not in ("input", "output", "commit", "session_id")}
    inputs = attrs.get("input")
    if isinstance(inputs, dict):  # what a host call was about: the memory key, the prompt name...
        shown = {k: inputs[k] for k in _INPUT_DETAILS.get(span.kind, ()) if inputs.get(k) is not None} | shown
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                     for k, v in shown.items())


#: The parameters of a host call worth a place in its span's one-line details, by span kind.
_INPUT_DETAILS = {"memory": ("key", "prefix"), "session": ("role", "limit"), "prompt": ("name",),
                  "kb": ("name", "query"), "data": ("name", "sql")}


@app.command("show")
def show(
    execution_id: ExecutionIdArg,
    env: EnvFilterOption = None,
    json_out: JsonOption = False,
) -> None:
    """The span tree of one execution, with durations and a timing bar."""
    from rich.cells import cell_len
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import duration, env_label, out, print_json

    if env is not None:
        check_env(env)
    with backend() as b:
        trace = b.get_trace(execution_id, env)
    if json_out:
        print_json(trace)
        return
    root = next((s for s in trace.spans if s.parent_id is None), trace.spans[0])
    total = root.end_ns - root.start_ns
    st = "[ok]ok[/ok]" if trace.status == "ok" else "[fail]error[/fail]"
    out.print(f"[bold]trace {trace.execution_id}[/bold] · {trace.agent} · {env_label(trace.env)} · {st} · "
              f"{duration(total / 1e6)} · {len(trace.spans)} span{'s' if len(trace.spans) != 1 else ''}"
              f"  [dim]trace id {trace.trace_id}[/dim]")
    rows = _tree(trace.spans)
    durations = [duration(span.duration_ms) for span, _ in rows]
    # Column widths are set here, not left to Rich (which shrinks or drops any column):
    # on a narrow terminal the details give way first (cut with an ellipsis), then the
    # timeline narrows, then the details go; names, kinds and durations keep their width.
    kind_w = max(4, *(len(span.kind) for span, _ in rows))
    dur_w = max(8, *(len(d) for d in durations))
    name_w = max(8, min(48, max(cell_len(prefix + span.name) for span, prefix in rows),
                        out.width - kind_w - dur_w - 8 - 6))
    room = out.width - name_w - kind_w - dur_w - 8  # 2 spaces between columns
    bar_w = max(8, min(BAR_WIDTH, room - 24))
    details_w = min(60, room - bar_w)
    if details_w < 12:
        details_w = 0
        bar_w = max(8, min(BAR_WIDTH, room + 2))
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("span", no_wrap=True, width=name_w)
    table.add_column("kind", style="dim", no_wrap=True, width=kind_w)
    table.add_column("duration", justify="right", no_wrap=True, width=dur_w)
    table.add_column("timeline", no_wrap=True, width=bar_w)
    if details_w:
        table.add_column("details", overflow="ellipsis", no_wrap=True, width=details_w)
    for (span, prefix), took in zip(rows, durations, strict=True):
        style = "fail" if span.status == "error" else "ok"
        name = f"[dim]{prefix}[/dim]{escape(span.name)}" if prefix else f"[bold]{escape(span.name)}[/bold]"
        details = escape(_details(span))
        cells = [name, span.kind, took, f"[{style}]{_bar(span, root.start_ns, total, bar_w)}[/]"]
        if details_w:
            cells.append(f"[fail]{details}[/fail]" if span.error else f"[dim]{details}[/dim]")
        table.add_row(*cells)
    out.print(table)


@app.command("export")
def export(
    file: Annotated[str | None, typer.Argument(help="Write OTLP/JSON here ('-' for stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Output format (otlp-json).")] = "otlp-json",
    env: EnvOption = "staging",
    since: SinceOption = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many spans (oldest first).")] = 100_000,
    endpoint: Annotated[str | None, typer.Option(
        "--endpoint", help="Also send them to an OpenTelemetry collector (OTLP/HTTP), e.g. http://127.0.0.1:4318.",
    )] = None,
) -> None:
    """Export one environment's spans as OpenTelemetry OTLP/JSON (to a file, and/or a collector)."""
    from rf import otlp
    from rf.cli.output import env_label, success

    check_env(env)
    if fmt != "otlp-json":
        raise UsageError(f"unknown format {fmt!r}", "use --format otlp-json")
    if file is None and endpoint is None:
        raise UsageError("where to?", "give a FILE (or - for stdout), and/or --endpoint URL")
    if endpoint is not None:
        otlp.traces_url(endpoint)  # a bad URL fails before anything is read
    with backend() as b:
        spans = b.export_spans(env, since, agent, limit)
    executions = len({s.execution_id for s in spans})
    summary = f"{len(spans)} span{'s' if len(spans) != 1 else ''} of {executions} execution" \
              f"{'s' if executions != 1 else ''} ({env_label(env)})"
    if file is not None:
        text = json.dumps(otlp.to_otlp(spans), ensure_ascii=False)
        if file == "-":
            import sys

            sys.stdout.write(text + "\n")
        else:
            _write(Path(file), text)
            success(f"wrote {summary} to {file}")
    if endpoint is not None:
        requests = otlp.send(endpoint, spans)
        success(f"sent {summary} to {otlp.traces_url(endpoint)} in {requests} request{'s' if requests != 1 else ''}")


def _write(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a file."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rf-export-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
