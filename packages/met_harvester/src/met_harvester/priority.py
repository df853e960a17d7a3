"""Sync priority: the order in which ids known from the Met CSV, but not yet fetched from the
API, are synced.

A priority spec is a comma-separated list of groups, e.g. the default ``"pd-tagged,pd,rest"``.
Each id goes into the first group it matches, groups are fetched in the order given, and within a
group ids are in ascending order. Ids not in any listed group (and ids unknown to the CSV) come
last, as if ``rest`` ended the list. Groups, judged from the `csv_objects` row of the id:

- ``pd-tagged``: public domain and at least one tag
- ``pd``: public domain
- ``tagged``: at least one tag
- ``highlight``: marked "Is Highlight"
- ``rest``: everything else, including ids the CSV does not know

The spec ``"id"`` (alone) means plain ascending id order, ignoring the CSV.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import aiosqlite

DEFAULT_PRIORITY = "pd-tagged,pd,rest"
PLAIN_ORDER = "id"

# SQL fragment "tags is a non-empty JSON list" for a csv_objects row.
_TAGGED_SQL = "(tags IS NOT NULL AND tags NOT IN ('', '[]'))"


GROUPS: dict[str, str] = {
    "pd-tagged": f"(is_public_domain = 1 AND {_TAGGED_SQL})",
    "pd": "(is_public_domain = 1)",
    "tagged": _TAGGED_SQL,
    "highlight": "(is_highlight = 1)",
    "rest": "1",
}
"""Every group name a priority spec may use (besides the lone ``"id"``), with its condition on a
`csv_objects` row."""

# Ids looked up per query when the id list is short; longer lists scan csv_objects once.
_CHUNK = 500
_SCAN_ABOVE = 20_000
_FETCH = 5000


def parse_priority(spec: str) -> list[str]:
    """Validate a priority spec and return its groups, always ending with ``rest``.

    Args:
        spec: e.g. ``"pd-tagged,pd,rest"`` or ``"id"``.

    Returns:
        The group names in order; ``[]`` for the plain id order ``"id"``.

    Raises:
        ValueError: empty spec, unknown or repeated group, or ``id`` combined with groups.
    """
    names = [part.strip().lower() for part in spec.split(",")]
    if not spec.strip() or any(not name for name in names):
        raise ValueError(
            f"invalid --priority {spec!r}: empty group; use a comma list of "
            f"{', '.join(GROUPS)} (e.g. {DEFAULT_PRIORITY!r}) or 'id'"
        )
    if names == [PLAIN_ORDER]:
        return []
    unknown = [name for name in names if name not in GROUPS]
    if PLAIN_ORDER in names:
        raise ValueError(f"invalid --priority {spec!r}: 'id' must be used alone")
    if unknown:
        raise ValueError(
            f"invalid --priority {spec!r}: unknown group {unknown[0]!r}; "
            f"known groups are {', '.join(GROUPS)}, or 'id' alone for plain id order"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"invalid --priority {spec!r}: group {repeated[0]!r} given twice")
    if "rest" in names:
        names = names[: names.index("rest") + 1]  # nothing can follow "rest"
    else:
        names.append("rest")
    return names


def _rank_queries(groups: list[str], ids: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Queries giving (object_id, rank) for the CSV rows of `ids` that rank before "rest"."""
    rest = len(groups) - 1
    cases = " ".join(f"WHEN {GROUPS[name]} THEN {rank}" for rank, name in enumerate(groups))
    select = f"SELECT object_id, CASE {cases} ELSE {rest} END AS rank FROM csv_objects"
    if len(ids) > _SCAN_ABOVE:
        return [(f"SELECT * FROM ({select}) WHERE rank < {rest}", ())]
    queries = []
    for start in range(0, len(ids), _CHUNK):
        chunk = tuple(ids[start : start + _CHUNK])
        marks = ",".join("?" * len(chunk))
        queries.append(
            (f"SELECT * FROM ({select} WHERE object_id IN ({marks})) WHERE rank < {rest}", chunk)
        )
    return queries


def _order(ids: Iterable[int], rest: int, ranks: dict[int, int]) -> list[int]:
    unique = sorted(set(ids))
    if not ranks:
        return unique
    return sorted(unique, key=lambda object_id: (ranks.get(object_id, rest), object_id))


async def order_ids(db: aiosqlite.Connection, ids: Sequence[int], spec: str) -> list[int]:
    """Order ids to fetch by the priority spec (see the module docstring).

    Args:
        db: the mirror's database (with `csv_objects`, filled by `import-csv`).
        ids: the ids to order; duplicates are dropped.
        spec: the priority spec, e.g. ``settings.priority``.

    Returns:
        The ids, best first, stable by ascending id within a group.

    Raises:
        ValueError: if the spec is invalid (raised before any query).
    """
    groups = parse_priority(spec)
    ranks: dict[int, int] = {}
    if len(groups) > 1 and ids:
        for sql, params in _rank_queries(groups, list(ids)):
            async with db.execute(sql, params) as cursor:
                while rows := await cursor.fetchmany(_FETCH):
                    ranks.update(rows)  # type: ignore[arg-type]
    return _order(ids, len(groups) - 1, ranks)


def order_ids_sync(conn: sqlite3.Connection, ids: Sequence[int], spec: str) -> list[int]:
    """`order_ids` on a plain sqlite3 connection (same arguments and result)."""
    groups = parse_priority(spec)
    ranks: dict[int, int] = {}
    if len(groups) > 1 and ids:
        for sql, params in _rank_queries(groups, list(ids)):
            ranks.update(conn.execute(sql, params))
    return _order(ids, len(groups) - 1, ranks)


def _status_sql(groups: list[str]) -> str:
    cases = " ".join(f"WHEN {GROUPS[name]} THEN '{name}'" for name in groups)
    group_expr = f"CASE {cases} ELSE 'rest' END" if groups else "'id'"
    return (
        f"SELECT {group_expr} AS grp, COUNT(*) FROM csv_objects "
        "WHERE object_id NOT IN (SELECT object_id FROM objects) "
        "AND object_id NOT IN (SELECT object_id FROM missing_objects) "
        "GROUP BY grp"
    )


async def priority_status(
    db: aiosqlite.Connection, spec: str = DEFAULT_PRIORITY
) -> dict[str, int | str | None]:
    """Counts, per priority group, of CSV-known ids the API mirror has not fetched yet.

    An id counts as fetched once it is in `objects` or in `missing_objects` (a 404 is an answer).

    Returns:
        A flat dict (for `status`): ``csv_objects`` (rows imported from the CSV), ``unfetched``,
        then one count per group in priority order (zeros included), ``priority`` (the spec) and
        ``last_import`` (when the last CSV import finished, or None).
    """
    groups = parse_priority(spec)
    async with db.execute("SELECT COUNT(*) FROM csv_objects") as cursor:
        row = await cursor.fetchone()
    total = int(row[0]) if row else 0
    counts: dict[str, int] = {name: 0 for name in groups} if groups else {PLAIN_ORDER: 0}
    if total:
        async with db.execute(_status_sql(groups)) as cursor:
            for name, count in await cursor.fetchall():
                counts[str(name)] = int(count)
    async with db.execute("SELECT MAX(finished_at) FROM csv_imports") as cursor:
        row = await cursor.fetchone()
    status: dict[str, int | str | None] = {
        "csv_objects": total,
        "unfetched": sum(counts.values()),
    }
    status.update(counts)
    status["priority"] = spec
    status["last_import"] = row[0] if row else None
    return status
