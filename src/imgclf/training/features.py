"""Frozen-backbone feature cache: run the backbone once per image (and view), not per epoch.

While the backbone is frozen, a transfer model's output depends on the image only through
the pooled backbone features, so the head can be trained on features computed once. With
augmentation on, ``views`` versions of each training image are computed: the plain image
first, then augmented ones, and each epoch the head sees one view per image, drawn at
random. The arrays live in the run's ``cache/`` folder (memory-mapped ``.npy``), keyed by
everything that changes them.

Under several workers the pass is sharded: worker ``i`` of ``n`` computes a contiguous share
of the images (their plain features and all their augmented views) once, into
``cache/features-<key>/shard-<i>-of-<n>-*.npy`` with a record ``shard-<i>-of-<n>.json`` of
the rows it covers and how many images it passed through the backbone; the chief waits for
every shard, assembles them into the same files a single process writes, and the other
workers map those. The run folder must be shared by the workers (one machine, or a shared
file system), as it already is for the split lists and checkpoints.

The backbone runs on the runtime ``runtime`` chooses (:mod:`imgclf.models.runtime`): on a CPU,
ONNX Runtime, with the backbone (preprocessing and pooling included) converted once into the
same folder, keyed by backbone, size, pooling and weights file, and checked against Keras on a
batch before it is trusted. Augmented views are drawn by the Keras layers and fed to the same
runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import backend, io
from ..data import loader
from ..errors import RunError
from ..io import TMP_PREFIX
from ..models.runtime import choose_runtime, file_stamp
from ..progress import bar as progress_bar

# largest difference between the features of a converted backbone and Keras' on the check batch
# (MobileNetV2's pooled features reach about 6; ONNX Runtime differs by about 2e-5)
FEATURE_TOLERANCE = 1e-3
CHECK_IMAGES = 16


def backbone_key(built, image_size: int) -> dict:
    """What the frozen backbone's features depend on, besides the images."""
    return {
        "model": built.spec.name, "alpha": built.alpha, "weights": file_stamp(built.weights_path),
        "pooling": type(built.feature_extractor.layers[-1]).__name__ if built.feature_extractor else None,
        "precision": built.model.dtype_policy.name, "image_size": image_size,
    }


