"""File data: random reads at random offsets against the source bytes, reads from many threads
at once, zisofs files (version 1 and zisofs2) inflated on the fly, and a file beyond 4 GiB,
which ISO 9660 can only record as several extents."""
import os
import random
import shutil
import stat
import subprocess
import threading

import pytest

from conftest import run
from isohelpers import mkisofs, mount_iso, xorriso


def random_reads(path, data, count, seed, max_len=300_000):
    """count preads of random length at random offsets (some past the end) of path, each
    compared with the same slice of data."""
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            off = rnd.randrange(0, len(data) + 5000)
            n = rnd.randrange(1, max_len)
            assert os.pread(fd, n, off) == data[off:off + n], (path, off, n)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def data_tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    src = base / "src"
    src.mkdir()
    rnd = random.Random(5)
    (src / "random.bin").write_bytes(rnd.randbytes(24 << 20))
    text = b"".join(f"line {i}: the quick brown fox jumps over the lazy dog\n".encode()
                    for i in range(40000))
    (src / "text.txt").write_bytes(text)
    # zeros in the middle: zisofs records all-zero blocks as empty ones
    (src / "holes.bin").write_bytes(text[:100_000] + bytes(300_000) + text[:70_001])
    (src / "exact.txt").write_bytes(text[:131072])  # a whole number of blocks
    (src / "one").write_bytes(b"1")
    (src / "empty").write_bytes(b"")
    (src / "dir").mkdir()
    (src / "dir" / "nested.txt").write_bytes(text[-50_000:])
    return src


def test_random_reads_return_the_source_bytes(data_tree, tmp_path, mounts):
    iso = mkisofs(tmp_path / "d.iso", data_tree, "-R", "-J")
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    data = (data_tree / "random.bin").read_bytes()
    random_reads(m.path / "random.bin", data, 1500, seed=1)
    assert (m.path / "empty").read_bytes() == b""
    with open(m.path / "one", "rb") as f:
        assert f.read() == b"1" and f.read() == b""


def test_concurrent_readers_see_the_same_bytes(data_tree, tmp_path, mounts):
    iso = mkisofs(tmp_path / "d.iso", data_tree, "-R")
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    data = (data_tree / "random.bin").read_bytes()
    errors = []

    def reader(seed):
        try:
            random_reads(m.path / "random.bin", data, 300, seed=seed, max_len=70_000)
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


ZISOFS_VARIANTS = {
    "v1-32k": [],
    "v1-128k": ["-zisofs", "block_size=128k"],
    "v2-ZF": ["-zisofs", "version_2=on:block_size_v2=64k"],
    "v2-Z2": ["-zisofs", "version_2=on:susp_z2=on"],
}


@pytest.fixture(scope="module", params=sorted(ZISOFS_VARIANTS))
def zisofs_iso(request, data_tree, tmp_path_factory):
    iso = tmp_path_factory.mktemp("zisofs") / f"{request.param}.iso"
    xorriso(*ZISOFS_VARIANTS[request.param], "-outdev", iso, "-map", data_tree, "/",
            "-set_filter_r", "--zisofs", "/", "--", "-commit")
    return request.param, iso


def test_zisofs_files_read_back_inflated(zisofs_iso, data_tree, tmp_path, mounts):
    variant, iso = zisofs_iso
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    for name in ["text.txt", "holes.bin", "exact.txt", "one", "empty", "dir/nested.txt",
                 "random.bin"]:
        want = (data_tree / name).read_bytes()
        st = os.stat(m.path / name)
        assert st.st_size == len(want), name
        assert (m.path / name).read_bytes() == want, name
    # the text really is compressed in the image: st_blocks counts what is stored
    st = os.stat(m.path / "text.txt")
    assert st.st_blocks * 512 < st.st_size // 4
    # zisofs 1 is known to libarchive too: the same bytes
    if variant.startswith("v1"):
        assert run(["bsdtar", "-xOf", iso, "text.txt"], binary=True).stdout == \
            (data_tree / "text.txt").read_bytes()


