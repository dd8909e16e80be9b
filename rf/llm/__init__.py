"""LLM clients: the mock, OpenAI Chat Completions and Anthropic Messages.

These run in the **host** process (the one that owns the store and reads
secrets): agent code reaches them through ``ctx.llm`` → ``call_host("llm.chat")``
→ :class:`rf.services.providers.ProvidersService`.

- :mod:`rf.llm.types` — the neutral shapes every client speaks (messages,
  tool specs, :class:`~rf.llm.types.ChatResult`); light, also imported by
  the worker.
- :mod:`rf.llm.mock` — the built-in, offline, deterministic provider.
- :mod:`rf.llm.openai` / :mod:`rf.llm.anthropic` — the two wire formats,
  over httpx (imported only when such a provider is used).

This module imports nothing, so importing ``rf.llm.types`` stays cheap.
"""
