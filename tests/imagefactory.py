"""Image files of every kind the pipeline meets, good and broken, written on demand for tests.

    from tests.imagefactory import write_image, write_broken, make_class_tree

``write_image(path, fmt)`` writes one decodable image in a given encoding (see
:data:`ALL_GOOD_FORMATS`); ``write_broken(path, kind)`` writes a file that must be rejected
(see :data:`ALL_BROKEN_KINDS`); ``make_class_tree(root, {"cat": 5, "dog": 5})`` writes a
class-per-folder tree whose classes differ in colour, so that a model could learn them.

Everything is deterministic: the same arguments give the same bytes.

What each good format decodes to with Pillow (``Image.open(path)``), for ``size=(w, h)``:

=========================  ====================  ==========  ==========================================
fmt                        Pillow format          mode        notes
=========================  ====================  ==========  ==========================================
jpeg                       JPEG                   RGB
jpeg_progressive           JPEG                   RGB         ``info["progressive"]``
jpeg_cmyk                  JPEG                   CMYK        Adobe (inverted) CMYK, as Photoshop writes
jpeg_gray                  JPEG                   L
jpeg_exif_rotated          JPEG                   RGB         stored (w, h), EXIF orientation 6: shown as
                                                              (h, w) after ``ImageOps.exif_transpose``;
                                                              a black marker in the stored top-left
                                                              corner is then at the top right
png                        PNG                    RGB
png16                      PNG                    I;16        16-bit grayscale, value = luma * 257
png_palette                PNG                    P
png_palette_transparent    PNG                    P           ``info["transparency"]``: the left quarter
                                                              of the columns is fully transparent
png_rgba                   PNG                    RGBA        left quarter of the columns alpha 0
png_gray                   PNG                    L
gif                        GIF                    P           one frame
gif_animated               GIF                    P           3 frames; the first one is ``color``
bmp                        BMP                    RGB
webp                       WEBP                   RGB         lossless, so the colour is exact
=========================  ====================  ==========  ==========================================

The centre pixel of every good image (after ``exif_transpose`` and conversion to RGB) is
``color`` (within JPEG / palette error) unless ``noise`` is given.
"""

from __future__ import annotations

import colorsys
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "ALL_GOOD_FORMATS",
    "ALL_BROKEN_KINDS",
    "EXTENSIONS",
    "FORMAT_INFO",
    "BROKEN_EXTENSIONS",
    "FRAMES",
    "write_image",
    "write_broken",
    "make_class_tree",
    "class_colours",
]

# fmt -> (Pillow format, mode after Image.open, usual extension)
FORMAT_INFO: dict[str, tuple[str, str, str]] = {
    "jpeg": ("JPEG", "RGB", ".jpg"),
    "jpeg_progressive": ("JPEG", "RGB", ".jpg"),
    "jpeg_cmyk": ("JPEG", "CMYK", ".jpg"),
    "jpeg_gray": ("JPEG", "L", ".jpg"),
    "jpeg_exif_rotated": ("JPEG", "RGB", ".jpg"),
    "png": ("PNG", "RGB", ".png"),
    "png16": ("PNG", "I;16", ".png"),
    "png_palette": ("PNG", "P", ".png"),
    "png_palette_transparent": ("PNG", "P", ".png"),
    "png_rgba": ("PNG", "RGBA", ".png"),
    "png_gray": ("PNG", "L", ".png"),
    "gif": ("GIF", "P", ".gif"),
    "gif_animated": ("GIF", "P", ".gif"),
    "bmp": ("BMP", "RGB", ".bmp"),
    "webp": ("WEBP", "RGB", ".webp"),
    "tiff": ("TIFF", "RGB", ".tif"),
    "tiff16": ("TIFF", "I;16", ".tif"),
    "tiff_multipage": ("TIFF", "RGB", ".tiff"),  # two pages: the first one is the image
    "png_as_jpg": ("PNG", "RGB", ".jpg"),  # a real PNG whose extension lies: used all the same
}
# frames of the formats that have more than one
FRAMES: dict[str, int] = {"gif_animated": 3, "tiff_multipage": 2}
ALL_GOOD_FORMATS: tuple[str, ...] = tuple(FORMAT_INFO)
EXTENSIONS: dict[str, str] = {k: v[2] for k, v in FORMAT_INFO.items()}

