"""What predict, explain and serve read: inputs expanded to images, decoded as in training,
run through a model, and the run folder they name."""

from __future__ import annotations

import glob
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.images import EXTENSION_FORMATS, UnusableImage, accept, decode_opened, load_image, open_image
from ..data.sources import is_clutter
from ..errors import ConfigError, ImageTooLargeError
from ..models.runtime import Runtime

_GLOB_CHARS = re.compile(r"[*?\[]")


# -- inputs -----------------------------------------------------------------------------

@dataclass
class _Item:
    name: str
    source: Any = None  # what load_image takes
    error: str | None = None


def _is_single(x) -> bool:
    return isinstance(x, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray))


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(p))]


def _images_in(folder: Path) -> list[Path]:
    """Image files under ``folder``, as training finds them: clutter (``__MACOSX/``, ``._*``,
    ``.DS_Store``, ...) and hidden files left out."""
    files = []
    for p in folder.rglob("*"):
        *dirs, name = p.relative_to(folder).parts
        if (p.suffix.lower() in EXTENSION_FORMATS and not is_clutter(name)
                and not any(is_clutter(d, True) for d in dirs) and p.is_file()):
            files.append(p)
    return sorted(files, key=_natural_key)


def expand_inputs(inputs) -> list[_Item]:
    """Files, folders (recursively, image extensions only), globs, bytes, PIL images, arrays."""
    if _is_single(inputs):
        inputs = [inputs]
    items: list[_Item] = []
    counter = {"bytes": 0, "image": 0, "array": 0}

    def name(kind: str) -> str:
        n = counter[kind]
        counter[kind] += 1
        return f"<{kind} {n}>"

    for x in inputs:
        if isinstance(x, (str, os.PathLike)):
            p = Path(x)
            if p.is_file():
                items.append(_Item(str(p), p))
            elif p.is_dir():
                found = _images_in(p)
                if not found:
                    items.append(_Item(str(p), error="folder holds no image files"))
                items.extend(_Item(str(f), f) for f in found)
            elif _GLOB_CHARS.search(str(x)):
                matches = sorted(glob.glob(os.fspath(x), recursive=True), key=lambda s: _natural_key(Path(s)))
                if not matches:
                    items.append(_Item(str(x), error="no file matches this pattern"))
                for m in matches:
                    mp = Path(m)
                    if mp.is_dir():
                        items.extend(_Item(str(f), f) for f in _images_in(mp))
                    else:
                        items.append(_Item(str(mp), mp))
            else:
                items.append(_Item(str(p), error="no such file or folder"))
        elif isinstance(x, (bytes, bytearray, memoryview)):
            items.append(_Item(name("bytes"), bytes(x)))
        elif isinstance(x, Image.Image):
            fn = getattr(x, "filename", "") or ""
            items.append(_Item(fn or name("image"), x))
        elif isinstance(x, np.ndarray):
            if x.ndim == 4:  # a batch of images
                for a in x:
                    items.append(_Item(name("array"), a))
            else:
                items.append(_Item(name("array"), x))
        else:
            raise ConfigError(
                f"cannot predict on a {type(x).__name__}; give paths, folders, globs, bytes, "
                "PIL images or numpy arrays"
            )
    return items


# -- decoding ---------------------------------------------------------------------------

def describe_error(e: BaseException) -> str:
    """A one-line, user-facing reason why an input could not be decoded."""
    if isinstance(e, (ImageTooLargeError, UnusableImage)):
        return str(e)
    if isinstance(e, Image.DecompressionBombError):
        return "image has too many pixels (refused as a possible decompression bomb)"
    if isinstance(e, UnidentifiedImageError):
        return "not an image, or an image format imgclf cannot read"
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a folder"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, (OSError, SyntaxError, ValueError, EOFError)):
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"corrupt or truncated image ({msg[:160]})"
    return f"cannot read image ({type(e).__name__}: {str(e)[:160]})"


def open_header(source, max_pixels: int) -> Image.Image:
    """Open an image lazily (its header only) and refuse it if it announces over ``max_pixels``."""
    with warnings.catch_warnings():  # we check the size ourselves, below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = open_image(source)
        except Image.DecompressionBombError:
            raise ImageTooLargeError(f"image has too many pixels (over the limit of {max_pixels:,} pixels)") from None
    return check_pixels(img, max_pixels)


def check_pixels(img: Image.Image, max_pixels: int) -> Image.Image:
    """``img``, or :class:`ImageTooLargeError` if its header announces over ``max_pixels``."""
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} pixels")
    return img


def decode(source, preprocessing: dict, max_pixels: int | None = None, *, opened: bool = False) -> np.ndarray:
    """One input to the model's uint8 ``(S, S, 3)`` pixels, as :func:`load_image` decodes a file.

    ``max_pixels`` refuses images whose header announces more pixels (before decoding them).
    ``opened=True``: ``source`` is an image :func:`open_header` opened (nothing decoded yet),
    decoded exactly as its file would be.
    """
    size = tuple(preprocessing["image_size"])
    # an export that does not say how it was fitted came from before crop was the default
    interpolation, fit = preprocessing.get("interpolation", "bilinear"), preprocessing.get("fit", "stretch")
    if max_pixels is not None and isinstance(source, Image.Image):
        check_pixels(source, max_pixels)
    elif max_pixels is not None and not isinstance(source, np.ndarray):
        source, opened = open_header(source, max_pixels), True
    if opened:
        with source:
            accept(source)  # the files training uses, no more and no fewer
            return decode_opened(source, size, interpolation, fit)
    return load_image(source, size, interpolation=interpolation, fit=fit)


def decode_or_error(item: _Item, preprocessing: dict, max_pixels: int | None):
    if item.error is not None:
        return None, item.error
    try:
        return decode(item.source, preprocessing, max_pixels), None
    except Exception as e:  # any failure of one input is reported, not raised
        return None, describe_error(e)


# -- the model ------------------------------------------------------------------------

def predict_arrays(model, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Probabilities (float32, ``(N, classes)``) for a batch of uint8/float images of the model's
    size; ``model`` is a Keras model or a :class:`~imgclf.models.runtime.Runtime`."""
    x = np.asarray(np.stack(images) if not isinstance(images, np.ndarray) else images, dtype=np.float32)
    if isinstance(model, Runtime):
        return np.asarray(model.run(x), dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.asarray(model.predict_on_batch(x), dtype=np.float32)


def top_k_of(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(class_names[i], float(probs[i])) for i in order]


