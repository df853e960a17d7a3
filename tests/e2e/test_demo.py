"""The demo path (what `make demo` runs) at a smaller size, end to end, twice."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from met_vision.demo import main

pytestmark = pytest.mark.slow

ARGS = ["--objects", "400", "--size", "48", "--max-epochs", "2", "--explain", "4", "--rate", "400"]


def test_demo_end_to_end_and_incremental(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    assert main(["--out", str(out), *ARGS]) == 0

    report = (out / "REPORT.md").read_text()
    for heading in (
        "## Harvest",
        "## Training",
        "### Test metrics",
        "## Grad-CAM",
        "## The planted bias, flagged and mitigated",
    ):
        assert heading in report
    # Every picture the report shows is there, beside it.
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert pictures, "the report shows no picture"
    for picture in pictures:
        assert (out / picture).is_file(), picture
    db = sqlite3.connect(out / "data" / "met.sqlite")
    objects = db.execute("SELECT count(*) FROM objects").fetchone()[0]
    images = db.execute("SELECT count(*) FROM images WHERE status = 'ok'").fetchone()[0]
    assert objects == 400 and images > 0
    # the baseline and the group-balanced run, side by side in the report
    runs = sorted((out / "runs").glob("**/metrics.json"))
    assert [r.parent.name for r in runs] == ["demo-mitigated", "demo-multilabel"]
    assert "| | baseline | group-balanced |" in report
    assert (out / "audit" / "audit.json").is_file()
    assert (out / "audit-mitigated" / "audit.json").is_file()

    # Re-running is incremental: the finished training run is reused, no new run appears,
    # and the second sync is a completed incremental pass.
    assert main(["--out", str(out), *ARGS]) == 0
    assert sorted((out / "runs").glob("**/metrics.json")) == runs
    modes = [r[0] for r in db.execute("SELECT mode FROM sync_runs ORDER BY run_id")]
    assert modes[0] == "full" and modes[-1] == "incremental"
    db.close()
