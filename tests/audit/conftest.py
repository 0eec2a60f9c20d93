"""Generated datasets with planted duplicates."""

from __future__ import annotations

import shutil

import pytest

from tests.imagefactory import write_photo

TINT = {"cats": (230, 60, 40), "dogs": (40, 80, 230)}


@pytest.fixture
def planted(tmp_path):
    """train/validation/test of two classes (10/4/4 photos each) and planted copies: an exact
    copy filed under the other class, a re-encoded copy of a training photo in test, a resized
    copy beside its original. Returns (root, {kind: set of paths})."""
    root = tmp_path / "data"
    seed = 0
    for split, n in (("train", 10), ("validation", 4), ("test", 4)):
        for cls in TINT:
            for i in range(n):
                seed += 1
                write_photo(root / split / cls / f"{cls}.{seed}.jpg", seed, tint=TINT[cls])
    src = root / "train" / "cats" / "cats.1.jpg"
    shutil.copyfile(src, root / "train" / "dogs" / "copy-of-cats.1.jpg")
    write_photo(root / "test" / "cats" / "reencoded-cats.2.jpg", 2, tint=TINT["cats"], variant="reencoded")
    write_photo(root / "train" / "dogs" / "resized-dogs.11.jpg", 11, tint=TINT["dogs"], variant="resized")
    return root, {
        "conflicting_labels": {"train/cats/cats.1.jpg", "train/dogs/copy-of-cats.1.jpg"},
        "leak": {"train/cats/cats.2.jpg", "test/cats/reencoded-cats.2.jpg"},
        "redundant": {"train/dogs/dogs.11.jpg", "train/dogs/resized-dogs.11.jpg"},
    }


def checksums(root) -> dict:
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
