"""imgclf: from a folder of labelled images to a trained, evaluated, exported classifier.

    import imgclf
    ds = imgclf.load_dataset("path/to/images")          # scan, split, decode once
    run = imgclf.train(ds, model="mobilenet_v2", epochs=10)
    run.evaluate()                                       # metrics + figures in the run folder
    run.plot_history()                                   # a matplotlib Figure (inline in notebooks)

This module is the composition root: it re-exports the public API and attaches the
conveniences (``run.evaluate()``, ``run.predict()``, ``ds.audit()``, ...) to the classes of the
lower layers, which know nothing of the stages above them.
"""

from .audit import audit as _audit
from .config import DataConfig, StudyConfig, TrainConfig
from .data import ImageDataset, load_dataset, load_image
from .data.dataset import run_dataset
from .errors import ConfigError, DataError, ImgclfError, RunError, WeightsError
from .evaluation import evaluate_run
from .explain import explain as _explain
from .inference.export import export as _export
from .inference.predict import predict as _predict
from .models import build_model, list_models
from .report.study import study
from .run import Run, load
from .training import resume, train
from .version import __version__

# (the names imgclf.audit and imgclf.explain stay the modules'; their functions are attached)
Run.dataset = run_dataset
Run.evaluate = evaluate_run
Run.explain = _explain
Run.predict = _predict
Run.export = _export
ImageDataset.audit = _audit


def evaluate(run, split: str = "test", **options) -> dict:
    """Evaluate a run folder (or :class:`Run`) on one of its splits."""
    return evaluate_run(run if isinstance(run, Run) else load(run), split, **options)


__all__ = [
    "ConfigError", "DataConfig", "DataError", "ImageDataset", "ImgclfError", "Run", "RunError", "StudyConfig",
    "TrainConfig", "WeightsError", "__version__", "build_model", "evaluate", "list_models", "load",
    "load_dataset", "load_image", "resume", "study", "train",
]
