"""``imgclf inspect``, ``models``, ``augment-preview`` and ``audit``: the data, before training."""

from __future__ import annotations

from .. import config
from ..audit import audit
from ..augment_preview import augment_preview
from ..errors import DataError
from ..models import get_spec, list_models
from ..overview import format_summary, inspect
from .common import add_data_options, load, progress


def cmd_inspect(args) -> int:
    # the whole report, then every problem; exit status 2 only when nothing can be trained
    summary = inspect(args.data, args.output, config.data_from_args(args), image_size=args.image_size or 160,
                      progress=progress(args))
    print(format_summary(summary))
    if summary["error"]:
        raise DataError(summary["error"])  # after the report: one line, exit status 2
    return 0


def cmd_models(args) -> int:
    specs = list_models()
    width = max(len(s.name) for s in specs)
    print(f"{'name':<{width}}  {'kind':<8}  {'size':>4}  description")
    for s in specs:
        print(f"{s.name:<{width}}  {s.kind:<8}  {s.default_image_size:>4}  {s.description}")
    return 0


def cmd_augment_preview(args) -> int:
    ds = load(args)
    for p in augment_preview(ds, args.output, augment=args.augment, seed=args.seed or config.DataConfig.seed):
        print(f"figure    {p}")
    return 0


def cmd_audit(args) -> int:
    size = args.image_size or get_spec(args.model).default_image_size
    ds = load(args, image_size=size)
    result = audit(ds, model=args.model, weights=config.TrainConfig(weights=args.weights).validate().weights,
                   alpha=args.alpha, folds=args.folds, progress=progress(args))
    files = result.save(args.output)
    print(result.format())
    print()
    for name, path in files.items():
        print(f"{name:<9} {path}")
    print("next      fill the action column of issues.csv (keep, drop, relabel:CLASS), then pass it to "
          "--exclude / --relabel of inspect, train, study or audit")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("inspect", help="scan a dataset: counts, bad files, baseline, sample figures",
                       description="Scan every image once and report classes, counts, sizes, formats, "
                                   "bad files and the majority baseline; write the sample grid and the "
                                   "label-frequency chart.")
    add_data_options(p)
    p.add_argument("-o", "--output", default="imgclf-inspect", help="folder for summary.json and figures/")
    p.set_defaults(func=cmd_inspect, tensorflow=False)

    p = sub.add_parser("models", help="list the models in the registry",
                       description="List every model name with its kind, default input size and description.")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("augment-preview", help="3x3 grids of augmented images",
                       description="Write the blog's 3x3 grids for flip, rotation and the whole augmentation stack.")
    add_data_options(p)
    p.add_argument("--augment", default="flip=horizontal,rotation=0.2", help="the stack to preview")
    p.add_argument("-o", "--output", default="imgclf-augment", help="folder for the figures")
    p.set_defaults(func=cmd_augment_preview)

    p = sub.add_parser(
        "audit", help="find duplicates, leaks across splits, suspected mislabels and outliers",
        description="Audit a dataset before trusting a score: exact and near duplicates (grouped as "
                    "conflicting labels, leaks across splits and plain redundancy), suspected mislabels "
                    "(out-of-fold linear head on frozen backbone features + confident learning), feature "
                    "outliers and cheap pixel checks (near-constant, dark, bright, blurry, extreme aspect, "
                    "tiny). Writes audit.json, issues.csv (with an empty action column to fill) and figures. "
                    "Nothing is moved or deleted.")
    add_data_options(p, data_required=False)
    p.add_argument("-m", "--model", default="mobilenet_v2", help="backbone for the feature checks (default mobilenet_v2)")
    p.add_argument("--weights", default="imagenet", help="backbone weights: imagenet (default), none, or a file")
    p.add_argument("--alpha", type=float, help="MobileNet width multiplier")
    p.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold label check (default 5)")
    p.add_argument("-o", "--output", default="imgclf-audit", help="folder for audit.json, issues.csv and figures/")
    p.set_defaults(func=cmd_audit)
