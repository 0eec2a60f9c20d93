"""Scan: find every image, decode each one once, and report what is usable.

Nothing is deleted or moved: a bad file is listed with its reason and left out of training.
Results are cached by (path, size, mtime), so a second scan of an unchanged folder only
stats the files.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..progress import bar as progress_bar
from ..errors import DataError
from .images import EXTENSION_FORMATS, SUPPORTED_FORMATS, orientation, _SWAPS
from .sources import DataSource, cache_dir

SCAN_VERSION = 1
# Reasons a file is left out, as shown to the user.
REASONS = {
    "zero_bytes": "empty file (0 bytes)",
    "not_image": "not an image",
    "unsupported": "unsupported image format",
    "truncated": "truncated image (the file ends early)",
    "corrupt": "corrupt image data",
    "extension_mismatch": "extension does not match the content",
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
    "extension_mismatch": "rename it to the right extension",
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
    class_names: list[str]
    records: list[ImageRecord]
    ignored: list[str] = field(default_factory=list)  # hidden files, files outside class folders
    cached: int = 0  # records answered from the scan cache

    @property
    def valid(self) -> list[ImageRecord]:
        return [r for r in self.records if r.ok]

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

    def check_usable(self) -> None:
        """Raise :class:`DataError` when no model can be trained on this data."""
        if not self.records:
            raise DataError(f"no images found in {self.root} (expected one sub-folder of images per class)")
        if not self.valid:
            raise DataError(f"none of the {len(self.records)} files in {self.root} is a usable image")
        if len(self.class_names) < 2:
            raise DataError(
                f"only one class ({self.class_names[0]!r}) in {self.root}: a classifier needs at "
                "least two sub-folders of images"
            )
        empty = [c for c, n in self.counts().items() if n == 0]
        if empty:
            raise DataError(
                f"class {empty[0]!r} has no valid image (folder {self.root / empty[0]}); add images or remove the folder"
            )

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


def _walk_files(folder: Path, seen: set[str]) -> list[Path]:
    """Every non-hidden file under ``folder``, following links, refusing link loops."""
    real = os.path.realpath(folder)
    if real in seen:
        raise DataError(
            f"symbolic link loop: {display_path(str(folder))} leads back to {display_path(real)}; remove the link"
        )
    seen = seen | {real}
    out: list[Path] = []
    for e in _listdir(folder):
        if e.name.startswith("."):
            continue
        if e.is_symlink() and not os.path.exists(e.path):
            out.append(Path(e.path))  # a dangling link: reported as unreadable
        elif _is_dir(e):
            out.extend(_walk_files(Path(e.path), seen))
        else:
            out.append(Path(e.path))
    return out


def _class_dirs(folder: Path) -> tuple[list[Path], list[str]]:
    dirs, ignored = [], []
    for e in _listdir(folder):
        if e.name.startswith("."):
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


def find_files(source: DataSource) -> tuple[list[tuple[Path, str, str | None]], list[str], list[str]]:
    """``(path, class, split)`` for every candidate file, the class names, and ignored paths."""
    roots = source.split_dirs.items() if source.layout == "presplit" else [(None, source.root)]
    found, ignored, names = [], [], set()
    for split, folder in roots:
        dirs, ign = _class_dirs(folder)
        ignored += ign
        for d in dirs:
            names.add(d.name)
            found += [(p, d.name, split) for p in _walk_files(d, set())]
    if source.layout == "presplit":
        train_names = {d.name for d in _class_dirs(source.split_dirs["train"])[0]}
        extra = sorted(names - train_names)
        if extra:
            raise DataError(
                f"class {extra[0]!r} appears in another split but not in {source.split_dirs['train']}; "
                "every class needs training images"
            )
    return found, sorted(names, key=natural_key), ignored


# ---------------------------------------------------------------------------------------
# Checking one file


def check_file(path: str | os.PathLike) -> dict:
    """Open and fully decode one file. Returns the fields of an :class:`ImageRecord`."""
    path = os.fspath(path)
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return {"ok": False, "reason": "bad_name"}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"ok": False, "reason": "unreadable", "detail": "broken link or file removed"}
    except OSError as e:
        return {"ok": False, "reason": "unreadable", "detail": e.strerror or str(e)}
    if not stat.S_ISREG(st.st_mode):
        return {"ok": False, "reason": "not_image", "detail": "not a regular file"}
    if st.st_size == 0:
        return {"ok": False, "reason": "zero_bytes"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                fmt = img.format
                info = {"format": fmt, "mode": img.mode, "frames": getattr(img, "n_frames", 1)}
                w, h = img.size
                if orientation(img) in _SWAPS:
                    w, h = h, w
                info.update(width=w, height=h)
                if fmt not in SUPPORTED_FORMATS:
                    return {"ok": False, "reason": "unsupported", "detail": fmt, **info}
                expected = EXTENSION_FORMATS.get(os.path.splitext(path)[1].lower())
                if expected and expected != fmt and not (expected == "JPEG" and fmt == "MPO"):
                    return {"ok": False, "reason": "extension_mismatch",
                            "detail": f"named {os.path.splitext(path)[1]} but holds {fmt}", **info}
                if fmt == "JPEG":
                    # Scaled decoding still reads every byte of the stream, so truncation and
                    # damage are found, at a fraction of the cost.
                    img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
                img.load()
                if info["mode"] not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr",
                                        "I", "I;16", "I;16B", "I;16L", "F", "RGBa", "La"):
                    return {"ok": False, "reason": "unsupported", "detail": f"pixel mode {info['mode']}", **info}
        return {"ok": True, **info}
    except PermissionError as e:
        return {"ok": False, "reason": "unreadable", "detail": e.strerror or str(e)}
    except UnidentifiedImageError:
        return {"ok": False, "reason": "not_image", "detail": _sniff(path)}
    except Image.DecompressionBombError as e:
        return {"ok": False, "reason": "too_large", "detail": str(e).split(" could be")[0]}
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        text = str(e)
        reason = "truncated" if "truncated" in text.lower() or isinstance(e, EOFError) else "corrupt"
        return {"ok": False, "reason": reason, "detail": text[:120] or type(e).__name__}


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
    return (os.fsencode(str(path.absolute())).decode("utf-8", "surrogateescape"), st.st_size, st.st_mtime_ns)


def scan(
    source: DataSource,
    *,
    workers: int | None = None,
    use_cache: bool = True,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> ScanReport:
    """Find and decode every file of ``source`` once; return the :class:`ScanReport`."""
    found, class_names, ignored = find_files(source)
    db = ScanCache(cache_dir(cache) / "scan.sqlite" if use_cache else None)
    try:
        keys = [_stat_key(p) for p, _, _ in found]
        cached = db.get_many([k for k in keys if k is not None])
        todo = [i for i, k in enumerate(keys) if k is None or k[0] not in cached]
        results: dict[int, dict] = {i: cached[k[0]] for i, k in enumerate(keys) if k is not None and k[0] in cached}
        if todo:
            n = workers or min(32, (os.cpu_count() or 1) * 2)
            with ThreadPoolExecutor(max_workers=n) as pool, progress_bar(len(todo), "scanning images", progress) as bar:
                for i, res in zip(todo, pool.map(lambda i: check_file(found[i][0]), todo)):
                    results[i] = res
                    bar.update(1)
            db.put_many([(keys[i], results[i]) for i in todo if keys[i] is not None])
    finally:
        db.close()
    records = []
    for i, (path, label, split) in enumerate(found):
        rel = os.path.relpath(path, source.root).replace(os.sep, "/")
        records.append(ImageRecord(path=rel, label=label, split=split, **results[i]))
    return ScanReport(
        root=source.root,
        layout=source.layout,
        class_names=class_names,
        records=records,
        ignored=[os.path.relpath(p, source.root) for p in ignored],
        cached=len(found) - len(todo),
    )
