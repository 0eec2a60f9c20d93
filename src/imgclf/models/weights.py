"""Where a transfer model's ImageNet weights come from, and loading them safely.

Resolution order (:func:`resolve_weights`):

1. ``weights`` is an existing file: that file.
2. ``weights`` is ``None`` (or ``"none"``): random initialisation.
3. ``weights == "imagenet"``: the exact ``keras.applications`` file name in the Keras cache
   (``$KERAS_HOME/models``, default ``~/.keras/models``); else a cached file for the same
   backbone and alpha made for another input size (conv weights do not depend on the input
   size; a warning says so); else a download from the official URL, as keras.applications
   does. Offline, that ends in a :class:`WeightsError` naming the file and the folder to put
   it in, or ``--weights FILE``.

:func:`load_backbone_weights` loads a file into a backbone built with ``weights=None`` and turns
any mismatch (wrong model, wrong alpha, not HDF5) into a one-line :class:`WeightsError`.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf.errors import WeightsError
from imgclf.models.registry import ModelSpec, check_alpha, check_image_size, get_spec

if TYPE_CHECKING:  # annotations only: Keras is imported where a model is built
    import keras

# md5 of the official no-top files, as keras.applications checks them on download
# (keras.applications has none for MobileNetV2).
_FILE_HASHES: dict[str, str] = {
    "efficientnetb0_notop.h5": "50bc09e76180e00e4465e1a485ddc09d",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
    "convnext_tiny_notop.h5": "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5": "d3e8ec802a04aa4fc771ee12a9a9b836",
    "weights_mobilenet_v3_small_224_0.75_float_no_top_v2.h5": "ebdb5cc8e0b497cd13a7c275d475c819",
    "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5": "07fb09a5933dd0c8eaafa16978110389",
    "weights_mobilenet_v3_large_224_0.75_float_no_top_v2.h5": "40af19a13ebea4e2ee0c676887f69a2e",
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# keras.applications' EfficientNet stores the ImageNet std (not the variance) in its
# Normalization layer and adds a Rescaling(1/sqrt(std)) only when built with
# weights="imagenet"; see _fix_efficientnet_normalization.
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def keras_cache_dir() -> Path:
    """``$KERAS_HOME/models`` (read now, not at import), else ``~/.keras/models`` like Keras."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home) / "models"


def weights_filename(spec: ModelSpec, alpha: float | None, image_size: int) -> str:
    """The exact name keras.applications gives the ImageNet no-top file for this build."""
    if not spec.weights_file:
        raise WeightsError(f"model {spec.name!r} has no pretrained weights")
    size = image_size if image_size in spec.weights_sizes else max(spec.weights_sizes)
    return spec.weights_file.format(alpha=None if alpha is None else float(alpha), size=size)


def _alternative_filenames(spec: ModelSpec, alpha: float | None, image_size: int) -> list[str]:
    """Files for the same backbone and alpha at other input sizes, nearest size first."""
    exact = weights_filename(spec, alpha, image_size)
    sizes = sorted(spec.weights_sizes, key=lambda s: (abs(s - image_size), -s))
    names = [spec.weights_file.format(alpha=None if alpha is None else float(alpha), size=s) for s in sizes]
    return [n for i, n in enumerate(names) if n != exact and n not in names[:i]]


def _download(fname: str, origin: str, cache_dir: Path, file_hash: str | None) -> str:
    """Fetch ``origin`` into ``cache_dir`` (the Keras home); tests replace this function."""
    import keras
    return keras.utils.get_file(
        fname, origin, cache_subdir="models", cache_dir=str(cache_dir.parent), file_hash=file_hash
    )


def _describe(spec: ModelSpec, alpha: float | None, image_size: int | None = None) -> str:
    bits = []
    if alpha is not None:
        bits.append(f"alpha {alpha:g}")
    if image_size is not None:
        bits.append(f"{image_size}x{image_size}")
    return f"{spec.name} ({', '.join(bits)})" if bits else spec.name


