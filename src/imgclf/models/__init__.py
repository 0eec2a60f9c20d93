"""Models: the registry of named models, one factory, augmentation and pretrained weights.

>>> from imgclf.models import build_model, list_models
>>> built = build_model("mobilenet_v2", num_classes=3)   # doctest: +SKIP
>>> built.model, built.feature_extractor, built.head      # doctest: +SKIP
"""

from imgclf.models.augment import AugmentConfig, build_augmentation
from imgclf.models.factory import BuiltModel, build_model
from imgclf.models.registry import ModelSpec, get_spec, list_models
from imgclf.models.weights import check_weights, keras_cache_dir, resolve_weights, weights_filename

__all__ = [
    "AugmentConfig",
    "BuiltModel",
    "ModelSpec",
    "build_augmentation",
    "build_model",
    "check_weights",
    "get_spec",
    "keras_cache_dir",
    "list_models",
    "resolve_weights",
    "weights_filename",
]
