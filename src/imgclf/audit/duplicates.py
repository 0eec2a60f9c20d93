"""Exact and near duplicates, and what they mean: conflicting labels, leaks across splits,
plain redundancy.

Candidates come from the scan's fingerprints (:mod:`imgclf.data.fingerprint`): equal bytes,
or perceptual hashes within ``CANDIDATE_BITS`` bits. With backbone features a near pair is
kept when the cosine similarity of the two images' features reaches ``COSINE`` (or
``COSINE_CLOSE_HASH`` for pairs within ``PIXEL_ONLY_BITS``); without them only pairs within
``PIXEL_ONLY_BITS`` bits are kept (fewer cropped copies found, none false).
Pairs whose decoded pixels are identical are exact too, whatever their bytes.
"""

from __future__ import annotations

import numpy as np

from ..data.fingerprint import CANDIDATE_BITS, PIXEL_ONLY_BITS, connected, exact_pairs, near_pairs

# Cosine similarity of pooled backbone features at or above which a candidate pair is a
# duplicate. Measured on cats_and_dogs_filtered with MobileNetV2 (alpha 0.35, 224 px;
# bench/label_audit.py): planted copies cropped by 5-10% score 0.89-0.96 against their
# original, re-encoded ones 0.95-1.0, colour-jittered ones 0.99-1.0; of the 1,308 pairs of
# different photos within CANDIDATE_BITS bits, none scores above 0.77.
COSINE = 0.85
# Copies resized to half size lose detail at the model's input size (cosine down to 0.84) but
# keep their hash (0-6 bits): pairs within PIXEL_ONLY_BITS need only this similarity, a guard
# against unrelated images that hash alike (flat, near-constant frames).
COSINE_CLOSE_HASH = 0.7

KINDS = ("conflicting_labels", "leak", "redundant")


def find_groups(records: list, split_of: dict[str, str], features: np.ndarray | None = None,
                decoded=None) -> tuple[list[dict], dict]:
    """Duplicate groups among ``records`` (the rows of the dataset, ``split_of`` naming the
    split of every file in one), and the thresholds used.

    ``features``/``decoded``: the rows' backbone features and decoded pixels, if at hand.
    Each group: ``files`` ([{path, class, split}]), ``kinds`` (of :data:`KINDS`), ``kind``
    (the first of them), ``exact`` (all copies identical), ``bits`` and ``cosine`` (the
    farthest confirmed pair's distance and similarity).
    """
    rows = [i for i, r in enumerate(records) if r.path in split_of]
    digests = [records[i].digest for i in rows]
    hexes = [records[i].phash for i in rows]
    exact = {tuple(sorted(p)) for p in exact_pairs(digests).tolist()}
    cand = near_pairs(hexes, CANDIDATE_BITS if features is not None else PIXEL_ONLY_BITS)
    near: dict[tuple[int, int], tuple[int, float | None]] = {}
    if len(cand):
        i, j, bits = cand[:, 0], cand[:, 1], cand[:, 2]
        if features is not None:
            f = np.asarray(features, np.float32)
            a, b = f[[rows[k] for k in i]], f[[rows[k] for k in j]]
            cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        else:
            cos = np.full(len(i), np.nan)
        for x, y, d, c in zip(i.tolist(), j.tolist(), bits.tolist(), cos.tolist()):
            if (x, y) in exact:
                continue
            if decoded is not None and d == 0 and np.array_equal(decoded[rows[x]], decoded[rows[y]]):
                exact.add((x, y))  # the same pixels, whatever the bytes
            elif features is None or c >= COSINE or (d <= PIXEL_ONLY_BITS and c >= COSINE_CLOSE_HASH):
                near[(x, y)] = (d, None if np.isnan(c) else c)
    groups = []
    for g in connected(len(rows), list(exact) + list(near)):
        members = [records[rows[k]] for k in g]
        files = [{"path": r.path, "class": r.label, "split": split_of[r.path]} for r in members]
        in_g = set(g)
        inside = [near[p] for p in near if p[0] in in_g]
        kinds = []
        if len({f["class"] for f in files}) > 1:
            kinds.append("conflicting_labels")
        if len({f["split"] for f in files}) > 1:
            kinds.append("leak")
        kinds = kinds or ["redundant"]
        cosines = [c for _, c in inside if c is not None]
        groups.append({
            "id": len(groups) + 1, "kind": kinds[0], "kinds": kinds, "exact": not inside,
            "bits": max((d for d, _ in inside), default=0),
            "cosine": round(min(cosines), 4) if cosines else None, "files": files,
        })
    thresholds = {"candidate_bits": CANDIDATE_BITS if features is not None else PIXEL_ONLY_BITS,
                  "cosine": COSINE if features is not None else None,
                  "close_hash": {"bits": PIXEL_ONLY_BITS, "cosine": COSINE_CLOSE_HASH} if features is not None else None,
                  "confirmed_by": "backbone features" if features is not None else "perceptual hash only"}
    return groups, thresholds


def leak_counts(groups: list[dict]) -> dict[str, int]:
    """Validation and test images in a group with a training image (images training has seen)."""
    out = {"validation": 0, "test": 0}
    for g in groups:
        splits = {f["split"] for f in g["files"]}
        if "train" in splits:
            for f in g["files"]:
                if f["split"] in out:
                    out[f["split"]] += 1
    return out
