"""``rf triggers``: schedules, webhooks and file watches, each bound to one environment.

Staging triggers are edited directly (``edit``, ``enable``, ``disable``). A live
production trigger is changed only by a release: ``rf triggers pause|resume|edit
ID --env production`` stages the change as the release item ``trigger:ID``, and
``--now`` publishes that one item at once (a recorded one-item release).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import EnvFilterOption, EnvOption, JsonOption, backend, check_env, confirm, parse_json_arg

if TYPE_CHECKING:
    from rich.console import Console

    from rf.client import Backend
    from rf.models import ReleaseItem, Trigger, TriggerChangeResult

NowOption = Annotated[bool, typer.Option(
    "--now", help="Production: publish this one change at once (a recorded one-item release) instead of staging it.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="With --now: do not ask for confirmation.")]
MessageOption = Annotated[str, typer.Option("--message", "-m", help="With --now: the release message.")]

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Triggers: run agents on a schedule, a webhook or file changes (one environment each).")


def _what(t: Trigger) -> str:
    if t.kind == "schedule":
        return f"{t.schedule}" + (f" ({t.timezone})" if t.timezone else "")
    if t.kind == "watch":
        return str(t.watch_path)
    return f"POST {t.url}"


def _off(t: Trigger) -> str:
    return "paused (by a release)" if t.env == "production" else "disabled"


def _state(t: Trigger, staged: str = "staged — publish to go live") -> str:
    """``enabled``, ``disabled``…; and while the server retries its watcher or the scheduler, why."""
    state = staged if not t.live else ("enabled" if t.enabled else _off(t))
    failure = t.failure()
    return f"{state} · {failure}" if failure else state


#: Where the examples read the webhook's secret from (it is shown once, at creation).
SECRET_VAR = "WEBHOOK_SECRET"


def signing_examples(url: str, accept: str = "json") -> dict[str, str]:
    """Ready-to-run ways to call a webhook trigger: ``{"curl": ..., "python": ...}``.

    Each signs ``"<unix seconds>." + body`` with HMAC-SHA256 and sends
    ``X-RF-Signature: t=<unix seconds>,v1=<hex>``; the secret comes from ``$WEBHOOK_SECRET``.
    """
    json_body = accept == "json"
    body = '{"hello": "world"}' if json_body else "hello"
    ctype = "application/json" if json_body else "text/plain"
    curl = "\n".join([
        f"# {SECRET_VAR} holds the secret shown when the trigger was created",
        f"BODY='{body}'",
        "T=$(date +%s)",
        "SIG=$(printf '%s.%s' \"$T\" \"$BODY\" | openssl dgst -sha256 -hmac \"$" + SECRET_VAR
        + "\" | sed 's/^.*= //')",
        f"curl -sS -X POST '{url}' -H \"X-RF-Signature: t=$T,v1=$SIG\" \\",
        f"     -H 'Content-Type: {ctype}' --data-binary \"$BODY\"",
    ])
    python = "\n".join([
        "import hashlib, hmac, json, os, time, urllib.request",
        "",
        f"url = {url!r}",
        f"secret = os.environ[{SECRET_VAR!r}]  # the secret shown when the trigger was created",
        'body = json.dumps({"hello": "world"}).encode()' if json_body else 'body = "hello".encode()',
        "t = str(int(time.time()))",
        'sig = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()',
        'request = urllib.request.Request(url, data=body, method="POST", headers={',
        f'    "Content-Type": "{ctype}", "X-RF-Signature": f"t={{t}},v1={{sig}}"}})',
        "with urllib.request.urlopen(request) as response:",
        "    print(response.read().decode())",
    ])
    return {"curl": curl, "python": python}


@app.command("create")
def create(
    agent: Annotated[str, typer.Option("--agent", "-a", help="Agent to run.")],
    schedule: Annotated[str | None, typer.Option("--schedule", help='Cron expression, e.g. "*/5 * * * *".')] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="Timezone of the schedule (IANA name).")] = None,
    webhook: Annotated[bool, typer.Option("--webhook", help="An HTTP endpoint that runs the agent.")] = False,
    watch: Annotated[str | None, typer.Option("--watch", help="Run when files under this path change.")] = None,
    input_json: Annotated[str | None, typer.Option("--input", "-i", help="Input (JSON) given to the agent.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="A name to recognise it by.")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", help="Webhook: pass this request header to the agent.")] = None,
    accept: Annotated[str, typer.Option("--accept", help="Webhook body: json or text.")] = "json",
    overlap: Annotated[str, typer.Option("--overlap", help="skip (default) or allow runs to overlap.")] = "skip",
    catch_up: Annotated[str, typer.Option("--catch-up", help='none, or "last": run the latest slot missed while the server was down.')] = "none",
    json_out: JsonOption = False,
) -> None:
    """Create a trigger in [bold #f59e0b]staging[/] (new triggers are staging edits)."""
    from rf.cli.output import info, print_json, success, warn
    from rf.errors import UsageError

    kinds = [k for k, on in (("schedule", schedule is not None), ("webhook", webhook), ("watch", watch is not None)) if on]
    if len(kinds) != 1:
        raise UsageError("choose exactly one of --schedule CRON, --webhook, --watch PATH")
    payload = parse_json_arg(input_json) if input_json is not None else None
    with backend() as b:
        t = b.create_trigger(agent, kinds[0], schedule, tz, watch, payload, name, header or [], accept, overlap, catch_up)
        from rf.cli.agents import endpoint_base

        base = endpoint_base(b)
    if json_out:
        print_json(t)
        return
    success(f"created {t.kind} trigger [bold]{t.id}[/bold] ({t.name}) in [staging]staging[/staging] → agent {t.agent}")
    if t.kind == "schedule":
        info(f"  next run: {(t.next_fire_at or '').replace('T', ' ')[:19]} UTC  (the server runs schedules: rf serve)")
    if t.kind == "webhook":
        info(f"  POST {base}{t.url}")
        info(f"  secret: [bold]{t.secret}[/bold]")
        warn("the secret is shown only now: callers sign each request with it "
             f"(X-RF-Signature: t=UNIX_SECONDS,v1=HMAC_SHA256(secret, t.body)); examples: rf triggers show {t.id}")
    info(f"[dim]  to run it in production too: rf triggers duplicate {t.id} --env production, then rf releases publish[/dim]")


@app.command("list")
def list_triggers(env: EnvOption = "staging", json_out: JsonOption = False) -> None:
    """Triggers of one environment, with their next fire times."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import env_label, fit_table, out, print_json

    check_env(env)
    with backend() as b:
        rows = b.list_triggers(env)
    if json_out:
        print_json(rows)
        return
    if not rows:
        out.print(f"no triggers in {env_label(env)}")
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title=f"triggers · {env_label(env)}", title_justify="left")
    for col in ("id", "name", "kind", "agent", "what", "state", "next run (UTC)"):
        table.add_column(col)
    for t in rows:
        state = _state(t)
        if t.staged_change is not None:
            state += f" · pending: {t.staged_summary}"
        nxt = (t.next_fire_at or "").replace("T", " ")[:19] if t.kind == "schedule" and t.live and t.enabled else "—"
        table.add_row(t.id, escape(t.name), t.kind, t.agent, escape(_what(t)),
                      f"[red]{escape(state)}[/red]" if t.failure() else escape(state), nxt)
    # A failing watcher's state (why, when it is retried) keeps its width; "what" and "name" give way.
    flex = ("what", "name") if any(t.failure() for t in rows) else ("what", "name", "state")
    out.print(fit_table(table, flex=flex, optional=("agent", "kind", "next run (UTC)")))


@app.command("show")
def show(
    trigger_id: str,
    example: Annotated[str | None, typer.Option(
        "--example", help="Webhook: print only a signing example, curl or python (e.g. > send.py).")] = None,
    json_out: JsonOption = False,
) -> None:
    """One trigger; for a webhook, how to sign a request (curl and Python examples)."""
    import json

    from rich.markup import escape

    from rf.cli.output import env_label, out, print_json
    from rf.errors import UsageError

    if example is not None and example not in ("curl", "python"):
        raise UsageError(f"unknown example {example!r}", "use --example curl or --example python")
    with backend() as b:
        t = b.get_trigger(trigger_id)
        from rf.cli.agents import endpoint_base

        base = endpoint_base(b)
    examples = signing_examples(f"{base}{t.url}", t.accept) if t.kind == "webhook" else None
    if example is not None:
        if examples is None:
            raise UsageError(f"trigger {t.id} is a {t.kind} trigger: only webhooks take signed requests")
        print(examples[example])
        return
    if json_out:
        print_json(t)
        return
    out.print(f"[bold]{t.id}[/bold]  {escape(t.name)}  {env_label(t.env)}")
    rows = [("kind", t.kind), ("agent", t.agent), ("what", _what(t)),
            ("state", _state(t, "staged (not live)")),
            ("input", json.dumps(t.input)), ("overlap", t.overlap), ("catch up", t.catch_up)]
    if t.error:  # the server's memory of its watcher / the scheduler
        rows.append(("last error", f"{t.error} ({(t.error_at or '').replace('T', ' ')[:19]} UTC)"))
        rows.append(("restarts", f"{t.restarts}" + ("" if t.retry_at else " (running again)")))
    if t.kind == "schedule":
        rows.append(("next run", (t.next_fire_at or "—").replace("T", " ")[:19] + " UTC"))
    if t.kind == "webhook":
        rows.append(("url", f"{base}{t.url}"))
        rows.append(("headers", ", ".join(t.headers) or "—"))
        rows.append(("body", t.accept))
        rows.append(("signature", "X-RF-Signature: t=UNIX_SECONDS,v1=HEX(HMAC_SHA256(secret, t + \".\" + body))"))
    if t.source_id:
        rows.append(("copied from", t.source_id))
    if t.staged_change is not None:
        rows.append(("pending", f"{t.staged_summary} (publish: rf releases publish trigger:{t.id})"))
    for k, v in rows:
        out.print(f"  [dim]{k:<11}[/dim] {escape(str(v))}")
    if examples is not None:
        out.print()
        out.print(f"Sign every request with the secret shown when the trigger was created (in ${SECRET_VAR} "
                  "below). The timestamp must be within 5 minutes of the server's clock, and each signature "
                  "is accepted once (the same body sent twice in one second is a replay: put an id in it); "
                  "any refusal answers 401, the server log says why.", markup=False, highlight=False)
        for title, key in (("curl (the shell computes the signature with openssl):", "curl"), ("Python:", "python")):
            out.print()
            out.print(title, markup=False, highlight=False)
            for line in examples[key].splitlines():
                out.print(f"    {line}".rstrip(), markup=False, highlight=False, emoji=False, soft_wrap=True)


@app.command("enable")
def enable(trigger_id: str) -> None:
    """Enable a staging trigger."""
    from rf.cli.output import success

    with backend() as b:
        t = b.set_trigger_enabled(trigger_id, True)
    success(f"enabled {t.id}")


@app.command("disable")
def disable(trigger_id: str) -> None:
    """Disable a staging trigger."""
    from rf.cli.output import success

    with backend() as b:
        t = b.set_trigger_enabled(trigger_id, False)
    success(f"disabled {t.id}")


@app.command("delete")
def delete(
    trigger_id: str,
    env: EnvFilterOption = None,
    now: NowOption = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    message: MessageOption = "",
    json_out: JsonOption = False,
) -> None:
    """Delete a staging trigger (or a production copy never published) at once.

    A live [bold #10b981]production[/] trigger is removed by a release: the removal is staged as
    the item trigger:ID, published with `rf releases publish trigger:ID`, or at once with --now
    (a recorded one-item release; `rf releases rollback` restores it).
    """
    from rich.markup import escape

    from rf.cli.agents import confirm_delete
    from rf.cli.output import info, print_json, success
    from rf.config import git_author

    with backend() as b:
        preview = b.delete_trigger(trigger_id, env=env, now=now, preview=True)
        t = preview.trigger
        if now:
            assert preview.item is not None
            _print_item(b, preview, to_stderr=True)
            confirm(f"Remove trigger {t.name} from production now?", yes)
        elif not preview.staged:
            confirm_delete(f"Delete trigger {t.name} ({t.id}, {t.env})?", yes)
        result = b.delete_trigger(t.id, env=env, now=now, author=git_author(), message=message)
    if json_out:
        print_json(result)
        return
    if result.release_id:
        success(f"removed from [production]production[/production]: trigger {escape(t.name)} ({t.id}) "
                f"(release {result.release_id})")
        info(f"[dim]  recorded in rf releases history; undo with: rf releases rollback {result.release_id}[/dim]")
    elif result.staged:
        success(f"staged for [production]production[/production]: remove trigger {escape(t.name)} ({t.id}) — "
                "it keeps firing until you publish the removal")
        info(f"[dim]  publish it: rf releases publish trigger:{t.id}  (or again with --now); cancel it: "
             f"rf triggers resume {t.id} --env production[/dim]")
    else:
        success(f"deleted {t.id} ({escape(t.name)}, {t.env})")


@app.command("fire")
def fire(trigger_id: str, json_out: JsonOption = False) -> None:
    """Run a trigger once now, in its environment."""
    from rf.cli.commands import _print_execution

    with backend() as b:
        ex = b.fire_trigger(trigger_id)
    _print_execution(ex, json_out)
    raise typer.Exit(0 if ex.status == "succeeded" else 1)


@app.command("duplicate")
def duplicate(trigger_id: str, env: EnvOption = "production", json_out: JsonOption = False) -> None:
    """Copy a trigger to the other environment; a production copy goes live when published."""
    from rf.cli.output import info, print_json, success, warn

    check_env(env)
    with backend() as b:
        t = b.duplicate_trigger(trigger_id, env)
    if json_out:
        print_json(t)
        return
    success(f"staged {t.id} in {t.env} (copy of {trigger_id})" if not t.live else f"created {t.id} in {t.env}")
    if t.secret:
        info(f"  secret: [bold]{t.secret}[/bold]")
        warn(f"the production webhook has its own secret, shown only now; signing examples: rf triggers show {t.id}")
    if not t.live:
        info(f"  it goes live when published: rf releases publish trigger:{t.id}")


# ------------------------------------------------------------ changes (staging at once, production by release)
def _change(trigger_id: str, env: str, now: bool, yes: bool, message: str, json_out: bool, **changes: object) -> None:
    from rich.markup import escape

    from rf.cli.output import err, info, print_json, success
    from rf.config import git_author

    check_env(env)
    with backend() as b:
        if now:
            preview = b.edit_trigger(trigger_id, env=env, now=True, preview=True, **changes)  # type: ignore[arg-type]
            if preview.changed and preview.item is not None:
                _print_item(b, preview, to_stderr=True)
                confirm(f"Publish this change of trigger {preview.trigger.name} to production now?", yes)
        result = b.edit_trigger(trigger_id, env=env, now=now, author=git_author(), message=message,
                                **changes)  # type: ignore[arg-type]
    if json_out:
        print_json(result)
        return
    t = result.trigger
    if not result.changed:
        info(f"{t.id} ({escape(t.name)}): no change")
        return
    if result.release_id:
        success(f"published to [production]production[/production]: trigger {escape(t.name)} ({t.id}): "
                f"{escape(result.summary)} (release {result.release_id})")
        info(f"[dim]  recorded in rf releases history; undo with: rf releases rollback {result.release_id}[/dim]")
    elif result.staged:
        success(f"staged for [production]production[/production]: trigger {escape(t.name)} ({t.id}): "
                f"{escape(result.summary)} — production is unchanged until you publish it")
        if result.item is not None:
            _print_change(result, err)
        info(f"[dim]  publish it: rf releases publish trigger:{t.id}  (or again with --now)[/dim]")
    else:
        success(f"updated trigger {escape(t.name)} ({t.id}) in {t.env}: {escape(result.summary)}")


def _shown(key: str, value: object) -> str:
    import json

    if key == "enabled":
        return "enabled" if value else "paused"
    return json.dumps(value)


def _print_change(result: TriggerChangeResult, console: Console) -> None:
    """Each field the change touches, before → after."""
    from rich.markup import escape

    item = result.item
    assert item is not None
    before, after = item.before or {}, item.after or {}
    if after.get("removed") is True:
        console.print(f"  [red]- remove trigger {escape(str(before.get('name')))} ({escape(str(before.get('kind')))} "
                      f"→ agent {escape(str(before.get('agent')))}) from production[/red]")
        return
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            console.print(f"  [yellow]~ {key}: {escape(_shown(key, before.get(key)))} → "
                          f"{escape(_shown(key, after.get(key)))}[/yellow]")


def _print_item(b: Backend, result: TriggerChangeResult, to_stderr: bool) -> None:
    from rich.markup import escape

    from rf.cli.output import err, out

    console = err if to_stderr else out
    assert result.item is not None
    console.print(f"[bold]trigger {result.item.name}[/bold] · {escape(result.item.summary)}")
    _print_change(result, console)


def render_release_item(item: ReleaseItem) -> None:
    """A trigger's release item in full: each field before → after, every field of a new
    trigger, or what a removal takes away (nothing is cut: long values wrap)."""
    from rich.markup import escape

    from rf.cli.output import out

    before, after = item.before or {}, item.after or {}
    if after.get("removed") is True:
        out.print("  [red]publishing removes this trigger from production[/red] (a rollback of that release "
                  "restores it):")
        for key in sorted(before):
            out.print(f"  [red]- {key}: {escape(_shown(key, before[key]))}[/red]")
        return
    if item.before is None:
        out.print("  [green]publishing makes this trigger live in production:[/green]")
        for key in sorted(after):
            out.print(f"  [green]+ {key}: {escape(_shown(key, after[key]))}[/green]")
        return
    if item.after is None:
        out.print("  publishing takes this trigger out of production (it stays as an unpublished copy)")
        return
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            out.print(f"  [yellow]~ {key}: {escape(_shown(key, before.get(key)))} → "
                      f"{escape(_shown(key, after.get(key)))}[/yellow]")
        else:
            out.print(f"  [dim]  {key}: {escape(_shown(key, after.get(key)))}[/dim]")


@app.command("edit")
def edit(
    trigger_id: str,
    schedule: Annotated[str | None, typer.Option("--schedule", help='New cron expression, e.g. "0 * * * *".')] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="Timezone of the schedule (IANA name; \"\" for UTC).")] = None,
    input_json: Annotated[str | None, typer.Option("--input", "-i", help="New input (JSON) given to the agent.")] = None,
    no_input: Annotated[bool, typer.Option("--no-input", help="Remove the input template.")] = False,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Run this agent instead.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable", help="Enable or disable (pause) it.")] = None,
    overlap: Annotated[str | None, typer.Option("--overlap", help="skip or allow runs to overlap.")] = None,
    catch_up: Annotated[str | None, typer.Option("--catch-up", help="none or last.")] = None,
    env: EnvOption = "staging",
    now: NowOption = False,
    yes: YesOption = False,
    message: MessageOption = "",
    json_out: JsonOption = False,
) -> None:
    """Change a trigger (only the options given). Staging: at once. A production trigger
    (--env production): staged as a release item, or published at once with --now."""
    payload = parse_json_arg(input_json) if input_json is not None else None
    _change(trigger_id, env, now, yes, message, json_out, schedule=schedule, timezone=tz, input=payload,
            clear_input=no_input, agent=agent, name=name, enabled=enabled, overlap=overlap, catch_up=catch_up)


@app.command("pause")
def pause(trigger_id: str, env: EnvOption = "staging", now: NowOption = False, yes: YesOption = False,
          message: MessageOption = "", json_out: JsonOption = False) -> None:
    """Stop a trigger firing. Production: staged as a release item; --now publishes it at once (the emergency stop)."""
    _change(trigger_id, env, now, yes, message, json_out, enabled=False)


@app.command("resume")
def resume(trigger_id: str, env: EnvOption = "staging", now: NowOption = False, yes: YesOption = False,
           message: MessageOption = "", json_out: JsonOption = False) -> None:
    """Let a paused trigger fire again (from its next slot). Production: a release item, or --now."""
    _change(trigger_id, env, now, yes, message, json_out, enabled=True)
