"""What makes an object missing or withdrawn: an incident (truncated listing, HTML 404s) changes
nothing; only two consecutive trustworthy listings withdraw, and each decision is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
from harvester_support import FakeApiFactory
from test_sync import make_settings, objects_table, query

from met_harvester.db import open_db, records, withdrawal
from met_harvester.models import parse_body
from met_harvester.sync import run_sync
from met_harvester.testing import FaultConfig


async def test_incident_withdraws_nothing_and_a_clean_sync_gives_the_exact_mirror(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    api = await fake_api_factory(n_objects=300, seed=14)
    mirror = tmp_path / "mirror"
    settings = make_settings(mirror, api)
    assert (await run_sync(settings)).counts["new"] == 300
    # The incident: 30% of the listing left out (its total still 300), 10% HTML 404 pages.
    api.set_faults(FaultConfig(listing_truncate=0.3, p_html404=0.1, seed=3))
    mark = len(api.requests)
    for full in (True, False):  # a refetch of everything, then an incremental pass
        report = await run_sync(settings, full=full)
        assert report.status == "completed"
        assert report.counts["listing_trusted"] == 0 and report.counts["withdrawn"] == 0
        assert report.counts["withdraw_skipped"] > 50 and report.counts["missing"] == 0
    html_404s = [r for r in api.requests[mark:] if r.fault == "p_html404"]
    assert len(html_404s) > 10  # the pages were served, and retried
    assert query(mirror, "SELECT COUNT(*) FROM objects WHERE withdrawn_at IS NOT NULL") == [(0,)]
    assert query(mirror, "SELECT COUNT(*) FROM missing_objects") == [(0,)]
    assert query(mirror, "SELECT COUNT(*) FROM withdrawal_candidates") == [(0,)]
    checks = query(
        mirror, "SELECT ids, total, trusted, reason FROM listing_checks WHERE kind = 'full'"
    )
    assert checks[0][:3] == (300, 300, 1)
    for ids, total, trusted, reason in checks[1:]:
        assert 150 < ids < 260 and total == 300 and trusted == 0
        assert f"{ids:,} ids but its total says 300" in reason
    # The incident ends: a clean pass, and the mirror is exactly a fresh mirror of the API.
    api.set_faults(None)
    report = await run_sync(settings)
    assert report.counts["listing_trusted"] == 1 and report.counts["withdrawn"] == 0
    fresh = tmp_path / "fresh"
    await run_sync(make_settings(fresh, api))
    assert objects_table(mirror) == objects_table(fresh)
    assert query(mirror, "SELECT COUNT(*) FROM fetch_failures") == [(0,)]


async def test_a_listing_shrunk_past_the_margin_withdraws_nothing_until_allowed(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    api = await fake_api_factory(n_objects=200, seed=15)
    settings = make_settings(tmp_path, api)
    await run_sync(settings)
    gone = list(api.collection.object_ids)[:6]  # 3%: over the default 2% margin
    for object_id in gone:
        api.remove_object(object_id)
    report = await run_sync(settings)
    assert report.counts["listing_trusted"] == 0 and report.counts["withdraw_skipped"] == 6
    [(reason,)] = query(tmp_path, "SELECT reason FROM listing_checks WHERE trusted = 0")
    assert "3.0% smaller than the last trustworthy listing (margin 2.0%)" in reason
    wider = make_settings(tmp_path, api, listing_margin=0.05)
    report = await run_sync(wider)  # trusted now: the ids become candidates
    assert report.counts["withdrawn"] == 0 and report.counts["withdraw_pending"] == 6
    report = await run_sync(wider)  # a second trustworthy listing agrees
    assert report.counts["withdrawn"] == 6
    withdrawn = query(tmp_path, "SELECT object_id FROM objects WHERE withdrawn_at IS NOT NULL")
    assert sorted(r[0] for r in withdrawn) == sorted(gone)
    events = query(tmp_path, "SELECT object_id, action, run_id FROM withdrawal_events")
    last_run = query(tmp_path, "SELECT MAX(run_id) FROM sync_runs")[0][0]
    assert sorted(events) == sorted((i, "withdrawn", last_run) for i in gone)


def test_judge_listing() -> None:
    judge = withdrawal.judge_listing
    assert judge("full", 1000, 1000, None, 0.02).trusted
    assert judge("full", 980, 980, 1000, 0.02).trusted  # exactly the margin
    shrunk = judge("full", 979, 979, 1000, 0.02)
    assert not shrunk.trusted and "2.1% smaller" in (shrunk.reason or "")
    assert judge("full", 1100, 1100, 1000, 0.02).trusted  # growing is fine
    truncated = judge("full", 700, 1000, 1000, 0.02)
    assert not truncated.trusted and "700 ids but its total says 1,000" in truncated.describe()
    assert not judge("full", 10, None, None, 0.02).trusted  # no total: cannot be checked


async def test_an_object_that_comes_back_is_restored_with_a_record(tmp_path: Path) -> None:
    db: aiosqlite.Connection = await open_db(tmp_path)
    try:
        body = '{"objectID": 5, "title": "Back"}'
        record, data = parse_body(body, 5)
        item = records.FetchedRecord(record=record, data=data, body=body)
        await records.save_objects(db, [item])
        assert await withdrawal.withdraw(db, [5], run_id=1, now="2026-01-01T00:00:00.000Z") == 1
        await records.save_objects(db, [item], now="2026-02-01T00:00:00.000Z")
        await db.commit()
        async with db.execute(
            "SELECT at, action, reason FROM withdrawal_events ORDER BY event_id"
        ) as cursor:
            events: list[Any] = [tuple(r) async for r in cursor]
        async with db.execute("SELECT withdrawn_at FROM objects") as cursor:
            assert [tuple(r) async for r in cursor] == [(None,)]
    finally:
        await db.close()
    assert events == [
        ("2026-01-01T00:00:00.000Z", "withdrawn", withdrawal.WITHDRAWN_REASON),
        ("2026-02-01T00:00:00.000Z", "restored", withdrawal.RESTORED_REASON),
    ]
