"""The ``imgclf`` command line: argument parsing only; every command calls the Python API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__, backend
from .errors import ImgclfError


def _quiet_tensorflow() -> None:
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


def _progress(args) -> bool:
    return not getattr(args, "quiet", False)


def _add_data_options(p: argparse.ArgumentParser, *, data_required: bool = True) -> None:
    if data_required:
        p.add_argument("data", help="folder (one sub-folder per class, or train/ validation/ [test/]), "
                                    ".zip/.tar.gz, URL, or a known name (cats_and_dogs_filtered)")
    else:
        p.add_argument("data", nargs="?", default=None,
                       help="folder, archive, URL or known name (default: cats_and_dogs_filtered)")
    p.add_argument("--data-path", help="where a known dataset already lies (no download)")
    p.add_argument("--image-size", type=int, default=None, help="square input size in pixels")
    p.add_argument("--validation", type=float, default=0.2, help="validation fraction (class-per-folder data)")
    p.add_argument("--test", type=float, default=0.1, help="test fraction (class-per-folder data)")
    p.add_argument("--seed", type=int, default=42, help="seed for splits, shuffling and initialisation")
    p.add_argument("--splits", help="reuse the split lists in this folder (e.g. RUN/splits)")
    p.add_argument("--classes", metavar="A,B,C", help="use only these class folders, in this order")
    p.add_argument("--min-images", type=int, default=1, metavar="N",
                   help="leave out classes with fewer than N usable images (default 1: empty classes)")
    p.add_argument("--fit", choices=("crop", "stretch", "pad"), default="crop",
                   help="how to bring images to the input size: keep the aspect ratio and centre-crop "
                        "(default), stretch (Keras' default) or pad")
    p.add_argument("--interpolation", choices=("bilinear", "nearest", "bicubic", "lanczos", "area"),
                   default="bilinear")
    p.add_argument("--cache", choices=("disk", "memory", "none"), default="disk",
                   help="where decoded images are kept between epochs and runs")
    p.add_argument("--cache-dir", help="imgclf cache folder (default $IMGCLF_CACHE or ~/.cache/imgclf)")
    p.add_argument("--exclude", metavar="FILE",
                   help="leave out the files a reviewed list names (the audit's issues.csv with 'drop' "
                        "actions, or one path per line); nothing is moved or deleted")
    p.add_argument("--relabel", metavar="FILE",
                   help="give files another class: the audit's issues.csv with 'relabel:CLASS' actions, "
                        "or 'path,CLASS' per line; the files stay where they are")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _load(args, image_size: int | None = None, **options):
    from .data import load_dataset

    return load_dataset(
        args.data, image_size=args.image_size or image_size or 160, validation=args.validation,
        test=args.test, seed=args.seed, splits=args.splits, data_path=args.data_path,
        cache=args.cache_dir, cache_mode=args.cache, interpolation=args.interpolation, fit=args.fit,
        classes=args.classes, min_images=args.min_images, exclude=args.exclude, relabel=args.relabel,
        progress=_progress(args), **options,
    )


# -- commands ------------------------------------------------------------------------------

def cmd_inspect(args) -> int:
    from .overview import format_summary, inspect

    # the whole report, then every problem; exit status 2 only when nothing can be trained
    summary = inspect(args.data, args.output, classes=args.classes, min_images=args.min_images,
                      exclude=args.exclude, relabel=args.relabel,
                      data_path=args.data_path, cache=args.cache_dir, progress=_progress(args),
                      image_size=args.image_size or 160, validation=args.validation, test=args.test,
                      seed=args.seed, splits=args.splits, cache_mode=args.cache,
                      interpolation=args.interpolation, fit=args.fit)
    print(format_summary(summary))
    if summary["error"]:
        from .errors import DataError

        raise DataError(summary["error"])  # after the report: one line, exit status 2
    return 0


def cmd_demo(args) -> int:
    """The study on a generated dataset of shapes, with settings that finish in minutes on a CPU."""
    from .data.synthetic import make_synthetic_dataset
    from .data.sources import cache_dir
    from .report.commands import cmd_demo_study

    root = Path(args.data_dir) if args.data_dir else cache_dir(args.cache_dir) / "synthetic"
    make_synthetic_dataset(root, seed=0)
    print(f"synthetic dataset: {root}")
    args.data = str(root)
    return cmd_demo_study(args)


def _train_options(args) -> dict:
    opts = {}
    for name in ("epochs", "batch_size", "image_size", "optimizer", "learning_rate", "label_smoothing",
                 "class_weight", "early_stopping", "fine_tune", "fine_tune_epochs", "fine_tune_lr_factor", "seed", "alpha",
                 "weights", "augment", "dropout", "pooling", "views", "precision", "strategy", "keep",
                 "calibrate", "hidden_units", "weight_decay", "track"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    if getattr(args, "no_feature_cache", False):
        opts["feature_cache"] = False
    if getattr(args, "jit", False):
        opts["jit"] = True
    if getattr(args, "deterministic", False):
        opts["deterministic"] = True
    if opts.get("weights", "").lower() == "none":
        opts["weights"] = None
    return opts


def _print_metrics(run) -> None:
    m = run.metrics()
    parts = []
    for split in ("validation", "test"):
        acc = (m.get(split) or {}).get("accuracy")
        if acc is not None:
            parts.append(f"{split} accuracy {acc:.1%}")
    base = (m.get("baseline") or {}).get("test_accuracy")
    if base is not None:
        parts.append(f"majority baseline {base:.1%}")
    print(f"run folder: {run.path}")
    if parts:
        print(", ".join(parts))
    kept = m.get("kept_epoch") or {}
    if kept:
        print("kept      " + ", ".join(f"{stage.replace('_', '-')} stage: epoch {e}" for stage, e in kept.items())
              + (" (best validation accuracy)" if m.get("keep") == "best" else " (last epoch)"))
    tuned = m.get("fine_tune")
    if tuned:
        before, after = tuned["validation_accuracy"]["head"], tuned["validation_accuracy"]["fine_tuned"]
        if tuned["kept"]:
            print(f"fine-tuning: validation accuracy {before:.1%} -> {after:.1%}")
        else:
            print(f"fine-tuning lowered validation accuracy ({before:.1%} -> {after:.1%}): "
                  "the model keeps the head stage's weights")
    if m.get("calibration"):
        from .calibration import describe

        print(f"calibration: {describe(m['calibration'])}")


def cmd_train(args) -> int:
    from .training import resume, train

    dist = {"workers": args.workers, "worker_index": args.worker_index}
    if args.resume:
        run = resume(args.resume, data=args.data, progress=_progress(args), **dist)
    else:
        if args.data is None:
            raise_usage("train needs DATA (or --resume RUN)")
        if args.model is None:
            raise_usage("train needs --model NAME (see `imgclf models`)")
        ds = _load(args, image_size=_model_size(args))
        run = train(ds, args.model, output=args.output, progress=_progress(args), **dist, **_train_options(args))
    if run.complete:
        _print_metrics(run)
    return 0


def cmd_tune(args) -> int:
    from .report.commands import quiet_tensorflow_python_logs
    from .tuning import load_space, optuna, tune

    quiet_tensorflow_python_logs()  # a model per trial: TensorFlow's retracing notices are expected
    if args.model is None:
        raise_usage("tune needs --model NAME (see `imgclf models`)")
    optuna()  # a missing package is said before the data is read
    space = load_space(args.space) if args.space else None  # a bad file is said before any work
    ds = _load(args, image_size=_model_size(args))
    result = tune(ds, args.model, trials=args.trials, time_budget=args.time_budget, space=space,
                  output=args.output, progress=_progress(args), echo=print, **_train_options(args))
    s = result.search
    print(f"search    {s.get('trials')} trials ({s.get('pruned')} pruned), best trial {s.get('best_trial')}: "
          f"validation {s['best_validation_accuracy']:.1%}, the defaults {s['default_validation_accuracy']:.1%}"
          if s.get("default_validation_accuracy") is not None and s.get("best_validation_accuracy") is not None
          else f"search    {s.get('trials')} trials")
    print(f"figure    {result.run.path / 'tune' / 'tune.png'}")
    print(f"trials    {result.run.path / 'tune' / 'trials.csv'}")
    if result.run.complete:
        _print_metrics(result.run)
    return 0


def _model_size(args) -> int:
    from .models import get_spec

    return args.image_size or get_spec(args.model).default_image_size


def cmd_evaluate(args) -> int:
    from .run import load

    run = load(args.run)
    result = run.evaluate(args.split, data=args.data, progress=_progress(args), tta=args.tta)
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


def cmd_models(args) -> int:
    from .models import list_models

    specs = list_models()
    width = max(len(s.name) for s in specs)
    print(f"{'name':<{width}}  {'kind':<8}  {'size':>4}  description")
    for s in specs:
        print(f"{s.name:<{width}}  {s.kind:<8}  {s.default_image_size:>4}  {s.description}")
    return 0


def cmd_augment_preview(args) -> int:
    from .augment_preview import augment_preview

    ds = _load(args)
    paths = augment_preview(ds, args.output, augment=args.augment, seed=args.seed)
    for p in paths:
        print(f"figure    {p}")
    return 0


class UsageError(Exception):
    pass


def raise_usage(message: str):
    raise UsageError(message)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("-m", "--model", help="registry name (see `imgclf models`)")
    g.add_argument("--epochs", type=int, help="epochs (for transfer models: of the head)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", choices=("adam", "adamw", "sgd", "rmsprop"))
    g.add_argument("--learning-rate", "--lr", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--class-weight", choices=("balanced",), help="weight classes by inverse frequency")
    g.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop when validation loss stalls")
    g.add_argument("--fine-tune", type=int, metavar="N", help="then unfreeze the top N backbone layers")
    g.add_argument("--fine-tune-epochs", type=int, help="epochs of fine-tuning (default: half of --epochs)")
    g.add_argument("--fine-tune-lr-factor", type=float,
                   help="fine-tuning learning rate as a fraction of --learning-rate (default 0.01)")
    g.add_argument("--alpha", type=float, help="MobileNet width multiplier")
    g.add_argument("--weights", help="backbone weights: imagenet (default), none, or a file")
    g.add_argument("--augment", help="augmentation: 'none' or e.g. flip=horizontal,rotation=0.2,zoom=0.1")
    g.add_argument("--dropout", type=float)
    g.add_argument("--hidden-units", type=int, help="transfer models: a Dense(relu) layer this wide before the classifier")
    g.add_argument("--weight-decay", type=float, help="decoupled weight decay (default: the optimizer's)")
    g.add_argument("--pooling", choices=("avg", "max"))
    g.add_argument("--views", type=int, help="cached augmented views per image for a frozen backbone")
    g.add_argument("--no-feature-cache", action="store_true", help="run the frozen backbone every epoch")
    g.add_argument("--precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
                   help="compute precision (default auto: bfloat16 for CNNs trained from scratch on CPUs "
                        "with native bfloat16, else float32); the saved model is float32")
    g.add_argument("--keep", choices=("best", "last"),
                   help="end each stage with the weights of its best validation epoch (default) or its last")
    g.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                   help="fit a temperature on the validation split and build it into the saved model "
                        "(default on; kept only if it lowers validation ECE)")
    g.add_argument("--jit", action="store_true", help="compile with XLA")
    g.add_argument("--strategy", choices=("auto", "none", "mirrored", "multi-worker"))
    g.add_argument("--track", metavar="tensorboard,mlflow",
                   help="log the run to TensorBoard (RUN/tensorboard/) and/or MLflow ($MLFLOW_TRACKING_URI)")
    g.add_argument("--deterministic", action="store_true", help="deterministic ops (slower)")
    g.add_argument("--workers", metavar="HOST:PORT,...", help="multi-worker training: every worker's address")
    g.add_argument("--worker-index", type=int, default=None, help="this worker's position in --workers (0 = chief)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclf",
        description="Train, evaluate, export and serve image classifiers from a folder of labelled images.",
    )
    parser.add_argument("--version", action="version", version=f"imgclf {__version__} ({backend.versions()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="scan a dataset: counts, bad files, baseline, sample figures",
                       description="Scan every image once and report classes, counts, sizes, formats, "
                                   "bad files and the majority baseline; write the sample grid and the "
                                   "label-frequency chart.")
    _add_data_options(p)
    p.add_argument("-o", "--output", default="imgclf-inspect", help="folder for summary.json and figures/")
    p.set_defaults(func=cmd_inspect)

    from .report.commands import DEMO_DEFAULTS, add_study_options

    p = sub.add_parser("demo", help="run a short study on a generated dataset of shapes",
                       description="Generate a synthetic class-per-folder dataset of shapes and run `imgclf "
                                   "study` on it with short settings (%(epochs)d epochs, %(size)dx%(size)d "
                                   "pixels): the whole report in a few minutes on a CPU. The transfer model is "
                                   "included when its ImageNet weights (a few MB) are in the Keras cache or can "
                                   "be downloaded; offline the report says how to add them."
                                   % {"epochs": DEMO_DEFAULTS["epochs"], "size": DEMO_DEFAULTS["image_size"]})
    _add_data_options(p, data_required=False)
    p.add_argument("--data-dir", help="where to write the synthetic dataset (default: in the cache)")
    p.add_argument("-o", "--output", default="imgclf-demo", help="output folder")
    add_study_options(p, epochs=DEMO_DEFAULTS["epochs"], image_size=DEMO_DEFAULTS["image_size"])
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list the models in the registry",
                       description="List every model name with its kind, default input size and description.")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a model into a run folder",
                       description="Train a registry model on DATA; everything goes to the run folder "
                                   "(runs/<model>-<timestamp> by default). --resume RUN carries on a killed run.")
    _add_data_options(p, data_required=False)
    _add_train_options(p)
    p.add_argument("-o", "--output", help="run folder (default runs/<model>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN", help="carry on an interrupted run")
    p.set_defaults(func=cmd_train)

    from .tuning import DEFAULT_SPACE, DEFAULT_TRIALS

    p = sub.add_parser("tune", help="search a model's training options, then train the best into a run folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Search the head's options with Optuna (TPE sampler seeded by --seed, median "
                                   "pruning) on the frozen backbone's cached features, each trial scored on the "
                                   "validation split only; trial 0 is the defaults. The best options then train a "
                                   "normal run folder whose config.json records the search; RUN/tune/ holds "
                                   "optuna.db (run the same command again to carry on), trials.csv and tune.png. "
                                   "A training option given here is fixed, not searched.\n\ndefault space:\n  "
                                   + "\n  ".join(_describe_default_space(DEFAULT_SPACE)))
    _add_data_options(p)
    _add_train_options(p)
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

    p = sub.add_parser("augment-preview", help="3x3 grids of augmented images",
                       description="Write the blog's 3x3 grids for flip, rotation and the whole augmentation stack.")
    _add_data_options(p)
    p.add_argument("--augment", default="flip=horizontal,rotation=0.2", help="the stack to preview")
    p.add_argument("-o", "--output", default="imgclf-augment", help="folder for the figures")
    p.set_defaults(func=cmd_augment_preview)

    # Commands that live beside the API they call.
    from .audit.commands import add_commands as add_audit_commands
    from .inference.commands import add_commands as add_inference_commands
    from .report.commands import add_commands as add_report_commands

    add_inference_commands(sub)
    add_report_commands(sub)
    add_audit_commands(sub)
    return parser


def _describe_default_space(space: dict) -> list[str]:
    from .tuning import describe_space

    return describe_space(space)


NO_TENSORFLOW = {"inspect"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        if args.command not in NO_TENSORFLOW:
            backend.check()
            if backend.is_tensorflow():
                _quiet_tensorflow()
        return int(args.func(args) or 0)
    except UsageError as e:
        parser.error(str(e))
    except ImgclfError as e:
        # one line, printable whatever the terminal: undecodable path bytes shown as \xNN
        message = " ".join(str(e).split("\n"))
        try:
            message = message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"imgclf: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("imgclf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
