"""Training: build the model, fit it stage by stage, checkpoint every epoch, resume after a kill.

Stages: ``train`` (a from-scratch CNN, or a transfer model trained end to end), ``head`` (a
frozen backbone; on cached features when ``feature_cache`` is on) and ``fine_tune`` (the top
layers of the backbone unfrozen, BatchNorm kept in inference mode, a lower learning rate
(``fine_tune_lr_factor``), the epoch count continuing). After every epoch the training model (weights and
optimizer state), the history and the state are written atomically; ``resume`` carries on
from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import backend, figures, io, tracking
from ..calibration import CLIP, calibrate_model, scale
from ..config import CONFIG_FORMAT, TrainConfig, merge
from ..data.dataset import ImageDataset, load_dataset
from ..errors import RunError, first_line
from ..metrics import Baseline, Calibration, FineTune, LeakFree, Metrics, Parameters, Scores, scores, write_metrics
from ..models import AugmentConfig, build_model, get_spec
from ..models.registry import check_image_size
from ..models.runtime import require_runtime
from ..run import Run, read_history, write_history
from ..version import __version__
from . import keep as keeping
from . import multiworker
from .distribute import choose
from .features import extract_features, feature_dataset
from .scoring import leak_free, predict_split


def _keras():
    import keras

    return keras


def _default_output(model: str) -> Path:
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _resolve_augment(value):
    if isinstance(value, AugmentConfig):
        return value.to_dict()
    if isinstance(value, str) and value not in ("default",):
        return AugmentConfig.parse(value).to_dict()
    return value


def _augment_arg(value):
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


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, spec) -> str:
    """``auto`` made concrete (see :attr:`TrainConfig.precision`); other values as they are."""
    if precision != "auto":
        return precision
    if spec.is_transfer:
        # a frozen backbone's features are computed once: float32 keeps them exact (the saved
        # model is checked against them) at little cost
        return "float32"
    # measured on TensorFlow only; a CNN in bfloat16 on a CPU diverged on JAX and PyTorch (README: Backends)
    if backend.is_tensorflow() and not backend.has_gpu() and cpu_has_bfloat16():
        return "mixed_bfloat16"
    return "float32"


def float32_model(cfg: TrainConfig, num_classes: int, built, weights: list | None = None):
    """The model of ``built`` rebuilt with every layer computing in float32, same weights (a
    mixed-precision model keeps float32 variables), so that what is saved predicts, exports
    and serves the same on any machine. It belongs to no distribution strategy. ``weights``
    (a ``get_weights()`` list of the same architecture) replaces ``built``'s."""
    plain = _build_in("float32", cfg, num_classes, weights=None).model
    plain.set_weights(built.model.get_weights() if weights is None else weights)
    return plain


def _verbose(progress: bool) -> int:
    if not progress:
        return 0
    return 1 if sys.stdout.isatty() else 2


