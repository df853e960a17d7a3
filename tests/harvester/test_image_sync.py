"""The image pass over real HTTP on loopback: storing, dedupe, refusals of hostile bodies,
allowlist enforcement with canaries, incremental runs, history, conditional requests, kill -9."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harvester_support import FakeApiFactory
from image_server import (
    HTML_PAGE,
    ImageServer,
    Route,
    image_rows,
    make_jpeg,
    make_noisy_jpeg,
    make_png,
    png_bomb,
    put_objects,
    sha256,
    test_settings,
)

from met_harvester.db.connection import open_db
from met_harvester.db.counts import image_counts
from met_harvester.db.state import get_state_float
from met_harvester.images.blobstore import BlobStore, hash_file
from met_harvester.images.sync import LEARNED_RATE_KEY, sync_images
from met_harvester.metrics import HarvesterMetrics
from met_harvester.settings import HarvesterSettings
from met_harvester.testing import FakeMetAPI

HERE = Path(__file__).resolve().parent


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    srv = await ImageServer().start()
    yield srv
    await srv.stop()


@pytest.fixture
async def canary() -> AsyncIterator[ImageServer]:
    """A second server on another loopback address: every refusal must leave it untouched."""
    srv = await ImageServer(host="127.0.0.2").start()
    yield srv
    assert srv.requests == [], f"canary was contacted: {srv.requests}"
    await srv.stop()


async def run(settings: HarvesterSettings, **kwargs: object):  # type: ignore[no-untyped-def]
    db = await open_db(settings.data_dir)
    try:
        return await sync_images(db, settings, **kwargs)  # type: ignore[arg-type]
    finally:
        await db.close()


async def image_learned_rate(data_dir: Path) -> float | None:
    """The image pool's learned rate as persisted for the next run (None: never throttled)."""
    db = await open_db(data_dir)
    try:
        return await get_state_float(db, LEARNED_RATE_KEY)
    finally:
        await db.close()


def blob_files(data_dir: Path) -> dict[str, Path]:
    return dict(BlobStore.for_data_dir(data_dir).iter_blobs())


def assert_store_sound(data_dir: Path) -> None:
    """Every visible blob's bytes hash to its name."""
    for name, path in blob_files(data_dir).items():
        assert hash_file(path)[0] == name


async def test_stores_images_and_dedupes_identical_bytes(
    tmp_path: Path, server: ImageServer
) -> None:
    same = make_jpeg(1)
    server.routes = {
        "/a/small.jpg": Route(same),
        "/b/small.jpg": Route(same),  # identical bytes at another URL
        "/c/orig.png": Route(make_png(3), content_type="image/png"),
        "/d/cmyk.jpg": Route(_cmyk_jpeg()),
        "/e/prog.jpg": Route(make_jpeg(5, (120, 90), progressive=True)),
    }
    put_objects(
        tmp_path,
        [
            (1, server.url("/a/small.jpg"), server.url("/a/orig.jpg"), None),
            (2, server.url("/b/small.jpg"), None, None),
            (3, None, server.url("/c/orig.png"), None),  # falls back to primaryImage
            (4, server.url("/d/cmyk.jpg"), None, None),
            (5, server.url("/e/prog.jpg"), None, None),
        ],
    )
    put_objects(tmp_path, [(6, server.url("/a/small.jpg"), None, None)], public_domain=False)
    metrics = HarvesterMetrics()
    report = await run(test_settings(tmp_path, [server.netloc]), metrics=metrics)

    assert report.queued == 5 and report.failed == 0 and report.refused == 0
    assert report.stored == 4 and report.deduplicated == 1
    rows = {r["object_id"]: r for r in image_rows(tmp_path)}
    assert set(rows) == {1, 2, 3, 4, 5}  # not the non-public-domain object 6
    assert rows[1]["sha256"] == rows[2]["sha256"] == sha256(same)
    assert rows[3]["url"].endswith("/c/orig.png") and rows[3]["format"] == "PNG"
    assert rows[4]["mode"] == "CMYK" and (rows[5]["width"], rows[5]["height"]) == (120, 90)
    assert all(r["status"] == "ok" and r["variant"] == "small" for r in rows.values())
    assert len(blob_files(tmp_path)) == 4
    assert_store_sound(tmp_path)
    assert server.count("/a/orig.jpg") == 0
    assert {h.get("Accept-Encoding") for _m, _p, h in server.requests} == {"identity"}
    # Nothing but the database and sha256-named blobs: no URL became a path.
    names = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    blobs = {n for n in names if re.fullmatch(r"images/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}", n)}
    assert len(blobs) == 4 and names - blobs <= {"met.sqlite", "met.sqlite-wal", "met.sqlite-shm"}
    assert metrics.images_stored._value.get() == 4
    depth = metrics.registry.get_sample_value("met_queue_depth", {"pool": "images"})
    assert depth == 0  # nothing left waiting once the pass is done
    db = await open_db(tmp_path)
    status = await image_counts(db)
    await db.close()
    assert status["images"] == 4 and status["image_failures"] == 0


