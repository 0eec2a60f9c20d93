"""``tune``: search a model's training options with Optuna, then train the best into a run folder.

While a backbone is frozen its features are computed once (:mod:`imgclf.training.features`), so
a trial trains only the head on cached features: seconds, not minutes. Each trial is scored on
the validation split only (the test split is never read until the final run reports it).
Optuna's TPE sampler (seeded) proposes the options, its median pruner stops trials that fall
behind, and trial 0 is always the defaults, so the best trial is never worse on validation than
training without a search. A model with no frozen backbone runs each trial end to end (the
time per trial is measured and said before the search starts).

The run folder::

    RUN/tune/optuna.db      the Optuna study (SQLite): run the same command again to carry on
    RUN/tune/trials.csv     one row per trial: state, validation accuracy, seconds, options
    RUN/tune/tune.png       validation accuracy per trial; the options' importance
    RUN/tune/search.json    the space, the best trial, the defaults' score
    RUN/config.json         the best options, trained as a normal run; ``"tune"`` records the search

The search space (:data:`DEFAULT_SPACE`) is overridden per parameter by a JSON or YAML file
(``space=``/``--space``): ``{"low": .., "high": .., "log": true}`` for a range (whole numbers for
``epochs`` and ``hidden_units``), ``{"choices": [...]}`` for a set, or a single value to fix
it. A training option passed explicitly (``learning_rate=3e-4``) is fixed, not searched.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import backend, figures, io, training
from .config import DATA_FIELDS, OPTIMIZERS, DataConfig, TrainConfig
from .data.dataset import ImageDataset, load_dataset
from .errors import ConfigError, first_line
from .models import get_spec
from .models.backbones import classifier_top
from .models.registry import check_dropout, check_image_size
from .run import Run
from .training import trainer as tr
from .training.distribute import choose
from .training.features import extract_features, feature_dataset
from .training.trainer import resolve_precision

#: parameter -> (kind, smallest, largest, whether the largest is allowed): what a space may ask for
PARAMETERS: dict[str, tuple] = {
    "learning_rate": ("float", 0.0, 10.0, False),
    "dropout": ("float", 0.0, 1.0, False),
    "label_smoothing": ("float", 0.0, 1.0, False),
    "weight_decay": ("float", 0.0, 1.0, False),
    "hidden_units": ("int", 0, 65536, True),
    "epochs": ("int", 1, 10000, True),
    "early_stopping": ("int", 1, 10000, True),
    "batch_size": ("int", 1, 65536, True),
    "optimizer": ("choice", OPTIMIZERS),
}

#: The default search: the head's options around the values that work for pretrained backbones.
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"low": 1e-4, "high": 3e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.6},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "hidden_units": {"choices": [0, 128, 256, 512]},
    "weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
    "optimizer": {"choices": ["adam", "adamw", "rmsprop", "sgd"]},
    "epochs": {"low": 5, "high": 40},
    "early_stopping": 5,  # patience on validation loss, in every trial and in the final run
}
DEFAULT_TRIALS = 50
SAMPLER = "TPESampler"
PRUNER = {"n_startup_trials": 5, "n_warmup_steps": 3}


def optuna():
    try:
        import optuna as _optuna
    except ImportError:
        raise ConfigError("imgclf tune needs the optuna package: pip install 'imgclf[tune]' (or pip install optuna)") \
            from None
    major = int(_optuna.__version__.split(".")[0])
    if major < 3:
        raise ConfigError(f"imgclf tune needs optuna >= 3.6, found {_optuna.__version__}: pip install -U 'imgclf[tune]'")
    return _optuna


# -- the search space ------------------------------------------------------------------------------

def load_space(path: str | os.PathLike) -> dict:
    """A space file (JSON, or YAML by its .yaml/.yml suffix) read and validated."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"search space {p} cannot be read ({first_line(e, 100)})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            import json

            data = json.loads(text)
    except ImportError:
        raise ConfigError("a YAML search space needs PyYAML: pip install 'imgclf[tune]'") from None
    except Exception as e:  # noqa: BLE001 - a JSON or YAML syntax error, said in one line
        raise ConfigError(f"search space {p} is not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                          f"({first_line(e, 120)})") from None
    return check_space(data, where=str(p))


def check_space(space: dict | None, *, where: str = "search space") -> dict:
    """``DEFAULT_SPACE`` updated by ``space``, every entry checked (a one-line ConfigError otherwise)."""
    if space is None:
        space = {}
    if not isinstance(space, dict):
        raise ConfigError(f"{where} must be a mapping of parameter names to ranges, got {type(space).__name__}")
    merged = {name: _check_param(name, value, "the default space") for name, value in DEFAULT_SPACE.items()}
    for name, value in space.items():
        if name not in PARAMETERS:
            raise ConfigError(f"{where}: unknown parameter {name!r}; tunable: {', '.join(PARAMETERS)}")
        merged[name] = _check_param(name, value, where)
    return merged


def _check_param(name: str, value, where: str):
    rule = PARAMETERS[name]
    at = f"{where}: {name}"
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"low", "high", "log", "choices", "step"})
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}; use low/high[/log][/step] or choices")
        if "choices" in value:
            if set(value) - {"choices"}:
                raise ConfigError(f"{at}: give either choices or low/high, not both")
            choices = value["choices"]
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{at}: choices must be a non-empty list")
            for c in choices:
                _check_value(name, c, at)
            return {"choices": list(choices)}
        if rule[0] == "choice":
            raise ConfigError(f"{at} takes choices (one of: {', '.join(rule[1])}), not a range")
        if "low" not in value or "high" not in value:
            raise ConfigError(f"{at}: a range needs both low and high")
        low, high = _check_value(name, value["low"], at), _check_value(name, value["high"], at)
        if not low < high:
            raise ConfigError(f"{at}: low must be below high, got low={low!r} high={high!r}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{at}: log must be true or false, got {log!r}")
        if log and low <= 0:
            raise ConfigError(f"{at}: a log-scale range needs low > 0, got {low!r}")
        out = {"low": low, "high": high, "log": log}
        if "step" in value:
            step = value["step"]
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log:
                raise ConfigError(f"{at}: step must be a positive number (and not with log), got {step!r}")
            out["step"] = step
        return out
    if isinstance(value, list):
        raise ConfigError(f"{at}: write a list as {{\"choices\": [...]}}")
    return _check_value(name, value, at)


