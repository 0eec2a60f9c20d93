"""The model registry: named specs plus one factory, :func:`build_model`.

A :class:`ModelSpec` carries everything that must not drift apart from a model: its input
size limits, its preprocessing, its default augmentation and, for transfer models, the
``keras.applications`` constructor, the allowed width multipliers (``alpha``) and the name of
the ImageNet weights file. :func:`build_model` turns a spec into a :class:`BuiltModel`.

Every model built here takes float32 images of shape (S, S, 3) with values in 0..255 and
returns float32 softmax probabilities; it uses built-in Keras layers only, so
``keras.models.load_model(path)`` reads it back in safe mode without imgclf installed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import keras

from imgclf.errors import ConfigError
from imgclf.models.augment import AugmentConfig, build_augmentation

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


def _check_num_classes(num_classes: int) -> int:
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


def _check_pooling(pooling: str) -> str:
    if pooling not in ("avg", "max"):
        raise ConfigError(f"pooling {pooling!r} is not valid; choose one of: avg, max")
    return pooling


def _resolve_augment(spec: ModelSpec, augment: AugmentConfig | None | str) -> AugmentConfig | None:
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


# -- the built model -----------------------------------------------------------------------
@dataclass
class BuiltModel:
    """A built model and, for transfer models, its parts.

    ``model`` is end to end (0..255 images -> probabilities). For transfer models
    ``feature_extractor`` (images -> pooled features, no augmentation) and ``head`` (features
    -> probabilities) share their layers with ``model``: ``head(feature_extractor(x))`` equals
    ``model(x, training=False)``, and training ``head`` trains ``model``'s classifier.
    """

    spec: ModelSpec
    model: keras.Model
    augmentation: keras.Sequential | None = None
    backbone: keras.Model | None = None
    feature_extractor: keras.Model | None = None
    head: keras.Model | None = None
    image_size: int | None = None
    alpha: float | None = None
    augment: AugmentConfig | None = None
    weights_path: str | None = None  # the weights file loaded into the backbone; None = random init

    @property
    def feature_dim(self) -> int | None:
        """Length of the pooled feature vector (transfer models), else None."""
        if self.feature_extractor is None:
            return None
        return int(self.feature_extractor.output.shape[-1])

    def unfreeze(self, n_layers: int) -> None:
        """Make the top ``n_layers`` layers of the backbone trainable, for fine-tuning.

        Layers are counted from the top of ``backbone.layers`` (the input layer excluded),
        BatchNormalization layers included in the count, as the TensorFlow transfer-learning
        tutorial's ``fine_tune_at`` does; ``unfreeze(len(backbone.layers) - fine_tune_at)``
        reproduces it. Every BatchNormalization layer (nested ones too) stays frozen: Keras 3
        runs a non-trainable BatchNormalization in inference mode, so its moving statistics
        never move. (The graph calls the backbone with ``training=False``, but Keras 3.15 lets
        the outer ``fit`` call's ``training=True`` override that, so frozen BN is what counts;
        the backbone's own Dropout layers are disabled at build time for the same reason.)
        ``n_layers=0`` freezes the whole backbone again; a count above the number of layers
        unfreezes them all. Recompile the model afterwards (Keras needs it to see the change).
        """
        if self.backbone is None:
            raise ConfigError(f"model {self.spec.name!r} has no pretrained backbone to unfreeze")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
            raise ConfigError(f"number of layers to unfreeze must be a whole number >= 0; got {n_layers!r}")
        from imgclf.models.backbones import unfreeze_top

        unfreeze_top(self.backbone, n_layers)


def build_model(
    name: str,
    num_classes: int,
    image_size: int | None = None,
    *,
    weights: str | None = "imagenet",
    alpha: float | None = None,
    augment: AugmentConfig | None | str = "default",
    dropout: float | None = None,
    pooling: str = "avg",
    seed: int | None = None,
    hidden_units: int = 0,
) -> BuiltModel:
    """Build registry model ``name`` for ``num_classes`` classes.

    ``image_size`` defaults to the spec's; ``weights`` is ``"imagenet"`` (the Keras cache, then
    a download), ``None``/``"none"`` (random init) or a weights file; it is ignored by the
    scratch CNNs unless it is a file, which is an error for them. ``augment="default"`` uses
    the spec's augmentation; ``None`` or an :class:`AugmentConfig` (or its string form)
    overrides it. ``seed`` seeds the random layers only; global seeds are the trainer's job.
    ``hidden_units`` (transfer models) puts a ``Dense(hidden_units, relu)`` layer between the
    dropout and the classifier.
    """
    spec = get_spec(name)
    num_classes = _check_num_classes(num_classes)
    size = check_image_size(spec, image_size)
    alpha = check_alpha(spec, alpha)
    augment_cfg = _resolve_augment(spec, augment)
    dropout = check_dropout(spec, dropout)
    pooling = _check_pooling(pooling)

    if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 0:
        raise ConfigError(f"hidden units must be a whole number >= 0; got {hidden_units!r}")
    if spec.kind == "cnn":
        from imgclf.models import cnn

        if hidden_units:
            raise ConfigError(f"model {spec.name!r} has its own layers; hidden units apply to transfer models only")

        if isinstance(weights, str) and weights.strip().lower() not in ("imagenet", "none", ""):
            raise ConfigError(
                f"model {spec.name!r} is trained from scratch and takes no weights file; "
                "--weights applies to transfer models only"
            )
        augmentation = build_augmentation(
            augment_cfg, seed=seed, value_range=cnn.augment_value_range(spec.name)
        )
        model = cnn.build_cnn(spec, num_classes, size, augmentation=augmentation, dropout=dropout, seed=seed)
        return BuiltModel(
            spec=spec, model=model, augmentation=augmentation, image_size=size, augment=augment_cfg
        )

    from imgclf.models import backbones
    from imgclf.models.weights import resolve_weights

    weights_path = resolve_weights(spec.name, alpha, size, weights)
    augmentation = build_augmentation(augment_cfg, seed=seed)
    parts = backbones.build_transfer(
        spec,
        num_classes,
        size,
        alpha=alpha,
        weights_path=weights_path,
        augmentation=augmentation,
        dropout=dropout,
        pooling=pooling,
        seed=seed,
        hidden_units=hidden_units,
    )
    return BuiltModel(
        spec=spec,
        model=parts.model,
        augmentation=augmentation,
        backbone=parts.backbone,
        feature_extractor=parts.feature_extractor,
        head=parts.head,
        image_size=size,
        alpha=alpha,
        augment=augment_cfg,
        weights_path=weights_path,
    )
