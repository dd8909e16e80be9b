"""Credentials (shared by both environments): metadata in DuckDB, secrets in the keyring."""

from __future__ import annotations

from rf.services.base import ServiceBase


class CredentialsService(ServiceBase):
    """Mixed into :class:`rf.services.Services`."""
