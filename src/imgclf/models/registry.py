"""The model registry: named specs and the checks of their options (the leaf of ``models``).

A :class:`ModelSpec` carries everything that must not drift apart from a model: its input
size limits, its preprocessing, its default augmentation and, for transfer models, the
``keras.applications`` constructor, the allowed width multipliers (``alpha``) and the name of
the ImageNet weights file. :func:`imgclf.models.factory.build_model` turns a spec into a
:class:`~imgclf.models.factory.BuiltModel`.

Every model built here takes float32 images of shape (S, S, 3) with values in 0..255 and
returns float32 softmax probabilities; it uses built-in Keras layers only, so
``keras.models.load_model(path)`` reads it back in safe mode without imgclf installed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from imgclf.errors import ConfigError
from imgclf.models.augment import AugmentConfig

_BLOG_AUGMENT = AugmentConfig(flip="horizontal", rotation=0.2)


@dataclass(frozen=True)
class ModelSpec:
    """What a registry entry is; see :func:`list_models`."""

    name: str
    kind: str  # "cnn" | "transfer"
    description: str
    default_image_size: int
    min_image_size: int
    preprocessing: str  # human-readable
    default_augment: AugmentConfig | None = field(default=None, hash=False)
    default_dropout: float = 0.2
    # -- transfer models only ---------------------------------------------------------
    application: str | None = None  # keras.applications constructor, e.g. "MobileNetV2"
    alphas: tuple[float, ...] = ()  # supported width multipliers; () = no alpha argument
    default_alpha: float | None = None
    weights_file: str | None = None  # ImageNet no-top file name template: {alpha}, {size}
    weights_origin: str | None = None  # URL folder the file is downloaded from
    weights_sizes: tuple[int, ...] = ()  # input sizes with a published weights file

    @property
    def is_transfer(self) -> bool:
        return self.kind == "transfer"


_SPECS: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _SPECS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


_register(ModelSpec(
    name="cnn",
    kind="cnn",
    description=(
        "blog model 1: 3 x [Conv2D(32, 3, relu) + MaxPooling2D], Flatten, Dropout(0.2), Dense "
        "softmax; no augmentation; fed raw 0..255 pixels as the blog does (unscaled inputs "
        "train slowly and unstably: compare with cnn_aug_pre)"
    ),
    default_image_size=160,
    min_image_size=32,
    preprocessing="none: raw 0..255 pixels (faithful to the blog's model 1)",
    default_augment=None,
))
_register(ModelSpec(
    name="cnn_aug",
    kind="cnn",
    description=(
        "blog model 2: augmentation (flip horizontal, rotation 0.2) then the cnn convolutions, "
        "Flatten, Dropout(0.2), Dense(64, relu), Dense softmax; raw 0..255 pixels"
    ),
    default_image_size=160,
    min_image_size=32,
    preprocessing="none: raw 0..255 pixels (as the blog's model 2)",
    default_augment=_BLOG_AUGMENT,
))
_register(ModelSpec(
    name="cnn_aug_pre",
    kind="cnn",
    description=(
        "blog model 3: cnn_aug with inputs scaled to [-1, 1] by Rescaling(1/127.5, offset=-1) "
        "before the augmentation, as the blog does"
    ),
    default_image_size=160,
    min_image_size=32,
    preprocessing="x/127.5 - 1 (Rescaling before augmentation)",
    default_augment=_BLOG_AUGMENT,
))

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_register(ModelSpec(
    name="mobilenet_v2",
    kind="transfer",
    description=(
        "MobileNetV2 ImageNet backbone (frozen) + pooling + Dropout + Dense, the blog's "
        "transfer model; default alpha 0.35 (not Keras' 1.0) because that weights file is the "
        "small one we can ship offline; default input 224x224, the resolution ImageNet weights "
        "are trained at (the blog's 160x160 costs about 3 points of accuracy with alpha 0.35)"
    ),
    default_image_size=224,
    min_image_size=32,
    preprocessing="x/127.5 - 1 (mobilenet_v2.preprocess_input)",
    default_augment=_BLOG_AUGMENT,
    application="MobileNetV2",
    alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    default_alpha=0.35,
    weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5",
    weights_origin=_KERAS_APPS + "mobilenet_v2/",
    weights_sizes=(96, 128, 160, 192, 224),
))
for _size_name, _app in (("small", "MobileNetV3Small"), ("large", "MobileNetV3Large")):
    _register(ModelSpec(
        name=f"mobilenet_v3_{_size_name}",
        kind="transfer",
        description=(
            f"MobileNetV3{_size_name.capitalize()} ImageNet backbone (frozen) + pooling + "
            "Dropout + Dense; alpha 0.75 or 1.0"
        ),
        default_image_size=224,
        min_image_size=32,
        preprocessing="x/127.5 - 1 inside the application (include_preprocessing=True)",
        default_augment=_BLOG_AUGMENT,
        application=_app,
        alphas=(0.75, 1.0),
        default_alpha=1.0,
        weights_file=f"weights_mobilenet_v3_{_size_name}_224_{{alpha}}_float_no_top_v2.h5",
        weights_origin=_KERAS_APPS + "mobilenet_v3/",
        weights_sizes=(224,),
    ))
_register(ModelSpec(
    name="efficientnet_b0",
    kind="transfer",
    description="EfficientNetB0 ImageNet backbone (frozen) + pooling + Dropout + Dense",
    default_image_size=224,
    min_image_size=32,
    preprocessing="x/255 then ImageNet mean/std normalisation inside the application",
    default_augment=_BLOG_AUGMENT,
    application="EfficientNetB0",
    weights_file="efficientnetb0_notop.h5",
    weights_origin="https://storage.googleapis.com/keras-applications/",
    weights_sizes=(224,),
))
_register(ModelSpec(
    name="resnet50",
    kind="transfer",
    description="ResNet50 ImageNet backbone (frozen) + pooling + Dropout + Dense",
    default_image_size=224,
    min_image_size=32,
    preprocessing=(
        "RGB->BGR and minus the ImageNet mean, 'caffe' mode (resnet50.preprocess_input), as a "
        "frozen Dense(3) layer"
    ),
    default_augment=_BLOG_AUGMENT,
    application="ResNet50",
    weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    weights_origin=_KERAS_APPS + "resnet/",
    weights_sizes=(224,),
))
_register(ModelSpec(
    name="convnext_tiny",
    kind="transfer",
    description="ConvNeXtTiny ImageNet backbone (frozen) + pooling + Dropout + Dense",
    default_image_size=224,
    min_image_size=32,
    preprocessing="ImageNet mean/std normalisation inside the application (include_preprocessing=True)",
    default_augment=_BLOG_AUGMENT,
    application="ConvNeXtTiny",
    weights_file="convnext_tiny_notop.h5",
    weights_origin=_KERAS_APPS + "convnext/",
    weights_sizes=(224,),
))


def list_models() -> list[ModelSpec]:
    """Every registered model, in registry order (scratch CNNs first, then transfer models)."""
    return list(_SPECS.values())


def get_spec(name: str) -> ModelSpec:
    """The spec called ``name``; an unknown name raises :class:`ConfigError` listing the choices."""
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(_SPECS)}")
    return spec


# -- argument checks shared with weights.py ------------------------------------------------
def check_image_size(spec: ModelSpec, image_size: int | None) -> int:
    """The input size to use for ``spec``: ``image_size`` validated, or the spec's default."""
    if image_size is None:
        return spec.default_image_size
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        if isinstance(image_size, float) and image_size.is_integer():
            image_size = int(image_size)
        else:
            raise ConfigError(
                f"image size must be a whole number of pixels; got {image_size!r} for model "
                f"{spec.name!r}"
            )
    if image_size < spec.min_image_size:
        raise ConfigError(
            f"image size {image_size} is too small for model {spec.name!r}; it needs at least "
            f"{spec.min_image_size}x{spec.min_image_size} (default {spec.default_image_size})"
        )
    return image_size


