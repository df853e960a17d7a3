"""The content-addressed blob store: layout, atomic write-once commit, dedupe, listing."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from met_harvester.images.blobstore import BlobStore, PendingBlob, hash_file


def put(store: BlobStore, data: bytes) -> tuple[str, bool]:
    sha = hashlib.sha256(data).hexdigest()
    temp = store.new_temp()
    temp.write_bytes(data)
    return sha, store.commit(temp, sha, len(data))


def test_layout_and_write_once(tmp_path: Path) -> None:
    store = BlobStore.for_data_dir(tmp_path)
    sha, stored = put(store, b"hello image")
    path = store.path_for(sha)
    assert stored and path == tmp_path / "images" / sha[:2] / sha[2:4] / sha
    assert path.read_bytes() == b"hello image" and hash_file(path) == (sha, 11)
    assert not stat.S_IMODE(path.stat().st_mode) & 0o222  # read-only: never modified
    assert store.has(sha) and store.has(sha, 11) and not store.has(sha, 12)
    assert list(store.iter_temp_files()) == []  # the temp name is gone


def test_identical_bytes_are_stored_once(tmp_path: Path) -> None:
    store = BlobStore.for_data_dir(tmp_path)
    sha, first = put(store, b"same bytes")
    inode = store.path_for(sha).stat().st_ino
    _, second = put(store, b"same bytes")
    assert first and not second
    assert store.path_for(sha).stat().st_ino == inode  # the existing blob was not replaced
    assert [name for name, _ in store.iter_blobs()] == [sha]


def test_commit_checks_size_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    store = BlobStore.for_data_dir(tmp_path)
    temp = store.new_temp()
    temp.write_bytes(b"short")
    sha = hashlib.sha256(b"short").hexdigest()
    with pytest.raises(ValueError, match="expected 6"):
        store.commit(temp, sha, 6)
    assert not store.has(sha) and not temp.exists()


def test_a_corrupt_existing_blob_of_wrong_size_is_set_aside(tmp_path: Path) -> None:
    store = BlobStore.for_data_dir(tmp_path)
    data = b"the real bytes"
    sha = hashlib.sha256(data).hexdigest()
    bad = store.path_for(sha)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"junk")
    _, stored = put(store, data)
    assert stored and bad.read_bytes() == data
    assert [p.read_bytes() for p in store.iter_corrupt()] == [b"junk"]


@pytest.mark.parametrize("name", ["../../etc/passwd", "ABC", "a" * 63, "g" * 64, "A" * 64])
def test_only_sha256_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        BlobStore(tmp_path).path_for(name)


def test_listing_ignores_temp_files_and_strays(tmp_path: Path) -> None:
    store = BlobStore.for_data_dir(tmp_path)
    sha, _ = put(store, b"x")
    folder = store.path_for(sha).parent
    (folder / ".tmp-1-abc").write_bytes(b"partial")
    (folder / "notes.txt").write_text("stray")
    misplaced = "f" * 64
    (folder / misplaced).write_bytes(b"wrong folder")
    assert [name for name, _ in store.iter_blobs()] == [sha]
    assert [name for name, _ in store.iter_blobs(sha[:2])] == [sha]


def test_stale_temp_files_are_those_of_dead_writers(tmp_path: Path) -> None:
    store = BlobStore.for_data_dir(tmp_path)
    mine = store.new_temp()
    mine.write_bytes(b"in progress")
    store.incoming.joinpath(".tmp-999999999-00").write_bytes(b"dead writer")
    store.incoming.joinpath(".tmp-garbage").write_bytes(b"unknown writer")
    stale = sorted(t.path.name for t in store.stale_temp_files())
    assert stale == [".tmp-999999999-00", ".tmp-garbage"]
    old = os.path.getmtime(mine) - 7 * 3600
    os.utime(mine, (old, old))
    assert mine in [t.path for t in store.stale_temp_files()]  # idle for hours: stale too
    assert store.remove_stale_temp_files() == 3 and list(store.iter_temp_files()) == []


def test_a_group_commit_stores_each_blob_or_says_why_not(tmp_path: Path) -> None:
    store = BlobStore.for_data_dir(tmp_path)
    _, _ = put(store, b"already here")
    blobs = []
    for data, claimed in [(b"first", 5), (b"already here", 12), (b"short", 6), (b"second", 6)]:
        temp = store.new_temp()
        temp.write_bytes(data)
        fd = os.open(temp, os.O_RDONLY)
        blobs.append(PendingBlob(temp, fd, hashlib.sha256(data).hexdigest(), claimed))
    results = store.commit_group(blobs)
    assert results[:2] == [True, False] and results[3] is True
    assert isinstance(results[2], ValueError) and not store.has(blobs[2].sha256)
    for blob in (blobs[0], blobs[3]):
        path = store.path_for(blob.sha256)
        assert hash_file(path) == (blob.sha256, blob.size)
        assert not stat.S_IMODE(path.stat().st_mode) & 0o222
    assert list(store.iter_temp_files()) == []  # every temp name is gone, stored or not
    for blob in blobs:  # and every descriptor closed
        with pytest.raises(OSError):
            os.fstat(blob.fd)
