"""Traces: spans per execution, per environment; OTLP export."""

from __future__ import annotations

from rf.services.base import ServiceBase


class TracesService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""
