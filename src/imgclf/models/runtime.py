"""Where a Keras model runs: Keras itself (TensorFlow) or ONNX Runtime, behind one interface.

    rt = choose_runtime("auto", model, cache_dir=run.cache_dir, key=..., check=images)
    rt.run(images)        # float32 (N, S, S, 3), values 0..255 -> np.ndarray (N, ...)
    rt.info               # what was asked, what runs, and why (recorded with a run)

On a CPU, ONNX Runtime runs a frozen MobileNetV2 about four times as fast as TensorFlow
(bench/backbone_speed.py). The model is converted with tf2onnx (opset 17) once per ``key``
into ``cache_dir``, loaded on the CPU provider, and trusted only after it agrees with Keras on
a batch of ``check`` images. Whatever goes wrong on the way (ONNX Runtime not installed
under ``auto``, no CPU provider, a model tf2onnx cannot convert, a failed check) ends in one
warning and the Keras runtime; only ``onnxruntime`` asked by name with the package missing is
an error.

``auto``: Keras when TensorFlow sees a GPU; on a CPU, ONNX Runtime when a converted model is
already cached, or when the work to do is large enough to pay for the conversion (about 5 s
for MobileNetV2: ``work`` of at least :data:`AUTO_MIN_WORK` images at 160x160, counted in
proportion to their pixels), else Keras.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .. import backend, io
from ..config import RUNTIMES
from ..errors import ConfigError, RuntimeFallbackWarning, RuntimeUnavailableError, first_line

OPSET = 17
INPUT_NAME = "image"
INSTALL_HINT = "pip install onnxruntime tf2onnx onnx (or pip install imgclf, which brings them)"
# Break-even of the conversion (measured on 2 cores, MobileNetV2 0.35 at 160x160): converting
# takes about 5 s and saves about 4 ms per image, so it pays from about a thousand images.
AUTO_MIN_WORK = 1000
AUTO_REFERENCE_SIZE = 160
# intra-op threads of an ONNX Runtime session: half the cores. On a shared 2-core machine one
# thread ran MobileNetV2 0.35 1.1-1.6x as fast as two and 1.7-2x as fast as ONNX Runtime's
# default (one per core, spinning), in every round of bench/backbone_speed.py (see the README).
DEFAULT_THREADS: int | None = max(1, (os.cpu_count() or 2) // 2)

_warned: set[str] = set()


class Runtime:
    """Runs a model on a batch of float32 images ``(N, S, S, 3)``, values 0..255."""

    name = "keras"

    def __init__(self) -> None:
        self.info: dict = {"runtime": self.name}

    def run(self, images) -> np.ndarray:
        raise NotImplementedError


class KerasRuntime(Runtime):
    """``model(x, training=False)`` as one traced function (any batch size, one trace) on
    TensorFlow; the backend's own compiled ``predict_on_batch`` on JAX and PyTorch."""

    name = "keras"

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        if not backend.is_tensorflow():
            self._fn = model.predict_on_batch
            return
        import tensorflow as tf

        shape = tuple(model.input_shape[1:])
        self._fn = tf.function(lambda x: model(x, training=False),
                               input_signature=[tf.TensorSpec((None, *shape), tf.float32)])

    def run(self, images) -> np.ndarray:
        return np.asarray(self._fn(np.asarray(images, np.float32)))


class OnnxRuntime(Runtime):
    """An ONNX Runtime session on the CPU provider."""

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike | bytes, threads: int | None = DEFAULT_THREADS) -> None:
        ort = _import_onnxruntime()
        super().__init__()
        if "CPUExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("this ONNX Runtime build has no CPU execution provider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def run(self, images) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        return self.session.run([self._output], {self._input: x})[0]


