"""``ImageDataset``: a scanned, split dataset, and ``load_dataset``, the one call that makes it."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np

from ..config import DATA_FIELDS, DataConfig
from ..errors import ConfigError, RunError
from ..io import write_json
from .images import DEFAULT_FIT, as_size, load_image
from .pipeline import DiskArray, check_options, decode_images, decode_key, make_dataset
from .review import Review, apply_review
from .scan import ImageRecord, ScanReport, scan
from .sources import DataSource, cache_dir, resolve_source
from .split import SPLITS, apply_split_lists, make_splits, read_split_lists, write_splits


class ImageDataset:
    """Images, class names and splits, and the pipelines that feed them to a model.

    Build one with :func:`load_dataset`. Class order is natural-sorted (``class_2`` before
    ``class_10``) and travels with every model trained on it.
    """

    def __init__(
        self,
        source: DataSource,
        report: ScanReport,
        splits: dict[str, list[ImageRecord]],
        *,
        image_size: int | tuple[int, int] = 160,
        interpolation: str = "bilinear",
        fit: str = DEFAULT_FIT,
        seed: int = 42,
        cache: str | os.PathLike | None = None,
        cache_mode: str = "disk",
        progress: bool = True,
    ):
        check_options(image_size, interpolation, fit, cache_mode)
        self.source = source
        self.report = report
        self.splits = splits
        self.class_names = list(report.class_names)
        self.image_size = as_size(image_size)
        self.interpolation = interpolation
        self.fit = fit
        self.seed = seed
        self.cache = cache_dir(cache)
        self.cache_mode = cache_mode
        self.progress = progress
        # Rows of the decoded array follow the scan report (a bad file keeps its row, black
        # and never used), so the pixels the scan decoded become the cache as they are.
        self._rows = list(report.records)
        row_of = {r.path: i for i, r in enumerate(self._rows)}
        self._index = {s: np.array([row_of[r.path] for r in splits[s]], dtype=np.int64) for s in SPLITS}
        self._row_labels: np.ndarray | None = None
        self._decoded: dict[tuple, np.ndarray] = {}
        self.fractions = {"validation": 0.2, "test": 0.1}  # what the splits were made with
        self.review = Review()  # what a reviewed list (--exclude / --relabel) changed

    # -- what is in it -------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.source.root

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def records(self, split: str) -> list[ImageRecord]:
        self.check_split(split)
        return self.splits[split]

    def paths(self, split: str) -> list[Path]:
        return [self.root / r.path for r in self.records(split)]

    def labels(self, split: str) -> np.ndarray:
        lookup = {n: i for i, n in enumerate(self.class_names)}
        return np.array([lookup[r.label] for r in self.records(split)], dtype=np.int32)

    def row_labels(self) -> np.ndarray:
        """The class index of every row of :meth:`decoded` (0 for the rows of bad files)."""
        if self._row_labels is None:
            lookup = {n: i for i, n in enumerate(self.class_names)}
            self._row_labels = np.array([lookup.get(r.label, 0) if r.ok else 0 for r in self._rows], dtype=np.int32)
        return self._row_labels

    def counts(self, split: str | None = None) -> dict[str, int]:
        recs = [r for s in SPLITS for r in self.splits[s]] if split is None else self.records(split)
        out = {n: 0 for n in self.class_names}
        for r in recs:
            out[r.label] += 1
        return out

    def baseline(self, split: str = "test") -> tuple[str, float]:
        """Accuracy on ``split`` of always predicting the most frequent training class."""
        train = self.counts("train")
        majority = max(train, key=lambda k: train[k])
        counts = self.counts(split)
        total = sum(counts.values())
        return majority, (counts[majority] / total if total else 0.0)

    def summary(self) -> dict:
        split = "validation" if self.splits["validation"] else "train"
        majority, base = self.baseline(split)
        return {
            "root": str(self.root),
            "layout": self.source.layout,
            "class_names": self.class_names,
            "counts": {s: self.counts(s) for s in SPLITS},
            "total": sum(len(self.splits[s]) for s in SPLITS),
            "bad_files": len(self.report.bad),
            "majority_class": majority,
            "baseline_accuracy": base,
            "baseline_split": split,
        }

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.splits[s])}" for s in SPLITS)
        return f"ImageDataset({self.root}, classes={self.class_names}, {sizes})"

    def check_split(self, split: str) -> None:
        """A :class:`ConfigError` unless ``split`` is one of train, validation, test."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")

    # ``ds.audit()`` is imgclf.audit.audit, attached in imgclf/__init__.py (the audit reads
    # datasets; datasets know nothing of it)

    # -- splits on disk ------------------------------------------------------------------
    def save_splits(self, folder: str | os.PathLike) -> Path:
        return write_splits(folder, self.splits)

    def save_problems(self, path: str | os.PathLike) -> Path:
        """Write what the scan left out and why (``data_problems.json`` in a run folder): every
        bad file with its reason, the files used with a warning, and the other warnings."""
        r = self.report
        write_json(path, {
            "bad": [{"path": b.path, "class": b.label, "reason": b.reason, "detail": b.detail, "message": b.message()}
                    for b in r.bad],
            "used_with_warning": [{"path": w.path, "warning": w.warning} for w in r.renamed],
            "warnings": list(r.warnings),
            "ignored": len(r.ignored) + len(r.clutter),
        })
        return Path(path)

    # -- pixels --------------------------------------------------------------------------
    def _row_paths(self) -> list[Path | None]:
        return [self.root / r.path if r.ok else None for r in self._rows]

    def decode_key(self, image_size=None) -> str:
        """What the rows of :meth:`decoded` depend on (files, size, interpolation, fit)."""
        size = as_size(image_size) if image_size is not None else self.image_size
        return decode_key(self._row_paths(), size, self.interpolation, self.fit, self._row_stats())

    def _row_stats(self) -> list[tuple[int, int] | None]:
        return [self.report.stats.get(r.path) if r.ok else None for r in self._rows]

    def decoded(self, image_size=None) -> np.ndarray:
        """Every image, decoded once, as ``(N, H, W, 3)`` uint8; :meth:`indices` says which
        rows belong to a split."""
        size = as_size(image_size) if image_size is not None else self.image_size
        key = (size, self.interpolation, self.fit)
        if key not in self._decoded:
            scanned = self.report.pixels
            ready = None
            paths = self._row_paths()
            if scanned is not None and scanned.options == key:
                if scanned.complete and self.cache_mode == "disk":
                    # the scan decoded every file, row for row: its scratch file becomes the
                    # cache, read at once while it is named (after fsync) behind the run's back
                    target = self.cache / "decoded" / f"{self.decode_key(size)}.npy"
                    arr = _open_scratch(scanned, target)
                    if scanned.save_as(target, background=arr is not None):
                        self.report.pixels = None
                        self._decoded[key] = arr if arr is not None else DiskArray(target)
                        return self._decoded[key]
                # decoded by the scan already: copied, not decoded a second time
                ready = scanned.for_paths([r.path if r.ok else None for r in self._rows])
            try:
                self._decoded[key] = decode_images(
                    paths, size, interpolation=self.interpolation, fit=self.fit, cache_mode=self.cache_mode,
                    cache_folder=self.cache / "decoded", progress=self.progress, ready=ready,
                )
            finally:
                if ready is not None:
                    scanned.close()  # taken: the scratch file goes
                    self.report.pixels = None
        return self._decoded[key]

    def indices(self, split: str) -> np.ndarray:
        """Rows of :meth:`decoded` that belong to ``split``."""
        self.check_split(split)
        return self._index[split]

    def images(self, split: str, image_size=None) -> np.ndarray:
        return np.asarray(self.decoded(image_size)[self.indices(split)])

    def tf_dataset(
        self,
        split: str,
        *,
        batch_size: int = 32,
        shuffle: bool | None = None,
        image_size=None,
        seed: int | None = None,
        one_hot: bool = False,
        shard: tuple[int, int] | None = None,
        repeat: bool = False,
        dtype: str = "uint8",
    ):
        """``tf.data.Dataset`` of ``(images, labels)`` for one split (shuffled for train).

        Images are uint8 in 0..255 (a Keras model casts them itself); ``dtype="float32"`` for
        float batches."""
        self.check_split(split)
        shuffle = (split == "train") if shuffle is None else shuffle
        all_labels = self.row_labels()
        size = as_size(image_size) if image_size is not None else self.image_size
        common = dict(batch_size=batch_size, shuffle=shuffle, seed=self.seed if seed is None else seed,
                      num_classes=self.num_classes, one_hot=one_hot, shard=shard, repeat=repeat, dtype=dtype)
        if self.cache_mode == "none":
            return make_dataset(None, all_labels, self.indices(split), paths=self._row_paths(),
                                image_size=size, interpolation=self.interpolation, fit=self.fit, **common)
        return make_dataset(self.decoded(size), all_labels, self.indices(split), **common)

    def sample(self, k: int = 3, split: str = "train", seed: int | None = None, max_side: int = 256) -> dict[str, list[np.ndarray]]:
        """``k`` random images per class at their own aspect ratio (for figures)."""
        rng = random.Random(self.seed if seed is None else seed)
        out: dict[str, list[np.ndarray]] = {}
        for name in self.class_names:
            recs = [r for r in self.records(split) if r.label == name]
            picked = rng.sample(recs, min(k, len(recs)))
            out[name] = [_thumbnail(self.root / r.path, max_side) for r in picked]
        return out


