import os

import numpy as np
import pytest

from imgclf import io


def test_atomic_write_leaves_no_temporary_file_and_normal_permissions(tmp_path):
    target = io.write_json(tmp_path / "a.json", {"x": 1})
    assert io.read_json(target) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = io.write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_remove_partial_touches_only_our_temporary_files(tmp_path):
    (tmp_path / f"{io.TMP_PREFIX}model.x1y2.keras").write_text("partial")
    (tmp_path / ".env.local").write_text("user")
    (tmp_path / ".eslintrc.json").write_text("user")
    assert io.remove_partial(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env.local", ".eslintrc.json"]


def test_write_at_writes_every_byte_even_when_the_system_writes_in_pieces(tmp_path, monkeypatch):
    real_pwrite = os.pwrite
    calls = []

    def short_pwrite(fd, data, offset):  # a file system that takes at most 1000 bytes a call
        calls.append(offset)
        return real_pwrite(fd, bytes(data[:1000]), offset)

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    path = tmp_path / "rows.bin"
    path.write_bytes(b"\0" * 10)
    data = np.arange(4096, dtype=np.uint16).astype(np.uint8)
    fd = os.open(path, os.O_RDWR)
    try:
        io.write_at(fd, data, 10)
    finally:
        os.close(fd)
    assert len(calls) == 5
    assert path.read_bytes() == b"\0" * 10 + data.tobytes()


def test_a_file_finished_later_is_there_once_waited_for(tmp_path):
    import threading

    target = tmp_path / "big.npy"
    release = threading.Event()

    def work():
        release.wait(10)
        io.write_text(target, "done")

    io.finish_later(target, work)
    assert not target.exists()  # the caller went on before the file was finished
    release.set()
    io.wait_for(target)
    assert target.read_text() == "done"
    io.wait_for(target)  # nothing left to wait for


def test_the_interpreter_finishes_a_file_before_it_exits(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "late.txt"
    code = ("import time; from imgclf import io\n"
            f"io.finish_later({str(target)!r}, lambda: (time.sleep(0.5), io.write_text({str(target)!r}, 'named')))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert target.read_text() == "named"


def test_remove_partial_in_a_shared_folder_removes_only_old_temporary_files(tmp_path):
    import time

    old = tmp_path / f"{io.TMP_PREFIX}decoding.abc.npy"
    fresh = tmp_path / f"{io.TMP_PREFIX}4242.cache.npy"
    mine = tmp_path / "cache.npy"
    for p in (old, fresh, mine):
        p.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(mine, (two_hours_ago, two_hours_ago))
    assert io.remove_partial(tmp_path, io.STALE_AFTER_S) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, mine.name])
    assert io.remove_partial(tmp_path / "missing", io.STALE_AFTER_S) == 0
