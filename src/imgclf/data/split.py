"""Splits: which file goes to train, validation and test. File-level, seeded, stratified.

A split is decided once and written to disk (``splits/<name>.txt``: ``class<TAB>path`` per
line, paths relative to the data root), so every model of a study, and every later
evaluation, sees exactly the same test images.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from .. import io
from ..errors import ConfigError, DataError
from .fingerprint import pixel_groups
from .scan import ImageRecord, ScanReport, natural_key

SPLITS = ("train", "validation", "test")
# With only train/ and validation/ folders, the test set is this fixed fraction of validation
# (the blog's proportion: one batch in five).
PRESPLIT_TEST_FRACTION = 0.2


def _check_fractions(validation: float, test: float) -> None:
    for name, f in (("validation", validation), ("test", test)):
        if not 0 <= f < 1:
            raise ConfigError(f"the {name} fraction must be in [0, 1), got {f}")
    if validation + test >= 1:
        raise ConfigError(f"validation + test fractions must leave images to train on (got {validation} + {test})")


def _stratified(records: list[ImageRecord], fractions: dict[str, float], seed: int,
                groups: list[list[int]] | None = None) -> dict[str, list[ImageRecord]]:
    """Split each class on its own, with its own seeded shuffle, in the given proportions.

    ``groups`` (indices into ``records``: duplicates of one another) each go to one split
    whole, counted under the class of their first file; the cut between two splits falls
    where the count comes closest to the fraction. Without groups, every image is a group of
    one and the split is exactly the plain per-class split.
    """
    out: dict[str, list[ImageRecord]] = {name: [] for name in fractions}
    grouped = {i for g in groups or [] for i in g}
    units = [[records[i]] for i in range(len(records)) if i not in grouped]
    units += [sorted((records[i] for i in g), key=lambda r: natural_key(r.path)) for g in groups or []]
    by_class: dict[str, list[list[ImageRecord]]] = {}
    for u in units:
        by_class.setdefault(u[0].label, []).append(u)
    names = list(fractions)
    for label in sorted(by_class, key=natural_key):
        items = sorted(by_class[label], key=lambda u: natural_key(u[0].path))
        random.Random(f"{seed}:{label}").shuffle(items)
        cum = np.concatenate([[0], np.cumsum([len(u) for u in items])])
        n = int(cum[-1])
        start, target = 0, 0
        for i, name in enumerate(names):
            if i == len(names) - 1:
                stop = len(items)
            else:
                target = min(n, target + int(round(n * fractions[name])))
                stop = max(start, int(np.argmin(np.abs(cum - target))))
            out[name] += [r for u in items[start:stop] for r in u]
            start = stop
    return out


def make_splits(
    report: ScanReport, *, validation: float = 0.2, test: float = 0.1, seed: int = 42
) -> dict[str, list[ImageRecord]]:
    """Assign every valid image of ``report`` to exactly one split.

    A class-per-folder tree is split by the fractions, per class. A pre-split tree keeps its
    folders; without a test/ folder, the test set is a fixed, stratified fifth of validation.
    Exact and near duplicates (by the scan's fingerprints) drawn by imgclf land in one split.
    """
    valid = report.valid
    if report.layout == "presplit":
        by_split = {s: [r for r in valid if r.split == s] for s in SPLITS}
        if not by_split["validation"] and not by_split["test"]:
            raise DataError(f"{report.root} has a train/ folder but no validation/ images")
        if not by_split["test"] and by_split["validation"]:
            parts = _stratified(by_split["validation"], {"test": PRESPLIT_TEST_FRACTION,
                                                         "validation": 1 - PRESPLIT_TEST_FRACTION}, seed,
                                pixel_groups(by_split["validation"]))
            by_split["validation"], by_split["test"] = parts["validation"], parts["test"]
        splits = by_split
    else:
        _check_fractions(validation, test)
        splits = _stratified(valid, {"test": test, "validation": validation,
                                     "train": 1 - validation - test}, seed, pixel_groups(valid))
    splits = {s: sorted(splits.get(s, []), key=lambda r: natural_key(r.path)) for s in SPLITS}
    assert_disjoint(splits)
    if not splits["train"]:
        raise DataError(f"no training images in {report.root}")
    return splits


def assert_disjoint(splits: dict[str, list[ImageRecord]]) -> None:
    seen: dict[str, str] = {}
    for name, records in splits.items():
        for r in records:
            if r.path in seen and seen[r.path] != name:
                raise DataError(f"{r.path} is in both the {seen[r.path]} and the {name} split")
            seen[r.path] = name


def write_splits(folder: str | os.PathLike, splits: dict[str, list[ImageRecord]]) -> Path:
    folder = Path(folder)
    for name, records in splits.items():
        io.write_text(folder / f"{name}.txt", "".join(f"{r.label}\t{r.path}\n" for r in records))
    return folder


def read_split_lists(folder: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """``{split: [(class, relative path), ...]}`` from a splits folder."""
    folder = Path(folder)
    out = {}
    for name in SPLITS:
        f = folder / f"{name}.txt"
        if not f.is_file():
            if name == "test":
                out[name] = []
                continue
            raise DataError(f"split list {f} is missing; remove --splits to make new splits")
        rows = []
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            label, sep, path = line.partition("\t")
            if not sep:
                raise DataError(f"{f}:{n} is not 'class<TAB>path'; the split list is damaged")
            rows.append((label, path))
        out[name] = rows
    return out


def apply_split_lists(report: ScanReport, lists: dict[str, list[tuple[str, str]]]) -> dict[str, list[ImageRecord]]:
    """Map saved split lists back onto a fresh scan; files now bad or gone, and files of classes
    the scan left out (``--classes``, ``--min-images``), are dropped."""
    by_path = {r.path: r for r in report.records}
    classes = set(report.class_names)
    splits: dict[str, list[ImageRecord]] = {}
    missing = []
    other_class = 0
    for name, rows in lists.items():
        kept = []
        for label, path in rows:
            r = by_path.get(path)
            if r is None:
                missing.append(path)
                continue
            if r.label != label:
                raise DataError(f"{path} was class {label!r} in the saved splits but is now in {r.label!r}")
            if r.label not in classes:
                other_class += r.ok
            elif r.ok and not r.excluded:
                kept.append(r)
        splits[name] = kept
    if other_class:
        report.warnings.append(f"{other_class} file(s) of the saved splits belong to classes left out now; "
                               "they are not used")
    if missing and len(missing) == sum(len(v) for v in lists.values()):
        raise DataError(
            f"none of the files in the saved splits exist under {report.root}; is this the same data?"
        )
    assert_disjoint(splits)
    return splits
