"""save_* functions on a real SQLite file: recorded JSON in, exact rows out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from harvester_support import MET_SAMPLES, samples_required

from met_harvester.db import listing, open_db, records, runs, state, trouble, withdrawal
from met_harvester.db.versions import version_text
from met_harvester.models import content_sha256, parse_body, parse_object

needs_samples = samples_required(MET_SAMPLES / "objects")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await open_db(tmp_path / "data")
    yield conn
    await conn.close()


def fetched(data: dict[str, Any], body: str | None = None) -> records.FetchedRecord:
    body = body if body is not None else json.dumps(data)
    record, decoded = parse_body(body, data["objectID"])
    return records.FetchedRecord(record=record, data=decoded, body=body)


def sample(name: str, folder: str = "objects") -> tuple[str, dict[str, Any]]:
    body = (MET_SAMPLES / folder / name).read_text(encoding="utf-8")
    return body, json.loads(body)


async def rows(db: aiosqlite.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.execute(sql, params) as cursor:
        return [tuple(r) for r in await cursor.fetchall()]


def record(object_id: int, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "objectID": object_id,
        "title": f"Object {object_id}",
        "department": "Drawings and Prints",
        "isPublicDomain": True,
        "primaryImageSmall": f"https://images.example/{object_id}.jpg",
        "tags": [{"term": "Women", "AAT_URL": "http://aat/1", "Wikidata_URL": ""}],
        "constituents": [{"constituentID": 5, "role": "Artist", "name": "A", "gender": ""}],
        "metadataDate": "2024-01-01T00:00:00Z",
    }
    data.update(fields)
    return data


@needs_samples
async def test_every_sample_is_stored_exactly(db: aiosqlite.Connection) -> None:
    paths = sorted((MET_SAMPLES / "objects").glob("*.json"))
    items = [fetched(json.loads(p.read_text()), p.read_text()) for p in paths]
    counts = await records.save_objects(db, items)
    await db.commit()
    assert counts == records.SaveCounts(new=len(paths), updated=0, unchanged=0)
    for path in paths:
        body = path.read_text()
        [(raw, sha)] = await rows(
            db, "SELECT raw_json, content_sha256 FROM objects WHERE object_id = ?", int(path.stem)
        )
        assert raw == body  # exactly as received
        assert json.loads(raw) == json.loads(body)
        assert sha == content_sha256(json.loads(body))


@needs_samples
async def test_typed_columns_tags_and_constituents(db: aiosqlite.Connection) -> None:
    body, data = sample("352204.json")
    await records.save_objects(db, [fetched(data, body)])
    await db.commit()
    [row] = await rows(
        db,
        "SELECT department, classification, object_name, title, culture, is_public_domain, "
        "is_highlight, artist_display_name, artist_gender, object_begin_date, object_end_date, "
        "primary_image, primary_image_small, additional_images, accession_year, "
        "accession_number, metadata_date, withdrawn_at FROM objects WHERE object_id = 352204",
    )
    assert row == (
        "Drawings and Prints", "Prints", "Print", "The Letter", None, 0, 0, "Mary Cassatt",
        "Female", 1890, 1891, None, None, "[]", "1916", "16.3.2", "2025-03-06T04:54:30Z", None,
    )  # fmt: skip
    assert await rows(
        db,
        "SELECT t.term, t.aat_url, t.wikidata_url, ot.source FROM object_tags ot "
        "JOIN tags t USING (tag_id) WHERE ot.object_id = 352204",
    ) == [
        ("Women", "http://vocab.getty.edu/page/aat/300025943", "https://www.wikidata.org/wiki/Q467", "api")
    ]  # fmt: skip
    assert await rows(
        db,
        "SELECT oc.position, oc.role, c.constituent_id, c.name, c.gender FROM "
        "object_constituents oc JOIN constituents c USING (constituent_id) "
        "WHERE oc.object_id = 352204 ORDER BY oc.position",
    ) == [(0, "Artist", 161757, "Mary Cassatt", "Female"), (1, "Printer", 230077, "Monsieur LeRoy", None)]  # fmt: skip


@needs_samples
async def test_legacy_bodies_with_string_tags_and_idless_constituents(
    db: aiosqlite.Connection,
) -> None:
    body, data = sample("10188.json", "objects-legacy")
    await records.save_objects(db, [fetched(data, body)])
    await db.commit()
    terms = await rows(
        db,
        "SELECT t.term FROM object_tags JOIN tags t USING (tag_id) WHERE object_id = 10188 "
        "ORDER BY t.term",
    )
    assert terms == [("Landscapes",), ("Spring",), ("Trees",)]
    [(cid, name, role)] = await rows(
        db,
        "SELECT c.constituent_id, c.name, oc.role FROM object_constituents oc "
        "JOIN constituents c USING (constituent_id) WHERE oc.object_id = 10188",
    )
    assert cid < 0 and name == "Robert Frederick Blum" and role == "Artist"


@needs_samples
async def test_changed_record_keeps_previous_version(db: aiosqlite.Connection) -> None:
    old_body, old = sample("45734_20200207T155059677Z.json", "objects-versions")
    new_body, new = sample("45734.json")
    await records.save_objects(db, [fetched(old, old_body)], now="2020-02-08T00:00:00.000Z")
    await db.commit()
    counts = await records.save_objects(
        db, [fetched(new, new_body)], now="2026-01-01T00:00:00.000Z"
    )
    await db.commit()
    assert counts == records.SaveCounts(new=0, updated=1, unchanged=0)
    [(raw, first_seen, fetched_at)] = await rows(
        db, "SELECT raw_json, first_seen_at, fetched_at FROM objects WHERE object_id = 45734"
    )
    assert raw == new_body
    assert first_seen == "2020-02-08T00:00:00.000Z"
    assert fetched_at == "2026-01-01T00:00:00.000Z"
    versions = await rows(
        db,
        "SELECT raw_json, raw_json_zlib, content_sha256, fetched_at, replaced_at, source "
        "FROM object_versions WHERE object_id = 45734",
    )
    [(plain, packed, *rest)] = versions
    assert plain == "" and len(packed) < len(old_body.encode())  # stored compressed
    assert version_text(plain, packed) == old_body  # exactly the text received
    assert rest == [
        content_sha256(old), "2020-02-08T00:00:00.000Z", "2026-01-01T00:00:00.000Z", "api"
    ]  # fmt: skip
    # the same content again: unchanged, no new version
    counts = await records.save_objects(db, [fetched(new, json.dumps(new, indent=1))])
    await db.commit()
    assert counts == records.SaveCounts(new=0, updated=0, unchanged=1)
    assert len(await rows(db, "SELECT * FROM object_versions")) == 1


async def test_tags_are_replaced_but_csv_tags_stay(db: aiosqlite.Connection) -> None:
    await records.save_objects(db, [fetched(record(1, tags=[{"term": "Women"}, {"term": "Men"}]))])
    await db.execute("INSERT INTO tags (term) VALUES ('FromCsv')")
    await db.execute(
        "INSERT INTO object_tags (object_id, tag_id, source) "
        "SELECT 1, tag_id, 'csv' FROM tags WHERE term = 'FromCsv'"
    )
    await records.save_objects(
        db, [fetched(record(1, tags=[{"term": "Men"}, "Boys", {"term": " "}]))]
    )
    await db.commit()
    got = await rows(
        db,
        "SELECT t.term, ot.source FROM object_tags ot JOIN tags t USING (tag_id) "
        "WHERE object_id = 1 ORDER BY ot.source, t.term",
    )
    assert got == [("Boys", "api"), ("Men", "api"), ("FromCsv", "csv")]
    # tags are never deleted from the vocabulary
    assert len(await rows(db, "SELECT * FROM tags")) == 4


async def test_duplicate_ids_in_one_batch_keep_the_last(db: aiosqlite.Connection) -> None:
    counts = await records.save_objects(
        db, [fetched(record(3, title="first")), fetched(record(3, title="second"))]
    )
    await db.commit()
    assert counts.new == 1
    assert await rows(db, "SELECT title FROM objects") == [("second",)]


async def test_missing_never_withdraws_a_stored_object(db: aiosqlite.Connection) -> None:
    await records.save_objects(db, [fetched(record(1)), fetched(record(2))])
    await trouble.save_failures(db, [trouble.FailedFetch(2, 503, "boom")])
    await trouble.save_missing(
        db,
        [trouble.MissingObject(2, 404, "Not a valid object"), trouble.MissingObject(9, 404, None)],
        now="2026-01-01T00:00:00.000Z",
    )
    await db.commit()
    # Only trustworthy listings withdraw; a 404 is recorded as missing and nothing more.
    assert await rows(db, "SELECT object_id, withdrawn_at FROM objects ORDER BY 1") == [
        (1, None),
        (2, None),
    ]
    assert await rows(db, "SELECT object_id, http_status, message FROM missing_objects") == [
        (2, 404, "Not a valid object"),
        (9, 404, None),
    ]
    assert await rows(db, "SELECT * FROM fetch_failures") == []
    # it comes back: stored again, un-withdrawn, no longer missing
    await records.save_objects(db, [fetched(record(2))])
    await db.commit()
    assert await rows(db, "SELECT withdrawn_at FROM objects WHERE object_id = 2") == [(None,)]
    assert await rows(db, "SELECT object_id FROM missing_objects") == [(9,)]


async def test_failures_back_off_exponentially_and_clear(db: aiosqlite.Connection) -> None:
    t0 = "2026-01-01T00:00:00.000Z"
    for _ in range(3):
        await trouble.save_failures(db, [trouble.FailedFetch(4, None, "timeout")], now=t0)
    await db.commit()
    [(attempts, status, error, next_retry)] = await rows(
        db, "SELECT attempts, last_status, last_error, next_retry_at FROM fetch_failures"
    )
    assert (attempts, status, error) == (3, None, "timeout")
    assert next_retry == "2026-01-01T00:04:00.000Z"  # 60 s * 2^(3-1)
    assert trouble.retry_delay(1) == 60.0
    assert trouble.retry_delay(100) == trouble.FAILURE_RETRY_MAX_SECONDS
    await records.save_objects(db, [fetched(record(4))])
    await db.commit()
    assert await rows(db, "SELECT * FROM fetch_failures") == []


async def test_quarantine_keeps_body_and_reason(db: aiosqlite.Connection) -> None:
    body = '{"objectID": "5"}'
    await trouble.save_quarantine(db, [trouble.QuarantinedRecord(5, body, "objectID: bad", 200)])
    await trouble.save_quarantine(db, [trouble.QuarantinedRecord(5, body, "objectID: worse", 200)])
    await db.commit()
    [(raw, error, status)] = await rows(db, "SELECT raw_body, error, http_status FROM quarantine")
    assert (raw, error, status) == (body, "objectID: worse", 200)
    await records.save_objects(db, [fetched(record(5))])
    await db.commit()
    assert await rows(db, "SELECT * FROM quarantine") == []


async def test_withdraw_and_listing_diff(db: aiosqlite.Connection) -> None:
    await records.save_objects(db, [fetched(record(i)) for i in (1, 2, 3)])
    await trouble.save_missing(
        db, [trouble.MissingObject(10, 404, None)], now="2026-01-01T00:00:00Z"
    )
    await trouble.save_quarantine(db, [trouble.QuarantinedRecord(11, "{}", "bad")])
    await trouble.save_failures(
        db, [trouble.FailedFetch(12, 500, "x")], now="2026-01-01T00:00:00.000Z"
    )
    await trouble.save_failures(
        db, [trouble.FailedFetch(13, 500, "x")], now="2030-01-01T00:00:00.000Z"
    )
    await db.commit()
    assert await listing.load_listing(db, [2, 3, 3, 4, 10, 11, 12, 13, 14]) == 8
    assert await listing.vanished_ids(db) == [1]
    assert await withdrawal.withdraw(db, [1], now="2026-02-01T00:00:00.000Z") == 1
    assert await withdrawal.withdraw(db, [1]) == 0  # already withdrawn
    await db.commit()
    assert await rows(db, "SELECT object_id, at, action, reason FROM withdrawal_events") == [
        (1, "2026-02-01T00:00:00.000Z", "withdrawn", withdrawal.WITHDRAWN_REASON)
    ]
    assert await listing.vanished_ids(db) == []
    now = "2026-06-01T00:00:00.000Z"
    got = await listing.unfetched_listed_ids(db, now=now, missing_recheck_before="2025-12-01")
    assert got == [4, 12, 14]  # 10 missing recently, 11 quarantined, 13 not due yet
    got = await listing.unfetched_listed_ids(db, now=now, missing_recheck_before="2026-05-01")
    assert got == [4, 10, 12, 14]  # the 404 is old enough to ask again
    assert await listing.due_failure_ids(db, now=now) == [12]
    assert await listing.listed_ids(db) == [2, 3, 4, 10, 11, 12, 13, 14]


async def test_runs_and_changes_since(db: aiosqlite.Connection) -> None:
    assert await runs.changes_since(db) is None
    first = await runs.start_run(db, "full", now="2026-01-01T00:00:00.000Z")
    assert await runs.mark_stale_runs_interrupted(db) == 1
    assert await runs.changes_since(db) == "2026-01-01T00:00:00.000Z"  # unfinished: its start
    second = await runs.start_run(db, "incremental", now="2026-01-02T00:00:00.000Z")
    await runs.finish_run(db, second, "completed", {"fetched": 3})
    await runs.start_run(db, "limit", now="2026-01-03T00:00:00.000Z")
    await runs.mark_stale_runs_interrupted(db)
    later = await runs.start_run(db, "incremental", now="2026-01-04T00:00:00.000Z")
    await runs.finish_run(db, later, "interrupted", {})
    assert await runs.changes_since(db) == "2026-01-02T00:00:00.000Z"
    last = await runs.last_run(db)
    assert last is not None
    assert (last["run_id"], last["mode"], last["status"]) == (later, "incremental", "interrupted")
    statuses = await rows(db, "SELECT run_id, status FROM sync_runs ORDER BY run_id")
    assert statuses == [(first, "interrupted"), (second, "completed"), (3, "interrupted"), (4, "interrupted")]  # fmt: skip


async def test_state_and_departments(db: aiosqlite.Connection) -> None:
    assert await state.get_state(db, "api.learned_rate") is None
    await state.set_state(db, "api.learned_rate", 1.25)
    await state.set_state(db, "api.learned_rate", 0.9)
    await state.set_state(db, "junk", "abc")
    await db.commit()
    assert await state.get_state_float(db, "api.learned_rate") == 0.9
    assert await state.get_state_float(db, "junk") is None
    n = await records.save_departments(
        db, [{"departmentId": 1, "displayName": "American Decorative Arts"}, {"bad": 1}]
    )
    await db.commit()
    assert n == 1
    assert await rows(db, "SELECT department_id, display_name FROM departments") == [
        (1, "American Decorative Arts")
    ]


async def test_csv_only_ids(db: aiosqlite.Connection) -> None:
    await records.save_objects(db, [fetched(record(1))])
    for object_id in (1, 2):
        await db.execute(
            "INSERT INTO csv_objects (object_id, raw_row, row_sha256, first_seen_at, "
            "imported_at) VALUES (?, '{}', 'x', 'now', 'now')",
            (object_id,),
        )
    await db.commit()
    assert await listing.csv_only_ids(db, [1, 2, 3]) == {2}


def test_parse_object_used_by_fetched_helper() -> None:
    assert parse_object(record(9), 9).title == "Object 9"


async def test_status_eta_is_honest_for_a_first_full_mirror(db: aiosqlite.Connection) -> None:
    from met_harvester.status import collect_status, format_status

    await records.save_objects(db, [fetched(record(i)) for i in range(1, 11)])
    await trouble.save_failures(db, [trouble.FailedFetch(20, 503, "outage")])
    await state.set_state(db, state.LISTING_TOTAL_KEY, 500_000)
    await state.set_state(db, state.RATE_KEYS["ceiling"], 80)
    await state.set_state(db, state.RATE_KEYS["current"], 1.2)
    await state.set_state(db, state.RATE_KEYS["learned"], 1.0)
    run = await runs.start_run(db, "full")
    await runs.update_run_counts(db, run, {"fetched": 10})
    await db.commit()
    status = await collect_status(db)
    assert status["objects"] == 10 and status["failures"] == 1
    # The failed id 20 is one of the 499,990 listed ids not yet stored: counted once.
    assert status["remaining"] == 500_000 - 10
    assert status["eta_seconds"] == pytest.approx(499_990.0)  # at the learned 1/s: ~5.8 days
    assert status["rate"] == {"learned": 1.0, "current": 1.2, "ceiling": 80.0}
    assert status["last_sync"]["status"] == "running"
    text = format_status(status)
    assert "5d 18h" in text and "learned 1/s" in text and "ceiling 80/s" in text
