"""How well ``imgclf audit`` finds flipped labels and planted duplicates, and what it costs.

On a copy of cats_and_dogs_filtered in a temporary folder: the labels of 5% of the images are
flipped (the file moved to the other class folder of the copy; seeded, spread over train and
validation), and copies of training images are planted in validation (exact copies, and
copies re-encoded at JPEG quality 50-70, resized to half, cropped by 5-10% and colour
jittered). The audit runs once; then one 20-epoch mobilenet_v2 training run on the same copy,
in the same invocation, as the reference for its wall time. Prints precision and recall per
kind, the measured hash distances and feature similarities, and the time ratio.

    python bench/label_audit.py [--data DIR] [--weights FILE] [--alpha 0.35] [--per-kind 25]
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import imgclf  # noqa: E402
from imgclf.audit import audit, backbone_features  # noqa: E402
from imgclf.data.fingerprint import CANDIDATE_BITS, near_pairs  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
KINDS = ("exact", "reencoded", "resized", "cropped", "jittered")


def planted_copy(src: Path, kind: str, rng: random.Random) -> bytes:
    if kind == "exact":
        return src.read_bytes()
    img = Image.open(src).convert("RGB")
    w, h = img.size
    quality = 90
    if kind == "reencoded":
        quality = rng.randint(50, 70)
    elif kind == "resized":
        img = img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR)
    elif kind == "cropped":
        c = rng.uniform(0.05, 0.10)
        dx, dy = int(w * c / 2), int(h * c / 2)
        img = img.crop((dx, dy, w - dx, h - dy))
    elif kind == "jittered":
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def prepare(data: Path, root: Path, per_kind: int, seed: int):
    shutil.copytree(data, root)
    rng = random.Random(seed)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    classes = sorted({f.split("/")[1] for f in files})
    flipped = set()
    for f in rng.sample(files, round(0.05 * len(files))):
        split, cls, name = f.split("/")
        other = next(c for c in classes if c != cls)
        new = f"{split}/{other}/{name}"
        (root / f).rename(root / new)
        flipped.add(new)
    originals = [f for f in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
                 if f.startswith("train/") and f not in flipped]
    planted = []  # (original, copy, kind)
    for kind, src in zip(itertools.cycle(KINDS), rng.sample(originals, per_kind * len(KINDS))):
        _, cls, name = src.split("/")
        dst = f"validation/{cls}/planted-{kind}-{name}"
        (root / dst).write_bytes(planted_copy(root / src, kind, rng))
        planted.append((src, dst, kind))
    return flipped, planted


def pr(found: set, truth: set) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cats_and_dogs_filtered"))
    ap.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"))
    ap.add_argument("--alpha", type=float, default=0.35)
    ap.add_argument("--per-kind", type=int, default=25, help="planted copies of each kind")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="imgclf-audit-bench-") as tmp:
        tmp = Path(tmp)
        root = tmp / "data"
        flipped, planted = prepare(Path(args.data), root, args.per_kind, args.seed)
        cache = tmp / "cache"
        print(f"copy: {root} ({len(flipped)} labels flipped, {len(planted)} copies planted in validation)")

        t0 = time.perf_counter()
        ds = imgclf.load_dataset(root, image_size=224, cache=cache, progress=False)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = audit(ds, weights=args.weights, alpha=args.alpha, progress=False)
        t_audit = time.perf_counter() - t0

        # flipped labels
        suspects = {li["path"] for li in result.label_issues}
        p, r = pr(suspects, flipped)
        print(f"\nflipped labels      precision {p:6.1%}  recall {r:6.1%}  ({len(suspects)} flagged, {len(flipped)} flipped)")

        # planted duplicates, per kind
        group_of = {f["path"]: g["id"] for g in result.groups for f in g["files"]}
        for kind in KINDS:
            pairs = [(a, b) for a, b, k in planted if k == kind]
            hit = sum(group_of.get(a) is not None and group_of.get(a) == group_of.get(b) for a, b in pairs)
            print(f"planted {kind:<11} recall {hit / len(pairs):6.1%}  ({hit}/{len(pairs)})")
        truth = {frozenset((a, b)) for a, b, _ in planted}
        reported = [frozenset(pq) for g in result.groups for pq in itertools.combinations([f["path"] for f in g["files"]], 2)]
        extra = [pq for pq in reported if pq not in truth]
        print(f"reported pairs      {len(reported)}, of them not planted: {len(extra)} "
              f"({len(extra) / max(1, len(reported)):.1%})")
        for pq in extra:
            print(f"  not planted: {' ~ '.join(sorted(pq))}")
        leaked = result.counts()["leaked_validation_images"]
        print(f"leaks               {result.counts()['leak_groups']} group(s), {leaked} validation image(s) training has seen")

        # the measured distances behind the thresholds
        feats, _ = backbone_features(ds, weights=args.weights, alpha=args.alpha, progress=False)
        row = {r.path: i for i, r in enumerate(ds._rows)}
        hexes = [r.phash for r in ds._rows]

        def cos(i, j):
            a, b = feats[i], feats[j]
            return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

        print("\nplanted copy vs its original: hash bits (of 64) and feature cosine, min / max")
        for kind in KINDS:
            ij = [(row[a], row[b]) for a, b, k in planted if k == kind]
            bits = [bin(int(hexes[i], 16) ^ int(hexes[j], 16)).count("1") for i, j in ij]
            cs = [cos(i, j) for i, j in ij]
            print(f"  {kind:<11} bits {min(bits):2d}-{max(bits):2d}   cosine {min(cs):.3f}-{max(cs):.3f}")
        planted_rows = {frozenset((row[a], row[b])) for a, b, _ in planted}
        cand = [(i, j, d) for i, j, d in near_pairs(hexes, CANDIDATE_BITS).tolist()
                if frozenset((i, j)) not in planted_rows]
        cs = sorted((cos(i, j) for i, j, _ in cand), reverse=True)
        print(f"  other pairs within {CANDIDATE_BITS} bits: {len(cand)}; highest cosines {', '.join(f'{c:.3f}' for c in cs[:5])}")

        # the reference: one training run on the same copy
        t0 = time.perf_counter()
        run = imgclf.train(ds, "mobilenet_v2", epochs=args.epochs, weights=args.weights, alpha=args.alpha,
                           output=tmp / "run", progress=False)
        t_train = time.perf_counter() - t0
        acc = run.metrics().get("test", {}).get("accuracy")
        print(f"\nscan + split        {t_load:7.1f} s")
        print(f"audit               {t_audit:7.1f} s")
        print(f"train {args.epochs} epochs     {t_train:7.1f} s (mobilenet_v2, test accuracy {acc:.1%})")
        print(f"audit / training    {t_audit / t_train:7.2f}")


if __name__ == "__main__":
    main()
