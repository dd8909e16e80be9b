"""Connector instances (one per environment, same slug) and their resources."""

from __future__ import annotations

from rf.services.base import ServiceBase


class ConnectorsService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""
