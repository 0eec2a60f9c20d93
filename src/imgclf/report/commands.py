"""Command-line commands for this part of imgclf (parsing only; they call the Python API)."""

from __future__ import annotations

import argparse

DEMO_DEFAULTS = {"epochs": 10, "image_size": 96}


def add_study_options(p: argparse.ArgumentParser, *, epochs: int = 20, image_size: int | None = None) -> None:
    """The options ``study`` and ``demo`` share (the data options come from ``_add_data_options``)."""
    # no imgclf.models import here: building the parser must not load Keras
    g = p.add_argument_group("study")
    g.add_argument("--models", default=None, metavar="A,B,...",
                   help="comma-separated registry names (default: cnn,cnn_aug,cnn_aug_pre,mobilenet_v2, the "
                        "blog's four; see `imgclf models` for all)")
    g.add_argument("--epochs", type=int, default=epochs,
                   help=f"epochs per model (for transfer models: of the head; default {epochs})")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--fine-tune", type=int, default=0, metavar="N",
                   help="transfer models: then unfreeze the top N backbone layers and train on")
    g.add_argument("--fine-tune-epochs", type=int, help="epochs of fine-tuning (default: half of --epochs)")
    g.add_argument("--weights", default=None,
                   help="transfer models: backbone weights, 'imagenet' (default), 'none' or an .h5 FILE")
    g.add_argument("--alpha", type=float, help="transfer models: MobileNet width multiplier")
    g.add_argument("--title", help="report title (default: the dataset's name and the number of models)")
    g.add_argument("--track", metavar="tensorboard,mlflow",
                   help="log every run to TensorBoard and/or MLflow (the study as a parent run, one child per model)")
    g.add_argument("--tune", action="store_true",
                   help="transfer models: search their options first (`imgclf tune` on the cached features)")
    g.add_argument("--tune-trials", type=int, default=50, metavar="N", help="trials per tuned model (default 50)")
    if image_size is not None:
        p.set_defaults(image_size=image_size)


def _study_kwargs(args) -> dict:
    from ..cli import _progress

    weights = args.weights if args.weights is not None else "imagenet"
    if isinstance(weights, str) and weights.strip().lower() in ("none", "random"):
        weights = None
    kwargs = dict(
        epochs=args.epochs, image_size=args.image_size, fine_tune=args.fine_tune,
        fine_tune_epochs=args.fine_tune_epochs, weights=weights, alpha=args.alpha, batch_size=args.batch_size,
        seed=args.seed, title=args.title, progress=_progress(args),
        validation=args.validation, test=args.test, splits=args.splits, data_path=args.data_path,
        cache=args.cache_dir, cache_mode=args.cache, interpolation=args.interpolation, fit=args.fit,
        classes=args.classes, min_images=args.min_images, exclude=args.exclude, relabel=args.relabel,
        track=args.track, tune=args.tune, tune_trials=args.tune_trials,
    )
    if args.models:
        kwargs["models"] = args.models
    return kwargs


def quiet_tensorflow_python_logs() -> None:
    """Keep TensorFlow's Python-side warnings (retracing notices) off the terminal."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def print_study(result) -> None:
    """The end of ``imgclf study``: one line per model, the winner, the notes, the files."""
    from .markdown import pct, points, seconds

    res = result.results
    comp = res.get("comparison") or {}
    rows = comp.get("rows", [])
    if rows:
        width = max(5, *(len(r["model"]) for r in rows))
        print()
        print(f"{'model':<{width}}  {'test':>6}  {'vs base':>10}  {'best val':>8}  {'per epoch':>9}  diagnosis")
        for r in rows:
            if r.get("status") != "complete":
                print(f"{r['model']:<{width}}  {r.get('status')}: {r.get('note')}")
                continue
            print(f"{r['model']:<{width}}  {pct(r.get('test_accuracy')):>6}  {points(r.get('over_baseline')):>10}  "
                  f"{pct(r.get('best_val_accuracy')):>8}  {seconds(r.get('seconds_per_epoch')):>9}  {r.get('diagnosis')}")
    print()
    if comp.get("summary"):
        print(comp["summary"])
    print(f"report    {result.html}")
    print(f"markdown  {result.markdown}")
    print(f"results   {result.results_json}")
    if res.get("seconds") is not None:
        print(f"took      {seconds(res['seconds'])}")


def cmd_study(args) -> int:
    from .study import study

    quiet_tensorflow_python_logs()
    result = study(args.data, output=args.output, **_study_kwargs(args))
    print_study(result)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this part's sub-commands on the ``imgclf`` parser."""
    from ..cli import _add_data_options

    p = sub.add_parser(
        "study", help="train and compare several models; write an HTML/Markdown report",
        description="Do what the blog post does by hand, for any dataset: look at the data and the "
                    "augmentation, train each model on the same splits, diagnose over- and underfitting, "
                    "evaluate on the test set and compare. Writes report.html (self-contained), report.md "
                    "and results.json. Run the same command again to resume a study that was stopped: "
                    "finished models are kept.")
    _add_data_options(p, data_required=False)
    add_study_options(p)
    p.add_argument("-o", "--output", default="imgclf-study", help="study folder (default imgclf-study)")
    p.set_defaults(func=cmd_study)


def cmd_demo_study(args) -> int:
    """``imgclf demo`` after the synthetic data is made: the study, the transfer model included when
    its (small) ImageNet weights are cached or can be downloaded; offline the report says so."""
    from .study import study

    quiet_tensorflow_python_logs()
    kwargs = _study_kwargs(args)
    kwargs["title"] = args.title or "Synthetic shapes: the blog's models compared"
    result = study(args.data, output=args.output, download_weights=True, **kwargs)
    print_study(result)
    return 0
