"""Where the images come from: a folder, an archive, a URL or a known dataset name.

``resolve_source`` turns what the user typed into a local folder and tells its layout:

* ``class_folders``: ``root/<class>/<images>`` (one sub-folder per class);
* ``presplit``: ``root/train/<class>/...``, ``root/validation/<class>/...`` and optionally
  ``root/test/<class>/...`` (the cats_and_dogs_filtered layout).

Archives and downloads land in the imgclf cache, written under a temporary name and renamed
when complete, so a kill never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..progress import bar as progress_bar

SPLIT_DIR_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid"),
    "test": ("test", "testing"),
}
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
# What operating systems, zip tools and notebooks leave in folders of images: skipped
# (and counted), never read as images or taken for classes.
CLUTTER_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini", ".ds_store", "icon\r"}
CLUTTER_DIRS = {"__macosx", ".ipynb_checkpoints", "$recycle.bin", ".trash", ".trashes", ".spotlight-v100",
                ".fseventsd", "system volume information"}


def is_clutter(name: str, is_dir: bool = False) -> bool:
    """Whether a file or folder name is system clutter or hidden (``Thumbs.db``, ``.DS_Store``,
    AppleDouble ``._*`` files, ``__MACOSX/``, ``.ipynb_checkpoints/``, any dot-file)."""
    low = name.lower()
    if name.startswith("."):
        return True
    return low in CLUTTER_DIRS if is_dir else low in CLUTTER_FILES


@dataclass(frozen=True)
class KnownDataset:
    name: str
    url: str
    folder: str  # the folder inside the archive that holds the data
    size: int | None = None  # bytes of the archive, checked after download
    sha256: str | None = None


KNOWN_DATASETS = {
    "cats_and_dogs_filtered": KnownDataset(
        name="cats_and_dogs_filtered",
        url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
        folder="cats_and_dogs_filtered",
        size=68_606_236,
    ),
}
DEFAULT_DATASET = "cats_and_dogs_filtered"


@dataclass
class DataSource:
    """A local folder of images and how it is laid out."""

    root: Path
    layout: str  # "class_folders" or "presplit"
    split_dirs: dict[str, Path] = field(default_factory=dict)  # presplit only
    origin: str = ""  # what the user asked for

    def describe(self) -> str:
        if self.layout == "presplit":
            return f"{self.root} (pre-split: {', '.join(self.split_dirs)})"
        return f"{self.root} (one folder per class)"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The imgclf cache: ``$IMGCLF_CACHE``, else ``$XDG_CACHE_HOME/imgclf``, else ``~/.cache/imgclf``."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get("IMGCLF_CACHE"):
        return Path(os.environ["IMGCLF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgclf"


def keras_datasets_dir() -> Path:
    """Keras' dataset cache, where ``keras.utils.get_file`` puts downloads."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "datasets"


