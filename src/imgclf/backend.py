"""Which Keras backend imgclf runs on, and what it can do there.

Keras 3 runs the same models on TensorFlow, JAX or PyTorch. The backend is Keras' own
choice: ``KERAS_BACKEND``, else ``backend`` in ``$KERAS_HOME/keras.json`` (``~/.keras``),
else TensorFlow. imgclf reads it here, before Keras is imported, so that a backend that is
not installed is one line naming the package to install rather than a traceback. Everything
else in imgclf asks this module, not the environment: which backend, its version, whether
TensorFlow can be imported (SavedModel, TFLite, tf.distribute and TensorBoard need it
whatever the backend), and :func:`require_tensorflow` for the paths that need it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys

import numpy as np

from .errors import BackendError

BACKENDS = ("tensorflow", "jax", "torch")
# what imports each backend, and the distribution (and imgclf extra) that installs it
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
DISTRIBUTIONS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
DEFAULT = "tensorflow"  # Keras' own default, and the fastest of the three on CPU (README: Backends)


def _keras_json() -> dict:
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as fh:
            config = json.load(fh)
        return config if isinstance(config, dict) else {}
    except (OSError, ValueError):
        return {}


def name() -> str:
    """The backend Keras runs on (or will run on, once imported), e.g. ``"jax"``."""
    if "keras" in sys.modules:
        try:
            return sys.modules["keras"].backend.backend()
        except AttributeError:  # keras half imported
            pass
    chosen = os.environ.get("KERAS_BACKEND") or _keras_json().get("backend") or DEFAULT
    return str(chosen).strip().lower()


def installed(backend: str) -> bool:
    module = MODULES.get(backend)
    return module is not None and importlib.util.find_spec(module) is not None


def available() -> list[str]:
    """The backends importable here."""
    return [b for b in BACKENDS if installed(b)]


def version(backend: str | None = None) -> str | None:
    backend = backend or name()
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(backend, backend))
    except importlib.metadata.PackageNotFoundError:
        return None


def has_tensorflow() -> bool:
    """Whether TensorFlow can be imported (whatever the backend)."""
    return installed("tensorflow")


def is_tensorflow() -> bool:
    return name() == "tensorflow"


def _install_hint(backend: str) -> str:
    return f"pip install 'imgclf[{backend}]'" if backend in BACKENDS else "pip install 'imgclf[tensorflow]'"


def check() -> str:
    """The backend, after checking that it is one Keras knows and that it is installed."""
    backend = name()
    if backend not in BACKENDS:
        raise BackendError(f"KERAS_BACKEND={backend!r} is not a backend imgclf runs on; "
                           f"set it to one of {', '.join(BACKENDS)} (installed here: {', '.join(available()) or 'none'})")
    if not installed(backend):
        others = [b for b in available() if b != backend]
        instead = f", or set KERAS_BACKEND to {' or '.join(others)}" if others else ""
        raise BackendError(f"the Keras backend {backend} is not installed; {_install_hint(backend)}{instead}")
    return backend


def describe() -> str:
    """``"jax 0.9.2"``: the backend and its version (``"jax (not installed)"``)."""
    backend = name()
    v = version(backend) if backend in BACKENDS else None
    return f"{backend} {v}" if v else f"{backend} (not installed)"


def versions() -> str:
    """``"Keras 3.15.1, backend jax 0.9.2"``, read without importing either."""
    try:
        keras_version = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        keras_version = "not installed"
    return f"Keras {keras_version}, backend {describe()}"


def require_tensorflow(what: str):
    """TensorFlow, imported; or a one-line :class:`BackendError` saying ``what`` needs it."""
    if not has_tensorflow():
        raise BackendError(f"{what} needs TensorFlow, which is not installed (Keras backend: {name()}); "
                           "pip install 'imgclf[tensorflow]'")
    return importlib.import_module("tensorflow")


def require_tensorflow_backend(what: str) -> None:
    """A one-line :class:`BackendError` unless Keras runs on TensorFlow (``what`` needs it)."""
    if not is_tensorflow():
        raise BackendError(f"{what} runs on the TensorFlow backend only (Keras backend here: {name()}); "
                           "run it with KERAS_BACKEND=tensorflow (pip install 'imgclf[tensorflow]')")


def has_gpu() -> bool:
    """Whether the backend sees a GPU."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def enable_determinism() -> None:
    """Deterministic kernels where the backend can be asked for them (JAX's CPU and GPU
    kernels are deterministic by default)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)


def numpy(tensor):
    """A backend tensor (a model's output) as a numpy array (a PyTorch one detached first)."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
    return np.asarray(tensor)


def steps_per_execution(wanted: int) -> int:
    """``wanted`` training steps per call where the backend runs several (PyTorch runs one)."""
    return 1 if name() == "torch" else wanted
