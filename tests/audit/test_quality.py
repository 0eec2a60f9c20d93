"""Pixel checks: each flags what it names, at the threshold it prints."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

import imgclf
from imgclf.audit import audit
from imgclf.audit.quality import THRESHOLDS, feature_outliers
from tests.imagefactory import write_image


def test_each_pixel_check_flags_its_image(tmp_path):
    root = tmp_path / "data"
    for i in range(6):  # ordinary, sharp, mid-grey images
        for cls in ("a", "b"):
            write_image(root / cls / f"ok{i}.png", "png", size=(96, 96), color=(128, 110, 90), noise=40, seed=i)
    write_image(root / "a" / "flat.png", "png", size=(96, 96), color=(128, 128, 128))
    write_image(root / "a" / "dark.png", "png", size=(96, 96), color=(12, 12, 12), noise=12)
    write_image(root / "a" / "bright.png", "png", size=(96, 96), color=(245, 245, 245), noise=12)
    squares = (np.indices((160, 160)).sum(0) // 40 % 2 * 200 + 30).astype(np.uint8)  # big checkerboard
    Image.fromarray(squares).convert("RGB").filter(ImageFilter.GaussianBlur(8)).save(root / "b" / "blurry.png")
    write_image(root / "b" / "strip.png", "png", size=(200, 40), color=(128, 110, 90), noise=40)
    write_image(root / "b" / "tiny.png", "png", size=(20, 20), color=(128, 110, 90), noise=40)
    ds = imgclf.load_dataset(root, image_size=32, progress=False)
    a = audit(ds, weights=None, progress=False)
    flagged = {(o["path"], o["issue"]) for o in a.outliers}
    assert flagged == {("a/flat.png", "low_information"), ("a/dark.png", "dark"), ("a/bright.png", "bright"),
                       ("b/blurry.png", "blurry"), ("b/strip.png", "extreme_aspect"), ("b/tiny.png", "tiny")}
    for name, check in a.checks.items():
        if name in THRESHOLDS:
            assert check["threshold"].startswith(THRESHOLDS[name])
    assert all(o["threshold"] == THRESHOLDS[o["issue"]] for o in a.outliers)


def test_feature_outliers_are_the_far_away_images():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (200, 8)) + 10
    x[[5, 77]] = -rng.normal(0, 1, (2, 8)) * 10 - 10
    out, info = feature_outliers(x, [f"p{i}" for i in range(200)], ["c"] * 200)
    assert {o["path"] for o in out[:2]} == {"p5", "p77"}  # the far ones first
    assert len(out) <= 10
    assert info["threshold"] is not None and all(o["score"] < info["threshold"] for o in out)
