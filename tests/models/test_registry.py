import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from imgclf.errors import ConfigError
from imgclf.models import AugmentConfig, BuiltModel, build_model, get_spec, list_models

ALL = [spec.name for spec in list_models()]
HEAVY = {"convnext_tiny", "resnet50", "efficientnet_b0"}
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_WEIGHTS = (
    REPO_ROOT.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
)


def _size(name):
    return 32 if name in HEAVY else 64


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _assert_only_keras_objects(path):
    """What a safe-mode load needs without imgclf: every serialised object comes from Keras."""
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    modules, classes = set(), set()

    def walk(node):
        if isinstance(node, dict):
            if "module" in node:
                modules.add(node["module"])
                classes.add(node.get("class_name"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    assert all(m == "keras" or m.startswith("keras.") for m in modules), modules
    assert "Lambda" not in classes


def test_registry_lists_every_model():
    assert ALL == [
        "cnn", "cnn_aug", "cnn_aug_pre", "mobilenet_v2", "mobilenet_v3_small",
        "mobilenet_v3_large", "efficientnet_b0", "resnet50", "convnext_tiny",
    ]
    for spec in list_models():
        assert spec.kind in ("cnn", "transfer")
        assert spec.min_image_size <= spec.default_image_size
        assert spec.preprocessing and spec.description
        if spec.kind == "transfer":
            assert hasattr(keras.applications, spec.application)
            assert spec.default_augment == AugmentConfig(flip="horizontal", rotation=0.2)
    assert get_spec("cnn").default_augment is None
    assert get_spec("cnn_aug").default_augment == AugmentConfig(flip="horizontal", rotation=0.2)
    mnv2 = get_spec("mobilenet_v2")
    assert (mnv2.default_alpha, mnv2.default_image_size) == (0.35, 224)  # the weights file's own size


@pytest.mark.parametrize("name", ALL)
@pytest.mark.slow
@pytest.mark.backend_neutral  # every registry model on every backend
def test_build_train_save_load(name, tmp_path_factory):
    size = _size(name)
    built = build_model(name, num_classes=3, image_size=size, weights=None, seed=1)
    assert isinstance(built, BuiltModel) and built.spec.name == name
    model = built.model
    assert model.layers[0].name == "image"
    assert tuple(model.inputs[0].shape) == (None, size, size, 3)
    assert model.get_layer("classifier").units == 3
    x, y = _images(2, size), np.array([0, 2])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)

    probs = _np(model(x, training=False))
    assert probs.shape == (2, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(_np(model(x, training=False)), probs)  # augmentation off

    path = tmp_path_factory.mktemp(name) / "model.keras"
    model.save(path)
    _assert_only_keras_objects(path)
    loaded = keras.models.load_model(path)  # safe mode, no custom objects
    np.testing.assert_array_equal(_np(loaded(x, training=False)), probs)

    if built.spec.kind == "transfer":
        assert built.backbone is not None and built.backbone.trainable is False
        assert not built.backbone.trainable_weights
        assert built.model.get_layer(built.backbone.name) is built.backbone
        # the application's own dropouts are off: features do not depend on training=True
        assert all(l.rate == 0 for l in built.backbone.layers if isinstance(l, keras.layers.Dropout))
        assert built.feature_dim == built.feature_extractor.output.shape[-1]
        assert "augmentation" not in [layer.name for layer in built.feature_extractor.layers]
    else:
        assert built.backbone is built.feature_extractor is built.head is None
    if name == "resnet50":  # caffe mode as built-in layers
        caffe = model.get_layer("preprocess_caffe")
        assert caffe.trainable is False and not caffe.trainable_weights
        expected = keras.applications.resnet50.preprocess_input(x.copy())
        np.testing.assert_allclose(_np(caffe(x)), expected, atol=1e-3)
    if name == "mobilenet_v2":
        expected = keras.applications.mobilenet_v2.preprocess_input(x.copy())
        np.testing.assert_allclose(_np(model.get_layer("preprocess")(x)), expected, atol=1e-5)


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2 0.35 at 32x32, ImageNet weights when ../shared has them (real features)."""
    weights = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() else None
    return build_model("mobilenet_v2", num_classes=4, image_size=32, weights=weights, seed=0)


def test_transfer_parts_compose_to_model(mobilenet):
    x = _images(3, 32, seed=5)
    full = _np(mobilenet.model(x, training=False))
    feats = mobilenet.feature_extractor(x)
    assert feats.shape == (3, mobilenet.feature_dim)
    np.testing.assert_allclose(_np(mobilenet.head(feats)), full, atol=1e-5)
    # the head shares its classifier with the model: training one trains the other
    assert mobilenet.head.get_layer("classifier") is mobilenet.model.get_layer("classifier")
    assert mobilenet.augmentation is mobilenet.model.get_layer("augmentation")


def test_a_hidden_layer_sits_between_dropout_and_classifier_in_model_and_head():
    built = build_model("mobilenet_v2", num_classes=3, image_size=32, weights=None, alpha=0.35, hidden_units=16,
                        seed=0)
    hidden = built.model.get_layer("hidden")
    assert hidden.units == 16 and built.head.get_layer("hidden") is hidden
    assert [type(layer).__name__ for layer in built.head.layers[1:]] == ["Dropout", "Dense", "Dense"]
    x = _images(2, 32, seed=1)
    np.testing.assert_allclose(_np(built.head(built.feature_extractor(x))), _np(built.model(x, training=False)),
                               atol=1e-5)
    with pytest.raises(ConfigError, match="hidden units apply to transfer models only"):
        build_model("cnn", num_classes=3, image_size=32, hidden_units=16)


def test_frozen_batchnorm_is_in_inference_mode_even_when_training(mobilenet):
    # Keras 3.15 lets the outer call's training flag override base(x, training=False), so
    # inference mode comes from BatchNormalization.trainable=False; check that it holds.
    x = _images(4, 32, seed=2)
    fe = mobilenet.feature_extractor
    np.testing.assert_allclose(_np(fe(x, training=True)), _np(fe(x, training=False)), atol=1e-5)
    mobilenet.unfreeze(10_000)
    try:
        np.testing.assert_allclose(_np(fe(x, training=True)), _np(fe(x, training=False)), atol=1e-5)
    finally:
        mobilenet.unfreeze(0)


def test_unfreeze_top_layers_keeps_batchnorm_frozen(mobilenet):
    bn = keras.layers.BatchNormalization
    layers = [layer for layer in mobilenet.backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    try:
        mobilenet.unfreeze(12)
        top, rest = layers[-12:], layers[:-12]
        assert all(layer.trainable for layer in top if not isinstance(layer, bn))
        assert not any(layer.trainable for layer in rest)
        assert not any(layer.trainable for layer in layers if isinstance(layer, bn))
        expected = sum(len(layer.trainable_weights) for layer in top if not isinstance(layer, bn))
        assert expected > 0
        assert len(mobilenet.model.trainable_weights) == expected + 2  # + classifier kernel, bias
        mobilenet.unfreeze(10_000)
        assert all(layer.trainable for layer in layers if not isinstance(layer, bn))
        assert not any(layer.trainable for layer in layers if isinstance(layer, bn))
        mobilenet.unfreeze(0)
        assert len(mobilenet.model.trainable_weights) == 2
        assert mobilenet.backbone.trainable is False
        with pytest.raises(ConfigError):
            mobilenet.unfreeze(-1)
    finally:
        mobilenet.unfreeze(0)


def test_cnn_has_nothing_to_unfreeze():
    built = build_model("cnn", 2, 32)
    with pytest.raises(ConfigError, match="no pretrained backbone"):
        built.unfreeze(3)


def test_augment_argument():
    assert build_model("cnn", 2, 32).augmentation is None
    assert build_model("cnn_aug", 2, 32, augment=None).augmentation is None
    built = build_model("cnn", 2, 32, augment="flip=vertical,zoom=0.1")
    assert [type(layer).__name__ for layer in built.augmentation.layers] == ["RandomFlip", "RandomZoom"]
    pre = build_model("cnn_aug_pre", 2, 32, augment=AugmentConfig(brightness=0.1))
    assert tuple(pre.augmentation.layers[-1].value_range) == (-1.0, 1.0)  # augments after rescaling
    names = [layer.name for layer in pre.model.layers]
    assert names.index("rescale") < names.index("augmentation")


def test_errors_list_the_valid_choices():
    with pytest.raises(ConfigError) as err:
        build_model("resnet18", 2)
    assert "unknown model 'resnet18'" in str(err.value)
    assert all(name in str(err.value) for name in ALL)
    with pytest.raises(ConfigError) as err:
        build_model("mobilenet_v2", 2, 32, weights=None, alpha=0.6)
    assert "0.35, 0.5, 0.75, 1, 1.3, 1.4" in str(err.value)
    with pytest.raises(ConfigError, match="0.75, 1"):
        build_model("mobilenet_v3_small", 2, 32, weights=None, alpha=0.35)
    with pytest.raises(ConfigError, match="no alpha"):
        build_model("resnet50", 2, 32, weights=None, alpha=1.0)
    for name in ("cnn", "mobilenet_v2", "convnext_tiny"):
        with pytest.raises(ConfigError, match="at least 32x32"):
            build_model(name, 2, 16, weights=None)
    with pytest.raises(ConfigError, match="avg, max"):
        build_model("mobilenet_v2", 2, 32, weights=None, pooling="mean")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("cnn", 1, 32)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("cnn", 2, 32, dropout=1.5)
    with pytest.raises(ConfigError, match="whole number"):
        build_model("cnn", 2, 32.5)
    with pytest.raises(ConfigError, match="valid keys"):
        build_model("cnn", 2, 32, augment="warp=1")
    with pytest.raises(ConfigError, match="transfer models only"):
        build_model("cnn", 2, 32, weights=str(REPO_ROOT / "pyproject.toml"))


def test_alpha_and_pooling_options(mobilenet):
    built = build_model("mobilenet_v2", 2, 32, weights=None, alpha=0.5, pooling="max", dropout=0.3)
    assert built.alpha == 0.5 and built.feature_dim == 1280
    assert isinstance(built.model.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert built.model.get_layer("dropout").rate == 0.3
    assert mobilenet.alpha == 0.35  # the default
    assert isinstance(mobilenet.model.get_layer("pool"), keras.layers.GlobalAveragePooling2D)


def test_mixed_precision_keeps_float32_probabilities():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        built = build_model("cnn_aug_pre", 3, 32)
        assert built.model.get_layer("conv1").compute_dtype == "float16"
        probs = built.model(_images(2, 32), training=False)
        assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_specs_are_hashable_and_immutable():
    spec = get_spec("cnn_aug")
    assert hash(spec) == hash(get_spec("cnn_aug"))
    with pytest.raises(Exception):
        spec.name = "other"
    built = build_model("cnn_aug", 2, 32)
    built.augment.rotation = 0.5  # the built config is a copy
    assert spec.default_augment.rotation == 0.2
