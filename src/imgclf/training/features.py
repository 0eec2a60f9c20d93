"""Frozen-backbone feature cache: run the backbone once per image (and view), not per epoch.

While the backbone is frozen, a transfer model's output depends on the image only through
the pooled backbone features, so the head can be trained on features computed once. With
augmentation on, ``views`` versions of each training image are computed: the plain image
first, then augmented ones, and each epoch the head sees one view per image, drawn at
random. The arrays live in the run's ``cache/`` folder (memory-mapped ``.npy``), keyed by
everything that changes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import backend
from ..data import loader
from ..io import TMP_PREFIX
from ..progress import bar as progress_bar


def feature_key(built, ds, image_size: int, views: int, seed: int) -> str:
    weights = built.weights_path
    if weights and os.path.exists(weights):
        st = os.stat(weights)
        weights = f"{os.path.abspath(weights)}|{st.st_size}|{st.st_mtime_ns}"
    parts = {
        "files": ds.decode_key(image_size),
        "model": built.spec.name, "alpha": built.alpha, "weights": weights,
        "pooling": type(built.feature_extractor.layers[-1]).__name__ if built.feature_extractor else None,
        "precision": built.model.dtype_policy.name,
        "augment": built.augment.to_dict() if built.augment else None,
        "views": views, "seed": seed, "image_size": image_size,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _save_atomic(folder: Path, name: str, shape, fill) -> np.ndarray:
    target = folder / name
    if target.is_file():
        try:
            arr = np.load(target, mmap_mode="r")
            if arr.shape == tuple(shape):
                return arr
        except (ValueError, OSError):
            pass
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}features.", suffix=".npy", dir=folder)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=tuple(shape))
        fill(out)
        out.flush()
        del out
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return np.load(target, mmap_mode="r")


def extract_features(built, ds, image_size: int, *, views: int, seed: int, folder: Path,
                     batch_size: int = 64, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(plain, augmented)``: plain features of every image of every split, ``(N, D)``, and
    augmented training views ``(views - 1, n_train, D)`` (empty without augmentation)."""
    images = ds.decoded(image_size)
    n, d = len(images), built.feature_dim
    extractor, augmentation = built.feature_extractor, built.augmentation
    extra = views - 1 if augmentation is not None else 0
    key = feature_key(built, ds, image_size, views if extra else 1, seed)
    train_idx = ds.indices("train")
    used = np.sort(np.concatenate([ds.indices(s) for s in ("train", "validation", "test")]))
    total = len(used) + extra * len(train_idx)
    bar = progress_bar(total, "backbone features", progress)

    plain_step, augmented_step, set_seed = _steps(extractor, augmentation, images.shape[1:3])
    def run(step, indices, out, at=None):
        """Features of ``images[indices]`` into ``out`` in order, or at rows ``at`` of it."""
        pos = 0
        for x in _batches(images, indices, batch_size):
            f = step(x)
            if at is None:
                out[pos: pos + len(f)] = f
            else:
                out[at[pos: pos + len(f)]] = f
            pos += len(f)
            bar.update(len(f))

    try:
        plain = _save_atomic(folder, f"features-{key}-plain.npy", (n, d),
                             lambda out: run(plain_step, used, out, at=used))  # bad files' rows stay 0
        if extra:
            set_seed(seed)

            def fill_views(out):
                for v in range(extra):
                    run(augmented_step, train_idx, out[v])

            augmented = _save_atomic(folder, f"features-{key}-views.npy", (extra, len(train_idx), d), fill_views)
        else:
            augmented = np.zeros((0, len(train_idx), d), np.float32)
    finally:
        bar.close()
    return plain, augmented


