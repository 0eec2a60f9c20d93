"""Evaluation: loss, accuracy against the majority baseline, per-class scores, confusion
matrix, and the most confidently wrong images."""

from __future__ import annotations

import numpy as np

from . import figures, io


def predict_split(model, ds, split: str, image_size: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for every image of ``split``, in the split's order."""
    if not len(ds.indices(split)):
        return np.zeros((0, ds.num_classes), np.float32)
    data = ds.tf_dataset(split, batch_size=batch_size, shuffle=False, image_size=image_size)
    return np.asarray(model.predict(data, verbose=0), dtype=np.float32)


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


def leak_free(ds, split: str, probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy on the images of ``split`` with no duplicate (by the scan's fingerprints) in
    another split: what the score is worth when some test images were seen in training."""
    from .data.fingerprint import leaked

    leaks = leaked(ds.report.records, {r.path: s for s in ds.splits for r in ds.splits[s]})
    keep = np.array([r.path not in leaks for r in ds.records(split)], bool)
    out = scores(probs[keep], labels[keep]) if len(labels) else scores(probs, labels)
    return {"accuracy": out["accuracy"], "count": out["count"], "leaked": int(len(keep) - keep.sum())}


def evaluate_run(run, split: str = "test", *, data=None, progress: bool = True, k: int = 9,
                 tta: str | None = None) -> dict:
    """Evaluate a run's model on one of its splits; write metrics.json and figures.

    ``tta`` (``"flip"`` or ``"crops"``, see :mod:`imgclf.inference.tta`) adds ``result["tta"]``:
    the accuracy and loss with and without test-time augmentation; the other figures are the
    plain model's. The most-confidently-wrong grid shows each image under its Grad-CAM heatmap
    for the predicted class (see :mod:`imgclf.explain`).
    """
    from .inference.tta import check_mode, split_effect

    tta = check_mode(tta)
    ds = run.dataset(data=data, progress=progress)
    ds._check_split(split)
    model = run.model
    probs = predict_split(model, ds, split, run.image_size)
    labels = ds.labels(split)
    names = run.class_names
    result = scores(probs, labels)
    if tta is not None and len(labels):
        result["tta"] = split_effect(model, ds, split, run.image_size, tta)[0]
    majority, base = ds.baseline(split)
    result["baseline_accuracy"] = base
    result["leak_free"] = leak_free(ds, split, probs, labels)
    result["majority_class"] = majority
    if len(labels):
        cm = confusion(labels, probs.argmax(1), len(names))
        result["per_class"] = per_class(cm, names)
        result["macro_f1"] = float(np.mean([v["f1"] for v in result["per_class"].values()]))
        result["confusion_matrix"] = cm.tolist()
        result["top_losses"] = top_losses(probs, labels, ds.paths(split), names, k)
        fig = figures.confusion_matrix(cm, names, title=f"confusion matrix ({split})")
        result["figures"] = {"confusion_matrix": str(figures.save(fig, run.figures_dir / f"confusion_matrix_{split}.png"))}
        if result["top_losses"]:
            from .inference.predict import decode

            tl = result["top_losses"]
            images, heat = _with_heatmaps(run, [decode(t["path"], run.preprocessing) for t in tl],
                                          [names.index(t["predicted"]) for t in tl])
            title = f"most confidently wrong ({split})" + (", Grad-CAM of the predicted class" if heat else "")
            fig = figures.top_losses(images, [t["true"] for t in tl], [t["predicted"] for t in tl],
                                     [t["confidence"] for t in tl], paths=[t["path"] for t in tl], title=title)
            result["figures"]["top_losses"] = str(figures.save(fig, run.figures_dir / f"top_losses_{split}.png"))
    metrics = run.metrics()
    metrics.setdefault("evaluation", {})[split] = result
    io.write_json(run.path / "metrics.json", metrics)
    return result


def _with_heatmaps(run, images: list, classes: list[int]) -> tuple[list, bool]:
    """``images`` under their Grad-CAM heatmaps for ``classes``; as they are (and False) for a
    model without a convolutional layer."""
    from .explain import ExplainError, explainer_for, overlay

    try:
        cam = explainer_for(run)
    except ExplainError:
        return images, False
    heat, _ = cam(np.stack(images), classes)
    return [overlay(img, h) for img, h in zip(images, heat)], True
