"""What the driver reads from the image, seen from the other side: the image is served by nbdkit
with its log filter, which records every read the daemon makes. A read of a file at a random
offset must touch only that part of that file's extent (no scan of the image), a zisofs read
only the blocks it needs, and directories are parsed once: when the kernel has forgotten every
entry and asks again, the answers come from the daemon's memory, not from the image."""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run
from isohelpers import mkisofs, mount_iso, xorriso

READ = re.compile(r"connection=\d+ Read id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)")


class LoggedImage:
    """nbdkit serving an image read-only over a Unix socket, logging every read."""

    def __init__(self, tmp, iso):
        self.log = Path(tmp) / "nbd.log"
        sock, pidfile = Path(tmp) / "nbd.sock", Path(tmp) / "nbd.pid"
        self.proc = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-r", "-P",
                                      pidfile, "-U", sock, "--filter=log", "file", iso,
                                      f"logfile={self.log}"], stderr=subprocess.PIPE)
        for _ in range(500):
            if pidfile.exists():
                break
            time.sleep(0.01)
        else:
            pytest.fail("nbdkit did not start: " + self.proc.stderr.read().decode())
        self.uri = f"nbd+unix:///?socket={sock}"

    def reads(self):
        """(offset, count) of every read so far."""
        return [(int(o, 16), int(c, 16)) for o, c in READ.findall(self.log.read_text())]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def logged(tmp_path):
    images = []

    def start(iso):
        images.append(LoggedImage(tmp_path, iso))
        return images[-1]

    yield start
    for i in images:
        i.stop()


def file_extent(iso, path):
    """(first byte, length) of a file's data, as xorriso reports it."""
    out = run(["xorriso", "-indev", iso, "-find", path, "-exec", "report_lba"]).stdout
    for line in out.splitlines():
        if line.startswith("File data lba:"):
            fields = [f.strip() for f in line.split(":", 1)[1].split(",")]
            return int(fields[1]) * 2048, int(fields[2]) * 2048
    pytest.fail(f"no extent for {path} in {out!r}")


def pread_random(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead: just this read
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def drop_dentries_and_inodes():
    """Make the kernel forget the mount's dentries and inodes, so that it asks the daemon
    again (LOOKUP, GETATTR, READDIR) instead of answering from its caches."""
    run(["sync"])
    Path("/proc/sys/vm/drop_caches").write_text("2\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("access")
    src = base / "src"
    for d in ["a", "a/b", "c"]:
        (src / d).mkdir(parents=True)
        for i in range(30):
            (src / d / f"file-{i:02d}.txt").write_text(f"{d} {i}\n" * 100)
    (src / "big.bin").write_bytes(os.urandom(8 << 20))
    (src / "text.txt").write_bytes(b"".join(f"line {i} of some compressible text\n".encode()
                                            for i in range(60000)))
    return src


def test_a_random_read_reads_only_that_part_of_the_file(tree, tmp_path, logged, mounts):
    iso = mkisofs(tmp_path / "t.iso", tree, "-R")
    start, length = file_extent(iso, "/big.bin")
    img = logged(iso)
    m = mount_iso(mounts, img.uri, tmp_path / "mnt")
    run(["ls", "-lR", m.path])
    before = len(img.reads())
    off = (5 << 20) + 12345
    data = pread_random(m.path / "big.bin", off, 4096)
    assert data == (tree / "big.bin").read_bytes()[off:off + 4096]
    new = img.reads()[before:]
    assert new, "the read did not reach the image"
    assert all(start <= o and o + c <= start + length for o, c in new), new
    assert sum(c for _, c in new) <= 8192, new


def test_directories_are_parsed_once(tree, tmp_path, logged, mounts):
    iso = mkisofs(tmp_path / "t.iso", tree, "-R", "-J")
    img = logged(iso)
    m = mount_iso(mounts, img.uri, tmp_path / "mnt")
    first = run(["ls", "-lRi", m.path]).stdout
    before = len(img.reads())
    drop_dentries_and_inodes()
    again = run(["ls", "-lRi", m.path]).stdout
    assert again == first
    assert img.reads()[before:] == []


def test_a_zisofs_read_inflates_only_the_blocks_it_touches(tree, tmp_path, logged, mounts):
    iso = tmp_path / "z.iso"
    xorriso("-outdev", iso, "-map", tree, "/", "-set_filter_r", "--zisofs", "/", "--",
            "-commit")
    start, length = file_extent(iso, "/text.txt")
    img = logged(iso)
    m = mount_iso(mounts, img.uri, tmp_path / "mnt")
    text = (tree / "text.txt").read_bytes()
    assert os.stat(m.path / "text.txt").st_size == len(text)
    before = len(img.reads())
    off = len(text) // 2 + 777
    assert pread_random(m.path / "text.txt", off, 4096) == text[off:off + 4096]
    first = img.reads()[before:]
    assert all(start <= o and o + c <= start + length for o, c in first), first
    # the header and pointer table, then one or two compressed blocks: a small part of the file
    assert sum(c for _, c in first) < length // 4, (first, length)
    before = len(img.reads())
    off2 = len(text) // 4
    assert pread_random(m.path / "text.txt", off2, 4096) == text[off2:off2 + 4096]
    second = img.reads()[before:]
    # the pointer table is not read again: only the compressed block (at most 32 KiB of
    # input for a 32 KiB block of text) is
    assert 0 < sum(c for _, c in second) <= 32768, second