def _check_value(name: str, v, at: str):
    rule = PARAMETERS[name]
    if rule[0] == "choice":
        if v not in rule[1]:
            raise ConfigError(f"{at}: unknown choice {v!r}; choose from: {', '.join(rule[1])}")
        return v
    kind, lo, hi, hi_ok = rule
    if kind == "int":
        ok = isinstance(v, int) and not isinstance(v, bool)
        if not ok:
            raise ConfigError(f"{at}: {v!r} is not a whole number")
    elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{at}: {v!r} is not a number")
    if v < lo or v > hi or (v == hi and not hi_ok) or (name == "learning_rate" and v <= 0):
        interval = f"({lo:g}, {hi:g})" if name == "learning_rate" else f"[{lo:g}, {hi:g}{']' if hi_ok else ')'}"
        raise ConfigError(f"{at}: {v!r} is outside {interval}")
    return float(v) if kind == "float" else v


def describe_space(space: dict) -> list[str]:
    """One line per parameter, as the documentation and ``imgclf tune --help`` show it."""
    lines = []
    for name, v in space.items():
        if isinstance(v, dict) and "choices" in v:
            lines.append(f"{name}: one of {', '.join(map(str, v['choices']))}")
        elif isinstance(v, dict):
            lines.append(f"{name}: {v['low']:g} to {v['high']:g}{' (log scale)' if v.get('log') else ''}")
        else:
            lines.append(f"{name}: {v} (fixed)")
    return lines


