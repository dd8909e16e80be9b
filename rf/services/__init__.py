"""The service layer: every domain rule of rf lives here.

``Services`` is what both backends expose: ``LocalBackend`` calls it
in-process, the server calls it for ``HttpBackend``. The environment rules are
enforced here — whatever the surface, a mutation aimed at production that is
not a release is refused by :func:`require_staging`.
"""

from rf.services.core import Services, require_staging

__all__ = ["Services", "require_staging"]
