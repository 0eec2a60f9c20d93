"""Evaluation: loss, accuracy against the majority baseline, per-class scores, confusion
matrix, and the most confidently wrong images."""

from __future__ import annotations

import numpy as np

from . import figures
from .errors import ExplainError
from .explain import explainer_for, overlay
from .inference.inputs import decode
from .inference.tta import check_mode, split_effect
from .metrics import Evaluation, confusion, per_class, scores, top_losses, update_metrics
from .training.scoring import leak_free, predict_split


def evaluate_run(run, split: str = "test", *, data=None, progress: bool = True, k: int = 9,
                 tta: str | None = None) -> dict:
    """Evaluate a run's model on one of its splits; write metrics.json and figures.

    ``tta`` (``"flip"`` or ``"crops"``, see :mod:`imgclf.inference.tta`) adds ``result["tta"]``:
    the accuracy and loss with and without test-time augmentation; the other figures are the
    plain model's. The most-confidently-wrong grid shows each image under its Grad-CAM heatmap
    for the predicted class (see :mod:`imgclf.explain`).
    """
    tta = check_mode(tta)
    ds = run.dataset(data=data, progress=progress)
    ds.check_split(split)
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
            tl = result["top_losses"]
            images, heat = _with_heatmaps(run, [decode(t["path"], run.preprocessing) for t in tl],
                                          [names.index(t["predicted"]) for t in tl])
            title = f"most confidently wrong ({split})" + (", Grad-CAM of the predicted class" if heat else "")
            fig = figures.top_losses(images, [t["true"] for t in tl], [t["predicted"] for t in tl],
                                     [t["confidence"] for t in tl], paths=[t["path"] for t in tl], title=title)
            result["figures"]["top_losses"] = str(figures.save(fig, run.figures_dir / f"top_losses_{split}.png"))
    update_metrics(run.path, evaluation={split: Evaluation.from_dict(result)})
    return result


def _with_heatmaps(run, images: list, classes: list[int]) -> tuple[list, bool]:
    """``images`` under their Grad-CAM heatmaps for ``classes``; as they are (and False) for a
    model without a convolutional layer."""
    try:
        cam = explainer_for(run)
    except ExplainError:
        return images, False
    heat, _ = cam(np.stack(images), classes)
    return [overlay(img, h) for img, h in zip(images, heat)], True
