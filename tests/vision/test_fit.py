"""``python -m met_vision.fit``: every config, the run directory, checkpoint round trip, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, fbeta_score

from met_vision.fit import main
from met_vision.trainers.classification import ClassificationTask

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "tests" / "vision" / "conf"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

# swap the heavy GPU settings of configs/ for a tiny CPU run on the tiny mirror
TINY = [
    "--model.backbone", "test_resnet",
    "--model.pretrained", "false",
    "--trainer.accelerator", "cpu",
    "--trainer.devices", "1",
    "--trainer.precision", "32",
    "--trainer.enable_progress_bar", "false",
    "--data.min_count", "1",
    "--data.batch_size", "8",
    "--data.num_workers", "0",
    "--data.persistent_workers", "false",
    "--data.image_size", "64",
    "--trainer.fast_dev_run", "1",
]  # fmt: skip


def test_configs_cover_the_three_backbones_and_both_tasks():
    names = {p.stem for p in CONFIGS}
    assert names >= {
        f"{b}-{t}"
        for b in ("resnet50", "resnet101", "inception_resnet_v2")
        for t in ("multiclass", "multilabel")
    }


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_fast_dev_run(config, tiny_mirror, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--config", str(config), "--data.data_dir", str(tiny_mirror), "--run_dir", str(run_dir)]
    assert main([*args, *TINY]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    task = config.stem.rsplit("-", 1)[1]  # <backbone>-<task>.yaml
    assert metrics["task"] == task and metrics["backbone"] == "test_resnet"
    assert metrics["num_test_samples"] > 0
    test = metrics["test"]
    if task == "multiclass":  # accuracy against the (separately computed) confusion matrix
        confusion = np.asarray(metrics["confusion_matrix"])
        assert confusion.sum() == metrics["num_test_samples"]
        assert test["acc"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-6)
    else:  # macro AP against the per-class APs of the classes with positives
        ap = [v for v in metrics["per_class"]["ap"].values() if not np.isnan(v)]
        assert test["map_macro"] == pytest.approx(np.mean(ap), abs=1e-6)
    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels["names"] == metrics["labels"] and labels["task"] == task
    assert "backbone: test_resnet" in (run_dir / "config.yaml").read_text()


@pytest.fixture(scope="module")
def trained_run(tiny_mirror, tmp_path_factory) -> Path:
    """Two short real epochs of the tiny multilabel config (checkpoints and logs on)."""
    run_dir = tmp_path_factory.mktemp("fit") / "run"
    args = [
        "--config", str(CONF / "multilabel.yaml"),
        "--data.data_dir", str(tiny_mirror),
        "--run_dir", str(run_dir),
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "3",
    ]  # fmt: skip
    assert main(args) == 0
    return run_dir


def test_run_dir_holds_everything(trained_run):
    for name in ("config.yaml", "labels.json", "metrics.json", "curves.json", "csv/metrics.csv"):
        assert (trained_run / name).is_file(), name
    assert {p.name for p in (trained_run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert list((trained_run / "tb").glob("events.out.tfevents.*"))
    assert {p.name for p in (trained_run / "plots").iterdir()} == {
        "pr_curves.png",
        "per_class_f1.png",
    }
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["params"] > 0 and metrics["epochs"] == 2 and metrics["global_step"] == 6
    assert metrics["train_images_per_s"] > 0 and metrics["inference_images_per_s"] > 0
    assert metrics["wall_time_s"] >= metrics["fit_time_s"] > 0
    assert metrics["best_checkpoint"] == str(trained_run / "checkpoints" / "best.ckpt")
    probs, target = _best_checkpoint_test_scores(trained_run)
    assert len(probs) == metrics["num_test_samples"]
    thresholds = metrics["thresholds"]
    expected = {  # recomputed with scikit-learn from the best checkpoint's test scores
        "map_micro": average_precision_score(target, probs, average="micro"),
        "f1_micro": f1_score(target, probs >= thresholds["f1"], average="micro"),
        "f2_micro": fbeta_score(target, probs >= thresholds["f2"], beta=2, average="micro"),
        "precision_at_1": target[np.arange(len(probs)), probs.argmax(1)].mean(),
    }
    for key, value in expected.items():
        assert metrics["test"][key] == pytest.approx(value, abs=1e-4), key
    assert set(metrics["thresholds"]["f1_per_class"]) == set(metrics["labels"])
    header = (trained_run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/map_macro" in header and "train/loss_epoch" in header


def _best_checkpoint_test_scores(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Scores and targets of the test split under ``best.ckpt``, computed outside ``fit``."""
    import yaml

    from met_vision.data.datamodule import MetDataModule

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    # fit links model.backbone to data.model_name (the backbone's mean, std and resizing)
    data = MetDataModule(**config["data"], model_name=config["model"]["backbone"])
    data.setup("test")
    model = ClassificationTask.load_from_checkpoint(
        run_dir / "checkpoints" / "best.ckpt", map_location="cpu"
    ).eval()
    probs, targets = [], []
    with torch.no_grad():
        for batch in data.test_dataloader():
            batch = model.on_after_batch_transfer(batch, 0)
            probs.append(model.predict_probs(model(batch["image"])))
            targets.append(batch["label"])
    return torch.cat(probs).numpy(), torch.cat(targets).int().numpy()