def _steps(extractor, augmentation, size):
    """``(plain step, augmented step, set_seed)``: uint8 batches to float32 features, compiled
    once. TensorFlow: ``tf.function`` with one signature; JAX and PyTorch: Keras models of the
    same layers run by ``predict_on_batch`` (compiled by the backend)."""
    h, w = size
    if backend.is_tensorflow():
        import tensorflow as tf

        signature = [tf.TensorSpec((None, h, w, 3), tf.uint8)]  # one trace, whatever the batch size

        @tf.function(input_signature=signature)
        def plain_step(x):
            return extractor(tf.cast(x, tf.float32), training=False)

        @tf.function(input_signature=signature)
        def augmented_step(x):
            return extractor(augmentation(tf.cast(x, tf.float32), training=True), training=False)

        return (lambda x: plain_step(tf.constant(x)).numpy(), lambda x: augmented_step(tf.constant(x)).numpy(),
                tf.random.set_seed)
    import keras

    inputs = keras.Input((h, w, 3), dtype="uint8")
    x = keras.ops.cast(inputs, "float32")
    plain = keras.Model(inputs, extractor(x, training=False))
    augmented = (keras.Model(inputs, extractor(augmentation(x, training=True), training=False))
                 if augmentation is not None else None)
    return (lambda b: np.asarray(plain.predict_on_batch(b), np.float32),
            lambda b: np.asarray(augmented.predict_on_batch(b), np.float32), keras.utils.set_random_seed)


def _batches(images, indices: np.ndarray, batch_size: int):
    """``images[indices]`` in batches, the next one read while the backbone runs on this one.

    A plain reader thread, not ``tf.data``: a parallel tf.data stage competes with the
    backbone for the same cores and costs it about a third of its speed on a small machine."""
    starts = range(0, len(indices), batch_size)
    if not len(starts):
        return
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(lambda s: np.asarray(images[indices[s:s + batch_size]]), starts[0])
        for s in starts[1:]:
            batch = pending.result()
            pending = reader.submit(lambda s: np.asarray(images[indices[s:s + batch_size]]), s)
            yield batch
        yield pending.result()


def feature_dataset(plain: np.ndarray, augmented: np.ndarray, labels: np.ndarray, indices: np.ndarray, *,
                    batch_size: int, shuffle: bool, seed: int, one_hot: bool, num_classes: int,
                    train_rows: np.ndarray | None = None):
    """``tf.data`` of (features, labels). For training, each element draws one of the views
    (plain or augmented) at random each epoch; ``train_rows`` maps dataset rows to positions in
    ``augmented``. A ``keras.utils.PyDataset`` of the same batches on JAX and PyTorch."""
    views = 1 + len(augmented)
    pos = {int(r): i for i, r in enumerate(train_rows)} if train_rows is not None else {}
    rows = np.asarray(indices, np.int64)
    aug_pos = np.array([pos.get(int(r), -1) for r in rows], np.int64)
    if not backend.is_tensorflow():
        return loader.feature_batches(plain, augmented, labels, rows, batch_size=batch_size, shuffle=shuffle,
                                      seed=seed, one_hot=one_hot, num_classes=num_classes,
                                      aug_pos=dict(zip(rows.tolist(), aug_pos.tolist())))
    import tensorflow as tf

    labels = np.asarray(labels, np.int32)
    d = plain.shape[1]

    def gather(i, view):
        out = np.empty((len(i), d), np.float32)
        for k, (row, v) in enumerate(zip(i, view)):
            p = aug_pos_of[int(row)]
            out[k] = plain[row] if v == 0 or p < 0 else augmented[v - 1, p]
        return out, labels[i]

    aug_pos_of = dict(zip(rows.tolist(), aug_pos.tolist()))
    ds = tf.data.Dataset.from_tensor_slices(rows)
    if shuffle:
        ds = ds.shuffle(max(1, len(rows)), seed=seed, reshuffle_each_iteration=True)
    if shuffle and views > 1:
        # a fresh draw of views every epoch (an op-level seed would repeat the same draw)
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(lambda r: r % views)
        ds = tf.data.Dataset.zip((ds, draws))
    else:
        ds = ds.map(lambda r: (r, tf.zeros_like(r)))
    ds = ds.batch(batch_size)

    def pick(b, view):
        x, y = tf.numpy_function(gather, [b, view], (tf.float32, tf.int32), stateful=False)
        x = tf.ensure_shape(x, (None, d))
        y = tf.ensure_shape(y, (None,))
        return x, (tf.one_hot(y, num_classes) if one_hot else y)

    return ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
