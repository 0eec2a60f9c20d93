"""Decoding one image: every format we accept, one way, for training and for prediction.

Training, evaluation, prediction and serving all go through :func:`load_image`, so a model
sees the same pixels whatever the caller: EXIF orientation applied, the first frame of an
animation, CMYK / 16-bit / palette / grayscale / alpha turned into 8-bit RGB (transparent
parts composited on white), then resized to the model's input size.
"""

from __future__ import annotations

import io
import math
import os
from typing import Union

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from ..errors import ConfigError, UnusableImage

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "MPO", "TIFF")
EXTENSION_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".dib": "BMP", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF",
}
# Pixel modes :func:`to_rgb` turns into 8-bit RGB.
SUPPORTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "I;16B", "I;16L",
                   "F", "RGBa", "La")
# The filter of the final resize (OpenCV's, which are several times faster than Pillow's
# antialiased ones). "area" averages every source pixel (antialiased, the slowest); the
# others first reduce by whole factors (see resize_image), so they never skip pixels either.
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}
FIT_MODES = ("stretch", "crop", "pad")
# Keep the aspect ratio and centre-crop, as ImageNet backbones saw their images in training
# (timm's and fastai's default too; Keras' own is stretch): about 0.8 points more held-out
# accuracy for MobileNetV2 on cats_and_dogs_filtered than stretching.
DEFAULT_FIT = "crop"
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
EXIF_SWAPS = {5, 6, 7, 8}  # orientations that swap width and height

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


def decode_workers() -> int:
    """Threads for decoding: one per core this process may use. Decoding is CPU-bound (the
    files are usually in the page cache); more threads only contend for the GIL."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(32, n))


def as_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``160`` or ``(160, 160)`` as ``(height, width)``."""
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(h), int(w))