def _open_scratch(scanned, target: Path) -> DiskArray | None:
    """A reader of the scan's scratch file before it has a name, shown as ``target``."""
    where = scanned.reader_path
    if where is None:
        return None
    try:
        return DiskArray(where, name=target)
    except (OSError, ValueError):
        return None


def _thumbnail(path: Path, max_side: int) -> np.ndarray:
    full = load_image(path)
    h, w = full.shape[:2]
    s = min(1.0, max_side / max(h, w))
    return load_image(full, (max(1, round(h * s)), max(1, round(w * s)))) if s < 1 else full


def class_list(classes: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """``"a,b,c"`` or ``["a", "b", "c"]`` as a list of class names in that order (``None`` stays)."""
    if classes is None:
        return None
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    names = [c for c in names if c]
    if len(names) < 2:
        raise ConfigError(f"--classes needs at least two class names, got {classes!r}")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ConfigError(f"--classes names {repeated[0]!r} twice; name each class once")
    return names


def data_config(data=None, config: DataConfig | None = None, **overrides) -> DataConfig:
    """``config`` (default: the defaults) with ``data`` as its source and keyword ``overrides``
    (any field of :class:`~imgclf.config.DataConfig`), checked."""
    cfg = dataclasses.replace(config) if config is not None else DataConfig()
    if data is not None:
        cfg.source = data
    unknown = sorted(set(overrides) - set(DATA_FIELDS))
    if unknown:
        raise ConfigError(f"unexpected data option {unknown[0]!r}; see imgclf.config.DataConfig")
    for name, value in overrides.items():
        setattr(cfg, name, value)
    return cfg.validate()


def scan_dataset(config: DataConfig, *, progress: bool = True,
                 decode: tuple | None = None) -> tuple[DataSource, ScanReport, Review]:
    """Find and scan a dataset, apply the reviewed lists (``exclude``, ``relabel``), and choose
    its classes: those of ``classes`` in that order, or every class folder with at least
    ``min_images`` usable images (the others are left out, with a warning in the report).
    Nothing is split yet; :func:`load_dataset` does both."""
    names = class_list(config.classes)
    source = resolve_source(config.source, data_path=config.data_path, cache=config.cache, progress=progress)
    report = scan(source, cache=config.cache, progress=progress, decode=decode, classes=names)
    review = apply_review(report, config.exclude, config.relabel)
    report = report.keep_classes(config.min_images, named=names is not None)
    kept = set(report.class_names)
    # a file given a class that is then left out is left out with it: nothing to apply again
    review.relabelled = {p: move for p, move in review.relabelled.items() if move[1] in kept}
    return source, report, review


def load_dataset(
    data: str | os.PathLike | None = None,
    config: DataConfig | None = None,
    *,
    image_size: int | tuple[int, int] = 160,
    progress: bool = True,
    predecode: bool = True,
    **options,
) -> ImageDataset:
    """Find, scan and split a dataset; the first step of everything else.

    ``data`` is a class-per-folder tree, a folder with train/ and validation/ (and maybe
    test/), a .zip or .tar.gz, a URL, or a known name (``cats_and_dogs_filtered``, the
    default). ``config`` (a :class:`~imgclf.config.DataConfig`) or keyword ``options`` (its
    fields: ``validation``, ``test``, ``seed``, ``splits``, ``fit``, ``classes``, ...) say how
    it is split and brought to ``image_size``. ``splits`` reuses split lists saved by an
    earlier run instead of making new ones. ``predecode`` lets the scan keep the pixels it
    decodes at ``image_size`` for :meth:`ImageDataset.decoded` (one decode per file instead of
    two on a first run); turn it off when the pixels will not be needed (``imgclf inspect``).
    ``classes`` (``"a,b,c"`` or a list) trains on those classes only, in that order;
    ``min_images`` leaves out classes with fewer usable images (see :func:`scan_dataset`).
    ``exclude`` and ``relabel`` apply reviewed lists (see :mod:`imgclf.data.review`): the
    files stay as they are.
    """
    cfg = data_config(data, config, **options)
    check_options(image_size, cfg.interpolation, cfg.fit, cfg.cache_mode)
    decode = (image_size, cfg.interpolation, cfg.fit) if predecode and cfg.cache_mode != "none" else None
    source, report, review = scan_dataset(cfg, progress=progress, decode=decode)
    return dataset_from_scan(source, report, cfg, review=review, image_size=image_size, progress=progress)


def dataset_from_scan(source: DataSource, report: ScanReport, config: DataConfig, *, review: Review | None = None,
                      image_size: int | tuple[int, int] = 160, progress: bool = True) -> ImageDataset:
    """Split a scanned dataset (``DataError`` when nothing can be trained on it)."""
    report.check_usable()
    if config.splits is not None:
        assigned = apply_split_lists(report, read_split_lists(config.splits))
    else:
        assigned = make_splits(report, validation=config.validation, test=config.test, seed=config.seed)
    ds = ImageDataset(source, report, assigned, image_size=image_size, interpolation=config.interpolation,
                      fit=config.fit, seed=config.seed, cache=config.cache, cache_mode=config.cache_mode,
                      progress=progress)
    ds.fractions = {"validation": config.validation, "test": config.test}
    ds.review = review or Review()
    ds.config = config
    return ds


def run_dataset(run, data: str | os.PathLike | None = None, progress: bool = True) -> ImageDataset:
    """A run's data with the run's own splits (``data`` overrides the stored location), the
    reviewed lists it applied applied again; ``run.dataset()``."""
    d = run.meta["train"]["data"]
    root = data if data is not None else d["root"]
    review = run.path / "review"  # reviewed lists the run applied, as they were applied
    ds = load_dataset(root, image_size=run.image_size, seed=d["seed"], splits=run.splits_dir,
                      fit=d["fit"], interpolation=d["interpolation"], cache_mode=d["cache_mode"],
                      classes=run.class_names, progress=progress,
                      exclude=review / "exclude.txt" if (review / "exclude.txt").is_file() else None,
                      relabel=review / "relabel.csv" if (review / "relabel.csv").is_file() else None)
    if ds.class_names != run.class_names:
        raise RunError(f"{root} now has classes {ds.class_names}, but {run.path} was trained on "
                       f"{run.class_names}; restore the class folders or train a new run")
    return ds
