"""Errors a user can act on.

Every problem that comes from the user's input (a path, a file, an option, a run folder,
a weights file) is raised as an :class:`ImgclfError` whose message is one line that names
the thing and says what to do. The command line prints that line and exits with status 2;
anything else is a bug in imgclf.
"""


class ImgclfError(Exception):
    """Base class: a problem with the user's input, explained in one line."""

    exit_code = 2


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), shortened."""
    text = str(exc).strip().splitlines()
    line = text[0].strip().rstrip(".") if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class UsageError(ImgclfError):
    """The command line lacks an argument or combines them wrongly (shown with the usage)."""


class DataError(ImgclfError):
    """The data (a folder, an archive, a URL, a file in it) cannot be used."""


class UnusableImage(DataError, ValueError):
    """An image that opens but cannot be used: ``reason`` is ``"unsupported"``, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"unsupported image format: {detail}")
        self.reason, self.detail = reason, detail


class ImageTooLargeError(ImgclfError):
    """An image whose pixel count is over the limit (a decompression bomb, or just too big)."""


class ConfigError(ImgclfError, ValueError):
    """An option or a combination of options is invalid (a ``ValueError`` too, as for any
    bad argument to a function)."""


class WeightsError(ImgclfError):
    """Pretrained weights are missing, unreachable or do not fit the architecture."""


class RunError(ImgclfError):
    """A run folder is missing, incomplete, or was written by an incompatible version."""


class CalibrationError(ImgclfError):
    """A temperature cannot be fitted (too few validation images, a model with no softmax head)."""


class ExplainError(ImgclfError):
    """A heatmap cannot be made for this model (no convolutional layer, a graph that is not a chain)."""


class ExportError(ImgclfError):
    """An export cannot be made (unknown format, missing package, conversion failure)."""


class ParityError(ExportError):
    """The exported model does not agree with the Keras model."""


class ServeError(ImgclfError):
    """The server cannot start (missing packages, bad options)."""
class RuntimeUnavailableError(ConfigError):
    """``--runtime onnxruntime`` was asked for and a package it needs is not installed."""


class RuntimeFallbackWarning(UserWarning):
    """ONNX Runtime could not be used (not installed, no CPU provider, conversion or parity
    check failed): Keras runs the model instead."""
class BackendError(ImgclfError):
    """The Keras backend asked for (or a package a path needs) is not installed, or cannot do this."""