def _cmyk_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("CMYK", (30, 20), (10, 200, 30, 5)).save(buf, "JPEG")
    return buf.getvalue()


async def test_variants_and_additional_images(tmp_path: Path, server: ImageServer) -> None:
    server.routes = {f"/{n}.jpg": Route(make_jpeg(n)) for n in range(10, 14)}
    put_objects(
        tmp_path,
        [
            (
                1,
                server.url("/10.jpg"),
                server.url("/11.jpg"),
                [server.url("/12.jpg"), server.url("/13.jpg")],
            )
        ],
    )
    settings = test_settings(
        tmp_path, [server.netloc], image_variant="original", additional_images=True
    )
    report = await run(settings)
    assert report.stored == 3
    rows = image_rows(tmp_path)
    assert [(r["role"], r["position"], r["variant"], r["url"].rsplit("/", 1)[1]) for r in rows] == [
        ("primary", 0, "original", "11.jpg"),
        ("additional", 0, "original", "12.jpg"),
        ("additional", 1, "original", "13.jpg"),
    ]
    assert server.count("/10.jpg") == 0


# --- hostile bodies -----------------------------------------------------------------------


async def test_hostile_bodies_are_refused_and_never_stored(
    tmp_path: Path, server: ImageServer
) -> None:
    good = make_jpeg(7, (200, 150))
    png = make_png(8, (300, 200))
    cases = {
        "/html-200.jpg": Route(HTML_PAGE, content_type="text/html"),
        "/html-as-jpeg.jpg": Route(HTML_PAGE, content_type="image/jpeg"),
        "/html-403.jpg": Route(HTML_PAGE, content_type="text/html", status=403),
        "/cut.jpg": Route(good, cut_after=len(good) // 2),  # connection dropped mid-body
        "/short.jpg": Route(good[: len(good) - 40]),  # consistent length, truncated JPEG
        "/short.png": Route(png[: len(png) - 2], content_type="image/png"),
        "/bomb.png": Route(png_bomb(), content_type="image/png"),
        "/big.png": Route(make_png(9, (1200, 1000)), content_type="image/png"),  # > pixel cap
        "/huge-length.jpg": Route(good, declared_length=10**12),
        "/noise.jpg": Route(os.urandom(5000)),
        "/gone.jpg": Route(b"nope", status=404, content_type="text/plain"),
        "/empty.jpg": Route(b""),
        "/ok-wrong-type.jpg": Route(good, content_type="application/octet-stream"),
    }
    server.routes = cases
    put_objects(tmp_path, [(i, server.url(p), None, None) for i, p in enumerate(cases, 1)])
    settings = test_settings(tmp_path, [server.netloc], max_image_pixels=1_000_000)
    report = await run(settings)

    rows = {r["url"].split("/")[-1]: r for r in image_rows(tmp_path)}
    assert rows["ok-wrong-type.jpg"]["status"] == "ok"
    failed = {name: r["error"] for name, r in rows.items() if r["status"] == "failed"}
    assert set(failed) == {p.strip("/") for p in cases} - {"ok-wrong-type.jpg"}
    assert "HTML page" in failed["html-200.jpg"]
    assert "not an image" in failed["html-as-jpeg.jpg"]
    assert "403" in failed["html-403.jpg"]
    assert "connection" in failed["cut.jpg"] or "truncated" in failed["cut.jpg"]
    assert "truncated" in failed["short.jpg"]
    assert "truncated" in failed["short.png"]
    assert "decompression bomb" in failed["bomb.png"]
    assert "decompression bomb" in failed["big.png"] and "1000000" in failed["big.png"]
    assert "too large" in failed["huge-length.jpg"]
    assert "not an image" in failed["noise.jpg"]
    assert failed["gone.jpg"] == "HTTP 404"
    assert "empty" in failed["empty.jpg"]
    assert all(
        r["attempts"] == 1 and r["next_retry_at"] for r in rows.values() if r["status"] == "failed"
    )
    # Transient troubles were retried (max_attempts=2); permanent ones were asked for once.
    assert server.count("/html-200.jpg") == 2 and server.count("/cut.jpg") == 2
    assert server.count("/noise.jpg") == 1 and server.count("/bomb.png") == 1
    assert report.failed == len(cases) - 1 and report.stored == 1
    # Only the good image became a blob, and nothing was left behind in the incoming folder.
    assert list(blob_files(tmp_path)) == [sha256(good)]
    assert list(BlobStore.for_data_dir(tmp_path).iter_temp_files()) == []
    # The HTML pages were firewall blocks: the image pool slowed down and kept what it learned.
    learned = await image_learned_rate(tmp_path)
    assert learned is not None and learned < settings.image_rate
    # Failed images wait for their retry time: a second run asks for none of them.
    before = server.count()
    report2 = await run(settings)
    assert server.count() == before and report2.deferred == len(cases) - 1


async def test_body_over_the_byte_cap_is_cut_off_while_streaming(
    tmp_path: Path, server: ImageServer
) -> None:
    big = make_jpeg(3, (600, 400))
    route = Route(big, chunk=4096)
    server.routes = {"/big.jpg": route}
    put_objects(tmp_path, [(1, server.url("/big.jpg"), None, None)])
    settings = test_settings(tmp_path, [server.netloc], max_image_bytes=len(big) - 1)
    await run(settings)
    [row] = image_rows(tmp_path)
    assert row["status"] == "failed" and "too large" in row["error"]
    assert blob_files(tmp_path) == {}


# --- allowlist --------------------------------------------------------------------------------


async def test_urls_outside_the_allowlist_are_refused_without_a_request(
    tmp_path: Path, server: ImageServer, canary: ImageServer
) -> None:
    other_port = await ImageServer().start()  # same address, another port: also a canary
    try:
        server.routes = {
            "/ok.jpg": Route(make_jpeg(1)),
            "/hop.jpg": Route(status=302, location="/ok.jpg"),  # within the host: followed
            "/away.jpg": Route(status=302, location=canary.url("/x.jpg")),
            "/away-port.jpg": Route(status=301, location=other_port.url("/x.jpg")),
            "/away-file.jpg": Route(status=307, location="file:///etc/passwd"),
        }
        urls = [
            server.url("/ok.jpg"),
            server.url("/hop.jpg"),
            server.url("/away.jpg"),
            server.url("/away-port.jpg"),
            server.url("/away-file.jpg"),
            canary.url("/x.jpg"),
            other_port.url("/x.jpg"),
            f"http://{server.netloc}@{canary.netloc}/x.jpg",  # userinfo trick
            f"http://user@{server.netloc}/ok.jpg",
            "file:///etc/passwd",
            "data:image/png;base64,iVBORw0KGgo=",
            f"https://{server.netloc}/ok.jpg".replace("https", "ftp"),
        ]
        put_objects(tmp_path, [(i, u, None, None) for i, u in enumerate(urls, 1)])
        report = await run(test_settings(tmp_path, [server.netloc]))
    finally:
        await other_port.stop()
    assert other_port.requests == []
    rows = {r["object_id"]: r for r in image_rows(tmp_path)}
    assert rows[1]["status"] == "ok" and rows[2]["status"] == "ok"
    assert rows[2]["sha256"] == rows[1]["sha256"]
    refused = {oid: r["error"] for oid, r in rows.items() if r["status"] == "refused"}
    assert set(refused) == set(range(3, len(urls) + 1))
    assert "redirect" in refused[3] and "127.0.0.2" in refused[3]
    assert "redirect" in refused[4] and "port" in refused[4]
    assert "scheme 'file'" in refused[5]
    assert "loopback address 127.0.0.2" in refused[6]
    assert "port" in refused[7]
    assert "userinfo" in refused[8] and "userinfo" in refused[9]
    assert "scheme 'data'" in refused[11]
    assert report.refused == len(urls) - 2
    # Refused rows are not retried while the allowlist is unchanged...
    asked = server.count()
    report2 = await run(test_settings(tmp_path, [server.netloc]))
    assert report2.refused == len(urls) - 2 and report2.queued == 0 and server.count() == asked


async def test_a_refused_url_is_fetched_once_its_host_is_allowed(
    tmp_path: Path, server: ImageServer
) -> None:
    other = await ImageServer(host="127.0.0.3").start()
    try:
        other.routes = {"/x.jpg": Route(make_jpeg(4))}
        put_objects(tmp_path, [(1, other.url("/x.jpg"), None, None)])
        await run(test_settings(tmp_path, [server.netloc]))
        assert image_rows(tmp_path)[0]["status"] == "refused" and other.requests == []
        await run(test_settings(tmp_path, [server.netloc, other.netloc]))
        assert image_rows(tmp_path)[0]["status"] == "ok" and other.count() == 1
    finally:
        await other.stop()


# --- incremental ------------------------------------------------------------------------------


async def test_incremental_runs_history_and_conditional_requests(
    tmp_path: Path, server: ImageServer
) -> None:
    first, second, third = make_jpeg(21), make_jpeg(22), make_jpeg(23)
    server.routes = {
        "/1.jpg": Route(first, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT"),
        "/2.jpg": Route(make_jpeg(24)),
    }
    put_objects(
        tmp_path, [(1, server.url("/1.jpg"), None, None), (2, server.url("/2.jpg"), None, None)]
    )
    settings = test_settings(tmp_path, [server.netloc])
    assert (await run(settings)).stored == 2

    # Nothing changed: nothing is fetched.
    report = await run(settings)
    assert server.count() == 2 and report.queued == 0 and report.unchanged == 2

    # A changed URL: the new image is fetched, the old row stays as history with its blob.
    server.routes["/1b.jpg"] = Route(second)
    put_objects(tmp_path, [(1, server.url("/1b.jpg"), None, None)])
    report = await run(settings)
    assert report.queued == 1 and report.stored == 1 and report.superseded == 1
    rows = image_rows(tmp_path, current_only=False)
    old = [r for r in rows if r["object_id"] == 1 and not r["is_current"]]
    new = [r for r in rows if r["object_id"] == 1 and r["is_current"]]
    assert [r["sha256"] for r in old] == [sha256(first)] and old[0]["superseded_at"]
    assert [r["sha256"] for r in new] == [sha256(second)]
    assert set(blob_files(tmp_path)) >= {sha256(first), sha256(second)}

    # The record of object 2 changes (same URL) and the server now gives validators: the image
    # is revalidated only if validators are known; here they are not, so it is left alone.
    # Object 1b gets validators, then its record changes: a conditional request, answered 304.
    server.routes["/1b.jpg"] = Route(second, etag='"b1"')
    await _record_changed(tmp_path, 1)
    report = await run(settings)
    assert report.queued == 0  # no validators known yet for /1b.jpg
    db = await open_db(tmp_path)
    await db.execute(
        "UPDATE images SET etag = '\"b1\"' WHERE url LIKE '%/1b.jpg' AND is_current = 1"
    )
    await db.commit()
    await db.close()
    await _record_changed(tmp_path, 1)
    before = server.count("/1b.jpg")
    report = await run(settings)
    assert report.not_modified == 1 and server.count("/1b.jpg") == before + 1
    assert server.requests[-1][2].get("If-None-Match") == '"b1"'
    [row] = [r for r in image_rows(tmp_path) if r["object_id"] == 1]
    assert row["sha256"] == sha256(second) and row["status"] == "ok"
    report = await run(settings)  # revalidated: quiet again
    assert report.queued == 0

    # New bytes behind the same URL: a 200 to the conditional request; the old link is history.
    server.routes["/1b.jpg"] = Route(third, etag='"b2"')
    await _record_changed(tmp_path, 1)
    report = await run(settings)
    assert report.stored == 1
    rows = [r for r in image_rows(tmp_path, current_only=False) if r["object_id"] == 1]
    assert [(r["sha256"], r["is_current"]) for r in rows] == [
        (sha256(first), 0),
        (sha256(second), 0),
        (sha256(third), 1),
    ]
    assert rows[-1]["etag"] == '"b2"'


async def _record_changed(data_dir: Path, object_id: int) -> None:
    """What the metadata sync does when a record's content changes: a version row, now."""
    await asyncio.sleep(0.005)  # timestamps have millisecond precision
    db = await open_db(data_dir)
    from met_harvester.db.connection import utc_now

    now = utc_now()
    await db.execute(
        "INSERT INTO object_versions (object_id, raw_json, content_sha256, fetched_at, "
        "replaced_at) VALUES (?, '{}', 'x', ?, ?)",
        (object_id, now, now),
    )
    await db.commit()
    await db.close()


async def test_a_missing_blob_is_fetched_again(tmp_path: Path, server: ImageServer) -> None:
    body = make_jpeg(30)
    server.routes = {"/1.jpg": Route(body, etag='"e"')}
    put_objects(tmp_path, [(1, server.url("/1.jpg"), None, None)])
    settings = test_settings(tmp_path, [server.netloc])
    await run(settings)
    BlobStore.for_data_dir(tmp_path).path_for(sha256(body)).unlink()
    report = await run(settings)
    assert report.stored == 1 and server.count() == 2
    assert "If-None-Match" not in server.requests[-1][2]  # no 304 for a blob we lack
    assert_store_sound(tmp_path)


async def test_stop_event_stops_before_new_downloads(tmp_path: Path, server: ImageServer) -> None:
    server.routes = {f"/{n}.jpg": Route(make_jpeg(n)) for n in range(5)}
    put_objects(tmp_path, [(n + 1, server.url(f"/{n}.jpg"), None, None) for n in range(5)])
    stop = asyncio.Event()
    stop.set()
    report = await run(test_settings(tmp_path, [server.netloc]), stop_event=stop)
    assert report.interrupted and server.count() == 0


async def test_stop_event_mid_pass_records_what_finished(
    tmp_path: Path, server: ImageServer
) -> None:
    bodies = [make_noisy_jpeg(80 + n, (64, 64)) for n in range(6)]
    server.routes = {f"/{n}.jpg": Route(b, chunk=1024, delay=0.02) for n, b in enumerate(bodies)}
    put_objects(tmp_path, [(n + 1, server.url(f"/{n}.jpg"), None, None) for n in range(6)])
    settings = test_settings(tmp_path, [server.netloc], image_concurrency=1)
    stop = asyncio.Event()

    async def stop_after_first_request() -> None:
        while server.count() < 1:
            await asyncio.sleep(0.01)
        stop.set()

    stopper = asyncio.create_task(stop_after_first_request())
    report = await run(settings, stop_event=stop)
    await stopper
    assert report.interrupted and report.stored == 1 and server.count() == 1
    assert sorted(r["status"] for r in image_rows(tmp_path)) == ["ok"] + ["pending"] * 5
    report = await run(settings)
    assert report.stored == 5 and {r["status"] for r in image_rows(tmp_path)} == {"ok"}


# --- kill -9 -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_kill_9_during_downloads_leaves_no_partial_blob(
    tmp_path: Path, server: ImageServer
) -> None:
    bodies = {f"/{n}.jpg": make_noisy_jpeg(40 + n) for n in range(6)}
    # Slow streams: each body trickles in small chunks, so the child is killed mid-download.
    server.routes = {p: Route(b, chunk=512, delay=0.05) for p, b in bodies.items()}
    put_objects(tmp_path, [(n + 1, server.url(p), None, None) for n, p in enumerate(bodies)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, str(HERE / "image_server.py"), "sync", str(tmp_path), server.netloc],
        env=env,
    )
    store = BlobStore.for_data_dir(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not any(t.path.stat().st_size > 4096 for t in _temps(store)):
            assert child.poll() is None, "child ended before it was killed"
            assert time.monotonic() < deadline, "child never started downloading"
            await asyncio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.wait)
    assert child.returncode == -signal.SIGKILL
    assert _temps(store), "partial downloads should be left as temp files"
    assert blob_files(tmp_path) == {}  # nothing partial became visible
    assert {r["status"] for r in image_rows(tmp_path)} == {"pending"}

    for route in server.routes.values():
        route.delay = 0.0
    report = await run(test_settings(tmp_path, [server.netloc]))
    assert report.stored == len(bodies) and report.temp_files_removed >= 1
    assert set(blob_files(tmp_path)) == {sha256(b) for b in bodies.values()}
    assert_store_sound(tmp_path)
    assert {r["status"] for r in image_rows(tmp_path)} == {"ok"}
    assert _temps(store) == []


def _temps(store: BlobStore) -> list:  # type: ignore[type-arg]
    found = []
    for temp in store.iter_temp_files():
        if temp.path.exists():
            found.append(temp)
    return found


# --- end to end: run_sync against the fake Met API ------------------------------------------


def _e2e_settings(data_dir: Path, api: FakeMetAPI, **extra: object) -> HarvesterSettings:
    return test_settings(
        data_dir,
        [api.image_host],
        api_url=api.api_url,
        rate=5000.0,
        concurrency=8,
        **extra,
    )


def _expected_slots(data_dir: Path) -> int:
    from met_harvester.db.connection import connect_sync

    conn = connect_sync(data_dir)
    try:
        return int(
            conn.execute(
                "SELECT COUNT(*) FROM objects WHERE is_public_domain = 1 AND withdrawn_at IS NULL "
                "AND coalesce(primary_image_small, primary_image, '') != ''"
            ).fetchone()[0]
        )
    finally:
        conn.close()


async def test_sync_mirrors_the_fake_api_images_incrementally(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    from met_harvester.status import collect_status
    from met_harvester.sync import run_sync

    api = await fake_api_factory(n_objects=60, seed=3)
    settings = _e2e_settings(tmp_path, api)
    report = await run_sync(settings)
    assert report.status == "completed" and report.images is not None
    wanted = _expected_slots(tmp_path)
    rows = image_rows(tmp_path)
    assert wanted > 0 and len(rows) == wanted
    assert all(r["status"] == "ok" and r["etag"] and r["last_modified"] for r in rows)
    assert_store_sound(tmp_path)
    db = await open_db(tmp_path)
    status = await collect_status(db)
    await db.close()
    assert status["images"] == len({r["sha256"] for r in rows}) and status["image_failures"] == 0

    # A second sync: no image is fetched again.
    fetched = api.count("/images/")
    await run_sync(settings)
    assert api.count("/images/") == fetched

    # A changed image: only the new URL is fetched; the old row stays as history.
    changed = rows[0]["object_id"]
    api.change_image(changed)
    await run_sync(settings)
    assert api.count("/images/") == fetched + 1
    history = [r for r in image_rows(tmp_path, current_only=False) if r["object_id"] == changed]
    assert [r["is_current"] for r in history] == [0, 1] and history[0]["url"] != history[1]["url"]
    assert history[0]["sha256"] != history[1]["sha256"]


@pytest.mark.slow
async def test_image_faults_never_reach_the_store(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    from met_harvester.sync import run_sync
    from met_harvester.testing import FaultConfig

    faults = FaultConfig(
        p_image_truncate=0.1,
        p_image_wrong_type=0.1,
        p_image_html=0.04,
        p_image_bomb=0.1,
        p_image_slow=0.05,
        image_slow_rate=200_000.0,
        seed=5,
    )
    api = await fake_api_factory(n_objects=80, seed=4, faults=faults)
    settings = _e2e_settings(tmp_path, api)
    await run_sync(settings)
    rows = image_rows(tmp_path)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed, "with these fault rates some images should fail"
    assert all(r["error"] for r in failed)
    assert_store_sound(tmp_path)
    from PIL import Image

    for path in blob_files(tmp_path).values():  # every stored blob is a whole image
        with Image.open(path) as img:
            img.load()

    # Faults gone and retry times reached: the store ends equal to a fault-free mirror.
    api.set_faults(None)
    db = await open_db(tmp_path)
    await db.execute("UPDATE images SET next_retry_at = NULL")
    await db.commit()
    await db.close()
    await run_sync(settings)
    clean = tmp_path / "clean"
    clean_api = await fake_api_factory(n_objects=80, seed=4)
    await run_sync(_e2e_settings(clean, clean_api))
    assert {r["status"] for r in image_rows(tmp_path)} == {"ok"}
    assert set(blob_files(tmp_path)) == set(blob_files(clean))


async def test_urls_with_spaces_and_non_ascii_are_fetched(
    tmp_path: Path, server: ImageServer
) -> None:
    # As in real 2019 records: "ESDA Kalimian Temple.jpg", "LC-2019_66_1a–o_95-001.jpg".
    body = make_jpeg(90)
    server.routes = {"/es/ESDA Kalimian Temple–1.jpg": Route(body)}
    put_objects(tmp_path, [(1, server.url("/es/ESDA Kalimian Temple–1.jpg"), None, None)])
    report = await run(test_settings(tmp_path, [server.netloc]))
    assert report.stored == 1 and image_rows(tmp_path)[0]["sha256"] == sha256(body)


@pytest.mark.slow
async def test_image_pool_adapts_to_a_firewall_on_the_image_host(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    from met_harvester.testing import FirewallConfig

    firewall = FirewallConfig(
        max_requests=12, window=1.0, block=0.6, p_html200=0.3, include_images=True
    )
    api = await fake_api_factory(n_objects=60, seed=6, firewall=firewall)
    records = [api.collection.record(oid, api.base_url) for oid in api.collection.object_ids]
    put_objects(
        tmp_path,
        [
            (r["objectID"], r["primaryImageSmall"], r["primaryImage"], None)
            for r in records
            if r["isPublicDomain"]
        ],
    )
    settings = test_settings(
        tmp_path, [api.image_host], image_rate=200.0, max_attempts=8, block_cooldown=0.3
    )
    report = await run(settings)
    blocked = [r for r in api.requests if r.fault == "firewall"]
    assert blocked, "the pool should have run into the firewall at 200 images/s"
    assert report.failed == 0 and report.stored == report.queued > 30
    assert {r["status"] for r in image_rows(tmp_path)} == {"ok"}
    assert_store_sound(tmp_path)
    learned = await image_learned_rate(tmp_path)
    assert learned is not None and learned < 200.0
