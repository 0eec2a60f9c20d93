"""A run folder: the contract between training and everything after it.

``runs/<name>/`` holds ``config.json`` (fully resolved), ``class_names.json``,
``splits/*.txt``, ``model.keras``, ``history.csv``, ``metrics.json``, ``figures/*.png``,
``checkpoints/`` and ``cache/``. Evaluation, reports, prediction, export and serving read
only this folder.
"""

from __future__ import annotations

import csv
import io as _io
import os
from pathlib import Path

from . import backend, figures, io
from .config import CONFIG_FORMAT, TrainConfig
from .errors import RunError, first_line
from .metrics import Metrics, read_metrics
from .version import __version__

HISTORY_FIELDS = ("epoch", "stage", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


class Run:
    """A training run on disk. ``Run(path)`` opens an existing one (see :func:`imgclf.load`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._model = None
        self._config: dict | None = None
        self.memo: dict = {}  # what later stages derive from the loaded model (a Grad-CAM explainer)

    def reload(self) -> "Run":
        """Read config.json and model.keras again on next use (after they were rewritten)."""
        self._model = None
        self._config = None
        self.memo = {}
        return self

    # -- files ---------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def model_file(self) -> Path:
        return self.path / "model.keras"

    @property
    def splits_dir(self) -> Path:
        return self.path / "splits"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    # -- contents ------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        """The whole config.json: ``train`` options plus what the run resolved."""
        if self._config is None:
            if not self.config_file.is_file():
                if not self.path.exists():
                    raise RunError(f"no run folder at {self.path}")
                raise RunError(f"{self.path} is not an imgclf run folder (no config.json)")
            try:
                meta = io.read_json(self.config_file)
            except ValueError as e:
                raise RunError(f"{self.config_file} is not valid JSON ({e}); was it edited by hand?") from None
            if not isinstance(meta, dict) or meta.get("format") != CONFIG_FORMAT:
                found = meta.get("format") if isinstance(meta, dict) else None
                raise RunError(
                    f"{self.config_file} has format {found!r}, this imgclf ({__version__}) reads format "
                    f"{CONFIG_FORMAT}; train the run again with this version"
                )
            for key in ("train", "class_names", "image_size"):
                if key not in meta:
                    raise RunError(f"{self.config_file} lacks {key!r}; was it edited by hand?")
            self._config = meta
        return self._config

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["train"], where=str(self.config_file))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def preprocessing(self) -> dict:
        """How to turn a file into the model's input (travels with every export)."""
        data = self.meta["train"]["data"]
        return {
            "image_size": [self.image_size, self.image_size],
            "fit": data["fit"],
            "interpolation": data["interpolation"],
            "color": "RGB",
            "input_range": [0, 255],
            "input_dtype": "float32",
            "model_preprocessing": self.meta.get("model_preprocessing", ""),
        }

    @property
    def state(self) -> dict:
        f = self.checkpoints_dir / "state.json"
        return io.read_json(f) if f.is_file() else {}

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete")) and self.model_file.is_file()

    @property
    def model(self):
        """The trained end-to-end Keras model (loaded in safe mode)."""
        if self._model is None:
            if not self.model_file.is_file():
                raise RunError(f"{self.path} has no model.keras yet; finish it with: imgclf train --resume {self.path}")
            import keras

            try:
                self.memo = {}
                self._model = keras.models.load_model(self.model_file, compile=False, safe_mode=True)
            except Exception as e:
                raise RunError(f"cannot load {self.model_file}: {first_line(e)}{self._trained_on()}") from None
        return self._model

    def _trained_on(self) -> str:
        """``" (trained on jax 0.9.2, loaded on torch 2.13.0)"`` when the backends differ, else ``""``."""
        trained = str(self.meta.get("keras_backend") or "tensorflow")
        here = backend.describe()
        if trained.split(" ")[0] == here.split(" ")[0]:
            return ""
        return f" (trained on {trained}, loaded on {here}; try KERAS_BACKEND={trained.split(' ')[0]})"

    def history(self) -> dict[str, list]:
        """Per-epoch history as columns (Keras' History.history layout plus epoch and stage)."""
        rows = read_history(self.path / "history.csv")
        return {k: [r[k] for r in rows] for k in HISTORY_FIELDS} if rows else {k: [] for k in HISTORY_FIELDS}

    def metrics(self) -> dict:
        """metrics.json as it is on disk (``{}`` before training wrote it)."""
        f = self.path / "metrics.json"
        return io.read_json(f) if f.is_file() else {}

    def metrics_record(self) -> Metrics:
        """metrics.json as a typed :class:`~imgclf.metrics.Metrics` (any earlier layout reads)."""
        return read_metrics(self.path)

    def fine_tune_epoch(self) -> int | None:
        h = self.history()
        for epoch, stage in zip(h["epoch"], h["stage"]):
            if stage == "fine_tune":
                return int(epoch)
        return None

    # -- what one does with a run ------------------------------------------------------------
    # ``run.dataset()``, ``run.evaluate()``, ``run.explain()``, ``run.predict()`` and
    # ``run.export()`` are the functions of the stages that read a run (imgclf.data,
    # imgclf.evaluation, imgclf.explain, imgclf.inference), attached in imgclf/__init__.py: this
    # module knows the folder, not what is done with it.

    def plot_history(self):
        """The history figure (accuracy and loss, training against validation)."""
        tuned = self.metrics_record().fine_tune
        return figures.history(self.history(), title=self.meta["train"]["model"],
                               fine_tune_epoch=self.fine_tune_epoch(),
                               fine_tune_kept=tuned.kept if tuned is not None else True)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _repr_html_(self) -> str:  # notebooks
        test = self.metrics_record().test
        acc = test.accuracy if test is not None else None
        return (f"<b>imgclf run</b> {self.path}<br>model {self.meta['train']['model']}, "
                f"classes {', '.join(self.class_names)}"
                + (f", test accuracy {acc:.1%}" if acc is not None else ""))


def load(path: str | os.PathLike) -> Run:
    """Open a run folder."""
    run = Run(path)
    run.config  # validate now, with a clear error
    return run


def resolve_run(run: Run | str | os.PathLike) -> Run:
    """``run`` itself when it is a :class:`Run`, else the run folder at that path, opened."""
    return run if isinstance(run, Run) else load(run)


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row = {}
            for k in HISTORY_FIELDS:
                v = r.get(k, "")
                if k == "stage":
                    row[k] = v
                elif k == "epoch":
                    row[k] = int(v)
                else:
                    row[k] = float(v) if v not in ("", None) else None
            rows.append(row)
    return rows


def write_history(path: Path, rows: list[dict]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") if r.get(k) is not None else "" for k in HISTORY_FIELDS})
    io.write_text(path, buf.getvalue())
