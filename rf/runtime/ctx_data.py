"""``ctx.data(name)`` inside the worker: read-only SQL on a data source (built on ``Context.call_host``).

Data sources are shared by both environments. In the SQL the source is the
table named after it (``SELECT count(*) FROM sales``). The host runs the
query in a throwaway, locked-down connection — writes are refused, a timeout
and a row limit apply — and traces it as a ``data`` span with the source
name and the row count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.runtime.context import Context


class DataSource:
    """``ctx.data("sales")``: ``query(sql, params=None, limit=1000)``."""

    def __init__(self, ctx: Context, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError("ctx.data(name): name must be a non-empty string")
        self._ctx = ctx
        self.name = name

    def __repr__(self) -> str:
        return f"DataSource({self.name!r})"

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None, limit: int = 1000,
              timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Rows (one dict per row, in column order) of one read-only SQL statement.

        ``params`` fill ``?`` placeholders (a list) or ``$name`` ones (a dict); on a
        PostgreSQL source, ``$1, $2, …`` from a list (``?`` is its jsonb operator there).
        At most ``limit`` rows come back; :meth:`query_result` also says
        whether there were more.
        """
        return list(self.query_result(sql, params, limit, timeout_s)["rows"])

    def query_result(self, sql: str, params: list[Any] | dict[str, Any] | None = None, limit: int = 1000,
                     timeout_s: float = 30.0) -> dict[str, Any]:
        """``{"columns", "types", "rows", "truncated"}`` of one read-only SQL statement."""
        if not isinstance(sql, str) or not sql.strip():
            raise UsageError("ctx.data(...).query: sql must be a non-empty string")
        if params is not None and not isinstance(params, list | tuple | dict):
            raise UsageError("ctx.data(...).query: params must be a list or a dict")
        if isinstance(params, tuple):
            params = list(params)
        result: dict[str, Any] = self._ctx.call_host("data.query", name=self.name, sql=sql, params=params,
                                                     limit=limit, timeout_s=timeout_s)
        return result
