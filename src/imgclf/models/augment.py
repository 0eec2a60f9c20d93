"""Data augmentation as Keras layers that live inside the model.

The augmentation block is a ``keras.Sequential(name="augmentation")`` of built-in random
layers, placed right after the model's input. Keras runs it only when ``training=True``
(``fit``, ``train_on_batch``); ``predict`` and ``model(x, training=False)`` pass the images
through untouched. Images are float32 in 0..255 unless ``value_range`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imgclf.errors import ConfigError

if TYPE_CHECKING:  # annotations only: Keras is imported where a model is built
    import keras

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

# key -> (lowest allowed, highest allowed, what it means); all are "factor" style floats.
_FLOAT_KEYS: dict[str, tuple[float, float, str]] = {
    "rotation": (0.0, 1.0, "fraction of a full turn, as keras.layers.RandomRotation"),
    "zoom": (0.0, 0.99, "fraction of the image size, as keras.layers.RandomZoom"),
    "translation": (0.0, 0.99, "fraction of the image size, as keras.layers.RandomTranslation"),
    "contrast": (0.0, 1.0, "contrast factor, as keras.layers.RandomContrast"),
    "brightness": (0.0, 1.0, "fraction of the value range, as keras.layers.RandomBrightness"),
}
VALID_KEYS = ("flip", *_FLOAT_KEYS)
_OFF_WORDS = {"none", "off", "no", "false", "0", ""}


@dataclass
class AugmentConfig:
    """Which random transformations to apply while training.

    ``flip`` is one of ``"horizontal"``, ``"vertical"``, ``"horizontal_and_vertical"`` or
    ``None``; every other field is a non-negative factor where 0 switches it off.
    """

    flip: str | None = "horizontal"
    rotation: float = 0.2
    zoom: float = 0.0
    translation: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.flip, str) and self.flip.strip().lower() in _OFF_WORDS:
            self.flip = None
        if self.flip is not None and self.flip not in FLIP_MODES:
            raise ConfigError(
                f"augmentation flip={self.flip!r} is not valid; choose one of: "
                f"{', '.join(FLIP_MODES)}, none"
            )
        for key, (low, high, _) in _FLOAT_KEYS.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"augmentation {key}={value!r} is not a number; expected a float in "
                    f"[{low:g}, {high:g}]"
                )
            value = float(value)
            if not math.isfinite(value) or not low <= value <= high:
                raise ConfigError(
                    f"augmentation {key}={value:g} is out of range; expected a float in "
                    f"[{low:g}, {high:g}] ({_FLOAT_KEYS[key][2]})"
                )
            setattr(self, key, value)

    # -- constructors ----------------------------------------------------------------
    @classmethod
    def none(cls) -> "AugmentConfig":
        """Every transformation switched off."""
        return cls(flip=None, rotation=0.0)

    @classmethod
    def parse(cls, text: str) -> "AugmentConfig":
        """Parse the command-line form, e.g. ``"flip=horizontal,rotation=0.2,zoom=0.1"``.

        What is written is what you get: keys left out are switched off (not set to the
        dataclass defaults). ``"none"`` (or ``"off"``, or an empty string) turns everything
        off; a bare ``flip`` means ``flip=horizontal``.
        """
        if not isinstance(text, str):
            raise ConfigError(f"augmentation must be a string like 'flip=horizontal,rotation=0.2'; got {text!r}")
        stripped = text.strip()
        if stripped.lower() in _OFF_WORDS:
            return cls.none()
        values: dict[str, Any] = {"flip": None, "rotation": 0.0}
        seen: set[str] = set()
        for raw in stripped.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            value = value.strip()
            if key not in VALID_KEYS:
                raise ConfigError(
                    f"unknown augmentation key {key!r} in {text!r}; valid keys: "
                    f"{', '.join(VALID_KEYS)} (or 'none')"
                )
            if key in seen:
                raise ConfigError(f"augmentation key {key!r} is given twice in {text!r}")
            seen.add(key)
            if key == "flip":
                values["flip"] = value.lower() if sep else "horizontal"
                continue
            if not sep:
                raise ConfigError(f"augmentation key {key!r} needs a value, e.g. {key}=0.1")
            try:
                values[key] = float(value)
            except ValueError:
                raise ConfigError(
                    f"augmentation {key}={value!r} is not a number; expected e.g. {key}=0.1"
                ) from None
        return cls(**values)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        """Inverse of :meth:`to_dict`; missing keys take the dataclass defaults."""
        if not isinstance(d, dict):
            raise ConfigError(f"augmentation config must be a mapping; got {type(d).__name__}")
        unknown = sorted(set(d) - set(VALID_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown augmentation key(s) {', '.join(map(repr, unknown))}; valid keys: "
                f"{', '.join(VALID_KEYS)}"
            )
        return cls(**d)

    # -- views -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_string(self) -> str:
        """The command-line form; ``AugmentConfig.parse(cfg.to_string()) == cfg``."""
        if self.is_identity():
            return "none"
        parts = [f"flip={self.flip}"] if self.flip else []
        parts += [f"{k}={getattr(self, k):g}" for k in _FLOAT_KEYS if getattr(self, k)]
        return ",".join(parts)

    def __str__(self) -> str:
        return self.to_string()

    def is_identity(self) -> bool:
        return self.flip is None and all(getattr(self, k) == 0 for k in _FLOAT_KEYS)


def build_augmentation(
    cfg: AugmentConfig | None,
    seed: int | None = None,
    *,
    value_range: tuple[float, float] = (0.0, 255.0),
) -> keras.Sequential | None:
    """The augmentation block for ``cfg``, or ``None`` when it would do nothing.

    ``seed`` seeds every random layer (layer ``i`` gets ``seed + i``) so that a seeded build
    gives the same random sequence. ``value_range`` is the range of the pixel values the block
    sees: (0, 255) normally; the blog's model 3 augments after rescaling, so (-1, 1) there.
    """
    import keras
    if cfg is None:
        return None
    if not isinstance(cfg, AugmentConfig):
        raise ConfigError(f"augmentation must be an AugmentConfig or None; got {type(cfg).__name__}")
    if cfg.is_identity():
        return None

    def layer_seed(i: int) -> int | None:
        return None if seed is None else int(seed) + i

    value_range = (float(value_range[0]), float(value_range[1]))
    layers: list[keras.layers.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip(cfg.flip, seed=layer_seed(len(layers)), name="random_flip"))
    if cfg.rotation:
        layers.append(
            keras.layers.RandomRotation(cfg.rotation, seed=layer_seed(len(layers)), name="random_rotation")
        )
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, seed=layer_seed(len(layers)), name="random_zoom"))
    if cfg.translation:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.translation, cfg.translation, seed=layer_seed(len(layers)), name="random_translation"
            )
        )
    if cfg.contrast:
        layers.append(
            keras.layers.RandomContrast(
                cfg.contrast, value_range=value_range, seed=layer_seed(len(layers)), name="random_contrast"
            )
        )
    if cfg.brightness:
        layers.append(
            keras.layers.RandomBrightness(
                cfg.brightness, value_range=value_range, seed=layer_seed(len(layers)), name="random_brightness"
            )
        )
    return keras.Sequential(layers, name="augmentation")
