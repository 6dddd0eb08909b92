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
from fatlib import Image, assert_clean, fatvol, fsck, mtools  # noqa: F401


def small_tree(root, nfiles, seed):
    """make_tree without what FAT cannot hold (symlinks, hard links)."""
    return make_tree(root, nfiles=nfiles, seed=seed, symlinks=False, hardlinks=False)


def mcopy_out(img, dest):
    dest.mkdir()
    entries = [l.split("/")[-1] for l in mtools("mdir", "-b", "-i", img, "::").stdout.splitlines()
               if l.strip()]
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


def name_tree(root, nfiles, seed):
    """A tree that is mostly names: nfiles small files with long (up to 255 bytes), UTF-8
    (Cyrillic, Greek, CJK, accents), mixed-case and plain 8.3 names, in 40
    directories up to five deep and one directory of a quarter of them (its long-name entries
    run over many clusters). Names are unique ignoring case, as FAT needs."""
    import random
    rnd = random.Random(seed)
    root.mkdir()
    dirs = [root]
    for i in range(40):
        parent = rnd.choice([d for d in dirs if len(d.relative_to(root).parts) < 5])
        d = parent / rnd.choice([f"Dir {i}", f"каталог-{i}", f"DIR{i:05d}",
                                 f"Ordner Nummer {i}"])
        d.mkdir()
        dirs.append(d)
    crowded = root / "A crowded directory"
    crowded.mkdir()
    # (no characters beyond the BMP: mtools, the oracle here, shows them as "__"; the names
    # tests cover them)
    words = ["alpha", "Beta", "GAMMA", "délta", "эпсилон", "ζήτα", "東京", "x" * 20]
    for i in range(nfiles):
        kind = i % 5
        if kind == 0:  # up to 255 bytes of UTF-8 (what the source file system holds)
            stem, tail = " ".join(rnd.choice(words) for _ in range(60)), f" {i}.txt"
            room = rnd.randrange(60, 256 - len(tail))
            while len(stem.encode()) > room:
                stem = stem[:-1]
            name = stem.strip() + tail
        elif kind == 1:
            name = f"файл-{i}-日本語-été-{rnd.choice(words)}.dat"
        elif kind == 2:
            name = f"MixedCase_File{i}.TxT"
        elif kind == 3:
            name = f"F{i:07d}.DAT"
        else:
            name = f"lower{i}.bin"
        d = crowded if i % 4 == 0 else rnd.choice(dirs)
        (d / name).write_bytes(rnd.randbytes(rnd.choice([0, 1, 100, 700, 2000, 5000])))
    return root


@pytest.mark.parametrize("fat, size, spc", [(32, "128M", 1), (16, "64M", 4)])
def test_thousands_of_files_with_long_and_utf8_names_copied_in_and_compared(fatvol, rtmp, fat,
                                                                            size, spc):
    import random
    src = name_tree(rtmp / "src", 2000, seed=fat)
    v = fatvol(fat=fat, size=size, cluster_sectors=spc)
    run(["cp", "-r", f"{src}/.", v.path])
    assert diff_r(src, v.path) == ""
    v.check()
    v.start(("ro",))
    assert diff_r(src, v.path) == ""  # from the image: names, case and contents
    v.unmount()
    # mtools reads the same tree: every path (one listing: copying 2000 files out with mcopy
    # takes half a minute) and the contents of a sample
    listed = {l[3:].rstrip("/") for l in mtools("mdir", "-/", "-b", "-i", v.img, "::").stdout
              .splitlines() if l.startswith("::/")}
    paths = {str(p.relative_to(src)) for p in src.rglob("*")}
    assert listed == paths, sorted(listed ^ paths)[:10]
    files = sorted(p for p in paths if (src / p).is_file())
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8")
    for p in random.Random(fat).sample(files, 40):
        r = subprocess.run(["mtype", "-i", str(v.img), f"::{p}"], capture_output=True, env=env)
        assert r.stdout == (src / p).read_bytes(), p


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


def first_cluster(im, sfn):
    return im.entry_cluster(im.find_short(sfn))


