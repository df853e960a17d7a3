"""The public `Predictor`: inputs of every kind, the checkpoint's own preprocessing and
thresholds, safe loading, own checkpoints as `pretrained_path`, a killed run that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from xai_support import BACKBONE, TrainedModel, quick_model  # noqa: F401

from met_vision import ClassificationTask, InputError, Predictor
from met_vision import predict as predict_cli


def _copy_ckpt(src: Path, dst: Path, edit: object = None) -> Path:
    raw = torch.load(src, map_location="cpu", weights_only=True)
    if callable(edit):
        edit(raw)
    torch.save(raw, dst)
    return dst


def _paths(predictor: Predictor, model: TrainedModel, ids: list[int]) -> list[str]:
    from met_vision.inference.mirror import mirror_images

    return mirror_images(predictor, model.data_dir, object_ids=ids)["path"].tolist()


def test_predict_takes_pil_files_folders_and_object_ids(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    predictor = Predictor.from_checkpoint(quick_model.ckpt, device="cpu")
    ids = quick_model.split_ids("test")[:3]
    by_id = predictor.predict(ids, data_dir=quick_model.data_dir)
    assert by_id["object_id"].tolist() == ids and (by_id["error"] == "").all()
    folder = tmp_path / "folder"
    folder.mkdir()
    images = [Image.open(p).convert("RGB") for p in _paths(predictor, quick_model, ids)]
    for oid, image in zip(ids, images, strict=True):
        image.save(folder / f"{oid}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    from_folder = predictor.predict(folder)
    from_pil = predictor.predict(images)
    good = from_folder[from_folder["error"] == ""]
    assert len(from_folder) == 4 and len(good) == 3
    assert "broken.jpg" in from_folder.loc[from_folder["error"] != "", "error"].iloc[0]
    for table in (good.reset_index(drop=True), from_pil):
        scores = np.array([[row[n] for n in predictor.label_names] for row in table["scores"]])
        expected = np.array([[row[n] for n in predictor.label_names] for row in by_id["scores"]])
        np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert from_pil["image"].tolist() == [f"<PIL image {i}>" for i in range(3)]


def test_decisions_use_the_tuned_per_class_thresholds(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    def tune(raw: dict) -> None:
        thr = raw["state_dict"]["thr_f1_class"]
        thr.fill_(0.5)
        thr[0], thr[1] = 0.0, 1.01  # class 0 always decided, class 1 never
        raw["state_dict"]["thr_f1"].fill_(0.5)

    ckpt = _copy_ckpt(quick_model.ckpt, tmp_path / "tuned.ckpt", tune)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    table = predictor.predict(quick_model.split_ids("test")[:5], data_dir=quick_model.data_dir)
    first, second = predictor.label_names[:2]
    assert all(first in labels and second not in labels for labels in table["labels"])
    for labels, scores in zip(table["labels"], table["scores"], strict=True):
        rest = [n for n in predictor.label_names[2:] if scores[n] >= 0.5]
        assert labels == [first, *rest]


def test_checkpoint_carries_its_data_config(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    raw = torch.load(quick_model.ckpt, map_location="cpu", weights_only=True)
    stored = raw["hyper_parameters"]["data_config"]
    assert tuple(stored["input_size"]) == (3, 64, 64)  # trained at 64, not test_resnet's 160
    task = ClassificationTask(**raw["hyper_parameters"])
    assert task.data_config["input_size"] == stored["input_size"]

    def smaller(raw: dict) -> None:
        raw["hyper_parameters"]["data_config"]["input_size"] = (3, 40, 40)

    predictor = Predictor.from_checkpoint(
        _copy_ckpt(quick_model.ckpt, tmp_path / "s.ckpt", smaller), "cpu"
    )
    (positions, images, _), *_ = list(
        predictor.batches(_paths(predictor, quick_model, quick_model.split_ids("test")[:2]))
    )
    assert positions == [0, 1] and tuple(images.shape[-2:]) == (40, 40)


class _Planted:
    """Unpickling this runs ``Path.touch`` (what an untrusted checkpoint could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_loading_refuses_pickled_objects(quick_model: TrainedModel, tmp_path: Path) -> None:  # noqa: F811
    marker = tmp_path / "code-ran"
    raw = torch.load(quick_model.ckpt, map_location="cpu", weights_only=True)
    raw["callbacks"] = {"planted": _Planted(marker)}
    torch.save(raw, tmp_path / "evil.ckpt")
    with pytest.raises(InputError, match="cannot load"):
        Predictor.from_checkpoint(tmp_path / "evil.ckpt", device="cpu")
    assert not marker.exists()


def test_own_checkpoint_as_pretrained_path(quick_model: TrainedModel) -> None:  # noqa: F811
    raw = torch.load(quick_model.ckpt, map_location="cpu", weights_only=True)
    task = ClassificationTask(
        task="multilabel", backbone=BACKBONE, num_classes=3, pretrained_path=str(quick_model.ckpt)
    )
    body = {k[len("model.") :]: v for k, v in raw["state_dict"].items() if k.startswith("model.")}
    own = task.model.state_dict()
    loaded = [k for k in body if not k.startswith("fc.")]
    assert loaded and all(torch.equal(own[k], body[k]) for k in loaded)


def test_killed_predict_resumes_on_two_devices(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--ckpt", str(quick_model.ckpt), "--data-dir", str(quick_model.data_dir)]
    opts = ["--split", "all", "--device", "cpu", "--num-workers", "0", "--chunk-size", "4"]
    whole = tmp_path / "whole.parquet"
    assert predict_cli.main([*base, *opts, "--out", str(whole)]) == 0
    out = tmp_path / "killed.parquet"
    parts = tmp_path / "killed.parquet.parts"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "met_vision.predict", *base, *opts, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(parts.glob("part-*.npz")) and time.monotonic() < deadline:
        assert proc.poll() is None, "predict ended before it was killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("part-*.npz")))
    assert done >= 1 and not out.exists()
    capsys.readouterr()
    assert predict_cli.main([*base, *opts, "--out", str(out), "--devices", "2"]) == 0
    assert f"({done} chunks reused from an interrupted run)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(whole))
    assert not parts.exists()


def test_cpu_inference_is_channels_last_with_matching_scores(
    quick_model: TrainedModel,  # noqa: F811
) -> None:
    """The CPU path's NHWC layout changes nothing beyond float rounding; the loader workers
    and the intra-op threads never ask for more CPUs than the process may use."""
    from met_vision.inference.runner import cpu_threads, usable_cpus

    predictor = Predictor.from_checkpoint(quick_model.ckpt, device="cpu")
    assert predictor.task.channels_last
    conv = next(m for m in predictor.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    paths = _paths(predictor, quick_model, quick_model.split_ids("test")[:4])
    _positions, images, _errors = next(predictor.batches(paths))
    fast = predictor.probs_of(images)
    predictor.task.channels_last = False
    predictor.network.to(memory_format=torch.contiguous_format)
    plain = predictor.probs_of(images.contiguous())
    np.testing.assert_allclose(fast, plain, atol=1e-5)
    cpus = usable_cpus()
    assert cpu_threads(0) == cpus and cpu_threads(cpus + 3) == 1
    assert cpu_threads(1, processes=2) == max(1, cpus // 2 - 1)


def test_light_network_scores_like_the_lightning_task(
    quick_model: TrainedModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The Lightning-free `TrainedNetwork` is the task's network: same weights, thresholds and
    normalisation, bit-identical scores through the network itself and the same up to float
    rounding through the BatchNorm-folded inference copy; a checkpoint whose weights do not fit
    is refused."""
    from met_vision.inference.inputs import ImageInputs

    predictor = Predictor.from_checkpoint(quick_model.ckpt, device="cpu")
    raw = torch.load(quick_model.ckpt, map_location="cpu", weights_only=True)
    task = ClassificationTask(**raw["hyper_parameters"])
    task.load_state_dict(raw["state_dict"])
    task.on_load_checkpoint(raw)
    task._channels_last = True
    task.model.to(memory_format=torch.channels_last)
    task.eval()
    paths = _paths(predictor, quick_model, quick_model.split_ids("test")[:6])
    (_positions, images, _errors), *_ = list(predictor.batches(paths))
    with torch.inference_mode():
        decoded = ImageInputs(paths, predictor.transform(), predictor.data_config.input_size)
        uint8 = torch.stack([decoded[i]["image"] for i in range(len(paths))])
        expected = task.predict_probs(
            task(task.on_after_batch_transfer({"image": uint8}, 0)["image"])
        )
        unfolded = predictor.task.probs(predictor.task(images))
    np.testing.assert_array_equal(unfolded.numpy(), expected.numpy())
    np.testing.assert_allclose(predictor.probs_of(images), expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predictor.thresholds(), task.thr_f1_class.numpy())
    assert predictor.label_names == task.label_names

    def other_head(raw: dict) -> None:
        raw["state_dict"]["model.fc.weight"] = torch.zeros(7, 3)

    bad = _copy_ckpt(quick_model.ckpt, tmp_path / "bad.ckpt", other_head)
    with pytest.raises(InputError, match="cannot rebuild the model"):
        Predictor.from_checkpoint(bad, device="cpu")


def test_labelled_objects_are_the_datamodules_frame(quick_model: TrainedModel) -> None:  # noqa: F811
    """predict's mirror lookup (no MetDataModule, no Lightning) reads the frame training read."""
    from met_vision.inference.mirror import datamodule_for, labelled_objects

    predictor = Predictor.from_checkpoint(quick_model.ckpt, device="cpu")
    light = labelled_objects(predictor, quick_model.data_dir)
    frame = datamodule_for(predictor, quick_model.data_dir).frame
    assert len(light) and "cache" in light["path"].iloc[0]
    pd.testing.assert_frame_equal(light, frame)
