"""``study``: the blog post, for any dataset. Several models trained on the same splits, each
diagnosed, all compared, written up as ``report.html`` (self-contained), ``report.md`` and
``results.json``.

>>> from imgclf.report.study import study
>>> result = study("path/to/images", epochs=20)        # doctest: +SKIP
>>> result.html, result.winner                          # doctest: +SKIP

The study folder::

    <output>/
      report.html  report.md  results.json  summary.json
      splits/{train,validation,test}.txt       one split for every model
      figures/   samples, label frequencies, augmentation previews, comparison
      runs/<model>/                            an ordinary run folder per model

A study killed part-way resumes when run again with the same output folder: complete runs
are kept as they are (not retrained), an interrupted run carries on from its last finished
epoch (:func:`imgclf.training.resume`), models not started yet are trained. The report is
rewritten after every model, so a half-finished study already has one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .. import figures, io, tracking
from ..augment_preview import augment_preview
from ..config import DATA_FIELDS, STUDY_EPOCHS, TRANSFER_ONLY, DataConfig, StudyConfig, TrainConfig, merge
from ..data.dataset import ImageDataset, load_dataset
from ..data.split import SPLITS, read_split_lists
from ..errors import ConfigError, WeightsError
from ..metrics import Parameters, Scores
from ..models import check_weights, get_spec
from ..overview import describe
from ..run import Run
from ..training import resume, train
from ..tuning import tune
from ..version import __version__
from .diagnosis import diagnose, second_half
from .health import data_health
from .html import render_html
from .markdown import render_markdown
from .trust import section as trust_section

__all__ = ["DEFAULT_MODELS", "RESULTS_FORMAT", "StudyResult", "study", "model_layers"]

#: The blog's four models, in its order.
DEFAULT_MODELS = ("cnn", "cnn_aug", "cnn_aug_pre", "mobilenet_v2")
RESULTS_FORMAT = 1
BLOG_AUGMENT = "flip=horizontal,rotation=0.2"


@dataclass
class StudyResult:
    """What :func:`study` wrote, and the results it wrote there."""

    output: Path
    html: Path
    markdown: Path
    results_json: Path
    results: dict

    @property
    def winner(self) -> str | None:
        w = self.results.get("comparison", {}).get("winner")
        return w["model"] if w else None

    @property
    def models(self) -> dict[str, dict]:
        return self.results.get("models", {})

    def __repr__(self) -> str:
        return f"StudyResult({str(self.output)!r}, winner={self.winner!r})"

    def _repr_html_(self) -> str:  # notebooks
        return f'<b>imgclf study</b> {self.output}: winner {self.winner}; <a href="{self.html}">report.html</a>'


def _silent(_: str) -> None:
    pass


def _check_models(models: str | Iterable[str]) -> list[str]:
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",")]
    names: list[str] = []
    for m in models:
        if not m:
            continue
        get_spec(m)  # ConfigError naming the choices
        if m not in names:
            names.append(m)
    if not names:
        raise ConfigError("a study needs at least one model; see `imgclf models`")
    return names


# the options study() hands to each model itself (the others go as they are, in train_options)
_SHARED = ("model", "epochs", "image_size", "fine_tune", "fine_tune_epochs", "weights", "alpha", "batch_size",
           "seed", "track", "data")


def _changed(cfg, default, *, skip=()) -> dict:
    """The fields of ``cfg`` that differ from ``default``'s."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if f.name not in skip and getattr(cfg, f.name) != getattr(default.validate(), f.name)}