def feature_key(built, ds, image_size: int, views: int, seed: int) -> str:
    parts = {
        **backbone_key(built, image_size),
        "files": ds.decode_key(image_size),
        "augment": built.augment.to_dict() if built.augment else None,
        "views": views, "seed": seed,
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


SHARD_TIMEOUT_S = 3600.0  # how long a worker waits for another worker's share of the features


def shard_of(n: int, worker_index: int, num_workers: int) -> slice:
    """Worker ``worker_index``'s contiguous share of ``n`` positions; the shares of all
    workers partition ``range(n)`` and differ in size by one at most."""
    return slice(n * worker_index // num_workers, n * (worker_index + 1) // num_workers)


def extract_features(built, ds, image_size: int, *, views: int, seed: int, folder: Path,
                     batch_size: int = 64, progress: bool = True, shard: tuple[int, int] = (0, 1),
                     timeout: float = SHARD_TIMEOUT_S, runtime: str = "auto",
                     report: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(plain, augmented)``: plain features of every image of every split, ``(N, D)``, and
    augmented training views ``(views - 1, n_train, D)`` (empty without augmentation).

    ``shard=(worker_index, num_workers)``: this worker computes its share only (see the module
    docstring) and waits up to ``timeout`` seconds for the others'; every worker returns the
    whole arrays. ``runtime``: ``auto``, ``keras`` or ``onnxruntime`` (see
    :mod:`imgclf.models.runtime`); ``report`` (a dict) receives the runtime's ``info``, or
    ``{"runtime": None, "cached": True}`` when every feature came from the cache."""

    images = ds.decoded(image_size)
    n, d = len(images), built.feature_dim
    extractor, augmentation = built.feature_extractor, built.augmentation
    extra = views - 1 if augmentation is not None else 0
    key = feature_key(built, ds, image_size, views if extra else 1, seed)
    train_idx = ds.indices("train")
    used = np.sort(np.concatenate([ds.indices(s) for s in ("train", "validation", "test")]))
    worker, workers = shard
    names = (f"features-{key}-plain.npy", f"features-{key}-views.npy")
    shapes = ((n, d), (extra, len(train_idx), d))
    if workers > 1:
        done = _complete(folder, names, shapes, extra)
        if done is not None:  # a resumed run: every shard was assembled already
            return done
        plain_share, view_share = used[shard_of(len(used), worker, workers)], shard_of(len(train_idx), worker, workers)
        total = len(plain_share) + extra * (view_share.stop - view_share.start)
    else:
        total = len(used) + extra * len(train_idx)
    bar = progress_bar(total, "backbone features", progress)

    augment, set_seed = _augmenter(augmentation, images.shape[1:3])
    chosen = {}
    if report is not None:
        report.clear()
        report.update({"runtime": None, "requested": runtime, "cached": True})

    def backbone():
        """The runtime, chosen when the first feature is to be computed (not at all on a cache hit)."""
        if "rt" not in chosen:
            check = np.asarray(images[used[:CHECK_IMAGES]], np.float32)
            chosen["rt"] = choose_runtime(runtime, extractor, cache_dir=folder, key=backbone_key(built, image_size),
                                          check=check, tolerance=FEATURE_TOLERANCE, what="the backbone",
                                          work=total)
            if report is not None:
                report.clear()
                report.update(chosen["rt"].info)
        return chosen["rt"]

    def plain_step(x):
        return backbone().run(x.astype(np.float32))

    def augmented_step(x):
        return backbone().run(augment(x))

    passed = [0]  # images through the backbone in this call

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
            passed[0] += len(f)
            bar.update(len(f))

    def fill_views(rows):
        def fill(out):
            backbone()  # chosen (maybe converted) before the draws are seeded
            set_seed(seed)
            for v in range(extra):
                run(augmented_step, rows, out[v])
        return fill

    try:
        if workers > 1:
            shards = folder / f"features-{key}"
            _compute_shard(shards, worker, workers, plain_share, train_idx[view_share], d, extra,
                           plain=lambda out: run(plain_step, plain_share, out), views=fill_views(train_idx[view_share]),
                           computed=lambda: passed[0])
        else:
            plain = _save_atomic(folder, names[0], shapes[0],
                                 lambda out: run(plain_step, used, out, at=used))  # bad files' rows stay 0
            if extra:
                augmented = _save_atomic(folder, names[1], shapes[1], fill_views(train_idx))
            else:
                augmented = np.zeros(shapes[1], np.float32)
    finally:
        bar.close()
    if workers > 1:
        if worker == 0:
            _assemble(folder, shards, names, shapes, workers, train_idx, extra, timeout)
        return _wait_for_arrays(folder, names, shapes, extra, timeout)
    return plain, augmented


def _shard_name(worker: int, workers: int) -> str:
    return f"shard-{worker}-of-{workers}"


def _compute_shard(shards: Path, worker: int, workers: int, rows: np.ndarray, view_rows: np.ndarray, d: int,
                   extra: int, *, plain, views, computed) -> None:
    """Write this worker's share (unless a record says it is there already), then its record."""
    name = _shard_name(worker, workers)
    record = shards / f"{name}.json"
    if record.is_file():
        return
    started = time.time()
    _save_atomic(shards, f"{name}-plain.npy", (len(rows), d), plain)
    if extra:
        _save_atomic(shards, f"{name}-views.npy", (extra, len(view_rows), d), views)
    io.write_json(record, {"worker": worker, "num_workers": workers, "rows": rows, "view_rows": view_rows,
                           "views": extra, "images": int(computed()), "seconds": round(time.time() - started, 3)})


def shard_records(folder: Path) -> list[dict]:
    """The records of the feature shards in a run's ``cache/`` folder, worker by worker."""
    return [io.read_json(p) for p in sorted(Path(folder).glob("features-*/shard-*-of-*.json"))]


def _wait_for(path: Path, owner: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        if time.time() > deadline:
            raise RunError(f"{path} ({owner}'s share of the features) did not appear within {timeout:.0f}s; "
                           f"check that {owner} is running and that every worker shares the run folder")
        time.sleep(0.2)


def _assemble(folder: Path, shards: Path, names, shapes, workers: int, train_idx: np.ndarray, extra: int,
              timeout: float) -> None:
    """The chief: wait for every worker's shard, then write the whole arrays (rows of unread
    files stay 0, as in one process) and drop the shards' arrays (their records stay)."""
    for i in range(workers):
        _wait_for(shards / f"{_shard_name(i, workers)}.json", f"worker {i}", timeout)
    records = [io.read_json(shards / f"{_shard_name(i, workers)}.json") for i in range(workers)]
    position = {int(r): p for p, r in enumerate(train_idx)}

    def arrays(kind):
        return [np.load(shards / f"{_shard_name(i, workers)}-{kind}.npy", mmap_mode="r") for i in range(workers)]

    def fill_plain(out):
        for rec, part in zip(records, arrays("plain")):
            out[np.asarray(rec["rows"], np.int64)] = part

    def fill_views(out):
        for rec, part in zip(records, arrays("views")):
            out[:, [position[int(r)] for r in rec["view_rows"]]] = part

    _save_atomic(folder, names[0], shapes[0], fill_plain)
    if extra:
        _save_atomic(folder, names[1], shapes[1], fill_views)
    for p in shards.glob("shard-*.npy"):
        p.unlink(missing_ok=True)
    io.remove_partial(shards)


def _complete(folder: Path, names, shapes, extra: int):
    """The whole arrays when they are in ``folder`` with the right shapes, else ``None``."""
    arrays = []
    for name, shape in zip(names[: 1 + bool(extra)], shapes):
        try:
            arr = np.load(folder / name, mmap_mode="r")
        except (ValueError, OSError):
            return None
        if arr.shape != tuple(shape):
            return None
        arrays.append(arr)
    return arrays[0], (arrays[1] if extra else np.zeros(shapes[1], np.float32))


def _wait_for_arrays(folder: Path, names, shapes, extra: int, timeout: float):
    """The whole arrays the chief assembles (at once for the chief itself)."""
    for name in names[: 1 + bool(extra)]:
        _wait_for(folder / name, "the chief (worker 0)", timeout)
    done = _complete(folder, names, shapes, extra)
    if done is None:
        raise RunError(f"the features in {folder} do not fit this run's data; delete the run's cache/ folder "
                       "and start every worker again")
    return done
def _augmenter(augmentation, size):
    """``(augment, set_seed)``: uint8 batches to float32 augmented images, compiled once, and
    the seeding of their random draws. TensorFlow: a ``tf.function`` with one signature; JAX
    and PyTorch: a Keras model of the augmentation layers run by ``predict_on_batch``."""
    if augmentation is None:
        return None, lambda seed: None
    h, w = size
    if backend.is_tensorflow():
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec((None, h, w, 3), tf.uint8)])  # one trace
        def augment(x):
            return augmentation(tf.cast(x, tf.float32), training=True)

        return (lambda x: augment(tf.constant(x)).numpy()), tf.random.set_seed
    import keras

    inputs = keras.Input((h, w, 3), dtype="uint8")
    model = keras.Model(inputs, augmentation(keras.ops.cast(inputs, "float32"), training=True))
    return (lambda x: np.asarray(model.predict_on_batch(x), np.float32)), keras.utils.set_random_seed


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
                    train_rows: np.ndarray | None = None, shard: tuple[int, int] | None = None,
                    repeat: bool = False):
    """``tf.data`` of (features, labels). For training, each element draws one of the views
    (plain or augmented) at random each epoch; ``train_rows`` maps dataset rows to positions in
    ``augmented``. ``shard=(num_workers, worker_index)`` keeps one worker's share of the rows;
    ``repeat`` repeats them (reshuffled) without end (both for several workers, which need the
    TensorFlow backend). A ``keras.utils.PyDataset`` of the same batches on JAX and PyTorch."""
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
    if shard is not None:
        ds = ds.shard(*shard)
    if shuffle:
        ds = ds.shuffle(max(1, len(rows)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
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
