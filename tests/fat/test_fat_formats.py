"""Every FAT variant mkfs.vfat makes (FAT12 floppy, FAT16 and FAT32 with several cluster sizes,
a 2 GiB FAT32), a real tree with long, UTF-8 and mixed-case names copied in and compared, and
mtools interoperability both ways: what mtools writes we read, what we write mtools reads, with
the same names and contents. fsck.fat -n after every write."""
import errno
import os
import shutil
import subprocess

import pytest

from conftest import diff_r, make_fat, make_tree, run
from fatlib import Image, assert_clean, fatvol, mtools  # noqa: F401


def small_tree(root, nfiles, seed):
    """make_tree without what FAT cannot hold (symlinks, hard links)."""
    return make_tree(root, nfiles=nfiles, seed=seed, symlinks=False, hardlinks=False)


def mcopy_out(img, dest):
    dest.mkdir()
    entries = [l.split("/")[-1] for l in mtools("mdir", "-b", "-i", img, "::").stdout.split()]
    for e in entries:
        mtools("mcopy", "-s", "-n", "-i", img, f"::{e}", dest)
    return dest


@pytest.mark.parametrize("fat, size, spc, nfiles", [
    (12, "1440K", None, 12),   # a 1.44 MB floppy
    (12, "8M", 4, 40),         # FAT12 with 2 KiB clusters
    (16, "32M", 1, 60),        # FAT16, 512-byte clusters
    (16, "1G", 64, 60),        # FAT16, 32 KiB clusters
    (32, "64M", 1, 60),        # FAT32, 512-byte clusters
    (32, "600M", 8, 60),       # FAT32, 4 KiB clusters
    (32, "2G", None, 80),      # a 2 GiB FAT32 as mkfs.vfat lays it out
])
def test_tree_copied_in_compares_equal_and_mtools_agrees(fatvol, rtmp, fat, size, spc, nfiles):
    src = small_tree(rtmp / "src", nfiles, seed=fat + nfiles)
    v = fatvol(fat=fat, size=size, cluster_sectors=spc)
    im = Image(v.img)
    assert im.type == fat
    sv = os.statvfs(v.path)
    assert sv.f_blocks == im.clusters and sv.f_bsize == im.cluster_size
    run(["cp", "-r", f"{src}/.", v.path])
    assert diff_r(src, v.path) == ""
    v.check()
    v.start(("ro",))
    assert diff_r(src, v.path) == ""  # after a remount: from the image, not from caches
    v.unmount()
    assert diff_r(src, mcopy_out(v.img, rtmp / "out")) == ""


@pytest.mark.parametrize("fat", [12, 32])
def test_volume_label_entry_is_hidden_and_kept(fatvol, rtmp, fat):
    img = make_fat(rtmp / "l.img", fat=fat, size="1440K" if fat == 12 else "64M",
                   label="MYLABEL")
    v = fatvol(img=img)
    assert os.listdir(v.path) == []
    for i in range(30):  # enough to need the label's neighbourhood
        (v.path / f"file number {i}").write_text(str(i))
    for i in range(0, 30, 2):
        os.unlink(v.path / f"file number {i}")
    v.check()
    assert "Volume in drive : is MYLABEL" in mtools("mdir", "-i", img, "::").stdout
    assert sorted(os.listdir(fatvol(img=img, opts=("ro",)).path)) == sorted(
        f"file number {i}" for i in range(1, 30, 2))


def test_mtools_written_tree_reads_back(fatvol, rtmp):
    src = small_tree(rtmp / "src", 50, seed=5)
    # 4 KiB clusters: mtools cannot spread one long name over two clusters of 512 bytes
    img = make_fat(rtmp / "m.img", fat=16, size="64M", cluster_sectors=8)
    for e in sorted(os.listdir(src)):
        mtools("mcopy", "-s", "-i", img, src / e, "::")
    mtools("mmd", "-i", img, "::Made By mmd")
    mtools("mmd", "-i", img, "::Made By mmd/nested dir")
    mtools("mcopy", "-i", img, "/etc/hostname", "::Made By mmd/nested dir/lower.txt")
    assert_clean(img)
    v = fatvol(img=img, opts=("ro",))
    (src / "Made By mmd" / "nested dir").mkdir(parents=True)
    shutil.copy("/etc/hostname", src / "Made By mmd" / "nested dir" / "lower.txt")
    assert diff_r(src, v.path) == ""
    v.unmount()


