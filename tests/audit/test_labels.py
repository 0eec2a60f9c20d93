"""Suspected mislabels on features a linear head separates cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from imgclf.audit.labels import label_issues
from imgclf.errors import ConfigError


def _blobs(n=120, d=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n // 3)
    centres = rng.normal(0, 1, (3, d)) * 4
    return centres[labels] + rng.normal(0, 1, (len(labels), d)), labels


def test_flipped_labels_are_found_and_ranked_with_their_true_class():
    x, labels = _blobs()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(labels), 8, replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + 1) % 3
    names = ["ant", "bee", "cat"]
    paths = [f"img{i}.png" for i in range(len(labels))]
    found, info = label_issues(x, given, paths, names, folds=4)
    hit = {f["path"] for f in found} & {paths[i] for i in flipped}
    assert len(hit) == 8 and len(found) <= 9
    by_path = {f["path"]: f for f in found}
    for i in flipped:
        f = by_path[paths[i]]
        assert f["given"] == names[given[i]] and f["suggested"] == names[labels[i]]
        assert f["confidence"] > 0.5 and f["score"] < 0.5
    scores = [f["score"] for f in found]
    assert scores == sorted(scores)  # most suspect first
    assert info["folds"] == 4 and info["out_of_fold_accuracy"] > 0.9


def test_a_class_with_fewer_images_than_folds_is_a_clear_error():
    x, labels = _blobs(30)
    labels[:] = 0
    labels[:3] = 1
    with pytest.raises(ConfigError, match=r"class 'b' has 3 image\(s\), fewer than the 5 folds.*--folds 3"):
        label_issues(x, labels, [str(i) for i in range(30)], ["a", "b"], folds=5)
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        label_issues(x, labels, [str(i) for i in range(30)], ["a", "b"], folds=1)
