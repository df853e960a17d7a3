"""Gender groups and group-balance weights on hand-built inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from met_vision.fairness import bias, groups


def test_parse_gender_vocab() -> None:
    assert groups.parse_gender_vocab(None) == groups.DEFAULT_GENDER_VOCAB
    assert groups.parse_gender_vocab("Women=female, Men=male,Nuns") == {
        "Women": "female",
        "Men": "male",
        "Nuns": "Nuns",
    }
    with pytest.raises(ValueError, match="empty"):
        groups.parse_gender_vocab("")
    with pytest.raises(ValueError, match="empty term"):
        groups.parse_gender_vocab("=female")


def test_depicted_and_artist_membership() -> None:
    matrix, names = groups.depicted_membership(
        [["Women", "Flowers"], ["Boys"], [], ["Girls", "Men"]], groups.DEFAULT_GENDER_VOCAB
    )
    assert names == ["female", "male"]
    assert matrix.tolist() == [[True, False], [False, True], [False, False], [True, True]]
    artist, names = groups.artist_membership(["Female", "", ""], [[], ["", "Female"], [""]])
    assert names == ["female", "unspecified"]
    assert artist.tolist() == [[True, False], [True, False], [False, True]]


def test_cell_balance_weights_remove_group_label_correlation() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    female = rng.random(n) < 0.5
    membership = np.stack([female, ~female], axis=1)
    # "cooking" is 3x more frequent among women, "driving" the reverse
    cooking = rng.random(n) < np.where(female, 0.6, 0.2)
    labels = np.stack([cooking, ~cooking], axis=1)
    weights = groups.cell_balance_weights(membership, labels)
    assert weights.mean() == pytest.approx(1.0)
    weighted = (membership.T.astype(float) * weights) @ labels.astype(float)
    scores = weighted / weighted.sum(axis=0, keepdims=True)
    np.testing.assert_allclose(scores, 0.5, atol=1e-9)
    assert bias.bias_scores(labels, membership)[0, 0] > 0.7  # unweighted: clearly biased


def test_cell_balance_weights_multiclass_and_no_group() -> None:
    membership = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 0]], dtype=bool)
    weights = groups.cell_balance_weights(membership, np.array([0, 0, 0, 0, 1]))
    # class 0: women 3, men 1 -> target 2: women 2/3 each, the man 2; object 5 keeps 1
    raw = np.array([2 / 3, 2 / 3, 2 / 3, 2.0, 1.0])
    np.testing.assert_allclose(weights, raw / raw.mean())


def test_group_balance_weights_skip_the_gender_labels() -> None:
    records = pd.DataFrame({"tags": [["Women", "Flowers"], ["Women"], ["Men", "Flowers"], ["Men"]]})
    names = ["Flowers", "Men", "Women"]
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], dtype=bool)
    weights = groups.group_balance_weights(records, labels, label_names=names)
    np.testing.assert_allclose(weights, 1.0)  # Flowers is balanced already


def _image(path, rgb) -> str:
    Image.new("RGB", (40, 40), rgb).save(path)
    return str(path)


def test_image_stats_and_warm_attribute_weights(tmp_path) -> None:
    warm = _image(tmp_path / "warm.png", (230, 140, 60))
    cool = _image(tmp_path / "cool.png", (60, 120, 200))
    assert groups.image_stats(warm)["warmth"] > groups.WARM_THRESHOLD
    assert groups.image_stats(cool)["warmth"] < 0
    # women mostly on warm backgrounds, men never
    records = pd.DataFrame(
        {
            "tags": [["Women"]] * 4 + [["Men"]] * 4,
            "path": [warm, warm, warm, cool, cool, cool, cool, cool],
        }
    )
    labels = np.zeros((8, 1), dtype=bool)
    weights = groups.training_weights(records, labels, attribute="warm")
    # women: 3 warm, 1 cool -> the cool one weighs 3x a warm one; men all cool -> equal
    assert weights[3] == pytest.approx(3 * weights[0])
    assert weights[4] == pytest.approx(weights[7])
    with pytest.raises(ValueError, match="unknown image attribute"):
        groups.training_weights(records, labels, attribute="shiny")
