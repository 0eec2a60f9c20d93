"""The one factory: a registry name and its options in, a built Keras model (and its parts) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgclf.errors import ConfigError
from imgclf.models import backbones, cnn
from imgclf.models.augment import AugmentConfig, build_augmentation
from imgclf.models.backbones import unfreeze_top
from imgclf.models.registry import (
    ModelSpec,
    check_alpha,
    check_dropout,
    check_image_size,
    check_num_classes,
    check_pooling,
    get_spec,
    resolve_augment,
)
from imgclf.models.weights import resolve_weights

if TYPE_CHECKING:  # annotations only: Keras is imported where a model is built
    import keras


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
    num_classes = check_num_classes(num_classes)
    size = check_image_size(spec, image_size)
    alpha = check_alpha(spec, alpha)
    augment_cfg = resolve_augment(spec, augment)
    dropout = check_dropout(spec, dropout)
    pooling = check_pooling(pooling)

    if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 0:
        raise ConfigError(f"hidden units must be a whole number >= 0; got {hidden_units!r}")
    if spec.kind == "cnn":
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
