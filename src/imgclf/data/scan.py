"""Scan: find every image, decode each one once, and report what is usable.

Nothing is deleted or moved: a bad file is listed with its reason and left out of training.
Results are cached by (path, size, mtime), so a second scan of an unchanged folder only
stats the files.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import stat
import tempfile
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DataError, UnusableImage
from ..io import STALE_AFTER_S, TMP_PREFIX, finish_later, remove_partial, write_at
from ..progress import bar as progress_bar
from .fingerprint import fingerprint
from .images import (
    DEFAULT_FIT,
    EXIF_SWAPS,
    EXTENSION_FORMATS,
    accept,
    as_size,
    decode_opened,
    decode_plain_jpeg,
    decode_workers,
    orientation,
)
from .sources import DataSource, cache_dir, is_clutter

SCAN_VERSION = 3  # 2: a file whose extension lies is used (with a warning); TIFF is read; 3: results carry the fingerprint (imgclf.data.fingerprint)
# Reasons a file is left out, as shown to the user.
REASONS = {
    "zero_bytes": "empty file (0 bytes)",
    "not_image": "not an image",
    "unsupported": "unsupported image format",
    "truncated": "truncated image (the file ends early)",
    "corrupt": "corrupt image data",
    "unreadable": "cannot be read",
    "bad_name": "file name is not valid UTF-8",
    "too_large": "too many pixels (possible decompression bomb)",
}
ADVICE = {
    "zero_bytes": "remove it or copy it again",
    "not_image": "move it out of the class folder",
    "unsupported": "convert it to JPEG or PNG",
    "truncated": "copy or download it again",
    "corrupt": "copy or download it again, or remove it",
    "unreadable": "fix its permissions",
    "bad_name": "rename it",
    "too_large": "resize it",
}


def natural_key(text: str) -> list:
    """Sort key that puts ``class_2`` before ``class_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def display_path(path: str) -> str:
    """A path printable on any terminal (undecodable bytes shown as escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class ImageRecord:
    path: str  # relative to the data root, '/'-separated
    label: str  # class name
    split: str | None = None  # from a pre-split layout, else None
    ok: bool = True
    reason: str | None = None  # key of REASONS when not ok
    detail: str | None = None
    format: str | None = None
    mode: str | None = None
    width: int | None = None  # as displayed (EXIF orientation applied)
    height: int | None = None
    frames: int | None = None
    warning: str | None = None  # used, but worth knowing (an extension that names another format)
    # the content's fingerprint (see imgclf.data.fingerprint): bytes digest, perceptual hash,
    # grey mean / deviation / sharpness
    digest: str | None = None
    phash: str | None = None
    gray: list[float] | None = None
    excluded: bool = False  # left out by a reviewed list (--exclude); the file is untouched

    def message(self, root: Path | None = None) -> str:
        where = display_path(str(root / self.path)) if root else display_path(self.path)
        text = REASONS.get(self.reason or "", self.reason or "")
        if self.detail:
            text = f"{text}: {self.detail}"
        return f"{where}: {text}; {ADVICE.get(self.reason or '', 'check it')}"


@dataclass
class ScanReport:
    root: Path
    layout: str
    class_names: list[str]  # the classes trained on, in order
    records: list[ImageRecord]
    ignored: list[str] = field(default_factory=list)  # files outside class folders
    # operating-system clutter (Thumbs.db, .DS_Store, ._*, __MACOSX/, ...) and hidden files,
    # skipped without being read
    clutter: list[str] = field(default_factory=list)
    # problems that leave the rest usable (a link loop skipped, an empty class left out), one
    # sentence each
    warnings: list[str] = field(default_factory=list)
    cached: int = 0  # records answered from the scan cache
    # pixels decoded while scanning, for the pipeline to take (see ``scan(decode=...)``)
    pixels: "ScanPixels | None" = field(default=None, repr=False)
    # (size, mtime in ns) of each file as the scan found it, by relative path: what names
    # its decode cache, without a second stat of every file
    stats: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def valid(self) -> list[ImageRecord]:
        """The usable images of the classes trained on, less those a reviewed list excludes."""
        names = set(self.class_names)
        return [r for r in self.records if r.ok and not r.excluded and r.label in names]

    @property
    def renamed(self) -> list[ImageRecord]:
        """Usable images with a warning (an extension that names another format)."""
        return [r for r in self.valid if r.warning]

    @property
    def excluded(self) -> list[ImageRecord]:
        return [r for r in self.records if r.excluded]

    @property
    def bad(self) -> list[ImageRecord]:
        return [r for r in self.records if not r.ok]

    def counts(self, split: str | None = None) -> dict[str, int]:
        c = Counter(r.label for r in self.valid if split is None or r.split == split)
        return {name: c.get(name, 0) for name in self.class_names}

    def formats(self) -> dict[str, int]:
        return dict(Counter(r.format for r in self.valid).most_common())

    def size_summary(self) -> dict[str, dict[str, int]]:
        """Per class: min, median and max width and height."""
        out = {}
        for name in self.class_names:
            ws = sorted(r.width for r in self.valid if r.label == name)
            hs = sorted(r.height for r in self.valid if r.label == name)
            if ws:
                out[name] = {"min_w": ws[0], "median_w": ws[len(ws) // 2], "max_w": ws[-1],
                             "min_h": hs[0], "median_h": hs[len(hs) // 2], "max_h": hs[-1]}
        return out

    def baseline(self, split: str | None = None) -> tuple[str, float]:
        """The majority class and the accuracy of always predicting it."""
        counts = self.counts(split)
        total = sum(counts.values())
        if not total:
            return ("", 0.0)
        name = max(counts, key=lambda k: counts[k])
        return name, counts[name] / total

    def keep_classes(self, min_images: int = 1, named: bool = False) -> "ScanReport":
        """Leave out (with a warning) every class with fewer than ``min_images`` usable images;
        ``named=True`` (the user listed the classes) makes that an error instead."""
        if isinstance(min_images, bool) or not isinstance(min_images, int) or min_images < 1:
            raise ConfigError(f"--min-images must be a whole number >= 1, got {min_images!r}")
        counts = self.counts()
        for name in [c for c in self.class_names if counts[c] < min_images]:
            n = counts[name]
            have = "no usable image" if n == 0 else f"only {n} usable image{'s' if n != 1 else ''}"
            folder = display_path(str(self.root / name)) if self.layout != "presplit" else repr(name)
            if named:
                raise DataError(f"class {name!r} has {have} (folder {folder}, --min-images {min_images}); "
                                "add images or leave it out of --classes")
            self.warnings.append(f"class {name!r} left out: {have} (folder {folder}"
                                 + (f", --min-images {min_images}" if min_images > 1 else "") + ")")
            self.class_names.remove(name)
        return self

    def check_usable(self) -> None:
        """Raise :class:`DataError` when no model can be trained on this data."""
        if not self.records:
            raise DataError(f"no images found in {display_path(str(self.root))} "
                            "(expected one sub-folder of images per class)")
        if not any(r.ok for r in self.records):
            raise DataError(f"none of the {len(self.records)} files in {display_path(str(self.root))} "
                            "is a usable image")
        if len(self.class_names) < 2:
            only = f"only one class ({self.class_names[0]!r})" if self.class_names else "no class"
            raise DataError(f"{only} with usable images in {display_path(str(self.root))}: a classifier needs "
                            "at least two sub-folders of images")

    def to_dict(self) -> dict:
        name, base = self.baseline("train" if self.layout == "presplit" else None)
        return {
            "root": str(self.root),
            "layout": self.layout,
            "class_names": self.class_names,
            "counts": self.counts(),
            "valid": len(self.valid),
            "bad": [asdict(r) for r in self.bad],
            "ignored": self.ignored,
            "clutter": len(self.clutter),
            "warnings": self.warnings + [f"{display_path(r.path)}: {r.warning}" for r in self.renamed],
            "formats": self.formats(),
            "sizes": self.size_summary(),
            "majority_class": name,
            "baseline_accuracy": base,
        }


# ---------------------------------------------------------------------------------------
# Walking the folder


def _listdir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: natural_key(e.name))
    except PermissionError:
        raise DataError(f"cannot read folder {display_path(str(path))}: permission denied (fix its permissions)") from None
    except OSError as e:
        raise DataError(f"cannot read folder {display_path(str(path))}: {e.strerror or e}") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


@dataclass
class _Walk:
    """What walking the folders found besides the images."""

    clutter: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _walk_files(folder: Path, seen: set[str], walk: _Walk) -> list[Path]:
    """Every file under ``folder`` but clutter, following links; a link back to the folder it is
    in or to one above it (a loop) is skipped with a warning."""
    real = os.path.realpath(folder)
    seen = seen | {real}
    out: list[Path] = []
    for e in _listdir(folder):
        directory = _is_dir(e)
        if is_clutter(e.name, directory):
            walk.clutter.append(e.path)
            continue
        if e.is_symlink() and not os.path.exists(e.path):
            out.append(Path(e.path))  # a dangling link: reported as unreadable
        elif directory:
            target = os.path.realpath(e.path)
            # a link to a folder it is inside of (its own, or one above it) would walk forever
            if any(s == target or s.startswith(os.path.join(target, "")) for s in seen):
                walk.warnings.append(f"symbolic link loop skipped: {display_path(e.path)} leads back to "
                                     f"{display_path(target)}")
                continue
            out.extend(_walk_files(Path(e.path), seen, walk))
        else:
            out.append(Path(e.path))
    return out


def _class_dirs(folder: Path, walk: _Walk | None = None) -> tuple[list[Path], list[str]]:
    dirs, ignored = [], []
    for e in _listdir(folder):
        if is_clutter(e.name, _is_dir(e)):
            if walk is not None:
                walk.clutter.append(e.path)
            continue
        if _is_dir(e):
            try:
                e.name.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(
                    f"class folder name is not valid UTF-8: {display_path(e.path)}; rename the folder"
                ) from None
            dirs.append(Path(e.path))
        else:
            ignored.append(e.path)
    return dirs, ignored


def find_files(
    source: DataSource, classes: list[str] | None = None, walk: _Walk | None = None,
) -> tuple[list[tuple[Path, str, str | None]], list[str], list[str]]:
    """``(path, class, split)`` for every candidate file, the class names, and ignored paths.

    ``classes`` walks only those class folders (a :class:`DataError` names one that is
    missing) and keeps their order."""
    walk = walk if walk is not None else _Walk()
    roots = source.split_dirs.items() if source.layout == "presplit" else [(None, source.root)]
    found, ignored, names = [], [], set()
    wanted = set(classes) if classes is not None else None
    for split, folder in roots:
        dirs, ign = _class_dirs(folder, walk)
        ignored += ign
        for d in dirs:
            if wanted is not None and d.name not in wanted:
                continue
            names.add(d.name)
            found += [(p, d.name, split) for p in _walk_files(d, set(), walk)]
    if classes is not None:
        missing = [c for c in classes if c not in names]
        if missing:
            where = source.split_dirs["train"] if source.layout == "presplit" else source.root
            raise DataError(f"class {missing[0]!r} has no folder in {display_path(str(where))}; check the name "
                            "given to --classes (`imgclf inspect` lists the classes) or restore the folder")
        if source.layout != "presplit":
            return found, list(classes), ignored
    if source.layout == "presplit":
        train_names = {d.name for d in _class_dirs(source.split_dirs["train"])[0]}
        extra = sorted(names - train_names)
        if extra:
            raise DataError(
                f"class {extra[0]!r} appears in another split but not in {source.split_dirs['train']}; "
                "every class needs training images"
            )
        if classes is not None:
            return found, list(classes), ignored
    return found, sorted(names, key=natural_key), ignored


# ---------------------------------------------------------------------------------------
# Checking one file


_READ_WHOLE = 64 << 20  # files up to this size are read in one go


def check_file(path: str | os.PathLike) -> dict:
    """Open and fully decode one file. Returns the fields of an :class:`ImageRecord`."""
    return _check(path, None)[0]


def check_and_decode(
    path: str | os.PathLike, image_size, *, interpolation: str = "bilinear", fit: str = DEFAULT_FIT
) -> tuple[dict, np.ndarray | None]:
    """:func:`check_file` that also returns the pixels :func:`load_image` would give (or ``None``).

    One decode serves both the check and the pipeline, where checking and then decoding
    again would read and decode every file twice.
    """
    return _check(path, (as_size(image_size), interpolation, fit))


def _check(path, decode) -> tuple[dict, np.ndarray | None]:
    path = os.fspath(path)
    if not _utf8(os.path.basename(path)):
        return {"ok": False, "reason": "bad_name"}, None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"ok": False, "reason": "unreadable", "detail": "broken link or file removed"}, None
    except OSError as e:
        return {"ok": False, "reason": "unreadable", "detail": e.strerror or str(e)}, None
    if not stat.S_ISREG(st.st_mode):
        return {"ok": False, "reason": "not_image", "detail": "not a regular file"}, None
    if st.st_size == 0:
        return {"ok": False, "reason": "zero_bytes"}, None
    pixels = None
    try:
        source = path
        if st.st_size <= _READ_WHOLE:  # one read, then parsed and decoded from memory
            with open(path, "rb") as fh:
                data = fh.read()
            if decode is not None and EXTENSION_FORMATS.get(os.path.splitext(path)[1].lower(), "JPEG") == "JPEG":
                # most files are plain JPEGs: decoded without Pillow parsing them first
                plain = decode_plain_jpeg(data, *decode)
                if plain is not None:
                    return {"ok": True, **plain[0], **fingerprint(path, data, plain=True)}, plain[1]
            source = io.BytesIO(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as img:
                fmt = img.format
                info = {"format": fmt, "mode": img.mode, "frames": getattr(img, "n_frames", 1)}
                w, h = img.size
                if orientation(img) in EXIF_SWAPS:
                    w, h = h, w
                info.update(width=w, height=h)
                try:
                    warning = accept(img, path)  # the decision predict and serve take too
                except UnusableImage as e:
                    return {"ok": False, "reason": e.reason, "detail": e.detail, **info}, None
                if warning:
                    info["warning"] = warning
                if decode is not None:
                    # decoding at the model's size reads every byte of the stream too
                    pixels = decode_opened(img, *decode)
                else:
                    if fmt in ("JPEG", "MPO"):
                        # Scaled decoding still reads every byte of the stream, so truncation
                        # and damage are found, at a fraction of the cost.
                        img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
                    img.load()
        return {"ok": True, **info, **fingerprint(path, data if source is not path else None)}, pixels
    except PermissionError as e:
        return {"ok": False, "reason": "unreadable", "detail": e.strerror or str(e)}, None
    except UnidentifiedImageError:
        return {"ok": False, "reason": "not_image", "detail": _sniff(path)}, None
    except Image.DecompressionBombError as e:
        return {"ok": False, "reason": "too_large", "detail": _too_many_pixels(e)}, None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        text = str(e)
        short = "truncated" in text.lower() or isinstance(e, EOFError) or _shorter_than_declared(path, st.st_size)
        reason = "truncated" if short else "corrupt"
        return {"ok": False, "reason": reason, "detail": text[:120] or type(e).__name__}, None


def _too_many_pixels(error: Exception) -> str:
    """Pillow's refusal of a decompression bomb as a phrase: ``"144,000,000 pixels, over the limit of 178,956,970"``."""
    m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(error))
    if not m:
        return "more pixels than Pillow's limit"
    return f"{int(m.group(1)):,} pixels, over the limit of {int(m.group(2)):,}"


