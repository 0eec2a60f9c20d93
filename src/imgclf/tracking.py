"""Experiment tracking: a run's epochs, figures and results where users already compare runs.

``track=["tensorboard"]`` writes TensorBoard event files into ``RUN/tensorboard/`` (Keras' own
``TensorBoard`` callback for the per-epoch scalars of every stage and the learning rate, under
``train/`` and ``validation/``; ``tf.summary`` for the resolved config as text, and the history
figure and the validation confusion matrix as images, under ``run/``).

``track=["mlflow"]`` logs the options as params, every epoch's metrics, the final metrics, the
model (``mlflow.keras.log_model``) and the run's report files as artifacts to the tracking URI
in ``MLFLOW_TRACKING_URI`` (default: ``sqlite:///mlruns/mlflow.db`` in the working folder, with
the artifacts beside it in ``mlruns/``: no server needed). One MLflow run per imgclf run; its id
is kept in ``RUN/tracking.json`` so that a resumed run carries on the same MLflow run. Inside
:func:`parent_run` (a study) each imgclf run becomes a child of the parent MLflow run.

A tracker that fails (a server that cannot be reached, a full disk) warns once and is switched
off: tracking never stops a training run.
"""

from __future__ import annotations

import contextlib
import contextvars
import io as _io
import os
import warnings
from pathlib import Path

from . import backend, figures, io
from .config import TRACKERS
from .errors import ConfigError, first_line
from .metrics import confusion

#: extra name, import name, the lowest version tested
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard", "2.16"), "mlflow": ("mlflow", "mlflow", "2.12")}
TRACKING_FILE = "tracking.json"
_parent: contextvars.ContextVar = contextvars.ContextVar("imgclf_mlflow_parent", default=None)


class TrackingWarning(UserWarning):
    """A tracker failed; the run goes on without it."""


def check(track) -> list[str]:
    """``track`` as a list of known tracker names whose package is installed (ConfigError otherwise)."""
    names = [t.strip() for t in track.split(",")] if isinstance(track, str) else list(track or [])
    names = [n for n in names if n]
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {name!r}; choose from: {', '.join(TRACKERS)}")
        require(name)
    return names


def require(name: str):
    """Import tracker ``name``'s package, or a one-line ConfigError saying what to install."""
    import importlib

    extra, module, lowest = PACKAGES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--track {name} needs the {module} package: pip install 'imgclf[{extra}]' "
                          f"(or pip install {module})") from None
    version = getattr(mod, "__version__", "0")
    if _version_tuple(version) < _version_tuple(lowest):
        raise ConfigError(f"--track {name} needs {module} >= {lowest}, found {version}: "
                          f"pip install -U 'imgclf[{extra}]'")
    return mod


def _version_tuple(v: str) -> tuple:
    out = []
    for part in str(v).split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def start(track, run, cfg, class_names: list[str]) -> "Trackers":
    """The trackers of one run, started (those that fail to start warn and are left out)."""
    trackers = []
    for name in check(track):
        cls = TensorBoardTracker if name == "tensorboard" else MlflowTracker
        tracker = cls(run)
        if tracker.guard("start", tracker.start, cfg, class_names):
            trackers.append(tracker)
    return Trackers(trackers)


class Tracker:
    name = "tracker"

    def __init__(self, run):
        self.run = run
        self.failed = False

    def guard(self, what: str, fn, *args, **kwargs) -> bool:
        """Call ``fn``; on any failure warn once and switch this tracker off. True if it worked."""
        if self.failed:
            return False
        try:
            fn(*args, **kwargs)
            return True
        except Exception as e:  # noqa: BLE001 - tracking never stops a run
            self.failed = True
            warnings.warn(f"{self.name} tracking stopped ({what}: {first_line(e, 160)}); "
                          "the run goes on without it", TrackingWarning, stacklevel=2)
            return False

    # what a tracker implements
    def start(self, cfg, class_names): ...
    def callbacks(self, stage: str, rows: list[dict]) -> list: return []
    def finish(self, metrics: dict, figures: dict[str, bytes]): ...


class Trackers:
    """Several trackers behind one call each (what the trainer uses)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def callbacks(self, stage: str, rows: list[dict]) -> list:
        out = []
        for t in self.trackers:
            if not t.failed:
                out.extend(_Guarded(t, cb) for cb in t.callbacks(stage, rows))
        return out

    def finish(self, metrics: dict, figures) -> None:
        """``figures``: a callable giving ``{name: PNG bytes}``, drawn once for every tracker (a
        failure to draw them warns, and the trackers get the metrics alone)."""
        try:
            drawn = figures()
        except Exception as e:  # noqa: BLE001 - tracking never stops a run
            warnings.warn(f"tracking: the figures could not be drawn ({first_line(e, 160)}); "
                          "the metrics are logged without them", TrackingWarning, stacklevel=2)
            drawn = {}
        for t in self.trackers:
            t.guard("finish", t.finish, metrics, drawn)


def _Guarded(tracker: Tracker, callback):
    """A Keras callback that forwards to ``callback`` until it fails once (then warns, and stops)."""
    import keras

    class Guarded(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            tracker.guard("set_model", callback.set_model, model)

        def set_params(self, params):
            super().set_params(params)
            tracker.guard("set_params", callback.set_params, params)

    for hook in ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_test_begin",
                 "on_test_end"):
        def forward(self, *args, _hook=hook, **kwargs):
            if not tracker.failed:
                tracker.guard(_hook, getattr(callback, _hook), *args, **kwargs)
        setattr(Guarded, hook, forward)
    return Guarded()


def run_figures(run, class_names: list[str], labels, probs) -> dict[str, bytes]:
    """The images a tracker logs at the end: the history figure and the validation confusion matrix."""
    import numpy as np

    out = {}
    history = run.figures_dir / "history.png"
    if history.is_file():
        out["history"] = history.read_bytes()
    if probs is not None and len(labels):
        cm = confusion(np.asarray(labels), np.asarray(probs).argmax(1), len(class_names))
        out["confusion_matrix/validation"] = png_bytes(
            figures.confusion_matrix(cm, class_names, title="validation confusion matrix"))
    return out


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def flat_params(cfg) -> dict[str, str]:
    """The resolved options as flat ``name: text`` pairs (``data.seed``, ...)."""
    out = {}

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                out[f"{prefix}{k}"] = "" if v is None else str(v)[:500]
    walk("", cfg.to_dict())
    return out


# -- TensorBoard --------------------------------------------------------------------------------

class TensorBoardTracker(Tracker):
    """Event files in ``RUN/tensorboard/``: ``tensorboard --logdir RUN/tensorboard`` (or a study's runs/)."""

    name = "TensorBoard"

    @property
    def folder(self) -> Path:
        return self.run.path / "tensorboard"

    def _writer(self):
        import tensorflow as tf

        return tf.summary.create_file_writer(str(self.folder / "run"))

    def start(self, cfg, class_names):
        import json

        tf = backend.require_tensorflow("--track tensorboard (its event files are written by tf.summary)")
        require("tensorboard")
        writer = self._writer()
        with writer.as_default():
            text = json.dumps(cfg.to_dict(), indent=2, default=str)
            tf.summary.text("config", "```\n" + text + "\n```", step=0)
            tf.summary.text("class_names", ", ".join(class_names), step=0)
        writer.flush()
        writer.close()

    def callbacks(self, stage, rows):
        import keras

        # Keras' own callback: epoch_loss, epoch_accuracy and epoch_learning_rate under train/,
        # the validation scalars under validation/, the step the epoch number across stages
        return [keras.callbacks.TensorBoard(log_dir=str(self.folder), write_graph=False, profile_batch=0,
                                            update_freq="epoch")]

    def finish(self, metrics, figures):
        import tensorflow as tf

        writer = self._writer()
        step = int(metrics.get("epochs") or 0)
        with writer.as_default():
            for split in ("validation", "test"):
                for key in ("accuracy", "loss"):
                    value = (metrics.get(split) or {}).get(key)
                    if value is not None:
                        tf.summary.scalar(f"final/{split}_{key}", float(value), step=step)
            for name, png in figures.items():
                tf.summary.image(name, tf.io.decode_png(png, channels=3)[None], step=step)
        writer.flush()
        writer.close()


# -- MLflow -------------------------------------------------------------------------------------

def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, or a SQLite store in ``./mlruns`` (artifacts beside it)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    folder = Path("mlruns").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _client():
    mlflow = require("mlflow")
    # a file store given explicitly is what the user asked for (MLflow 3 keeps it behind a flag)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    # an unreachable server answers within seconds, not after MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = tracking_uri()
    return mlflow, mlflow.tracking.MlflowClient(tracking_uri=uri), uri


def _experiment(client) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "imgclf"
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


def _describe(e: Exception, uri: str) -> str:
    return f"MLflow at {uri} cannot be used ({first_line(e, 140)}); check MLFLOW_TRACKING_URI"


class MlflowTracker(Tracker):
    """One MLflow run per imgclf run; the child of the study's run inside :func:`parent_run`."""

    name = "MLflow"

    def start(self, cfg, class_names):
        self.mlflow, self.client, self.uri = _client()
        saved = _read(self.run.path / TRACKING_FILE)
        try:
            if saved.get("mlflow_run_id") and saved.get("tracking_uri") == self.uri:
                self.run_id = saved["mlflow_run_id"]  # a resumed run carries on its MLflow run
                self.client.update_run(self.run_id, status="RUNNING")
                return
            tags = {"mlflow.runName": self.run.path.name, "imgclf.run_folder": str(self.run.path.resolve()),
                    "imgclf.model": cfg.model}
            parent = _parent.get()
            if parent is not None:
                tags["mlflow.parentRunId"] = parent
            run = self.client.create_run(_experiment(self.client), tags=tags, run_name=self.run.path.name)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(_describe(e, self.uri)) from None
        self.run_id = run.info.run_id
        io.write_json(self.run.path / TRACKING_FILE, {**saved, "mlflow_run_id": self.run_id, "tracking_uri": self.uri})
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flat_params(cfg).items()]
        params.append(Param("class_names", ",".join(class_names)[:500]))
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def callbacks(self, stage, rows):
        import keras

        tracker = self

        class EpochMetrics(keras.callbacks.Callback):
            """The epoch's row as the run's history.csv has it (loss, accuracy, val_*, learning rate)."""

            def on_epoch_end(self, epoch, logs=None):
                if rows:
                    tracker.log_row(rows[-1])

        return [EpochMetrics()]

    def log_row(self, row: dict) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(row["epoch"])
        metrics = [Metric(k, float(row[k]), now, step)
                   for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
                   if row.get(k) is not None]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, metrics, figures):
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = []
        for split in ("validation", "test"):
            for key in ("accuracy", "loss"):
                value = (metrics.get(split) or {}).get(key)
                if value is not None:
                    final.append(Metric(f"final_{split}_{key}", float(value), now, 0))
        if metrics.get("best_val_accuracy") is not None:
            final.append(Metric("best_val_accuracy", float(metrics["best_val_accuracy"]), now, 0))
        self.client.log_batch(self.run_id, metrics=final)
        for name in ("config.json", "class_names.json", "metrics.json", "history.csv"):
            if (self.run.path / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run.path / name))
        if self.run.figures_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(self.run.figures_dir), "figures")
        for name, png in figures.items():
            self.client.log_image(self.run_id, _pil(png), f"figures/{name.replace('/', '_')}.png")
        tune = self.run.path / "tune"
        if tune.is_dir():
            self.client.log_artifacts(self.run_id, str(tune), "tune")
        self._log_model()
        self.client.set_terminated(self.run_id, "FINISHED")

    def _log_model(self) -> None:
        """The saved model through MLflow's Keras flavour (``mlflow.keras.load_model`` reads it back);
        the ``model.keras`` file itself if the flavour cannot log it."""
        import keras
        import mlflow.keras

        try:
            with self.mlflow.start_run(run_id=self.run_id, nested=self.mlflow.active_run() is not None):
                mlflow.keras.log_model(keras.models.load_model(self.run.model_file, compile=False), name="model",
                                       pip_requirements=[f"keras=={keras.__version__}"])
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"MLflow could not log the Keras model ({first_line(e, 120)}); "
                          "model.keras is logged as a file instead", TrackingWarning, stacklevel=2)
            self.client.log_artifact(self.run_id, str(self.run.model_file), "model_file")


def _pil(png: bytes):
    from PIL import Image

    return Image.open(_io.BytesIO(png)).convert("RGB")


def _read(path: Path) -> dict:
    try:
        data = io.read_json(path)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def parent_run(track, folder: Path, name: str, params: dict):
    """Inside, each run's MLflow run is a child of one parent run (a study's); yields a function
    ``log(artifacts, metrics)`` that records the parent's results. Without ``mlflow`` in
    ``track`` it does nothing. The parent's id is kept in ``folder/tracking.json`` so a resumed
    study carries on the same parent."""
    names = check(track)
    if "mlflow" not in names:
        yield lambda *a, **k: None
        return
    state = {"client": None}
    try:
        mlflow, client, uri = _client()
        saved = _read(folder / TRACKING_FILE)
        if saved.get("mlflow_run_id") and saved.get("tracking_uri") == uri:
            run_id = saved["mlflow_run_id"]
            client.update_run(run_id, status="RUNNING")
        else:
            run = client.create_run(_experiment(client), tags={"mlflow.runName": name}, run_name=name)
            run_id = run.info.run_id
            io.write_json(folder / TRACKING_FILE, {"mlflow_run_id": run_id, "tracking_uri": uri})
            from mlflow.entities import Param

            client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
        state.update(client=client, run_id=run_id)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"MLflow tracking stopped ({_describe(e, tracking_uri())}); the study goes on without it",
                      TrackingWarning, stacklevel=3)

    def log(artifacts=(), metrics=None):
        if state["client"] is None:
            return
        try:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            if metrics:
                state["client"].log_batch(state["run_id"], metrics=[Metric(k, float(v), now, 0)
                                                                    for k, v in metrics.items() if v is not None])
            for path in artifacts:
                if Path(path).is_file():
                    state["client"].log_artifact(state["run_id"], str(path))
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"MLflow could not record the study ({first_line(e, 140)})", TrackingWarning, stacklevel=2)

    token = _parent.set(state.get("run_id"))
    status = "FAILED"
    try:
        yield log
        status = "FINISHED"
    finally:
        _parent.reset(token)
        if state["client"] is not None:
            with contextlib.suppress(Exception):
                state["client"].set_terminated(state["run_id"], status)