def study(
    data: ImageDataset | str | os.PathLike | None = None,
    config: TrainConfig | None = None,
    *,
    models: str | Iterable[str] = DEFAULT_MODELS,
    output: str | os.PathLike = "imgclf-study",
    download_weights: bool = True,
    title: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    train_options: dict | None = None,
    tune: bool = False,
    tune_trials: int = 50,
    **options,
) -> StudyResult:
    """Train and compare ``models`` on ``data`` and write the report into ``output``.

    ``data`` is an :class:`ImageDataset` or anything :func:`load_dataset` takes (``None``:
    ``cats_and_dogs_filtered``). ``config`` (a :class:`~imgclf.config.TrainConfig`; default:
    the defaults with 20 epochs) holds the options every model shares, and keyword ``options``
    override its fields or its data's (``epochs``, ``validation``, ``fit``, ``splits``, ...).
    ``image_size`` applies to every model (default: each model's own). ``fine_tune``,
    ``fine_tune_epochs``, ``weights`` and ``alpha`` apply to the transfer models only.
    With ``download_weights=False`` pretrained weights are taken from the Keras cache only.
    A transfer model whose weights cannot be had is not trained: the report says why.
    ``train_options`` are further :func:`imgclf.train` options for every model.
    ``echo`` receives one line per step (default: ``print`` when ``progress``).
    ``track`` (``"tensorboard"``, ``"mlflow"``) tracks every run; with MLflow the study is a
    parent run with one child run per model (:mod:`imgclf.tracking`).
    ``tune`` searches each transfer model's options first (``tune_trials`` trials on its cached
    features, :func:`imgclf.tuning.tune`) and trains the best; the report shows the search.
    """
    StudyConfig(models=None if isinstance(models, tuple) else models, title=title, tune=tune,
                tune_trials=tune_trials, download_weights=download_weights).validate()
    cfg = merge(config if config is not None else TrainConfig(epochs=STUDY_EPOCHS), options, where="study()")
    data_options = {k: v for k, v in options.items() if k in DATA_FIELDS and k != "seed"}
    if config is not None:
        data_options.update(_changed(config.data, DataConfig(), skip=("source", "root", "seed")))
    train_options = {**_changed(cfg, TrainConfig(epochs=cfg.epochs), skip=_SHARED), **(train_options or {})}
    epochs, image_size, fine_tune, fine_tune_epochs = cfg.epochs, cfg.image_size, cfg.fine_tune, cfg.fine_tune_epochs
    weights, alpha, batch_size, seed, track = cfg.weights, cfg.alpha, cfg.batch_size, cfg.seed, cfg.track
    names = _check_models(models)
    track = tracking.check(track)
    if track:
        train_options = {**(train_options or {}), "track": track}
    say = echo if echo is not None else (print if progress else _silent)
    started = time.time()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)

    specs = {name: get_spec(name) for name in names}
    model_opts = {name: _model_options(spec, epochs=epochs, image_size=image_size, fine_tune=fine_tune,
                                       fine_tune_epochs=fine_tune_epochs, weights=weights, alpha=alpha,
                                       batch_size=batch_size, seed=seed, extra=train_options)
                  for name, spec in specs.items()}
    for name, spec in specs.items():  # fail before any work when a kept run does not fit the options
        if (out / "runs" / name / "config.json").is_file():
            _check_same_options(Run(out / "runs" / name), model_opts[name], spec)

    ds = _dataset(data, out, image_size or specs[names[0]].default_image_size, seed, progress, data_options)
    for name, spec in specs.items():  # and when it saw its images otherwise than this dataset does
        if (out / "runs" / name / "config.json").is_file():
            _check_same_images(Run(out / "runs" / name), ds, spec)
    say(f"data: {ds.root} ({len(ds.splits['train'])} train, {len(ds.splits['validation'])} validation, "
        f"{len(ds.splits['test'])} test images; {ds.num_classes} classes)")

    options = {
        "models": names, "epochs": epochs, "image_size": image_size, "fine_tune": fine_tune,
        "fine_tune_epochs": fine_tune_epochs, "weights": None if weights is None else os.fspath(weights),
        "alpha": alpha, "batch_size": batch_size, "seed": seed, "download_weights": download_weights,
        "train_options": dict(train_options or {}), "tune": bool(tune), "tune_trials": tune_trials if tune else None,
        "data_options": {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in data_options.items()},
    }
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "imgclf_version": __version__,
        "created": datetime.now().isoformat(timespec="seconds"),
        "title": title or f"{_dataset_name(ds)}: {len(names)} model{'s' if len(names) != 1 else ''} compared",
        "options": options,
        "data": _data_section(ds, out, describe),
        "augmentation": _augmentation_section(ds, out, augment_preview),
        "models": {name: _pending(name) for name in names},
    }
    say("audit: duplicates, leaks, suspected mislabels, outliers")
    transfer = next((n for n in names if specs[n].is_transfer), "mobilenet_v2")
    results["data_health"] = data_health(ds, out, model=transfer, weights=weights, alpha=alpha,
                                         download=download_weights)
    _write(out, results)
    with tracking.parent_run(track, out, results["title"], {"models": ",".join(names), "epochs": epochs,
                                                            "seed": seed, "data": ds.root}) as log_parent:
        _train_all(ds, names, specs, model_opts, results, out, download_weights, progress, say, log_parent,
                   tune_trials if tune else None)
        results["seconds"] = round(time.time() - started, 1)
        html, md, js = _write(out, results)
        log_parent([html, md, js])
    return StudyResult(output=out, html=html, markdown=md, results_json=js, results=results)