def _utf8(name: str) -> bool:
    try:
        os.fsencode(name).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# Results that may change without the file changing (a permission fixed, a disk back online)
# are not cached: the next scan looks again.
_TRANSIENT = {"unreadable"}


def _shorter_than_declared(path: str, size: int) -> bool:
    """A RIFF (WebP) file whose header announces more bytes than the file holds."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP" and int.from_bytes(head[4:8], "little") + 8 > size


_MAGIC = [(b"ftypheic", "HEIC"), (b"ftypmif1", "HEIF"), (b"<svg", "SVG"), (b"%PDF", "PDF")]


def _sniff(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return None
    for magic, name in _MAGIC:
        if magic in head:
            return f"looks like {name}"
    return None


# ---------------------------------------------------------------------------------------
# The cache


class ScanCache:
    """(absolute path, size, mtime_ns) -> check_file result, in one SQLite file."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._db = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS scan (path TEXT PRIMARY KEY, size INTEGER, "
                    "mtime_ns INTEGER, version INTEGER, result TEXT)"
                )
            except sqlite3.Error:
                self._db = None  # a cache we cannot open is a cache we do without

    def get_many(self, keys: list[tuple[str, int, int]]) -> dict[str, dict]:
        if self._db is None:
            return {}
        wanted = {k[0]: k for k in keys}
        out = {}
        with self._lock:
            rows = []
            paths = list(wanted)
            for i in range(0, len(paths), 500):
                chunk = paths[i: i + 500]
                rows += self._db.execute(
                    f"SELECT path, size, mtime_ns, version, result FROM scan WHERE path IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        for p, size, mtime, version, result in rows:
            k = wanted.get(p)
            if k and k[1] == size and k[2] == mtime and version == SCAN_VERSION:
                out[p] = json.loads(result)
        return out

    def put_many(self, items: list[tuple[tuple[str, int, int], dict]]) -> None:
        if self._db is None or not items:
            return
        with self._lock:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO scan VALUES (?, ?, ?, ?, ?)",
                        [(k[0], k[1], k[2], SCAN_VERSION, json.dumps(v)) for k, v in items],
                    )
            except sqlite3.Error:
                pass

    def close(self):
        if self._db is not None:
            self._db.close()


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    raw = os.fsencode(str(path.absolute()))
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        # SQLite stores text as UTF-8: an undecodable name is keyed by its bytes, in hex
        key = "hex:" + raw.hex()
    return (key, st.st_size, st.st_mtime_ns)