def train(
    data: ImageDataset | str | os.PathLike | None = None,
    config: TrainConfig | str | None = None,
    *,
    output: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    workers: str | list[str] | None = None,
    worker_index: int | None = None,
    record: dict | None = None,
    **options,
) -> Run:
    """Train on ``data`` as ``config`` (a :class:`~imgclf.config.TrainConfig`, or a model name)
    says and return the :class:`Run`; every field of ``TrainConfig`` or of its ``DataConfig``
    can be given by name too (``epochs=20``, ``fine_tune=30``, ``validation=0.1``).
    ``record`` adds entries to config.json (``{"tune": ...}``: the search that chose the options)."""
    if isinstance(config, str):  # train(ds, "cnn", ...)
        options.setdefault("model", config)
        config = None
    cfg = merge(config, options, where="train()")
    cfg.augment = _resolve_augment(cfg.augment)
    cfg.track = tracking.check(cfg.track)  # a missing package is said before any work
    require_runtime(cfg.runtime)
    dist = _distribution(cfg, workers, worker_index)
    spec = get_spec(cfg.model)
    image_size = check_image_size(spec, cfg.image_size)
    cfg.precision = resolve_precision(cfg.precision, spec)
    if cfg.label_smoothing is None:
        # timm's default for fine-tuning pretrained backbones; the study's CNNs keep the blog's loss
        cfg.label_smoothing = 0.1 if spec.is_transfer else 0.0
    if isinstance(data, ImageDataset):
        ds = data
    else:
        ds = load_dataset(data, cfg.data, image_size=image_size, progress=progress)
    cfg.image_size = image_size
    cfg.data = dataclasses.replace(
        cfg.data, source=ds.source.origin, root=str(ds.root), validation=ds.fractions["validation"],
        test=ds.fractions["test"], seed=ds.seed, fit=ds.fit, interpolation=ds.interpolation,
        cache_mode=ds.cache_mode, exclude=ds.review.sources.get("exclude"), relabel=ds.review.sources.get("relabel"))
    run = Run(output if output is not None else _default_output(cfg.model))
    if not dist.is_chief:
        built = _build(cfg, ds.num_classes, dist)
        _wait_for_chief(run)
        return _fit(run, cfg, ds, built, dist, progress=False)
    if run.config_file.exists() and not overwrite:
        raise RunError(f"run folder {run.path} already exists; resume it with `imgclf train --resume {run.path}` "
                       "or choose another --output")
    run.path.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _clear(run)
    ds.save_splits(run.splits_dir)
    ds.save_problems(run.path / "data_problems.json")  # what the scan left out, and why
    if ds.review:
        ds.review.save(run.path / "review")  # what --exclude / --relabel changed, as applied
    built = _build(cfg, ds.num_classes, dist)
    io.write_json(run.path / "class_names.json", ds.class_names)
    io.write_json(run.config_file, {
        "format": CONFIG_FORMAT,
        "imgclf_version": __version__,
        "keras_version": _keras().__version__,
        "keras_backend": backend.describe(),  # e.g. "jax 0.9.2": what trained it (any backend loads it)
        "created": datetime.now().isoformat(timespec="seconds"),
        "class_names": ds.class_names,
        "image_size": image_size,
        "model_preprocessing": built.spec.preprocessing,
        "weights_file": built.weights_path,
        "complete": False,
        "train": cfg.to_dict(),
        **(record or {}),
    })
    return _fit(run, cfg, ds, built, dist, progress=progress)


def _clear(run: Run) -> None:
    """Remove what an earlier run left in the folder (its cache of features is kept: it is keyed)."""
    import shutil

    for name in ("checkpoints", "figures", "splits", "review"):
        shutil.rmtree(run.path / name, ignore_errors=True)
    shutil.rmtree(run.path / "tensorboard", ignore_errors=True)
    for name in ("config.json", "class_names.json", "model.keras", "history.csv", "metrics.json",
                 "tracking.json", "data_problems.json"):
        (run.path / name).unlink(missing_ok=True)


def resume(run_dir: str | os.PathLike, *, data=None, progress: bool = True,
           workers: str | list[str] | None = None, worker_index: int | None = None) -> Run:
    """Carry on an interrupted run from its last finished epoch to the planned count.

    A multi-worker run is resumed by starting every worker again with ``resume``.
    """
    run = Run(run_dir)
    cfg = run.config
    dist = _distribution(cfg, workers, worker_index)
    if run.complete:
        return run
    if dist.is_chief:
        for folder in (run.path, run.checkpoints_dir, run.figures_dir, run.splits_dir, run.cache_dir):
            io.remove_partial(folder)
    ds = run.dataset(data=data, progress=progress and dist.is_chief)
    if ds.class_names != run.class_names:
        raise RunError(f"the data now has classes {ds.class_names}, the run was started with {run.class_names}")
    if cfg.precision == "auto":  # a config written by hand: resolve it as a new run would
        cfg.precision = resolve_precision(cfg.precision, get_spec(cfg.model))
    built = _build(cfg, ds.num_classes, dist)
    return _fit(run, cfg, ds, built, dist, progress=progress and dist.is_chief)


def _distribution(cfg: TrainConfig, workers, worker_index):
    return choose(cfg.strategy, workers=workers, worker_index=worker_index)


def _wait_for_chief(run: Run, timeout: float = 600.0) -> None:
    """A non-chief worker reads the run folder the chief writes; wait until it is there."""
    deadline = time.time() + timeout
    while not (run.config_file.is_file() and (run.splits_dir / "train.txt").is_file()):
        if time.time() > deadline:
            raise RunError(f"the chief never wrote {run.config_file}; is the run folder on a shared file system?")
        time.sleep(0.2)


