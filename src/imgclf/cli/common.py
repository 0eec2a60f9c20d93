"""What every command shares: quiet framework start-up, progress, the dataset, the run summary."""

from __future__ import annotations

import logging
import os
import sys

from .. import config
from ..calibration import describe as describe_calibration
from ..data import load_dataset
from ..errors import UsageError


def quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up chatter (oneDNN, CUDA probing) kept off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if "tensorflow" in sys.modules or os.environ.get("IMGCLF_TF_LOGS"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    except Exception:
        pass  # the command itself will import it again and report
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_python_logs() -> None:
    """TensorFlow's Python-side notices (retracing), absl's and tf2onnx's INFO lines stay off the terminal."""
    for name in ("tensorflow", "tf2onnx", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def progress(args) -> bool:
    return not getattr(args, "quiet", False)


def raise_usage(message: str):
    raise UsageError(message)


def add_data_options(p, *, data_required: bool = True, defaults: dict | None = None) -> None:
    """DATA, the options of :class:`~imgclf.config.DataConfig`, ``--image-size`` and ``--quiet``."""
    if data_required:
        p.add_argument("data", help="folder (one sub-folder per class, or train/ validation/ [test/]), "
                                    ".zip/.tar.gz, URL, or a known name (cats_and_dogs_filtered)")
    else:
        p.add_argument("data", nargs="?", default=None,
                       help="folder, archive, URL or known name (default: cats_and_dogs_filtered)")
    config.add_data_arguments(p, defaults=defaults)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def load(args, image_size: int | None = None):
    """The dataset the command line names, at ``--image-size`` (else ``image_size``, else 160)."""
    return load_dataset(args.data, config.data_from_args(args), image_size=args.image_size or image_size or 160,
                        progress=progress(args))


def print_metrics(run) -> None:
    m = run.metrics_record()
    parts = []
    for split in ("validation", "test"):
        scores = m.split(split)
        if scores is not None and scores.accuracy is not None:
            parts.append(f"{split} accuracy {scores.accuracy:.1%}")
    if m.baseline is not None and m.baseline.test_accuracy is not None:
        parts.append(f"majority baseline {m.baseline.test_accuracy:.1%}")
    print(f"run folder: {run.path}")
    if parts:
        print(", ".join(parts))
    if m.kept_epoch:
        print("kept      " + ", ".join(f"{stage.replace('_', '-')} stage: epoch {e}" for stage, e in m.kept_epoch.items())
              + (" (best validation accuracy)" if m.keep == "best" else " (last epoch)"))
    tuned = m.fine_tune
    if tuned is not None and tuned.validation_accuracy is not None:
        before, after = tuned.validation_accuracy.head, tuned.validation_accuracy.fine_tuned
        if tuned.kept:
            print(f"fine-tuning: validation accuracy {before:.1%} -> {after:.1%}")
        else:
            print(f"fine-tuning lowered validation accuracy ({before:.1%} -> {after:.1%}): "
                  "the model keeps the head stage's weights")
    if m.calibration is not None:
        print(f"calibration: {describe_calibration(m.calibration.to_dict())}")