def _train_all(ds, names, specs, model_opts, results, out, download_weights, progress, say, log_parent,
               tune_trials) -> None:
    for i, name in enumerate(names, 1):
        spec, opts = specs[name], model_opts[name]
        say(f"[{i}/{len(names)}] {name}")
        run_dir = out / "runs" / name
        try:
            run, how = _train_or_resume(ds, spec, run_dir, opts, download_weights, progress, say,
                                        tune_trials=tune_trials if spec.is_transfer else None)
        except WeightsError as e:
            note = str(e)
            say(f"  {name}: not trained: {note}")
            results["models"][name] = _skipped(name, spec, note)
            _write(out, results)
            continue
        results["models"][name] = _model_section(run, spec, ds, out, how)
        m = results["models"][name]
        say(f"  {name}: validation {_fmt(m['validation_accuracy'])}, test {_fmt(m['test_accuracy'])} "
            f"(baseline {_fmt(results['data']['baseline']['test_accuracy'])}), "
            f"{_fmt_s(m['seconds_per_epoch'])}/epoch; {m['diagnosis']['label']}")
        _write(out, results)
        log_parent(metrics={f"{name}/validation_accuracy": m["validation_accuracy"],
                            f"{name}/test_accuracy": m["test_accuracy"]})


# -- the data --------------------------------------------------------------------------------

def _dataset(data, out: Path, image_size: int, seed: int, progress: bool, data_options: dict) -> ImageDataset:
    """The study's one dataset; its split lists are saved in ``out/splits`` and reused on a rerun."""
    splits_dir = out / "splits"
    saved = splits_dir.is_dir() and (splits_dir / "train.txt").is_file()
    if isinstance(data, ImageDataset):
        if data_options:
            raise ConfigError(f"data options ({', '.join(data_options)}) apply only when data is not an ImageDataset")
        ds = data
    else:
        opts = dict(data_options)
        if saved and opts.get("splits") is None:
            opts["splits"] = splits_dir
        opts.setdefault("seed", seed)
        ds = load_dataset(data, image_size=image_size, progress=progress, **opts)
    if saved:
        lists = read_split_lists(splits_dir)
        for s in SPLITS:
            mine = [(r.label, r.path) for r in ds.splits[s]]
            if [tuple(x) for x in lists.get(s, [])] != mine:
                raise ConfigError(
                    f"{out} holds a study made with other split lists ({s} differs); use another output "
                    f"folder, or the same data and split options as before")
    else:
        ds.save_splits(splits_dir)
    return ds


def _dataset_name(ds: ImageDataset) -> str:
    origin = getattr(ds.source, "origin", "") or ""
    if origin and "/" not in origin and os.sep not in origin:
        return origin
    return ds.root.name


def _rel(path, out: Path) -> str:
    p = Path(path)
    try:
        return p.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return str(p)


def _data_section(ds: ImageDataset, out: Path, describe) -> dict:
    summary = describe(ds, out)
    figs = {k: _rel(v, out) for k, v in summary.get("figures", {}).items()}
    maj_val = ds.baseline("validation")
    maj_test = ds.baseline("test")
    return {
        "name": _dataset_name(ds),
        "root": str(ds.root),
        "layout": summary["layout"],
        "class_names": summary["class_names"],
        "counts": summary["counts"],
        "total": summary["total"],
        "image_size": list(ds.image_size) if isinstance(ds.image_size, tuple) else ds.image_size,
        "formats": summary.get("formats", {}),
        "sizes": summary.get("sizes", {}),
        "bad": summary.get("bad", []),
        # files used with a warning (an extension that lies), link loops skipped, classes left out
        "warnings": [f"{r['path']}: {r['warning']}" for r in summary.get("renamed", [])] + summary.get("warnings", []),
        "ignored": len(summary.get("ignored", [])),
        "baseline": {"majority_class": maj_test[0], "validation_accuracy": maj_val[1], "test_accuracy": maj_test[1]},
        "figures": figs,
        "splits": "splits",
    }


def _augmentation_section(ds: ImageDataset, out: Path, augment_preview) -> dict:
    paths = augment_preview(ds, out / "figures", augment=BLOG_AUGMENT, seed=ds.seed)
    return {"augment": BLOG_AUGMENT, "figures": {Path(p).stem.replace("augment_", ""): _rel(p, out) for p in paths}}