def check_alpha(spec: ModelSpec, alpha: float | None) -> float | None:
    """The width multiplier for ``spec``: ``alpha`` validated, or the spec's default."""
    if not spec.alphas:
        if alpha is not None:
            raise ConfigError(
                f"model {spec.name!r} has no alpha (width multiplier); models with one: "
                f"{', '.join(s.name for s in _SPECS.values() if s.alphas)}"
            )
        return None
    if alpha is None:
        return spec.default_alpha
    allowed = ", ".join(f"{a:g}" for a in spec.alphas)
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"alpha {alpha!r} is not valid for {spec.name}; choose one of: {allowed}") from None
    for a in spec.alphas:
        if math.isclose(value, a):
            return a
    raise ConfigError(f"alpha {alpha!r} is not valid for {spec.name}; choose one of: {allowed}")


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes; got num_classes={num_classes!r}")
    return num_classes


def check_dropout(spec: ModelSpec, dropout: float | None) -> float:
    """``dropout`` (the model's default when ``None``), or a :class:`ConfigError` outside [0, 1)."""
    if dropout is None:
        return spec.default_dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be a number in [0, 1); got {dropout!r}")
    return float(dropout)


def check_pooling(pooling: str) -> str:
    if pooling not in ("avg", "max"):
        raise ConfigError(f"pooling {pooling!r} is not valid; choose one of: avg, max")
    return pooling


def resolve_augment(spec: ModelSpec, augment: AugmentConfig | None | str) -> AugmentConfig | None:
    if isinstance(augment, str):
        if augment == "default":
            return None if spec.default_augment is None else dataclasses.replace(spec.default_augment)
        augment = AugmentConfig.parse(augment)
    if augment is None or isinstance(augment, AugmentConfig):
        return None if augment is None or augment.is_identity() else augment
    raise ConfigError(
        f"augment must be 'default', None, an AugmentConfig or a string like "
        f"'flip=horizontal,rotation=0.2'; got {augment!r}"
    )
