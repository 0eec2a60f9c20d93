"""imgclf.inference.tta: the views, averaging, and TTA in predict and evaluate."""

from __future__ import annotations

import numpy as np
import pytest

from imgclf.errors import ConfigError
from imgclf.inference import tta


def test_views_are_the_image_its_mirror_and_four_corner_crops():
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    flip = tta.views(x, "flip")
    assert len(flip) == 2 and np.array_equal(flip[0], x) and np.array_equal(flip[1], x[:, :, ::-1])
    crops = tta.views(x, "crops")
    assert len(crops) == 6 == tta.view_count("crops") and all(v.shape == x.shape for v in crops)
    # the top-left crop keeps the top-left corner pixel
    np.testing.assert_allclose(crops[2][:, 0, 0], x[:, 0, 0], atol=1e-3)
    assert tta.check_mode(None) is None and tta.check_mode("none") is None and tta.check_mode(True) == "flip"
    with pytest.raises(ConfigError, match="choose one of: flip, crops"):
        tta.check_mode("rotate")


def test_tta_averages_over_the_views():
    x = np.random.default_rng(1).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)

    def model(batch):  # "probability" = brightness of the left half, so a flip changes it
        left = batch[:, :, :4].mean(axis=(1, 2, 3)) / 255
        return np.stack([left, 1 - left], axis=1)

    got = tta.predict_tta(model, x, "flip")
    np.testing.assert_allclose(got, (model(x) + model(x[:, :, ::-1])) / 2, rtol=1e-6)
    np.testing.assert_allclose(tta.predict_tta(model, x, None), model(x))


def test_a_mirror_symmetric_image_gives_the_same_answer_with_and_without_tta(trained_run):
    rng = np.random.default_rng(2)
    half = rng.uniform(0, 255, (32, 16, 3))
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1).astype(np.uint8)
    plain = trained_run.predict(symmetric, top_k=2)[0]
    flipped = trained_run.predict(symmetric, top_k=2, tta="flip")[0]
    assert plain.label == flipped.label
    assert flipped.top_k[0][1] == pytest.approx(plain.top_k[0][1], abs=1e-6)


def test_evaluate_reports_accuracy_with_and_without_tta(trained_run, cli):
    plain = trained_run.evaluate("test", progress=False)
    result = trained_run.evaluate("test", progress=False, tta="crops")
    t = result["tta"]
    assert t["mode"] == "crops" and t["views"] == 6 and t["count"] == plain["count"]
    assert t["accuracy_without"] == pytest.approx(plain["accuracy"])
    assert 0 <= t["accuracy"] <= 1 and 0 <= t["changed"] <= t["count"]
    code, out, err = cli("evaluate", trained_run.path, "--tta", "-q")
    assert code == 0 and "test-time augmentation (flip, 2 views): accuracy" in out