# -- one model --------------------------------------------------------------------------------

def _model_options(spec, *, epochs, image_size, fine_tune, fine_tune_epochs, weights, alpha, batch_size, seed,
                   extra) -> dict:
    opts = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
    if image_size is not None:
        opts["image_size"] = image_size
    if spec.is_transfer:
        opts["fine_tune"] = fine_tune
        if fine_tune_epochs is not None:
            opts["fine_tune_epochs"] = fine_tune_epochs
        opts["weights"] = None if weights is None else os.fspath(weights)
        if alpha is not None:
            opts["alpha"] = alpha
    opts.update({k: v for k, v in (extra or {}).items() if spec.is_transfer or k not in TRANSFER_ONLY})
    return opts


_COMPARED = ("epochs", "image_size", "batch_size", "seed", "fine_tune", "fine_tune_epochs", "alpha", "weights")


def _check_same_options(run: Run, opts: dict, spec) -> None:
    """A kept run must have been trained with the options this study asks for."""
    cfg = run.config
    for key in _COMPARED:
        if key not in opts or (key == "epochs" and run.meta.get("tune")):  # a tuned run chose its epochs
            continue
        have, want = getattr(cfg, key), opts[key]
        if key == "image_size" and want is None:
            continue
        if key == "weights" and isinstance(want, str) and isinstance(have, str):
            same = os.path.abspath(os.path.expanduser(have)) == os.path.abspath(os.path.expanduser(want)) \
                if want != "imagenet" else have == want
        else:
            same = have == want
        if not same:
            _refuse(run, spec, key, have, want)


def _check_same_images(run: Run, ds: ImageDataset, spec) -> None:
    """A kept run must have seen its images brought to size as this study's dataset does."""
    for key in ("fit", "interpolation"):
        have, want = getattr(run.config.data, key), getattr(ds, key)
        if have != want:
            _refuse(run, spec, key, have, want)


def _refuse(run: Run, spec, key: str, have, want) -> None:
    raise ConfigError(f"{run.path} was trained with {key}={have!r}, this study asks for {key}={want!r}; "
                      f"use another --output, or delete {run.path} to train {spec.name} again")


def _train_or_resume(ds, spec, run_dir: Path, opts: dict, download: bool, progress: bool, say, *,
                     tune_trials: int | None = None):
    if (run_dir / "config.json").is_file():
        run = Run(run_dir)
        _check_same_options(run, opts, spec)
        if run.complete:
            say(f"  {spec.name}: already trained in {run_dir}, kept")
            return run, "kept"
        check_weights(spec, opts, download)
        done = int(run.state.get("epoch", 0))
        say(f"  {spec.name}: resuming {run_dir} after epoch {done}")
        return resume(run_dir, data=ds.root, progress=progress), "resumed"
    check_weights(spec, opts, download)
    if tune_trials:
        say(f"  {spec.name}: tuning ({tune_trials} trials) -> {run_dir}")
        searched = {k: v for k, v in opts.items() if k != "epochs"}  # the search chooses the epochs
        return tune(ds, spec.name, trials=tune_trials, output=run_dir, progress=progress,
                    echo=lambda line: say("  " + line), **searched).run, "tuned"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # killed before its config was written: nothing to keep
    say(f"  {spec.name}: training {opts['epochs']} epoch{'s' if opts['epochs'] != 1 else ''} -> {run_dir}")
    return train(ds, spec.name, output=run_dir, progress=progress, **opts), "trained"


def model_layers(model) -> list[dict]:
    """One row per top-level layer: name, type, output shape, parameters (trainable, frozen)."""
    rows = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
            shape_text = "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
        except Exception:  # noqa: BLE001 - an unbuilt or multi-output layer
            shape_text = "?"
        trainable = int(sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
        frozen = int(sum(int(np.prod(w.shape)) for w in layer.non_trainable_weights))
        rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": shape_text,
                     "parameters": trainable + frozen, "trainable": trainable, "frozen": frozen})
    return rows


def _pending(name: str) -> dict:
    return {"name": name, "status": "pending",
            "note": "not trained yet: the study stopped before this model; run the same command again to continue"}


def _spec_info(spec) -> dict:
    return {"kind": spec.kind, "description": spec.description, "preprocessing": spec.preprocessing}


