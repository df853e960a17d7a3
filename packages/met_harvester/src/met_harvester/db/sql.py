"""Small SQL helpers shared by the `db` modules."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite


def json_ids(ids: Iterable[int]) -> str:
    """Ids as a JSON array, for `... IN (SELECT value FROM json_each(?))`."""
    return json.dumps(list(ids))


async def select_ids(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[int]:
    """The first column of every row of `sql`, as ints."""
    async with db.execute(sql, tuple(params)) as cursor:
        return [int(row[0]) async for row in cursor]