# kind -> the extension such a file usually carries
BROKEN_EXTENSIONS: dict[str, str] = {
    "truncated_jpeg": ".jpg",
    "zero_bytes": ".jpg",
    "text_as_jpg": ".jpg",
    "corrupt_jpeg": ".jpg",
    "ppm": ".ppm",
}
ALL_BROKEN_KINDS: tuple[str, ...] = tuple(BROKEN_EXTENSIONS)


# ---------------------------------------------------------------------------------------------
# good images


def _base_rgb(size, color, noise: float, seed: int) -> np.ndarray:
    w, h = int(size[0]), int(size[1])
    arr = np.empty((h, w, 3), np.float32)
    arr[...] = np.asarray(color, np.float32)[:3]
    if noise:
        arr += np.random.default_rng(seed).normal(0, noise, arr.shape)
        # keep the centre pixel exact so that callers can check it
        arr[h // 2, w // 2] = np.asarray(color, np.float32)[:3]
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _palette_image(rgb: np.ndarray, transparent_left: bool) -> Image.Image:
    """A P-mode image of ``rgb`` (quantized to at most 250 colours); with ``transparent_left``
    the left quarter of the columns uses an extra, fully transparent palette entry."""
    img = Image.fromarray(rgb, "RGB").quantize(colors=250, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if not transparent_left:
        return img
    idx = np.array(img, dtype=np.uint8)
    palette = img.getpalette()[: 3 * 256]
    palette += [0] * (3 * 256 - len(palette))
    t = 255
    palette[3 * t : 3 * t + 3] = [0, 0, 0]
    idx[:, : max(1, idx.shape[1] // 4)] = t
    out = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    out.putpalette(palette)
    out.info["transparency"] = t
    return out


def _exif_orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def write_image(
    path: str | os.PathLike,
    fmt: str,
    size: tuple[int, int] = (40, 30),
    color: Sequence[int] = (200, 30, 30),
    *,
    noise: float = 0.0,
    seed: int = 0,
    **save_kw,
) -> Path:
    """Write a ``size`` = (width, height) image filled with ``color`` in encoding ``fmt``.

    ``noise`` adds Gaussian pixel noise of that standard deviation (seeded by ``seed``),
    which makes images of the same colour distinct files. Other keyword arguments go to
    ``Image.save`` (e.g. ``quality=50``). Parent folders are created; the extension of
    ``path`` is used as given (see :data:`EXTENSIONS` for the usual one). Returns the path.
    """
    if fmt not in FORMAT_INFO:
        raise ValueError(f"unknown image format {fmt!r}; choose from {', '.join(ALL_GOOD_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = _base_rgb(size, color, noise, seed)
    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb, "RGB")
    kw: dict = {}

    if fmt == "jpeg":
        kw = dict(format="JPEG", quality=95)
    elif fmt == "jpeg_progressive":
        kw = dict(format="JPEG", quality=95, progressive=True)
    elif fmt == "jpeg_cmyk":
        img = img.convert("CMYK")
        kw = dict(format="JPEG", quality=95)
    elif fmt == "jpeg_gray":
        img = img.convert("L")
        kw = dict(format="JPEG", quality=95)
    elif fmt == "jpeg_exif_rotated":
        marked = rgb.copy()
        marked[: max(1, h // 4), : max(1, w // 4)] = 0
        img = Image.fromarray(marked, "RGB")
        kw = dict(format="JPEG", quality=95, exif=_exif_orientation_6())
    elif fmt == "png":
        kw = dict(format="PNG")
    elif fmt == "png16":
        value = np.clip(np.rint(_luma(rgb) * 257), 0, 65535).astype("<u2")
        img = Image.frombytes("I;16", (w, h), value.tobytes())
        kw = dict(format="PNG")
    elif fmt == "png_palette":
        img = _palette_image(rgb, transparent_left=False)
        kw = dict(format="PNG")
    elif fmt == "png_palette_transparent":
        img = _palette_image(rgb, transparent_left=True)
        kw = dict(format="PNG", transparency=img.info["transparency"])
    elif fmt == "png_rgba":
        alpha = np.full((h, w, 1), 255, np.uint8)
        alpha[:, : max(1, w // 4)] = 0
        img = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
        kw = dict(format="PNG")
    elif fmt == "png_gray":
        img = img.convert("L")
        kw = dict(format="PNG")
    elif fmt == "gif":
        img = _palette_image(rgb, transparent_left=False)
        kw = dict(format="GIF")
    elif fmt == "gif_animated":
        frames = [_palette_image(rgb, transparent_left=False)]
        for k in (1, 2):
            other = (np.asarray(color[:3], np.int32) + 85 * k) % 256
            frames.append(_palette_image(_base_rgb(size, other, noise, seed + k), transparent_left=False))
        img = frames[0]
        kw = dict(format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif fmt == "bmp":
        kw = dict(format="BMP")
    elif fmt == "webp":
        kw = dict(format="WEBP", lossless=True)
    elif fmt in ("tiff", "png_as_jpg"):
        kw = dict(format="TIFF" if fmt == "tiff" else "PNG")
    elif fmt == "tiff16":
        value = np.clip(np.rint(_luma(rgb) * 257), 0, 65535).astype("<u2")
        img = Image.frombytes("I;16", (w, h), value.tobytes())
        kw = dict(format="TIFF")
    elif fmt == "tiff_multipage":
        other = Image.fromarray(_base_rgb(size, (np.asarray(color[:3], np.int32) + 128) % 256, noise, seed + 1), "RGB")
        kw = dict(format="TIFF", save_all=True, append_images=[other])

    kw.update(save_kw)
    img.save(path, **kw)
    return path


# ---------------------------------------------------------------------------------------------
# broken files


def _noisy_jpeg_bytes(size=(64, 48), seed: int = 0) -> bytes:
    """A valid JPEG whose bytes are mostly entropy-coded data (noise compresses badly)."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Marker segments up to and including SOS, and the bytes after SOS."""
    i, out = 2, []
    while True:
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        out.append((marker, data[i : i + 2 + length]))
        if marker == 0xDA:
            return out, data[i + 2 + length :]
        i += 2 + length


def _corrupt_jpeg_bytes() -> bytes:
    """SOI, APP0, DQT and SOF of a real JPEG (so Pillow identifies it, with its size), then a
    body of garbage: a Huffman table whose code counts add up to more than 256 (libjpeg
    stops with "Bogus Huffman table definition", in Pillow and in TensorFlow alike), the
    scan header and random bytes for the scan."""
    data = _noisy_jpeg_bytes()
    segments, scan = _jpeg_segments(data)
    header = b"\xff\xd8" + b"".join(s for m, s in segments if m not in (0xC4, 0xDA))
    sos = next(s for m, s in segments if m == 0xDA)
    bogus_dht = b"\xff\xc4" + (2 + 1 + 16 + 16).to_bytes(2, "big") + b"\x00" + b"\xff" * 16 + bytes(range(16))
    garbage = np.random.default_rng(1).integers(0, 256, len(scan), dtype=np.uint8).tobytes()
    return header + bogus_dht + sos + garbage + b"\xff\xd9"


def write_broken(path: str | os.PathLike, kind: str) -> Path:
    """Write a file that an image loader must reject (or, for ``ppm``, refuse as unsupported).

    - ``truncated_jpeg``: a valid JPEG cut to 60 % of its bytes; ``Image.open`` works (the
      header is intact), ``.load()`` raises ``OSError`` ("image file is truncated").
    - ``zero_bytes``: an empty file; ``Image.open`` raises ``UnidentifiedImageError``.
    - ``text_as_jpg``: a text file (give it a ``.jpg`` name); unidentified.
    - ``corrupt_jpeg``: a JPEG header that Pillow identifies (64 x 48) and a garbage body;
      ``.load()`` raises ``OSError``.
    - ``ppm``: a real PPM image (identifies as PPM, decodes fine: unsupported, not broken).
    """
    if kind not in BROKEN_EXTENSIONS:
        raise ValueError(f"unknown broken kind {kind!r}; choose from {', '.join(ALL_BROKEN_KINDS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated_jpeg":
        data = _noisy_jpeg_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "text_as_jpg":
        path.write_text("this is not an image, just text with a .jpg name\n", encoding="utf-8")
    elif kind == "corrupt_jpeg":
        path.write_bytes(_corrupt_jpeg_bytes())
    elif kind == "ppm":
        Image.fromarray(_base_rgb((40, 30), (30, 200, 120), 0, 0), "RGB").save(path, format="PPM")
    return path


# ---------------------------------------------------------------------------------------------
# class trees


def class_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` colours that differ in hue and in brightness (evenly spread luma from 45 to 210),
    so that classes stay apart in the grayscale formats too."""
    out = []
    for j in range(n):
        target = 45 + 165 * (j / (n - 1) if n > 1 else 0.5)
        pure = np.array(colorsys.hsv_to_rgb(j / max(n, 1), 0.7, 1.0)) * 255
        luma = float(_luma(pure))
        if target <= luma:
            rgb = pure * (target / luma)  # darken
        else:
            rgb = pure + (255 - pure) * ((target - luma) / (255 - luma))  # lighten towards white
        out.append(tuple(int(v) for v in np.clip(np.rint(rgb), 0, 255)))
    return out


def make_class_tree(
    root: str | os.PathLike,
    spec: dict[str, int],
    size: tuple[int, int] = (32, 32),
    fmt: str | Sequence[str] = "png",
    seed: int = 0,
) -> Path:
    """Write ``root/<class>/<class>_<i>.<ext>``: ``spec[class]`` images per class.

    Each class has its own colour (:func:`class_colours`, in ``spec`` order) and each image
    light pixel noise (std 6, seeded from ``seed``, the class and ``i``), so that every file
    is distinct and a model can learn the classes from colour alone. ``fmt`` is one format
    of :data:`ALL_GOOD_FORMATS` or a sequence of them used in turn (image ``i`` gets
    ``fmt[i % len(fmt)]``). Returns ``Path(root)``.
    """
    root = Path(root)
    formats = [fmt] if isinstance(fmt, str) else list(fmt)
    colours = class_colours(len(spec))
    for c, (name, count) in enumerate(spec.items()):
        for i in range(int(count)):
            f = formats[i % len(formats)]
            write_image(
                root / name / f"{name}_{i}{EXTENSIONS[f]}", f, size=size, color=colours[c],
                noise=6.0, seed=seed * 1_000_003 + c * 10_007 + i,
            )
    root.mkdir(parents=True, exist_ok=True)
    return root


def deny_open(monkeypatch, path) -> None:
    """Make opening ``path`` (with Pillow or ``open``) fail with "Permission denied" (root reads
    files whatever their mode, so chmod cannot stand in for an unreadable file in tests run as
    root)."""
    import builtins

    real_image_open, real_open = Image.open, builtins.open

    def denied(fp) -> bool:
        return isinstance(fp, (str, bytes, os.PathLike)) and os.fspath(fp) == os.fspath(path)

    def guarded_image(fp, *a, **k):
        if denied(fp):
            raise PermissionError(13, "Permission denied")
        return real_image_open(fp, *a, **k)

    def guarded(file, *a, **k):
        if denied(file):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(Image, "open", guarded_image)
    monkeypatch.setattr(builtins, "open", guarded)


# ---------------------------------------------------------------------------------------------
# photo-like images, for duplicate and label checks


def photo_pixels(seed: int, size: tuple[int, int] = (96, 72), tint: Sequence[int] = (0, 0, 0),
                 tint_weight: float = 0.4) -> np.ndarray:
    """A smooth random scene (``size`` = (width, height)): a few blobs of colour, different for
    every ``seed``, shifted towards ``tint``; unlike flat noisy fills, its perceptual hash
    survives resizing and re-encoding, and two seeds give unrelated hashes."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BICUBIC), np.float32)
    img = img * (1 - tint_weight) + np.asarray(tint, np.float32)[:3] * tint_weight
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_photo(path: str | os.PathLike, seed: int, *, size=(96, 72), tint=(0, 0, 0), quality: int = 92,
                variant: str | None = None, tint_weight: float = 0.4) -> Path:
    """Write :func:`photo_pixels` as a JPEG; ``variant`` makes a near copy of it instead:
    ``"reencoded"`` (quality 60), ``"resized"`` (half size), ``"cropped"`` (8% off the
    borders) or ``"jittered"`` (brighter by 8%)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(photo_pixels(seed, size, tint, tint_weight), "RGB")
    w, h = img.size
    if variant == "reencoded":
        quality = 60
    elif variant == "resized":
        img = img.resize((w // 2, h // 2), Image.Resampling.BILINEAR)
    elif variant == "cropped":
        dx, dy = int(w * 0.04), int(h * 0.04)
        img = img.crop((dx, dy, w - dx, h - dy))
    elif variant == "jittered":
        img = Image.fromarray(np.clip(np.asarray(img, np.float32) * 1.08, 0, 255).astype(np.uint8), "RGB")
    elif variant is not None:
        raise ValueError(f"unknown variant {variant!r}")
    img.save(path, "JPEG", quality=quality)
    return path
