"""Prompts: immutable versions; draft (staging) and published (production) pointers."""

from __future__ import annotations

from rf.services.base import ServiceBase


class PromptsService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""
