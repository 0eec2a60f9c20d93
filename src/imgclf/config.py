"""Every option of imgclf, typed, with its default, its check and its help, in one place.

An option is one field of :class:`DataConfig` (how images are found, split and brought to
size) or :class:`TrainConfig` (how a model is trained). Each field carries its check (a list
of allowed values or ranges, as scikit-learn's parameter constraints) and its help text; the
command line's arguments are generated from them (:func:`add_arguments`, :func:`from_args`),
``imgclf.train(ds, config)`` takes the object, and the resolved config is what a run folder
saves in ``config.json``. Adding an option is adding a field.
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Iterable

from .errors import ConfigError, RunError

CONFIG_FORMAT = 1
DEFAULT_SEED = 42
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
KEEP = ("best", "last")  # imgclf.training.keep
TRACKERS = ("tensorboard", "mlflow")
FITS = ("crop", "stretch", "pad")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos", "area")
CACHE_MODES = ("disk", "memory", "none")
RUNTIMES = ("auto", "keras", "onnxruntime")  # imgclf.models.runtime


# -- checks: what a field allows, said in one message form -------------------------------------

class Interval:
    """Numbers of ``kind`` (``int`` or ``float``) between ``low`` and ``high`` (``None``: unbounded)."""

    def __init__(self, kind: type, low=None, high=None, closed: str = "both"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def allows(self, value) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Real):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return low_ok and high_ok

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.high is None:
            return f"{what} >= {self.low}" if self.closed in ("both", "left") else f"{what} > {self.low}"
        if self.low is None:
            return f"{what} <= {self.high}" if self.closed in ("both", "right") else f"{what} < {self.high}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{what} in {left}{self.low}, {self.high}{right}"


class OneOf:
    """One of a fixed set of values."""

    def __init__(self, *choices):
        self.choices = choices

    def allows(self, value) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return "one of: " + ", ".join(map(str, self.choices))


class ListOf:
    """A list whose every item is one of ``choices`` (given as a comma-separated string too)."""

    def __init__(self, *choices):
        self.choices = choices

    def allows(self, value) -> bool:
        return isinstance(value, list) and all(v in self.choices for v in value)

    def describe(self) -> str:
        return "a comma-separated list to choose from: " + ", ".join(self.choices)


class Text:
    """Any string (a path, a name, a spec another module parses)."""

    def allows(self, value) -> bool:
        return isinstance(value, str)

    def describe(self) -> str:
        return "a string"


class Names:
    """A list of names (given as a comma-separated string too)."""

    def allows(self, value) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def describe(self) -> str:
        return "a comma-separated list of names"


class Anything:
    def allows(self, value) -> bool:
        return True

    def describe(self) -> str:
        return "anything"


class Boolean:
    def allows(self, value) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


def check(label: str, value, allowed: list) -> None:
    """Raise the one-line :class:`ConfigError` unless one of ``allowed`` (``None`` among them
    lets ``None`` through) allows ``value``."""
    if value is None and None in allowed:
        return
    rules = [a for a in allowed if a is not None]
    if any(rule.allows(value) for rule in rules):
        return
    said = " or ".join(rule.describe() for rule in rules) + (" (or none)" if None in allowed else "")
    if any(isinstance(rule, (OneOf, ListOf)) for rule in rules):  # a name: say it is not one of them
        raise ConfigError(f"unknown {label} {value!r}: {label} must be {said}")
    raise ConfigError(f"{label} must be {said}, got {value!r}")


# -- options: a dataclass field with its check, its help and its command-line form ---------------

@dataclass(frozen=True)
class Option:
    help: str
    allowed: tuple = (Anything(),)
    flags: tuple = ()  # command-line spellings; () means "--" + the name with dashes
    cli: bool = True  # False: set by imgclf itself, not an argument
    metavar: str | None = None
    group: str | None = None  # "data": offered with the data options of every command
    study: bool = True  # offered by `imgclf study` and `imgclf demo` too (for every model of it)
    convert: Any = None  # normalises what the user gave (a string from the command line) first
    show_default: bool = True  # say "(default X)" in the help
    label: str | None = None  # how messages name it (default: the name, spaces for underscores)
    transfer: bool = False  # applies to transfer models only (a study gives it to those alone)


def option(default, help: str, *allowed, **kwargs):
    """A config field: its default, its help text, what values it allows."""
    meta = Option(help=help, allowed=tuple(allowed) or (Anything(),), **kwargs)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"option": meta})
    return field(default=default, metadata={"option": meta})


def spec_of(f: dataclasses.Field) -> Option | None:
    return f.metadata.get("option")


def label(name: str) -> str:
    return name.replace("_", " ")


def _names(value) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; a list stays a list."""
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


