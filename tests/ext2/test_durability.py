"""Durability and concurrency: fsync and fdatasync make the file and everything it depends on
(bitmaps, descriptors, superblock counts) durable, so a copy of the image taken right after is
clean; close writes the same to the image (a daemon killed after a close loses nothing) and a
close of a file only read writes nothing;
after SIGKILL in the middle of a workload e2fsck -fy repairs the image and every file fsync'ed
before the kill reads back intact; parallel writers and readers neither deadlock nor corrupt."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import run
from e2lib import assert_clean, ext2, fsck  # noqa: F401


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("sync", ["fsync", "fdatasync"])
def test_fsync_leaves_a_clean_file_system_on_the_device(ext2, rtmp, sync):
    img = ext2.image("ext4-4k", size="128M")
    m = ext2.mount(img, "commit=0")  # no periodic commit: only fsync writes
    for i in range(30):
        (m.path / f"pre{i}").write_bytes(os.urandom(5000))
    d = m.path / "dir"
    d.mkdir()
    fd = os.open(d / "synced", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"S" * 300_000)
    getattr(os, sync)(fd)
    snapshot = rtmp / "snapshot.img"
    shutil.copyfile(img, snapshot)  # what a crash right now would leave
    os.close(fd)
    m.unmount()
    assert_clean(img)
    status, out = fsck(snapshot)
    assert status == 0, out
    m = ext2.mount(snapshot, "ro")
    assert (m.path / "dir" / "synced").read_bytes() == b"S" * 300_000
    assert len(os.listdir(m.path)) == 32


def test_close_puts_the_file_and_its_metadata_on_the_device(ext2):
    """close() without fsync: the FLUSH the kernel sends writes the file's metadata (inode,
    block map, bitmaps, descriptors, superblock counts, its directory entry) to the image, so
    a daemon killed right after loses nothing (the machine did not crash: the host's page cache
    holds what was written). commit=0: no periodic commit can have done it instead."""
    img = ext2.image("ext4-4k", size="64M")
    m = ext2.mount(img, "commit=0")
    (m.path / "old").write_bytes(b"o" * 50_000)  # then truncated and rewritten below
    expect = {"big": os.urandom(300_000), "dir/small": os.urandom(5000), "empty": b"",
              "dir/sub/sparse": b"\0" * 1_000_000 + b"end", "old": b"shorter"}
    (m.path / "dir" / "sub").mkdir(parents=True)
    for rel, data in expect.items():
        with open(m.path / rel, "wb") as f:  # O_TRUNC for "old"
            if rel.endswith("sparse"):
                f.seek(len(data) - 3)
                data = data[-3:]
            f.write(data)
    m.kill(signal.SIGKILL)  # right after the last close
    m.unmount(expect_status=None)
    status, out = fsck(img)  # the image is consistent as it is, not only repairable
    assert status == 0, out
    status, out = fsck(img, fix=True)  # the recovery procedure after a crash: nothing to do
    assert status in (0, 1), out  # 1: only the "not clean" mark was reset
    m = ext2.mount(img, "ro")
    for rel, data in expect.items():
        assert (m.path / rel).read_bytes() == data, rel


def test_flush_0_leaves_closed_files_to_the_commit(ext2):
    img = ext2.image("ext4-4k", size="64M")
    m = ext2.mount(img, "commit=0", "flush=0")
    (m.path / "closed").write_bytes(b"c" * 5000)
    ls = ["debugfs", "-R", "ls -p /", str(img)]
    assert "/closed/" not in subprocess.run(ls, capture_output=True, text=True).stdout
    m.unmount()
    assert "/closed/" in subprocess.run(ls, capture_output=True, text=True).stdout
    assert_clean(img)


def test_closing_a_file_only_read_writes_nothing(ext2):
    img = ext2.image("ext4-4k", size="64M")
    m = ext2.mount(img, "commit=0")
    (m.path / "f").write_bytes(b"r" * 100_000)
    fd = os.open(m.path / "f", os.O_RDONLY)
    os.fsync(fd)  # everything so far is on the image
    os.close(fd)
    before = sha(img)
    for _ in range(3):
        assert (m.path / "f").read_bytes() == b"r" * 100_000  # open, read, close
    assert sha(img) == before
    m.unmount()
    assert_clean(img)


WRITER = textwrap.dedent("""
    import hashlib, os, sys
    root, log = sys.argv[1], sys.argv[2]
    i = 0
    with open(log, "a") as journal:
        try:
            while True:
                d = os.path.join(root, f"d{i % 7}")
                os.makedirs(d, exist_ok=True)
                data = os.urandom(1000 + (i * 7919) % 200_000)
                p = os.path.join(d, f"f{i}")
                with open(p, "wb") as f:
                    f.write(data)
                    if i % 3 == 0:
                        f.flush()
                        os.fsync(f.fileno())
                        journal.write(f"{p} {hashlib.sha256(data).hexdigest()}\\n")
                        journal.flush()
                if i % 3 and i % 5 == 1:  # churn on files never fsync'ed
                    os.rename(p, p + ".moved")
                if i % 3 and i % 5 == 2:
                    os.unlink(p)
                i += 1
        except OSError:
            pass  # the daemon was killed