def test_fsinfo_counters_and_both_fat_copies_are_kept(fatvol, rtmp):
    """FSInfo's free count is the FAT's, and its next-free hint is the last cluster allocated,
    as the specification describes it and Linux keeps it (mkfs.fat writes 2, the root's
    cluster): a mount that frees clusters leaves the hint where the last allocation was."""
    v = fatvol(fat=32, size="64M", cluster_sectors=1)
    im = Image(v.img)
    assert im.fsinfo()[1] == 2  # mkfs.fat: the root directory's cluster
    (v.path / "A.BIN").write_bytes(os.urandom(700_000))
    v.check()
    chain_a = im.chain(first_cluster(im, b"A       BIN"))
    assert len(chain_a) == -(-700_000 // 512)
    assert im.fsinfo() == (im.free_clusters(), chain_a[-1])
    v.start()
    (v.path / "D").mkdir()
    (v.path / "B.BIN").write_bytes(os.urandom(5_000))
    os.unlink(v.path / "A.BIN")
    free_mounted = os.statvfs(v.path).f_bfree
    v.check()
    chain_b = im.chain(first_cluster(im, b"B       BIN"))
    assert chain_b[0] > first_cluster(im, b"D          ")  # allocated after D's cluster
    assert im.fsinfo() == (free_mounted, chain_b[-1])  # the unlink did not move the hint
    assert free_mounted == im.free_clusters()
    fat_bytes = im.fatsz * im.bps
    assert im.read(im.fat_offset, fat_bytes) == im.read(im.fat_offset + fat_bytes, fat_bytes)


@pytest.mark.parametrize("hint", [0xFFFFFFFF, 0, 1, 0x0FFFFFF0, "past-the-end"])
def test_a_next_free_hint_outside_the_volume_is_ignored(fatvol, rtmp, hint):
    img = make_fat(rtmp / "h.img", fat=32, size="64M", cluster_sectors=1)
    im = Image(img)
    im.set_fsinfo(hint=im.clusters + 2 if hint == "past-the-end" else hint)
    v = fatvol(img=img)
    (v.path / "F.BIN").write_bytes(os.urandom(3000))
    v.check()
    chain = im.chain(first_cluster(im, b"F       BIN"))
    assert chain == list(range(3, 3 + len(chain)))
    assert im.fsinfo()[1] == chain[-1]


def test_a_valid_next_free_hint_is_where_the_search_starts(fatvol, rtmp):
    img = make_fat(rtmp / "h.img", fat=32, size="64M", cluster_sectors=1)
    im = Image(img)
    im.set_fsinfo(hint=1000)  # as if clusters up to 1000 had been allocated last
    v = fatvol(img=img)
    (v.path / "F.BIN").write_bytes(os.urandom(3000))
    v.check()
    chain = im.chain(first_cluster(im, b"F       BIN"))
    assert chain == list(range(1001, 1001 + 6))
    assert im.fsinfo()[1] == 1006


def test_a_wrong_fsinfo_free_count_is_not_trusted_nor_made_worse(fatvol, rtmp):
    """The free count is the driver's own (statfs counts the FAT); FSInfo's count moves by
    exactly what the mount changed, as Linux keeps it: on a damaged volume fsck.fat's count
    (which reclaims lost clusters) is not the FAT's, and overwriting it would add a problem
    the damage did not make. A count that was wrong stays wrong by as much, for fsck.fat."""
    img = make_fat(rtmp / "w.img", fat=32, size="64M", cluster_sectors=1)
    im = Image(img)
    im.set_fsinfo(free=12345)
    status, before = fsck(img)
    assert "Free cluster summary wrong (12345 vs. really" in before
    v = fatvol(img=img)
    assert os.statvfs(v.path).f_bfree == im.free_clusters()
    (v.path / "C.BIN").write_bytes(os.urandom(10 * 512))
    v.unmount()
    assert im.fsinfo()[0] == 12345 - 10
    status, after = fsck(img)
    assert [l for l in after.splitlines() if l.startswith("Free cluster summary")] == [
        f"Free cluster summary wrong ({12345 - 10} vs. really {im.free_clusters()})"]


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