def _build(cfg: TrainConfig, num_classes: int, dist):
    keras = _keras()
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        backend.enable_determinism()
    with dist.scope():
        return _build_in(cfg.precision, cfg, num_classes, weights=cfg.weights)


def _build_in(precision: str, cfg: TrainConfig, num_classes: int, *, weights):
    """The model ``cfg`` describes, its layers computing in ``precision``; the global policy is
    left as it was (layers keep the policy they are built with)."""
    keras = _keras()
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        return build_model(cfg.model, num_classes, cfg.image_size, weights=weights, alpha=cfg.alpha,
                           augment=_augment_arg(cfg.augment), dropout=cfg.dropout, pooling=cfg.pooling,
                           seed=cfg.seed, hidden_units=cfg.hidden_units)
    finally:
        keras.mixed_precision.set_global_policy(before)


def _optimizer(cfg: TrainConfig, learning_rate: float):
    keras = _keras()
    cls = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
           "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[cfg.optimizer]
    extra = {} if cfg.weight_decay is None else {"weight_decay": cfg.weight_decay}
    return cls(learning_rate=learning_rate, **extra)


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
            def __init__(self, run: Run, stage: str, rows: list[dict], chief: bool = True,
                         keep: str = "last", bests: dict | None = None):
                super().__init__()
                self.run, self.stage, self.rows, self.chief = run, stage, rows, chief
                self.keep, self.bests = keep, bests if bests is not None else {}
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
                if not self.chief:
                    return
                name = f"epoch-{epoch + 1:04d}.keras"
                with io.atomic_path(self.run.checkpoints_dir / name, suffix=".keras") as tmp:
                    self.model.save(tmp)
                if self.keep == "best":  # the best epoch's checkpoint gets its own name first
                    keeping.remember(self.run.checkpoints_dir, name, row, self.stage, self.bests)
                write_history(self.run.path / "history.csv", self.rows)
                io.write_json(self.run.checkpoints_dir / "state.json",
                              {"epoch": epoch + 1, "stage": self.stage, "checkpoint": name, "best": self.bests})
                for old in self.run.checkpoints_dir.glob("epoch-*.keras"):
                    if old.name != name:
                        old.unlink(missing_ok=True)
                keeping.forget_others(self.run.checkpoints_dir, self.bests)

        return EpochCheckpoint(*args, **kwargs)


def _load_checkpoint(checkpoint: Path, *, compile: bool = True):
    try:
        return _keras().models.load_model(checkpoint, safe_mode=True, compile=compile)
    except Exception as e:
        raise RunError(f"checkpoint {checkpoint} cannot be read ({first_line(e, 160)}); "
                       "delete it to restart that stage") from None


def _restore(train_model, checkpoint: Path) -> None:
    """Copy weights and optimizer state from a checkpoint into ``train_model``."""
    saved = _load_checkpoint(checkpoint)
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


