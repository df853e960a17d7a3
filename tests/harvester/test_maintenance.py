"""Years of operation: after each pass the WAL is checkpointed and truncated, statistics are
refreshed, old versions are compressed and, when asked, pruned to the newest N per object."""

from __future__ import annotations

import json
from pathlib import Path

from harvester_support import FakeApiFactory
from test_sync import make_settings, query

from met_harvester.db import open_db
from met_harvester.db.maintenance import after_pass
from met_harvester.db.versions import version_text
from met_harvester.sync import run_sync


async def test_after_pass_truncates_the_wal_and_compresses_old_versions(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    try:
        async with db.execute("PRAGMA journal_size_limit") as cursor:
            assert await cursor.fetchone() == (64 << 20,)
        legacy = json.dumps({"objectID": 1, "title": "old " * 500})
        await db.executemany(
            "INSERT INTO object_versions (object_id, raw_json, content_sha256, fetched_at, "
            "replaced_at) VALUES (1, ?, 'x', 't', ?)",
            [(legacy, f"2026-01-0{day}T00:00:00.000Z") for day in range(1, 4)],
        )
        await db.commit()
        wal = tmp_path / "met.sqlite-wal"
        assert wal.stat().st_size > 0
        await after_pass(db, keep_versions=2)
        assert wal.stat().st_size == 0  # checkpointed and truncated, the connection still open
        async with db.execute(
            "SELECT raw_json, raw_json_zlib, replaced_at FROM object_versions ORDER BY version_id"
        ) as cursor:
            rows = [tuple(r) async for r in cursor]
    finally:
        await db.close()
    assert [r[2] for r in rows] == ["2026-01-02T00:00:00.000Z", "2026-01-03T00:00:00.000Z"]
    for plain, packed, _ in rows:
        assert plain == "" and len(packed) < len(legacy) // 10
        assert version_text(plain, packed) == legacy


async def test_keep_versions_prunes_after_each_pass(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    api = await fake_api_factory(n_objects=20, seed=4)
    object_id = list(api.collection.object_ids)[3]
    settings = make_settings(tmp_path, api, keep_versions=2)
    await run_sync(settings)
    for n in range(4):
        api.mutate(object_id, title=f"version {n}")
        await run_sync(settings)
    rows = query(
        tmp_path,
        "SELECT raw_json, raw_json_zlib FROM object_versions WHERE object_id = ? "
        "ORDER BY version_id",
        object_id,
    )
    titles = [json.loads(version_text(raw, packed))["title"] for raw, packed in rows]
    assert titles == ["version 1", "version 2"]  # the newest two previous records
