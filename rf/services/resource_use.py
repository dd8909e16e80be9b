"""Which agents use which shared resources (knowledge bases, data sources), per environment.

Shared by :class:`rf.services.knowledge.KnowledgeService` and
:class:`rf.services.datasources.DataSourcesService`: a use is written at most once per
:data:`USE_NOTE_INTERVAL_S` per (kind, name, env, agent), and never fails the agent's call.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from rf.ids import utcnow

if TYPE_CHECKING:
    from rf.services.host import HostCall
    from rf.store import Store

#: A resource's use by one (env, agent) is written at most this often.
USE_NOTE_INTERVAL_S = 60.0


class ResourceUses:
    """Notes that an agent used a shared knowledge base or data source (throttled)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._notes: dict[tuple[str, str, str, str], float] = {}
        self._lock = threading.Lock()

    def note(self, kind: str, name: str, call: HostCall) -> None:
        """Remember that this agent used a shared KB / data source from ``call.env`` (throttled; never fails)."""
        key = (kind, name, call.env, call.agent)
        now = time.monotonic()
        with self._lock:
            last = self._notes.get(key)
            if last is not None and now - last < USE_NOTE_INTERVAL_S:
                return
            self._notes[key] = now
        try:
            self.store.note_resource_use(kind, name, call.env, call.agent, utcnow())
        except Exception:  # noqa: BLE001 - bookkeeping must never fail the agent's call
            with self._lock:
                self._notes.pop(key, None)