def _fit(run: Run, cfg: TrainConfig, ds: ImageDataset, built, dist, *, progress: bool) -> Run:
    keras = _keras()

    stages = plan(cfg, built.spec.is_transfer)
    state = run.state
    bests = dict(state.get("best") or {})  # each stage's best epoch so far (see training/keep.py)
    # workers of one run must hold the same weights: a multi-worker run keeps its last epochs
    keep = cfg.keep if dist.num_workers <= 1 else "last"
    done = int(state.get("epoch", 0))
    rows = [r for r in read_history(run.path / "history.csv") if r["epoch"] <= done]
    one_hot = cfg.label_smoothing > 0
    class_weight = _class_weight(cfg, ds.labels("train"), ds.num_classes)
    verbose = _verbose(progress)
    # The head trains on cached features under any strategy: several workers share the
    # backbone's pass over the images (each computes its shard once, see training/features.py)
    # and then train the head together on the whole arrays, as they train a model end to end.
    feature_cache = cfg.feature_cache and built.feature_extractor is not None
    features = None
    feature_runtime: dict = {}  # where the backbone ran (imgclf.models.runtime), for metrics.json
    start = 0
    trained = False
    trackers = tracking.start(cfg.track, run, cfg, ds.class_names) if cfg.track and dist.is_chief else None
    for stage, end in stages:
        if done >= end:
            start = end
            continue
        use_features = stage == "head" and feature_cache
        if stage == "fine_tune":
            built.unfreeze(cfg.fine_tune)
        train_model = built.head if use_features else built.model
        lr = cfg.learning_rate * (cfg.fine_tune_lr_factor if stage == "fine_tune" else 1.0)
        with dist.scope():
            # A head on cached features takes well under a millisecond per batch, less than a
            # step's own overhead: run a few dozen steps per call (the same updates, in order).
            train_model.compile(optimizer=_optimizer(cfg, lr), loss=_loss(cfg), metrics=["accuracy"],
                                jit_compile=True if cfg.jit else "auto",
                                steps_per_execution=backend.steps_per_execution(32) if use_features else 1)
        if done > 0 and state.get("checkpoint"):
            ckpt = run.checkpoints_dir / state["checkpoint"]
            if state.get("stage") == stage:
                _restore(train_model, ckpt)
            else:  # an earlier stage finished: carry its weights (those it keeps) into this one
                _restore_into_model(built, _kept_checkpoint(run, keep, bests, state.get("stage")) or ckpt,
                                    state.get("stage"))
        if stage == "fine_tune" and state.get("stage") != stage and dist.is_chief:
            # the model as the head stage left it, to go back to if fine-tuning does not help
            with io.atomic_path(run.checkpoints_dir / HEAD_CHECKPOINT, suffix=".keras") as tmp:
                built.model.save(tmp)
        fit_args = {}
        if use_features:
            if features is None:
                features = extract_features(built, ds, cfg.image_size, views=cfg.views, seed=cfg.seed,
                                            folder=run.cache_dir, progress=progress,
                                            shard=(dist.worker_index, dist.num_workers), runtime=cfg.runtime,
                                            report=feature_runtime)
            train_data, val_data, fit_args = _feature_data(cfg, ds, dist, features, one_hot)
        else:
            train_data, val_data, fit_args = _image_data(cfg, ds, dist, one_hot)
        callbacks = [_EpochCheckpoint(run, stage, rows, dist.is_chief, keep=keep, bests=bests)]
        if trackers:
            callbacks += trackers.callbacks(stage, rows)
        if dist.num_workers > 1:
            multiworker.fit(train_model, train_data, val_data, epochs=end, initial_epoch=max(done, start),
                            dist=dist, callbacks=callbacks, class_weight=class_weight, one_hot=one_hot,
                            verbose=int(dist.is_chief and verbose > 0), **fit_args)
        else:
            if cfg.early_stopping and val_data is not None:
                # it only stops: which epoch's weights the stage ends with is ``keep``'s to say
                callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping,
                                                               restore_best_weights=False))
            train_model.fit(train_data, validation_data=val_data, epochs=end, initial_epoch=max(done, start),
                            class_weight=class_weight, callbacks=callbacks, verbose=verbose, shuffle=False,
                            **fit_args)
        trained = True
        done = rows[-1]["epoch"] if rows else done
        best = _kept_checkpoint(run, keep, bests, stage)
        if best is not None and bests[stage]["epoch"] != done:  # the stage ends on its best epoch
            train_model.set_weights(_load_checkpoint(best, compile=False).get_weights())
        state = {"epoch": done, "stage": stage}
        start = end
    if not trained and run.state.get("checkpoint"):
        # every epoch had finished before the interruption: take the last checkpoint
        last = run.state
        if last.get("stage") == "fine_tune":
            built.unfreeze(cfg.fine_tune)
        _restore_into_model(built, _kept_checkpoint(run, keep, bests, last.get("stage"))
                            or run.checkpoints_dir / last["checkpoint"], last.get("stage"))
    _write_digest(built, dist)
    if dist.is_chief:
        verdict = _fine_tune_verdict(run, cfg, ds, built) if stages[-1][0] == "fine_tune" else None
        last_on_features = feature_cache and stages[-1][0] == "head"
        if last_on_features and features is None:  # the chief alone, unless the cache is whole
            features = extract_features(built, ds, cfg.image_size, views=cfg.views, seed=cfg.seed,
                                        folder=run.cache_dir, progress=progress, runtime=cfg.runtime,
                                        report=feature_runtime)
        if last_on_features and dist.num_workers > 1:
            # the head scores the features outside the strategy: a multi-worker predict would
            # wait for workers that have finished
            built = _outside_strategy(cfg, ds.num_classes, built)
        kept = keeping.kept_epochs(rows, bests, keep)
        if verdict is not None and not verdict.get("kept", True):
            kept.pop("fine_tune", None)  # the head stage's weights went back: its epoch is the one kept
        val_probs = _finish(run, cfg, ds, built, rows, features=features[0] if last_on_features else None,
                            fine_tune=verdict, progress=progress, kept=kept, keep=keep,
                            feature_runtime=feature_runtime)
        if trackers:
            trackers.finish(run.metrics(), lambda: tracking.run_figures(run, ds.class_names,
                                                                        ds.labels("validation"), val_probs))
    return run


