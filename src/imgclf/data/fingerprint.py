"""What the scan remembers of each image's content: a digest of its bytes, a perceptual hash
and three grey-level statistics, and the duplicate groups they give.

All of it comes from one small grey thumbnail (JPEGs decoded at a reduced scale), made while
the scan checks the file and stored with its result in the scan cache, so finding duplicates
and judging pixel quality never decodes a file again.

* ``digest``: BLAKE2b of the file's bytes; equal digests are exact copies.
* ``phash``: the 64-bit DCT hash (as the ``imagehash`` library's ``phash``: the 8x8 lowest
  frequencies of a 32x32 grey image against their median), hex. Resized, re-encoded or
  recoloured copies stay within a few bits, slightly cropped ones within about 16; unrelated
  photos differ in about 32.
* ``gray``: mean and standard deviation of the grey levels (0-255) and the sharpness, the
  variance of the Laplacian of the 64x64 thumbnail over the grey-level variance
  (contrast-free: a blurred copy scores lower whatever its exposure).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict

import numpy as np
from PIL import Image

from .images import EXIF_TRANSPOSE, orientation, to_rgb

THUMB = 64
HASH_SIZE = 8
# Hamming distance (of 64 bits) at or below which two images are near-duplicate candidates.
# Measured on cats_and_dogs_filtered (200 photos, each copied four ways): copies resized to
# half are at 0-6 bits, re-encoded at JPEG quality 50-70 at 0-2, colour-jittered at 0-4,
# cropped by 5-10% at up to 18 (95% within 12). Of its 4.5 million pairs of different photos, 2 are
# within 10 bits, 31 within 12, 180 within 14 and 1,216 within 16 (bench/label_audit.py), which
# the backbone features then tell apart from copies.
CANDIDATE_BITS = 16
# Without backbone features to confirm them, only pairs this close are reported (and kept in
# one split): no pair of different photos of cats_and_dogs_filtered is within 8 bits (its one
# pair within 8, at 2 bits, is the same photo filed twice: dogs/dog.74.jpg and dog.180.jpg).
PIXEL_ONLY_BITS = 8


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))
    m[0] *= 1 / np.sqrt(2)
    return m * np.sqrt(2 / n)


_DCT32 = _dct_matrix(32).astype(np.float32)


def phash(gray: np.ndarray) -> str:
    """The 64-bit perceptual hash of a ``THUMB`` x ``THUMB`` grey image, as 16 hex digits."""
    k = gray.shape[0] // 32
    small = gray.reshape(32, k, 32, k).mean(axis=(1, 3), dtype=np.float32)  # the 32x32 box mean
    low = (_DCT32 @ small @ _DCT32.T)[:HASH_SIZE, :HASH_SIZE]
    bits = np.packbits((low > np.median(low)).ravel())
    return bits.tobytes().hex()


def gray_stats(gray: np.ndarray) -> list[float]:
    g = gray.astype(np.float32)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    var = float(g.var())
    return [round(float(g.mean()), 2), round(float(np.sqrt(var)), 2),
            round(float(lap.var()) / var, 4) if var > 1e-6 else 0.0]


def thumbnail(img: Image.Image) -> np.ndarray:
    """The upright grey ``THUMB`` x ``THUMB`` thumbnail of an opened image (colour JPEGs
    decoded as grey, at the smallest scale that still covers it)."""
    turn = EXIF_TRANSPOSE.get(orientation(img))
    if img.format in ("JPEG", "MPO") and img.mode in ("L", "RGB", "YCbCr"):
        img.draft("L", (THUMB, THUMB))  # luma only: the chroma is never decoded
        img = img.convert("L")
    else:
        img = to_rgb(img).convert("L")
    if turn is not None:
        img = img.transpose(turn)
    return np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BOX))


def _plain_thumbnail(data: bytes) -> np.ndarray:
    """:func:`thumbnail` of a plain JPEG (no EXIF: nothing to turn), its luma decoded by
    libjpeg-turbo at the smallest DCT scale that covers ``THUMB``."""
    import simplejpeg

    g = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=THUMB, min_width=THUMB)
    return np.asarray(Image.fromarray(g[..., 0]).resize((THUMB, THUMB), Image.Resampling.BOX))


def fingerprint(path: str | os.PathLike, data: bytes | None = None, *, plain: bool = False) -> dict:
    """``{"digest", "phash", "gray"}`` of one image file (``data``: its bytes, if read already;
    ``plain``: they are a plain JPEG, see :func:`imgclf.data.images.decode_plain_jpeg`);
    ``{}`` when the file cannot give one (the scan's verdict on the file stands)."""
    try:
        if plain and data is not None:
            g = _plain_thumbnail(data)
            return {"digest": hashlib.blake2b(data, digest_size=16).hexdigest(), "phash": phash(g),
                    "gray": gray_stats(g)}
        if data is None and os.path.getsize(path) <= 64 << 20:
            with open(path, "rb") as fh:
                data = fh.read()
        if data is None:
            h = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest()
            opened = Image.open(path)
        else:
            digest = hashlib.blake2b(data, digest_size=16).hexdigest()
            opened = Image.open(io.BytesIO(data))
        with opened as img:
            if (data is not None and img.format == "JPEG" and img.mode in ("L", "RGB", "YCbCr")
                    and orientation(img) == 1):
                g = _plain_thumbnail(data)  # as the scan's plain-JPEG path makes it
            else:
                g = thumbnail(img)
        return {"digest": digest, "phash": phash(g), "gray": gray_stats(g)}
    except Exception:  # noqa: BLE001 - a fingerprint is a bonus, never a reason to fail a file
        return {}


# -- duplicate groups -----------------------------------------------------------------------

def hash_bits(hexes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes as uint64, which rows have one)``."""
    have = np.array([h is not None for h in hexes], bool)
    return np.array([int(h, 16) if h else 0 for h in hexes], np.uint64), have


def near_pairs(hexes: list[str | None], max_bits: int = CANDIDATE_BITS, block: int = 1024) -> np.ndarray:
    """Pairs ``(i, j, bits)`` with ``i < j`` whose hashes differ in at most ``max_bits`` bits."""
    h, have = hash_bits(hexes)
    rows = np.flatnonzero(have)
    hv = h[rows]
    out = []
    for s in range(0, len(rows), block):
        d = np.bitwise_count(hv[s: s + block, None] ^ hv[None, :])
        i, j = np.nonzero(d <= max_bits)
        i = i + s
        keep = i < j
        out.append(np.stack([rows[i[keep]], rows[j[keep]], d[i[keep] - s, j[keep]]], 1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), np.int64)


def exact_pairs(digests: list[str | None]) -> np.ndarray:
    """Pairs ``(i, j)`` of rows with the same digest (each row linked to the first of its kind)."""
    first: dict[str, int] = {}
    out = []
    for i, d in enumerate(digests):
        if d is None:
            continue
        if d in first:
            out.append((first[d], i))
        else:
            first[d] = i
    return np.array(out, np.int64).reshape(-1, 2)


def connected(n: int, pairs) -> list[list[int]]:
    """Groups (of two or more rows, each sorted, in order of their first row) linked by ``pairs``."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        a, b = find(int(i)), find(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [g for _, g in sorted(groups.items()) if len(g) > 1]


def pixel_groups(records, max_bits: int = PIXEL_ONLY_BITS) -> list[list[int]]:
    """Duplicate groups (indices into ``records``) from the scan's fingerprints alone: exact
    copies and hashes within ``max_bits``. What splits and evaluation use."""
    hexes = [r.phash if r.ok else None for r in records]
    pairs = [tuple(p) for p in exact_pairs([r.digest if r.ok else None for r in records])]
    pairs += [(i, j) for i, j, _ in near_pairs(hexes, max_bits)]
    return connected(len(records), pairs)


def leaked(records, split_of: dict[str, str], groups: list[list[int]] | None = None) -> set[str]:
    """Paths whose duplicate group has members in another split (``split_of``: path -> split)."""
    out: set[str] = set()
    for g in pixel_groups(records) if groups is None else groups:
        paths = [records[i].path for i in g if records[i].path in split_of]
        if len({split_of[p] for p in paths}) > 1:
            out.update(paths)
    return out


def duplicate_counts(records, split_of: dict[str, str]) -> dict[str, int]:
    """The cheap counts ``imgclf inspect`` prints: exact and near duplicate groups (by
    fingerprints alone), groups across classes (conflicting labels) and across splits (leaks),
    and the validation and test images in a group with a training image."""
    rows = [r for r in records if r.ok and r.path in split_of]
    exact = connected(len(rows), [tuple(p) for p in exact_pairs([r.digest for r in rows])])
    groups = pixel_groups(rows)
    out = {"exact_groups": len(exact), "near_groups": len(groups) - len(exact), "conflicting_label_groups": 0,
           "leak_groups": 0, "leaked_validation_images": 0, "leaked_test_images": 0}
    for g in groups:
        splits = {split_of[rows[i].path] for i in g}
        out["conflicting_label_groups"] += len({rows[i].label for i in g}) > 1
        out["leak_groups"] += len(splits) > 1
        if "train" in splits:
            for i in g:
                s = split_of[rows[i].path]
                if s != "train":
                    out[f"leaked_{s}_images"] += 1
    return out
