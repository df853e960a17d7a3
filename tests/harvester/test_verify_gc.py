"""`verify` and `gc` on a real mirror filled over loopback: a corrupt blob is detected and
repaired, missing and orphaned blobs and stale temp files are found, gc is a dry run by default."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import typer
from image_server import (
    ImageServer,
    Route,
    image_rows,
    make_jpeg,
    put_objects,
    sha256,
    test_settings,
)
from typer.testing import CliRunner

from met_harvester.commands import images_cmd
from met_harvester.db.connection import open_db
from met_harvester.images.blobstore import BlobStore
from met_harvester.images.gc import collect_garbage
from met_harvester.images.sync import sync_images
from met_harvester.images.verify import parse_sample, verify_store


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    srv = await ImageServer().start()
    yield srv
    await srv.stop()


def cli(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    images_cmd.register(app)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


async def mirror(tmp_path: Path, server: ImageServer, n: int = 4) -> list[bytes]:
    bodies = [make_jpeg(60 + i, (80, 60)) for i in range(n)]
    server.routes = {f"/{i}.jpg": Route(b) for i, b in enumerate(bodies)}
    put_objects(tmp_path, [(i + 1, server.url(f"/{i}.jpg"), None, None) for i in range(n)])
    await resync(tmp_path, server)
    return bodies


async def resync(tmp_path: Path, server: ImageServer) -> None:
    db = await open_db(tmp_path)
    try:
        await sync_images(db, test_settings(tmp_path, [server.netloc]))
    finally:
        await db.close()


async def test_clean_mirror_verifies_clean(tmp_path: Path, server: ImageServer) -> None:
    await mirror(tmp_path, server)
    code, out = cli("verify", "--data-dir", str(tmp_path))
    assert code == 0, out
    assert (
        "integrity_check: ok" in out
        and "re-hashed: 4 (all)" in out
        and out.strip().endswith("clean")
    )


async def test_corrupt_blob_is_detected_and_repaired(tmp_path: Path, server: ImageServer) -> None:
    bodies = await mirror(tmp_path, server)
    store = BlobStore.for_data_dir(tmp_path)
    victim = store.path_for(sha256(bodies[1]))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only re-hashing finds it
    os.chmod(victim, 0o644)
    victim.write_bytes(bytes(data))

    code, out = cli("verify", "--data-dir", str(tmp_path))
    assert code == 1 and "corrupt blobs: 1" in out and sha256(bodies[1]) in out

    code, out = cli("verify", "--repair", "--data-dir", str(tmp_path))
    assert code == 1 and "1 corrupt blobs moved aside, 1 rows re-queued" in out
    assert not victim.exists() and len(list(store.iter_corrupt())) == 1
    [row] = [r for r in image_rows(tmp_path) if r["object_id"] == 2]
    assert row["status"] == "pending"

    asked = server.count()
    await resync(tmp_path, server)
    assert server.count() == asked + 1  # only the affected image was fetched again
    assert victim.read_bytes() == bodies[1]
    code, out = cli("verify", "--data-dir", str(tmp_path))
    assert code == 0, out


async def test_missing_orphaned_and_temp_files(tmp_path: Path, server: ImageServer) -> None:
    bodies = await mirror(tmp_path, server)
    store = BlobStore.for_data_dir(tmp_path)
    store.path_for(sha256(bodies[0])).unlink()
    orphan = make_jpeg(99)
    temp = store.new_temp()
    temp.write_bytes(orphan)
    assert store.commit(temp, sha256(orphan), len(orphan))
    old = time.time() - 3600
    os.utime(store.path_for(sha256(orphan)), (old, old))
    dead = store.incoming / ".tmp-999999999-deadbeef"  # a writer pid that cannot exist
    dead.write_bytes(b"partial")

    report = verify_store(tmp_path)
    assert report.missing == [sha256(bodies[0])] and report.orphaned == [sha256(orphan)]
    assert report.corrupt == [] and report.temp_files == 1 and report.problems == 2

    # gc: a dry run by default, listing what it would remove.
    code, out = cli("gc", "--data-dir", str(tmp_path))
    assert code == 0 and "would remove" in out and sha256(orphan) in out and dead.name in out
    assert store.has(sha256(orphan)) and dead.exists()
    code, out = cli("gc", "--apply", "--data-dir", str(tmp_path))
    assert code == 0 and "removed: 1 unreferenced blobs, 1 stale temp files" in out
    assert not store.has(sha256(orphan)) and not dead.exists()
    for body in bodies[1:]:
        assert store.has(sha256(body), len(body))  # referenced blobs are never touched

    # The missing blob: repair re-queues its row, the next sync completes the store.
    assert cli("verify", "--repair", "--data-dir", str(tmp_path))[0] == 1
    await resync(tmp_path, server)
    assert cli("verify", "--data-dir", str(tmp_path))[0] == 0


async def test_gc_keeps_history_blobs_and_recent_orphans(
    tmp_path: Path, server: ImageServer
) -> None:
    bodies = await mirror(tmp_path, server, n=1)
    server.routes["/new.jpg"] = Route(make_jpeg(77))
    put_objects(tmp_path, [(1, server.url("/new.jpg"), None, None)])
    await resync(tmp_path, server)
    store = BlobStore.for_data_dir(tmp_path)
    fresh = make_jpeg(78)
    temp = store.new_temp()
    temp.write_bytes(fresh)
    store.commit(temp, sha256(fresh), len(fresh))
    report = collect_garbage(tmp_path, apply=True)
    assert report.removed == 0 and report.too_recent == 1
    assert store.has(sha256(bodies[0]))  # the superseded image's blob stays with its history row


def test_sample_parsing() -> None:
    assert parse_sample("5%") == pytest.approx(0.05)
    assert parse_sample("0.25") == 0.25 and parse_sample("100%") == 1.0
    for bad in ("0%", "150%", "five", "-1"):
        with pytest.raises(ValueError):
            parse_sample(bad)


async def test_sampled_verify_rehashes_a_share(tmp_path: Path, server: ImageServer) -> None:
    await mirror(tmp_path, server, n=20)
    import random

    report = verify_store(tmp_path, sample=0.25, rng=random.Random(3))
    assert report.referenced == 20 and 0 < report.rehashed < 20 and report.problems == 0


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    code, out = cli("verify", "--sample", "lots", "--data-dir", str(tmp_path))
    assert code == 2 and "error: --sample 'lots'" in out
    code, out = cli("gc", "--data-dir", str(tmp_path / "nowhere"))
    assert code == 2 and "no mirror at" in out


async def test_changing_commands_refuse_a_locked_data_dir(
    tmp_path: Path, server: ImageServer
) -> None:
    """`verify --repair` and `gc --apply` exit 3 while a sync or daemon holds the lock, as
    `sync` does; the read-only forms still run."""
    from met_harvester.datadir import DataDirLock

    await mirror(tmp_path, server, n=1)
    with DataDirLock(tmp_path, command="daemon"):
        for args in (["verify", "--repair"], ["gc", "--apply"]):
            code, out = cli(*args, "--data-dir", str(tmp_path))
            assert code == 3 and "error: data dir is locked by daemon" in out
        assert cli("verify", "--data-dir", str(tmp_path))[0] == 0
        assert cli("gc", "--data-dir", str(tmp_path))[0] == 0


@pytest.mark.slow
async def test_verify_through_the_real_cli(tmp_path: Path, server: ImageServer) -> None:
    await mirror(tmp_path, server, n=2)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "met_harvester",
            "verify",
            "--sample",
            "50%",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout
