"""Training: build the model, fit it stage by stage, checkpoint every epoch, resume after a kill.

Stages: ``train`` (a from-scratch CNN, or a transfer model trained end to end), ``head`` (a
frozen backbone; on cached features when ``feature_cache`` is on) and ``fine_tune`` (the top
layers of the backbone unfrozen, BatchNorm kept in inference mode, a tenth of the learning
rate, the epoch count continuing). After every epoch the training model (weights and
optimizer state), the history and the state are written atomically; ``resume`` carries on
from the last finished epoch.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import __version__, figures, io
from ..config import CONFIG_FORMAT, DataConfig, TrainConfig
from ..data.dataset import ImageDataset, load_dataset
from ..errors import ConfigError, RunError
from ..run import Run, read_history, write_history


def _keras():
    import keras

    return keras


def _default_output(model: str) -> Path:
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _resolve_augment(value):
    from ..models import AugmentConfig

    if isinstance(value, AugmentConfig):
        return value.to_dict()
    if isinstance(value, str) and value not in ("default",):
        return AugmentConfig.parse(value).to_dict()
    return value


def _augment_arg(value):
    from ..models import AugmentConfig

    if isinstance(value, dict):
        return AugmentConfig.from_dict(value)
    return value


def plan(cfg: TrainConfig, is_transfer: bool) -> list[tuple[str, int]]:
    """``[(stage, last epoch), ...]``; epochs are numbered 1.. across stages."""
    if not is_transfer:
        return [("train", cfg.epochs)]
    stages = [("head", cfg.epochs)]
    if cfg.fine_tune:
        stages.append(("fine_tune", cfg.epochs + cfg.total_fine_tune_epochs))
    return stages


def _verbose(progress: bool) -> int:
    if not progress:
        return 0
    return 1 if sys.stdout.isatty() else 2


def train(
    data: ImageDataset | str | os.PathLike | None = None,
    model: str = "mobilenet_v2",
    *,
    output: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    **options,
) -> Run:
    """Train ``model`` on ``data`` and return the :class:`Run`; every option of
    :class:`~imgclf.config.TrainConfig` can be passed by name (``epochs=20``, ``fine_tune=30``)."""
    from ..models import get_spec
    from ..models.registry import check_image_size

    if "augment" in options:
        options["augment"] = _resolve_augment(options["augment"])
    data_options = {k: options.pop(k) for k in ("validation", "test", "fit", "interpolation", "cache_mode")
                    if k in options}
    try:
        cfg = TrainConfig(model=model, **options)
    except TypeError as e:
        raise ConfigError(str(e).replace("__init__()", "train()")) from None
    cfg.validate()
    spec = get_spec(cfg.model)
    image_size = check_image_size(spec, cfg.image_size)
    if isinstance(data, ImageDataset):
        ds = data
    else:
        ds = load_dataset(data, image_size=image_size, seed=cfg.seed, progress=progress, **data_options)
    cfg.image_size = image_size
    cfg.data = DataConfig(source=ds.source.origin, root=str(ds.root), validation=data_options.get("validation", 0.2),
                          test=data_options.get("test", 0.1), seed=ds.seed, fit=ds.fit,
                          interpolation=ds.interpolation, cache_mode=ds.cache_mode)
    run = Run(output if output is not None else _default_output(cfg.model))
    if run.config_file.exists() and not overwrite:
        raise RunError(f"run folder {run.path} already exists; resume it with `imgclf train --resume {run.path}` "
                       "or choose another --output")
    run.path.mkdir(parents=True, exist_ok=True)
    ds.save_splits(run.splits_dir)
    built = _build(cfg, ds.num_classes)
    io.write_json(run.path / "class_names.json", ds.class_names)
    io.write_json(run.config_file, {
        "format": CONFIG_FORMAT,
        "imgclf_version": __version__,
        "keras_version": _keras().__version__,
        "created": datetime.now().isoformat(timespec="seconds"),
        "class_names": ds.class_names,
        "image_size": image_size,
        "model_preprocessing": built.spec.preprocessing,
        "weights_file": built.weights,
        "complete": False,
        "train": cfg.to_dict(),
    })
    return _fit(run, cfg, ds, built, progress=progress)


def resume(run_dir: str | os.PathLike, *, data=None, progress: bool = True) -> Run:
    """Carry on an interrupted run from its last finished epoch to the planned count."""
    run = Run(run_dir)
    cfg = run.config
    if run.complete:
        return run
    ds = run.dataset(data=data, progress=progress)
    if ds.class_names != run.class_names:
        raise RunError(f"the data now has classes {ds.class_names}, the run was started with {run.class_names}")
    built = _build(cfg, ds.num_classes)
    return _fit(run, cfg, ds, built, progress=progress)


def _build(cfg: TrainConfig, num_classes: int):
    from ..models import build_model

    keras = _keras()
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(cfg.precision)
    return build_model(cfg.model, num_classes, cfg.image_size, weights=cfg.weights, alpha=cfg.alpha,
                       augment=_augment_arg(cfg.augment), dropout=cfg.dropout, pooling=cfg.pooling,
                       seed=cfg.seed)


def _optimizer(cfg: TrainConfig, learning_rate: float):
    keras = _keras()
    cls = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
           "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[cfg.optimizer]
    return cls(learning_rate=learning_rate)


def _loss(cfg: TrainConfig):
    keras = _keras()
    if cfg.label_smoothing:
        return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def _class_weight(cfg: TrainConfig, labels: np.ndarray, num_classes: int) -> dict | None:
    if cfg.class_weight != "balanced":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return {i: (len(labels) / (num_classes * c) if c else 0.0) for i, c in enumerate(counts)}


class _EpochCheckpoint:
    """Keras callback: after each epoch, write checkpoint, history and state (in that order)."""

    def __new__(cls, *args, **kwargs):
        keras = _keras()

        class EpochCheckpoint(keras.callbacks.Callback):
            def __init__(self, run: Run, stage: str, rows: list[dict]):
                super().__init__()
                self.run, self.stage, self.rows = run, stage, rows
                self._t = time.time()

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                lr = self.model.optimizer.learning_rate
                row = {"epoch": epoch + 1, "stage": self.stage, "seconds": round(time.time() - self._t, 3),
                       "learning_rate": float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))}
                for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
                    if k in logs:
                        row[k] = float(logs[k])
                self.rows.append(row)
                name = f"epoch-{epoch + 1:04d}.keras"
                with io.atomic_path(self.run.checkpoints_dir / name, suffix=".keras") as tmp:
                    self.model.save(tmp)
                write_history(self.run.path / "history.csv", self.rows)
                io.write_json(self.run.checkpoints_dir / "state.json",
                              {"epoch": epoch + 1, "stage": self.stage, "checkpoint": name})
                for old in self.run.checkpoints_dir.glob("epoch-*.keras"):
                    if old.name != name:
                        old.unlink(missing_ok=True)

        return EpochCheckpoint(*args, **kwargs)


def _restore(train_model, checkpoint: Path) -> None:
    """Copy weights and optimizer state from a checkpoint into ``train_model``."""
    keras = _keras()
    try:
        saved = keras.models.load_model(checkpoint, safe_mode=True)
    except Exception as e:
        raise RunError(f"checkpoint {checkpoint} cannot be read ({str(e).splitlines()[0][:160]}); "
                       "delete it to restart that stage") from None
    try:
        train_model.set_weights(saved.get_weights())
    except ValueError as e:
        raise RunError(f"checkpoint {checkpoint} does not fit the model in config.json ({e})") from None
    opt = train_model.optimizer
    if saved.optimizer is not None:
        opt.build(train_model.trainable_variables)
        src, dst = saved.optimizer.variables, opt.variables
        if len(src) == len(dst) and all(tuple(a.shape) == tuple(b.shape) for a, b in zip(src, dst)):
            for a, b in zip(src, dst):
                b.assign(a)


def _fit(run: Run, cfg: TrainConfig, ds: ImageDataset, built, *, progress: bool) -> Run:
    keras = _keras()
    from .features import extract_features, feature_dataset

    stages = plan(cfg, built.spec.is_transfer)
    state = run.state
    done = int(state.get("epoch", 0))
    rows = [r for r in read_history(run.path / "history.csv") if r["epoch"] <= done]
    one_hot = cfg.label_smoothing > 0
    train_labels = ds.labels("train")
    class_weight = _class_weight(cfg, train_labels, ds.num_classes)
    verbose = _verbose(progress)
    metrics = ["accuracy"]
    start = 0
    features = None
    for stage, end in stages:
        first = start + 1
        start_epoch = max(done, start)
        if done >= end:
            start = end
            if stage == "fine_tune" or stage == "train" or (stage == "head"):
                # a later stage resumes from this stage's result: restore it before moving on
                pass
            continue
        use_features = stage == "head" and cfg.feature_cache and built.feature_extractor is not None
        if stage == "fine_tune":
            built.unfreeze(cfg.fine_tune)
        train_model = built.head if use_features else built.model
        lr = cfg.learning_rate * (cfg.fine_tune_lr_factor if stage == "fine_tune" else 1.0)
        train_model.compile(optimizer=_optimizer(cfg, lr), loss=_loss(cfg), metrics=metrics,
                            jit_compile=cfg.jit if cfg.jit else False)
        if state.get("checkpoint") and done > 0:
            ckpt = run.checkpoints_dir / state["checkpoint"]
            if state.get("stage") == stage:
                _restore(train_model, ckpt)
            else:
                # the previous stage finished: take its weights into the end-to-end model
                _restore_into_model(built, ckpt, state.get("stage"))
        if use_features:
            if features is None:
                features = extract_features(built, ds, cfg.image_size, views=cfg.views, seed=cfg.seed,
                                            folder=run.cache_dir, progress=progress)
            plain, augmented = features
            labels_all = np.concatenate([ds.labels(s) for s in ("train", "validation", "test")])
            common = dict(batch_size=cfg.batch_size, seed=cfg.seed, one_hot=one_hot, num_classes=ds.num_classes)
            train_data = feature_dataset(plain, augmented, labels_all, ds.indices("train"), shuffle=True,
                                         train_rows=ds.indices("train"), **common)
            val_data = feature_dataset(plain, augmented, labels_all, ds.indices("validation"), shuffle=False,
                                       **common) if len(ds.indices("validation")) else None
        else:
            train_data = ds.tf_dataset("train", batch_size=cfg.batch_size, image_size=cfg.image_size,
                                       one_hot=one_hot)
            val_data = (ds.tf_dataset("validation", batch_size=cfg.batch_size, image_size=cfg.image_size,
                                      one_hot=one_hot) if len(ds.indices("validation")) else None)
        callbacks = [_EpochCheckpoint(run, stage, rows)]
        if cfg.early_stopping and val_data is not None:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping,
                                                           restore_best_weights=True))
        train_model.fit(train_data, validation_data=val_data, epochs=end, initial_epoch=start_epoch,
                        class_weight=class_weight, callbacks=callbacks, verbose=verbose, shuffle=False)
        done = rows[-1]["epoch"] if rows else done
        state = run.state
        start = end
    _finish(run, cfg, ds, built, rows, progress=progress)
    return run


def _restore_into_model(built, checkpoint: Path, stage: str | None) -> None:
    """Load the weights a finished earlier stage saved into the end-to-end model."""
    keras = _keras()
    saved = keras.models.load_model(checkpoint, safe_mode=True)
    target = built.head if (stage == "head" and len(saved.layers) == len(built.head.layers)) else built.model
    target.set_weights(saved.get_weights())


def _finish(run: Run, cfg: TrainConfig, ds: ImageDataset, built, rows: list[dict], *, progress: bool) -> None:
    from ..evaluation import quick_metrics

    with io.atomic_path(run.model_file, suffix=".keras") as tmp:
        built.model.save(tmp)
    metrics = {"validation": quick_metrics(built.model, ds, "validation", cfg.image_size, cfg.batch_size),
               "test": quick_metrics(built.model, ds, "test", cfg.image_size, cfg.batch_size)}
    majority, base = ds.baseline("test")
    metrics["baseline"] = {"majority_class": majority, "test_accuracy": base,
                           "validation_accuracy": ds.baseline("validation")[1]}
    val_acc = [r.get("val_accuracy") for r in rows if r.get("val_accuracy") is not None]
    if val_acc:
        best = int(np.argmax(val_acc))
        metrics["best_epoch"] = rows[best]["epoch"]
        metrics["best_val_accuracy"] = val_acc[best]
    metrics["epochs"] = len(rows)
    metrics["seconds_per_epoch"] = float(np.mean([r["seconds"] for r in rows])) if rows else None
    metrics["parameters"] = _parameters(built.model)
    io.write_json(run.path / "metrics.json", metrics)
    figures.save(run.plot_history(), run.figures_dir / "history.png")
    meta = run.meta
    meta["complete"] = True
    io.write_json(run.config_file, meta)
    run._config = None
    for old in run.checkpoints_dir.glob("epoch-*.keras"):
        pass  # kept: the last checkpoint lets a finished run be extended later


def _parameters(model) -> dict:
    keras = _keras()
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    frozen = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}
