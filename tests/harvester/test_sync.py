"""run_sync against the fake Met API over real loopback HTTP, into a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harvester_support import object_fetches

from met_harvester.db import connect_sync, open_db, runs
from met_harvester.ratelimit import AdaptiveRateLimiter, AimdPolicy
from met_harvester.settings import HarvesterSettings
from met_harvester.status import collect_status
from met_harvester.sync import SyncError, run_sync
from met_harvester.testing import FakeMetAPI, FaultConfig, FirewallConfig


def make_settings(data_dir: Path, api: FakeMetAPI, **overrides: Any) -> HarvesterSettings:
    """Fast settings for loopback tests: high rate, tiny back-offs, no images."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "api_url": api.api_url,
        "rate": 5000.0,
        "concurrency": 8,
        "images": False,
        "retry_wait": 0.001,
        "retry_wait_max": 0.01,
        "block_cooldown": 0.01,
        "max_attempts": 6,
        "batch_size": 50,
    }
    values.update(overrides)
    return HarvesterSettings(**values)


def fast_limiter(settings: HarvesterSettings) -> AdaptiveRateLimiter:
    """The real limiter with every duration scaled down 1000x, for fault tests."""
    return AdaptiveRateLimiter(
        settings.rate,
        cooldown=settings.block_cooldown,
        policy=AimdPolicy().scaled(0.001),
    )


