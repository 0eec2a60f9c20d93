"""Calibration: a temperature fitted on the validation split, built into the saved model.

    from imgclf import calibration
    t = calibration.fit_temperature(val_probs, val_labels)      # minimises validation NLL
    calibration.expected_calibration_error(probs, labels)        # 15 equal-width bins
    calibration.temper_model(model, t)                           # the model now gives softmax(z / t)

Temperature scaling (Guo et al., 2017) divides the logits ``z`` by one number ``T``: ``T > 1``
softens an over-confident model, ``T < 1`` sharpens an under-confident one (label smoothing
makes models under-confident), and the top-1 class never changes. Every registry model ends in
``Dense(softmax)``, so dividing its kernel and bias by ``T`` divides the logits by ``T``: the
calibrated model has the same layers as before (it still loads in Keras safe mode without
imgclf), and every export made from it (SavedModel, TFLite, ONNX) is calibrated too.

The fit uses the probabilities the model already gives: ``log p`` differs from the logits by a
per-image constant, which the softmax removes, so ``softmax(log p / T) = softmax(z / T)``.
The temperature is fitted on the validation split only; the test split is scored, never used.
When the temperature would raise the validation ECE, the model is kept as it was.
"""

from __future__ import annotations

import math

import numpy as np

from . import figures
from .errors import CalibrationError

ECE_BINS = 15
MIN_IMAGES = 30  # fewer validation images than this give no trustworthy temperature
T_BOUNDS = (0.05, 20.0)
_EPS = 1e-30
CLIP = _EPS  # the smallest probability scale() takes as it is (smaller ones are clipped to it)


# -- scores ---------------------------------------------------------------------------------

def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"need probabilities (N, classes) and N labels; got {p.shape} and {y.shape}")
    return p, y


def nll(probs, labels) -> float | None:
    """Mean negative log-likelihood of the true class (``None`` for no images)."""
    p, y = _check(probs, labels)
    if not len(y):
        return None
    return float(-np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0)).mean())


def reliability(probs, labels, bins: int = ECE_BINS) -> dict:
    """Per confidence bin (equal widths on [0, 1]): image count, mean confidence, accuracy."""
    p, y = _check(probs, labels)
    conf = p.max(1) if len(p) else np.zeros(0)
    correct = (p.argmax(1) == y) if len(p) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(float), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": edges, "count": count, "confidence": conf_sum / count, "accuracy": acc_sum / count}


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float | None:
    """ECE: the image-weighted mean of |accuracy - confidence| over ``bins`` confidence bins."""
    r = reliability(probs, labels, bins)
    n = r["count"].sum()
    if not n:
        return None
    filled = r["count"] > 0
    gap = np.abs(r["accuracy"][filled] - r["confidence"][filled])
    return float((gap * r["count"][filled]).sum() / n)


def scale(probs, temperature: float) -> np.ndarray:
    """The probabilities the model gives once its logits are divided by ``temperature``."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / float(temperature)
    z -= z.max(1, keepdims=True) if len(z) else 0.0
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def summary(probs, labels) -> dict:
    """ECE, NLL and accuracy of one split's probabilities."""
    p, y = _check(probs, labels)
    acc = float((p.argmax(1) == y).mean()) if len(y) else None
    return {"ece": expected_calibration_error(p, y), "nll": nll(p, y), "accuracy": acc, "count": int(len(y))}


# -- the fit --------------------------------------------------------------------------------

def fit_temperature(probs, labels, *, min_images: int = MIN_IMAGES) -> float:
    """The temperature that minimises the NLL of ``probs`` (validation) on ``labels``.

    A bounded scalar search (scipy's Brent method) over ``log T`` in ``log`` of
    :data:`T_BOUNDS`. Raises :class:`CalibrationError` with fewer than ``min_images`` images.
    """
    from scipy.optimize import minimize_scalar

    p, y = _check(probs, labels)
    if len(y) < min_images:
        raise CalibrationError(
            f"the validation split has {len(y)} image{'s' if len(y) != 1 else ''}, too few to fit a "
            f"temperature (at least {min_images}); give a larger --validation fraction, or train with "
            "--no-calibrate")
    logp = np.log(np.clip(p, _EPS, 1.0))
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float((np.log(np.exp(z).sum(1)) - z[rows, y]).mean())

    lo, hi = (math.log(b) for b in T_BOUNDS)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    t = float(math.exp(res.x))
    # the bounded search never tries T = 1 itself: never return a worse fit than no change
    return t if loss(res.x) <= loss(0.0) else 1.0


