"""Typed options for a training run, validated at the door and saved resolved with every run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError, RunError

CONFIG_FORMAT = 1
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
KEEP = ("best", "last")  # imgclf.training.keep
TRACKERS = ("tensorboard", "mlflow")
RUNTIMES = ("auto", "keras", "onnxruntime")  # imgclf.models.runtime


@dataclass
class DataConfig:
    """Where the images come from and how they are brought to the input size."""

    source: str | None = None  # what the user gave (folder, archive, URL, name)
    root: str | None = None  # the resolved local folder
    validation: float = 0.2
    test: float = 0.1
    seed: int = 42
    fit: str = "crop"  # imgclf.data.images.DEFAULT_FIT
    interpolation: str = "bilinear"
    cache_mode: str = "disk"
    # reviewed lists applied (as given; the run folder's review/ holds what they changed)
    exclude: str | None = None
    relabel: str | None = None


@dataclass
class TrainConfig:
    """Every option of a training run. ``None`` means "the model's default"."""

    model: str = "mobilenet_v2"
    epochs: int = 10
    batch_size: int = 32
    image_size: int | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    label_smoothing: float | None = None  # default: 0.1 for transfer models, 0 for the CNNs
    class_weight: str | None = None  # None or "balanced"
    early_stopping: int | None = None  # patience in epochs, on validation loss
    fine_tune: int = 0  # unfreeze this many top backbone layers after the head is trained
    fine_tune_epochs: int | None = None  # default: half of ``epochs``
    # Fine-tuning runs at this fraction of ``learning_rate``. The head trains on cached features
    # at 1e-3 (ten times the Keras tutorial's 1e-4, as its epochs are cheap), so a hundredth of
    # that is the tutorial's "a tenth of the base rate", 1e-5; a tenth of 1e-3 undoes the head's
    # progress on small datasets (measured on cats_and_dogs_filtered).
    fine_tune_lr_factor: float = 0.01
    seed: int = 42
    deterministic: bool = False
    alpha: float | None = None
    weights: str | None = "imagenet"
    augment: Any = "default"  # "default", None, or an AugmentConfig dict
    dropout: float | None = None
    hidden_units: int = 0  # transfer models: a Dense(relu) layer of this width before the classifier
    weight_decay: float | None = None  # decoupled weight decay; None: the optimizer's default
    pooling: str = "avg"
    # fit a temperature on the validation split after training and build it into the saved
    # model, unless it raises the validation ECE (imgclf.calibration)
    calibrate: bool = True
    feature_cache: bool = True  # train a frozen backbone's head on cached features
    views: int = 2  # cached views per image when augmenting: the plain image and one augmented view
    # where the frozen backbone's feature pass runs: "auto" (ONNX Runtime on a CPU when it pays,
    # Keras on a GPU), "keras" or "onnxruntime" (imgclf.models.runtime)
    runtime: str = "auto"
    # "auto": bfloat16 compute (float32 weights) for models trained end to end from scratch
    # on a CPU with native bfloat16 (AVX512-BF16 or AMX; about twice as fast there), float32
    # otherwise. Resolved when a run starts and recorded; the saved model is float32 always.
    precision: str = "auto"
    jit: bool = False
    strategy: str = "auto"
    # each stage ends with the weights of its best validation epoch ("best"), or its last ("last")
    keep: str = "best"
    track: list = field(default_factory=list)  # experiment trackers: "tensorboard", "mlflow"
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> "TrainConfig":
        def positive(name, value, minimum=1):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")

        positive("epochs", self.epochs)
        positive("batch size", self.batch_size)
        positive("views", self.views)
        positive("fine-tune layers", self.fine_tune, 0)
        if self.fine_tune_epochs is not None:
            positive("fine-tune epochs", self.fine_tune_epochs)
        if self.image_size is not None:
            positive("image size", self.image_size, 8)
        if self.early_stopping is not None:
            positive("early-stopping patience", self.early_stopping)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 10):
            raise ConfigError(f"learning rate must be a number in (0, 10), got {self.learning_rate!r}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (isinstance(self.fine_tune_lr_factor, (int, float)) and 0 < self.fine_tune_lr_factor <= 1):
            raise ConfigError(f"fine-tune learning-rate factor must be in (0, 1], got {self.fine_tune_lr_factor!r}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"class weight must be 'balanced' or none, got {self.class_weight!r}")
        if self.pooling not in ("avg", "max"):
            raise ConfigError(f"pooling must be 'avg' or 'max', got {self.pooling!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.keep not in KEEP:
            raise ConfigError(f"keep must be one of: {', '.join(KEEP)}; got {self.keep!r}")
        positive("hidden units", self.hidden_units, 0)
        if self.weight_decay is not None and not (isinstance(self.weight_decay, (int, float))
                                                  and 0 <= self.weight_decay < 1):
            raise ConfigError(f"weight decay must be a number in [0, 1), got {self.weight_decay!r}")
        if isinstance(self.track, str):
            self.track = [t.strip() for t in self.track.split(",") if t.strip()]
        for t in self.track:
            if t not in TRACKERS:
                raise ConfigError(f"unknown tracker {t!r}; choose from: {', '.join(TRACKERS)}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {self.runtime!r}; choose one of: {', '.join(RUNTIMES)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of: {', '.join(STRATEGIES)}")
        return self

    @property
    def total_fine_tune_epochs(self) -> int:
        if not self.fine_tune:
            return 0
        return self.fine_tune_epochs if self.fine_tune_epochs is not None else max(1, self.epochs // 2)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> "TrainConfig":
        return _from_dict(cls, d, where).validate()


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise RunError(f"{where} is not a JSON object; was it edited by hand?")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise RunError(f"{where}: unknown option {unknown[0]!r} (edited by hand, or written by another imgclf version)")
    kwargs = {}
    for name, value in d.items():
        if name == "data":
            value = _from_dict(DataConfig, value, f"{where}: data")
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise RunError(f"{where}: {e}") from None
    return obj