def _suggest(trial, space: dict) -> dict:
    params = {}
    for name, v in space.items():
        if not isinstance(v, dict):
            params[name] = v
        elif "choices" in v:
            params[name] = trial.suggest_categorical(name, v["choices"])
        elif PARAMETERS[name][0] == "int":
            params[name] = trial.suggest_int(name, v["low"], v["high"], log=v["log"], step=v.get("step", 1))
        else:
            params[name] = trial.suggest_float(name, v["low"], v["high"], log=v["log"], step=v.get("step"))
    return params


# -- the search -----------------------------------------------------------------------------------

@dataclass
class TuneResult:
    """What :func:`tune` wrote: the trained run and the search that chose its options."""

    run: Run
    search: dict

    @property
    def best_params(self) -> dict:
        return self.search["best_params"]

    def __repr__(self) -> str:
        return (f"TuneResult({str(self.run.path)!r}, best validation accuracy "
                f"{self.search.get('best_validation_accuracy')}, {self.search.get('trials')} trials)")


def tune(data=None, model: str = "mobilenet_v2", *, trials: int = DEFAULT_TRIALS, time_budget: float | None = None,
         space: dict | str | os.PathLike | None = None, output: str | os.PathLike | None = None,
         progress: bool = True, echo: Callable[[str], None] | None = None, **options) -> TuneResult:
    """Search ``model``'s training options on ``data`` (``trials`` trials at most, ``time_budget``
    seconds at most for this call's trials), then train the best into the run folder ``output``.

    ``options`` are :func:`imgclf.train` options; those that are also search parameters are
    fixed at the given value. Calling ``tune`` again with the same ``output`` carries on an
    interrupted search (up to ``trials`` in all) or an interrupted final run.
    """
    op = optuna()
    say = echo if echo is not None else (print if progress else (lambda _: None))
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a whole number >= 1, got {trials!r}")
    if time_budget is not None and not (isinstance(time_budget, (int, float)) and time_budget > 0):
        raise ConfigError(f"time budget must be a number of seconds > 0, got {time_budget!r}")
    space = load_space(space) if isinstance(space, (str, os.PathLike)) else check_space(space)
    for name in list(options):
        if name in PARAMETERS and options[name] is not None:
            space[name] = _check_value(name, options.pop(name), f"option {name}")
    spec = get_spec(model)
    if not spec.is_transfer:  # the CNNs have their own layers: no hidden layer to size
        if space.get("hidden_units") not in (check_space({})["hidden_units"], 0):
            raise ConfigError(f"model {spec.name!r} has its own layers; hidden_units applies to transfer models only")
        del space["hidden_units"]
    run = Run(output if output is not None else Path("runs") / f"{model}-tuned-{time.strftime('%Y%m%d-%H%M%S')}")
    if run.config_file.is_file():
        if run.complete:
            say(f"{run.path} is already tuned and trained")
            return TuneResult(run, run.meta.get("tune") or {})
        say(f"resuming the final run in {run.path}")
        return TuneResult(training.resume(run.path, data=data if not isinstance(data, ImageDataset) else data.root,
                                 progress=progress), run.meta.get("tune") or {})

    data_options = {k: options.pop(k) for k in DATA_FIELDS if k in options and k != "seed"}
    image_size = check_image_size(spec, options.get("image_size"))
    if isinstance(data, ImageDataset):
        ds = data
    else:
        ds = load_dataset(data, image_size=image_size, seed=options.get("seed", DataConfig.seed), progress=progress,
                          **data_options)
    if not len(ds.indices("validation")):
        raise ConfigError("tune scores every trial on the validation split, and this dataset has none; "
                          "give it one (--validation)")
    search = _Search(op, ds, spec, run, space, options, progress, say)
    summary = search.search(trials, time_budget)
    best = summary["best_params"]
    fixed = {k: v for k, v in best.items()}
    say(f"best trial {summary['best_trial']}: validation accuracy {summary['best_validation_accuracy']:.1%} "
        f"(the defaults: {_pct(summary.get('default_validation_accuracy'))}); training it into {run.path}")
    trained = training.train(ds, model, output=run.path, progress=progress, record={"tune": summary},
                    **{**options, **fixed})
    return TuneResult(trained, summary)


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"


