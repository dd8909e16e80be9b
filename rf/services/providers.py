"""LLM providers (shared by both environments): mock, OpenAI-compatible, Anthropic.

Providers are **shared**: there is no environment dimension and no
``require_staging`` — adding, removing or changing the default provider
affects production immediately, so every change returns warnings that say so
(and removing one that agents use needs ``force``).

- The built-in ``mock`` always exists (it has no row) and is the default of a
  new workspace. Its scripted rules live in ``rf.toml`` (``[[llm.mock.rules]]``).
- The default provider is ``[llm] default`` in ``rf.toml`` (``mock`` when
  unset); :meth:`ProvidersService.set_default_provider` edits that line.
  ``rf.toml``'s ``[llm]`` table is re-read when the file changes, so editing
  mock rules needs no server restart.
- ``[llm] timeout_s`` (default 60) bounds each HTTP call to a provider (or
  the time the calling execution has left, when that is shorter).
- One HTTP client (connection pool) per provider, made at its first call and
  reused by every call, on every thread; closed when the provider is removed
  or its kind/base URL changes, and when the Services close.
- 429 / 5xx answers are retried with backoff that honours ``Retry-After``,
  never past the execution's deadline (rf.llm._http, with tenacity).
- Each ``llm.chat`` span carries ``llm.tokens.prompt/completion/total`` (and
  ``llm.retries`` when there were retries); the execution's root span carries
  the sums over all its LLM calls under the same names.
- API keys are credential *names*; the value is read in the host at call
  time (``credential_secret``), registered with the execution as a secret
  (scrubbed from spans and logs) and never stored, logged or put in errors.

Agent code reaches the providers through ``ctx.llm`` → host method
``llm.chat`` (:meth:`ProvidersService.llm_chat`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rf.config import RF_TOML_KEYS, WORKSPACE_FILE, check_keys, check_name
from rf.errors import Conflict, NotFound, RfError, UsageError, WorkspaceError
from rf.ids import utcnow
from rf.llm import mock
from rf.llm.types import (
    ChatResult,
    Usage,
    normalize_messages,
    normalize_response_format,
    normalize_sampling,
    normalize_tools,
    split_model,
    user,
)
from rf.models import Provider, ProviderChange, ProviderTest, ProviderUse
from rf.runtime.protocol import PIECE_SINK
from rf.services.base import ServiceContext
from rf.services.host import HostCall, host_method

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from rf.llm._http import HttpChat
    from rf.services.credentials import CredentialsService

log = logging.getLogger("rf.providers")

KINDS = ("mock", "openai", "anthropic")
BUILTIN = "mock"
DEFAULT_TIMEOUT_S = 60.0
#: A provider's use by one (env, agent) is written at most this often.
USE_NOTE_INTERVAL_S = 60.0
TEST_PROMPT = "Reply with the single word: pong"

_DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


class ChatClient(Protocol):
    """What every provider client offers (see rf.llm.mock/openai/anthropic)."""

    def chat(self, messages: list[dict[str, Any]], *, model: str, tools: list[dict[str, Any]],
             max_tokens: int | None = None, on_chunk: Callable[[str], None] | None = None,
             temperature: float | None = None, top_p: float | None = None, stop: list[str] | None = None,
             response_format: dict[str, Any] | None = None) -> ChatResult: ...


@dataclass
class LLMSettings:
    """The ``[llm]`` table of ``rf.toml``, validated."""

    default: str = BUILTIN
    timeout_s: float = DEFAULT_TIMEOUT_S
    rules: list[mock.MockRule] = field(default_factory=list)


def parse_llm_settings(data: dict[str, Any], source: str = WORKSPACE_FILE) -> LLMSettings:
    """Validate ``[llm]`` (``default``, ``timeout_s``, ``[[llm.mock.rules]]``)."""
    llm = data.get("llm", {})
    if not isinstance(llm, dict):
        raise WorkspaceError(f"{source}: llm must be a table ([llm])", "fix rf.toml")
    # The keys of [llm] and its mock rules are declared once, in rf.config.RF_TOML_KEYS.
    check_keys(llm, RF_TOML_KEYS, source, WORKSPACE_FILE, WorkspaceError, table="llm")
    default = llm.get("default", BUILTIN)
    if not isinstance(default, str) or not default:
        raise WorkspaceError(f"{source}: [llm] default must be a provider name", 'e.g. default = "mock"')
    timeout = llm.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (0 < timeout <= 3600):
        raise WorkspaceError(f"{source}: [llm] timeout_s must be a number of seconds between 0 and 3600")
    return LLMSettings(default=default, timeout_s=float(timeout), rules=mock.parse_rules(llm, source))


def check_base_url(url: str) -> str:
    """An http(s) URL with a host, without a trailing slash (UsageError otherwise)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip()) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid base URL {url!r}: it must start with http:// or https:// and name a host",
                         "e.g. --base-url https://api.openai.com/v1 or http://localhost:11434/v1")
    if parts.query or parts.fragment:
        raise UsageError(f"invalid base URL {url!r}: no query string or fragment, please")
    return url.strip().rstrip("/")


