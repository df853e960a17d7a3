"""The mirror on a real read-only bind mount: every reader opens it, fit and predict run on it.

Needs root (or CAP_SYS_ADMIN) for ``mount --bind`` + ``mount -o remount,ro,bind``; skips otherwise.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from xai_support import TrainedModel, quick_model  # noqa: F401

from met_vision import predict, snapshot
from met_vision.data.mirror import load_records
from met_vision.data.readonly import (
    MirrorChangedError,
    connect_readonly,
    readonly_mode,
)
from met_vision.fit import main as fit_main

CONF = Path(__file__).resolve().parent / "conf"


@pytest.fixture
def ro_mount(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``ro_mount(src) -> path``: ``src`` bind-mounted read-only (unmounted at teardown)."""
    mounted: list[Path] = []

    def mount(source: Path) -> Path:
        target = tmp_path / f"ro-{len(mounted)}"
        target.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"bind mounts not permitted here: {done.stderr.decode().strip()}")
        mounted.append(target)
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"read-only remount not permitted: {ro.stderr.decode().strip()}")
        with pytest.raises(OSError) as refused:
            (target / "probe").write_text("x")
        assert refused.value.errno == errno.EROFS
        return target

    yield mount
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=False)  # still open: detach lazily


def _objects(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["object_id", "department", "classification", "split", "has_image"]]


def _close_cleanly(data_dir: Path) -> None:
    """What the harvester's last connection does on exit: checkpoint, remove -wal and -shm."""
    conn = sqlite3.connect(data_dir / "met.sqlite")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    conn.close()


def test_a_clean_mirror_opens_immutable_where_mode_ro_fails(fresh_mirror, ro_mount):
    _close_cleanly(fresh_mirror)
    mount = ro_mount(fresh_mirror)
    db = mount / "met.sqlite"
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT 1 FROM objects")
    assert readonly_mode(db) == "immutable"
    on_mount = load_records(mount)
    assert [p.name for p in mount.iterdir() if p.name.startswith("met.sqlite")] == ["met.sqlite"]
    # a reader of the writable original leaves an empty -wal and a -shm: still immutable
    original = load_records(fresh_mirror)
    assert Path(f"{db}-wal").stat().st_size == 0 and readonly_mode(db) == "immutable"
    pd.testing.assert_frame_equal(_objects(on_mount), _objects(original))
    pd.testing.assert_frame_equal(_objects(load_records(mount)), _objects(original))


def test_a_live_writer_elsewhere_is_detected_not_blocked(fresh_mirror, ro_mount):
    _close_cleanly(fresh_mirror)
    mount = ro_mount(fresh_mirror)
    immutable = connect_readonly(mount / "met.sqlite")
    first = immutable.execute("SELECT min(object_id) FROM objects").fetchone()[0]
    writer = sqlite3.connect(fresh_mirror / "met.sqlite")  # the harvester, through its own mount
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(
            "UPDATE objects SET department = 'Staged Elsewhere' WHERE object_id = ?", (first,)
        )
        writer.commit()  # not blocked by the lock-free reader
        with pytest.raises(MirrorChangedError, match="changed while it was read"):
            immutable.close()
        # the commit sits in a non-empty -wal beside its -shm: read through them, and see it
        assert readonly_mode(mount / "met.sqlite") == "ro"
        records = load_records(mount)
        assert records.set_index("object_id").loc[first, "department"] == "Staged Elsewhere"
    finally:
        writer.close()


def test_a_snapshot_is_consistent_and_needs_no_wal(fresh_mirror, tmp_path, ro_mount):
    writer = sqlite3.connect(fresh_mirror / "met.sqlite")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE objects SET culture = 'in the WAL only'")
    writer.commit()  # the harvester keeps the file open, the commit is still in -wal
    staged = tmp_path / "staged"
    shutil.copytree(fresh_mirror, staged, ignore=shutil.ignore_patterns("met.sqlite*"))
    assert snapshot.main([str(fresh_mirror), str(staged)]) == 0  # the runbook's staging command
    writer.close()
    mount = ro_mount(staged)
    assert sorted(p.name for p in staged.iterdir() if p.name.startswith("met.sqlite")) == [
        "met.sqlite"
    ]
    assert set(load_records(mount, include_withdrawn=True).query("source == 'api'")["culture"]) == {
        "in the WAL only"
    }


@pytest.mark.slow
def test_fit_and_predict_run_with_the_data_dir_read_only(quick_model, ro_mount, tmp_path):  # noqa: F811
    mount = ro_mount(quick_model.data_dir)
    run_dir = tmp_path / "run"
    args = ["--config", str(CONF / "multilabel.yaml"), "--data.data_dir", str(mount)]
    args += ["--run_dir", str(run_dir), "--trainer.fast_dev_run", "1"]
    assert fit_main(args) == 0
    assert (run_dir / "config.yaml").is_file()
    out = tmp_path / "preds.parquet"
    common = ["--ckpt", str(quick_model.ckpt), "--split", "test"]
    assert predict.main([*common, "--data-dir", str(mount), "--out", str(out)]) == 0
    alone = tmp_path / "alone.parquet"
    assert (
        predict.main([*common, "--data-dir", str(quick_model.data_dir), "--out", str(alone)]) == 0
    )
    on_mount, writable = pd.read_parquet(out), pd.read_parquet(alone)
    assert len(on_mount) > 0
    assert on_mount["object_id"].tolist() == writable["object_id"].tolist()
