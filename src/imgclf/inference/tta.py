"""Test-time augmentation: the mean of the model's probabilities over a few views of each image.

``flip``: the image and its horizontal mirror (as fastai's ``tta`` and timm's "flip" do).
``crops``: those two and the four corner crops of 87.5% of the side, resized back to the
model's input size (the image is already centre-cropped to it). The views are made from the
model's own input pixels (the run's decoding), so the plain view is exactly what ``predict``
without TTA sees, and the probabilities of a calibrated model are averaged as they are.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import ConfigError
from ..metrics import scores
from .inputs import predict_arrays

MODES = ("flip", "crops")
CROP_FRACTION = 0.875


def check_mode(mode) -> str | None:
    """``mode`` as one of :data:`MODES`, or None for no TTA (``None``, ``False``, ``"none"``)."""
    if mode is None or mode is False or (isinstance(mode, str) and mode.lower() in ("", "none", "off")):
        return None
    if mode is True:
        return "flip"
    if isinstance(mode, str) and mode.lower() in MODES:
        return mode.lower()
    raise ConfigError(f"unknown test-time augmentation {mode!r}; choose one of: {', '.join(MODES)} (or none)")


def views(images: np.ndarray, mode: str) -> list[np.ndarray]:
    """The views of a batch ``(N, S, S, 3)`` that ``mode`` averages over, the plain one first."""
    x = np.asarray(images, dtype=np.float32)
    out = [x, x[:, :, ::-1]]
    if mode == "crops":
        h, w = x.shape[1:3]
        ch, cw = max(1, round(h * CROP_FRACTION)), max(1, round(w * CROP_FRACTION))
        for top, left in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw)):
            crop = x[:, top:top + ch, left:left + cw]
            out.append(_resize(crop, (h, w)))
    return out


def _resize(batch: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of a float batch: ``tf.image.resize`` on TensorFlow, Keras' on the others."""
    if backend.is_tensorflow():
        import tensorflow as tf

        return np.asarray(tf.image.resize(batch, size, method="bilinear"), dtype=np.float32)
    import keras

    resized = keras.ops.image.resize(batch, size, interpolation="bilinear", antialias=False)
    return np.asarray(keras.ops.convert_to_numpy(resized), dtype=np.float32)


def predict_tta(predict, images: np.ndarray, mode: str | None) -> np.ndarray:
    """The mean over :func:`views` of ``predict(batch) -> probabilities`` (no TTA: one call)."""
    mode = check_mode(mode)
    if mode is None or not len(images):
        return np.asarray(predict(np.asarray(images, dtype=np.float32)), dtype=np.float32)
    return np.mean([np.asarray(predict(v), dtype=np.float64) for v in views(images, mode)], axis=0).astype(np.float32)


def view_count(mode: str | None) -> int:
    mode = check_mode(mode)
    return 1 if mode is None else 2 if mode == "flip" else 6


def split_effect(model, ds, split: str, image_size: int, mode: str = "flip",
                 batch_size: int = 64) -> tuple[dict, np.ndarray]:
    """Accuracy and loss of ``split`` with and without ``mode`` TTA and how many answers change,
    and the TTA probabilities."""
    mode = check_mode(mode) or "flip"
    idx = ds.indices(split)
    labels = ds.labels(split)
    plain, tta = [], []
    pixels = ds.decoded(image_size)
    for i in range(0, len(idx), batch_size):
        x = np.asarray(pixels[idx[i:i + batch_size]], dtype=np.float32)
        vs = [predict_arrays(model, v) for v in views(x, mode)]
        plain.append(vs[0])
        tta.append(np.mean(vs, axis=0))
    n = ds.num_classes
    plain = np.concatenate(plain) if plain else np.zeros((0, n), np.float32)
    tta = np.concatenate(tta) if tta else np.zeros((0, n), np.float32)
    without, with_ = scores(plain, labels), scores(tta, labels)
    return {"mode": mode, "views": view_count(mode), "split": split,
            "count": int(len(labels)), "accuracy": with_["accuracy"], "loss": with_["loss"],
            "accuracy_without": without["accuracy"], "loss_without": without["loss"],
            "changed": int(np.sum(plain.argmax(1) != tta.argmax(1))) if len(labels) else 0}, tta


__all__ = ["CROP_FRACTION", "MODES", "check_mode", "predict_tta", "split_effect", "view_count", "views"]
