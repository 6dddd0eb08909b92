"""Regression tests for the umfuse-fat bugs the reliability suites found (the fixes are in
fsmods/fat/; see docs/reliability.md)."""
import errno
import os
import subprocess

import pytest

from conftest import make_fat
from rellib import DaemonPool

FAT = "umfuse-fat"


def fsck_clean(img):
    r = subprocess.run(["fsck.fat", "-n", str(img)], capture_output=True, text=True)
    out = r.stdout + r.stderr
    return r.returncode == 0 and not [line for line in out.splitlines() if line and not
                                      line.startswith("fsck.fat ") and
                                      not line.startswith(f"{img}:")], out


def test_file_replaced_by_rename_can_still_be_opened_through_a_held_reference(tmp_path):
    """A name looked up before a rename over it (here held by an O_PATH descriptor, which
    sends no open) and opened after must read the old data. umfuse-fat freed an unlinked
    file's clusters as soon as no handle was open, while the kernel still knew the node: the
    late open then read EIO (readers racing writers that replace files hit it at once in
    test_load.py). Its clusters must still come back once the kernel lets go."""
    img = make_fat(tmp_path / "r.img", fat=16, size="16M")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    try:
        d = pool.new(FAT, [img, mnt], mnt)
        assert d.start(), d.stderr()
        old, new = os.urandom(300_000), os.urandom(200_000)
        (mnt / "file.bin").write_bytes(old)
        (mnt / "unlinked.bin").write_bytes(old[:70_000])
        free0 = os.statvfs(mnt).f_bfree
        held = os.open(mnt / "file.bin", os.O_PATH)
        held2 = os.open(mnt / "unlinked.bin", os.O_PATH)
        try:
            (mnt / "new.bin").write_bytes(new)
            os.rename(mnt / "new.bin", mnt / "file.bin")
            os.unlink(mnt / "unlinked.bin")
            with open(f"/proc/self/fd/{held}", "rb") as f:
                assert f.read() == old
            with open(f"/proc/self/fd/{held2}", "rb") as f:
                assert f.read() == old[:70_000]
            assert (mnt / "file.bin").read_bytes() == new
        finally:
            os.close(held)
            os.close(held2)
        # nothing holds the old files now: their clusters are free again
        sv = os.statvfs(mnt)
        clusters = lambda n: -(-n // sv.f_bsize)  # noqa: E731
        assert sv.f_bfree == free0 - clusters(200_000) + clusters(300_000) + clusters(70_000)
        assert d.stop() == 0 and not d.sanitizer_report()
        ok, out = fsck_clean(img)
        assert ok, out
    finally:
        pool.cleanup()


def test_space_of_an_unlinked_file_still_known_to_the_kernel_is_usable(tmp_path):
    """Those clusters count as free at once (df after rm is right) and a write that needs
    them gets them (no ENOSPC on a volume with room); a reopen that comes after that gets
    ESTALE, never another file's data."""
    img = make_fat(tmp_path / "s.img", fat=12, size="1440K")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    try:
        d = pool.new(FAT, [img, mnt], mnt)
        assert d.start(), d.stderr()
        free0 = os.statvfs(mnt).f_bfree
        big = os.urandom(1_000_000)
        (mnt / "big.bin").write_bytes(big)
        held = os.open(mnt / "big.bin", os.O_PATH)
        try:
            os.unlink(mnt / "big.bin")
            assert os.statvfs(mnt).f_bfree == free0  # counted free at once
            fill = os.urandom(1_200_000)  # needs most of the old file's clusters
            (mnt / "fill.bin").write_bytes(fill)
            assert (mnt / "fill.bin").read_bytes() == fill
            with pytest.raises(OSError) as e:
                open(f"/proc/self/fd/{held}", "rb")
            assert e.value.errno == errno.ESTALE
        finally:
            os.close(held)
        assert d.stop() == 0 and not d.sanitizer_report()
        ok, out = fsck_clean(img)
        assert ok, out
    finally:
        pool.cleanup()
