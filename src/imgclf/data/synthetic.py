"""A small synthetic shapes dataset, for tests, demos and a first run without any data.

:func:`make_synthetic_dataset` writes a class-per-folder tree of shape images (a circle, a
cross, a ring, a square, ...) drawn at a random position, scale, colour and rotation on a
noisy textured background of random colours. A tiny CNN learns it in a few epochs, but not
perfectly on the first one. Every class survives a horizontal flip and a rotation of up to
±72 degrees, so the usual augmentations never change a label.

Calibration (default 4 classes, 60 per class, ``layout="train_validation"``, imgclf's
``cnn_aug_pre`` at 64 or 96 px, Adam 1e-3, batch 32, CPU): validation accuracy about 0.4
after epoch 1, 0.65-0.8 after epoch 3, 0.8-0.9 after epoch 5; the raw-pixel ``cnn`` is
slower (0.35-0.6 after 5 epochs). Two choices make that possible with so few images: the shape is
always brighter than the background (either polarity needs many more images), and it is
large and near the centre (a CNN that flattens its feature maps learns positions).

The same parameters always give byte-identical files (each image has its own random
generator, seeded from ``seed``, the class index and the image index). The tree is written
into a hidden temporary folder beside ``root`` and renamed into place once complete, with a
small manifest (``.imgclf-synthetic.json``, hidden so that scanners skip it); a second call
with the same parameters returns the existing folder without writing anything.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError, DataError

__all__ = [
    "DEFAULT_CLASSES",
    "SHAPES",
    "LAYOUTS",
    "MANIFEST_NAME",
    "make_synthetic_dataset",
    "render_shape_image",
    "expected_files",
]

DEFAULT_CLASSES = ("circle", "cross", "ring", "square")
# Every shape keeps its class under a horizontal flip and any rotation.
SHAPES = ("circle", "cross", "ring", "square", "triangle", "star")
LAYOUTS = ("flat", "train_validation")
MANIFEST_NAME = ".imgclf-synthetic.json"
# Bump when the drawing changes: a folder made by another generator version is not reused.
GENERATOR_VERSION = 1
JPEG_EVERY = 6  # image i is a JPEG (quality 90) when i % JPEG_EVERY == JPEG_EVERY - 1
_SUPERSAMPLE = 4


# ---------------------------------------------------------------------------------------------
# drawing


def _shape_polygons(shape: str, rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    """Polygons of a shape in unit coordinates (circumscribed radius 1), as (points, filled).

    ``filled`` False means the polygon is cut out of what was drawn before it.
    """
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        squash = rng.uniform(0.85, 1.0)  # a slightly elliptic disk now and then
        return [(np.stack([np.cos(t), squash * np.sin(t)], 1), True)]
    if shape == "ring":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        unit = np.stack([np.cos(t), np.sin(t)], 1)
        inner = rng.uniform(0.42, 0.66)
        return [(unit, True), (unit * inner, False)]
    if shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        return [(np.stack([np.cos(t), np.sin(t)], 1), True)]
    if shape == "cross":
        w = rng.uniform(0.2, 0.33)  # half width of an arm
        arm = math.sqrt(1 - w * w)  # the corners of the arm ends lie on the unit circle
        bar = np.array([[-arm, -w], [arm, -w], [arm, w], [-arm, w]])
        return [(bar, True), (bar[:, ::-1].copy(), True)]
    if shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [(np.stack([np.cos(t), np.sin(t)], 1), True)]
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.5))
        return [(np.stack([r * np.cos(t), r * np.sin(t)], 1), True)]
    raise ConfigError(f"unknown synthetic shape {shape!r}; choose from {', '.join(SHAPES)}")


def _upsampled_noise(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """A smooth random field in [0, 1] (a ``grid`` x ``grid`` lattice, bicubic upsampled)."""
    small = Image.fromarray(rng.random((grid, grid), dtype=np.float32), mode="F")
    field = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / (hi - lo + 1e-6)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # darker than the shape (see _shape_colour), in any hue
    c1, c2 = rng.uniform(0, 135, (2, 3)).astype(np.float32)
    t = _upsampled_noise(rng, int(rng.integers(2, 6)), size)[..., None]
    bg = c1 * (1 - t) + c2 * t
    kind = int(rng.integers(3))
    if kind == 0:  # mottled texture
        tex = _upsampled_noise(rng, max(4, size // int(rng.integers(6, 12))), size) - 0.5
        bg = bg + np.float32(rng.uniform(10, 28)) * tex[..., None]
    elif kind == 1:  # stripes
        y, x = _grid(size)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5, 14)
        k = np.float32(2 * np.pi / period)
        s = np.sin((x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))) * k
                   + np.float32(rng.uniform(0, 6.3)))
        amp = (rng.uniform(5, 14) * rng.uniform(0.5, 1.0, 3)).astype(np.float32)
        bg = bg + s[..., None] * amp
    else:  # speckles
        sigma = np.float32(rng.uniform(5, 10))
        bg = bg + sigma * rng.standard_normal((size, size, 1), dtype=np.float32)
    return bg


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _shape_colour(rng: np.random.Generator, against: np.ndarray) -> np.ndarray:
    """A random colour clearly brighter than ``against``.

    The shape is always the brighter one: with a fixed polarity a small CNN learns the
    shapes from a couple of hundred images in a few epochs; with either polarity it needs
    many more (measured with imgclf's ``cnn_aug_pre``).
    """
    ref = _luma(against)
    for _ in range(64):
        colour = rng.uniform(0, 255, 3)
        if _luma(colour) - ref >= 90:
            return colour
    colour = rng.uniform(0, 255, 3)
    return colour + (255 - colour) * 0.8  # a pale tint of it


def _mask(polys: list[tuple[np.ndarray, bool]], size: int) -> np.ndarray:
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, filled in polys:
        draw.polygon([tuple(p) for p in (pts * _SUPERSAMPLE).tolist()], fill=255 if filled else 0)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)[..., None] / 255.0


def _place(polys, rng: np.random.Generator, size: int):
    # big and near the centre: small CNNs that flatten their feature maps (no global
    # pooling) learn position-dependent features and need shapes in roughly the same place
    radius = size * rng.uniform(0.27, 0.4)
    reach = max(0.0, min(0.12 * size, size / 2 - radius - 1.0))
    cx, cy = size / 2 + rng.uniform(-reach, reach, 2)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return [((pts @ rot.T) * radius + (cx, cy), filled) for pts, filled in polys]


def _clutter(rng: np.random.Generator, size: int, image: np.ndarray) -> np.ndarray:
    """Zero to two short faint strokes: a little variety the model must learn to ignore."""
    n = int(rng.choice([0, 0, 1, 2]))
    if n == 0:
        return image
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(n):
        x0, y0 = rng.uniform(0, big, 2)
        length = rng.uniform(0.08, 0.2) * big
        a = rng.uniform(0, 2 * np.pi)
        x1, y1 = x0 + length * math.cos(a), y0 + length * math.sin(a)
        draw.line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(2, 6)))
    alpha = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), np.float32)[..., None]
    alpha = alpha * np.float32(rng.uniform(0.3, 0.6) / 255.0)
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    return image * (1 - alpha) + colour * alpha


def render_shape_image(shape: str, rng: np.random.Generator, image_size: int = 96) -> np.ndarray:
    """One ``image_size`` x ``image_size`` x 3 uint8 image of ``shape``, drawn with ``rng``."""
    size = int(image_size)
    bg = _background(rng, size)
    polys = _place(_shape_polygons(shape, rng), rng, size)
    bg = _clutter(rng, size, bg)
    mask = _mask(polys, size)
    inside = (mask[..., 0] > 0.5)
    colour = _shape_colour(rng, bg[inside].mean(0) if inside.any() else bg.mean((0, 1)))
    # the shape is not perfectly flat: a faint shading across it
    shade = (_upsampled_noise(rng, 3, size)[..., None] - 0.5) * np.float32(rng.uniform(0, 30))
    image = bg * (1 - mask) + (colour.astype(np.float32) + shade) * mask
    sigma = np.float32(rng.uniform(2, 7))
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# the dataset folder


def _integer(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _check_params(classes, per_class, image_size, seed, layout):
    if isinstance(classes, str):
        classes = (classes,)
    classes = tuple(str(c) for c in classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ConfigError(
            f"unknown synthetic class {unknown[0]!r}; choose from {', '.join(SHAPES)}"
        )
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ConfigError(f"synthetic classes must be at least two distinct shapes, got {list(classes)}")
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    least = 2 if layout == "train_validation" else 1
    if _integer(per_class) is None or per_class < least:
        raise ConfigError(
            f"per_class must be an integer of at least {least} for layout {layout!r}, "
            f"got {per_class!r}"
        )
    if _integer(image_size) is None or not 16 <= image_size <= 1024:
        raise ConfigError(f"image_size must be an integer from 16 to 1024, got {image_size!r}")
    if _integer(seed) is None or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return classes, int(per_class), int(image_size), int(seed)


def _n_validation(per_class: int) -> int:
    return max(1, round(per_class / 5))


def expected_files(
    classes: Sequence[str] = DEFAULT_CLASSES, per_class: int = 60, layout: str = "flat"
) -> list[tuple[str, int, str]]:
    """``(shape, image index, path relative to root)`` of every image, in writing order.

    Image ``i`` of a class is a JPEG when ``i % 6 == 5``, a PNG otherwise. With the
    ``train_validation`` layout the last ``round(per_class / 5)`` images of each class (at
    least one) go to ``validation/``, the others to ``train/``.
    """
    out = []
    n_val = _n_validation(per_class) if layout == "train_validation" else 0
    for shape in classes:
        for i in range(per_class):
            ext = ".jpg" if i % JPEG_EVERY == JPEG_EVERY - 1 else ".png"
            name = f"{shape}_{i:03d}{ext}"
            if layout == "train_validation":
                split = "validation" if i >= per_class - n_val else "train"
                out.append((shape, i, f"{split}/{shape}/{name}"))
            else:
                out.append((shape, i, f"{shape}/{name}"))
    return out


def _manifest(classes, per_class, image_size, seed, layout) -> dict:
    return {
        "generator": "imgclf.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "classes": list(classes),
        "per_class": per_class,
        "image_size": image_size,
        "seed": seed,
        "layout": layout,
    }


def _existing(root: Path, wanted: dict, files: list[tuple[str, int, str]]) -> Path:
    """Return ``root`` when it already holds exactly this dataset; raise DataError otherwise."""
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DataError(
            f"{root} already exists and is not an imgclf synthetic dataset; "
            "choose an empty or new folder"
        )
    try:
        found = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {manifest_path} ({e}); delete {root} and run again") from None
    if not isinstance(found, dict):
        found = {}
    diffs = [f"{k}={found.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if found.get(k) != v]
    if diffs:
        raise DataError(
            f"{root} holds a synthetic dataset made with other parameters: {', '.join(diffs)}; "
            "delete it or choose another folder"
        )
    missing = [rel for _, _, rel in files if not (root / rel).is_file()]
    if missing:
        raise DataError(
            f"{root} is an incomplete synthetic dataset ({len(missing)} images missing, e.g. "
            f"{missing[0]}); delete it and run again"
        )
    return root


def _save(array: np.ndarray, path: Path) -> None:
    img = Image.fromarray(array, "RGB")
    if path.suffix == ".jpg":
        img.save(path, format="JPEG", quality=90)
    else:
        img.save(path, format="PNG", compress_level=6)


def make_synthetic_dataset(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] = DEFAULT_CLASSES,
    per_class: int = 60,
    image_size: int = 96,
    seed: int = 0,
    layout: str = "flat",
) -> Path:
    """Write a synthetic shapes dataset to ``root`` and return ``Path(root)``.

    ``layout="flat"`` writes ``root/<class>/<class>_<iii>.png`` (``circle_000.png``, ...);
    ``"train_validation"`` writes ``root/train/<class>/...`` and ``root/validation/<class>/...``
    (4:1, see :func:`expected_files`). One image in six is a JPEG (``.jpg``, quality 90), the
    rest PNG, all RGB ``image_size`` x ``image_size``. ``classes`` are names from
    :data:`SHAPES`; invalid options raise :class:`ConfigError`.

    If ``root`` already holds the dataset these parameters make, nothing is written. If it
    holds anything else (another synthetic dataset, foreign files), :class:`DataError`.
    """
    classes, per_class, image_size, seed = _check_params(classes, per_class, image_size, seed, layout)
    root = Path(root)
    wanted = _manifest(classes, per_class, image_size, seed, layout)
    files = expected_files(classes, per_class, layout)

    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise DataError(f"{root} exists and is not a folder; choose a new folder")
        if any(root.iterdir()):
            return _existing(root, wanted, files)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        for shape, i, rel in files:
            rng = np.random.default_rng([seed, classes.index(shape), i, GENERATOR_VERSION])
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            _save(render_shape_image(shape, rng, image_size), path)
        (tmp / MANIFEST_NAME).write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            os.replace(tmp, root)  # atomic; replaces an empty folder on POSIX
        except OSError:
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()
                os.replace(tmp, root)
            elif root.is_dir():
                # someone else finished the same folder first: theirs must match
                return _existing(root, wanted, files)
            else:
                raise
    except OSError as e:
        raise DataError(f"cannot write synthetic dataset to {root}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
