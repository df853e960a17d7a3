"""Quarantine is not forever: a quarantined id is retried after 1, then 7 days, and at once with
`met-harvester retry`; a record the server fixed quietly is then stored exactly."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path

from harvester_support import FakeApiFactory, harvester_env, object_fetches
from test_sync import make_settings, query

from met_harvester.db import open_db
from met_harvester.db.connection import parse_iso
from met_harvester.status import collect_status, format_status
from met_harvester.sync import run_sync


def days_until(when: str, since: str) -> float:
    return (parse_iso(when) - parse_iso(since)).total_seconds() / 86400


async def test_quarantined_record_fixed_by_the_server_is_retried(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    api = await fake_api_factory(n_objects=60, seed=7)
    old = time.time() * 1000 - 30 * 86400 * 1000
    bad = next(i for i in api.collection.object_ids if api.collection.metadata_ms(i) < old)
    api.collection.fix_quietly(bad, objectID=str(bad))  # the server breaks it quietly
    settings = make_settings(tmp_path, api)
    assert (await run_sync(settings)).counts["quarantined"] == 1
    [(attempts, received, due)] = query(
        tmp_path, "SELECT attempts, received_at, next_retry_at FROM quarantine"
    )
    assert attempts == 1 and round(days_until(due, received), 3) == 1.0
    mark = len(api.requests)
    await run_sync(settings)  # not due yet: not asked
    assert bad not in object_fetches(api, mark)
    _force(tmp_path, "UPDATE quarantine SET next_retry_at = '2000-01-01T00:00:00.000Z'")
    mark = len(api.requests)
    report = await run_sync(settings)  # a day later: due, asked, still broken
    assert object_fetches(api, mark).count(bad) == 1 and report.counts["quarantined"] == 1
    [(attempts, received, due)] = query(
        tmp_path, "SELECT attempts, received_at, next_retry_at FROM quarantine"
    )
    assert attempts == 2 and round(days_until(due, received), 3) == 7.0
    api.collection.fix_quietly(bad, objectID=bad)  # fixed, without a new metadataDate
    db = await open_db(tmp_path)
    try:
        status = await collect_status(db)
    finally:
        await db.close()
    assert status["quarantined"] == 1 and status["quarantined_due"] == 0
    assert status["quarantine_next_retry_at"] == due
    assert f"next due {due}" in format_status(status)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "met_harvester",
        "retry",
        "--quarantined",
        "--data-dir",
        str(tmp_path),
        "--api-url",
        api.api_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=harvester_env(MET_HARVESTER_IMAGES="false"),
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"sync ids completed" in out
    assert query(tmp_path, "SELECT COUNT(*) FROM quarantine") == [(0,)]
    [(raw,)] = query(tmp_path, "SELECT raw_json FROM objects WHERE object_id = ?", bad)
    assert json.loads(raw) == api.collection.record(bad, api.base_url)


def _force(data_dir: Path, sql: str) -> None:
    """Change the mirror behind the harvester's back (here: let a day pass)."""
    conn = sqlite3.connect(data_dir / "met.sqlite")
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()
