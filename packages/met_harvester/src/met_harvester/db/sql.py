"""Small SQL helpers shared by the `db` modules."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite


def json_ids(ids: Iterable[int]) -> str:
    """Ids as a JSON array, for `... IN (SELECT value FROM json_each(?))`."""
    return json.dumps(list(ids))


async def rows_of_ids(
    db: aiosqlite.Connection, columns: str, table: str, ids: Iterable[int]
) -> list[tuple[Any, ...]]:
    """`SELECT <columns> FROM <table>` for the rows whose `object_id` is one of `ids`."""
    async with db.execute(
        f"SELECT {columns} FROM {table} WHERE object_id IN (SELECT value FROM json_each(?))",
        (json_ids(ids),),
    ) as cursor:
        return [tuple(row) async for row in cursor]


async def select_ids(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[int]:
    """The first column of every row of `sql`, as ints."""
    async with db.execute(sql, tuple(params)) as cursor:
        return [int(row[0]) async for row in cursor]