""")


def test_kill_9_then_e2fsck_repairs_and_fsynced_files_are_intact(ext2, rtmp):
    img = ext2.image("ext4-4k", size="256M")
    m = ext2.mount(img)
    first_mountpoint = m.mountpoint
    log = rtmp / "fsynced.log"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(m.path), str(log)])
    # kill once 40 files were fsync'ed, however long that takes; the watchdog only turns a
    # hung daemon into a failure
    deadline = time.monotonic() + 240
    while not log.exists() or len(log.read_text().splitlines()) < 40:
        assert writer.poll() is None, "the writer stopped before the kill"
        assert time.monotonic() < deadline, "hung: fewer than 40 fsyncs in 240 s"
        time.sleep(0.05)
    m.kill(signal.SIGKILL)  # in the middle of the workload
    writer.wait(30)
    m.unmount(expect_status=None)
    status, out = fsck(img, fix=True)
    assert status in (0, 1), out  # 1: errors corrected
    assert_clean(img)
    synced = [line.split() for line in log.read_text().splitlines()]
    assert len(synced) >= 40
    m = ext2.mount(img, "ro")
    for path, digest in synced:
        rel = os.path.relpath(path, first_mountpoint)
        data = (m.path / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, rel


CHURN = textwrap.dedent("""
    import os, sys
    root, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mine = os.path.join(root, f"own{me}")
    os.makedirs(mine, exist_ok=True)
    shared = os.path.join(root, "shared")
    os.makedirs(shared, exist_ok=True)
    for i in range(n):
        p = os.path.join(mine, f"f{i}")
        with open(p, "wb") as f:
            f.write(bytes([me]) * (i * 131 % 70000))
        q = os.path.join(shared, f"w{me}-{i}")
        with open(q, "wb") as f:
            f.write(b"s" * (i % 5000))
        if i % 4 == 0:
            os.rename(q, q + ".r")
        if i % 4 == 1:
            os.unlink(q)
        if i % 10 == 0:
            os.mkdir(os.path.join(mine, f"sub{i}"))
        if i % 10 == 5:
            os.rmdir(os.path.join(mine, f"sub{i - 5}"))
        if i % 7 == 0:
            os.listdir(shared)
    for i in range(0, n, 2):
        os.truncate(os.path.join(mine, f"f{i}"), 10)
""")

READER = textwrap.dedent("""
    import os, sys, time
    root, until = sys.argv[1], float(sys.argv[2])
    while time.time() < until:
        for dirpath, dirs, files in os.walk(root):
            for name in files:
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        f.read()
                except FileNotFoundError:
                    pass
""")


def test_parallel_writers_and_readers(ext2):
    img = ext2.image("ext4-4k", size="256M")
    m = ext2.mount(img)
    n = 300
    procs = [subprocess.Popen([sys.executable, "-c", CHURN, str(m.path), str(w), str(n)])
             for w in range(6)]
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(m.path),
                                 str(time.time() + 4)]) for _ in range(2)]
    for p in procs + readers:
        assert p.wait(240) == 0
    for w in range(6):
        for i in range(n):
            data = (m.path / f"own{w}" / f"f{i}").read_bytes()
            expect = bytes([w]) * (i * 131 % 70000)
            if i % 2 == 0:  # truncated to 10 bytes (a short file grows with zeros)
                expect = expect[:10].ljust(10, b"\0")
            assert data == expect, (w, i)
    shared = sorted(os.listdir(m.path / "shared"))
    assert len(shared) == 6 * n * 3 // 4  # a quarter of them were unlinked
    m.unmount()
    assert_clean(img)
