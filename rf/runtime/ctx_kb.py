"""``ctx.kb(name)`` inside the worker: search a knowledge base (built on ``Context.call_host``).

Knowledge bases are shared by both environments, so the same name finds the
same documents from staging and production. The host does the work (the
worker never opens the database) and traces it as a ``kb`` span with the KB
name, ``k`` and the number of results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.runtime.context import Context


class KnowledgeBase:
    """``ctx.kb("docs")``: ``search(query, k=5, filter=None)``."""

    def __init__(self, ctx: Context, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError("ctx.kb(name): name must be a non-empty string")
        self._ctx = ctx
        self.name = name

    def __repr__(self) -> str:
        return f"KnowledgeBase({self.name!r})"

    def search(self, query: str, k: int = 5, filter: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The ``k`` best chunks for ``query``, best first.

        Each chunk is a dict: ``text``, ``path`` (its document), ``chunk``
        (index in the document), ``score`` (combined), ``vector_score``,
        ``lexical_score`` and ``metadata``. ``filter`` keeps documents whose
        metadata match, e.g. ``{"lang": "en"}`` or ``{"path": "faq/*.md"}``;
        a list of values means any of them.
        """
        if not isinstance(query, str) or not query.strip():
            raise UsageError("ctx.kb(...).search: query must be a non-empty string")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError("ctx.kb(...).search: k must be a positive integer")
        if filter is not None and not isinstance(filter, dict):
            raise UsageError('ctx.kb(...).search: filter must be a dict, e.g. {"lang": "en"}')
        hits = self._ctx.call_host("kb.search", name=self.name, query=query, k=k, filter=filter)
        return list(hits)
