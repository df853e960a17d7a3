"""The README's library example runs as written, with a tiny backbone on a tiny mirror."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1, "the README should have exactly one python example"
    return blocks[0]


def test_readme_library_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_mirror", ROOT / "tests" / "vision" / "data" / "make_mirror.py"
    )
    assert spec is not None and spec.loader is not None
    make_mirror = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_mirror)
    mirror = tmp_path / "data"
    make_mirror.make_mirror(mirror, n_objects=120, seed=3, specials=False)
    from met_vision.data.mirror import load_records

    with_image = load_records(mirror).query("has_image")["object_id"].astype(int).tolist()
    two_ids = [with_image[0], with_image[-1]]

    code = _readme_python_block()
    # Only sizes change: the same calls, on a tiny mirror with a tiny random backbone, offline.
    replacements = {
        "[436535, 45734]": str(two_ids),
        'data_dir="data"': f'data_dir="{mirror}"',
        "min_count=20": "min_count=1",
        '"resnet50"': '"test_resnet"',
        "pretrained=True": "pretrained=False",
        "batch_size=64": "batch_size=16, image_size=64, num_workers=0",
        "L.Trainer(max_epochs=10)": (
            'L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",'
            " logger=False, enable_checkpointing=False, enable_progress_bar=False)"
        ),
    }
    for old, new in replacements.items():
        assert old in code, f"README example changed: {old!r} not found"
        code = code.replace(old, new)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    namespace: dict[str, object] = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "tagger.ckpt").is_file()
    tagger, data = namespace["tagger"], namespace["data"]
    assert tagger.label_names == data.label_names  # type: ignore[attr-defined]
    assert str(data.label_names) in capsys.readouterr().out  # type: ignore[attr-defined]
    # the checkpoint's own preprocessing (image_size=64 here, not the backbone's default)
    assert tagger.data_config.input_size == 64  # type: ignore[attr-defined]
    predictions = namespace["predictions"]
    assert predictions["object_id"].tolist() == two_ids  # type: ignore[index]
    for labels, scores in zip(predictions["labels"], predictions["scores"], strict=True):  # type: ignore[index]
        assert set(scores) == set(data.label_names)  # type: ignore[attr-defined]
        thresholds = dict(zip(tagger.label_names, tagger.thresholds(), strict=True))  # type: ignore[attr-defined]
        assert labels == [n for n in tagger.label_names if scores[n] >= thresholds[n]]  # type: ignore[attr-defined]
