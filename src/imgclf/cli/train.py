"""``imgclf train``, ``tune`` and ``evaluate``."""

from __future__ import annotations

import argparse

from .. import config
from ..models import get_spec
from ..run import load as load_run
from ..training import resume, train
from ..tuning import DEFAULT_SPACE, DEFAULT_TRIALS, describe_space, load_space, optuna, tune
from .common import add_data_options, load, print_metrics, progress, quiet_python_logs, raise_usage


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Every training option of :class:`~imgclf.config.TrainConfig`, and the multi-worker addresses."""
    g = p.add_argument_group("training")
    config.add_arguments(g, config.TrainConfig)
    g.add_argument("--workers", metavar="HOST:PORT,...", help="multi-worker training: every worker's address")
    g.add_argument("--worker-index", type=int, default=None, help="this worker's position in --workers (0 = chief)")


def _model_size(args) -> int:
    return args.image_size or get_spec(args.model).default_image_size


def cmd_train(args) -> int:
    dist = {"workers": args.workers, "worker_index": args.worker_index}
    if args.resume:
        run = resume(args.resume, data=args.data, progress=progress(args), **dist)
    else:
        if args.data is None:
            raise_usage("train needs DATA (or --resume RUN)")
        if args.model is None:
            raise_usage("train needs --model NAME (see `imgclf models`)")
        cfg = config.from_args(args)
        ds = load(args, image_size=_model_size(args))
        run = train(ds, cfg, output=args.output, progress=progress(args), **dist)
    if run.complete:
        print_metrics(run)
    return 0


def cmd_tune(args) -> int:
    quiet_python_logs()  # a model per trial: TensorFlow's retracing notices are expected
    if args.model is None:
        raise_usage("tune needs --model NAME (see `imgclf models`)")
    optuna()  # a missing package is said before the data is read
    space = load_space(args.space) if args.space else None  # a bad file is said before any work
    ds = load(args, image_size=_model_size(args))
    options = config.given(args, config.TrainConfig)
    options.pop("model")
    options["seed"] = ds.seed  # --seed seeds the sampler too
    result = tune(ds, args.model, trials=args.trials, time_budget=args.time_budget, space=space,
                  output=args.output, progress=progress(args), echo=print, **options)
    s = result.search
    print(f"search    {s.get('trials')} trials ({s.get('pruned')} pruned), best trial {s.get('best_trial')}: "
          f"validation {s['best_validation_accuracy']:.1%}, the defaults {s['default_validation_accuracy']:.1%}"
          if s.get("default_validation_accuracy") is not None and s.get("best_validation_accuracy") is not None
          else f"search    {s.get('trials')} trials")
    print(f"figure    {result.run.path / 'tune' / 'tune.png'}")
    print(f"trials    {result.run.path / 'tune' / 'trials.csv'}")
    if result.run.complete:
        print_metrics(result.run)
    return 0


def cmd_evaluate(args) -> int:
    run = load_run(args.run)
    result = run.evaluate(args.split, data=args.data, progress=progress(args), tta=args.tta)
    print(format_evaluation(result, run.class_names, args.split))
    return 0


def format_evaluation(result: dict, class_names: list[str], split: str) -> str:
    if not result.get("count"):
        return f"the {split} split is empty"
    lines = [f"{split}: {result['count']} images, accuracy {result['accuracy']:.1%}, loss {result['loss']:.4f}, "
             f"majority baseline {result['baseline_accuracy']:.1%} ({result['majority_class']})", ""]
    lf = result.get("leak_free") or {}
    if lf.get("leaked"):
        lines.insert(1, f"leak-free: {lf['count']} images with no duplicate in another split, accuracy "
                        f"{lf['accuracy']:.1%} ({lf['leaked']} left out; see `imgclf audit`)")
    width = max(5, *(len(n) for n in class_names))
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for name in class_names:
        c = result["per_class"][name]
        lines.append(f"{name:<{width}}  {c['precision']:>9.1%}  {c['recall']:>6.1%}  {c['f1']:>5.1%}  {c['support']:>7}")
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    for name, row in zip(class_names, result["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>6}" for v in row))
    if result.get("tta"):
        t = result["tta"]
        lines.append(f"test-time augmentation ({t['mode']}, {t['views']} views): accuracy {t['accuracy_without']:.1%} "
                     f"-> {t['accuracy']:.1%}, loss {t['loss_without']:.4f} -> {t['loss']:.4f}, "
                     f"{t['changed']} answers changed")
    for name, path in result.get("figures", {}).items():
        lines.append(f"figure    {path}")
    return "\n".join(lines)


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a model into a run folder",
                       description="Train a registry model on DATA; everything goes to the run folder "
                                   "(runs/<model>-<timestamp> by default). --resume RUN carries on a killed run.")
    add_data_options(p, data_required=False)
    add_train_options(p)
    p.add_argument("-o", "--output", help="run folder (default runs/<model>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN", help="carry on an interrupted run")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="search a model's training options, then train the best into a run folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Search the head's options with Optuna (TPE sampler seeded by --seed, median "
                                   "pruning) on the frozen backbone's cached features, each trial scored on the "
                                   "validation split only; trial 0 is the defaults. The best options then train a "
                                   "normal run folder whose config.json records the search; RUN/tune/ holds "
                                   "optuna.db (run the same command again to carry on), trials.csv and tune.png. "
                                   "A training option given here is fixed, not searched.\n\ndefault space:\n  "
                                   + "\n  ".join(describe_space(DEFAULT_SPACE)))
    add_data_options(p)
    add_train_options(p)
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help=f"trials in all (default {DEFAULT_TRIALS})")
    p.add_argument("--time-budget", type=float, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--space", metavar="FILE", help="JSON or YAML file overriding parameters of the default space")
    p.add_argument("-o", "--output", help="run folder (default runs/<model>-tuned-<timestamp>)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="evaluate a run on one of its splits",
                       description="Loss, accuracy, majority baseline, per-class precision/recall/F1, "
                                   "confusion matrix and the most confidently wrong images.")
    p.add_argument("run", help="run folder")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--data", help="where the run's data lies now, if it moved")
    p.add_argument("--tta", nargs="?", const="flip", choices=("flip", "crops"),
                   help="also report the accuracy with test-time augmentation: the image and its mirror "
                        "(flip, the default) or those and four corner crops (crops)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)