def _kept_checkpoint(run: Run, keep: str, bests: dict, stage: str | None) -> Path | None:
    """The checkpoint of ``stage``'s best epoch when the run keeps the best (else ``None``)."""
    return keeping.best_checkpoint(run.checkpoints_dir, bests, stage) if keep == "best" else None


def _outside_strategy(cfg: TrainConfig, num_classes: int, built):
    """A copy of ``built`` (same precision, same weights) that belongs to no distribution strategy."""
    plain = _build_in(cfg.precision, cfg, num_classes, weights=None)
    plain.model.set_weights(built.model.get_weights())
    return plain


HEAD_CHECKPOINT = "head.keras"  # in checkpoints/: the end-to-end model when the head stage ended


def _fine_tune_verdict(run: Run, cfg: TrainConfig, ds: ImageDataset, built) -> dict | None:
    """Keep fine-tuning only if it did not lower validation accuracy below the head stage's.

    Otherwise the head stage's weights go back into ``built`` (backbone frozen again), as
    Keras' ``restore_best_weights`` would: a choice made on the validation split alone. Both
    are scored as the saved model would be (float32 copies outside any distribution strategy,
    where a multi-worker ``predict`` would wait for workers that have finished); the test
    accuracy of both is recorded, not used. ``None`` without a validation split.
    """
    path = run.checkpoints_dir / HEAD_CHECKPOINT
    if not len(ds.indices("validation")) or not path.is_file():
        return None
    head_weights = _load_checkpoint(path, compile=False).get_weights()
    models = {"head": float32_model(cfg, ds.num_classes, built, weights=head_weights),
              "fine_tuned": float32_model(cfg, ds.num_classes, built)}

    def accuracy(split):
        return {name: scores(predict_split(model, ds, split, cfg.image_size, cfg.batch_size),
                             ds.labels(split))["accuracy"] for name, model in models.items()}

    val = accuracy("validation")
    verdict = {"kept": val["fine_tuned"] >= val["head"], "validation_accuracy": val, "test_accuracy": accuracy("test")}
    if not verdict["kept"]:
        built.model.set_weights(head_weights)
        built.unfreeze(0)
    return verdict


def _worker_batches(cfg: TrainConfig, n_train: int, dist) -> tuple[int, dict]:
    """Each worker's batch size and ``multiworker.fit``'s steps per epoch and global batch: every
    worker runs the same number of steps (its shard repeated), so none waits on another at an
    epoch end."""
    import math

    per_worker = max(1, math.ceil(cfg.batch_size / dist.num_workers))
    steps = max(1, math.ceil(n_train / (per_worker * dist.num_workers)))
    return per_worker, {"steps_per_epoch": steps, "global_batch": per_worker * dist.num_workers}


def _no_auto_shard():
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _feature_data(cfg: TrainConfig, ds: ImageDataset, dist, features, one_hot: bool):
    """Training and validation pipelines of cached features: under several workers each worker
    reads its shard of the training rows, and evaluates every validation row itself."""

    plain, augmented = features
    labels_all, train_idx = ds.row_labels(), ds.indices("train")
    common = dict(seed=cfg.seed, one_hot=one_hot, num_classes=ds.num_classes)
    has_val = len(ds.indices("validation")) > 0
    val_data = (feature_dataset(plain, augmented, labels_all, ds.indices("validation"), shuffle=False,
                                batch_size=cfg.batch_size, **common) if has_val else None)
    if dist.num_workers <= 1:
        train_data = feature_dataset(plain, augmented, labels_all, train_idx, shuffle=True, train_rows=train_idx,
                                     batch_size=cfg.batch_size, **common)
        return train_data, val_data, {}
    per_worker, fit_args = _worker_batches(cfg, len(train_idx), dist)
    options = _no_auto_shard()
    train_data = feature_dataset(plain, augmented, labels_all, train_idx, shuffle=True, train_rows=train_idx,
                                 batch_size=per_worker, shard=(dist.num_workers, dist.worker_index), repeat=True,
                                 **common).with_options(options)
    return train_data, val_data.with_options(options) if has_val else None, fit_args


