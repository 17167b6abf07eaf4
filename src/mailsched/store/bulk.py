"""``UPDATE`` of many rows by key, each row with its own values, in one statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.tables import stored_time

#: Statements whose shape changes with every batch: SQLAlchemy's compiled cache
#: would keep each one (the worker's memory grew with every email sent).
UNCACHED = {"compiled_cache": None}


class KeyedUpdate:
    """``UPDATE`` of many rows by key, each with its own values, in one statement.

    Written as SQL text rather than SQLAlchemy expressions: the outcome updates run
    many times a second in every worker, with one ``CASE`` branch per row, and
    compiling them took a fifth of a worker's CPU and held up its event loop (and,
    since every batch size is another statement, SQLAlchemy's compiled cache grew
    with every email sent). ``key`` is a column or a composite key's columns;
    ``where`` holds ``{}`` for each of ``where_params``.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        table: str,
        key: str | tuple[str, ...],
        where: str = "",
        where_params: Sequence[object] = (),
    ) -> None:
        self._conn = conn
        self._where_params = where_params
        self._table = table
        self._key = (key,) if isinstance(key, str) else key
        self._marker = mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        self._match = " AND ".join(f"{column} = {mark}" for column in self._key)
        where = where.format(*[mark] * where.count("{}"))
        self._where = f" AND {where}" if where else ""
        self._stored = stored_time(conn.dialect)

    async def update(
        self,
        rows: Mapping[Any, Sequence[object]],
        columns: Sequence[str],
        same: Mapping[str, object] | None = None,
        first: Sequence[str] = (),
    ) -> int:
        """Set ``columns`` of each row keyed in ``rows`` (a tuple per key with a composite
        key) to its values, and ``same`` on all of them, where ``where`` holds too; return
        how many rows changed. ``first`` are SQL assignments made before the others
        (MySQL reads the columns an assignment names as the assignments before it left
        them; SQLite as they were)."""
        mark = self._marker
        keys = [k if isinstance(k, tuple) else (k,) for k in rows]
        sets: list[str] = list(first)
        params: list[object] = []
        for name, value in (same or {}).items():
            sets.append(f"{name} = {mark}")
            params.append(self._param(value))
        for index, name in enumerate(columns):
            values = [self._param(row[index]) for row in rows.values()]
            if all(v == values[0] for v in values):
                # One value for all (every send SENT, say): no CASE needed.
                sets.append(f"{name} = {mark}")
                params.append(values[0])
                continue
            branches = f" WHEN {self._match} THEN {mark}" * len(values)
            sets.append(f"{name} = CASE{branches} END")
            for key, value in zip(keys, values, strict=True):
                params += (*key, value)
        if len(self._key) == 1:
            which = f"{self._key[0]} IN ({', '.join([mark] * len(keys))})"
        else:
            which = "(" + " OR ".join([f"({self._match})"] * len(keys)) + ")"
        sql = f"UPDATE {self._table} SET {', '.join(sets)} WHERE {which}{self._where}"
        params.extend(k for key in keys for k in key)
        params.extend(self._where_params)
        result = await self._conn.exec_driver_sql(sql, tuple(params))
        return result.rowcount

    def _param(self, value: object) -> object:
        return self._stored(value) if isinstance(value, datetime) else value