class ScanPixels:
    """Pixels the scan decoded, by relative path, in a scratch ``.npy`` file with no name.

    Rows are written and read with ``pwrite``/``pread``, so memory stays flat whatever the
    size of the data. The file has no name while it is written (``O_TMPFILE``, or unlinked
    at once where that is missing), so it vanishes when closed or when the process ends, even
    killed; when the scan decoded every file, :meth:`save_as` gives it the name of the decode
    cache, so the pixels are written once. ``options`` is ``((height, width), interpolation,
    fit)``; row ``i`` is the ``i``-th file the scan decoded.
    """

    def __init__(self, folder: Path, options: tuple, n_rows: int):
        self.options = options
        (h, w), _, _ = options
        self.shape = (h, w, 3)
        self.row_bytes = h * w * 3
        self.n_rows = n_rows
        self.complete = False  # every file of the scan report has its row (row i = record i)
        folder.mkdir(parents=True, exist_ok=True)
        remove_partial(folder, STALE_AFTER_S)  # what killed runs left half-written in the shared cache
        self.folder = folder
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o644)
            self._linkable = True
        except (AttributeError, OSError):
            fd, name = tempfile.mkstemp(prefix=".scan-pixels-", dir=folder)
            os.unlink(name)
            self._linkable = False
        self._fd: int | None = fd
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "|u1", "fortran_order": False, "shape": (n_rows, h, w, 3)})
        self.offset = len(header.getvalue())
        try:
            os.pwrite(fd, header.getvalue(), 0)
            os.ftruncate(fd, self.offset + n_rows * self.row_bytes)
        except OSError:
            self.close()
            raise
        self.rows: dict[str, int] = {}

    def write(self, row: int, pixels: np.ndarray) -> None:
        write_at(self._fd, np.ascontiguousarray(pixels, dtype=np.uint8), self.offset + row * self.row_bytes)

    def get(self, rel_path: str) -> np.ndarray | None:
        row = self.rows.get(rel_path)
        if row is None or self._fd is None:
            return None
        data = os.pread(self._fd, self.row_bytes, self.offset + row * self.row_bytes)
        if len(data) != self.row_bytes:
            return None
        return np.frombuffer(data, dtype=np.uint8).reshape(self.shape)

    def for_paths(self, rel_paths: list[str | None]) -> "_RowsFor":
        """A sequence of pixels (or ``None``), one per path, read when asked for."""
        return _RowsFor(self, rel_paths)

    @property
    def reader_path(self) -> str | None:
        """A path that opens the scratch file for reading while it has no name (Linux), or
        ``None``."""
        if self._fd is None or not self._linkable or not os.path.exists(f"/proc/self/fd/{self._fd}"):
            return None
        return f"/proc/self/fd/{self._fd}"

    def save_as(self, target: Path, *, background: bool = False) -> bool:
        """Give the scratch file the name ``target`` (atomically, after ``fsync``) and close it.
        ``False`` where the file system cannot (the caller copies the rows instead).

        ``background=True`` returns at once and names the file on a thread of its own (see
        :func:`~imgclf.io.finish_later`; the scratch file is this object's no more): the
        ``fsync`` of a large file waits for the disk, and a run need not wait with it. A
        reader opened from :attr:`reader_path` beforehand reads the same file meanwhile.
        """
        if self._fd is None or not self._linkable:
            return False
        target = Path(os.path.abspath(target))  # where it was meant, whatever the thread's cwd then
        if background:
            fd = self._fd

            def name_and_close() -> None:
                try:
                    if not _name_scratch(fd, target):
                        warnings.warn(f"could not keep the decoded images as {display_path(str(target))}; "
                                      "the next run decodes them again", RuntimeWarning, stacklevel=1)
                finally:
                    os.close(fd)

            try:
                finish_later(target, name_and_close)
            except RuntimeError:  # no thread to be had: named here and now
                pass
            else:
                self._fd = None  # the thread's now
                return True
        if not _name_scratch(self._fd, target):
            return False
        self.close()
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __len__(self) -> int:
        return len(self.rows)

    def __deepcopy__(self, memo):  # dataclasses.asdict(report) must not duplicate the file
        return self

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass


def _name_scratch(fd: int, target: Path) -> bool:
    """``fsync`` a scratch file opened with ``O_TMPFILE`` and give it the name ``target``;
    ``False`` if it could not be named."""
    # a name of this process's own: two processes scanning the same data at once (the
    # workers of one run) must not unlink each other's link before it is renamed
    tmp = target.with_name(f"{TMP_PREFIX}{os.getpid()}.{target.name}")
    folder_fd = None
    try:
        os.fsync(fd)
        if os.utime in os.supports_fd:
            os.utime(fd)  # fresh: its link must not pass for a dead run's leftover (io.remove_partial)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE file; a dir_fd
        # argument makes Python call linkat rather than link (which would not follow it)
        folder_fd = os.open(tmp.parent, os.O_RDONLY)
        os.link(f"/proc/self/fd/{fd}", tmp.name, dst_dir_fd=folder_fd, follow_symlinks=True)
        os.replace(tmp, target)
        return True
    except OSError:
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        except OSError:
            pass
        return False
    finally:
        if folder_fd is not None:
            os.close(folder_fd)


class _RowsFor:
    def __init__(self, pixels: ScanPixels, rel_paths: list[str]):
        self.pixels, self.rel_paths = pixels, rel_paths

    def __len__(self) -> int:
        return len(self.rel_paths)

    def __getitem__(self, i: int) -> np.ndarray | None:
        path = self.rel_paths[i]
        return None if path is None else self.pixels.get(path)


