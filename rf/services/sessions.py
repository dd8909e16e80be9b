"""Sessions (threads) and memory, per environment."""

from __future__ import annotations

from rf.services.base import ServiceBase


class SessionsService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""