class _Search:
    """One Optuna study over one dataset, its trials on cached features (or end to end)."""

    def __init__(self, op, ds, spec, run: Run, space: dict, options: dict, progress: bool, say):
        self.op, self.ds, self.spec, self.run, self.space = op, ds, spec, run, space
        self.options, self.progress, self.say = options, progress, say
        self.folder = run.path / "tune"
        self.base = self._config({})

    def _config(self, params: dict) -> TrainConfig:
        cfg = TrainConfig(model=self.spec.name, **{k: v for k, v in self.options.items()
                                                   if k in {f.name for f in dataclasses.fields(TrainConfig)}})
        cfg = dataclasses.replace(cfg, **params)
        cfg.validate()

        cfg.image_size = check_image_size(self.spec, cfg.image_size)
        cfg.precision = resolve_precision(cfg.precision, self.spec)
        if cfg.label_smoothing is None:
            cfg.label_smoothing = 0.1 if self.spec.is_transfer else 0.0
        cfg.track = []
        return cfg

    def defaults(self) -> dict:
        """Trial 0: what ``imgclf train`` would do without a search (with early stopping)."""
        cfg = TrainConfig(model=self.spec.name, **{k: v for k, v in self.options.items()
                                                   if k in {f.name for f in dataclasses.fields(TrainConfig)}})

        values = {"learning_rate": cfg.learning_rate, "dropout": check_dropout(self.spec, cfg.dropout),
                  "label_smoothing": 0.1 if self.spec.is_transfer else 0.0, "hidden_units": cfg.hidden_units,
                  "weight_decay": 0.0, "optimizer": cfg.optimizer, "epochs": cfg.epochs,
                  "batch_size": cfg.batch_size}
        if cfg.label_smoothing is not None:
            values["label_smoothing"] = cfg.label_smoothing
        out = {}
        for name, v in self.space.items():
            if not isinstance(v, dict) or name not in values:
                continue
            if "choices" in v:  # a default the space leaves out: its first choice
                out[name] = values[name] if values[name] in v["choices"] else v["choices"][0]
            else:  # brought into the range (no weight decay: the range's smallest)
                out[name] = min(max(values[name], v["low"]), v["high"])
        return out

    def search(self, trials: int, time_budget: float | None) -> dict:
        op = self.op
        op.logging.set_verbosity(op.logging.WARNING)
        self.folder.mkdir(parents=True, exist_ok=True)
        seed = self.base.seed
        storage = op.storages.RDBStorage(f"sqlite:///{(self.folder / 'optuna.db').resolve()}")
        study = op.create_study(study_name=f"imgclf-{self.spec.name}", storage=storage, load_if_exists=True,
                                direction="maximize", sampler=op.samplers.TPESampler(seed=seed),
                                pruner=op.pruners.MedianPruner(**PRUNER))
        stored = study.user_attrs.get("space")
        if stored is not None and stored != _jsonable(self.space):
            raise ConfigError(f"{self.folder / 'optuna.db'} holds a search over another space; use another "
                              "--output, or the same --space and options as before")
        study.set_user_attr("space", _jsonable(self.space))
        for t in study.get_trials(deepcopy=False, states=(op.trial.TrialState.RUNNING,)):
            storage.set_trial_state_values(t._trial_id, op.trial.TrialState.FAIL)  # a killed search's trial
        counted = (op.trial.TrialState.COMPLETE, op.trial.TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=counted))
        if not study.trials:
            study.enqueue_trial(self.defaults(), user_attrs={"defaults": True})
        trainer = self._trainer()
        remaining = trials - done
        started = time.time()
        if remaining > 0:
            if done:
                self.say(f"carrying on the search in {self.folder}: {done} of {trials} trials done")
            else:
                self.say(f"searching {remaining} trials" + (f" (at most {time_budget:g} s)" if time_budget else "")
                         + f"; the space: {'; '.join(describe_space(self.space))}")
            try:
                study.optimize(lambda trial: self._objective(trial, trainer), n_trials=remaining,
                               timeout=time_budget, callbacks=[self._after_trial], catch=())
            except KeyboardInterrupt:
                self._write(study)
                self.say(f"search interrupted; run the same command again (same --output {self.run.path}) to carry on")
                raise
        summary = self._write(study)
        summary["seconds"] = round(time.time() - started, 1)
        if summary.get("best_trial") is None:
            raise ConfigError(f"no trial of the search in {self.folder} finished; see {self.folder / 'trials.csv'}")
        io.write_json(self.folder / "search.json", summary)
        return summary

    # -- trials --------------------------------------------------------------------------------
    def _trainer(self):
        """A function ``(params, report) -> validation accuracy`` for one trial."""
        cfg, ds = self.base, self.ds
        built = tr._build(cfg, ds.num_classes, choose("none"))
        if built.feature_extractor is not None and cfg.feature_cache:
            return self._head_trainer(built)
        return self._end_to_end_trainer(built)

    def _head_trainer(self, built):
        import keras

        cfg, ds = self.base, self.ds
        plain, augmented = extract_features(built, ds, cfg.image_size, views=cfg.views, seed=cfg.seed,
                                            folder=self.run.cache_dir, progress=self.progress)
        labels = ds.row_labels()
        train_rows, val_rows = ds.indices("train"), ds.indices("validation")
        dim = built.feature_dim

        def data(c: TrainConfig):
            common = dict(batch_size=c.batch_size, seed=c.seed, one_hot=c.label_smoothing > 0,
                          num_classes=ds.num_classes)
            return (feature_dataset(plain, augmented, labels, train_rows, shuffle=True, train_rows=train_rows,
                                    **common),
                    feature_dataset(plain, augmented, labels, val_rows, shuffle=False, **common))

        def model(c: TrainConfig):
            x = keras.Input((dim,), name="features", dtype="float32")
            top = classifier_top(ds.num_classes, dropout=c.dropout, hidden_units=c.hidden_units, seed=c.seed)
            return keras.Model(x, top(x), name="head")

        return lambda c, report: self._fit(model(c), *data(c), c, report, steps_per_execution=32)

    def _end_to_end_trainer(self, built):
        cfg, ds = self.base, self.ds
        why = ("has no frozen backbone" if built.feature_extractor is None else "trains without the feature cache")
        per_epoch, setup = self._measure_epoch()
        hi = self.space["epochs"]["high"] if isinstance(self.space["epochs"], dict) else self.space["epochs"]
        self.say(f"{self.spec.name} {why}: every trial trains it end to end on the images, about "
                 f"{_secs(per_epoch)} per epoch and {_secs(setup)} to build and compile, so up to "
                 f"{_secs(setup + per_epoch * hi)} per trial ({hi} epochs at most; pruning stops weak trials early)")

        def run_trial(c: TrainConfig, report):
            b = tr._build_in(c.precision, c, ds.num_classes, weights=c.weights)
            one_hot = c.label_smoothing > 0
            train_data = ds.tf_dataset("train", batch_size=c.batch_size, image_size=c.image_size, one_hot=one_hot)
            val_data = ds.tf_dataset("validation", batch_size=c.batch_size, image_size=c.image_size, one_hot=one_hot)
            return self._fit(b.model, train_data, val_data, c, report)

        return run_trial

    def _measure_epoch(self) -> tuple[float, float]:
        """``(seconds per training epoch, seconds a trial spends building and compiling)`` of the
        default model, from a few timed steps."""
        cfg, ds = self.base, self.ds
        one_hot = cfg.label_smoothing > 0
        t = time.time()
        model = tr._build_in(cfg.precision, cfg, ds.num_classes, weights=cfg.weights).model
        model.compile(optimizer=tr._optimizer(cfg, cfg.learning_rate), loss=tr._loss(cfg), metrics=["accuracy"])
        data = ds.tf_dataset("train", batch_size=cfg.batch_size, image_size=cfg.image_size, one_hot=one_hot)
        val = ds.tf_dataset("validation", batch_size=cfg.batch_size, image_size=cfg.image_size, one_hot=one_hot)
        model.fit(data.take(1), validation_data=val.take(1), epochs=1, verbose=0, shuffle=False)  # tracing
        setup = time.time() - t
        steps = 3
        t = time.time()
        model.fit(data.take(steps), epochs=1, verbose=0, shuffle=False)
        per_step = (time.time() - t) / steps
        batches = math.ceil(len(ds.indices("train")) / cfg.batch_size)
        val_batches = math.ceil(len(ds.indices("validation")) / cfg.batch_size)
        return per_step * (batches + val_batches / 3), setup  # a validation step costs about a third

    def _fit(self, model, train_data, val_data, c: TrainConfig, report, steps_per_execution: int = 1) -> float:
        import keras

        keras.utils.set_random_seed(c.seed)
        model.compile(optimizer=tr._optimizer(c, c.learning_rate), loss=tr._loss(c), metrics=["accuracy"],
                      steps_per_execution=backend.steps_per_execution(steps_per_execution))
        callbacks = [_Report(report)]
        if c.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=c.early_stopping,
                                                           restore_best_weights=True))
        class_weight = tr._class_weight(c, self.ds.labels("train"), self.ds.num_classes)
        history = model.fit(train_data, validation_data=val_data, epochs=c.epochs, verbose=0, shuffle=False,
                            callbacks=callbacks, class_weight=class_weight)
        result = model.evaluate(val_data, verbose=0, return_dict=True)
        self._epochs_run = len(history.history.get("loss", []))
        return float(result["accuracy"])

    def _objective(self, trial, trainer) -> float:
        params = _suggest(trial, self.space)
        c = self._config(params)
        t = time.time()

        def report(epoch: int, val_accuracy: float) -> None:
            trial.report(val_accuracy, epoch)
            if trial.should_prune():
                trial.set_user_attr("seconds", round(time.time() - t, 2))
                trial.set_user_attr("epochs_run", epoch + 1)
                raise self.op.TrialPruned()

        value = trainer(c, report)
        if not math.isfinite(value):
            raise self.op.TrialPruned()
        trial.set_user_attr("seconds", round(time.time() - t, 2))
        trial.set_user_attr("epochs_run", self._epochs_run)
        return value

    def _after_trial(self, study, trial) -> None:
        complete = [t.value for t in study.trials if t.state.name == "COMPLETE"]
        value = (f"validation {trial.value:.1%}" if trial.state.name == "COMPLETE" else
                 f"pruned after epoch {trial.user_attrs.get('epochs_run', '?')}")
        best = max(complete) if complete else None
        self.say(f"  trial {trial.number}: {value}, {trial.user_attrs.get('seconds', 0):.1f} s"
                 + (f" (best {best:.1%})" if best is not None else ""))
        _write_trials(self.folder / "trials.csv", study, self.space)

    # -- what the search leaves -------------------------------------------------------------
    def _write(self, study) -> dict:
        _write_trials(self.folder / "trials.csv", study, self.space)
        states = self.op.trial.TrialState
        complete = [t for t in study.trials if t.state == states.COMPLETE]
        default = next((t for t in complete if t.user_attrs.get("defaults")), None)
        best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None

        importances = _importances(self.op, study)
        fig = tune_figure(study.trials, importances, title=f"{self.spec.name}: {len(study.trials)} trials")
        figures.save(fig, self.folder / "tune.png")
        fixed = {k: v for k, v in self.space.items() if not isinstance(v, dict)}
        return {
            "trials": len([t for t in study.trials if t.state in (states.COMPLETE, states.PRUNED)]),
            "complete": len(complete),
            "pruned": len([t for t in study.trials if t.state == states.PRUNED]),
            "failed": len([t for t in study.trials if t.state == states.FAIL]),
            "best_trial": None if best is None else best.number,
            "best_validation_accuracy": None if best is None else best.value,
            "best_params": {} if best is None else {**fixed, **best.params},
            "default_validation_accuracy": None if default is None else default.value,
            "importances": importances,
            "space": _jsonable(self.space),
            "sampler": f"{SAMPLER}(seed={self.base.seed})",
            "pruner": f"MedianPruner({', '.join(f'{k}={v}' for k, v in PRUNER.items())})",
            "scored_on": "validation",
            "mode": "cached features" if self.base.feature_cache and self.spec.is_transfer else "end to end",
            "storage": "tune/optuna.db",
            "trials_csv": "tune/trials.csv",
            "figure": "tune/tune.png",
        }