def _weights(value):
    """``"none"`` or ``"random"`` -> ``None`` (random initialisation); a path as a string."""
    if isinstance(value, str) and value.strip().lower() in ("none", "random"):
        return None
    if hasattr(value, "__fspath__"):
        return str(value.__fspath__())
    return value


def _path(value):
    return str(value.__fspath__()) if hasattr(value, "__fspath__") else value


class _Validated:
    """Normalise (each field's ``convert``) and check every field."""

    def validate(self):
        for f in fields(self):
            spec = spec_of(f)
            if spec is None:
                continue
            value = getattr(self, f.name)
            if spec.convert is not None:
                value = spec.convert(value)
                setattr(self, f.name, value)
            check(spec.label or label(f.name), value, list(spec.allowed))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


POSITIVE = Interval(int, 1)
COUNT = Interval(int, 0)
FRACTION = Interval(float, 0, 1, closed="left")


@dataclass
class DataConfig(_Validated):
    """Where the images come from, how they are split and brought to the input size."""

    source: str | None = option(None, "what the user gave: folder, archive, URL or known name", None, Text(),
                                cli=False, convert=_path)
    root: str | None = option(None, "the resolved local folder", None, Text(), cli=False, convert=_path)
    data_path: str | None = option(None, "where a known dataset already lies (no download)", None, Text(),
                                   convert=_path)
    validation: float = option(0.2, "validation fraction (class-per-folder data)", FRACTION)
    test: float = option(0.1, "test fraction (class-per-folder data)", FRACTION)
    seed: int = option(DEFAULT_SEED, "seed for splits, shuffling and initialisation", Interval(int, 0))
    splits: str | None = option(None, "reuse the split lists in this folder (e.g. RUN/splits)", None, Text(),
                                convert=_path)
    classes: list | None = option(None, "use only these class folders, in this order", None, Names(),
                                  metavar="A,B,C", convert=_names)
    min_images: int = option(1, "leave out classes with fewer than N usable images (1: empty classes)", POSITIVE,
                             metavar="N", label="--min-images")
    fit: str = option("crop", "how to bring images to the input size: keep the aspect ratio and centre-crop "
                              "(crop), stretch (Keras' default) or pad", OneOf(*FITS))
    interpolation: str = option("bilinear", "resampling filter", OneOf(*INTERPOLATIONS))
    cache_mode: str = option("disk", "where decoded images are kept between epochs and runs",
                             OneOf(*CACHE_MODES), flags=("--cache",))
    cache: str | None = option(None, "imgclf cache folder (default $IMGCLF_CACHE or ~/.cache/imgclf)",
                               None, Text(), flags=("--cache-dir",), metavar="DIR", convert=_path)
    exclude: str | None = option(None, "leave out the files a reviewed list names (the audit's issues.csv with "
                                       "'drop' actions, or one path per line); nothing is moved or deleted",
                                 None, Text(), metavar="FILE", convert=_path)
    relabel: str | None = option(None, "give files another class: the audit's issues.csv with 'relabel:CLASS' "
                                       "actions, or 'path,CLASS' per line; the files stay where they are",
                                 None, Text(), metavar="FILE", convert=_path)


