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


class DataError(ImgclfError):
    """The data (a folder, an archive, a URL, a file in it) cannot be used."""


class ConfigError(ImgclfError):
    """An option or a combination of options is invalid."""


class WeightsError(ImgclfError):
    """Pretrained weights are missing, unreachable or do not fit the architecture."""


class RunError(ImgclfError):
    """A run folder is missing, incomplete, or was written by an incompatible version."""


class BackendError(ImgclfError):
    """The Keras backend asked for (or a package a path needs) is not installed, or cannot do this."""