def _secs(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _jsonable(space: dict) -> dict:
    import json

    return json.loads(json.dumps(space))


def _Report(report):
    """Keras callback: each epoch's validation accuracy to Optuna (which may prune the trial)."""
    import keras

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is not None:
                report(epoch, float(value))

    return Report()


def _importances(op, study) -> dict:
    """Each searched option's share of the variation in validation accuracy (PED-ANOVA: no
    scikit-learn needed); empty until enough trials have finished."""
    complete = [t for t in study.trials if t.state == op.trial.TrialState.COMPLETE]
    if len(complete) < 4 or len({t.value for t in complete}) < 2:  # nothing to explain yet
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = op.importance.get_param_importances(
                study, evaluator=op.importance.PedAnovaImportanceEvaluator())
        return {k: float(v) for k, v in values.items()}
    except Exception:  # noqa: BLE001 - too few distinct values yet
        return {}


def _write_trials(path: Path, study, space: dict) -> None:
    names = [k for k, v in space.items() if isinstance(v, dict)]
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "state", "val_accuracy", "seconds", "epochs_run", "defaults", *names])
    for t in study.trials:
        w.writerow([t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.6f}",
                    t.user_attrs.get("seconds", ""), t.user_attrs.get("epochs_run", ""),
                    int(bool(t.user_attrs.get("defaults"))), *[t.params.get(n, "") for n in names]])
    io.write_text(path, buf.getvalue())


