import os
import shutil
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from imgclf.errors import WeightsError
from imgclf.models import build_model, get_spec, keras_cache_dir, resolve_weights, weights_filename
from imgclf.models import weights as weights_mod

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
FILE_224 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
FILE_160 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_160_no_top.h5"


@pytest.fixture(scope="module")
def real_weights():
    path = SHARED / "weights" / FILE_224
    if not path.is_file():
        pytest.skip(f"real MobileNetV2 0.35 weights not found at {path} (the ../shared folder beside the repo)")
    return path


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    (tmp_path / "keras_home" / "models").mkdir(parents=True)
    return tmp_path / "keras_home" / "models"


@pytest.fixture
def no_download(monkeypatch):
    calls = []

    def fail(fname, origin, cache_dir, file_hash):
        calls.append((fname, origin, cache_dir, file_hash))
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weights_mod, "_download", fail)
    return calls


def _file_kernel(path, layer="Conv1"):
    with h5py.File(path, "r") as f:
        group = f[layer]
        names = []
        group.visit(names.append)
        datasets = [n for n in names if isinstance(group[n], h5py.Dataset)]
        return np.asarray(group[datasets[0]])


def test_file_names_match_keras_applications():
    assert weights_filename(get_spec("mobilenet_v2"), 0.35, 160) == FILE_160
    assert weights_filename(get_spec("mobilenet_v2"), 1.0, 224).endswith("_1.0_224_no_top.h5")
    assert weights_filename(get_spec("mobilenet_v2"), 0.5, 64).endswith("_0.5_224_no_top.h5")  # as Keras does
    assert weights_filename(get_spec("mobilenet_v3_small"), 1.0, 160) == (
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    )
    assert weights_filename(get_spec("efficientnet_b0"), None, 224) == "efficientnetb0_notop.h5"
    assert weights_filename(get_spec("resnet50"), None, 224) == "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert weights_filename(get_spec("convnext_tiny"), None, 224) == "convnext_tiny_notop.h5"


def test_cache_dir_follows_keras_home(keras_home):
    assert keras_cache_dir() == keras_home


def test_none_and_scratch_models(keras_home, no_download):
    assert resolve_weights("mobilenet_v2", None, 160, None) is None
    assert resolve_weights("mobilenet_v2", None, 160, "none") is None
    assert resolve_weights("cnn", None, 160, "imagenet") is None
    assert not no_download


def test_missing_file_path(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights("mobilenet_v2", None, 160, str(tmp_path / "nope.h5"))


def test_exact_cached_file_is_used(keras_home, real_weights, no_download):
    shutil.copy(real_weights, keras_home / FILE_224)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_weights("mobilenet_v2", 0.35, 224, "imagenet") == str(keras_home / FILE_224)
    assert not no_download


def test_cached_other_resolution_is_used_with_a_warning(keras_home, real_weights, no_download):
    os.symlink(real_weights, keras_home / FILE_224)
    with pytest.warns(UserWarning, match=FILE_160):
        path = resolve_weights("mobilenet_v2", None, 160, "imagenet")  # default alpha 0.35
    assert path == str(keras_home / FILE_224)
    assert not no_download


def test_offline_message_names_file_and_folder(keras_home, no_download):
    with pytest.raises(WeightsError) as err:
        resolve_weights("mobilenet_v2", 1.0, 160, "imagenet")
    msg = str(err.value)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"
    assert name in msg and str(keras_home) in msg and "--weights" in msg
    assert "\n" not in msg
    fname, origin, _, _ = no_download[0]
    assert fname == name
    assert origin == "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + name
    with pytest.raises(WeightsError, match="efficientnetb0_notop.h5"):
        build_model("efficientnet_b0", 2, 32)  # weights="imagenet" is the default


def test_download_path_is_used(keras_home, real_weights, monkeypatch):
    seen = {}

    def fake_download(fname, origin, cache_dir, file_hash):
        seen.update(fname=fname, cache_dir=cache_dir, file_hash=file_hash)
        target = cache_dir / fname
        shutil.copy(real_weights, target)
        return str(target)

    monkeypatch.setattr(weights_mod, "_download", fake_download)
    assert resolve_weights("mobilenet_v2", 0.35, 224, "imagenet") == str(keras_home / FILE_224)
    assert seen == {"fname": FILE_224, "cache_dir": keras_home, "file_hash": None}


@pytest.mark.parametrize("size", [160, 224])
def test_real_file_loads_at_any_size(real_weights, size):
    built = build_model("mobilenet_v2", 2, size, weights=str(real_weights), augment=None)
    assert built.weights_path == str(real_weights)
    np.testing.assert_array_equal(built.backbone.get_layer("Conv1").get_weights()[0], _file_kernel(real_weights))
    assert built.backbone.trainable is False


def test_cached_224_file_serves_160_build(keras_home, real_weights, no_download):
    os.symlink(real_weights, keras_home / FILE_224)
    with pytest.warns(UserWarning, match="another input size"):
        built = build_model("mobilenet_v2", 2, 160)
    np.testing.assert_array_equal(built.backbone.get_layer("Conv1").get_weights()[0], _file_kernel(real_weights))


def test_mismatched_file_gives_weights_error(real_weights):
    with pytest.raises(WeightsError) as err:
        build_model("mobilenet_v2", 2, 32, weights=str(real_weights), alpha=1.0)
    msg = str(err.value)
    assert real_weights.name in msg and "alpha 1" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="does not fit mobilenet_v3_small"):
        build_model("mobilenet_v3_small", 2, 32, weights=str(real_weights))


def test_not_hdf5_gives_weights_error(tmp_path):
    bogus = tmp_path / "weights.h5"
    bogus.write_text("<html>404 Not Found</html>")
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        build_model("mobilenet_v2", 2, 32, weights=str(bogus))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 16)
    with pytest.raises(WeightsError, match="unknown format"):
        build_model("mobilenet_v2", 2, 32, weights=str(other))


def test_efficientnet_normalization_is_fixed_like_keras_imagenet_build():
    from imgclf.models.backbones import create_backbone

    base = create_backbone(get_spec("efficientnet_b0"), 32)
    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    norm.adapt_mean.assign(np.array([0.485, 0.456, 0.406], "float32"))
    norm.adapt_variance.assign(np.array([0.229, 0.224, 0.225], "float32"))  # std, as the official file
    norm.finalize_state()
    weights_mod._fix_efficientnet_normalization(base)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.adapt_variance), np.square([0.229, 0.224, 0.225]), rtol=1e-6)
    x = np.full((1, 2, 2, 3), 255.0, "float32")
    expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm(x / 255.0))[0, 0, 0], expected, rtol=1e-5)
    weights_mod._fix_efficientnet_normalization(base)  # already fixed: left alone
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.adapt_variance), np.square([0.229, 0.224, 0.225]), rtol=1e-6)