DIGEST_ENV = "IMGCLF_WEIGHTS_DIGEST_DIR"  # a folder: each worker writes the digest of its weights there


def _write_digest(built, dist) -> None:
    """With ``IMGCLF_WEIGHTS_DIGEST_DIR`` set, write ``worker-<i>.txt``: the SHA-256 of this
    worker's final weights, to check that every worker of a run ends with the same model."""
    folder = os.environ.get(DIGEST_ENV)
    if not folder:
        return
    h = hashlib.sha256()
    for w in built.model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    io.write_text(Path(folder) / f"worker-{dist.worker_index}.txt", h.hexdigest() + "\n")


def _image_data(cfg: TrainConfig, ds: ImageDataset, dist, one_hot: bool):
    """Training and validation pipelines of decoded images (sharded per worker when distributed)."""
    has_val = len(ds.indices("validation")) > 0
    if dist.num_workers <= 1:
        train_data = ds.tf_dataset("train", batch_size=cfg.batch_size, image_size=cfg.image_size, one_hot=one_hot)
        val_data = (ds.tf_dataset("validation", batch_size=cfg.batch_size, image_size=cfg.image_size,
                                  one_hot=one_hot) if has_val else None)
        return train_data, val_data, {}
    # Each worker reads its own shard of the shuffled file list.
    per_worker, fit_args = _worker_batches(cfg, len(ds.indices("train")), dist)
    options = _no_auto_shard()
    train_data = ds.tf_dataset("train", batch_size=per_worker, image_size=cfg.image_size, one_hot=one_hot,
                               shard=(dist.num_workers, dist.worker_index), repeat=True).with_options(options)
    val_data = None
    if has_val:
        val_data = ds.tf_dataset("validation", batch_size=cfg.batch_size, image_size=cfg.image_size,
                                 one_hot=one_hot).with_options(options)
    return train_data, val_data, fit_args


def _restore_into_model(built, checkpoint: Path, stage: str | None) -> None:
    """Load the weights a finished earlier stage saved into the end-to-end model."""
    saved = _load_checkpoint(checkpoint)
    target = built.head if (stage == "head" and len(saved.layers) == len(built.head.layers)) else built.model
    target.set_weights(saved.get_weights())


