"""The ``imgclf`` command line: argument parsing only; every command calls the Python API.

The training and data options are generated from :mod:`imgclf.config`; each module here
registers the commands of one stage (``data``: inspect, models, augment-preview, audit;
``train``: train, tune, evaluate; ``study``: study, demo; ``inference``: predict, export,
serve).
"""

from __future__ import annotations

import argparse
import sys

from .. import backend
from ..errors import ImgclfError, UsageError
from ..version import __version__
from . import data, inference, study, train
from .common import print_metrics, quiet_tensorflow

__all__ = ["build_parser", "main", "print_metrics"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgclf",
        description="Train, evaluate, export and serve image classifiers from a folder of labelled images.",
    )
    parser.add_argument("--version", action="version", version=f"imgclf {__version__} ({backend.versions()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in (data, train, study, inference):
        stage.add_commands(sub)
    return parser


def _one_line(e: BaseException) -> str:
    """The message on one line, printable whatever the terminal: undecodable path bytes as \\xNN."""
    message = " ".join(str(e).split("\n"))
    try:
        return message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return message.encode("utf-8", "backslashreplace").decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        if getattr(args, "tensorflow", True):  # every command but inspect runs Keras
            backend.check()
            if backend.is_tensorflow():
                quiet_tensorflow()
        return int(args.func(args) or 0)
    except UsageError as e:
        parser.error(str(e))
    except ImgclfError as e:
        print(f"imgclf: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("imgclf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
