"""Opening the mirror's SQLite database (WAL, one writer) and applying migrations."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite

from met_harvester.db.migrations import MIGRATIONS

DB_FILENAME = "met.sqlite"

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA journal_size_limit=67108864",  # a checkpointed WAL shrinks back to 64 MiB at most
)

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    number      INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)
"""


def iso_utc(moment: datetime) -> str:
    """`moment` (timezone-aware) as the mirror's time text: ISO-8601 UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An ISO-8601 time as written by `iso_utc` (a `Z` or an offset) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_after(now: str, seconds: float) -> str:
    """The ISO-8601 UTC time `seconds` after `now` (negative: before), in `utc_now()`'s format."""
    return iso_utc(parse_iso(now) + timedelta(seconds=seconds))


def utc_now() -> str:
    """The current time in the mirror's time text (`iso_utc`), e.g. `2026-11-29T05:56:15.020Z`."""
    return iso_utc(datetime.now(UTC))


def db_path(data_dir: Path | str) -> Path:
    """Where the database of a data dir lives: `<data-dir>/met.sqlite`."""
    return Path(data_dir) / DB_FILENAME


def apply_migrations(conn: sqlite3.Connection) -> list[int]:
    """Apply every pending migration, each in its own transaction. Returns the numbers applied."""
    conn.execute(_MIGRATIONS_TABLE)
    conn.commit()
    done = {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.number in done:
            continue
        # executescript() commits first; wrap the script and its bookkeeping row in one transaction.
        script = (
            "BEGIN IMMEDIATE;\n"
            + migration.sql
            + f"\nINSERT INTO schema_migrations(number, name, applied_at) "
            f"VALUES ({migration.number}, '{migration.name}', '{utc_now()}');\nCOMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.rollback()
            raise
        applied.append(migration.number)
    return applied


def connect_sync(data_dir: Path | str, *, migrate: bool = True) -> sqlite3.Connection:
    """A plain sqlite3 connection to the mirror (for bulk work such as CSV import)."""
    path = db_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level="DEFERRED")
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    if migrate:
        apply_migrations(conn)
    return conn


async def open_db(data_dir: Path | str, *, migrate: bool = True) -> aiosqlite.Connection:
    """Open the mirror's database for the one writer of a process, migrating it first."""
    path = db_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if migrate:
        conn = connect_sync(data_dir, migrate=True)
        conn.close()
    db = await aiosqlite.connect(path)
    for pragma in _PRAGMAS:
        await db.execute(pragma)
    return db