def resolve_weights(spec_name: str, alpha: float | None, image_size: int, weights: str | None) -> str | None:
    """The weights file to load into ``spec_name``'s backbone, or ``None`` for random init."""
    spec = get_spec(spec_name)
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise WeightsError(f"weights must be 'imagenet', None or a file path; got {weights!r}")
    if weights is not None:
        weights = os.fspath(weights)
        if weights.strip().lower() in ("none", "random", ""):
            weights = None
    if weights is None:
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if path.is_file():
            if not spec.is_transfer:
                raise WeightsError(
                    f"model {spec.name!r} is trained from scratch; a weights file only applies to transfer models"
                )
            return str(path)
        if path.exists():
            raise WeightsError(f"weights path {weights} is not a file")
        raise WeightsError(
            f"weights file {weights} does not exist; use 'imagenet', 'none' or the path of an .h5 weights file"
        )

    if not spec.is_transfer:
        return None  # scratch CNNs have no pretrained weights; "imagenet" is the default everywhere
    alpha = check_alpha(spec, alpha)
    image_size = check_image_size(spec, image_size)
    cache = keras_cache_dir()
    fname = weights_filename(spec, alpha, image_size)
    exact = cache / fname
    if exact.is_file():
        return str(exact)
    for alt in _alternative_filenames(spec, alpha, image_size):
        if (cache / alt).is_file():
            warnings.warn(
                f"{fname} is not in {cache}; using {alt} (the same {_describe(spec, alpha)} weights "
                f"made for another input size) for {image_size}x{image_size} inputs",
                UserWarning,
                stacklevel=2,
            )
            return str(cache / alt)
    origin = f"{spec.weights_origin}{fname}"
    try:
        return str(_download(fname, origin, cache, _FILE_HASHES.get(fname)))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any network / disk failure ends the same way
        reason = _first_line(exc)
        raise WeightsError(
            f"ImageNet weights for {_describe(spec, alpha, image_size)} are not in the Keras cache and "
            f"the download failed ({reason}); put {fname} (from {origin}) in {cache}/ "
            "or pass --weights FILE (or --weights none for random init)"
        ) from None


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip().rstrip(".") if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_backbone_weights(base: keras.Model, spec: ModelSpec, path: str, alpha: float | None = None) -> None:
    """Load ``path`` into ``base`` (built with ``weights=None``); mismatches -> WeightsError."""
    p = Path(path)
    expected = f"{_describe(spec, alpha)} no-top weights (e.g. {weights_filename(spec, alpha, max(spec.weights_sizes))})"
    name = p.name.lower()
    if name.endswith((".h5", ".hdf5")):
        try:
            with open(p, "rb") as fh:
                magic = fh.read(8)
        except OSError as exc:
            raise WeightsError(f"cannot read weights file {p}: {_first_line(exc)}") from None
        if magic != _HDF5_MAGIC:
            raise WeightsError(f"weights file {p} is not an HDF5 file; expected {expected}")
    elif not name.endswith(".keras"):
        raise WeightsError(
            f"weights file {p} has an unknown format (expected .h5, .weights.h5 or .keras); expected {expected}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base.load_weights(str(p))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py / Keras errors become one line
        raise WeightsError(
            f"weights file {p} does not fit {_describe(spec, alpha)}: {_first_line(exc)}; expected {expected}"
        ) from None
    if spec.application and spec.application.startswith("EfficientNet"):
        _fix_efficientnet_normalization(base)


def _fix_efficientnet_normalization(base: keras.Model) -> None:
    """Make a weights-file EfficientNet normalise like ``EfficientNetB0(weights="imagenet")``.

    The official file stores the ImageNet std as the Normalization layer's *variance*; Keras
    compensates with an extra Rescaling layer that exists only when the application is built
    with ``weights="imagenet"``. Loading the file into a ``weights=None`` build, as we do, would
    scale the inputs wrongly, so square the stored values instead (same result, no extra
    layer). Files that already hold the true variance (saved from a fixed model) are left alone.
    """
    import keras
    for layer in base.layers:
        if isinstance(layer, keras.layers.Normalization) and hasattr(layer, "adapt_variance"):
            var = keras.ops.convert_to_numpy(layer.adapt_variance)
            if var.shape == (3,) and all(math.isclose(float(v), s, rel_tol=1e-3) for v, s in zip(var, _IMAGENET_STD_RGB)):
                layer.adapt_variance.assign(var.astype("float32") ** 2)
                layer.finalize_state()
            return


def check_weights(spec, opts: dict, download: bool = True) -> str | None:
    """The weights file a transfer model would load (``None``: random init); WeightsError if none.

    With ``download=False`` only the Keras cache is searched (the file for the exact input
    size, else one made for another size, as :func:`imgclf.models.resolve_weights` does).
    """
    if not spec.is_transfer:
        return None
    with warnings.catch_warnings():  # "using the file made for another size": training says it again
        warnings.simplefilter("ignore", UserWarning)
        return _check_weights(spec, opts, download)


def _check_weights(spec, opts: dict, download: bool) -> str | None:
    weights = opts.get("weights", "imagenet")
    size = check_image_size(spec, opts.get("image_size"))
    if download or weights is None or str(weights).strip().lower() != "imagenet":
        return resolve_weights(spec.name, opts.get("alpha"), size, weights)
    alpha = check_alpha(spec, opts.get("alpha"))
    cache = keras_cache_dir()
    wanted = weights_filename(spec, alpha, size)
    candidates = [wanted] + [spec.weights_file.format(alpha=None if alpha is None else float(alpha), size=s)
                             for s in sorted(spec.weights_sizes, key=lambda s: (abs(s - size), -s))]
    for name in candidates:
        if (cache / name).is_file():
            return resolve_weights(spec.name, alpha, size, "imagenet")
    what = spec.name + (f" (alpha {alpha:g})" if alpha is not None else "")
    raise WeightsError(
        f"ImageNet weights for {what} are not in the Keras cache {cache}/ and downloading is off; "
        f"put {wanted} (from {spec.weights_origin}{wanted}) there"
        + (", or the file made for any other input size" if len(spec.weights_sizes) > 1 else "")
        + ", or pass --weights FILE")