def resolve_source(
    data: str | os.PathLike | None = None,
    *,
    data_path: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> DataSource:
    """Resolve a folder, archive, URL or known dataset name to a local :class:`DataSource`.

    ``data=None`` means the default dataset (``cats_and_dogs_filtered``). ``data_path`` is
    where to look for a known dataset before the caches and the network.
    """
    spec = DEFAULT_DATASET if data is None else os.fspath(data)
    if spec in KNOWN_DATASETS and not Path(spec).is_dir():  # a local folder of that name wins
        return _known(KNOWN_DATASETS[spec], data_path, cache, progress)
    if spec.startswith(("http://", "https://")):
        archive = download(spec, cache=cache, progress=progress)
        return _from_path(extract(archive, cache=cache), origin=spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"no such file or folder: {spec} (give a folder with one sub-folder per class, "
            f"a .zip or .tar.gz, a URL, or one of: {', '.join(KNOWN_DATASETS)})"
        )
    if path.is_file():
        if not spec.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(
                f"{spec} is a file, not a folder or an archive (.zip, .tar.gz): "
                "give the folder that holds one sub-folder per class"
            )
        return _from_path(extract(path, cache=cache), origin=spec)
    return _from_path(path, origin=spec)


def _known(ds: KnownDataset, data_path, cache, progress) -> DataSource:
    candidates: list[Path] = []
    if data_path is not None:
        p = Path(data_path).expanduser()
        candidates += [p, p / ds.folder]
    kd = keras_datasets_dir()
    # keras.utils.get_file(extract=True) in Keras 2 extracts beside the zip, Keras 3 into
    # "<name>_extracted/"; the blog's code names the zip cats_and_dogs.zip.
    candidates += [kd / ds.folder, kd / f"{ds.folder}_extracted" / ds.folder,
                   kd / "cats_and_dogs_extracted" / ds.folder]
    candidates += [cache_dir(cache) / "datasets" / ds.folder]
    for c in candidates:
        if c.is_dir() and _looks_like_data(c):
            return _from_path(c, origin=ds.name)
    if data_path is not None:
        raise DataError(f"no {ds.name} data at {data_path} (expected a folder with train/ and validation/)")
    try:
        archive = download(ds.url, cache=cache, size=ds.size, sha256=ds.sha256, progress=progress)
    except DataError as e:
        raise DataError(
            f"{ds.name} is not on this machine and cannot be downloaded ({e}); download {ds.url} "
            f"and unzip it into {kd} (or pass --data PATH)"
        ) from None
    root = extract(archive, cache=cache, target=cache_dir(cache) / "datasets")
    return _from_path(root / ds.folder if (root / ds.folder).is_dir() else root, origin=ds.name)


def _looks_like_data(path: Path) -> bool:
    try:
        return any(p.is_dir() for p in path.iterdir())
    except OSError:
        return False


def _from_path(path: Path, origin: str) -> DataSource:
    path = Path(os.path.abspath(path))
    if not path.is_dir():
        raise DataError(f"{path} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataError(f"cannot read folder {path}: permission denied (fix its permissions)")
    split_dirs = detect_split_dirs(path)
    if "train" in split_dirs and len(split_dirs) > 1:
        return DataSource(root=path, layout="presplit", split_dirs=split_dirs, origin=origin)
    # an archive that wraps everything in a single top folder
    subdirs = [p for p in path.iterdir() if p.is_dir() and not is_clutter(p.name, True)]
    files = [p for p in path.iterdir() if p.is_file() and not is_clutter(p.name)]
    if len(subdirs) == 1 and not files:
        inner = detect_split_dirs(subdirs[0])
        if "train" in inner and len(inner) > 1:
            return DataSource(root=subdirs[0], layout="presplit", split_dirs=inner, origin=origin)
    return DataSource(root=path, layout="class_folders", origin=origin)


def detect_split_dirs(path: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    try:
        names = {p.name.lower(): p for p in path.iterdir() if p.is_dir() and not is_clutter(p.name, True)}
    except OSError as e:
        raise DataError(f"cannot read folder {path}: {e.strerror or e}") from None
    for split, aliases in SPLIT_DIR_NAMES.items():
        for alias in aliases:
            if alias in names:
                found[split] = names[alias]
                break
    return found


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def download(
    url: str,
    *,
    cache: str | os.PathLike | None = None,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` once into the cache and return the local file.

    The file is written to a temporary name and renamed only when complete and, where a size
    or sha256 is known, checked. A cached file that fails the check is downloaded again.
    """
    name = os.path.basename(url.split("?", 1)[0]) or "download"
    dest = cache_dir(cache) / "downloads" / _url_key(url) / name
    if dest.is_file() and _verify(dest, size, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    announced = int(resp.headers.get("Content-Length") or 0)
                    bar = _bar(announced or size, f"downloading {name}", progress)
                    written = 0
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                    bar.close()
                # http.client does not complain when the connection drops early: compare
                # with what the server announced
                if announced and written != announced:
                    raise DataError(
                        f"download of {url} stopped after {written} of {announced} bytes; try again"
                    )
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DataError(f"cannot download {url}: {reason}") from None
        problem = _verify(Path(tmp), size, sha256)
        if problem:
            raise DataError(f"download of {url} is damaged: {problem}; try again")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _verify(path: Path, size: int | None, sha256: str | None) -> str | None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{actual} bytes where {size} were expected"
    if sha256 is not None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != sha256:
            return "sha256 does not match"
    return None


def _bar(total, desc, enabled):
    return progress_bar(total or None, desc, enabled, unit="B")


def extract(
    archive: str | os.PathLike, *, cache: str | os.PathLike | None = None, target: Path | None = None
) -> Path:
    """Extract an archive once into the cache (or ``target``) and return the folder.

    Extraction goes into a temporary folder that is renamed when complete. Members that
    would land outside the folder (absolute paths, ``..``) are refused.
    """
    archive = Path(archive)
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    base = target if target is not None else cache_dir(cache) / "extracted"
    dest = base / f"{stem}-{key}"
    # with a target, the archive's contents land in the target itself: its marker lies beside them
    marker = base / f".{stem}-{key}.imgclf-extracted" if target is not None else dest / ".imgclf-extracted"
    if marker.exists():
        return base if target is not None else dest
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=base))
    try:
        _extract_into(archive, tmp)
        (tmp / ".imgclf-extracted").write_text(str(archive) + "\n")
        if target is not None:
            # a known dataset: move its contents (e.g. cats_and_dogs_filtered/) into target
            for child in tmp.iterdir():
                goal = base / child.name
                if child.name == ".imgclf-extracted":
                    continue
                if goal.exists():
                    shutil.rmtree(goal) if goal.is_dir() else goal.unlink()
                os.replace(child, goal)
            dest = base
            marker.write_text(str(archive) + "\n")
        else:
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract_into(archive: Path, dest: Path) -> None:
    dest_resolved = dest.resolve()

    def safe(member_name: str) -> None:
        out = (dest / member_name).resolve()
        if out != dest_resolved and dest_resolved not in out.parents:
            raise DataError(f"{archive} holds an unsafe path {member_name!r}; refusing to extract it")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    safe(name)
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    safe(m.name)
                    if m.issym() or m.islnk():
                        safe(os.path.join(os.path.dirname(m.name), m.linkname))
                tf.extractall(dest, members=members, filter="data")
        else:
            raise DataError(f"{archive} is not a zip or tar archive (or it is damaged)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot extract {archive}: {e}; is the archive complete?") from None
