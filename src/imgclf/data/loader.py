"""Batches for Keras without TensorFlow: a ``keras.utils.PyDataset`` over rows of arrays.

On the JAX and PyTorch backends (and wherever TensorFlow is not installed) the decode cache
(``(N, H, W, 3)`` uint8 rows, in memory or a :class:`~imgclf.data.pipeline.DiskArray`) and
the feature cache reach ``fit``/``predict`` through :class:`RowBatches`: it cuts the rows of
a split into batches, shuffles them each epoch with a generator seeded by ``(seed, epoch)``
(the same order on every run with that seed), and gathers the next batches in worker
threads while the model runs on this one.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def _keras_utils():
    import keras

    return keras.utils


def default_workers() -> int:
    """Reader threads: two keep a batch ready on a small machine without taking the model's cores."""
    return 2


def _make_class():
    PyDataset = _keras_utils().PyDataset

    class RowBatches(PyDataset):
        """``gather(rows, epoch) -> batch`` for consecutive ``batch_size`` slices of ``rows``
        (a fresh seeded permutation each epoch when ``shuffle``)."""

        def __init__(self, rows, gather, *, batch_size: int, shuffle: bool = False, seed: int | None = None,
                     workers: int | None = None, limit: int | None = None):
            workers = default_workers() if workers is None else workers
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(2, 2 * workers))
            if batch_size < 1:
                raise ConfigError(f"batch size must be at least 1, got {batch_size}")
            self.rows = np.asarray(rows, dtype=np.int64)
            self.gather = gather
            self.batch_size = int(batch_size)
            self.shuffle = shuffle
            self.seed = 0 if seed is None else int(seed)
            self.limit = limit
            self.epoch = 0
            self._order = self._order_of(0)

        def _order_of(self, epoch: int) -> np.ndarray:
            if not self.shuffle:
                return self.rows
            return self.rows[np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))]

        def __len__(self) -> int:
            n = math.ceil(len(self.rows) / self.batch_size)
            return n if self.limit is None else min(n, self.limit)

        def __getitem__(self, index: int):
            if not 0 <= index < len(self):
                raise IndexError(f"batch {index} of {len(self)}")
            rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
            return self.gather(rows, self.epoch)

        def on_epoch_end(self) -> None:
            # the next epoch's order is set here, not in on_epoch_begin: Keras starts the
            # reader threads before it calls on_epoch_begin
            self.epoch += 1
            self._order = self._order_of(self.epoch)

        def take(self, batches: int) -> "RowBatches":
            """The first ``batches`` batches of each epoch (as ``tf.data``'s ``take``)."""
            out = RowBatches(self.rows, self.gather, batch_size=self.batch_size, shuffle=self.shuffle,
                             seed=self.seed, workers=self.workers, limit=batches)
            return out

    return RowBatches


_CLASS = None


def row_batches(rows, gather, **options):
    """A :class:`RowBatches` (defined on first use: Keras is imported then, not at import)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_class()
    return _CLASS(rows, gather, **options)


def image_batches(images, labels: np.ndarray, indices: np.ndarray, *, batch_size: int, shuffle: bool,
                  seed: int | None, num_classes: int | None, one_hot: bool, dtype: str = "uint8",
                  decode_one=None):
    """``(images in 0..255, labels)`` batches of the rows ``indices`` of ``images`` (uint8, as
    cached; ``dtype="float32"`` converts). With ``images=None``, ``decode_one(row)`` decodes each
    image as it is needed (no cache)."""
    labels = np.asarray(labels, dtype=np.int32)

    def gather(rows, epoch):
        if images is not None:
            x = np.ascontiguousarray(images[rows])
        else:
            x = np.stack([decode_one(int(r)) for r in rows])
        if dtype != "uint8":
            x = x.astype(dtype)
        y = labels[rows]
        if one_hot:
            y = np.eye(num_classes, dtype=np.float32)[y]
        return x, y

    return row_batches(indices, gather, batch_size=batch_size, shuffle=shuffle, seed=seed)


def feature_batches(plain: np.ndarray, augmented: np.ndarray, labels: np.ndarray, indices: np.ndarray, *,
                    batch_size: int, shuffle: bool, seed: int, one_hot: bool, num_classes: int,
                    aug_pos: dict[int, int]):
    """``(features, labels)`` batches; for training each row draws one of its views (plain or
    augmented) at random each epoch, from a generator seeded by ``(seed, epoch, row)``."""
    views = 1 + len(augmented)
    labels = np.asarray(labels, np.int32)
    d = plain.shape[1]

    size = int(np.max(indices)) + 1 if len(indices) else 0
    drawn: dict[int, np.ndarray] = {}  # epoch -> a view for every row

    def gather(rows, epoch):
        out = np.empty((len(rows), d), np.float32)
        if shuffle and views > 1:
            if epoch not in drawn:
                drawn.clear()
                drawn[epoch] = np.random.default_rng([seed, epoch, 1]).integers(0, views, size=size)
            draws = drawn[epoch][rows]
        else:
            draws = np.zeros(len(rows), np.int64)
        for k, (row, v) in enumerate(zip(rows.tolist(), draws.tolist())):
            p = aug_pos.get(row, -1)
            out[k] = plain[row] if v == 0 or p < 0 else augmented[v - 1, p]
        y = labels[rows]
        if one_hot:
            y = np.eye(num_classes, dtype=np.float32)[y]
        return out, y

    return row_batches(indices, gather, batch_size=batch_size, shuffle=shuffle, seed=seed)