def test_zisofs_random_reads(zisofs_iso, data_tree, tmp_path, mounts):
    """Reads that start and end inside compressed blocks, across block boundaries and in the
    runs of zero blocks."""
    _, iso = zisofs_iso
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    for name, count in [("text.txt", 300), ("holes.bin", 200)]:
        random_reads(m.path / name, (data_tree / name).read_bytes(), count,
                     seed=len(name), max_len=200_000)


# --------------------------------------------------------------------------- beyond 4 GiB

BIG = (4 << 30) + (1 << 20) + 5          # a little more than 4 GiB
SEAM = (4 << 30) - 2048                  # xorriso's extents hold at most 4 GiB - 2048 bytes
MARKS = {0: b"start", SEAM - 7: b"across-the-seam", (3 << 30) + 12345: b"three-gib",
         BIG - 9: b"the-end!!"}


@pytest.fixture(scope="module")
def huge_iso():
    """An image with one sparse file of 4 GiB + 1 MiB: xorriso writes all of its bytes, so the
    image is written through cp --sparse=always to stay a few MiB on disk. In /var/tmp (not a
    tmpfs), removed afterwards."""
    base = "/var/tmp"
    free = shutil.disk_usage(base).free
    assert free > (2 << 30), f"{base} needs 2 GiB free for the >4 GiB test, has {free}"
    work = subprocess.check_output(["mktemp", "-d", f"{base}/viewos-iso9660.XXXXXX"],
                                   text=True).strip()
    try:
        src = os.path.join(work, "src")
        os.mkdir(src)
        big = os.path.join(src, "huge.bin")
        with open(big, "wb") as f:
            f.truncate(BIG)
            for off, mark in MARKS.items():
                f.seek(off)
                f.write(mark)
        with open(os.path.join(src, "small.txt"), "w") as f:
            f.write("next to a big one\n")
        iso = os.path.join(work, "huge.iso")
        run(["sh", "-c", f"xorriso -as mkisofs -quiet -R -J -iso-level 3 -o - '{src}' | "
             f"cp --sparse=always /dev/stdin '{iso}'"], timeout=300)
        yield iso, big
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_file_beyond_4_gib_is_read_across_its_extents(huge_iso, tmp_path, mounts):
    iso, big = huge_iso
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    path = m.path / "huge.bin"
    assert os.stat(path).st_size == BIG
    fd = os.open(path, os.O_RDONLY)
    try:
        for off, mark in MARKS.items():
            assert os.pread(fd, len(mark), off) == mark, off
        # one read across the seam between the first two extents
        assert os.pread(fd, 4096, SEAM - 2048) == bytes(2041) + b"across-the-seam" + bytes(2040)
        assert os.pread(fd, 100, BIG - 9) == b"the-end!!"
        assert os.pread(fd, 100, BIG) == b""
        rnd = random.Random(3)
        with open(big, "rb") as f:
            for _ in range(50):
                off = rnd.randrange(0, BIG)
                f.seek(off)
                assert os.pread(fd, 65536, off) == f.read(65536), off
    finally:
        os.close(fd)
    assert (m.path / "small.txt").read_text() == "next to a big one\n"
    # Joliet and the plain tree join the same extents
    j = mount_iso(mounts, iso, tmp_path / "joliet", "norock")
    assert os.stat(j.path / "huge.bin").st_size == BIG
    with open(j.path / "huge.bin", "rb") as f:
        f.seek(BIG - 9)
        assert f.read() == b"the-end!!"


def test_file_beyond_4_gib_listing_matches_libarchive(huge_iso, tmp_path, mounts):
    iso, _ = huge_iso
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    listing = run(["bsdtar", "-tvf", iso]).stdout
    line = next(line for line in listing.splitlines() if line.endswith(" huge.bin"))
    assert int(line.split()[4]) == BIG == os.stat(m.path / "huge.bin").st_size
    assert stat.S_ISREG(os.stat(m.path / "huge.bin").st_mode)
