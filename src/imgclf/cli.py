"""The ``imgclf`` command line: argument parsing only; every command calls the Python API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ImgclfError


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


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
    p.add_argument("--fit", choices=("stretch", "crop", "pad"), default="stretch",
                   help="how to bring images to the input size")
    p.add_argument("--interpolation", choices=("bilinear", "nearest", "bicubic", "lanczos", "area"),
                   default="bilinear")
    p.add_argument("--cache", choices=("disk", "memory", "none"), default="disk",
                   help="where decoded images are kept between epochs and runs")
    p.add_argument("--cache-dir", help="imgclf cache folder (default $IMGCLF_CACHE or ~/.cache/imgclf)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _load(args, image_size: int | None = None):
    from .data import load_dataset

    return load_dataset(
        args.data, image_size=args.image_size or image_size or 160, validation=args.validation,
        test=args.test, seed=args.seed, splits=args.splits, data_path=args.data_path,
        cache=args.cache_dir, cache_mode=args.cache, interpolation=args.interpolation, fit=args.fit,
        progress=_progress(args),
    )


# -- commands ------------------------------------------------------------------------------

def cmd_inspect(args) -> int:
    from .overview import describe, format_summary

    ds = _load(args)
    summary = describe(ds, args.output)
    print(format_summary(summary))
    return 0


def cmd_demo(args) -> int:
    from .data.synthetic import make_synthetic_dataset
    from .data.sources import cache_dir

    root = Path(args.data_dir) if args.data_dir else cache_dir(args.cache_dir) / "synthetic"
    make_synthetic_dataset(root, seed=0)
    print(f"synthetic dataset: {root}")
    args.data = str(root)
    return cmd_inspect(args)


COMMANDS = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclf",
        description="Train, evaluate, export and serve image classifiers from a folder of labelled images.",
    )
    parser.add_argument("--version", action="version", version=f"imgclf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="scan a dataset: counts, bad files, baseline, sample figures",
                       description="Scan every image once and report classes, counts, sizes, formats, "
                                   "bad files and the majority baseline; write the sample grid and the "
                                   "label-frequency chart.")
    _add_data_options(p)
    p.add_argument("-o", "--output", default="imgclf-inspect", help="folder for summary.json and figures/")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="make a small synthetic dataset and run on it",
                       description="Generate a synthetic class-per-folder dataset of shapes and inspect it.")
    _add_data_options(p, data_required=False)
    p.add_argument("--data-dir", help="where to write the synthetic dataset (default: in the cache)")
    p.add_argument("-o", "--output", default="imgclf-demo", help="output folder")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ImgclfError as e:
        print(f"imgclf: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("imgclf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
