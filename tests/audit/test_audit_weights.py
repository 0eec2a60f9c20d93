"""The feature checks with real backbone weights: flipped labels, confirmed near copies."""

from __future__ import annotations

import pytest

import imgclf
from imgclf.audit import audit
from tests.audit.conftest import TINT
from tests.conftest import MOBILENET_WEIGHTS, requires_weights
from tests.imagefactory import write_photo


@pytest.mark.integration
@requires_weights
def test_flipped_labels_and_cropped_copies_are_found_with_features(tmp_path):
    root = tmp_path / "data"
    flipped = {"cats/cats.3.jpg", "dogs/dogs.107.jpg"}
    for cls in TINT:
        for i in range(24):
            seed = i + (100 if cls == "dogs" else 0)
            path = f"{cls}/{cls}.{seed}.jpg"
            filed = ("dogs" if cls == "cats" else "cats") if path in flipped else cls
            write_photo(root / filed / f"{cls}.{seed}.jpg", seed, tint=TINT[cls], tint_weight=0.7)
    write_photo(root / "cats" / "cropped-cats.5.jpg", 5, tint=TINT["cats"], variant="cropped", tint_weight=0.7)
    ds = imgclf.load_dataset(root, image_size=224, progress=False)
    a = audit(ds, weights=MOBILENET_WEIGHTS, alpha=0.35, folds=4, progress=False)
    assert a.settings["features"] and a.checks["label"]["ran"] and a.checks["outlier"]["ran"]
    suspects = {li["path"]: li for li in a.label_issues}
    assert {"dogs/cats.3.jpg", "cats/dogs.107.jpg"} <= set(suspects) and len(suspects) <= 4
    assert suspects["dogs/cats.3.jpg"]["suggested"] == "cats"
    groups = [{f["path"] for f in g["files"]} for g in a.groups]
    assert {"cats/cats.5.jpg", "cats/cropped-cats.5.jpg"} in groups
    files = a.save(tmp_path / "audit")
    assert set(files) >= {"issues", "audit", "label_issues", "duplicates"}
