"""``imgclf audit``: parsing only; it calls :func:`imgclf.audit.audit`."""

from __future__ import annotations

import argparse


def cmd_audit(args) -> int:
    from ..cli import _load, _progress
    from ..models import get_spec
    from . import audit

    size = args.image_size or get_spec(args.model).default_image_size
    ds = _load(args, image_size=size)
    weights = None if (args.weights or "").strip().lower() in ("none", "random") else args.weights
    result = audit(ds, model=args.model, weights=weights, alpha=args.alpha, folds=args.folds,
                   progress=_progress(args))
    files = result.save(args.output)
    print(result.format())
    print()
    for name, path in files.items():
        print(f"{name:<9} {path}")
    print("next      fill the action column of issues.csv (keep, drop, relabel:CLASS), then pass it to "
          "--exclude / --relabel of inspect, train, study or audit")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from ..cli import _add_data_options

    p = sub.add_parser(
        "audit", help="find duplicates, leaks across splits, suspected mislabels and outliers",
        description="Audit a dataset before trusting a score: exact and near duplicates (grouped as "
                    "conflicting labels, leaks across splits and plain redundancy), suspected mislabels "
                    "(out-of-fold linear head on frozen backbone features + confident learning), feature "
                    "outliers and cheap pixel checks (near-constant, dark, bright, blurry, extreme aspect, "
                    "tiny). Writes audit.json, issues.csv (with an empty action column to fill) and figures. "
                    "Nothing is moved or deleted.")
    _add_data_options(p, data_required=False)
    p.add_argument("-m", "--model", default="mobilenet_v2", help="backbone for the feature checks (default mobilenet_v2)")
    p.add_argument("--weights", default="imagenet", help="backbone weights: imagenet (default), none, or a file")
    p.add_argument("--alpha", type=float, help="MobileNet width multiplier")
    p.add_argument("--folds", type=int, default=5, help="folds of the out-of-fold label check (default 5)")
    p.add_argument("-o", "--output", default="imgclf-audit", help="folder for audit.json, issues.csv and figures/")
    p.set_defaults(func=cmd_audit)
