"""imgclf: from a folder of labelled images to a trained, evaluated, exported classifier.

    import imgclf
    ds = imgclf.load_dataset("path/to/images")          # scan, split, decode once
    run = imgclf.train(ds, model="mobilenet_v2", epochs=10)
    run.evaluate()                                       # metrics + figures in the run folder
    run.plot_history()                                   # a matplotlib Figure (inline in notebooks)
"""

__version__ = "0.1.0"

from .data import ImageDataset, load_dataset, load_image  # noqa: E402
from .errors import ConfigError, DataError, ImgclfError, RunError, WeightsError  # noqa: E402
from .run import Run, load  # noqa: E402


def train(data=None, model: str = "mobilenet_v2", **options) -> Run:
    """Train ``model`` on ``data`` (an :class:`ImageDataset` or anything :func:`load_dataset` takes)."""
    from .training import train as _train

    return _train(data, model, **options)


def resume(run, **options) -> Run:
    """Carry on an interrupted run."""
    from .training import resume as _resume

    return _resume(run, **options)


def build_model(name: str, num_classes: int, image_size=None, **options):
    """Build a registry model (see :func:`list_models`)."""
    from .models import build_model as _build

    return _build(name, num_classes, image_size, **options)


def study(data=None, **options):
    """Train and compare several models on one dataset and write the report (see ``imgclf study``)."""
    from .report.study import study as _study

    return _study(data, **options)


def list_models():
    from .models import list_models as _list

    return _list()


def evaluate(run, split: str = "test", **options) -> dict:
    """Evaluate a run folder (or :class:`Run`) on one of its splits."""
    return (run if isinstance(run, Run) else load(run)).evaluate(split, **options)


__all__ = [
    "ConfigError", "DataError", "ImageDataset", "ImgclfError", "Run", "RunError", "WeightsError",
    "__version__", "build_model", "evaluate", "list_models", "load", "load_dataset", "load_image",
    "resume", "study", "train",
]