def open_image(source: ImageInput) -> Image.Image:
    """Open a path, bytes or PIL image lazily (nothing decoded yet)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(os.fspath(source))


def accept(img: Image.Image, name: str | os.PathLike | None = None) -> str | None:
    """The one decision on whether an opened image is used, for training, prediction and
    serving alike: raises :class:`UnusableImage` for a format or pixel mode imgclf does not
    read; returns a warning (or ``None``) for what is used all the same, such as a file whose
    extension names another format than the one it holds (a PNG named ``.jpg``)."""
    fmt = img.format
    if fmt not in SUPPORTED_FORMATS:
        raise UnusableImage("unsupported", str(fmt or "unknown format"))
    if img.mode not in SUPPORTED_MODES:
        raise UnusableImage("unsupported", f"pixel mode {img.mode}")
    if name is None:
        return None
    ext = os.path.splitext(os.fspath(name))[1]
    expected = EXTENSION_FORMATS.get(ext.lower())
    if expected and expected != fmt and not (expected == "JPEG" and fmt == "MPO"):
        return f"named {ext} but holds {fmt}; used as {fmt}"
    return None


def orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a damaged EXIF block must not make the image unusable
        return 1


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB: 16-bit scaled down, alpha composited on white."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if img.mode == "F":
            arr = np.clip(arr, 0, 1) * 255
        elif img.mode.startswith("I;16") or arr.max(initial=0) > 255:
            # 16-bit data is scaled whatever its range: a dark 16-bit image stays dark
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def _draft_target(img: Image.Image, size: tuple[int, int], fit: str) -> tuple[int, int]:
    """The smallest stored size the JPEG decoder may scale down to and still cover ``size``."""
    return _cover_target(img.size, size, fit, orientation(img) in EXIF_SWAPS)


def _cover_target(stored: tuple[int, int], size: tuple[int, int], fit: str, swapped: bool = False) -> tuple[int, int]:
    """The smallest (width, height) an image stored at ``stored`` (width, height) may be scaled
    to and still cover ``size`` (height, width) once fitted; ``swapped`` when its orientation
    turns it a quarter."""
    h, w = size
    sw, sh = stored
    if swapped:
        h, w = w, h
    if fit == "crop":
        s = max(w / sw, h / sh)
    elif fit == "pad":
        s = min(w / sw, h / sh)
    else:
        return (w, h)
    return (max(1, math.ceil(sw * s)), max(1, math.ceil(sh * s)))


def resize_image(img: Image.Image | np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    """An RGB image (PIL, or a uint8 array) resized to ``width`` x ``height`` as a uint8 array.

    A reduction by two or more is done in two steps, as Pillow's ``reducing_gap`` does: a box
    average by the whole factor (every source pixel counts, so nothing aliases), then the
    filter over what remains (less than 2x). JPEGs arrive here already reduced in the DCT
    domain by the decoder, so the first step is rarely needed for them.
    """
    sh, sw = (img.shape[0], img.shape[1]) if isinstance(img, np.ndarray) else (img.size[1], img.size[0])
    if interpolation not in ("nearest", "area"):
        fx, fy = max(1, sw // width), max(1, sh // height)
        if fx > 1 or fy > 1:
            if isinstance(img, np.ndarray):
                img = Image.fromarray(img, "RGB")
            img = img.reduce((fx, fy))
    arr = np.asarray(img, dtype=np.uint8)
    if arr.shape[:2] == (height, width):
        return arr
    return cv2.resize(arr, (width, height), interpolation=INTERPOLATIONS[interpolation])


def fit_image(img: Image.Image | np.ndarray, size: tuple[int, int], fit: str, interpolation: str) -> np.ndarray:
    """An RGB image (PIL, or a uint8 array) brought to ``size`` (height, width) by ``fit``."""
    h, w = size
    if fit == "stretch":
        return resize_image(img, w, h, interpolation)
    sh, sw = (img.shape[0], img.shape[1]) if isinstance(img, np.ndarray) else (img.size[1], img.size[0])
    if fit == "crop":
        s = max(w / sw, h / sh)
        nw, nh = max(w, round(sw * s)), max(h, round(sh * s))
        arr = resize_image(img, nw, nh, interpolation)
        left, top = (nw - w) // 2, (nh - h) // 2
        return np.ascontiguousarray(arr[top:top + h, left:left + w])
    if fit == "pad":
        s = min(w / sw, h / sh)
        nw, nh = min(w, max(1, round(sw * s))), min(h, max(1, round(sh * s)))
        canvas = np.zeros((h, w, 3), dtype=np.uint8)
        top, left = (h - nh) // 2, (w - nw) // 2
        canvas[top:top + nh, left:left + nw] = resize_image(img, nw, nh, interpolation)
        return canvas
    raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")


def load_image(
    source: ImageInput,
    image_size: int | tuple[int, int] | None = None,
    *,
    interpolation: str = "bilinear",
    fit: str = DEFAULT_FIT,
) -> np.ndarray:
    """Decode one image to a ``uint8`` array of shape ``(height, width, 3)``.

    ``image_size=None`` keeps the original size. ``fit`` is ``crop`` (the default: cover,
    then centre-crop), ``stretch`` (Keras' default: ignore the aspect ratio) or ``pad``
    (contain, then pad with black). A numpy array is taken as an image already decoded (HxW,
    HxWx1, HxWx3 or HxWx4, uint8 or float in 0..255).
    """
    if fit not in FIT_MODES:
        raise ConfigError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {interpolation!r}")
    size = as_size(image_size) if image_size is not None else None
    if isinstance(source, np.ndarray):
        return _fit_loaded(_array_to_image(source), size, interpolation, fit)
    if isinstance(source, Image.Image):
        # the caller's image: never draft or close it (that would change it under them)
        return _fit_loaded(source, size, interpolation, fit)
    if size is not None and isinstance(source, (bytes, bytearray, memoryview)):
        plain = decode_plain_jpeg(bytes(source), size, interpolation, fit)
        if plain is not None:
            return plain[1]
    elif size is not None and _has_jpeg_suffix(source):
        with open(source, "rb") as fh:
            data = fh.read()
        plain = decode_plain_jpeg(data, size, interpolation, fit)
        if plain is not None:
            return plain[1]
    with open_image(source) as img:  # by its path, so that Pillow's errors name the file
        accept(img)
        return decode_opened(img, size, interpolation, fit)


def _has_jpeg_suffix(path) -> bool:
    return EXTENSION_FORMATS.get(os.path.splitext(os.fspath(path))[1].lower()) == "JPEG"


def decode_opened(img: Image.Image, size: tuple[int, int] | None, interpolation: str, fit: str) -> np.ndarray:
    """Decode an image just opened (nothing loaded yet) the way :func:`load_image` does.

    The scan calls this too when it decodes a file for the pipeline while checking it, so
    both give the same pixels.
    """
    if size is not None and img.format in ("JPEG", "MPO"):
        target = _draft_target(img, size, fit)
        if img.format == "JPEG" and img.mode in ("RGB", "L") and orientation(img) == 1:
            pixels = _decode_jpeg_scaled(img, target)
            if pixels is not None:
                return fit_image(pixels, size, fit, interpolation)
        # DCT-domain downscaling: decodes a 500px JPEG for a 160px model about 3x faster.
        img.draft("RGB", target)
    img.load()
    return _fit_loaded(img, size, interpolation, fit)


def _decode_jpeg_scaled(img: Image.Image, target: tuple[int, int]) -> np.ndarray | None:
    """The common JPEG (RGB or grey, upright) decoded by libjpeg-turbo straight into an RGB
    array, scaled in the DCT domain to the smallest size that still covers ``target``
    (width, height). ``None`` when it will not decode cleanly: Pillow then decodes it, and
    says what is wrong with it if anything is. The same file always takes the same path, so
    training and prediction see the same pixels."""
    fp = getattr(img, "fp", None)
    if fp is None:
        return None
    try:
        fp.seek(0)
        data = fp.read()
    except (ValueError, OSError):
        return None
    return _turbo_scaled(data, target)


def _turbo_scaled(data: bytes, target: tuple[int, int]) -> np.ndarray | None:
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                      min_width=target[0], min_height=target[1], strict=True)
    except (ValueError, OSError):
        return None


# Pillow's mode for the colour spaces of a plain JPEG (CMYK and YCCK go through Pillow).
_JPEG_MODES = {"YCbCr": "RGB", "RGB": "RGB", "Gray": "L"}


def decode_plain_jpeg(data: bytes, size: tuple[int, int], interpolation: str, fit: str) -> tuple[dict, np.ndarray] | None:
    """The pixels :func:`decode_opened` gives for the commonest file, a plain JPEG, without
    Pillow parsing it first: ``({"format", "mode", "frames", "width", "height"}, pixels)``, or
    ``None`` when the file is anything else or may be (Pillow then opens it, decodes it the
    same way or its own way, and says what is wrong if anything is).

    Plain means: a JFIF file with nothing in its header but what Pillow reads without fault
    (see :func:`_plain_jpeg_header`: no EXIF, hence upright; no XMP; not a multi-picture file),
    in RGB or grey, within Pillow's pixel limit, decoding cleanly. Such a file takes the same
    libjpeg-turbo call, at the same scale, as through :func:`decode_opened`, so the pixels are
    the same whichever way it came; checking its segments here costs a few microseconds where
    Pillow's parser costs about a fifth of the decode of a small photo.
    """
    if not _plain_jpeg_header(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, OSError):
        return None
    mode = _JPEG_MODES.get(colorspace)
    limit = Image.MAX_IMAGE_PIXELS
    if mode is None or width < 1 or height < 1 or (limit is not None and width * height > limit):
        return None  # Pillow warns of or refuses what is over its limit
    pixels = _turbo_scaled(data, _cover_target((width, height), size, fit))
    if pixels is None:
        return None
    header = {"format": "JPEG", "mode": mode, "frames": 1, "width": width, "height": height}
    return header, fit_image(pixels, size, fit, interpolation)


# The segments a plain JPEG may have before its scan: quantization and Huffman tables, restart
# interval, comments, and the frame header of a baseline, extended or progressive
# (Huffman-coded) image. A JFIF APP0 segment is read apart.
_PLAIN_SEGMENTS = {0xDB, 0xC4, 0xDD, 0xFE, 0xC0, 0xC1, 0xC2}


def _plain_jpeg_header(data: bytes) -> bool:
    """Walk a JPEG's segments up to the scan: ``True`` when it starts with a whole JFIF APP0
    segment and has only segments of :data:`_PLAIN_SEGMENTS` besides. Any other segment
    (EXIF, which may turn the image; XMP, likewise; ICC, Adobe, MPF and the rest, which
    Pillow parses and may refuse when damaged) answers ``False``, and so does anything
    unexpected."""
    # SOI, then APP0 "JFIF\0" long enough for Pillow's read of version, units and density
    if data[:4] != b"\xff\xd8\xff\xe0" or data[6:11] != b"JFIF\0" or int.from_bytes(data[4:6], "big") < 16:
        return False
    i, n = 4 + int.from_bytes(data[4:6], "big"), len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: every header segment has been seen
            return True
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker not in _PLAIN_SEGMENTS or length < 2:
            return False
        i += 2 + length
    return False


def _fit_loaded(img: Image.Image, size, interpolation: str, fit: str) -> np.ndarray:
    ori = orientation(img)
    img = to_rgb(img)
    if ori in EXIF_TRANSPOSE:
        img = img.transpose(EXIF_TRANSPOSE[ori])
    if size is not None:
        return fit_image(img, size, fit, interpolation)
    return np.asarray(img, dtype=np.uint8)


def _array_to_image(arr: np.ndarray) -> Image.Image:
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return Image.fromarray(a, "L").convert("RGB")
    if a.ndim == 3 and a.shape[-1] == 4:
        return to_rgb(Image.fromarray(a, "RGBA"))
    if a.ndim == 3 and a.shape[-1] == 3:
        return Image.fromarray(a, "RGB")
    raise ValueError(f"an image array must be HxW, HxWx1, HxWx3 or HxWx4; got shape {a.shape}")
