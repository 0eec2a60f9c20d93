"""The input pipeline: decode every image once into a uint8 cache, then feed ``tf.data``.

Decoding (Pillow, in a thread pool, JPEGs scaled in the DCT domain) happens once per
(file list, image size, interpolation, fit). The result is a ``(N, H, W, 3)`` uint8 array,
kept in memory or in a ``.npy`` file in the imgclf cache that later runs and processes read
without decoding again. ``tf.data`` (a ``keras.utils.PyDataset`` on the JAX and PyTorch
backends, see :mod:`.loader`) then only shuffles indices each epoch, gathers batches
from that array, and prefetches. A file cache is read row by row, never loaded whole, so
data larger than memory streams from disk with flat resident memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import backend
from ..errors import ConfigError, DataError
from ..io import STALE_AFTER_S, TMP_PREFIX, remove_partial, wait_for, write_at
from ..progress import bar as progress_bar
from . import loader
from .images import DEFAULT_FIT, FIT_MODES, INTERPOLATIONS, as_size, decode_workers, load_image

DECODE_VERSION = 2  # 2: libjpeg-turbo scaled decode, box reduction + OpenCV resize
CACHE_MODES = ("disk", "memory", "none")


def decode_key(paths: list[Path], image_size, interpolation: str, fit: str,
               stats: list[tuple[int, int] | None] | None = None) -> str:
    """The name of the decode cache of ``paths``: it changes with any file's path, size or
    modification time, and with the options. ``stats[i]``, where given, is file ``i``'s
    ``(size, mtime_ns)`` as already found (by the scan), saving a second ``stat``."""
    parts = [f"v{DECODE_VERSION}|{as_size(image_size)}|{interpolation}|{fit}"]
    for i, p in enumerate(paths):
        if p is None:  # a row left empty (a file the scan found bad)
            parts.append("|-")
            continue
        known = stats[i] if stats is not None else None
        if known is not None:
            parts.append(f"|{os.path.abspath(p)}|{known[0]}|{known[1]}")
            continue
        try:
            st = os.stat(p)
            parts.append(f"|{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            parts.append(f"|{p}|missing")
    return hashlib.sha256("".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def check_options(image_size, interpolation: str, fit: str, cache_mode: str = "disk") -> None:
    h, w = as_size(image_size)
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise ConfigError(f"image size must be between 8 and 4096 pixels, got {h}x{w}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {interpolation!r}; choose one of: {', '.join(INTERPOLATIONS)}")
    if fit not in FIT_MODES:
        raise ConfigError(f"unknown fit {fit!r}; choose one of: {', '.join(FIT_MODES)}")
    if cache_mode not in CACHE_MODES:
        raise ConfigError(f"unknown cache {cache_mode!r}; choose one of: {', '.join(CACHE_MODES)}")


def _decode_into(out, paths: list[Path], image_size, interpolation, fit, workers, progress, ready=None) -> None:
    def one(i: int) -> None:
        done = ready[i] if ready is not None else None
        if done is not None:
            out[i] = done  # decoded by the scan already
            return
        if paths[i] is None:
            return  # a bad file's row: left black, never read
        try:
            out[i] = load_image(paths[i], image_size, interpolation=interpolation, fit=fit)
        except Exception as e:  # the file changed or vanished since it was scanned
            raise DataError(f"{paths[i]}: cannot be decoded any more ({e}); scan the data again") from None

    n = workers or decode_workers()
    with ThreadPoolExecutor(max_workers=n) as pool, progress_bar(len(paths), "decoding images", progress) as bar:
        for _ in pool.map(one, range(len(paths))):
            bar.update(1)


class DiskArray:
    """A ``(N, H, W, 3)`` uint8 ``.npy`` file read row by row with ``pread``, not mapped.

    Reading rows never adds more than those rows to the process's memory (the operating
    system's page cache holds the rest, and gives it back under pressure), so a dataset
    larger than memory streams from disk with flat resident memory.
    """

    def __init__(self, path: str | os.PathLike, *, name: str | os.PathLike | None = None):
        """``name``: the path to show in messages, when ``path`` is another way to the file (a
        file still being given its name, opened through ``/proc/self/fd``)."""
        self.path = Path(path if name is None else name)
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            self.offset = fh.tell()
        if fortran or dtype != np.uint8 or len(shape) != 4:
            raise ValueError(f"{self.path} is not a decoded-image cache")
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.uint8)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._rows(np.array([index]))[0]
        if isinstance(index, slice):
            return self._rows(np.arange(*index.indices(len(self))))
        return self._rows(np.asarray(index, dtype=np.int64).reshape(-1))

    def __array__(self, dtype=None, copy=None):
        out = self._rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(len(rows), self.row_bytes)
        # Read straight into the result, one system call per run of consecutive rows (a whole
        # batch of an unshuffled split is one read).
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
        for a, b in zip(starts, [*starts[1:], len(rows)]):
            view = memoryview(flat[a:b]).cast("B")
            offset = self.offset + int(rows[a]) * self.row_bytes
            while len(view):
                got = os.preadv(self._fd, [view], offset)
                if got <= 0:
                    raise DataError(f"{self.path} is shorter than its header says; delete it to decode again")
                view, offset = view[got:], offset + got
        return out


class _RowWriter:
    """Writes rows of a new ``.npy`` file with ``pwrite`` (from several threads)."""

    def __init__(self, path: str, shape: tuple):
        self.shape = shape
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
            self.offset = fh.tell()
        self.row_bytes = int(np.prod(shape[1:]))
        self._fd = os.open(path, os.O_RDWR)
        os.ftruncate(self._fd, self.offset + self.row_bytes * shape[0])

    def __setitem__(self, i: int, row: np.ndarray) -> None:
        write_at(self._fd, np.ascontiguousarray(row, dtype=np.uint8), self.offset + i * self.row_bytes)

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)


def decode_images(
    paths: list[Path],
    image_size,
    *,
    interpolation: str = "bilinear",
    fit: str = DEFAULT_FIT,
    cache_mode: str = "disk",
    cache_folder: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    ready=None,
):
    """All ``paths`` decoded and resized, as ``(N, H, W, 3)`` uint8 (``None`` in ``paths``: a row
    left black): a numpy array in memory, or a
    :class:`DiskArray` over a ``.npy`` file in ``cache_folder`` (``cache_mode="disk"``) that later
    calls and processes reuse without decoding.

    ``ready[i]`` (a sequence of arrays or ``None``), where not ``None``, is image ``i`` already
    decoded with these options (by the scan, see :func:`~imgclf.data.scan.scan`): it is
    copied, not decoded again."""
    check_options(image_size, interpolation, fit, cache_mode)
    h, w = as_size(image_size)
    shape = (len(paths), h, w, 3)
    if ready is not None and len(ready) != len(paths):
        raise ValueError(f"ready has {len(ready)} entries for {len(paths)} paths")
    if cache_mode != "disk" or cache_folder is None:
        out = (np.zeros if any(p is None for p in paths) else np.empty)(shape, dtype=np.uint8)
        _decode_into(out, paths, image_size, interpolation, fit, workers, progress, ready)
        return out
    folder = Path(cache_folder)
    # named by each file's state now, just before it is read (not as some scan found it)
    target = folder / f"{decode_key(paths, image_size, interpolation, fit)}.npy"
    wait_for(target)  # a cache this process is still giving its name
    if target.is_file():
        try:
            arr = DiskArray(target)
            if arr.shape == shape:
                return arr
        except (ValueError, OSError):
            pass  # damaged: decode again
    folder.mkdir(parents=True, exist_ok=True)
    remove_partial(folder, STALE_AFTER_S)  # what killed runs left half-written in the shared cache
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}decoding.", suffix=".npy", dir=folder)
    os.close(fd)
    try:
        writer = _RowWriter(tmp, shape)
        # read through a descriptor of its own: should another run take the file for a dead
        # run's leftover and remove it (this process stopped for over an hour), the rows are
        # still here
        reader = DiskArray(tmp, name=target)
        try:
            _decode_into(writer, paths, image_size, interpolation, fit, workers, progress, ready)
        finally:
            writer.close()
        try:
            os.replace(tmp, target)
        except FileNotFoundError:
            warnings.warn(f"could not keep the decoded images as {target}: their temporary file was removed "
                          "meanwhile; the next run decodes them again", RuntimeWarning, stacklevel=2)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return reader


def make_dataset(
    images: "np.ndarray | DiskArray | None",
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    num_classes: int | None = None,
    one_hot: bool = False,
    paths: list[Path] | None = None,
    image_size=None,
    interpolation: str = "bilinear",
    fit: str = DEFAULT_FIT,
    shard: tuple[int, int] | None = None,
    repeat: bool = False,
    dtype: str = "uint8",
):
    """A ``tf.data.Dataset`` of ``(images in 0..255, labels)`` batches.

    Images are ``uint8`` by default, as cached: a Keras model casts them to its input's
    dtype in its first step (on the accelerator, where there is one), so the pipeline moves
    a quarter of the bytes float32 would. ``dtype="float32"`` converts them here instead.
    ``images`` is the decoded array (rows picked by ``indices``); with ``images=None`` every
    element is decoded from ``paths`` on the fly (no cache), in parallel.
    ``shard=(num_workers, worker_index)`` keeps one worker's share.

    On the TensorFlow backend this is a ``tf.data.Dataset``; on JAX and PyTorch a
    ``keras.utils.PyDataset`` of the same batches (:mod:`imgclf.data.loader`), no TensorFlow
    needed.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if dtype not in ("uint8", "float32"):
        raise ConfigError(f"images come as uint8 or float32, not {dtype!r}")
    if not backend.is_tensorflow():
        if shard is not None or repeat:
            backend.require_tensorflow_backend("a sharded, repeated input pipeline (multi-worker training)")
        decode_one = None
        if images is None:
            h, w = as_size(image_size)

            def decode_one(row):
                return load_image(paths[row], (h, w), interpolation=interpolation, fit=fit)

        return loader.image_batches(images, labels, indices, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                    num_classes=num_classes, one_hot=one_hot, dtype=dtype, decode_one=decode_one)
    import tensorflow as tf

    labels = np.asarray(labels, dtype=np.int32)
    idx = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64))
    if shard is not None:
        idx = idx.shard(*shard)
    if shuffle:
        idx = idx.shuffle(max(1, len(indices)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        idx = idx.repeat()
    h, w = images.shape[1:3] if images is not None else as_size(image_size)

    label_table = tf.constant(labels)

    def finish(x, y):
        x.set_shape((None, h, w, 3))
        if dtype != "uint8":
            x = tf.cast(x, dtype)
        if one_hot:
            y = tf.one_hot(y, num_classes)
        return x, y

    if images is not None:

        def gather(batch):
            return np.ascontiguousarray(images[batch])

        # one parallel stage per batch: the rows read in Python, the labels looked up in TF
        ds = idx.batch(batch_size).map(
            lambda b: finish(tf.numpy_function(gather, [b], tf.uint8, stateful=False), tf.gather(label_table, b)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return _lean(ds.prefetch(tf.data.AUTOTUNE))
    else:
        path_list = [os.fspath(p) if p is not None else "" for p in paths]  # None: a bad file, never read

        def decode(i):
            return load_image(path_list[int(i)], (h, w), interpolation=interpolation, fit=fit), labels[int(i)]

        ds = idx.map(
            lambda i: tf.numpy_function(decode, [i], (tf.uint8, tf.int32), stateful=False),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).batch(batch_size).map(lambda x, y: (x, tf.ensure_shape(y, (None,))))

    return _lean(ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def _lean(ds):
    """``ds`` without tf.data's default graph rewrites: a pipeline this small (already parallel
    and prefetched) gains nothing from them, and rewriting it costs tens of milliseconds each
    time an iterator is made, which is every epoch of every split."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return ds.with_options(options)
