"""``imgclf study`` and ``imgclf demo``: several models compared, written up as a report."""

from __future__ import annotations

from pathlib import Path

from .. import config
from ..data.sources import cache_dir
from ..data.synthetic import make_synthetic_dataset
from ..report.numbers import pct, points, seconds
from ..report.study import study
from .common import add_data_options, progress, quiet_python_logs

DEMO_DEFAULTS = {"epochs": 10, "image_size": 96}


def add_study_options(p, *, defaults: dict) -> None:
    """The options ``study`` and ``demo`` share (the data options come from ``add_data_options``)."""
    g = p.add_argument_group("study")
    config.add_arguments(g, config.StudyConfig)
    config.add_arguments(g, config.TrainConfig, study=True, defaults=defaults)


def _study(args, **extra):
    quiet_python_logs()
    cfg = config.from_args(args, base=config.TrainConfig(epochs=config.STUDY_EPOCHS))
    study_cfg = config.StudyConfig(**config.given(args, config.StudyConfig)).validate()
    options = {"title": study_cfg.title, "tune": study_cfg.tune, "tune_trials": study_cfg.tune_trials, **extra}
    if study_cfg.models:
        options["models"] = study_cfg.models
    result = study(cfg.data.source, cfg, output=args.output, progress=progress(args), **options)
    print_study(result)
    return 0


def cmd_study(args) -> int:
    return _study(args)


def cmd_demo(args) -> int:
    """The study on a generated dataset of shapes, with settings that finish in minutes on a CPU;
    the transfer model is included when its (small) ImageNet weights are cached or can be
    downloaded; offline the report says so."""
    root = Path(args.data_dir) if args.data_dir else cache_dir(args.cache) / "synthetic"
    make_synthetic_dataset(root, seed=0)
    print(f"synthetic dataset: {root}")
    args.data = str(root)
    return _study(args, download_weights=True,
                  **({} if args.title else {"title": "Synthetic shapes: the blog's models compared"}))


def print_study(result) -> None:
    """The end of ``imgclf study``: one line per model, the winner, the notes, the files."""
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


def add_commands(sub) -> None:
    p = sub.add_parser(
        "study", help="train and compare several models; write an HTML/Markdown report",
        description="Do what the blog post does by hand, for any dataset: look at the data and the "
                    "augmentation, train each model on the same splits, diagnose over- and underfitting, "
                    "evaluate on the test set and compare. Writes report.html (self-contained), report.md "
                    "and results.json. Run the same command again to resume a study that was stopped: "
                    "finished models are kept.")
    add_data_options(p, data_required=False)
    add_study_options(p, defaults={"epochs": config.STUDY_EPOCHS})
    p.add_argument("-o", "--output", default="imgclf-study", help="study folder (default imgclf-study)")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("demo", help="run a short study on a generated dataset of shapes",
                       description="Generate a synthetic class-per-folder dataset of shapes and run `imgclf "
                                   "study` on it with short settings (%(epochs)d epochs, %(size)dx%(size)d "
                                   "pixels): the whole report in a few minutes on a CPU. The transfer model is "
                                   "included when its ImageNet weights (a few MB) are in the Keras cache or can "
                                   "be downloaded; offline the report says how to add them."
                                   % {"epochs": DEMO_DEFAULTS["epochs"], "size": DEMO_DEFAULTS["image_size"]})
    add_data_options(p, data_required=False, defaults={"image_size": DEMO_DEFAULTS["image_size"]})
    p.add_argument("--data-dir", help="where to write the synthetic dataset (default: in the cache)")
    p.add_argument("-o", "--output", default="imgclf-demo", help="output folder")
    add_study_options(p, defaults={"epochs": DEMO_DEFAULTS["epochs"]})
    p.set_defaults(func=cmd_demo)