def test_files_we_write_mtools_reads_with_the_same_names(fatvol, rtmp):
    v = fatvol(fat=16, size="32M")
    names = {"Été à Paris.txt": b"utf-8", "UPPER.TXT": b"upper", "lower.txt": b"lower",
             "Mixed Case Name With Spaces.Data": b"mixed", "x" * 200: b"long",
             "日本語のファイル": b"japanese"}
    (v.path / "Sub Dir").mkdir()
    for n, data in names.items():
        (v.path / n).write_bytes(data)
        (v.path / "Sub Dir" / n).write_bytes(data + b"!")
    v.check()
    listing = mtools("mdir", "-b", "-i", v.img, "::").stdout.splitlines()
    assert sorted(listing) == sorted([f"::/{n}" for n in names] + ["::/Sub Dir/"])
    for n, data in names.items():
        r = subprocess.run(["mtype", "-i", str(v.img), f"::Sub Dir/{n}"], capture_output=True,
                           env=dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8"))
        assert r.stdout == data + b"!", n
    # and mtools changes what we wrote: we see its changes
    mtools("mdel", "-i", v.img, "::UPPER.TXT")
    mtools("mren", "-i", v.img, "::lower.txt", "::renamed by mtools.txt")
    v.start()
    assert not (v.path / "UPPER.TXT").exists()
    assert (v.path / "renamed by mtools.txt").read_bytes() == b"lower"
    v.check()


def test_fsinfo_counters_and_both_fat_copies_are_kept(fatvol, rtmp):
    import struct
    v = fatvol(fat=32, size="64M")
    im = Image(v.img)
    (v.path / "a").write_bytes(os.urandom(700_000))
    (v.path / "d").mkdir()
    (v.path / "b").write_bytes(os.urandom(5_000))
    os.unlink(v.path / "a")
    free_mounted = os.statvfs(v.path).f_bfree
    v.check()
    fsinfo = im.read(1 * im.bps, 512)
    assert fsinfo[:4] == b"RRaA" and fsinfo[484:488] == b"rrAa"
    free_count, next_free = struct.unpack_from("<II", fsinfo, 488)
    assert free_count == free_mounted
    assert 2 <= next_free < im.clusters + 2
    fat_bytes = im.fatsz * im.bps
    assert im.read(im.fat_offset, fat_bytes) == im.read(im.fat_offset + fat_bytes, fat_bytes)
    # FSInfo claims are never trusted: a wrong free count is recounted at the next mount
    im.write(1 * im.bps + 488, struct.pack("<I", 12345))
    v.start()
    assert os.statvfs(v.path).f_bfree == free_mounted
    (v.path / "c").write_bytes(b"c")
    v.check()


def test_maximum_file_size_is_4_gib_minus_1(fatvol):
    v = fatvol(fat=32, size="5G")
    p = v.path / "huge"
    with open(p, "wb", buffering=0) as f:
        f.truncate(2**32 - 1)
        f.seek(2**32 - 2)
        f.write(b"Z")
        with pytest.raises(OSError) as e:
            f.write(b"!")
        assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError) as e:
        os.truncate(p, 2**32)
    assert e.value.errno == errno.EFBIG
    assert p.stat().st_size == 2**32 - 1
    with open(p, "rb") as f:
        f.seek(2**32 - 3)
        assert f.read() == b"\0Z"
        f.seek(123_456_789)
        assert f.read(4096) == bytes(4096)
    # fsck.fat 4.2 counts a chain's bytes in 32 bits: a chain of exactly 4 GiB reads as 0 and
    # it would "truncate" a sound file. Shrink it below that before asking fsck.
    os.truncate(p, 2**32 - 1 - 2 * 65536)
    v.check()
