"""The scores of a model's probabilities: loss, accuracy, confusion matrix, per-class figures.

Plain numpy, written into ``metrics.json`` by training and evaluation and read by the reports.
"""

from __future__ import annotations

import numpy as np


def scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Cross-entropy and accuracy of predicted probabilities."""
    if not len(labels):
        return {"loss": None, "accuracy": None, "count": 0}
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"loss": float(-np.log(p).mean()), "accuracy": float((probs.argmax(1) == labels).mean()),
            "count": int(len(labels))}


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predicted), 1)
    return cm


def per_class(cm: np.ndarray, class_names: list[str]) -> dict:
    out = {}
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        support = cm[i].sum()
        predicted = cm[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
    return out


def top_losses(probs: np.ndarray, labels: np.ndarray, paths: list, class_names: list[str], k: int = 9) -> list[dict]:
    """The ``k`` wrong predictions made with the highest confidence."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:k]
    return [{"path": str(paths[i]), "true": class_names[labels[i]], "predicted": class_names[pred[i]],
             "confidence": float(probs[i, pred[i]]),
             "loss": float(-np.log(max(float(probs[i, labels[i]]), 1e-7)))} for i in order]
