"""Overfitting diagnosis: what the blog reads off a history plot by eye, computed and put into words.

>>> d = diagnose({"accuracy": [.6, .7, .8, .9], "val_accuracy": [.55, .56, .57, .56]}, baseline=.5)
>>> d.verdict
'overfitting'

Everything is measured over the second half of training (the first half is the model finding
its feet), the same window the report's "validation accuracy range" uses:

* the **gap**: mean training accuracy minus mean validation accuracy;
* the **noise**: how far validation accuracy scatters around its own straight-line trend;
* the **trend**: how much that straight line rises over the window (still improving?);
* the **validation-loss rise**: how far the last validation loss sits above its minimum while
  the training loss keeps falling (the textbook sign of memorising);
* the **skill**: training accuracy as a share of the way from the majority baseline to 100%.

Verdicts, checked in this order:

``inconclusive``  fewer than 3 epochs, or no validation accuracy recorded;
``overfitting``   a gap of at least 10 points that stands clear of the noise, or a gap of at
                  least 5 points with the validation loss 25% above its minimum (or any gap with
                  the validation loss 50% above it) while the training loss still falls;
``underfitting``  training accuracy less than halfway from the baseline to 100%;
``noisy``         validation accuracy scatters by 4 points or more around its trend;
``good_fit``      otherwise (the text mentions a slight gap, validation above training, and
                  whether accuracy was still rising when training stopped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["Diagnosis", "diagnose", "second_half", "VERDICTS", "THRESHOLDS"]

VERDICTS = {
    "overfitting": "overfitting",
    "underfitting": "underfitting",
    "noisy": "too noisy to tell",
    "good_fit": "good fit",
    "inconclusive": "too short to tell",
}

#: The numbers the verdicts hinge on (accuracies as fractions, so 0.10 is 10 points).
THRESHOLDS = {
    "min_epochs": 3,
    "overfit_gap": 0.10,  # clear overfitting: training this far above validation ...
    "overfit_gap_noise_ratio": 2.0,  # ... and at least this many times the noise
    "slight_gap": 0.05,  # a gap worth mentioning; with a rising validation loss, overfitting
    "loss_rise": 0.25,  # validation loss this far (relative) above its minimum ...
    "loss_rise_alone": 0.50,  # ... or this far, whatever the gap
    "underfit_skill": 0.5,  # training accuracy less than this share of baseline -> 100%
    "noise": 0.04,  # validation accuracy scatter around its trend
    "improving": 0.02,  # the trend rises at least this much over the window
    "val_above_train": 0.02,  # validation this far above training is worth explaining
}


@dataclass
class Diagnosis:
    """A verdict on one training history, with the sentences and the numbers behind it."""

    verdict: str  # one of VERDICTS
    label: str  # the verdict in words ("good fit")
    text: str  # what the numbers say, in a sentence or three
    advice: str  # what to try next ("" when nothing needs doing)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def sentence(self) -> str:
        return f"{self.text} {self.advice}".strip()

    def to_dict(self) -> dict:
        return asdict(self)


def second_half(values: Sequence[float]) -> list[float]:
    """The epochs the report summarises: the second half (for 1 epoch, that epoch)."""
    values = list(values)
    return values[len(values) // 2:]


def _clean(values) -> np.ndarray:
    if values is None:
        return np.zeros(0)
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f)
    return np.asarray(out, dtype=float)


def _pts(x: float) -> str:
    v = abs(x) * 100
    if v < 1:
        return "less than a point"
    return f"{v:.0f} point{'s' if round(v) != 1 else ''}"


def _pct(x: float) -> str:
    return f"{x:.1%}"


def diagnose(
    history: Mapping[str, Sequence[float]] | Any,
    baseline: float | None = None,
    *,
    validation_size: int | None = None,
    num_classes: int | None = None,
) -> Diagnosis:
    """Diagnose one history (``accuracy``, ``val_accuracy`` and optionally ``loss``, ``val_loss``).

    ``history`` is a Keras ``History.history`` dict (or the History), or :meth:`Run.history`.
    ``baseline`` is the majority-class accuracy (default ``1 / num_classes``, else 0.5).
    ``validation_size`` (images) makes the advice for a noisy curve concrete.
    """
    data = getattr(history, "history", history)
    if not isinstance(data, Mapping):
        raise ValueError(f"history must map metric -> per-epoch values; got {type(history).__name__}")
    acc, val = _clean(data.get("accuracy")), _clean(data.get("val_accuracy"))
    loss, val_loss = _clean(data.get("loss")), _clean(data.get("val_loss"))
    if baseline is None:
        baseline = 1.0 / num_classes if num_classes else 0.5
    baseline = float(baseline)
    n = int(min(len(acc), len(val))) if len(val) else 0
    t = THRESHOLDS
    evidence: dict[str, Any] = {"epochs": int(max(len(acc), len(val))), "baseline": baseline}

    if n == 0 or np.all(np.isnan(val[:n])):
        last = f" Training accuracy reached {_pct(acc[-1])}." if len(acc) and not math.isnan(acc[-1]) else ""
        return Diagnosis("inconclusive", VERDICTS["inconclusive"],
                         "No validation accuracy was recorded, so over- or underfitting cannot be judged." + last,
                         "Keep a validation split to see how the model does on images it has not trained on.",
                         evidence)

    acc, val = acc[:n], val[:n]
    start = n // 2
    tr_half, va_half = acc[start:], val[start:]
    train_mean, val_mean = float(np.nanmean(tr_half)), float(np.nanmean(va_half))
    gap = train_mean - val_mean
    lo, hi = float(np.nanmin(va_half)), float(np.nanmax(va_half))
    noise, trend = _noise_and_trend(va_half)
    skill = (train_mean - baseline) / (1 - baseline) if baseline < 1 else 1.0
    rise, rise_from, train_loss_falls = _loss_rise(loss, val_loss)
    evidence.update({
        "train_accuracy": train_mean, "val_accuracy": val_mean, "gap": gap, "val_range": [lo, hi],
        "noise": noise, "trend": trend, "skill": skill, "val_loss_rise": rise,
        "val_loss_min_epoch": rise_from, "window": [start + 1, n],
    })
    window = "the last epoch" if n - start == 1 else f"epochs {start + 1}-{n}"
    improving = trend >= max(t["improving"], noise)
    still = (" Validation accuracy was still rising when training stopped, so more epochs should help."
             if improving else "")

    if n < t["min_epochs"]:
        return Diagnosis(
            "inconclusive", VERDICTS["inconclusive"],
            f"Only {n} epoch{'s' if n != 1 else ''}: too few to judge the fit. Over {window} training "
            f"accuracy averaged {_pct(train_mean)} and validation {_pct(val_mean)} "
            f"({'a gap of ' + _pts(gap) if gap > 0 else 'validation ahead by ' + _pts(gap)}).",
            "Train for more epochs to see where the curves go.", evidence)

    rising_loss = rise is not None and train_loss_falls and rise >= t["loss_rise"]
    loss_note = (f" Validation loss has climbed {rise:.0%} above its lowest point (epoch {rise_from}) "
                 "while training loss kept falling." if rising_loss else "")
    clear_gap = gap >= t["overfit_gap"] and gap >= t["overfit_gap_noise_ratio"] * noise
    if clear_gap or (rising_loss and gap >= t["slight_gap"]) or (
            rise is not None and train_loss_falls and rise >= t["loss_rise_alone"] and gap > 0):
        return Diagnosis(
            "overfitting", VERDICTS["overfitting"],
            f"Training accuracy ({_pct(train_mean)}) runs {_pts(gap)} above validation accuracy "
            f"({_pct(val_mean)}) over {window}: the model is learning its training images rather "
            f"than what generalises, so it is overfitting.{loss_note}",
            "Data augmentation, more dropout or more data should help"
            + (f"; so would stopping at the epoch with the lowest validation loss ({rise_from})." if rising_loss
               else "."), evidence)

    if skill < t["underfit_skill"]:
        advice = ("A larger or pretrained model, or inputs scaled to [-1, 1], may help too." if improving else
                  "A larger or pretrained model, inputs scaled to [-1, 1], or a different learning rate may help.")
        return Diagnosis(
            "underfitting", VERDICTS["underfitting"],
            f"Training accuracy stays low ({_pct(train_mean)} over {window}, against a majority "
            f"baseline of {_pct(baseline)}): the model has not yet learned even its training "
            f"images well, so it is underfitting rather than overfitting"
            f"{' (validation is close, ' + _pts(gap) + ' apart)' if abs(gap) < t['overfit_gap'] else ''}."
            f"{still}", advice, evidence)

    if noise >= t["noise"]:
        size = f" ({validation_size} images now)" if validation_size else ""
        return Diagnosis(
            "noisy", VERDICTS["noisy"],
            f"Validation accuracy jumps around by about ±{noise * 100:.0f} points from epoch to epoch "
            f"({_pct(lo)} to {_pct(hi)} over {window}), as much as the gap between training "
            f"({_pct(train_mean)}) and validation ({_pct(val_mean)}), so the fit cannot be read reliably.",
            f"A larger validation set{size}, a lower learning rate or a larger batch would steady it.",
            evidence)

    if gap <= -t["val_above_train"]:
        body = (f"Validation accuracy ({_pct(val_mean)}) is even above training accuracy "
                f"({_pct(train_mean)}) over {window}: dropout and augmentation act only while "
                "training, which makes the training images harder. No sign of overfitting.")
    elif gap >= t["slight_gap"]:
        body = (f"Training accuracy ({_pct(train_mean)}) is {_pts(gap)} above validation "
                f"({_pct(val_mean)}) over {window}: a slight gap, mild overfitting at most.")
    else:
        body = (f"Training ({_pct(train_mean)}) and validation ({_pct(val_mean)}) accuracy stay "
                f"within {_pts(gap)} of each other over {window}: no sign of overfitting.")
    advice = "" if improving else "Accuracy has levelled off."
    return Diagnosis("good_fit", VERDICTS["good_fit"], body + still, advice, evidence)


def _noise_and_trend(values: np.ndarray) -> tuple[float, float]:
    """Scatter (std of the residuals) around a straight-line fit, and the fit's rise over the window."""
    v = values[~np.isnan(values)]
    if v.size < 2:
        return 0.0, 0.0
    x = np.arange(v.size, dtype=float)
    if v.size == 2:
        return 0.0, float(v[1] - v[0])
    slope, intercept = np.polyfit(x, v, 1)
    resid = v - (slope * x + intercept)
    noise = float(np.sqrt((resid ** 2).sum() / (v.size - 2))) if v.size > 2 else 0.0
    return noise, float(slope * (v.size - 1))


def _loss_rise(loss: np.ndarray, val_loss: np.ndarray) -> tuple[float | None, int | None, bool]:
    """How far (relative) the last validation loss is above its minimum; whether training loss fell meanwhile."""
    if val_loss.size < 2 or np.all(np.isnan(val_loss)):
        return None, None, False
    best = int(np.nanargmin(val_loss))
    last = float(val_loss[~np.isnan(val_loss)][-1])
    low = float(val_loss[best])
    rise = (last - low) / low if low > 0 else 0.0
    falls = bool(loss.size > best and loss.size >= 1 and not math.isnan(loss[-1]) and not math.isnan(loss[best])
                 and loss[-1] < loss[best])
    return rise, best + 1, falls
