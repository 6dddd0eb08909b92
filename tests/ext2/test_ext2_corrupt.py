"""Corrupt images, the targeted cases: a damaged directory block gives EIO on that directory
only, a damaged inode EIO on that file; a full disk or inode table gives ENOSPC and stays clean.

Bytes flipped at random in the superblock, the group descriptors, the inode table and directory
blocks (a refusal in one line, or EIO / intact data, never a crash, a hang or new damage) are
the business of tests/reliability/test_corrupt_ext2.py, which runs some 200 such variants on
ext2 (1 KiB blocks) and ext4 (4 KiB, metadata_csum) images and checks each one strictly."""
import errno
import os
import subprocess

import pytest

from conftest import run
from e2lib import assert_clean, ext2, uext2  # noqa: F401


def debugfs(img, cmd):
    return subprocess.run(["debugfs", "-R", cmd, str(img)], capture_output=True,
                          text=True).stdout


def populated(ext2, kind, rtmp):
    src = rtmp / f"src-{kind}"
    if not src.exists():
        src.mkdir()
        for d in range(4):
            (src / f"d{d}").mkdir()
            for f in range(30):
                (src / f"d{d}" / f"file-{f:03d}").write_bytes(os.urandom(f * 300))
        os.symlink("d0/file-001", src / "link")
    return ext2.image(kind, extra=("-d", str(src)))


def block_size(img):
    return int(debugfs(img, "stats").split("Block size:")[1].split()[0])


def first_block_offset(img, path):
    """Byte offset of the first block of path in the image."""
    return int(debugfs(img, f"blocks {path}").split()[0]) * block_size(img)


def test_corrupt_directory_block_gives_eio_on_that_directory_only(ext2, rtmp):
    img = populated(ext2, "ext4-4k", rtmp)
    off = first_block_offset(img, "/d2")
    with open(img, "r+b") as f:  # a rec_len of zero in the middle of the block
        f.seek(off + 12 + 4)
        f.write(b"\0\0")
    m = ext2.mount(img)
    with pytest.raises(OSError) as ei:
        os.listdir(m.path / "d2")
    assert ei.value.errno == errno.EIO
    assert len(os.listdir(m.path / "d1")) == 30
    assert (m.path / "d3" / "file-005").read_bytes()
    assert "inode" in m.stderr()  # the reason is logged


def test_corrupt_inode_gives_eio_on_that_file(ext2, rtmp):
    img = populated(ext2, "ext4-4k", rtmp)
    out = debugfs(img, "imap /d1/file-007")
    blk = int(out.split("located at block")[1].split(",")[0])
    offset = int(out.split("offset")[1].split()[0], 16)
    with open(img, "r+b") as f:
        f.seek(blk * block_size(img) + offset + 40)  # inside i_block: the extent header
        f.write(b"\xde\xad\xbe\xef")
    m = ext2.mount(img)
    with pytest.raises(OSError) as ei:
        (m.path / "d1" / "file-007").read_bytes()
    assert ei.value.errno == errno.EIO  # the inode checksum no longer matches
    assert (m.path / "d1" / "file-008").read_bytes() is not None


def test_full_disk_gives_enospc_and_stays_clean(ext2):
    img = ext2.image("ext4-4k", size="32M")
    m = ext2.mount(img)
    with pytest.raises(OSError) as ei:
        with open(m.path / "big", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
    assert ei.value.errno == errno.ENOSPC
    assert os.statvfs(m.path).f_bavail == 0
    with pytest.raises(OSError) as ei:
        for i in range(100000):
            (m.path / f"small{i}").write_bytes(b"y" * 4096)
    assert ei.value.errno == errno.ENOSPC
    size = os.stat(m.path / "big").st_size
    assert size > 20 << 20
    with open(m.path / "big", "rb") as f:
        assert f.read(1 << 20) == b"x" * (1 << 20)
    os.unlink(m.path / "big")
    (m.path / "after").write_bytes(b"z" * 100000)
    m.unmount()
    assert_clean(img)


def test_running_out_of_inodes_gives_enospc_and_stays_clean(ext2):
    img = ext2.image("ext4-4k", size="32M", extra=("-N", "64"))
    m = ext2.mount(img)
    made = 0
    with pytest.raises(OSError) as ei:
        for i in range(1000):
            if i % 2:
                (m.path / f"d{i}").mkdir()
            else:
                os.symlink("x" * 100, m.path / f"l{i}")  # a slow symlink: a block too
            made += 1
    assert ei.value.errno == errno.ENOSPC
    assert made > 40 and os.statvfs(m.path).f_ffree == 0
    os.rmdir(m.path / "d1")
    (m.path / "after").write_text("one inode came back")
    m.unmount()
    assert_clean(img)


def test_reserved_blocks_are_for_root_only(uext2, user):
    img = uext2.image("ext4-4k", size="32M", owner=user)
    m = uext2.mount(img, user=user)
    r = run(["sh", "-c", f"dd if=/dev/zero of={m.path}/fill bs=1M count=100 2>&1; "
                         f"df -B1 --output=avail {m.path} | tail -1"], user=user, check=False)
    assert "No space left on device" in r.stdout
    assert r.stdout.split()[-1] == "0"  # nothing left for the user
    m.unmount()
    assert_clean(img)
    # root, on the same image, still has the reserve
    m = uext2.mount(img)
    (m.path / "root-file").write_bytes(b"r" * 100000)
    m.unmount()
    assert_clean(img)
