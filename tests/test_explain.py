"""imgclf.explain: Grad-CAM for every registry model, the heatmap on the planted object, the API."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import imgclf
from imgclf.explain import ExplainError, GradCAM
from imgclf.models import build_model, list_models
from tests.conftest import MOBILENET_WEIGHTS, requires_weights
from tests.inference.conftest import test_images  # noqa: F401  (a fixture; trained_run is in tests/conftest.py)


@pytest.mark.parametrize("name", [s.name for s in list_models()])
@pytest.mark.slow
def test_every_registry_model_has_a_feature_map_and_gives_maps_of_the_input_size(name):
    spec = imgclf.models.get_spec(name)
    model = build_model(name, 3, 32, weights=None, seed=0).model
    cam = GradCAM(model, compile=False)  # checks that its layer-by-layer pass is the model's own output
    if spec.is_transfer:
        assert isinstance(cam.target, type(model)) or hasattr(cam.target, "layers")  # the nested backbone
    else:
        assert cam.target.name == "conv3"
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    heat, probs = cam(x)
    assert heat.shape == (2, 32, 32) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1
    np.testing.assert_allclose(probs, np.asarray(model(x, training=False)), atol=1e-5)


def test_a_model_without_convolutions_is_a_clear_error():
    import keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ExplainError, match="no convolutional layer"):
        GradCAM(model)


def _planted(root, size, n, seed=0, radius=1 / 8):
    """Class ``object``: a bright disc (``radius`` of the side) somewhere on grey noise; ``empty``: the noise."""
    rng = np.random.default_rng(seed)
    centres = {}
    for cls in ("empty", "object"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.normal(110, 20, (size, size, 3)).clip(0, 255)
            if cls == "object":
                r = int(size * radius)
                cy, cx = rng.integers(r + 2, size - r - 2, 2)
                yy, xx = np.mgrid[:size, :size]
                img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (250, 60, 40)
                centres[f"object_{i}.png"] = (cy, cx, r)
            Image.fromarray(img.astype(np.uint8)).save(root / cls / f"{cls}_{i}.png")
    return root, centres


def _peaks_inside(run, ds, centres, margin):
    from pathlib import Path

    cam = GradCAM(run.model)
    names = run.class_names
    paths = [Path(p) for p in ds.paths("test") if Path(p).name in centres]
    images = np.stack([imgclf.load_image(p, (run.image_size, run.image_size)) for p in paths]).astype(np.float32)
    heat, probs = cam(images, [names.index("object")] * len(paths))
    hits = 0
    for p, h in zip(paths, heat):
        cy, cx, r = centres[p.name]
        y, x = np.unravel_index(np.argmax(h), h.shape)
        hits += (y - cy) ** 2 + (x - cx) ** 2 <= (r + margin) ** 2
    assert paths
    return hits, len(paths)


@pytest.mark.slow
def test_the_cnn_heatmap_peaks_on_the_planted_object(tmp_path):
    data, centres = _planted(tmp_path / "data", 64, 48)
    ds = imgclf.load_dataset(data, image_size=64, validation=0.2, test=0.3, progress=False)
    run = imgclf.train(ds, "cnn_aug_pre", output=tmp_path / "run", epochs=8, image_size=64, augment="none",
                       precision="float32", calibrate=False, progress=False)
    assert run.metrics()["test"]["accuracy"] >= 0.9
    hits, n = _peaks_inside(run, ds, centres, margin=4)
    assert hits >= 0.8 * n, f"{hits} of {n} heatmaps peak on the object"


@requires_weights
@pytest.mark.integration
def test_the_transfer_heatmap_peaks_on_the_planted_object(tmp_path):
    # at 224x224, the size the ImageNet weights were trained at, the feature map is 7x7
    data, centres = _planted(tmp_path / "data", 224, 24, radius=1 / 5)
    ds = imgclf.load_dataset(data, image_size=224, validation=0.2, test=0.4, progress=False)
    run = imgclf.train(ds, "mobilenet_v2", output=tmp_path / "run", epochs=10, image_size=224,
                       weights=str(MOBILENET_WEIGHTS), augment="none", calibrate=False, progress=False)
    hits, n = _peaks_inside(run, ds, centres, margin=8)  # one cell of the map is 32 pixels
    assert hits >= 0.8 * n, f"{hits} of {n} heatmaps peak on the object"


def test_run_explain_returns_the_heatmap_and_a_figure(trained_run, test_images, tmp_path):
    e = trained_run.explain(test_images[0])
    assert e.heatmap.shape == (32, 32) and e.image.shape == (32, 32, 3)
    assert e.label in trained_run.class_names and e.class_name == e.label
    top = trained_run.predict(test_images[0])[0]
    assert e.probability == pytest.approx(top.probability, abs=1e-5)
    heatmap, fig = e
    assert heatmap is e.heatmap and len(fig.axes) >= 2
    other = [c for c in trained_run.class_names if c != e.label][0]
    assert trained_run.explain(test_images[0], class_name=other).class_name == other
    path = e.save(tmp_path / "x.png")
    assert Image.open(path).size == (32, 32)
    with pytest.raises(imgclf.ConfigError, match="unknown class"):
        trained_run.explain(test_images[0], class_name="zebra")
    with pytest.raises(imgclf.DataError, match="not an image"):
        trained_run.explain(b"not an image at all")
