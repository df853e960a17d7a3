"""SQLite access for the mirror: connections, migrations and the save functions."""

from met_harvester.db.connection import (
    DB_FILENAME,
    apply_migrations,
    connect_sync,
    db_path,
    open_db,
    utc_now,
)

__all__ = ["DB_FILENAME", "apply_migrations", "connect_sync", "db_path", "open_db", "utc_now"]