@dataclass
class TrainConfig(_Validated):
    """Every option of a training run. ``None`` means "the model's default"."""

    model: str = option("mobilenet_v2", "registry name (see `imgclf models`)", Text(), flags=("-m", "--model"),
                        show_default=False, study=False)
    epochs: int = option(10, "epochs (for transfer models: of the head)", POSITIVE)
    batch_size: int = option(32, "images per training step", POSITIVE)
    image_size: int | None = option(None, "square input size in pixels (default: the model's)", None,
                                    Interval(int, 8), group="data")
    optimizer: str = option("adam", "optimizer", OneOf(*OPTIMIZERS))
    learning_rate: float = option(1e-3, "learning rate", Interval(float, 0, 10, closed="neither"),
                                  flags=("--learning-rate", "--lr"))
    label_smoothing: float | None = option(None, "label smoothing (default: 0.1 for transfer models, 0 for the "
                                                 "CNNs)", None, FRACTION)
    class_weight: str | None = option(None, "weight classes by inverse frequency", None, OneOf("balanced"))
    early_stopping: int | None = option(None, "stop when validation loss stalls for PATIENCE epochs", None,
                                        POSITIVE, metavar="PATIENCE")
    fine_tune: int = option(0, "then unfreeze the top N backbone layers and train on", COUNT, metavar="N", transfer=True)
    fine_tune_epochs: int | None = option(None, "epochs of fine-tuning (default: half of --epochs)", None,
                                          POSITIVE, transfer=True)
    # Fine-tuning runs at this fraction of ``learning_rate``. The head trains on cached features
    # at 1e-3 (ten times the Keras tutorial's 1e-4, as its epochs are cheap), so a hundredth of
    # that is the tutorial's "a tenth of the base rate", 1e-5; a tenth of 1e-3 undoes the head's
    # progress on small datasets (measured on cats_and_dogs_filtered).
    fine_tune_lr_factor: float = option(0.01, "fine-tuning learning rate as a fraction of --learning-rate",
                                        Interval(float, 0, 1, closed="right"), transfer=True)
    seed: int = option(DEFAULT_SEED, "seed for shuffling and initialisation", Interval(int, 0), cli=False)
    deterministic: bool = option(False, "deterministic ops (slower)", Boolean())
    alpha: float | None = option(None, "MobileNet width multiplier", None, Interval(float, 0, closed="neither"),
                                 transfer=True)
    weights: str | None = option("imagenet", "backbone weights: imagenet, none, or an .h5 FILE", None, Text(),
                                 convert=_weights, transfer=True)
    augment: Any = option("default", "augmentation: 'none' or e.g. flip=horizontal,rotation=0.2,zoom=0.1 "
                                     "(default: the model's own)", show_default=False,
                          study=False)
    dropout: float | None = option(None, "dropout rate before the classifier", None, FRACTION)
    hidden_units: int = option(0, "transfer models: a Dense(relu) layer this wide before the classifier", COUNT,
                               transfer=True)
    weight_decay: float | None = option(None, "decoupled weight decay (default: the optimizer's)", None, FRACTION)
    pooling: str = option("avg", "how the backbone's feature map is pooled", OneOf("avg", "max"), transfer=True)
    # fit a temperature on the validation split after training and build it into the saved
    # model, unless it raises the validation ECE (imgclf.calibration)
    calibrate: bool = option(True, "fit a temperature on the validation split and build it into the saved "
                                   "model (kept only if it lowers validation ECE)", Boolean())
    feature_cache: bool = option(True, "train a frozen backbone's head on features computed once", Boolean(), transfer=True)
    views: int = option(2, "cached views per image for a frozen backbone when augmenting: the plain image and "
                           "augmented ones", POSITIVE, transfer=True)
    runtime: str = option("auto", "where the frozen backbone's feature pass runs: auto (ONNX Runtime on a CPU when "
                                  "it pays for its conversion, Keras on a GPU), keras or onnxruntime",
                          OneOf(*RUNTIMES), transfer=True)
    # "auto": bfloat16 compute (float32 weights) for models trained end to end from scratch
    # on a CPU with native bfloat16 (AVX512-BF16 or AMX; about twice as fast there), float32
    # otherwise. Resolved when a run starts and recorded; the saved model is float32 always.
    precision: str = option("auto", "compute precision (auto: bfloat16 for CNNs trained from scratch on CPUs "
                                    "with native bfloat16, else float32); the saved model is float32",
                            OneOf(*PRECISIONS))
    jit: bool = option(False, "compile with XLA", Boolean())
    strategy: str = option("auto", "distribution strategy", OneOf(*STRATEGIES))
    keep: str = option("best", "end each stage with the weights of its best validation epoch, or its last",
                       OneOf(*KEEP))
    track: list = option([], "log the run to TensorBoard (RUN/tensorboard/) and/or MLflow ($MLFLOW_TRACKING_URI)",
                         ListOf(*TRACKERS), metavar="tensorboard,mlflow", convert=_names)
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> "TrainConfig":
        super().validate()
        if not isinstance(self.data, DataConfig):
            raise ConfigError(f"data must be a DataConfig, got {type(self.data).__name__}")
        self.data.validate()
        return self

    @property
    def total_fine_tune_epochs(self) -> int:
        if not self.fine_tune:
            return 0
        return self.fine_tune_epochs if self.fine_tune_epochs is not None else max(1, self.epochs // 2)

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> "TrainConfig":
        return _from_dict(cls, d, where).validate()

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with ``overrides`` (any field of this class or of :class:`DataConfig`), checked."""
        return merge(self, overrides, where="train()")


@dataclass
class StudyConfig(_Validated):
    """What ``imgclf study`` adds to the training options every model of it shares."""

    models: list | None = option(None, "comma-separated registry names (default: cnn,cnn_aug,cnn_aug_pre,"
                                       "mobilenet_v2, the blog's four; see `imgclf models` for all)",
                                 None, Names(), metavar="A,B,...", convert=_names)
    title: str | None = option(None, "report title (default: the dataset's name and the number of models)",
                               None, Text())
    tune: bool = option(False, "transfer models: search their options first (`imgclf tune` on the cached "
                               "features)", Boolean())
    tune_trials: int = option(50, "trials per tuned model", POSITIVE, metavar="N")
    download_weights: bool = option(True, "download pretrained weights missing from the Keras cache", Boolean(),
                                    cli=False)


STUDY_EPOCHS = 20  # a study trains each model this many epochs unless told otherwise


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


DATA_FIELDS = tuple(f.name for f in fields(DataConfig))
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "data")
TRANSFER_ONLY = tuple(f.name for f in fields(TrainConfig) if spec_of(f) is not None and spec_of(f).transfer)


def merge(base: TrainConfig | None, overrides: dict, *, where: str = "train()") -> TrainConfig:
    """``base`` (default: the defaults) with keyword ``overrides`` of either class; the seed
    given once is the data's and the training's."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    cfg.data = dataclasses.replace(cfg.data)
    for name, value in overrides.items():
        if name in TRAIN_FIELDS:
            setattr(cfg, name, value)
            if name == "seed":
                cfg.data.seed = value
        elif name in DATA_FIELDS:
            setattr(cfg.data, name, value)
        else:
            raise ConfigError(f"{where} got an unexpected option {name!r}; see imgclf.config.TrainConfig")
    return cfg.validate()


# -- the command line: arguments generated from the fields ---------------------------------------

def _argument(parser, f: dataclasses.Field, spec: Option, *, default=None) -> None:
    flags = spec.flags or ("--" + f.name.replace("_", "-"),)
    kwargs: dict[str, Any] = {"dest": f.name, "default": default}
    choices = next((a.choices for a in spec.allowed if isinstance(a, OneOf)), None)
    shown = f.default if f.default is not dataclasses.MISSING and spec.show_default else None
    help_text = spec.help
    if isinstance(shown, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
        help_text += f" (default {'on' if shown else 'off'})"
    else:
        numeric = next((a.kind for a in spec.allowed if isinstance(a, Interval)), None)
        if numeric is not None:
            kwargs["type"] = numeric
        if choices is not None:
            kwargs["choices"] = choices
        if spec.metavar:
            kwargs["metavar"] = spec.metavar
        if shown not in (None, "", 0) or (shown == 0 and numeric is not None):
            help_text += f" (default {shown})" if default is None else f" (default {default})"
        elif default is not None:
            help_text += f" (default {default})"
    parser.add_argument(*flags, help=help_text, **kwargs)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, group: str | None = None,
                  study: bool = False, defaults: dict | None = None, skip: Iterable[str] = ()) -> None:
    """Add one argument per field of ``cls`` offered on the command line (``group``: only the
    fields of that group; ``study``: only the fields a study takes). A value the user does not
    give stays ``None`` in the namespace, so the config's own default applies; ``defaults``
    replaces those of a command (``imgclf study`` trains 20 epochs)."""
    defaults = defaults or {}
    for f in fields(cls):
        spec = spec_of(f)
        if spec is None or not spec.cli or f.name in skip:
            continue
        if group is not None and spec.group != group:
            continue
        if group is None and spec.group is not None and cls is TrainConfig:
            continue  # offered with the data options instead
        if study and not spec.study:
            continue
        _argument(parser, f, spec, default=defaults.get(f.name))


def add_data_arguments(parser: argparse.ArgumentParser, *, study: bool = False, defaults: dict | None = None) -> None:
    """The data options every command that reads a dataset takes (and ``--image-size``)."""
    add_arguments(parser, DataConfig, defaults=defaults)
    add_arguments(parser, TrainConfig, group="data", defaults=defaults)


def given(args: argparse.Namespace, cls: type) -> dict:
    """The options of ``cls`` the user gave on the command line (or a command's defaults)."""
    out = {}
    for f in fields(cls):
        spec = spec_of(f)
        if spec is None or not spec.cli:
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = value
    return out


def data_from_args(args: argparse.Namespace) -> DataConfig:
    cfg = DataConfig(source=_path(getattr(args, "data", None)), **given(args, DataConfig))
    return cfg.validate()


def from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The config of a command line: ``base`` (default: the defaults) with what was given."""
    overrides = {**given(args, TrainConfig), **given(args, DataConfig)}
    if getattr(args, "data", None) is not None:
        overrides["source"] = args.data
    return merge(base, overrides, where="imgclf")
