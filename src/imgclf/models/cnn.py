"""The blog's three small CNNs trained from scratch: ``cnn``, ``cnn_aug``, ``cnn_aug_pre``.

* ``cnn`` (model 1): 3 x [Conv2D(32, 3, relu) + MaxPooling2D], Flatten, Dropout, Dense softmax.
  It takes the raw 0..255 pixels, as the blog feeds them; this is faithful, not advisable.
* ``cnn_aug`` (model 2): augmentation first, the same convolutions, Flatten, Dropout,
  Dense(64, relu), Dense softmax.
* ``cnn_aug_pre`` (model 3): ``cnn_aug`` with a Rescaling(1/127.5, offset=-1) to [-1, 1]
  before the augmentation, as the blog does; the augmentation therefore sees values in [-1, 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imgclf.models.registry import ModelSpec

if TYPE_CHECKING:  # annotations only: Keras is imported where a model is built
    import keras

# name -> (units of the hidden Dense layer or None, rescale to [-1, 1] before augmentation)
_VARIANTS: dict[str, tuple[int | None, bool]] = {
    "cnn": (None, False),
    "cnn_aug": (64, False),
    "cnn_aug_pre": (64, True),
}


def augment_value_range(name: str) -> tuple[float, float]:
    """The pixel range the augmentation block of CNN ``name`` sees."""
    return (-1.0, 1.0) if _VARIANTS[name][1] else (0.0, 255.0)


def build_cnn(
    spec: ModelSpec,
    num_classes: int,
    image_size: int,
    *,
    augmentation: keras.Sequential | None = None,
    dropout: float = 0.2,
    seed: int | None = None,
) -> keras.Model:
    import keras
    hidden, rescale = _VARIANTS[spec.name]
    image = keras.Input((image_size, image_size, 3), name="image", dtype="float32")
    x = image
    if rescale:
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale", dtype="float32")(x)
    if augmentation is not None:
        x = augmentation(x)
    for i in range(1, 4):
        x = keras.layers.Conv2D(32, 3, activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"maxpool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="classifier")(x)
    return keras.Model(image, outputs, name=f"imgclf_{spec.name}")
