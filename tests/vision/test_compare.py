"""``python -m met_vision.compare`` on real (tiny) run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from met_vision.compare import main as compare_main
from met_vision.fit import main as fit_main

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "tests" / "vision" / "conf"


@pytest.fixture(scope="module")
def runs(tiny_mirror, tmp_path_factory) -> Path:
    """Two finished runs (multiclass and multilabel, fast_dev_run) and one unfinished dir."""
    root = tmp_path_factory.mktemp("runs")
    for task in ("multiclass", "multilabel"):
        args = [
            "--config", str(CONF / f"{task}.yaml"),
            "--data.data_dir", str(tiny_mirror),
            "--runs_root", str(root),
            "--name", f"tiny-{task}",
            "--trainer.fast_dev_run", "2",
        ]  # fmt: skip
        assert fit_main(args) == 0
    (root / "crashed" / "20260101-000000").mkdir(parents=True)
    return root


def test_compare_writes_markdown_csv_and_plot(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    run_dirs = sorted(runs.iterdir())  # runs/<name>, each holding one timestamped run
    assert compare_main([*map(str, run_dirs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "has no metrics.json" in captured.err and "crashed" in captured.err
    with (out / "comparison.csv").open() as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {"tiny-multiclass", "tiny-multilabel"}
    for task, key in (("multiclass", "acc"), ("multilabel", "map_macro")):
        run_dir = Path(rows[f"tiny-{task}"]["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert float(rows[f"tiny-{task}"][key]) == pytest.approx(metrics["test"][key])
        assert int(rows[f"tiny-{task}"]["params"]) == metrics["params"]
        assert float(rows[f"tiny-{task}"]["wall_time_s"]) == pytest.approx(metrics["wall_time_s"])
    assert rows["tiny-multilabel"]["acc"] == ""  # metrics of the other task stay empty
    markdown = (out / "comparison.md").read_text()
    assert "| tiny-multiclass | multiclass | test_resnet |" in markdown
    assert (out / "comparison.png").stat().st_size > 10_000


def test_compare_without_finished_runs_is_an_error(tmp_path, capsys):
    assert compare_main([str(tmp_path)]) == 2
    assert "none of the given directories holds a finished run" in capsys.readouterr().err
