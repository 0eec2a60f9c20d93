"""What a run's ``metrics.json`` holds, typed, and the scores it is made of.

Training writes the validation and test scores, the baseline, what calibration and
fine-tuning did, the kept epochs and the model's size; evaluation adds ``evaluation[split]``
and the study adds ``tta[split]``. :class:`Metrics` is that file as attributes:
:meth:`Metrics.from_dict` reads any layout an earlier imgclf wrote (a missing key is ``None``
or empty) and :meth:`Metrics.to_dict` gives back the same JSON, keys in the order read and
keys this version does not know kept as they were. :func:`write_metrics` is the one writer of
the file and :func:`update_metrics` the read-modify-write every later step uses.

A leaf module: it imports only :mod:`imgclf.io`, :mod:`imgclf.errors`, numpy and the
standard library.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .errors import RunError

METRICS_FILE = "metrics.json"
SPLITS = ("validation", "test")


# -- the scores -----------------------------------------------------------------------------

def scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Cross-entropy and accuracy of predicted probabilities."""
    if not len(labels):
        return {"loss": None, "accuracy": None, "count": 0}
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {"loss": float(-np.log(p).mean()), "accuracy": float((probs.argmax(1) == labels).mean()),
            "count": int(len(labels))}


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]``: how many images of each class were given each class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predicted), 1)
    return cm


def per_class(cm: np.ndarray, class_names: list[str]) -> dict:
    """Precision, recall, F1 and support of every class from a confusion matrix."""
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


# -- the schema -----------------------------------------------------------------------------

def _field(default: Any = None, *, record: type | None = None, each: type | None = None,
           always: bool = False, factory=None):
    """A key of a record: ``record`` a nested record, ``each`` the record type of the values of
    a dict (or the items of a list); ``always`` written even when ``None`` or empty."""
    meta = {"record": record, "each": each, "always": always}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(kw_only=True)
class Record:
    """A JSON object with its known keys as attributes. ``extra`` keeps the keys this version
    does not know; a record read is written back with the keys it was read with, in their
    order (and any set since); one built in code with its ``always`` keys and those it has."""

    extra: dict = field(default_factory=dict, repr=False, metadata={"internal": True})
    # key -> None, in the order from_dict found them; None for a record built in code
    read_keys: dict | None = field(default=None, repr=False, compare=False, metadata={"internal": True})

    @classmethod
    def _schema(cls):
        return [f for f in fields(cls) if not f.metadata.get("internal")]

    @classmethod
    def from_dict(cls, d: Mapping | None):
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise RunError(f"{cls.__name__} expects a JSON object, got {type(d).__name__}")
        known, extra, values = {f.name: f for f in cls._schema()}, {}, {}
        for key, value in d.items():
            f = known.get(key)
            if f is None:
                extra[key] = value
            else:
                values[key] = _load(f, value)
        return cls(**values, extra=extra, read_keys=dict.fromkeys(d))

    def to_dict(self) -> dict:
        schema = {f.name: f for f in self._schema()}
        out = {}
        read = self.read_keys
        for key in [*(read or ()), *schema, *self.extra]:
            if key in out:
                continue
            if key in schema:
                f, value = schema[key], getattr(self, key)
                wanted = key in read if read is not None else f.metadata.get("always")
                if not wanted and value in (None, {}, []):
                    continue
                out[key] = _dump(value)
            elif key in self.extra:
                out[key] = self.extra[key]
        return out


def _load(f, value):
    record, each = f.metadata.get("record"), f.metadata.get("each")
    if value is None:
        return f.default_factory() if f.default_factory is not MISSING else None
    if record is not None and isinstance(value, Mapping):
        return record.from_dict(value)
    if each is not None and isinstance(value, Mapping):
        return {k: each.from_dict(v) if isinstance(v, Mapping) else v for k, v in value.items()}
    if each is not None and isinstance(value, list):
        return [each.from_dict(v) if isinstance(v, Mapping) else v for v in value]
    return value


def _dump(value):
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value



@dataclass(kw_only=True)
class LeakFree(Record):
    """Accuracy on the images of a split with no duplicate in another split."""

    accuracy: float | None = _field(always=True)
    count: int = _field(0, always=True)
    leaked: int = _field(0, always=True)


@dataclass(kw_only=True)
class Scores(Record):
    """Loss and accuracy of one split (``metrics.json``'s ``validation`` and ``test``)."""

    loss: float | None = _field(always=True)
    accuracy: float | None = _field(always=True)
    count: int = _field(0, always=True)
    leak_free: LeakFree | None = _field(record=LeakFree)


@dataclass(kw_only=True)
class Baseline(Record):
    """Always answering the most common class (of the training split): the score any model
    must beat, on the test and the validation split."""

    majority_class: str | None = _field(always=True)
    test_accuracy: float | None = _field(always=True)
    validation_accuracy: float | None = _field(always=True)


@dataclass(kw_only=True)
class StagePair(Record):
    """One number for the head stage's weights and one for the fine-tuned ones."""

    head: float | None = _field(always=True)
    fine_tuned: float | None = _field(always=True)


@dataclass(kw_only=True)
class FineTune(Record):
    """Whether fine-tuning was kept: only if it did not lower validation accuracy."""

    kept: bool = _field(True, always=True)
    validation_accuracy: StagePair | None = _field(record=StagePair)
    test_accuracy: StagePair | None = _field(record=StagePair)


@dataclass(kw_only=True)
class CalibrationSplit(Record):
    """:func:`imgclf.calibration.summary` of one split before and after the temperature."""

    before: dict | None = None
    after: dict | None = None


@dataclass(kw_only=True)
class Calibration(Record):
    """What temperature scaling did (:func:`imgclf.calibration.calibrate_model`'s record)."""

    temperature: float | None = None
    bins: int | None = None
    fitted_on: str | None = None
    validation: CalibrationSplit | None = _field(record=CalibrationSplit)
    test: CalibrationSplit | None = _field(record=CalibrationSplit)
    applied: bool = _field(False, always=True)
    reason: str | None = None
    skipped: str | None = None
    figure: str | None = None
    parity_max_abs_diff: float | None = None


@dataclass(kw_only=True)
class Parameters(Record):
    """The model's weights: trained, frozen (a backbone, BatchNorm statistics) and both."""

    trainable: int | None = _field(always=True)
    frozen: int | None = _field(always=True)
    total: int | None = _field(always=True)


@dataclass(kw_only=True)
class ClassScores(Record):
    """One class of ``evaluation[split].per_class`` (``support``: its images in the split)."""

    precision: float = _field(0.0, always=True)
    recall: float = _field(0.0, always=True)
    f1: float = _field(0.0, always=True)
    support: int = _field(0, always=True)


@dataclass(kw_only=True)
class TopLoss(Record):
    """One of the most confidently wrong predictions."""

    path: str = _field("", always=True)
    true: str = _field("", always=True)
    predicted: str = _field("", always=True)
    confidence: float = _field(0.0, always=True)
    loss: float = _field(0.0, always=True)


@dataclass(kw_only=True)
class TtaEffect(Record):
    """Accuracy and loss of a split with and without test-time augmentation."""

    mode: str | None = None
    views: int | None = None
    split: str | None = None
    count: int = _field(0, always=True)
    accuracy: float | None = None
    loss: float | None = None
    accuracy_without: float | None = None
    loss_without: float | None = None
    changed: int | None = None


