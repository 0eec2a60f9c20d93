"""Command-line commands for this part of imgclf (parsing only; they call the Python API)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this part's sub-commands on the ``imgclf`` parser."""
