"""Sources: folders, pre-split folders, archives, URLs and the known dataset name."""

from __future__ import annotations

import http.server
import io
import os
import tarfile
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from imgclf.data import sources
from imgclf.data.sources import DataSource, KnownDataset, download, extract, resolve_source
from imgclf.errors import DataError
from tests.imagefactory import make_class_tree


# -- helpers ---------------------------------------------------------------------------------


def _presplit(root: Path, with_test: bool = False) -> Path:
    make_class_tree(root / "train", {"cats": 2, "dogs": 2}, size=(8, 8))
    make_class_tree(root / "validation", {"cats": 1, "dogs": 1}, size=(8, 8))
    if with_test:
        make_class_tree(root / "test", {"cats": 1, "dogs": 1}, size=(8, 8))
    return root


def _zip_folder(folder: Path, archive: Path, arc_prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, arc_prefix + p.relative_to(folder).as_posix())
    return archive


def _tar_folder(folder: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=arcname)
    return archive


class _Server:
    """A local HTTP server on 127.0.0.1 in a thread: serves ``files`` and counts requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.lie: dict[str, int] = {}  # path -> Content-Length announced (more than sent)
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(outer.lie.get(self.path, len(body))))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def no_network(monkeypatch):
    """urlopen fails as it does on a machine without network."""
    calls = []

    def offline(url, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return calls


# -- folders ---------------------------------------------------------------------------------


def test_class_folder(class_tree):
    src = resolve_source(class_tree)
    assert isinstance(src, DataSource)
    assert src.layout == "class_folders"
    assert src.root == class_tree.resolve()
    assert src.split_dirs == {}


@pytest.mark.parametrize("with_test", [False, True])
def test_presplit_folder(tmp_path, with_test):
    root = _presplit(tmp_path / "cd", with_test)
    src = resolve_source(root)
    assert src.layout == "presplit"
    expected = ["train", "validation"] + (["test"] if with_test else [])
    assert sorted(src.split_dirs) == sorted(expected)
    assert src.split_dirs["train"] == root / "train"


def test_presplit_wrapped_in_one_top_folder(tmp_path):
    _presplit(tmp_path / "outer" / "cats_and_dogs_filtered")
    src = resolve_source(tmp_path / "outer")
    assert src.layout == "presplit"
    assert src.root == tmp_path / "outer" / "cats_and_dogs_filtered"


def test_wrong_path_names_it(tmp_path):
    with pytest.raises(DataError, match="no such file or folder: .*nowhere"):
        resolve_source(tmp_path / "nowhere")


def test_plain_file_is_refused(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        resolve_source(f)


def test_unreadable_folder(tmp_path, monkeypatch):
    root = make_class_tree(tmp_path / "d", {"a": 1, "b": 1}, size=(8, 8))
    if os.geteuid() != 0:
        root.chmod(0)
        try:
            with pytest.raises(DataError, match="permission denied"):
                resolve_source(root)
        finally:
            root.chmod(0o755)
    else:  # root reads everything: simulate
        real = os.access
        monkeypatch.setattr(sources.os, "access", lambda p, m, **k: False if Path(p) == root else real(p, m, **k))
        with pytest.raises(DataError, match="permission denied"):
            resolve_source(root)


# -- archives --------------------------------------------------------------------------------


def test_zip_is_extracted_once(tmp_path, class_tree):
    archive = _zip_folder(class_tree, tmp_path / "pets.zip")
    cache = tmp_path / "cache"
    src = resolve_source(archive, cache=cache)
    assert src.layout == "class_folders"
    assert cache in src.root.parents
    assert sorted(p.name for p in src.root.iterdir() if not p.name.startswith(".")) == ["cats", "dogs"]
    assert len(list((src.root / "cats").iterdir())) == 16
    marker = src.root / ".imgclf-extracted"
    stamp = marker.stat().st_mtime_ns
    again = resolve_source(archive, cache=cache)
    assert again.root == src.root
    assert marker.stat().st_mtime_ns == stamp  # not extracted a second time


def test_tar_gz_presplit(tmp_path):
    root = _presplit(tmp_path / "src")
    archive = _tar_folder(root, tmp_path / "cd.tar.gz", arcname="cats_and_dogs_filtered")
    src = resolve_source(archive, cache=tmp_path / "cache")
    assert src.layout == "presplit"
    assert src.root.name == "cats_and_dogs_filtered"
    assert sorted(src.split_dirs) == ["train", "validation"]


@pytest.mark.parametrize("evil", ["../evil.txt", "sub/../../evil.txt", "/tmp/imgclf-evil-abs.txt"])
def test_zip_slip_refused(tmp_path, evil):
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/ok.txt", "fine")
        zf.writestr(evil, "gotcha")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="unsafe path"):
        resolve_source(archive, cache=cache)
    assert not (cache / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/imgclf-evil-abs.txt").exists()
    # nothing half-extracted is left to be trusted later
    assert not list((cache / "extracted").glob("slip*"))


def test_tar_slip_refused(tmp_path):
    archive = tmp_path / "slip.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        data = b"gotcha"
        info = tarfile.TarInfo("../evil.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="unsafe path"):
        resolve_source(archive, cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "evil.txt").exists()


def test_tar_symlink_out_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("data/a/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(DataError, match="unsafe path"):
        resolve_source(archive, cache=tmp_path / "cache")


def test_damaged_archive(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match="broken.zip"):
        resolve_source(bad, cache=tmp_path / "cache")


# -- URLs ------------------------------------------------------------------------------------


def test_url_downloaded_once(tmp_path, class_tree, server):
    server.files["/pets.zip"] = _zip_folder(class_tree, tmp_path / "pets.zip").read_bytes()
    cache = tmp_path / "cache"
    src = resolve_source(server.url("/pets.zip"), cache=cache, progress=False)
    assert src.layout == "class_folders"
    assert len(server.requests) == 1
    again = resolve_source(server.url("/pets.zip"), cache=cache, progress=False)
    assert again.root == src.root
    assert len(server.requests) == 1  # the second call made no request
    # only the finished file is in the cache: no temporary left behind
    files = [p.name for p in (cache / "downloads").rglob("*") if p.is_file()]
    assert files == ["pets.zip"]


def test_download_size_mismatch_leaves_nothing(tmp_path, server):
    server.files["/blob.bin"] = b"x" * 1000
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="1000 bytes where 999 were expected"):
        download(server.url("/blob.bin"), cache=cache, size=999, progress=False)
    assert [p for p in (cache / "downloads").rglob("*") if p.is_file()] == []


def test_download_sha256_checked(tmp_path, server):
    import hashlib

    body = b"some bytes"
    server.files["/blob.bin"] = body
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="sha256"):
        download(server.url("/blob.bin"), cache=cache, sha256="0" * 64, progress=False)
    path = download(server.url("/blob.bin"), cache=cache, sha256=hashlib.sha256(body).hexdigest(), progress=False)
    assert path.read_bytes() == body


def test_download_cut_short_leaves_nothing(tmp_path, server):
    server.files["/cut.zip"] = b"y" * 500
    server.lie["/cut.zip"] = 5000  # the connection ends before the announced length
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="500 of 5000 bytes"):
        download(server.url("/cut.zip"), cache=cache, progress=False)
    assert [p for p in (cache / "downloads").rglob("*") if p.is_file()] == []


def test_download_http_error(tmp_path, server):
    with pytest.raises(DataError, match="cannot download .*Not Found"):
        download(server.url("/missing.zip"), cache=tmp_path / "cache", progress=False)


def test_cached_download_failing_check_is_fetched_again(tmp_path, server):
    server.files["/blob.bin"] = b"z" * 10
    cache = tmp_path / "cache"
    path = download(server.url("/blob.bin"), cache=cache, size=10, progress=False)
    path.write_bytes(b"z" * 3)  # damaged since
    path = download(server.url("/blob.bin"), cache=cache, size=10, progress=False)
    assert path.read_bytes() == b"z" * 10
    assert len(server.requests) == 2


# -- the known name --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["cats_and_dogs_filtered",
                                   "cats_and_dogs_filtered_extracted/cats_and_dogs_filtered",
                                   "cats_and_dogs_extracted/cats_and_dogs_filtered"])
def test_known_name_found_in_keras_cache(tmp_path, monkeypatch, no_network, where):
    keras_home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    root = _presplit(keras_home / "datasets" / where)
    src = resolve_source("cats_and_dogs_filtered", cache=tmp_path / "cache")
    assert src.root == root
    assert src.layout == "presplit"
    assert src.origin == "cats_and_dogs_filtered"
    assert no_network == []


def test_default_is_the_known_dataset(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    root = _presplit(tmp_path / "keras" / "datasets" / "cats_and_dogs_filtered")
    assert resolve_source(None, cache=tmp_path / "cache").root == root


def test_known_name_at_data_path(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras"))
    root = _presplit(tmp_path / "somewhere" / "cats_and_dogs_filtered")
    # the folder itself, or the folder that holds it
    assert resolve_source("cats_and_dogs_filtered", data_path=root, cache=tmp_path / "c").root == root
    assert resolve_source("cats_and_dogs_filtered", data_path=root.parent, cache=tmp_path / "c").root == root
    assert no_network == []


def test_known_name_missing_at_data_path(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras"))
    with pytest.raises(DataError, match="no cats_and_dogs_filtered data at"):
        resolve_source("cats_and_dogs_filtered", data_path=tmp_path / "nothing", cache=tmp_path / "c")
    assert no_network == []


def test_offline_and_nothing_cached_says_where_to_put_the_data(tmp_path, monkeypatch, no_network):
    keras_home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    with pytest.raises(DataError) as info:
        resolve_source("cats_and_dogs_filtered", cache=tmp_path / "cache", progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert sources.KNOWN_DATASETS["cats_and_dogs_filtered"].url in msg
    assert str(keras_home / "datasets") in msg
    assert "--data" in msg
    assert len(no_network) == 1
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_known_name_downloaded_once_then_found(tmp_path, monkeypatch, server):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    root = _presplit(tmp_path / "src" / "cats_and_dogs_filtered")
    body = _zip_folder(root, tmp_path / "cd.zip", arc_prefix="cats_and_dogs_filtered/").read_bytes()
    server.files["/cd.zip"] = body
    monkeypatch.setitem(sources.KNOWN_DATASETS, "cats_and_dogs_filtered", KnownDataset(
        name="cats_and_dogs_filtered", url=server.url("/cd.zip"), folder="cats_and_dogs_filtered", size=len(body)))
    cache = tmp_path / "cache"
    src = resolve_source("cats_and_dogs_filtered", cache=cache, progress=False)
    assert src.layout == "presplit"
    assert src.root == cache / "datasets" / "cats_and_dogs_filtered"
    assert len(list((src.root / "train" / "cats").iterdir())) == 2
    again = resolve_source("cats_and_dogs_filtered", cache=cache, progress=False)
    assert again.root == src.root
    assert len(server.requests) == 1


def test_local_folder_named_like_the_known_dataset_wins(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras"))
    monkeypatch.chdir(tmp_path)
    root = _presplit(tmp_path / "cats_and_dogs_filtered")
    assert resolve_source("cats_and_dogs_filtered", cache=tmp_path / "c").root == root
    assert no_network == []


def test_extract_into_target_is_done_once(tmp_path):
    root = _presplit(tmp_path / "src" / "cats_and_dogs_filtered")
    archive = _zip_folder(root, tmp_path / "cd.zip", arc_prefix="cats_and_dogs_filtered/")
    target = tmp_path / "datasets"
    out = extract(archive, target=target)
    assert out == target and (target / "cats_and_dogs_filtered" / "train").is_dir()
    stamp = (target / "cats_and_dogs_filtered").stat().st_mtime_ns
    assert extract(archive, target=target) == target
    assert (target / "cats_and_dogs_filtered").stat().st_mtime_ns == stamp
