"""A failing image writer stops the pass: one line, no more downloads, nothing recorded untrue.

The failure is real: a trigger in the real SQLite file makes every write of an `ok` outcome fail
the way a full disk does (`RAISE(FAIL, ...)` aborts the statement, so the writer's transaction
cannot be committed). Downloads go over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harvester_support import FakeApiFactory, harvester_env
from image_server import ImageServer, Route, image_rows, make_jpeg, put_objects, test_settings

from met_harvester.db.connection import connect_sync, open_db
from met_harvester.images.sync import ImagePassError, sync_images
from met_harvester.testing import FaultConfig

FAILURE = "database or disk is full (test trigger)"
FAIL_OK_WRITES = f"""
CREATE TRIGGER fail_image_writes BEFORE UPDATE OF status ON images
WHEN NEW.status = 'ok' BEGIN SELECT RAISE(FAIL, '{FAILURE}'); END
"""


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    srv = await ImageServer().start()
    yield srv
    await srv.stop()


def break_image_writes(data_dir: Path) -> None:
    """Install the trigger that makes recording any downloaded image fail."""
    conn = connect_sync(data_dir)
    try:
        with conn:
            conn.execute(FAIL_OK_WRITES)
    finally:
        conn.close()


async def test_writer_failure_stops_downloads_with_one_line(
    tmp_path: Path, server: ImageServer
) -> None:
    n = 40
    # Slow bodies: a pass that went on downloading would need several seconds for all of them.
    server.routes = {f"/{i}.jpg": Route(make_jpeg(i), delay=0.2) for i in range(n)}
    put_objects(tmp_path, [(i + 1, server.url(f"/{i}.jpg"), None, None) for i in range(n)])
    db = await open_db(tmp_path)  # creates the schema, so the trigger has a table to sit on
    await db.close()
    break_image_writes(tmp_path)
    settings = test_settings(tmp_path, [server.netloc], image_concurrency=2)

    db = await open_db(tmp_path)
    try:
        with pytest.raises(ImagePassError) as raised:
            await sync_images(db, settings)
    finally:
        await db.close()
    message = str(raised.value)
    assert "\n" not in message
    assert "recording image outcomes failed" in message and FAILURE in message

    sent = server.count()
    await asyncio.sleep(1.0)
    assert server.count() == sent, "downloads went on after the writer failed"
    assert sent < n, f"all {n} images were downloaded though none could be recorded"
    rows = image_rows(tmp_path)
    assert len(rows) == n and {r["status"] for r in rows} == {"pending"}
    assert all(r["sha256"] is None for r in rows)


async def test_sync_command_exits_with_one_line_when_images_cannot_be_recorded(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    # Image answers take 0.5 s: all of them would take seconds at the default image concurrency.
    api = await fake_api_factory(n_objects=30, faults=FaultConfig(image_latency=0.5))
    data_dir = tmp_path / "data"
    base = [
        sys.executable, "-m", "met_harvester", "sync", "--data-dir", str(data_dir),
        "--api-url", api.api_url, "--rate", "200", "--image-rate", "200",
        "--image-hosts", api.image_host,
    ]  # fmt: skip
    first = await asyncio.to_thread(
        subprocess.run, [*base, "--no-images"], capture_output=True, text=True,
        env=harvester_env(), timeout=120,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    break_image_writes(data_dir)

    second = await asyncio.to_thread(
        subprocess.run, base, capture_output=True, text=True, env=harvester_env(), timeout=120
    )
    errors = [line for line in second.stderr.splitlines() if "error:" in line]
    assert second.returncode == 1, second.stderr
    assert len(errors) == 1 and FAILURE in errors[0], second.stderr
    conn = connect_sync(data_dir)
    try:
        statuses = {r[0] for r in conn.execute("SELECT status FROM images")}
        n_images = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        run_status = conn.execute(
            "SELECT status FROM sync_runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()[0]
        objects = conn.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
    finally:
        conn.close()
    assert statuses == {"pending"} and run_status == "failed" and objects == 30
    assert api.count("/images/") < n_images, "every image was downloaded, none recorded"
