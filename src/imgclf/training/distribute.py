"""Which ``tf.distribute`` strategy (or Keras distribution) a run trains under.

``auto`` takes ``MirroredStrategy`` when more than one GPU is visible and the default
strategy otherwise; ``mirrored`` insists on it; ``multi-worker`` uses
``MultiWorkerMirroredStrategy``, configured by ``TF_CONFIG`` or by ``--workers
host:port,...`` and ``--worker-index i`` (which write ``TF_CONFIG`` for you); ``none`` is the
default strategy. Only the chief (worker 0) writes the run folder, except that each worker
writes its own shard of a frozen backbone's features into its ``cache/`` (training/features.py).

On JAX, ``auto`` and ``mirrored`` take ``keras.distribution.DataParallel`` over the local
devices when there is more than one (each batch split across them, the weights replicated);
``multi-worker`` is TensorFlow's only. On PyTorch a run trains on one device (``none``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from .. import backend
from ..errors import ConfigError


@dataclass
class Distribution:
    strategy: object  # a tf.distribute.Strategy
    name: str  # "none", "mirrored" or "multi-worker"
    num_workers: int = 1
    worker_index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def distributed(self) -> bool:
        return self.name != "none"

    def scope(self):
        return self.strategy.scope()


def tf_config_from_workers(workers: str | list[str], index: int) -> dict:
    hosts = [w.strip() for w in (workers.split(",") if isinstance(workers, str) else workers) if w.strip()]
    if not hosts:
        raise ConfigError("--workers needs at least one host:port")
    for h in hosts:
        host, sep, port = h.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"worker address {h!r} is not host:port")
    if not 0 <= index < len(hosts):
        raise ConfigError(f"--worker-index must be between 0 and {len(hosts) - 1}, got {index}")
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def read_tf_config() -> dict | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        index = int(cfg["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"TF_CONFIG is not valid ({e}); see the README section on scaling") from None
    if cfg["task"].get("type", "worker") not in ("worker", "chief"):
        raise ConfigError("TF_CONFIG task type must be 'worker' (imgclf treats worker 0 as chief)")
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}


class _OneDevice:
    """No strategy: what ``tf.distribute.get_strategy()`` is, on the other backends."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


class _KerasDistribution:
    """A ``keras.distribution`` (JAX's data parallelism) behind the strategy interface."""

    def __init__(self, distribution, replicas: int):
        self.distribution = distribution
        self.num_replicas_in_sync = replicas

    def scope(self):
        return self.distribution.scope()


def _choose_other(name: str) -> Distribution:
    """JAX and PyTorch: one device, or (JAX) ``DataParallel`` over the local devices."""
    if name == "multi-worker":
        backend.require_tensorflow_backend("--strategy multi-worker (tf.distribute)")
    devices = []
    if backend.name() == "jax":
        import keras

        devices = keras.distribution.list_devices()
    if name == "auto":
        name = "mirrored" if len(devices) > 1 else "none"
    if name == "none":
        return Distribution(_OneDevice(), "none")
    if name == "mirrored":
        if backend.name() != "jax":
            raise ConfigError(f"--strategy mirrored needs the TensorFlow or JAX backend (Keras backend here: "
                              f"{backend.name()}); use --strategy none")
        import keras

        return Distribution(_KerasDistribution(keras.distribution.DataParallel(devices=devices), len(devices)),
                            "mirrored")
    raise ConfigError(f"unknown strategy {name!r}; choose one of: auto, none, mirrored, multi-worker")


def choose(name: str = "auto", *, workers: str | list[str] | None = None, worker_index: int | None = None) -> Distribution:
    if not backend.is_tensorflow():
        if workers is not None:
            backend.require_tensorflow_backend("--workers (multi-worker training with tf.distribute)")
        return _choose_other(name)
    import tensorflow as tf

    if workers is not None:
        if worker_index is None:
            raise ConfigError("--workers needs --worker-index (0 for the chief, 1, 2, ... for the others)")
        if name not in ("auto", "multi-worker"):
            raise ConfigError(f"--workers needs --strategy multi-worker (or auto), not {name}")
        os.environ["TF_CONFIG"] = json.dumps(tf_config_from_workers(workers, worker_index or 0))
        name = "multi-worker" if name in ("auto", "multi-worker") else name
    if name == "auto":
        if read_tf_config() is not None:
            name = "multi-worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "none"
    if name == "none":
        return Distribution(tf.distribute.get_strategy(), "none")
    if name == "mirrored":
        return Distribution(tf.distribute.MirroredStrategy(), "mirrored")
    if name == "multi-worker":
        cfg = read_tf_config()
        if cfg is None:
            raise ConfigError("--strategy multi-worker needs TF_CONFIG or --workers host:port,... --worker-index i")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Distribution(strategy, "multi-worker", num_workers=len(cfg["cluster"]["worker"]),
                            worker_index=cfg["task"]["index"])
    raise ConfigError(f"unknown strategy {name!r}; choose one of: auto, none, mirrored, multi-worker")