def scan(
    source: DataSource,
    *,
    workers: int | None = None,
    use_cache: bool = True,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    decode: tuple | None = None,
    classes: list[str] | None = None,
) -> ScanReport:
    """Find and decode every file of ``source`` once; return the :class:`ScanReport`.

    ``decode=(image_size, interpolation, fit)`` also keeps the pixels of every file checked
    now (not those answered from the scan cache), decoded as
    :func:`~imgclf.data.images.load_image` would, in ``report.pixels`` (a
    :class:`ScanPixels`), so that the pipeline does not decode them a second time.
    ``classes`` scans only those class folders, and keeps their order.
    """
    walk = _Walk()
    found, class_names, ignored = find_files(source, classes, walk)
    db = ScanCache(cache_dir(cache) / "scan.sqlite" if use_cache else None)
    store: ScanPixels | None = None
    got: dict[int, int] = {}  # index in found -> row in store
    try:
        keys = [_stat_key(p) for p, _, _ in found]
        cached = db.get_many([k for k in keys if k is not None])
        todo = [i for i, k in enumerate(keys) if k is None or k[0] not in cached]
        results: dict[int, dict] = {i: cached[k[0]] for i, k in enumerate(keys) if k is not None and k[0] in cached}
        if decode is not None and todo:
            options = (as_size(decode[0]), decode[1], decode[2])
            try:
                store = ScanPixels(cache_dir(cache) / "decoded", options, len(todo))
            except OSError:
                store = None  # no scratch space: the pipeline decodes again
        if todo:
            how = store.options if store is not None else None

            def work(j: int):
                res, px = _check(found[todo[j]][0], how)
                if px is None:
                    return res, False
                try:
                    store.write(j, px)
                except OSError:  # scratch space ran out: the pipeline decodes this one again
                    return res, False
                return res, True

            n = workers or decode_workers()
            # files go to the threads in runs of a few dozen: one task per file costs more in
            # scheduling than a small JPEG costs to decode
            chunk = max(1, min(32, len(todo) // (n * 4)))

            def work_many(start: int):
                return [work(j) for j in range(start, min(start + chunk, len(todo)))]

            with ThreadPoolExecutor(max_workers=n) as pool, progress_bar(len(todo), "scanning images", progress) as bar:
                for start, done in zip(range(0, len(todo), chunk), pool.map(work_many, range(0, len(todo), chunk))):
                    for j, (res, kept) in enumerate(done, start):
                        results[todo[j]] = res
                        if kept:
                            got[todo[j]] = j
                    bar.update(len(done))
            db.put_many([(keys[i], results[i]) for i in todo
                         if keys[i] is not None and results[i].get("reason") not in _TRANSIENT])
    except BaseException:
        if store is not None:
            store.close()
        raise
    finally:
        db.close()
    records, stats = [], {}
    prefix = os.path.join(str(source.root), "")
    for i, (path, label, split) in enumerate(found):
        text = str(path)
        rel = text[len(prefix):] if text.startswith(prefix) else os.path.relpath(path, source.root)
        rel = rel.replace(os.sep, "/")
        res = results[i]
        if res.get("ok") and not _utf8(rel):
            # a sub-folder below the class folder with an undecodable name: the split lists
            # (UTF-8 text) could not name this file
            res = {"ok": False, "reason": "bad_name", "detail": "a folder in its path is not valid UTF-8"}
        elif i in got:
            store.rows[rel] = got[i]
        if keys[i] is not None:
            stats[rel] = keys[i][1:]
        records.append(ImageRecord(path=rel, label=label, split=split, **res))
    report = ScanReport(
        root=source.root,
        layout=source.layout,
        class_names=class_names,
        records=records,
        ignored=[os.path.relpath(p, source.root) for p in ignored],
        clutter=[os.path.relpath(p, source.root) for p in walk.clutter],
        warnings=walk.warnings,
        cached=len(found) - len(todo),
        stats=stats,
    )
    if store is not None and store.rows:
        # row i is records[i], and every good file's row was written
        store.complete = len(todo) == len(found) and all(
            i in got for i in range(len(found)) if results[i].get("ok"))
        report.pixels = store
    elif store is not None:
        store.close()
    return report