def test_checkpoint_round_trip_without_data(trained_run, tiny_mirror, tmp_path):
    best = trained_run / "checkpoints" / "best.ckpt"
    model = ClassificationTask.load_from_checkpoint(best, map_location="cpu")
    labels = json.loads((trained_run / "labels.json").read_text())
    assert model.label_names == labels["names"]
    assert model.label_space.definition_hash == labels["definition_hash"]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert float(model.thr_f1) == pytest.approx(metrics["thresholds"]["f1"])
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, len(labels["names"]))
    # evaluating the checkpoint again in a new process state gives the same test metrics
    again = tmp_path / "again"
    args = [
        "--config", str(trained_run / "config.yaml"),
        "--run_dir", str(again),
        "--fit", "false",
        "--ckpt_path", str(best),
    ]  # fmt: skip
    assert main(args) == 0
    retest = json.loads((again / "metrics.json").read_text())
    for key, value in metrics["test"].items():
        assert retest["test"][key] == pytest.approx(value, abs=1e-5), key


def test_resume_from_last_checkpoint(trained_run, tmp_path):
    last = trained_run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    resumed = tmp_path / "resumed"
    args = [
        "--config", str(trained_run / "config.yaml"),
        "--run_dir", str(resumed),
        "--ckpt_path", str(last),
        "--trainer.max_epochs", "3",
    ]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert saved["epoch"] == 1 and saved["global_step"] == 6
    assert metrics["epochs"] == 3 and metrics["global_step"] == 9  # one more epoch, not three
    epochs = {
        line.split(",")[0]
        for line in (resumed / "csv" / "metrics.csv").read_text().splitlines()[1:]
    }
    assert "0" not in epochs and "2" in epochs


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.lernrate", "0.1"], "unrecognized arguments: --model.lernrate"),
        (
            ["--model.backbone", "resnet5O"],
            "unknown timm backbone 'resnet5O'; did you mean resnet50",
        ),
        (["--model.loss", "hinge"], "got 'hinge', expected one of ['ce', 'bce', 'focal', 'asl']"),
        (["--trainer.max_epochs", "ten"], "Parser key \"trainer.max_epochs\": got 'ten'"),
        (["--data.data_dir", "/nonexistent/met"], "/nonexistent/met"),
    ],
)
def test_config_errors_are_one_clear_line(extra, message, tiny_mirror, tmp_path, capsys):
    args = ["--config", str(CONF / "multiclass.yaml"), "--data.data_dir", str(tiny_mirror)]
    assert main([*args, "--run_dir", str(tmp_path / "r"), *extra]) == 2
    err = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("met_vision.fit")
    ]
    assert len(err) == 1 and err[0].startswith("met_vision.fit: error: ")
    assert message in err[0]
    assert not (tmp_path / "r").exists()


def test_yaml_typo_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: test_resnet\n  lrr: 0.1\n")
    assert main(["--config", str(bad)]) == 2
    assert (
        "met_vision.fit: error: Group 'model' does not accept option 'lrr'"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_builds_its_real_backbone(config: Path) -> None:
    """The config's own model and data sections (real backbone, every option), type-checked by
    jsonargparse and instantiated on the meta device: no weights are made or downloaded."""
    import yaml
    from jsonargparse import ArgumentParser

    from met_vision.data.datamodule import MetDataModule

    raw = yaml.safe_load(config.read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ClassificationTask, "model")
    parser.add_class_arguments(MetDataModule, "data")
    parsed = parser.parse_object({"model": raw["model"], "data": raw["data"]})
    options = {**parsed.model.as_dict(), "pretrained": False, "num_classes": 7}
    options["task"] = parsed.data.task  # linked from the data module by met_vision.fit
    with torch.device("meta"):
        model = ClassificationTask(**options)
    assert model.hparams["backbone"] == raw["model"]["backbone"]
    assert model.model.pretrained_cfg["architecture"] == raw["model"]["backbone"]
    assert next(model.parameters()).is_meta and model.num_classes == 7
