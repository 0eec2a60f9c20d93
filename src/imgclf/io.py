"""Atomic file writes: a kill at any moment leaves either the old file or the new one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

TMP_PREFIX = ".imgclf-tmp-"  # every temporary file imgclf writes starts so; nothing else does


def write_at(fd: int, data, offset: int) -> None:
    """Write all of ``data`` (bytes or a contiguous array) at ``offset`` of ``fd``: ``pwrite``
    may write less than it was given (a full disk, a signal, some file systems), and the rest
    must not be lost silently."""
    view = memoryview(data).cast("B")
    while len(view):
        done = os.pwrite(fd, view, offset)
        if done <= 0:
            raise OSError(f"could not write at offset {offset}: the file system took nothing")
        view, offset = view[done:], offset + done


# files being finished on a thread of their own (see finish_later): absolute path -> an event
# set when the latest job for that path is done
_finishing: dict[str, threading.Event] = {}
_finishing_lock = threading.Lock()


def _forget_after_fork() -> None:  # a child has none of its parent's threads to wait for
    global _finishing_lock
    _finishing_lock = threading.Lock()
    _finishing.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def finish_later(path: str | os.PathLike, work: Callable[[], None]) -> None:
    """Run ``work()``, which puts a finished file at ``path`` (``fsync``, then a rename or a
    link), on a thread of its own: the caller goes on while the disk catches up.

    :func:`wait_for` waits for it, and so does the interpreter at exit (the thread is no
    daemon). Jobs for one path run one after the other, in the order given. ``work`` gives
    the file its name last, so a process killed meanwhile leaves no file at ``path``, never a
    partial one; it must handle its own errors. Raises only if no thread can be started (the
    job has not run then).
    """
    key = os.path.abspath(path)
    done = threading.Event()
    with _finishing_lock:
        before = _finishing.get(key)
        _finishing[key] = done

    def run() -> None:
        try:
            if before is not None:
                before.wait()
            work()
        finally:
            _done(key, done)

    try:
        threading.Thread(target=run, name=f"imgclf-finish:{os.path.basename(key)}").start()
    except BaseException:
        _done(key, done)
        raise


def _done(key: str, done: threading.Event) -> None:
    done.set()
    with _finishing_lock:
        if _finishing.get(key) is done:
            del _finishing[key]


def wait_for(path: str | os.PathLike | None = None) -> None:
    """Wait until the file at ``path`` (every file, with ``None``) that :func:`finish_later` is
    finishing has its name."""
    with _finishing_lock:
        events = list(_finishing.values()) if path is None else [_finishing.get(os.path.abspath(path))]
    for e in events:
        if e is not None:
            e.wait()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    ``suffix`` keeps the extension a writer insists on (``.keras``, ``.png``); it defaults to
    the target's own suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{path.stem}.", suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the mode any new file would get
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a path for a new folder beside ``path`` (not yet created); on success the folder
    replaces ``path`` whole, so readers see the old folder or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
    tmp.rmdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")




STALE_AFTER_S = 3600.0  # a temporary file untouched this long has no writer left


def remove_partial(folder: str | os.PathLike, older_than_s: float = 0.0) -> int:
    """Delete the temporary files (see :func:`atomic_path`) that killed writers left in
    ``folder``. In a folder that several processes share (the imgclf cache), pass
    ``older_than_s`` (:data:`STALE_AFTER_S`): only files nobody has written for that long go,
    as a live writer's file is fresh (every write touches it)."""
    removed = 0
    limit = time.time() - older_than_s
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        try:
            if not e.name.startswith(TMP_PREFIX) or not e.is_file(follow_symlinks=False):
                continue
            if older_than_s and e.stat().st_mtime >= limit:
                continue
            os.unlink(e.path)
            removed += 1
        except OSError:
            pass  # gone already, or not ours to remove
    return removed
