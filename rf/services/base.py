"""What every service mixin may rely on (set by :class:`rf.services.core.CoreServices`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from rf.config import Workspace
    from rf.runtime.pool import WorkerPool
    from rf.store import Store


class ServiceBase:
    """Typed attributes shared by the Services mixins."""

    store: Store
    workspace: Workspace | None
    cache_dir: Path
    server_url: str | None

    if TYPE_CHECKING:

        @property
        def pool(self) -> WorkerPool: ...
