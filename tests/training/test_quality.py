"""Quality bar on the real data: cats_and_dogs_filtered with the MobileNetV2 0.35 ImageNet file.

Slow (about three minutes on two cores): the only tests that train on ../shared data.
"""

import pytest

import imgclf
from tests.conftest import CATS_AND_DOGS, MOBILENET_WEIGHTS, requires_shared, requires_weights

pytestmark = [requires_shared, requires_weights, pytest.mark.integration]


@pytest.fixture(scope="module")
def cats_and_dogs():
    return imgclf.load_dataset(CATS_AND_DOGS, progress=False)


def _train(ds, tmp_path, **kw):
    return imgclf.train(ds, output=tmp_path / "run", progress=False, **kw)


def test_mobilenet_v2_at_its_native_224_then_fine_tuned(cats_and_dogs, tmp_path):
    """The bar (96.5%) on validation and test with the head alone, and fine-tuning the top 54
    layers (the Keras tutorial's cut) lowers neither."""
    run = _train(cats_and_dogs, tmp_path, model="mobilenet_v2", weights=str(MOBILENET_WEIGHTS), epochs=20,
                 fine_tune=54, fine_tune_epochs=3)
    m = run.metrics()
    val, test = m["fine_tune"]["validation_accuracy"], m["fine_tune"]["test_accuracy"]
    assert run.config.image_size == 224
    assert val["head"] >= 0.965 and test["head"] >= 0.965
    assert val["fine_tuned"] >= val["head"] and test["fine_tuned"] >= test["head"]
    assert m["fine_tune"]["kept"]
    assert m["validation"]["accuracy"] == pytest.approx(val["fine_tuned"], abs=1e-6)
    assert m["test"]["accuracy"] == pytest.approx(test["fine_tuned"], abs=1e-6)


def test_mobilenet_v2_at_the_blogs_160(cats_and_dogs, tmp_path):
    run = _train(cats_and_dogs, tmp_path, model="mobilenet_v2", weights=str(MOBILENET_WEIGHTS), epochs=20,
                 image_size=160)
    m = run.metrics()
    assert m["validation"]["accuracy"] >= 0.94
    assert m["test"]["accuracy"] >= 0.94
    assert m["feature_parity_max_abs_diff"] < 1e-4  # the head on cached features is the saved model


def test_cnn_beats_the_majority_baseline(cats_and_dogs, tmp_path):
    run = _train(cats_and_dogs, tmp_path, model="cnn_aug_pre", epochs=3, image_size=96)
    m = run.metrics()
    assert m["test"]["accuracy"] > m["baseline"]["test_accuracy"] + 0.05
