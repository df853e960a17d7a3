"""bench/gpu.py at tiny sizes on CPU, so that the GPU benchmark cannot rot between GPU hosts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import timm

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


@pytest.mark.slow
def test_gpu_bench_runs_tiny_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = bench
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--models", "resnet50"]) == 0  # one model: the same code path
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device: CPU;")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"resnet50"}
    for name in bench.MODELS:  # the GPU run's models exist and have reference figures
        assert (
            timm.is_model(name)
            and name in bench.TIMM_INFER_RTX4090
            and name in bench.TIMM_TRAIN_RTX3090
        )
    for cells in rows.values():
        train, infer, loader = (float(c) for c in cells[3:6])
        assert train > 0 and infer > 0 and loader > 0
    # the reference scaling of a known card, from the data sheets in the script
    assert bench.device_scale("NVIDIA H200", "RTX 4090") == pytest.approx(4800 / 1008)
    assert bench.device_scale("NVIDIA A100-SXM4-80GB", "RTX 3090") == pytest.approx(2039 / 936)
    assert bench.device_scale("Some Future Card", "RTX 4090") is None