def _finish(run: Run, cfg: TrainConfig, ds: ImageDataset, built, rows: list[dict], *,
            features: np.ndarray | None, fine_tune: dict | None = None, progress: bool,
            kept: dict | None = None, keep: str | None = None, feature_runtime: dict | None = None) -> np.ndarray:
    """Save and score the final model; returns its validation probabilities."""
    final = built.model if cfg.precision == "float32" else float32_model(cfg, ds.num_classes, built)
    with io.atomic_path(run.model_file, suffix=".keras") as tmp:
        final.save(tmp)
    # Score the model as it was saved, outside any distribution strategy. With the backbone
    # frozen to the end, the saved model's output is the head's output on the cached
    # features: check that on a sample of images end to end, then score every image from
    # the features instead of running the backbone over them again.
    model = run.model
    metrics = Metrics()
    if features is not None and cfg.precision != "float32":
        # features computed in 16 bits differ from the float32 model that was saved: score
        # the saved model itself
        features = None
    if features is not None:
        metrics.feature_parity_max_abs_diff = _feature_parity(model, built, ds, features, cfg.image_size)
    outputs = {}
    for split in ("validation", "test"):
        if features is not None:
            idx = ds.indices(split)
            probs = (np.asarray(built.head.predict(np.asarray(features[idx]), verbose=0, batch_size=256))
                     if len(idx) else np.zeros((0, ds.num_classes), np.float32))
        else:
            probs = predict_split(model, ds, split, cfg.image_size, cfg.batch_size)
        outputs[split] = (probs, ds.labels(split))
        setattr(metrics, split, Scores.from_dict(scores(probs, ds.labels(split))))
    if cfg.calibrate:
        metrics.calibration = Calibration.from_dict(_calibrate(run, final, ds, outputs, cfg.image_size))
        for split, (probs, labels) in outputs.items():
            setattr(metrics, split, Scores.from_dict(scores(probs, labels)))
    # accuracy on the test images with no duplicate in another split
    metrics.test.leak_free = LeakFree.from_dict(leak_free(ds, "test", *outputs["test"]))
    if fine_tune is not None:
        metrics.fine_tune = FineTune.from_dict(fine_tune)
    majority, base = ds.baseline("test")
    metrics.baseline = Baseline(majority_class=majority, test_accuracy=base,
                                validation_accuracy=ds.baseline("validation")[1])
    best = keeping.best_of(rows)  # the rule each stage keeps its best epoch by
    if best is not None:
        metrics.best_epoch = best["epoch"]
        metrics.best_val_accuracy = best["val_accuracy"]
    metrics.keep = keep or cfg.keep
    metrics.kept_epoch = kept or {}  # per stage: the epoch whose weights it ended with
    metrics.epochs = len(rows)
    metrics.seconds_per_epoch = float(np.mean([r["seconds"] for r in rows])) if rows else None
    metrics.parameters = Parameters.from_dict(_parameters(built.model))
    if feature_runtime:
        metrics.feature_runtime = feature_runtime  # requested, used, and why not ONNX Runtime
    write_metrics(run.path, metrics)
    figures.save(run.plot_history(), run.figures_dir / "history.png")
    meta = run.meta
    meta["complete"] = True
    io.write_json(run.config_file, meta)
    run.reload()
    return outputs["validation"][0]  # calibrated when the temperature was applied


def _calibrate(run: Run, final, ds: ImageDataset, outputs: dict, image_size: int) -> dict:
    """Fit a temperature on validation and build it into the saved model (see imgclf.calibration);
    ``outputs`` (split -> (probabilities, labels)) then holds the calibrated probabilities."""
    result = calibrate_model(final, outputs, figure=run.figures_dir / "reliability.png")
    if not result.get("applied"):
        return result
    t = result["temperature"]
    before = outputs["validation"][0]
    for split, (probs, labels) in outputs.items():
        outputs[split] = (scale(probs, t), labels)
    with io.atomic_path(run.model_file, suffix=".keras") as tmp:
        final.save(tmp)
    run.reload()
    # the saved model itself must give the calibrated probabilities: checked on images whose
    # probabilities were not clipped (a saturated 0 or 1 cannot be scaled back exactly)
    probs, _ = outputs["validation"]
    exact = np.flatnonzero(np.asarray(before).min(1) > 10 * CLIP) if len(before) else np.zeros(0, int)
    idx = exact[:16] if len(exact) else np.arange(0)
    images = np.asarray(ds.decoded(image_size)[ds.indices("validation")[idx]], dtype=np.float32)
    diff = float(np.abs(np.asarray(run.model.predict(images, verbose=0)) - probs[idx]).max()) if len(idx) else 0.0
    if diff > 1e-3:
        raise RunError(f"the calibrated model disagrees with its temperature by {diff:.2g}; "
                       "train with --no-calibrate and report this")
    result["parity_max_abs_diff"] = diff
    return result


def _feature_parity(model, built, ds: ImageDataset, features: np.ndarray, image_size: int, n: int = 16) -> float:
    """Largest difference between the saved model on images and the head on cached features."""
    idx = ds.indices("validation")[:n] if len(ds.indices("validation")) else ds.indices("train")[:n]
    images = np.asarray(ds.decoded(image_size)[idx], dtype=np.float32)
    end_to_end = np.asarray(model.predict(images, verbose=0))
    from_features = np.asarray(built.head.predict(np.asarray(features[idx]), verbose=0))
    diff = float(np.abs(end_to_end - from_features).max())
    if diff > 1e-3:
        raise RunError(f"the saved model and its cached features disagree by {diff:.2g}; "
                       "delete the run's cache/ folder and train again")
    return diff


def _parameters(model) -> dict:
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    frozen = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}
