"""LLM providers (shared): mock, OpenAI-compatible, Anthropic."""

from __future__ import annotations

from rf.services.base import ServiceBase


class ProvidersService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""