def _builtin() -> Provider:
    return Provider(name=BUILTIN, kind="mock", model=mock.DEFAULT_MODEL, builtin=True)


class ProvidersService:
    """LLM providers: ``[llm]`` of rf.toml, the providers table, and ``llm.chat`` for agents."""

    def __init__(self, ctx: ServiceContext, credentials: CredentialsService) -> None:
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.credentials = credentials
        self._llm_settings_cache: tuple[tuple[int, int, int], LLMSettings] | None = None
        self._llm_http_clients: dict[str, tuple[tuple[str, str, str], httpx.Client]] = {}
        self._llm_http_lock = threading.Lock()
        self._provider_use_notes: dict[tuple[str, str, str], float] = {}
        self._provider_use_lock = threading.Lock()

    # ------------------------------------------------------------ rf.toml [llm]
    def llm_settings(self) -> LLMSettings:
        """``[llm]`` of rf.toml, re-read whenever the file changes (mtime/size)."""
        ws = self.workspace
        if ws is None:
            return LLMSettings()
        path = ws.root / WORKSPACE_FILE
        try:
            st = path.stat()
        except OSError:
            return parse_llm_settings(ws.raw)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._llm_settings_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise WorkspaceError(f"{path} is not valid TOML: {exc}", "fix the file and try again") from None
        settings = parse_llm_settings(data)
        self._llm_settings_cache = (key, settings)
        return settings

    # ------------------------------------------------------------ reading
    def find_provider(self, name: str) -> Provider:
        if name == BUILTIN:
            return _builtin()
        rows = self.store.provider_rows(name)
        if not rows:
            known = [BUILTIN, *(r["name"] for r in self.store.provider_rows())]
            raise NotFound(f"unknown provider {name!r}",
                           f"known providers: {', '.join(known)}; add one: rf providers add {name} --kind openai|anthropic")
        return Provider(**rows[0])

    def list_providers(self) -> list[Provider]:
        """The built-in mock first, then the stored providers, with the default marked."""
        default = self.llm_settings().default
        uses = self.store.provider_uses()
        providers = [_builtin(), *(Provider(**r) for r in self.store.provider_rows())]
        for p in providers:
            p.default = p.name == default
            p.used_by = [ProviderUse(**u) for u in uses.get(p.name, [])]
        return providers

    def get_provider(self, name: str) -> Provider:
        """One provider (the built-in mock included)."""
        for p in self.list_providers():
            if p.name == name:
                return p
        return self.find_provider(name)  # raises NotFound with the known names

    # ------------------------------------------------------------ changing (shared: affects production now)
    def add_provider(self, name: str, kind: str, base_url: str | None = None, credential: str | None = None,
                     model: str | None = None) -> ProviderChange:
        """Register a provider. Shared by both environments: production can use it at once."""
        check_name("provider", name)
        if kind not in KINDS:
            raise UsageError(f"unknown provider kind {kind!r}", f"use one of: {', '.join(KINDS)}")
        if name == BUILTIN:
            raise Conflict("'mock' is the built-in provider and always exists",
                           "pick another name (a provider of kind mock answers from the same [[llm.mock.rules]])")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise UsageError("--model must be a non-empty model name")
        if kind == "mock":
            if base_url is not None or credential is not None:
                raise UsageError("a mock provider takes no --base-url or --credential", "it never leaves this machine")
        else:
            official = base_url is None
            base_url = check_base_url(base_url) if base_url is not None else _DEFAULT_URLS[kind]
            if credential is not None:
                check_name("credential", credential)
                self._check_credential(credential, name)
            elif official:
                raise UsageError(f"the {kind} API at {base_url} needs an API key",
                                 f"store it first (rf credentials set NAME), then: rf providers add {name} "
                                 f"--kind {kind} --credential NAME")
        now = utcnow()
        with self.store.unit_of_work() as tx:  # checked under the write lock: two concurrent adds cannot both pass
            if tx.providers.provider_exists(name):
                raise Conflict(f"provider {name!r} already exists", f"remove it first: rf providers remove {name}")
            tx.providers.insert_provider(name=name, kind=kind, base_url=base_url, credential=credential,
                                       model=model.strip() if model else None, now=now)
        provider = self.get_provider(name)
        return ProviderChange("added", provider, [
            f"providers are shared: agents in production can call {name!r} right away (model='{name}:MODEL')"])

    def remove_provider(self, name: str, force: bool = False) -> ProviderChange:
        """Delete a provider. Refused for the default; needs ``force`` when agents use it."""
        if name == BUILTIN:
            raise UsageError("the built-in mock provider cannot be removed", "it is offline and costs nothing")
        provider = self.get_provider(name)
        if provider.default:
            raise Conflict(f"provider {name!r} is the default provider: agents in both environments that name no "
                           "provider use it",
                           "make another one the default first: rf providers default mock")
        warnings = [f"{u.env} agent {u.agent!r} called it (last {u.last_used_at}); its calls to {name!r} will fail"
                    for u in provider.used_by]
        if provider.used_by and not force:
            prod = sorted({u.agent for u in provider.used_by if u.env == "production"})
            where = f"production agents {', '.join(prod)}" if prod else "staging agents"
            raise Conflict(f"provider {name!r} is in use by {where}; removing it breaks their LLM calls immediately "
                           "(providers are shared by both environments)",
                           f"to remove it anyway: rf providers remove {name} --yes")
        with self.store.unit_of_work() as tx:
            tx.providers.delete_provider(name)
        self._drop_http_client(name)
        return ProviderChange("removed", provider, warnings)

    def set_default_provider(self, name: str) -> ProviderChange:
        """Make ``name`` the provider of calls that name none (edits ``[llm] default`` in rf.toml)."""
        provider = self.get_provider(name)
        old = self.llm_settings().default
        if provider.default:
            return ProviderChange("default", provider, [])
        ws = self.workspace
        if ws is None:
            raise WorkspaceError("no workspace: the default provider is set in rf.toml")
        _write_default(ws.root / WORKSPACE_FILE, name)
        self._llm_settings_cache = None
        provider = self.get_provider(name)
        return ProviderChange("default", provider, [
            f"the default changes in production too: agents that name no provider now use {name!r} "
            f"instead of {old!r}"])

    # ------------------------------------------------------------ calling
    def _check_credential(self, credential: str, provider: str) -> None:
        """The credential must exist before a provider may name it."""
        if not self.credentials.credential_exists(credential):  # (RF_SECRET_<NAME> counts)
            raise NotFound(f"unknown credential {credential!r}",
                           f"store the API key first: rf credentials set {credential}")

    def provider_secret(self, credential: str, provider: str) -> str:
        value = self.credentials.credential_secret(credential)
        if not value:
            raise NotFound(f"credential {credential!r} (used by provider {provider!r}) has no value",
                           f"set it: rf credentials set {credential}")
        return str(value)

    def chat_client(self, provider: Provider, call: HostCall | None = None) -> ChatClient:
        settings = self.llm_settings()
        if provider.kind == "mock":
            return mock.MockClient(provider.name, settings.rules)
        key = None
        if provider.credential:
            key = self.provider_secret(provider.credential, provider.name)
            if call is not None:
                call.secret(key)
        base_url = provider.base_url or _DEFAULT_URLS[provider.kind]
        # [llm] timeout_s, or less: the calling execution's own timeout comes first.
        timeout, cut_short = call.time_left(settings.timeout_s) if call is not None else (settings.timeout_s, False)
        # Retries stop at the execution's deadline (or, outside an execution, timeout_s after the first attempt).
        deadline = call.deadline if call is not None else None
        client: HttpChat
        if provider.kind == "openai":
            from rf.llm.openai import OpenAIClient

            client = OpenAIClient(provider.name, base_url, key, timeout_s=timeout, deadline=deadline,
                                  http=self._http_client_for(provider, base_url))
        elif provider.kind == "anthropic":
            from rf.llm.anthropic import AnthropicClient

            client = AnthropicClient(provider.name, base_url, key, timeout_s=timeout, deadline=deadline,
                                     http=self._http_client_for(provider, base_url))
        else:
            raise RfError(f"provider {provider.name!r} has an unknown kind {provider.kind!r}",
                          f"remove it and add it again: rf providers remove {provider.name}")
        if cut_short and call is not None:
            client.out_of_time_hint = f"raise timeout_s in agents/{call.agent}/agent.toml, or ask for less (max_tokens)"
        return client

    def _http_client_for(self, provider: Provider, base_url: str) -> httpx.Client:
        """The provider's one HTTP client (made once, then shared by every call and thread).

        Keyed by name; a provider removed and added again with another kind or base URL (or
        created at another time) gets a new client, and the old one is closed."""
        from rf.llm._http import new_http_client

        clients = self._llm_http_clients
        lock = self._llm_http_lock
        identity = (provider.kind, base_url, str(provider.created_at))
        stale = None
        with lock:
            entry = clients.get(provider.name)
            if entry is not None and entry[0] == identity:
                return entry[1]
            if entry is not None:
                stale = entry[1]
            client = new_http_client()
            clients[provider.name] = (identity, client)
        if stale is not None:
            stale.close()  # calls still using it fail like a dropped connection (and are retried on the new one)
        return client

    def _drop_http_client(self, name: str) -> None:
        with self._llm_http_lock:
            entry = self._llm_http_clients.pop(name, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        """Close the providers' HTTP clients."""
        for name in list(self._llm_http_clients):
            self._drop_http_client(name)

    def resolve_model(self, model: str | None) -> tuple[Provider, str]:
        """``"provider:model"`` | ``"model"`` (default provider) | None (default provider and model)."""
        provider_name, model_name = split_model(model)
        if provider_name is None:
            default = self.llm_settings().default
            try:
                provider = self.find_provider(default)
            except NotFound:
                raise NotFound(f"the default provider {default!r} ([llm] default in rf.toml) does not exist",
                               f"add it (rf providers add {default} ...) or fix rf.toml") from None
        else:
            try:
                provider = self.find_provider(provider_name)
            except NotFound as exc:
                raise NotFound(f"unknown provider {provider_name!r} in model {model!r}",
                               f"{exc.hint}. A model name that contains ':' must be prefixed with its "
                               f"provider, e.g. 'local:llama3:8b'") from None
        model_name = model_name or provider.model or (mock.DEFAULT_MODEL if provider.kind == "mock" else None)
        if not model_name:
            raise UsageError(f"provider {provider.name!r} has no default model and the call names none",
                             f"pass model='{provider.name}:MODEL', or re-add the provider with --model")
        return provider, model_name

    def test_provider(self, name: str, model: str | None = None) -> ProviderTest:
        """One real round trip: a tiny prompt, the reply and the latency."""
        self.find_provider(name)
        provider, model_name = self.resolve_model(f"{name}:{model or ''}")
        client = self.chat_client(provider)
        started = time.perf_counter()
        result = client.chat([user(TEST_PROMPT)], model=model_name, tools=[])
        latency = (time.perf_counter() - started) * 1000
        return ProviderTest(provider=provider.name, kind=provider.kind, model=result.model or model_name,
                            latency_ms=round(latency, 1), text=result.text, usage=result.usage.to_dict())

    @host_method("llm.chat")
    def llm_chat(self, call: HostCall, messages: Any, model: str | None = None, tools: Any = None,
                 stream: bool = False, max_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, stop: Any = None, response_format: Any = None) -> dict[str, Any]:
        """``ctx.llm.chat``: one chat call for agent code, in the host.

        Returns :meth:`ChatResult.to_dict`; with ``stream`` the provider is
        called in streaming mode and each text piece goes to the worker as it
        arrives (``PIECE_SINK``, set by the pool), or, when nobody listens, the
        pieces are returned in ``chunks``. The span gets the token usage (and
        the retries); the execution's root span the sums (:func:`add_tokens`).
        """
        msgs = normalize_messages(messages)
        specs = normalize_tools(tools)
        if not isinstance(stream, bool):
            raise UsageError("stream must be true or false")
        sampling = normalize_sampling(temperature=temperature, top_p=top_p, stop=stop, max_tokens=max_tokens)
        fmt = normalize_response_format(response_format)
        mocked = call.tape is not None and call.tape.llm_mock  # rf replay --llm mock: the built-in mock answers
        provider, model_name = (_builtin(), mock.DEFAULT_MODEL) if mocked else self.resolve_model(model)
        call.annotate(provider=provider.name, provider_kind=provider.kind, model=model_name, input_messages=msgs,
                      stream=stream, **{k: v for k, v in sampling.items() if k != "max_tokens"})
        if fmt is not None:
            call.annotate(response_format=fmt["name"])
        if not mocked:
            self._note_use(provider.name, call)  # before calling: a failing provider is still one agents depend on
        client = self.chat_client(provider, call)
        chunks: list[str] = []
        on_chunk: Callable[[str], None] | None = None
        sink = PIECE_SINK.get() if stream else None
        if sink is not None:
            def on_chunk(piece: str) -> None:  # each piece to the worker at once (see rf.runtime.protocol)
                chunks.append(piece)
                sink(piece)
        elif stream:
            on_chunk = chunks.append
        try:
            result = client.chat(msgs, model=model_name, tools=specs, on_chunk=on_chunk, response_format=fmt,
                                 **sampling)
        finally:
            retries = getattr(client, "retries", 0)
            if retries:
                call.annotate(**{"llm.retries": retries})
        usage = result.usage
        call.annotate(model=result.model, output_text=result.text, usage=usage.to_dict(),
                      tool_calls=[t.to_dict() for t in result.tool_calls], finish_reason=result.finish_reason,
                      **{"llm.tokens.prompt": usage.prompt_tokens, "llm.tokens.completion": usage.completion_tokens,
                         "llm.tokens.total": usage.total_tokens})
        add_tokens(call, usage)
        out = result.to_dict()
        if stream and sink is None:
            out["chunks"] = chunks
        return out

    def _note_use(self, provider: str, call: HostCall) -> None:
        """Remember that this agent uses ``provider`` in ``call.env`` (throttled; never fails a call)."""
        state = self._provider_use_notes
        lock = self._provider_use_lock
        key = (provider, call.env, call.agent)
        now = time.monotonic()
        with lock:
            last = state.get(key)
            if last is not None and now - last < USE_NOTE_INTERVAL_S:
                return
            state[key] = now
        try:
            self.store.note_provider_use(provider, call.env, call.agent, utcnow())
        except Exception:  # bookkeeping must not fail the agent's LLM call (logged below)
            with lock:
                state.pop(key, None)
            log.warning("could not record that %s/%s used provider %s", call.env, call.agent, provider,
                        exc_info=True)


_TOKENS_LOCK = threading.Lock()


def add_tokens(call: HostCall, usage: Usage) -> None:
    """Add one call's tokens to its execution's sums: ``call.state["root_attributes"]``, which
    the execution's root span takes as its attributes (rf.services.traces). Host calls of one
    execution may run on several threads, hence the lock."""
    with _TOKENS_LOCK:
        sums = call.state.setdefault("root_attributes", {})
        for name, value in (("llm.tokens.prompt", usage.prompt_tokens),
                            ("llm.tokens.completion", usage.completion_tokens),
                            ("llm.tokens.total", usage.total_tokens)):
            sums[name] = int(sums.get(name, 0)) + value
        sums["llm.calls"] = int(sums.get("llm.calls", 0)) + 1


_LLM_HEADER = re.compile(r"^\s*\[\s*llm\s*\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
_DEFAULT_LINE = re.compile(r"^(\s*default\s*=\s*)(\"[^\"]*\"|'[^']*'|[^\s#]+)(.*)$")


def _write_default(path: Path, name: str) -> None:
    """Set ``[llm] default = "name"`` in rf.toml, keeping every other line (and comments) as is."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    value = json.dumps(name)
    start = next((i for i, line in enumerate(lines) if _LLM_HEADER.match(line.rstrip("\r\n"))), None)
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += ["\n", "[llm]\n", "# the provider ctx.llm uses when a call names none\n", f"default = {value}\n"]
    else:
        end = next((i for i in range(start + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
        for i in range(start + 1, end):
            m = _DEFAULT_LINE.match(lines[i].rstrip("\r\n"))
            if m:
                lines[i] = f"{m.group(1)}{value}{m.group(3)}\n"
                break
        else:
            lines.insert(start + 1, f"default = {value}\n")
    new_text = "".join(lines)
    try:
        data = tomllib.loads(new_text)
        ok = isinstance(data.get("llm"), dict) and data["llm"].get("default") == name
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        raise WorkspaceError(f"could not update {path} automatically",
                             f'set it by hand: under [llm], default = "{name}"')
    fd, tmp = tempfile.mkstemp(prefix=".rf-toml-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["KINDS", "LLMSettings", "ProvidersService", "check_base_url", "parse_llm_settings"]
