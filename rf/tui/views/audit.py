"""The audit log: who changed what, newest first (``rf audit``), read-only in both environments."""

from __future__ import annotations

from rf.tui.views.generic import ListView


class AuditView(ListView):
    TITLE = "Audit log"
    KEY = "audit"
    GROUP = "Shared"
    REQUIRES = ("list_audit",)
    LIST_METHOD = "list_audit"
    NAME_FIELD = "id"
    COLUMNS = ("at", "actor", "role", "action", "target")
    EMPTY_TEXT = "Nothing recorded yet — deploys, releases, approvals, credential and user changes appear here."
    NOUN = "entry"
