"""Durability and concurrency: fsync makes the file and everything it depends on (bitmaps,
descriptors, superblock counts) durable, so a copy of the image taken right after is clean;
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

from conftest import run
from e2lib import assert_clean, ext2, fsck  # noqa: F401


def test_fsync_leaves_a_clean_file_system_on_the_device(ext2, rtmp):
    img = ext2.image("ext4-4k", size="128M")
    m = ext2.mount(img, "commit=0")  # no periodic commit: only fsync writes
    for i in range(30):
        (m.path / f"pre{i}").write_bytes(os.urandom(5000))
    d = m.path / "dir"
    d.mkdir()
    with open(d / "synced", "wb") as f:
        f.write(b"S" * 300_000)
        f.flush()
        os.fsync(f.fileno())
    snapshot = rtmp / "snapshot.img"
    shutil.copyfile(img, snapshot)  # what a crash right now would leave
    m.unmount()
    status, out = fsck(snapshot)
    assert status == 0, out
    m = ext2.mount(snapshot, "ro")
    assert (m.path / "dir" / "synced").read_bytes() == b"S" * 300_000
    assert len(os.listdir(m.path)) == 32


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
    deadline = time.monotonic() + 30
    while (not log.exists() or len(log.read_text().splitlines()) < 40) and \
            time.monotonic() < deadline:
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
