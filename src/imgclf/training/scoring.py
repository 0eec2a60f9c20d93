"""Scoring a model on a dataset's split: its probabilities, and the accuracy on the images
that have no duplicate in another split. Training scores the model it saves with these;
evaluation scores a run's model with them again."""

from __future__ import annotations

import numpy as np

from ..data.fingerprint import leaked
from ..metrics import scores


def predict_split(model, ds, split: str, image_size: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for every image of ``split``, in the split's order."""
    if not len(ds.indices(split)):
        return np.zeros((0, ds.num_classes), np.float32)
    data = ds.tf_dataset(split, batch_size=batch_size, shuffle=False, image_size=image_size)
    return np.asarray(model.predict(data, verbose=0), dtype=np.float32)


def leak_free(ds, split: str, probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy on the images of ``split`` with no duplicate (by the scan's fingerprints) in
    another split: what the score is worth when some test images were seen in training."""
    leaks = leaked(ds.report.records, {r.path: s for s in ds.splits for r in ds.splits[s]})
    keep = np.array([r.path not in leaks for r in ds.records(split)], bool)
    out = scores(probs[keep], labels[keep]) if len(labels) else scores(probs, labels)
    return {"accuracy": out["accuracy"], "count": out["count"], "leaked": int(len(keep) - keep.sum())}


__all__ = ["leak_free", "predict_split"]