def query(data_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = connect_sync(data_dir)
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def objects_table(data_dir: Path) -> dict[int, tuple[Any, ...]]:
    """Everything of the objects table that does not depend on when it was fetched."""
    rows = query(
        data_dir,
        "SELECT object_id, raw_json, content_sha256, metadata_date, withdrawn_at IS NULL, "
        "department, classification, object_name, title, culture, period, is_public_domain, "
        "is_highlight, artist_display_name, artist_gender, object_begin_date, object_end_date, "
        "primary_image, primary_image_small, additional_images, accession_year, accession_number "
        "FROM objects ORDER BY object_id",
    )
    return {row[0]: (json.loads(row[1]), *row[2:]) for row in rows}


async def test_full_sync_stores_every_listed_object(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    settings = make_settings(tmp_path, fake_api)
    report = await run_sync(settings)
    ids = list(fake_api.collection.object_ids)
    assert report.status == "completed" and report.mode == "full"
    assert report.counts["new"] == len(ids) == report.counts["fetched"]
    assert sorted(object_fetches(fake_api)) == ids  # each exactly once
    stored = objects_table(tmp_path)
    assert list(stored) == ids
    for object_id in ids[:: max(1, len(ids) // 25)]:
        served = fake_api.collection.record(object_id, fake_api.base_url)
        assert stored[object_id][0] == json.loads(json.dumps(served))
        tags = {t["term"] for t in served["tags"] or []}
        got = query(
            tmp_path,
            "SELECT t.term FROM object_tags JOIN tags t USING (tag_id) WHERE object_id = ?",
            object_id,
        )
        assert {r[0] for r in got} == tags
        people = [(c["constituentID"], c["role"]) for c in served["constituents"] or []]
        got = query(
            tmp_path,
            "SELECT constituent_id, role FROM object_constituents WHERE object_id = ? "
            "ORDER BY position",
            object_id,
        )
        assert got == people
    assert query(tmp_path, "SELECT COUNT(*) FROM departments")[0][0] > 0
    db = await open_db(tmp_path)
    try:
        status = await collect_status(db)
    finally:
        await db.close()
    assert status["objects"] == len(ids)
    assert status["tags"] == query(tmp_path, "SELECT COUNT(*) FROM tags")[0][0] > 0
    assert (status["withdrawn"], status["quarantined"], status["failures"]) == (0, 0, 0)
    assert status["remaining"] == 0 and status["eta_seconds"] == 0
    assert status["last_sync"]["mode"] == "full"
    assert status["last_sync"]["counts"]["new"] == len(ids)


async def test_incremental_fetches_only_changed_and_new(
    tmp_path: Path, fake_api: FakeMetAPI
) -> None:
    settings = make_settings(tmp_path, fake_api)
    await run_sync(settings)
    ids = list(fake_api.collection.object_ids)
    changed = [ids[3], ids[50], ids[120]]
    for object_id in changed:
        fake_api.mutate(object_id, title=f"Retitled {object_id}")
    added = [fake_api.add_object(), fake_api.add_object()]
    mark = len(fake_api.requests)
    report = await run_sync(settings)
    assert report.mode == "incremental" and report.status == "completed"
    assert sorted(object_fetches(fake_api, mark)) == sorted(changed + added)
    assert (report.counts["new"], report.counts["updated"]) == (2, 3)
    assert query(tmp_path, "SELECT title FROM objects WHERE object_id = ?", ids[50]) == [
        (f"Retitled {ids[50]}",)
    ]
    versions = query(tmp_path, "SELECT object_id FROM object_versions ORDER BY object_id")
    assert versions == [(i,) for i in sorted(changed)]
    # no change on the server: only records inside the metadataDate overlap window come again
    mark = len(fake_api.requests)
    report = await run_sync(settings)
    again = object_fetches(fake_api, mark)
    assert sorted(again) == sorted(changed + added)  # those are dated today
    assert report.counts["unchanged"] == len(again) and report.counts["updated"] == 0
    assert query(tmp_path, "SELECT COUNT(*) FROM object_versions") == [(3,)]


async def test_withdrawn_objects_are_kept_and_marked(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    settings = make_settings(tmp_path, fake_api)
    await run_sync(settings)
    gone = fake_api.collection.object_ids[7]
    fake_api.remove_object(gone)
    report = await run_sync(settings)  # the first trustworthy listing without it: a candidate
    assert report.counts["withdrawn"] == 0 and report.counts["withdraw_pending"] == 1
    assert query(tmp_path, "SELECT withdrawn_at FROM objects WHERE object_id = ?", gone) == [
        (None,)
    ]
    report = await run_sync(settings)  # the second one agrees: withdrawn
    assert report.counts["withdrawn"] == 1
    [(action, reason)] = query(
        tmp_path, "SELECT action, reason FROM withdrawal_events WHERE object_id = ?", gone
    )
    assert action == "withdrawn" and "two consecutive trustworthy listings" in reason
    [(withdrawn_at, raw)] = query(
        tmp_path, "SELECT withdrawn_at, raw_json FROM objects WHERE object_id = ?", gone
    )
    assert withdrawn_at is not None and json.loads(raw)["objectID"] == gone
    db = await open_db(tmp_path)
    try:
        status = await collect_status(db)
    finally:
        await db.close()
    assert status["withdrawn"] == 1
    assert status["objects"] == len(fake_api.collection.object_ids)
    # asking for it explicitly: 404 "Not a valid object" is recorded as missing, not a failure
    report = await run_sync(settings, object_ids=[gone])
    assert report.counts["missing"] == 1 and report.counts["failed"] == 0
    assert query(tmp_path, "SELECT object_id FROM missing_objects") == [(gone,)]
    assert query(tmp_path, "SELECT COUNT(*) FROM fetch_failures") == [(0,)]


async def test_bad_records_are_quarantined_and_the_sync_goes_on(
    tmp_path: Path, fake_api: FakeMetAPI
) -> None:
    ids = list(fake_api.collection.object_ids)
    wrong_id, text_id, bad_tags = ids[10], ids[20], ids[30]
    fake_api.mutate(wrong_id, objectID=wrong_id + 1)
    fake_api.mutate(text_id, objectID=str(text_id))
    fake_api.mutate(bad_tags, tags=[{"AAT_URL": "no term"}])
    settings = make_settings(tmp_path, fake_api)
    report = await run_sync(settings)
    assert report.status == "completed"
    assert report.counts["quarantined"] == 3
    assert report.counts["new"] == len(ids) - 3
    rows = query(tmp_path, "SELECT object_id, raw_body, error FROM quarantine ORDER BY 1")
    assert [r[0] for r in rows] == sorted([wrong_id, text_id, bad_tags])
    errors = {r[0]: r[2] for r in rows}
    assert f"expected {wrong_id}" in errors[wrong_id]
    assert "objectID" in errors[text_id]
    assert "tags" in errors[bad_tags]
    assert json.loads(rows[0][1])["objectID"] is not None  # the raw body is kept
    stored = {r[0] for r in query(tmp_path, "SELECT object_id FROM objects")}
    assert stored.isdisjoint({wrong_id, text_id, bad_tags})
    db = await open_db(tmp_path)
    try:
        assert (await collect_status(db))["quarantined"] == 3
    finally:
        await db.close()
    # the API fixes a record: the next pass sees it changed, stores it, leaves quarantine
    fake_api.mutate(wrong_id, objectID=wrong_id)
    report = await run_sync(settings)
    assert wrong_id in {r[0] for r in query(tmp_path, "SELECT object_id FROM objects")}
    assert len(query(tmp_path, "SELECT * FROM quarantine")) == 2


async def test_fault_injection_ends_equal_to_a_clean_run(
    tmp_path: Path, fake_api_factory: Any
) -> None:
    api = await fake_api_factory(n_objects=300, seed=4)
    await run_sync(make_settings(tmp_path / "clean", api))
    clean_requests = len(api.requests)
    # Blocks (403, 429, HTML-200) are rarer: each one rightly cuts the rate in half.
    faults = FaultConfig(
        p403=0.005,
        p429=0.005,
        p500=0.03,
        p503=0.03,
        p_html200=0.005,
        p_drop=0.03,
        p_truncate=0.03,
        p_invalid_json=0.03,
        retry_after=0.01,
        listing_faults=True,
        seed=7,
    )
    api.set_faults(faults)  # the same server: the same records, image URLs included
    settings = make_settings(tmp_path / "faulty", api, max_attempts=8)
    report = await run_sync(settings, limiter=fast_limiter(settings))
    for _ in range(5):  # records that failed after all retries are retried by later passes
        if report.counts["failed"] == 0 and not query(
            tmp_path / "faulty", "SELECT * FROM fetch_failures"
        ):
            break
        conn = sqlite3.connect(tmp_path / "faulty" / "met.sqlite")
        conn.execute("UPDATE fetch_failures SET next_retry_at = '2000-01-01T00:00:00.000Z'")
        conn.commit()
        conn.close()
        report = await run_sync(settings, limiter=fast_limiter(settings))
    assert sum(1 for r in api.requests[clean_requests:] if r.fault) > 20  # faults really happened
    assert query(tmp_path / "faulty", "SELECT COUNT(*) FROM quarantine") == [(0,)]
    assert objects_table(tmp_path / "faulty") == objects_table(tmp_path / "clean")
    assert query(tmp_path / "faulty", "SELECT COUNT(*) FROM object_versions") == [(0,)]


async def test_failed_fetches_are_recorded_and_retried_when_due(
    tmp_path: Path, fake_api: FakeMetAPI
) -> None:
    settings = make_settings(tmp_path, fake_api, max_attempts=1)
    fake_api.set_faults(FaultConfig(p500=0.2, listing_faults=False, seed=3))
    report = await run_sync(settings)
    assert report.status == "completed"
    failed = {r[0] for r in query(tmp_path, "SELECT object_id FROM fetch_failures")}
    assert len(failed) == report.counts["failed"] > 0
    fake_api.set_faults(None)
    mark = len(fake_api.requests)
    await run_sync(settings)  # not due yet: nothing is asked again
    assert object_fetches(fake_api, mark) == []
    conn = sqlite3.connect(tmp_path / "met.sqlite")
    conn.execute("UPDATE fetch_failures SET next_retry_at = '2000-01-01T00:00:00.000Z'")
    conn.commit()
    conn.close()
    mark = len(fake_api.requests)
    report = await run_sync(settings)
    assert set(object_fetches(fake_api, mark)) == failed
    assert query(tmp_path, "SELECT COUNT(*) FROM fetch_failures") == [(0,)]
    assert len(objects_table(tmp_path)) == len(fake_api.collection.object_ids)


async def test_limit_then_resume_by_id_sets(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    settings = make_settings(tmp_path, fake_api)
    report = await run_sync(settings, limit=40)
    assert report.mode == "limit" and report.counts["fetched"] == 40
    first = set(object_fetches(fake_api))
    mark = len(fake_api.requests)
    report = await run_sync(settings)
    rest = object_fetches(fake_api, mark)
    assert first.isdisjoint(rest)
    assert first | set(rest) == set(fake_api.collection.object_ids)
    assert report.mode == "incremental"


async def test_object_ids_and_departments(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    ids = list(fake_api.collection.object_ids)
    settings = make_settings(tmp_path, fake_api)
    report = await run_sync(settings, object_ids=[ids[5], ids[6], ids[5]])
    assert report.mode == "ids" and report.counts["new"] == 2
    assert Counter(object_fetches(fake_api)) == {ids[5]: 1, ids[6]: 1}  # each asked once
    dept = fake_api.collection.department_of(ids[0])
    in_dept = {i for i in ids if fake_api.collection.department_of(i) == dept}
    report = await run_sync(settings, departments=[dept])
    assert report.mode == "departments" and report.counts["withdrawn"] == 0
    stored = {r[0] for r in query(tmp_path, "SELECT object_id FROM objects")}
    assert stored == in_dept | {ids[5], ids[6]}
    assert query(tmp_path, "SELECT COUNT(*) FROM objects WHERE withdrawn_at IS NOT NULL") == [(0,)]
    # a departments-only pass is not a completed pass: the next one fetches everything else
    mark = len(fake_api.requests)
    report = await run_sync(settings)
    assert set(object_fetches(fake_api, mark)) == set(ids) - stored
    assert len(objects_table(tmp_path)) == len(ids)


async def test_full_refetches_everything(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    settings = make_settings(tmp_path, fake_api)
    await run_sync(settings)
    mark = len(fake_api.requests)
    report = await run_sync(settings, full=True)
    assert report.mode == "full"
    assert sorted(object_fetches(fake_api, mark)) == list(fake_api.collection.object_ids)
    assert report.counts["unchanged"] == len(fake_api.collection.object_ids)


async def test_stop_event_commits_and_marks_interrupted(
    tmp_path: Path, fake_api_factory: Any
) -> None:
    api = await fake_api_factory(n_objects=300, faults=FaultConfig(latency=0.01))
    settings = make_settings(tmp_path, api, concurrency=4, batch_size=10)
    stop = asyncio.Event()
    task = asyncio.create_task(run_sync(settings, stop_event=stop))
    while len(object_fetches(api)) < 60:
        await asyncio.sleep(0.01)
    stop.set()
    report = await task
    assert report.status == "interrupted"
    stored = query(tmp_path, "SELECT COUNT(*) FROM objects")[0][0]
    assert stored == report.counts["fetched"] == report.counts["new"] > 0
    assert stored < 300
    # everything asked was stored: in-flight requests finished and were committed
    assert stored == len(object_fetches(api))
    assert query(tmp_path, "SELECT status FROM sync_runs") == [("interrupted",)]
    mark = len(api.requests)
    report = await run_sync(settings)
    assert report.status == "completed"
    assert len(object_fetches(api, mark)) == 300 - stored
    assert len(objects_table(tmp_path)) == 300


async def test_learned_rate_is_persisted_and_reused(
    tmp_path: Path, fake_api: FakeMetAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_api.set_firewall(FirewallConfig(max_requests=30, window=0.5, block=0.3))
    settings = make_settings(tmp_path, fake_api, rate=200.0)
    await run_sync(settings, limiter=fast_limiter(settings))
    learned = query(tmp_path, "SELECT value FROM harvester_state WHERE key = 'api.learned_rate'")
    assert learned and 0 < float(learned[0][0]) < 200.0
    saved = json.loads(
        query(tmp_path, "SELECT value FROM harvester_state WHERE key = 'limiter.api'")[0][0]
    )
    assert saved["blocks"] >= 1 and saved["block_rate"] < 200.0 and saved["block_seconds"] > 0
    seen: list[Any] = []
    import met_harvester.sync as sync_module

    real_client = sync_module.MetClient

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("state"))
        return real_client(*args, **kwargs)

    monkeypatch.setattr(sync_module, "MetClient", spy)
    fake_api.set_firewall(None)
    await run_sync(settings, full=True)
    assert len(seen) == 1 and seen[0].current_rate == pytest.approx(saved["current_rate"])
    assert seen[0].block_seconds == pytest.approx(saved["block_seconds"])
    db = await open_db(tmp_path)
    try:
        status = await collect_status(db)
    finally:
        await db.close()
    assert status["rate"]["ceiling"] == 200.0 and status["rate"]["learned"] is not None
    assert status["limiter"]["api"]["blocks"] == saved["blocks"]


async def test_listing_unavailable_is_fatal(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    fake_api.set_faults(FaultConfig(p503=1.0, listing_faults=True))
    settings = make_settings(tmp_path, fake_api, max_attempts=2)
    with pytest.raises(SyncError) as info:
        await run_sync(settings)
    assert "\n" not in str(info.value)
    assert query(tmp_path, "SELECT mode, status, error IS NOT NULL FROM sync_runs") == [
        ("full", "failed", 1)
    ]


async def test_unwritable_database_is_fatal(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SyncError, match="cannot open the database"):
        await run_sync(make_settings(blocker / "data", fake_api))


async def test_listing_that_lost_most_ids_withdraws_nothing(
    tmp_path: Path, fake_api: FakeMetAPI
) -> None:
    settings = make_settings(tmp_path, fake_api)
    await run_sync(settings)
    for object_id in list(fake_api.collection.object_ids)[:150]:
        fake_api.remove_object(object_id)
    report = await run_sync(settings)
    assert report.counts["withdrawn"] == 0 and report.counts["withdraw_skipped"] == 150
    assert query(tmp_path, "SELECT COUNT(*) FROM objects WHERE withdrawn_at IS NOT NULL") == [(0,)]


async def test_store_functions_are_exposed(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    try:
        assert await runs.changes_since(db) is None
    finally:
        await db.close()


DOCS_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


async def test_schema_doc_covers_every_column_and_its_queries_run(
    tmp_path: Path, fake_api: FakeMetAPI
) -> None:
    import re

    text = DOCS_SCHEMA.read_text(encoding="utf-8")
    await run_sync(make_settings(tmp_path, fake_api))
    conn = connect_sync(tmp_path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            assert f"`{table}`" in text, f"table {table} is not documented"
            for column in (r[1] for r in conn.execute(f"PRAGMA table_info({table})")):
                assert column in text, f"column {table}.{column} is not documented"
        queries = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
        assert len(queries) >= 8
        results = [conn.execute(sql).fetchall() for sql in queries]
    finally:
        conn.close()
    by_department, top_tags = results[0], results[1]
    assert sum(row[1] for row in by_department) == len(fake_api.collection.object_ids)
    tag_counts = [row[1] for row in top_tags]
    assert tag_counts and tag_counts == sorted(tag_counts, reverse=True) and min(tag_counts) > 0
    assert len(results[4]) == 5  # the raw-JSON query reads five records


async def test_cancelled_sync_leaves_no_half_written_batch(
    tmp_path: Path, fake_api_factory: Any
) -> None:
    api = await fake_api_factory(n_objects=300, seed=5, faults=FaultConfig(latency=0.005))
    settings = make_settings(tmp_path, api, concurrency=8, batch_size=7)
    task = asyncio.create_task(run_sync(settings))
    while len(object_fetches(api)) < 100:
        await asyncio.sleep(0.002)
    task.cancel()  # what the daemon does when the grace period is over
    with pytest.raises(asyncio.CancelledError):
        await task
    assert query(tmp_path, "SELECT status FROM sync_runs") == [("interrupted",)]
    stored = [r[0] for r in query(tmp_path, "SELECT object_id FROM objects")]
    assert 0 < len(stored) < 300
    for object_id in stored:  # every stored record has all of its tags and constituents
        served = api.collection.record(object_id, api.base_url)
        tags = query(
            tmp_path,
            "SELECT COUNT(*) FROM object_tags WHERE object_id = ? AND source = 'api'",
            object_id,
        )
        assert tags == [(len({t["term"] for t in served["tags"] or []}),)]
        people = query(
            tmp_path, "SELECT COUNT(*) FROM object_constituents WHERE object_id = ?", object_id
        )
        assert people == [(len(served["constituents"] or []),)]
    api.set_faults(None)
    report = await run_sync(settings)
    assert report.status == "completed"
    assert len(objects_table(tmp_path)) == 300


async def test_images_follow_the_records(tmp_path: Path, fake_api_factory: Any) -> None:
    api = await fake_api_factory(n_objects=40, seed=6)
    settings = make_settings(
        tmp_path, api, images=True, image_hosts=[api.image_host], image_rate=1000.0
    )
    report = await run_sync(settings)
    assert report.status == "completed" and report.images is not None
    expected = query(
        tmp_path,
        "SELECT COUNT(*) FROM objects WHERE is_public_domain = 1 "
        "AND COALESCE(primary_image_small, primary_image) IS NOT NULL",
    )[0][0]
    assert expected > 0
    assert query(tmp_path, "SELECT COUNT(*) FROM images WHERE status = 'ok'") == [(expected,)]
    assert report.as_dict()["images"]  # JSON-ready summary of the image pass