def calibrate(val_probs, val_labels, test_probs=None, test_labels=None, *, min_images: int = MIN_IMAGES) -> dict:
    """Fit a temperature on validation and say whether to keep it; score both splits.

    Returns ``{"temperature", "applied", "reason", "validation": {"before", "after"}, "test": ...}``
    where ``before``/``after`` are :func:`summary` dicts. ``applied`` is False when the
    temperature would raise the validation ECE (then ``temperature`` is the one that was
    rejected and the model is to be kept as it is).
    """
    t = fit_temperature(val_probs, val_labels, min_images=min_images)
    out = {"temperature": t, "bins": ECE_BINS, "fitted_on": "validation"}
    for split, probs, labels in (("validation", val_probs, val_labels), ("test", test_probs, test_labels)):
        if probs is None or not len(probs):
            continue
        out[split] = {"before": summary(probs, labels), "after": summary(scale(probs, t), labels)}
    before, after = out["validation"]["before"]["ece"], out["validation"]["after"]["ece"]
    out["applied"] = bool(after <= before)
    out["reason"] = None if out["applied"] else (
        f"a temperature of {t:.3g} would raise validation ECE from {before:.4f} to {after:.4f}; "
        "the uncalibrated model is kept")
    return out


def describe(result: dict | None) -> str:
    """What the calibration did, in one or two sentences."""
    if not result:
        return "Not calibrated."
    if result.get("skipped"):
        return f"Not calibrated: {result['skipped']}."
    t = result["temperature"]
    val = result["validation"]
    vb, va = val["before"]["ece"], val["after"]["ece"]
    if not result.get("applied"):
        return (f"Calibration was tried and not kept: a temperature of {t:.2f} would raise validation ECE "
                f"from {vb:.3f} to {va:.3f}, so the model's probabilities are as trained.")
    if abs(t - 1.0) < 0.02:
        kind = "already well calibrated: the temperature is close to 1"
    elif t > 1:
        kind = f"over-confident: a temperature of {t:.2f} softens its probabilities"
    else:
        kind = f"under-confident: a temperature of {t:.2f} sharpens its probabilities"
    if min(abs(t - b) / b for b in T_BOUNDS) < 1e-3:
        kind += " (the end of the range searched: the validation split gives it no reason to stop)"
    text = f"The model was {kind}; validation ECE {vb:.3f} → {va:.3f}"
    test = result.get("test")
    if test and test["before"]["ece"] is not None:
        text += f", test ECE {test['before']['ece']:.3f} → {test['after']['ece']:.3f}"
    return text + ". The top-1 class, and so the accuracy, is unchanged."


# -- the model ------------------------------------------------------------------------------

def _softmax_dense(model):
    import keras

    layer = model.layers[-1] if model.layers else None
    activation = getattr(layer, "activation", None)
    if not isinstance(layer, keras.layers.Dense) or getattr(activation, "__name__", "") != "softmax":
        raise CalibrationError(
            f"model {model.name!r} does not end in a Dense softmax layer, so a temperature cannot be "
            "built into it; train with --no-calibrate")
    return layer


def temper_model(model, temperature: float) -> None:
    """Divide the logits of ``model`` (ending in ``Dense(softmax)``) by ``temperature``, in place.

    The kernel and bias of the final Dense layer are divided by ``temperature``; every model
    that shares that layer (a transfer model's ``head``) is calibrated with it.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise CalibrationError(f"a temperature must be a positive number, got {temperature!r}")
    layer = _softmax_dense(model)
    layer.set_weights([w / np.float32(temperature) for w in layer.get_weights()])


def diagram(result: dict, probs, labels, split: str = "validation"):
    """The reliability diagram of ``split`` before and after the temperature of ``result``."""
    t = result["temperature"]
    after_heading = f"after, T = {t:.2f}" + ("" if result.get("applied") else " (not kept)")
    panels = [(f"{split} before", reliability(probs, labels), result[split]["before"]["ece"]),
              (f"{split} {after_heading}", reliability(scale(probs, t), labels), result[split]["after"]["ece"])]
    return figures.reliability_diagram(panels, title=f"reliability ({split}, {ECE_BINS} bins)")


def calibrate_model(model, splits: dict, *, figure=None, min_images: int = MIN_IMAGES) -> dict:
    """Fit a temperature on ``splits["validation"]`` and build it into ``model`` when it helps.

    ``splits`` maps ``"validation"`` (and ``"test"``) to ``(probabilities, labels)`` of the
    model as it is. The reliability diagram of the validation split is written to ``figure``
    when given. Returns the :func:`calibrate` record, or ``{"applied": False, "skipped": why}``
    when no temperature can be fitted; the model is changed only when ``applied`` is True.
    """
    val = splits.get("validation")
    test = splits.get("test") or (None, None)
    try:
        _softmax_dense(model)
        if val is None:
            raise CalibrationError("the run has no validation split to fit a temperature on")
        result = calibrate(val[0], val[1], test[0], test[1], min_images=min_images)
    except CalibrationError as e:
        return {"applied": False, "skipped": str(e)}
    if result["applied"]:
        temper_model(model, result["temperature"])
    if figure is not None:
        result["figure"] = str(figures.save(diagram(result, val[0], val[1]), figure))
    return result