def _skipped(name: str, spec, note: str) -> dict:
    return {"name": name, "status": "skipped", "note": note, **_spec_info(spec)}


def _evaluation(run: Run, out: Path) -> dict:
    """The test-split evaluation: reused from metrics.json when its figures exist, else computed."""
    stored = run.metrics_record().evaluation.get("test")
    if stored is not None and all(Path(p).is_file() for p in stored.figures.values()) \
            and (stored.figures or not stored.count):
        return stored.to_dict()
    return run.evaluate("test", progress=False)


def _model_section(run: Run, spec, ds: ImageDataset, out: Path, how: str) -> dict:
    metrics = run.metrics_record()
    history = run.history()
    evaluation = _evaluation(run, out)
    val = [v for v in history["val_accuracy"] if v is not None]
    half = second_half(val)
    base = metrics.baseline
    base_val = base.validation_accuracy if base is not None else ds.baseline("validation")[1]
    diag = diagnose(history, baseline=base_val, validation_size=len(ds.splits["validation"]),
                    num_classes=ds.num_classes)
    figs = {"history": _rel(run.figures_dir / "history.png", out)}
    for k, p in (evaluation.get("figures") or {}).items():
        figs[k] = _rel(p, out)

    trust = trust_section(run, ds, out, _rel)
    if trust.pop("reliability_figure"):
        figs["reliability"] = _rel(run.figures_dir / "reliability.png", out)
    params = metrics.parameters or Parameters()
    layers = model_layers(run.model)
    test = metrics.test or Scores()
    cfg = run.config
    return {
        "name": spec.name,
        "status": "complete",
        "how": how,
        "run": _rel(run.path, out),
        **_spec_info(spec),
        "image_size": run.image_size,
        "weights": run.meta.get("weights_file"),
        "alpha": cfg.alpha,
        "epochs": len(history["epoch"]),
        "fine_tune_epoch": run.fine_tune_epoch(),
        "feature_cache": bool(spec.is_transfer and cfg.feature_cache and "head" in history["stage"]),
        "parameters": {"trainable": params.trainable, "frozen": params.frozen, "total": params.total},
        "layers": layers,
        "history": history,
        "val_range_second_half": [min(half), max(half)] if half else None,
        "second_half_epochs": [len(val) - len(half) + 1, len(val)] if half else None,
        "best_epoch": metrics.best_epoch,
        "best_val_accuracy": metrics.best_val_accuracy,
        "kept_epoch": metrics.kept_epoch,  # per stage: the epoch the saved model comes from
        "validation_accuracy": metrics.validation.accuracy if metrics.validation is not None else None,
        "test_accuracy": evaluation.get("accuracy", test.accuracy),
        "test_loss": evaluation.get("loss", test.loss),
        "test_count": evaluation.get("count", test.count),
        "test_baseline": evaluation.get("baseline_accuracy", base.test_accuracy if base is not None else None),
        "seconds_per_epoch": metrics.seconds_per_epoch,
        "train_seconds": float(sum(s for s in history["seconds"] if s is not None)),
        "diagnosis": diag.to_dict(),
        "evaluation": {k: evaluation.get(k) for k in ("per_class", "macro_f1", "confusion_matrix", "top_losses",
                                                      "leak_free")
                       if evaluation.get(k) is not None},
        "figures": figs,
        **trust,  # calibration and test-time augmentation (report/trust.py)
        "tune": _tune_section(run, out),
    }


def _tune_section(run: Run, out: Path) -> dict | None:
    """The search that chose a tuned run's options (config.json's ``tune``), its figure's path."""
    search = run.meta.get("tune")
    if not search:
        return None
    section = {k: search.get(k) for k in ("trials", "complete", "pruned", "best_trial", "best_validation_accuracy",
                                          "default_validation_accuracy", "best_params", "importances", "sampler",
                                          "pruner", "mode", "seconds", "space")}
    section["figure"] = _rel(run.path / "tune" / "tune.png", out)
    section["trials_csv"] = _rel(run.path / "tune" / "trials.csv", out)
    return section


# -- the comparison ---------------------------------------------------------------------------