@dataclass(kw_only=True)
class Evaluation(Scores):
    """``metrics.json``'s ``evaluation[split]``: what :func:`imgclf.evaluation.evaluate_run` found
    (the split's :class:`Scores` and more)."""

    tta: TtaEffect | None = _field(record=TtaEffect)
    baseline_accuracy: float | None = None
    majority_class: str | None = None
    per_class: dict[str, ClassScores] = _field(each=ClassScores, factory=dict)
    macro_f1: float | None = None
    confusion_matrix: list[list[int]] = _field(factory=list)
    top_losses: list[TopLoss] = _field(each=TopLoss, factory=list)
    figures: dict[str, str] = _field(factory=dict)


@dataclass(kw_only=True)
class Metrics(Record):
    """The whole of ``metrics.json`` (``always``: the keys training writes even when empty)."""

    feature_parity_max_abs_diff: float | None = None
    validation: Scores | None = _field(record=Scores, always=True)
    test: Scores | None = _field(record=Scores, always=True)
    calibration: Calibration | None = _field(record=Calibration)
    fine_tune: FineTune | None = _field(record=FineTune)
    baseline: Baseline | None = _field(record=Baseline, always=True)
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    keep: str | None = _field(always=True)
    kept_epoch: dict[str, int] = _field(factory=dict, always=True)  # per stage: the epoch of the weights kept
    epochs: int | None = _field(always=True)
    seconds_per_epoch: float | None = _field(always=True)
    parameters: Parameters | None = _field(record=Parameters, always=True)
    evaluation: dict[str, Evaluation] = _field(each=Evaluation, factory=dict)
    tta: dict[str, TtaEffect] = _field(each=TtaEffect, factory=dict)
    feature_runtime: dict | None = None  # where the frozen backbone ran (imgclf.models.runtime)

    def split(self, name: str) -> Scores | None:
        """The training-time scores of ``validation`` or ``test``."""
        return getattr(self, name) if name in SPLITS else None


# -- reading and writing --------------------------------------------------------------------

_writing = threading.Lock()  # one read-modify-write at a time within a process


def metrics_file(run_path: str | os.PathLike) -> Path:
    return Path(run_path) / METRICS_FILE


def read_metrics(run_path: str | os.PathLike) -> Metrics:
    """The run folder's ``metrics.json`` (an empty :class:`Metrics` before training wrote it)."""
    f = metrics_file(run_path)
    if not f.is_file():
        return Metrics.from_dict({})
    try:
        data = io.read_json(f)
    except ValueError as e:
        raise RunError(f"{f} is not valid JSON ({e}); was it edited by hand?") from None
    if not isinstance(data, Mapping):
        raise RunError(f"{f} does not hold a JSON object; was it edited by hand?")
    return Metrics.from_dict(data)


def write_metrics(run_path: str | os.PathLike, metrics: Metrics) -> Path:
    """The one writer of ``metrics.json``: replace the file atomically with ``metrics``."""
    return io.write_json(metrics_file(run_path), metrics.to_dict())


_MERGED = ("evaluation", "tta")  # sections keyed by split: one split replaced, the others kept


def update_metrics(run_path: str | os.PathLike, **sections) -> Metrics:
    """Read ``metrics.json``, set ``sections`` (records or plain dicts; ``evaluation`` and
    ``tta`` are merged split by split) and write it back atomically; returns the result."""
    schema = {f.name: f for f in Metrics._schema()}
    for key in sections:
        if key not in schema:
            raise KeyError(f"metrics.json has no section {key!r}")
    with _writing:
        metrics = read_metrics(run_path)
        for key, value in sections.items():
            value = _load(schema[key], _dump(value))
            if key in _MERGED:
                value = {**getattr(metrics, key), **(value or {})}
            setattr(metrics, key, value)
        write_metrics(run_path, metrics)
    return metrics


__all__ = ["Baseline", "Calibration", "CalibrationSplit", "ClassScores", "Evaluation", "FineTune", "LeakFree",
           "METRICS_FILE", "Metrics", "Parameters", "Record", "Scores", "StagePair", "TopLoss", "TtaEffect",
           "confusion", "metrics_file", "per_class", "read_metrics", "scores", "top_losses", "update_metrics",
           "write_metrics"]
