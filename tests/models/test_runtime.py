"""Where the frozen backbone and the whole model run: Keras or ONNX Runtime (imgclf.models.runtime)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import imgclf
from imgclf.config import TrainConfig
from imgclf.errors import ConfigError, RuntimeFallbackWarning
from imgclf.models import runtime
from imgclf.training import features

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(runtime, "_warned", set())


@pytest.fixture(scope="module")
def backbone_data(tmp_path_factory):
    """A tiny dataset and a MobileNetV2 0.35 (random weights) at 32x32, with augmentation."""
    from tests.imagefactory import make_class_tree

    root = tmp_path_factory.mktemp("runtime")
    tree = make_class_tree(root / "data", {"cats": 6, "dogs": 6}, size=(32, 32))
    ds = imgclf.load_dataset(tree, image_size=32, validation=0.25, test=0.25, progress=False)
    built = imgclf.build_model("mobilenet_v2", 2, 32, weights=None, alpha=0.35, seed=1)
    return ds, built


def _extract(backbone_data, folder, runtime_name, *, built=None, views=2):
    ds, default_built = backbone_data
    report = {}
    plain, augmented = features.extract_features(built or default_built, ds, 32, views=views, seed=0,
                                                 folder=folder, progress=False, runtime=runtime_name, report=report)
    return np.asarray(plain), np.asarray(augmented), report


def _drop_features(folder):
    for f in folder.glob("features-*.npy"):
        f.unlink()


def test_onnx_features_agree_with_keras_and_the_conversion_is_reused(backbone_data, tmp_path):
    keras_plain, keras_views, keras_report = _extract(backbone_data, tmp_path / "k", "keras")
    plain, views, report = _extract(backbone_data, tmp_path / "o", "onnxruntime")
    assert keras_report["runtime"] == "keras"
    assert report["runtime"] == "onnxruntime" and report["converted"] is True
    assert report["parity_max_abs_diff"] <= features.FEATURE_TOLERANCE
    np.testing.assert_allclose(plain, keras_plain, atol=features.FEATURE_TOLERANCE)
    # the augmented views are drawn by the same Keras layers with the same seed
    np.testing.assert_allclose(views, keras_views, atol=features.FEATURE_TOLERANCE)
    converted = sorted((tmp_path / "o").glob("onnx-*.onnx"))
    assert len(converted) == 1
    stamp = converted[0].stat().st_mtime_ns

    _drop_features(tmp_path / "o")  # the features again: the converted backbone is reused
    again, _, report = _extract(backbone_data, tmp_path / "o", "onnxruntime")
    assert report["converted"] is False and report["model_file"] == str(converted[0])
    assert converted[0].stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again, plain, atol=1e-6)

    # auto uses a cached conversion however little the work
    _drop_features(tmp_path / "o")
    assert _extract(backbone_data, tmp_path / "o", "auto")[2]["runtime"] == "onnxruntime"


@pytest.mark.slow  # converts MobileNetV2 (several seconds)
def test_features_from_the_cache_run_no_backbone(backbone_data, tmp_path):
    _extract(backbone_data, tmp_path, "onnxruntime")
    _, _, report = _extract(backbone_data, tmp_path, "onnxruntime")
    assert report == {"runtime": None, "requested": "onnxruntime", "cached": True}


@pytest.mark.slow  # converts MobileNetV2 (several seconds)
def test_a_different_pooling_or_size_converts_again(backbone_data, tmp_path):
    _extract(backbone_data, tmp_path, "onnxruntime")
    other = imgclf.build_model("mobilenet_v2", 2, 32, weights=None, alpha=0.35, seed=1, pooling="max")
    assert runtime.cache_key(features.backbone_key(other, 32)) != runtime.cache_key(
        features.backbone_key(backbone_data[1], 32))
    _, _, report = _extract(backbone_data, tmp_path, "onnxruntime", built=other)
    assert report["converted"] is True
    assert len(list(tmp_path.glob("onnx-*.onnx"))) == 2
    # the size, and the weights file (its path, size and date), are in the key as well
    key = features.backbone_key(backbone_data[1], 32)
    assert runtime.cache_key({**key, "image_size": 64}) != runtime.cache_key(key)
    assert runtime.cache_key({**key, "weights": "/w.h5|10|1"}) != runtime.cache_key(key)


def test_auto_keeps_keras_for_little_work(backbone_data, tmp_path):
    _, _, report = _extract(backbone_data, tmp_path, "auto")
    assert report["runtime"] == "keras" and "too little work" in report["reason"]
    assert not list(tmp_path.glob("onnx-*.onnx"))


def _no_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError


def test_missing_onnxruntime_under_auto_warns_once_and_keras_runs(backbone_data, tmp_path, monkeypatch):
    _no_onnxruntime(monkeypatch)
    keras_plain, _, _ = _extract(backbone_data, tmp_path / "k", "keras")
    with pytest.warns(RuntimeFallbackWarning, match="onnxruntime is not installed") as caught:
        model = backbone_data[1].feature_extractor
        for _ in range(2):
            rt = runtime.choose_runtime("auto", model, cache_dir=tmp_path, key={"k": 1},
                                        check=np.zeros((1, 32, 32, 3)), tolerance=1e-3)
            assert rt.name == "keras" and "onnxruntime is not installed" in rt.info["reason"]
    assert len([w for w in caught if issubclass(w.category, RuntimeFallbackWarning)]) == 1
    plain, _, report = _extract(backbone_data, tmp_path / "a", "auto")
    assert report["runtime"] == "keras"
    np.testing.assert_array_equal(plain, keras_plain)


def test_onnxruntime_asked_for_and_missing_is_a_one_line_error(backbone_data, tmp_path, monkeypatch):
    _no_onnxruntime(monkeypatch)
    with pytest.raises(ConfigError, match=r"--runtime onnxruntime needs onnxruntime.*pip install onnxruntime"):
        _extract(backbone_data, tmp_path, "onnxruntime")


def test_a_backbone_that_does_not_convert_falls_back_with_one_warning(backbone_data, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise ValueError("unsupported op Foo\nmore detail")

    monkeypatch.setattr(runtime, "to_onnx", refuse)
    keras_plain, _, _ = _extract(backbone_data, tmp_path / "k", "keras")
    with pytest.warns(RuntimeFallbackWarning, match="converting it failed .unsupported op Foo"):
        plain, _, report = _extract(backbone_data, tmp_path / "o", "onnxruntime")
    assert report["runtime"] == "keras" and report["requested"] == "onnxruntime"
    np.testing.assert_array_equal(plain, keras_plain)


@pytest.mark.slow  # converts MobileNetV2 (several seconds)
def test_a_failed_parity_check_falls_back_to_keras(backbone_data, tmp_path, monkeypatch):
    real = runtime.OnnxRuntime.run
    monkeypatch.setattr(runtime.OnnxRuntime, "run", lambda self, x: real(self, x) + 0.5)
    with pytest.warns(RuntimeFallbackWarning, match="disagrees with Keras by 0.5"):
        _, _, report = _extract(backbone_data, tmp_path, "onnxruntime")
    assert report["runtime"] == "keras" and "disagrees" in report["reason"]


@pytest.mark.slow  # converts MobileNetV2 (several seconds)
def test_a_build_without_the_cpu_provider_falls_back(backbone_data, tmp_path, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["SomeAcceleratorExecutionProvider"])
    with pytest.warns(RuntimeFallbackWarning, match="no CPU execution provider"):
        _, _, report = _extract(backbone_data, tmp_path, "onnxruntime")
    assert report["runtime"] == "keras"


def test_the_runtime_option_is_validated():
    with pytest.raises(ConfigError, match="unknown runtime 'tpu'"):
        TrainConfig(runtime="tpu").validate()
    assert runtime.check_name("ORT") == "onnxruntime" and runtime.check_name(None) == "auto"


@pytest.mark.slow
def test_training_on_onnx_features_passes_the_end_to_end_parity_check(class_tree, tmp_path):
    ds = imgclf.load_dataset(class_tree, image_size=32, validation=0.25, test=0.25, progress=False)
    run = imgclf.train(ds, "mobilenet_v2", output=tmp_path / "run", epochs=1, image_size=32, weights=None,
                       progress=False, runtime="onnxruntime")
    m = run.metrics()
    assert m["feature_runtime"]["runtime"] == "onnxruntime" and m["feature_runtime"]["requested"] == "onnxruntime"
    assert m["feature_parity_max_abs_diff"] <= 1e-3  # the saved model agrees with the head on ONNX features
    assert run.config.runtime == "onnxruntime"


def test_train_with_onnxruntime_missing_exits_2_naming_what_to_install(cli, class_tree, tmp_path, monkeypatch):
    _no_onnxruntime(monkeypatch)
    code, out, err = cli("train", class_tree, "--model", "mobilenet_v2", "--weights", "none", "--image-size", "32",
                         "--epochs", "1", "--runtime", "onnxruntime", "--output", tmp_path / "run", "-q")
    assert code == 2 and "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgclf: error: --runtime onnxruntime needs onnxruntime")
    assert "pip install onnxruntime" in lines[0]