def tune_figure(trials, importances: dict, title: str | None = None):
    """Left: validation accuracy per trial (pruned trials at their last reported value, the best
    so far as a line, the defaults' trial marked). Right: the options' importance."""
    fig = figures.new_figure((11.0, 4.2))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    xs, ys, px, py, best, bx_, dx, dy = [], [], [], [], [], [], None, None
    top = -1.0
    for t in trials:
        if t.state.name == "COMPLETE" and t.value is not None:
            xs.append(t.number)
            ys.append(t.value)
            top = max(top, t.value)
            best.append(top)
            bx_.append(t.number)
            if t.user_attrs.get("defaults"):
                dx, dy = t.number, t.value
        elif t.state.name == "PRUNED" and t.intermediate_values:
            px.append(t.number)
            py.append(t.intermediate_values[max(t.intermediate_values)])
    if xs:
        ax.scatter(xs, ys, s=22, color="#1f77b4", label="complete", zorder=3)
        ax.step(bx_, best, where="post", color="#2ca02c", lw=1.6, label="best so far")
    if px:
        ax.scatter(px, py, s=22, marker="x", color="#999999", label="pruned (last epoch reported)", zorder=2)
    if dx is not None:
        ax.axhline(dy, color="#d62728", ls="--", lw=1, label=f"defaults (trial {dx}): {dy:.1%}")
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    figures.percent_axis(ax)
    figures.style_axes(ax, "y")
    if xs or px:
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title("validation accuracy per trial", fontsize=10)
    if importances:
        names = list(importances)[::-1]
        bx.barh(names, [importances[n] for n in names], color="#1f77b4")
        bx.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        bx.set_xlabel("importance (share of the variation)")
        figures.style_axes(bx, "x")
    else:
        bx.text(0.5, 0.5, "importances need at least 4 finished\ntrials that score differently", ha="center",
                va="center",
                transform=bx.transAxes, color="#666666")
        bx.set_xticks([])
        bx.set_yticks([])
    bx.set_title("parameter importance", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig

