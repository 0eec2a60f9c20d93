"""Predict classes for files, folders, globs, bytes, PIL images or arrays with a trained run.

    import imgclf
    run = imgclf.load("runs/mobilenet_v2-...")
    results = run.predict(["photos/", "cat.jpg", "more/*.png"], top_k=3)
    print(results.table())          # or results.to_csv("out.csv"), results.to_json(), results.rows()

Every input is decoded by :func:`imgclf.data.images.load_image` with the run's own
preprocessing (size, fit, interpolation), so prediction sees the same pixels as training.
An input that cannot be read becomes a result with ``error`` set; it never stops the others.
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..errors import ConfigError, DataError, ExplainError
from ..explain import explainer_for, overlay, png_bytes
from ..models.runtime import choose_runtime, file_stamp
from ..progress import bar
from ..run import resolve_run
from .export import FLOAT_TOLERANCE, inference_model
from .inputs import (
    ImageTooLargeError,
    decode,
    decode_or_error,
    describe_error,
    expand_inputs,
    open_header,
    predict_arrays,
    top_k_of,
)
from .tta import check_mode, predict_tta

DEFAULT_TOP_K = 3
DEFAULT_BATCH_SIZE = 32


# -- results -------------------------------------------------------------------------------

@dataclass
class Prediction:
    """What the model says about one input.

    ``path`` is the file path, or a description such as ``<array 0>`` for in-memory inputs;
    ``label`` and ``probability`` are the top class and its probability; ``top_k`` is a list
    of ``(class, probability)`` pairs, best first; ``error`` is ``None`` or why the input
    could not be read (then ``label`` is ``None`` and ``top_k`` is empty).
    """

    path: str
    label: str | None = None
    probability: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    explanation: str | None = None  # the Grad-CAM overlay PNG written for it (predict(explain=DIR))

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        out = {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"class": c, "probability": p} for c, p in self.top_k],
            "error": self.error,
        }
        if self.explanation is not None:
            out["explanation"] = self.explanation
        return out


class Predictions(list):
    """A list of :class:`Prediction` that knows how to become a table, CSV or JSON.

    ``explain_error`` says why no heatmaps were written when they were asked for (the
    predictions are there all the same).
    """

    explain_error: str | None = None
    runtime: dict | None = None  # where the model ran (imgclf.models.runtime: requested, runtime, reason)
    runtime: dict | None = None  # where the model ran (imgclf.models.runtime: requested, runtime, reason)

    @property
    def errors(self) -> list[Prediction]:
        return [p for p in self if p.error is not None]

    def rows(self) -> list[dict]:
        """Flat dicts, one per input: path, label, probability, class_2, probability_2, ..., error."""
        k = max((len(p.top_k) for p in self), default=1)
        out = []
        for p in self:
            row: dict[str, Any] = {"path": p.path, "label": p.label, "probability": p.probability}
            for i in range(1, k):
                c, pr = p.top_k[i] if i < len(p.top_k) else (None, None)
                row[f"class_{i + 1}"] = c
                row[f"probability_{i + 1}"] = pr
            row["error"] = p.error
            if any(q.explanation for q in self):
                row["explanation"] = p.explanation
            out.append(row)
        return out

    def to_pandas(self):
        import pandas as pd  # optional

        return pd.DataFrame(self.rows())

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """CSV text (written atomically to ``path`` when given)."""
        rows = self.rows()
        buf = _io.StringIO()
        fields = list(rows[0]) if rows else ["path", "label", "probability", "error"]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6f}" if isinstance(v, float) else v)) for k, v in r.items()})
        text = buf.getvalue()
        if path is not None:
    
            io.write_text(path, text)
        return text

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text: a list of :meth:`Prediction.as_dict` (written atomically to ``path`` when given)."""
        text = json.dumps([p.as_dict() for p in self], indent=2) + "\n"
        if path is not None:
    
            io.write_text(path, text)
        return text

    def table(self, max_path: int = 60) -> str:
        """A plain-text table for the terminal."""
        if not self:
            return "no inputs"
        paths = [_shorten(p.path, max_path) for p in self]
        wp = max(4, *(len(s) for s in paths))
        wl = max(5, *(len(p.label or "") for p in self))
        lines = [f"{'path':<{wp}}  {'label':<{wl}}  {'prob':>6}  others"]
        for p, shown in zip(self, paths):
            if p.error is not None:
                lines.append(f"{shown:<{wp}}  {'-':<{wl}}  {'-':>6}  error: {p.error}")
                continue
            others = ", ".join(f"{c} {pr:.1%}" for c, pr in p.top_k[1:])
            lines.append(f"{shown:<{wp}}  {p.label:<{wl}}  {p.probability:>6.1%}  {others}".rstrip())
        n_err = len(self.errors)
        lines.append(f"{len(self)} inputs" + (f", {n_err} could not be read" if n_err else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _shorten(s: str, n: int) -> str:
    return s if len(s) <= n else "..." + s[-(n - 3):]


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def model_runtime(run, runtime: str | None = "auto", *, check=None, work: float | None = None):
    """What predict and serve run the whole model on: ``run.model`` itself (Keras), or an
    ONNX Runtime session of its export, converted once into the run's ``cache/`` and checked
    against Keras on ``check`` images (default: a few fixed synthetic ones) within the export's
    parity tolerance. Returns ``(model_or_runtime, info)``."""
    model = run.model
    if check is None or not len(check):
        check = np.random.default_rng(0).integers(0, 256, (4, run.image_size, run.image_size, 3)).astype(np.float32)
    key = {"whole_model": file_stamp(run.model_file), "image_size": run.image_size}
    rt = choose_runtime(runtime, model, cache_dir=run.cache_dir, key=key, check=check, tolerance=FLOAT_TOLERANCE,
                        what="the model", work=work, export_model=lambda: inference_model(model))
    return (rt if rt.name == "onnxruntime" else model), rt.info


def predict(
    run,
    inputs,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    progress: bool = False,
    max_pixels: int | None = None,
    workers: int | None = None,
    tta: str | None = None,
    explain: str | os.PathLike | None = None,
    runtime: str = "auto",
) -> Predictions:
    """Top-``k`` classes for each input, in input order (folders and globs expanded in natural order).

    ``inputs``: one or a list of file paths, folders, glob patterns, image bytes, PIL images or
    numpy arrays (HxWx3, or NxHxWx3 for a batch). ``run``: a :class:`imgclf.Run` or its folder.
    Inputs are decoded ``batch_size`` at a time on ``workers`` threads and fed to the model in
    batches. An input that cannot be read gets ``error`` set instead of raising.
    ``tta``: ``"flip"`` or ``"crops"`` averages over augmented views (:mod:`imgclf.inference.tta`).
    ``explain``: a folder that gets one Grad-CAM overlay PNG per image, for its predicted class
    (:mod:`imgclf.explain`); a model that cannot be explained still predicts, with
    ``Predictions.explain_error`` saying why.
    ``runtime``: ``auto``, ``keras`` or ``onnxruntime`` (:func:`model_runtime`; ``auto`` converts
    the model only when a converted one is cached or there are enough inputs to pay for it);
    ``Predictions.runtime`` says what ran.
    """
    run = resolve_run(run)
    class_names = run.class_names
    k = min(_check_positive("top_k", top_k), len(class_names))
    batch_size = _check_positive("batch_size", batch_size)
    tta = check_mode(tta)
    items = expand_inputs(inputs)
    if not items:
        raise DataError("nothing to predict on: no inputs were given")
    preprocessing = run.preprocessing
    model = None
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    results = Predictions()
    overlays = _Overlays(run, explain, results) if explain is not None else None
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            bar(len(items), "predict", enabled=progress and len(items) > batch_size) as pbar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            decoded = list(pool.map(lambda it: decode_or_error(it, preprocessing, max_pixels), chunk))
            good = [arr for arr, err in decoded if err is None]
            if model is None and good:  # chosen (and checked) on the first images to predict
                model, results.runtime = model_runtime(run, runtime, check=np.stack(good[:8]), work=len(items) * (
                    2 if tta else 1))
            batch = predict_tta(lambda x: predict_arrays(model, x), np.stack(good), tta) if good else []
            written = [None] * len(good)
            if overlays is not None and good:
                written = overlays.write(good, batch, [it.name for it, (_, e) in zip(chunk, decoded) if e is None])
            probs, paths = iter(batch), iter(written)
            for item, (arr, err) in zip(chunk, decoded):
                if err is not None:
                    results.append(Prediction(item.name, error=err))
                    continue
                tk = top_k_of(next(probs), class_names, k)
                results.append(Prediction(item.name, label=tk[0][0], probability=tk[0][1], top_k=tk,
                                          explanation=next(paths)))
            pbar.update(len(chunk))
    return results


class _Overlays:
    """Writes the Grad-CAM overlay of each predicted image into one folder, one PNG per input."""

    def __init__(self, run, folder, results: Predictions):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"--explain {self.folder} is a file; give a folder for the heatmap PNGs")
        self.used: set[str] = set()
        try:
            self.cam = explainer_for(run)
        except ExplainError as e:
            self.cam = None
            results.explain_error = str(e)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _name(self, name: str) -> str:
        stem = re.sub(r"[^\w.-]+", "-", Path(name).stem if not name.startswith("<") else name.strip("<>")).strip("-.")
        stem = stem or "image"
        candidate, n = stem, 1
        while candidate in self.used:
            n += 1
            candidate = f"{stem}-{n}"
        self.used.add(candidate)
        return candidate + ".png"

    def write(self, images: list, probs: np.ndarray, names: list[str]) -> list[str | None]:
        if self.cam is None:
            return [None] * len(images)
        heat, _ = self.cam(np.stack(images), np.asarray(probs).argmax(1))
        out = []
        for img, h, name in zip(images, heat, names):
            path = self.folder / self._name(name)
            io.write_bytes(path, png_bytes(overlay(img, h)))
            out.append(str(path))
        return out


__all__ = [
    "Prediction", "Predictions", "ImageTooLargeError", "decode", "describe_error", "expand_inputs", "open_header",
    "model_runtime", "predict", "predict_arrays", "top_k_of",
]