# -- conversion ------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_stderr():
    """Keep converter chatter (C++ logs on fd 2) off the terminal; on failure, show it."""
    if os.environ.get("IMGCLF_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if failed:
            log.seek(0)
            tail = log.read()[-4000:].decode("utf-8", "replace")
            if tail.strip():
                print(tail, file=sys.stderr)
        log.close()


def to_onnx(model, input_shape, *, opset: int = OPSET):
    """The ONNX ``ModelProto`` of ``model(image, training=False)`` for float32 inputs of
    ``input_shape`` (batch dimension free). Raises tf2onnx's exception if it cannot convert."""
    import logging

    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = [tf.TensorSpec((None, *tuple(input_shape)), tf.float32, name=INPUT_NAME)]
    fn = tf.function(lambda image: model(image, training=False), input_signature=spec, autograph=False)
    try:
        with quiet_stderr():
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception:
        # tf2onnx 1.17 still uses numpy<2 idioms in some rewriters; Keras ships a patch for them.
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
        with quiet_stderr():
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    return proto


def cache_key(parts: dict) -> str:
    """A file-name-safe key of ``parts`` and of the converter's versions."""
    versions = {}
    for name in ("tf2onnx", "onnx"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    blob = json.dumps({**parts, "opset": OPSET, "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def file_stamp(path) -> str | None:
    """``path`` with its size and modification time, so that a changed file gets a new key."""
    if path and os.path.exists(path):
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    return path


def _import_onnxruntime():
    import onnxruntime

    return onnxruntime


def onnxruntime_missing() -> str | None:
    """The name of the first package the ONNX Runtime path lacks, or ``None``."""
    import importlib.util

    for name in ("onnxruntime", "tf2onnx", "onnx"):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    try:
        _import_onnxruntime()
    except ImportError:
        return "onnxruntime"
    return None


def has_gpu() -> bool:
    return backend.has_gpu()


def check_name(name: str | None) -> str:
    name = "auto" if name is None else str(name).lower().replace("-", "").replace("_", "")
    name = {"ort": "onnxruntime", "onnx": "onnxruntime", "tf": "keras", "tensorflow": "keras"}.get(name, name)
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; choose one of: {', '.join(RUNTIMES)}")
    return name


def require_runtime(name: str | None) -> None:
    """:class:`RuntimeUnavailableError` (one line, what to install) when ``name`` is
    ``onnxruntime`` and a package it needs is missing; nothing otherwise."""
    if check_name(name) != "onnxruntime":
        return
    missing = onnxruntime_missing()
    if missing is not None:
        raise RuntimeUnavailableError(f"--runtime onnxruntime needs {missing}, which is not installed: {INSTALL_HINT}")
    if not backend.is_tensorflow():
        raise RuntimeUnavailableError(f"--runtime onnxruntime converts with tf2onnx, which needs the TensorFlow "
                                      f"backend (this is {backend.name()}); set KERAS_BACKEND=tensorflow or use "
                                      "--runtime keras")


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeFallbackWarning, stacklevel=3)


def choose_runtime(name: str | None, model, *, cache_dir: str | os.PathLike | None, key: dict, check,
                   tolerance: float, what: str = "the model", work: float | None = None,
                   threads: int | None = DEFAULT_THREADS, export_model=None) -> Runtime:
    """The runtime ``name`` asks for, for Keras ``model`` (see the module's docstring).

    ``key``: everything the converted model depends on (it names the cached ``.onnx`` file in
    ``cache_dir``; ``None`` keeps it in memory). ``check``: images the ONNX model must agree on
    with Keras within ``tolerance`` (largest absolute difference). ``work``: images to come, at
    the model's size (for ``auto``; ``None``: many). ``export_model``: a function returning the
    model to convert in place of ``model`` (the same function, say without its augmentation
    layers), called only if a conversion is needed. The returned runtime's ``info`` says what
    was asked, what runs, and why it is not ONNX Runtime when that was wanted.
    """
    name = check_name(name)
    keras_rt = KerasRuntime(model)

    def keras(reason: str | None = None, *, warn: bool = False) -> Runtime:
        keras_rt.info = {"requested": name, "runtime": "keras", "reason": reason}
        if warn:
            warn_once(f"ONNX Runtime is not used for {what}: {reason}; it runs on Keras")
        return keras_rt

    if name == "keras":
        return keras()
    if name == "auto" and has_gpu():
        return keras("a GPU is present: Keras runs on it")
    if name == "auto" and not backend.is_tensorflow():
        return keras(f"the {backend.name()} backend: the conversion (tf2onnx) needs TensorFlow's")
    size = int(model.input_shape[1])
    path = Path(cache_dir) / f"onnx-{cache_key(key)}.onnx" if cache_dir is not None else None
    cached = path is not None and path.is_file()
    if name == "auto" and not cached and work is not None:
        scaled = work * (size / AUTO_REFERENCE_SIZE) ** 2
        if scaled < AUTO_MIN_WORK:
            return keras(f"too little work ({work:g} images at {size}x{size}) to pay for the conversion; "
                         "--runtime onnxruntime converts anyway")
    missing = onnxruntime_missing()
    if missing is not None:
        require_runtime(name)
        return keras(f"{missing} is not installed ({INSTALL_HINT})", warn=True)
    try:
        if cached:
            source = path
        else:
            proto = to_onnx(export_model() if export_model is not None else model, model.input_shape[1:])
            source = proto.SerializeToString()
            if path is not None:
                try:
                    io.write_bytes(path, source)
                except OSError:  # a read-only run folder: the session is made from memory
                    path = None
        rt = OnnxRuntime(source, threads=threads)
    except Exception as e:  # noqa: BLE001 - any failure of the optional path hands over to Keras
        if isinstance(e, ImportError):
            return keras(f"ONNX Runtime cannot be loaded ({first_line(e, 160)})", warn=True)
        return keras(f"{'loading' if cached else 'converting'} it failed ({first_line(e, 160)})", warn=True)
    check = np.asarray(check, np.float32)
    diff = float(np.abs(rt.run(check) - keras_rt.run(check)).max()) if len(check) else 0.0
    if not diff <= tolerance:  # NaN fails too
        return keras(f"the converted model disagrees with Keras by {diff:.2g} (over {tolerance:g}) "
                     f"on {len(check)} images", warn=True)
    rt.info = {"requested": name, "runtime": "onnxruntime", "reason": None,
               "model_file": str(path) if path is not None else None, "converted": not cached,
               "parity_max_abs_diff": diff, "parity_images": int(len(check)), "tolerance": tolerance,
               "intra_op_threads": threads or "default"}
    return rt


__all__ = ["AUTO_MIN_WORK", "DEFAULT_THREADS", "KerasRuntime", "OPSET", "OnnxRuntime", "RUNTIMES", "Runtime",
           "cache_key", "check_name", "choose_runtime", "file_stamp", "has_gpu", "onnxruntime_missing",
           "quiet_stderr", "require_runtime", "to_onnx"]
