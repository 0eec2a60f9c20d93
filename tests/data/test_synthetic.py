"""The synthetic shapes dataset: layout, determinism, caching, and that the classes are learnable."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from imgclf.data.synthetic import (
    DEFAULT_CLASSES,
    MANIFEST_NAME,
    SHAPES,
    expected_files,
    make_synthetic_dataset,
)
from imgclf.errors import ConfigError, DataError


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _class_dirs(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "flat", per_class=40, image_size=64)


# --------------------------------------------------------------------------------------------
# layout


def test_flat_layout(flat):
    assert _class_dirs(flat) == sorted(DEFAULT_CLASSES)
    manifest = json.loads((flat / MANIFEST_NAME).read_text())
    assert manifest["classes"] == list(DEFAULT_CLASSES) and manifest["per_class"] == 40
    formats = {}
    for cls in DEFAULT_CLASSES:
        files = sorted((flat / cls).iterdir())
        assert len(files) == 40
        for f in files:
            assert f.name.startswith(f"{cls}_") and f.suffix in (".png", ".jpg")
            with Image.open(f) as im:
                assert im.format == {".png": "PNG", ".jpg": "JPEG"}[f.suffix]
                assert im.size == (64, 64) and im.mode == "RGB"
                formats[im.format] = formats.get(im.format, 0) + 1
    # mostly PNG, some JPEG
    assert formats["PNG"] > formats["JPEG"] > 0
    # nothing but the images and the hidden manifest
    assert len(_files(flat)) == 4 * 40 + 1


def test_train_validation_layout(tmp_path):
    root = make_synthetic_dataset(tmp_path / "tv", per_class=10, image_size=32, layout="train_validation")
    assert _class_dirs(root) == ["train", "validation"]
    for cls in DEFAULT_CLASSES:
        train = {p.name for p in (root / "train" / cls).iterdir()}
        val = {p.name for p in (root / "validation" / cls).iterdir()}
        assert (len(train), len(val)) == (8, 2)
        assert not train & val
    assert sorted(rel for _, _, rel in expected_files(DEFAULT_CLASSES, 10, "train_validation")) == [
        f for f in _files(root) if f != MANIFEST_NAME
    ]


def test_other_shapes_and_class_order(tmp_path):
    root = make_synthetic_dataset(tmp_path / "s", classes=("triangle", "star", "circle"), per_class=3,
                                  image_size=32)
    assert _class_dirs(root) == ["circle", "star", "triangle"]
    assert set(SHAPES) >= {"circle", "cross", "ring", "square", "triangle", "star"}


# --------------------------------------------------------------------------------------------
# determinism and caching


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = dict(per_class=6, image_size=40, layout="train_validation")
    a = make_synthetic_dataset(tmp_path / "a", seed=3, **kw)
    b = make_synthetic_dataset(tmp_path / "b", seed=3, **kw)
    c = make_synthetic_dataset(tmp_path / "c", seed=4, **kw)
    assert _files(a) == _files(b) == _files(c)
    images = [f for f in _files(a) if f != MANIFEST_NAME]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in _files(a))
    assert not any((a / f).read_bytes() == (c / f).read_bytes() for f in images)
    # and every image differs from every other one
    assert len({(a / f).read_bytes() for f in images}) == len(images)


def test_rerun_with_same_parameters_writes_nothing(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", per_class=4, image_size=32)
    before = {f: os.stat(root / f).st_mtime_ns for f in _files(root)}
    assert make_synthetic_dataset(str(root), per_class=4, image_size=32) == root
    assert {f: os.stat(root / f).st_mtime_ns for f in _files(root)} == before
    # no temporary folders left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_existing_empty_folder_is_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    root = make_synthetic_dataset(tmp_path / "empty", per_class=2, image_size=32)
    assert len(_files(root)) == 4 * 2 + 1


@pytest.mark.parametrize("change", [{"seed": 1}, {"per_class": 5}, {"image_size": 48},
                                    {"layout": "train_validation"}, {"classes": ("circle", "ring")}])
def test_other_parameters_on_the_same_folder_raise(tmp_path, change):
    root = make_synthetic_dataset(tmp_path / "d", per_class=4, image_size=32)
    before = _files(root)
    params = {"per_class": 4, "image_size": 32, **change}
    with pytest.raises(DataError) as info:
        make_synthetic_dataset(root, **params)
    msg = str(info.value)
    assert "\n" not in msg and str(root) in msg and "other parameters" in msg
    assert _files(root) == before


def test_foreign_content_raises(tmp_path):
    (tmp_path / "mine" / "cats").mkdir(parents=True)
    (tmp_path / "mine" / "cats" / "a.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="not an imgclf synthetic dataset"):
        make_synthetic_dataset(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        make_synthetic_dataset(tmp_path / "file")


def test_incomplete_dataset_raises(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", per_class=3, image_size=32)
    (root / "ring" / "ring_001.png").unlink()
    with pytest.raises(DataError, match="incomplete"):
        make_synthetic_dataset(root, per_class=3, image_size=32)


@pytest.mark.parametrize("kw", [{"classes": ("circle", "hexagon")}, {"classes": ("circle",)},
                                {"classes": ("ring", "ring")}, {"layout": "nested"}, {"per_class": 0},
                                {"per_class": 1, "layout": "train_validation"}, {"image_size": 8},
                                {"seed": -1}])
def test_invalid_options_raise_config_error(tmp_path, kw):
    with pytest.raises(ConfigError):
        make_synthetic_dataset(tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------
# the classes are visually distinct, and not by colour


def _shape_features(rgb: np.ndarray) -> np.ndarray:
    """Translation-, rotation- and colour-invariant outline statistics (numpy only).

    Edges = strong colour gradients; features = the histogram of the edge pixels' distances
    from their centroid (relative to the median distance: a ring has two radii, a circle
    one, a square and a cross a spread), how strongly the edge orientations follow a
    90-degree pattern (square, cross), and the outline length relative to the size.
    """
    x = rgb.astype(np.float32)
    h, w = x.shape[:2]
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    x = sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    gx[:, 1:-1] = (x[:, 2:] - x[:, :-2]) / 2
    gy[1:-1] = (x[2:] - x[:-2]) / 2
    jxx, jyy, jxy = (gx * gx).sum(2), (gy * gy).sum(2), (gx * gy).sum(2)
    mag = np.sqrt(jxx + jyy)
    edge = mag > 0.35 * np.percentile(mag, 99.5)
    ys, xs = np.nonzero(edge)
    wt = mag[edge]
    r = np.hypot(ys - np.average(ys, weights=wt), xs - np.average(xs, weights=wt))
    rm = np.median(r) + 1e-6
    hist = np.histogram(r / rm, bins=10, range=(0, 2), weights=wt)[0] / wt.sum()
    phi = np.arctan2(2 * jxy[edge], jxx[edge] - jyy[edge])  # doubled edge orientation
    right_angles = np.abs(np.average(np.exp(2j * phi), weights=wt))
    return np.concatenate([hist, [right_angles, edge.sum() / rm / 10]])


def _nearest_centroid_accuracy(x, y, train):
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mu) / sd
    centroids = np.stack([z[train & (y == k)].mean(0) for k in np.unique(y)])
    pred = np.argmin(((z[~train, None] - centroids[None]) ** 2).sum(-1), 1)
    return float((pred == y[~train]).mean())


def _load(root):
    images, labels, index = [], [], []
    for k, cls in enumerate(DEFAULT_CLASSES):
        for i, f in enumerate(sorted((root / cls).iterdir())):
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(k)
            index.append(i)
    return images, np.array(labels), np.array(index) % 4 != 0  # 3/4 train, 1/4 held out


def test_shapes_are_learnable_from_outline_features(flat):
    images, y, train = _load(flat)
    x = np.stack([_shape_features(im) for im in images])
    acc = _nearest_centroid_accuracy(x, y, train)
    assert acc >= 0.7, f"nearest-centroid accuracy on held-out images {acc:.2f} (chance 0.25)"


def test_colour_does_not_give_the_class_away(flat):
    images, y, train = _load(flat)
    # mean chromaticity (colour without brightness) of each image
    mean = np.stack([im.reshape(-1, 3).mean(0) for im in images])
    chroma = mean / mean.sum(1, keepdims=True)
    acc = _nearest_centroid_accuracy(chroma, y, train)
    assert acc < 0.5, f"the mean colour alone predicts the class ({acc:.2f})"