def _comparison(results: dict, out: Path) -> dict:
    base = results["data"]["baseline"]
    done = {n: m for n, m in results["models"].items() if m.get("status") == "complete"}
    rows = []
    for name, m in results["models"].items():
        row = {"model": name, "status": m.get("status"), "kind": m.get("kind")}
        if m.get("status") == "complete":
            test = m.get("test_accuracy")
            row.update({
                "trainable": m["parameters"].get("trainable"), "frozen": m["parameters"].get("frozen"),
                "epochs": m.get("epochs"),
                "best_val_accuracy": m.get("best_val_accuracy"), "best_epoch": m.get("best_epoch"),
                "val_range_second_half": m.get("val_range_second_half"),
                "validation_accuracy": m.get("validation_accuracy"), "test_accuracy": test,
                "over_baseline": None if test is None else test - base["test_accuracy"],
                "seconds_per_epoch": m.get("seconds_per_epoch"),
                "verdict": m["diagnosis"]["verdict"], "diagnosis": m["diagnosis"]["label"],
            })
        else:
            row["note"] = m.get("note")
        rows.append(row)
    figure = None
    if done:
        curves = {n: [v for v in m["history"]["val_accuracy"]] for n, m in done.items()}
        fig = figures.comparison(curves, baseline=base["validation_accuracy"],
                                 title="validation accuracy per epoch")
        figure = _rel(figures.save(fig, out / "figures" / "comparison.png"), out)
    winner = _winner(done, base)
    return {"baseline": base, "rows": rows, "winner": winner, "figure": figure,
            "summary": _winner_sentence(winner, base, len(done), len(results["models"]))}


def _score(m: dict) -> tuple:
    def v(x):
        return -1.0 if x is None else float(x)
    total = (m.get("parameters") or {}).get("total") or 0
    return (v(m.get("validation_accuracy")), -total)  # the test set plays no part in the choice


def _winner(done: dict, base: dict) -> dict | None:
    """The model with the best validation accuracy (the smaller model breaks ties): chosen on
    validation, reported on test, as one should."""
    if not done:
        return None
    ranked = sorted(done, key=lambda n: _score(done[n]), reverse=True)
    best = done[ranked[0]]
    test = best.get("test_accuracy")
    out = {
        "model": ranked[0],
        "validation_accuracy": best.get("validation_accuracy"),
        "test_accuracy": test,
        "baseline_test_accuracy": base["test_accuracy"],
        "over_baseline": None if test is None else test - base["test_accuracy"],
        "runner_up": None,
    }
    if len(ranked) > 1:
        second = done[ranked[1]]
        out["runner_up"] = ranked[1]
        out["runner_up_test_accuracy"] = second.get("test_accuracy")
        out["runner_up_validation_accuracy"] = second.get("validation_accuracy")
        if test is not None and second.get("test_accuracy") is not None:
            out["margin_test"] = test - second["test_accuracy"]
    return out


def _fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def _fmt_s(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.1f} s" if x >= 1 else f"{x * 1000:.0f} ms"


def _points(x: float) -> str:
    return f"{x * 100:+.1f} points"


def _winner_sentence(w: dict | None, base: dict, n_done: int, n_all: int) -> str:
    if w is None:
        return "No model has been trained yet."
    if w.get("test_accuracy") is None:
        text = (f"{w['model']} wins with {_fmt(w['validation_accuracy'])} validation accuracy (there is no test "
                f"split to confirm it on; the majority baseline is {_fmt(base['validation_accuracy'])} on "
                "validation)")
    else:
        text = (f"{w['model']} wins with {_fmt(w['validation_accuracy'])} validation accuracy and "
                f"{_fmt(w['test_accuracy'])} on the test set")
    if w.get("over_baseline") is not None:
        text += (f", {_points(w['over_baseline'])} over the majority baseline "
                 f"({_fmt(base['test_accuracy'])}, always guessing {base['majority_class']})")
    text += "."
    if w.get("runner_up"):
        text += f" Runner-up: {w['runner_up']} ({_fmt(w.get('runner_up_test_accuracy'))} test"
        if w.get("margin_test") is not None:
            text += f", {abs(w['margin_test']) * 100:.1f} points {'behind' if w['margin_test'] >= 0 else 'ahead on test'}"
        text += ")."
    if n_done < n_all:
        text += f" ({n_all - n_done} of {n_all} models not in the running: see their sections.)"
    return text


# -- writing ----------------------------------------------------------------------------------

def _write(out: Path, results: dict) -> tuple[Path, Path, Path]:
    results["comparison"] = _comparison(results, out)
    js = io.write_json(out / "results.json", results)
    md = io.write_text(out / "report.md", render_markdown(results))
    html = io.write_text(out / "report.html", render_html(results, out))
    return html, md, js
