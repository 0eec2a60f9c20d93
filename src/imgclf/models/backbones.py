"""Transfer models: a frozen keras.applications backbone, its preprocessing, pooling and a head.

Graph of the end-to-end model (built-in layers only, so it loads in safe mode)::

    image (S, S, 3) 0..255 -> [augmentation] -> [preprocessing] -> backbone(training=False)
        -> pool (avg|max) -> dropout -> classifier (Dense softmax, float32)

The preprocessing each backbone expects is part of the graph: ``Rescaling(1/127.5, -1)`` for
MobileNetV2; the applications' own ``include_preprocessing`` for MobileNetV3, EfficientNet
and ConvNeXt (they take 0..255); for ResNet50's "caffe" mode a frozen ``Dense(3)`` whose kernel
swaps RGB to BGR and whose bias subtracts the ImageNet mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imgclf.errors import ConfigError
from imgclf.models.registry import ModelSpec
from imgclf.models.weights import load_backbone_weights

if TYPE_CHECKING:  # annotations only: Keras is imported where a model is built
    import keras

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass
class TransferParts:
    model: keras.Model
    backbone: keras.Model
    feature_extractor: keras.Model
    head: keras.Model


def create_backbone(spec: ModelSpec, image_size: int, alpha: float | None = None) -> keras.Model:
    """The keras.applications base for ``spec``, no top, random init, not yet frozen."""
    import keras
    constructor = getattr(keras.applications, spec.application)
    kwargs: dict = {"input_shape": (image_size, image_size, 3), "include_top": False, "weights": None}
    if spec.alphas:
        kwargs["alpha"] = alpha if alpha is not None else spec.default_alpha
    if spec.application.startswith(("MobileNetV3", "ConvNeXt")):
        kwargs["include_preprocessing"] = True
    try:
        return constructor(**kwargs)
    except ValueError as exc:  # keras.applications refusing a size or an alpha
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{spec.name} cannot be built for {image_size}x{image_size} inputs: {line}") from None


def preprocessing_layers(spec: ModelSpec) -> list[keras.layers.Layer]:
    """Layers that turn 0..255 images into what ``spec``'s backbone expects (maybe none)."""
    import keras
    if spec.application == "MobileNetV2":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess", dtype="float32")]
    if spec.application == "ResNet50":
        # Built (and given its constant weights) by _caffe_preprocess on first call.
        return [keras.layers.Dense(3, use_bias=True, trainable=False, name="preprocess_caffe", dtype="float32")]
    return []


def _apply_preprocessing(layers: list[keras.layers.Layer], x):
    for layer in layers:
        first_call = not layer.built
        x = layer(x)
        if first_call and layer.name == "preprocess_caffe":
            kernel = np.zeros((3, 3), dtype="float32")
            kernel[2, 0] = kernel[1, 1] = kernel[0, 2] = 1.0  # out BGR = in RGB reversed
            layer.set_weights([kernel, -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")])
    return x


def classifier_top(num_classes: int, *, dropout: float, hidden_units: int = 0, seed: int | None = None):
    """The layers after pooling, as one function of the pooled features: Dropout, then
    ``Dense(hidden_units, relu)`` if asked, then the float32 softmax classifier. Calling the
    function again reuses the same layers (the end-to-end model and the head share them)."""
    import keras
    drop = keras.layers.Dropout(dropout, seed=seed, name="dropout")
    classifier = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="classifier")
    hidden = keras.layers.Dense(hidden_units, activation="relu", name="hidden") if hidden_units else None

    def top(x):
        x = drop(x)
        return classifier(hidden(x) if hidden is not None else x)

    return top


def build_transfer(
    spec: ModelSpec,
    num_classes: int,
    image_size: int,
    *,
    alpha: float | None,
    weights_path: str | None,
    augmentation: keras.Sequential | None,
    dropout: float,
    pooling: str,
    seed: int | None = None,
    hidden_units: int = 0,
) -> TransferParts:
    import keras
    base = create_backbone(spec, image_size, alpha)
    if weights_path is not None:
        load_backbone_weights(base, spec, weights_path, alpha)
    base.trainable = False
    _pin_inference_mode(base)

    preprocess = preprocessing_layers(spec)
    pool_cls = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
    pool = pool_cls(name="pool")
    top = classifier_top(num_classes, dropout=dropout, hidden_units=hidden_units, seed=seed)

    def features(x):
        x = _apply_preprocessing(preprocess, x)
        # training=False states the intent, but Keras 3.15's Functional passes the outer
        # call's training flag to every layer; inference mode really comes from
        # _pin_inference_mode and from BatchNormalization.trainable=False (see unfreeze_top).
        x = base(x, training=False)
        return pool(x)

    image = keras.Input((image_size, image_size, 3), name="image", dtype="float32")
    x = augmentation(image) if augmentation is not None else image
    outputs = top(features(x))
    model = keras.Model(image, outputs, name=f"imgclf_{spec.name}")

    fe_image = keras.Input((image_size, image_size, 3), name="image", dtype="float32")
    feature_extractor = keras.Model(fe_image, features(fe_image), name="feature_extractor")

    feats = keras.Input((int(feature_extractor.output.shape[-1]),), name="features", dtype="float32")
    head = keras.Model(feats, top(feats), name="head")
    return TransferParts(model=model, backbone=base, feature_extractor=feature_extractor, head=head)


def _pin_inference_mode(base: keras.Model) -> None:
    """Make the backbone behave as if always called with ``training=False``.

    Keras 3.15 overrides ``base(x, training=False)`` with the outer model's training flag, so
    the application's own Dropout layers (EfficientNet's drop-connect) would fire while the
    head trains, and the end-to-end model would see other features than the
    feature extractor. Their rate is set to 0; BatchNormalization is handled by keeping it
    non-trainable (Keras 3 runs a non-trainable BatchNormalization in inference mode).
    """
    import keras
    stack = list(base.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
        stack.extend(getattr(layer, "layers", ()))


def _is_batchnorm(layer: keras.layers.Layer) -> bool:
    import keras
    return isinstance(layer, keras.layers.BatchNormalization)


def _freeze_batchnorm(layer: keras.layers.Layer) -> None:
    if _is_batchnorm(layer):
        layer.trainable = False
    for sub in getattr(layer, "layers", ()):
        _freeze_batchnorm(sub)


def unfreeze_top(backbone: keras.Model, n_layers: int) -> None:
    """Make the last ``n_layers`` of ``backbone.layers`` (input layer excluded) trainable,
    keeping every BatchNormalization layer, nested ones included, frozen."""
    import keras
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    if n_layers <= 0:
        backbone.trainable = False
        return
    backbone.trainable = True  # Keras 3 propagates this to every sublayer; undo below
    start = max(len(layers) - n_layers, 0)
    for i, layer in enumerate(layers):
        layer.trainable = i >= start
        _freeze_batchnorm(layer)
