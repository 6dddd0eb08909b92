"""Corrupt and hostile images: cluster chains that loop or leave the volume, a FAT that
disagrees with the directory size, directories whose chain is broken, two files that share
clusters, FAT copies that disagree, random damage to the FAT and the directories. umfuse-fat
must answer EIO or refuse cleanly — never crash, hang, or write anything that spreads the
damage (fsck.fat -n finds nothing new, untouched files read back byte for byte)."""
import errno
import os
import random
import struct
import sys
from pathlib import Path

import pytest

from conftest import make_fat
from fatlib import Image, fatvol, mtools, sha  # noqa: F401

# the independent reader of FAT images and the damage checks of the reliability suite
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reliability"))
from rellib import FatLayout, Intact, bounded  # noqa: E402
from test_corrupt_fat import fsck_fat, fsck_worse, on_disk, reread_intact  # noqa: E402


def image_with_files(rtmp, fat=16):
    img = make_fat(rtmp / "h.img", fat=fat, size="32M")
    data = bytes(range(256)) * 400  # 102400 bytes
    (rtmp / "victim.bin").write_bytes(data)
    mtools("mcopy", "-i", img, rtmp / "victim.bin", "::VICTIM.BIN")
    mtools("mcopy", "-i", img, "/etc/hostname", "::OTHER.TXT")
    mtools("mmd", "-i", img, "::SUBDIR")
    mtools("mcopy", "-i", img, "/etc/hostname", "::SUBDIR/INNER.TXT")
    return img, data


def same_but_dirty_flag(before, img):
    """The image is unchanged (mounting read-write sets and clears the dirty flag: the bytes
    end where they were)."""
    return sha(img) == before


@pytest.mark.parametrize("damage", ["loop", "self", "outside", "free_inside", "bad_cluster"])
def test_broken_chain_gives_eio_and_changes_nothing(fatvol, rtmp, damage):
    img, data = image_with_files(rtmp)
    im = Image(img)
    first = im.entry_cluster(im.find_short(b"VICTIM  BIN"))
    second = im.get_fat(first)
    value = {"loop": first, "self": second, "outside": 0xFFEF, "free_inside": 0,
             "bad_cluster": 0xFFF7}[damage]
    im.set_fat(second, value)
    before = sha(img)
    v = fatvol(img=img)
    p = v.path / "VICTIM.BIN"
    assert p.stat().st_size == len(data)  # the entry is fine: stat works
    with pytest.raises(OSError) as e:
        p.read_bytes()
    assert e.value.errno == errno.EIO
    for action in [lambda: p.write_bytes(b"x"), lambda: os.truncate(p, 10), lambda: p.unlink()]:
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno == errno.EIO
    assert (v.path / "OTHER.TXT").read_bytes() == open("/etc/hostname", "rb").read()
    assert "could not" not in v.mount.stderr()
    assert "broken" in v.mount.stderr()  # and it says so, naming the file
    v.unmount()
    assert same_but_dirty_flag(before, img)


@pytest.mark.parametrize("chain", ["shorter", "longer"])
def test_chain_that_disagrees_with_the_size_reads_but_never_changes(fatvol, rtmp, chain):
    """A FAT that disagrees with the directory size: which clusters past the size are the
    file's, or where the rest of it is, nobody knows (fsck.fat cuts one to the other). What the
    chain holds up to the size reads back; every change gives EIO and the image stays as it
    was."""
    img, data = image_with_files(rtmp)
    im = Image(img)
    first = im.entry_cluster(im.find_short(b"VICTIM  BIN"))
    if chain == "shorter":
        im.set_fat(first, 0xFFFF)  # the chain ends after one cluster; the size says 100 KiB
    else:  # one more cluster, a free one, after the chain's end
        last = first
        while im.get_fat(last) < 0xFFF8:
            last = im.get_fat(last)
        spare = next(c for c in range(last + 1, im.clusters + 2) if im.get_fat(c) == 0)
        im.set_fat(last, spare)
        im.set_fat(spare, 0xFFFF)
    before = sha(img)
    v = fatvol(img=img)
    with open(v.path / "VICTIM.BIN", "rb") as f:
        if chain == "shorter":
            head = f.read(im.cluster_size)
            assert head == data[:im.cluster_size]
            with pytest.raises(OSError) as e:
                f.read(im.cluster_size)
            assert e.value.errno == errno.EIO
        else:
            assert f.read() == data
    p = v.path / "VICTIM.BIN"
    for action in [lambda: open(p, "r+b", buffering=0).write(b"x"),
                   lambda: open(p, "ab", buffering=0).write(b"x"),
                   lambda: os.truncate(p, 10), lambda: p.unlink()]:
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno == errno.EIO
    assert "disagrees with its" in v.mount.stderr()
    v.unmount()
    assert same_but_dirty_flag(before, img)


def test_directory_with_a_looping_chain(fatvol, rtmp):
    img, _ = image_with_files(rtmp)
    im = Image(img)
    sub = im.entry_cluster(im.find_short(b"SUBDIR     "))
    im.set_fat(sub, sub)
    v = fatvol(img=img, opts=("ro",))
    with pytest.raises(OSError) as e:
        os.listdir(v.path / "SUBDIR")
    assert e.value.errno == errno.EIO
    assert sorted(os.listdir(v.path)) == ["OTHER.TXT", "SUBDIR", "VICTIM.BIN"]
    v.unmount()


def test_directory_entry_pointing_outside(fatvol, rtmp):
    img, _ = image_with_files(rtmp)
    im = Image(img)
    off = im.find_short(b"SUBDIR     ")
    im.write(off + 26, struct.pack("<H", 0xFFF0))
    before = sha(img)
    v = fatvol(img=img)
    with pytest.raises(OSError) as e:
        os.listdir(v.path / "SUBDIR")
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        (v.path / "SUBDIR" / "new").write_bytes(b"x")
    assert e.value.errno == errno.EIO
    v.unmount()
    assert same_but_dirty_flag(before, img)


def random_session(mnt, tree, intact):
    """Reads and changes through a read-write mount of a randomly damaged image (errors of the
    kinds a damaged image gives are allowed); returns (failures, expected): expected maps each
    file the damage did not reach, and the session did not remove, to its bytes."""
    allowed = {errno.EIO, errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
               errno.ENOSPC, errno.ENOTEMPTY}
    failures = []

    def attempt(what, fn):
        try:
            return fn()
        except OSError as e:
            if e.errno not in allowed:
                failures.append(f"{what}: {e}")
            return None

    found, walk_errors = [], []
    for dirpath, dirnames, filenames in os.walk(mnt, onerror=walk_errors.append):
        dirnames[:] = dirnames[:20]
        found += [Path(dirpath) / f for f in filenames]
        if len(found) > 2000:
            break
    failures += [f"walk: {e}" for e in walk_errors if e.errno not in allowed]
    for f in found[:200]:
        attempt(f"read {f.name}", f.read_bytes)
    for d in [mnt, mnt / "Dir One", mnt / "Dir One" / "Deeper"]:
        attempt("create", lambda: (d / "fresh file.txt").write_bytes(b"new\n" * 3000))
        attempt("mkdir", lambda: (d / "fresh dir").mkdir())
        attempt("rename", lambda: os.rename(d / "fresh file.txt", d / "fresh dir" / "moved"))
    # damaged files first: a write through a damaged chain must not land in an intact one
    files = sorted((p for p, n in tree.items() if p and not n.is_dir),
                   key=lambda p: intact.contents(tree[p]))
    removed = set()
    for p in files[:3] + files[-2:]:
        if attempt(f"rm {p}", lambda: os.unlink(mnt / p) or True):
            removed.add(p)
    attempt("late file", lambda: (mnt / "late file").write_bytes(os.urandom(300_000)))
    expected = {p: None for p in files if intact.contents(tree[p]) and p not in removed}
    return failures, expected


@pytest.mark.parametrize("seed", range(12))
def test_random_damage_never_crashes_hangs_or_spreads(fatvol, rtmp, seed):
    """Random bytes over the FAT and the directories of an image with content; then everything
    is read and written through a read-write mount. Errors are allowed; a crash or a hang is
    not, and neither is a write that spreads the damage: afterwards fsck.fat -n must report
    nothing the damage alone did not cause, and every file the damage did not reach (as an
    independent reader of the image says) must still read back byte for byte, through the
    mount and on the image."""
    rnd = random.Random(seed)
    fat = [12, 16, 32][seed % 3]
    size = {12: "2M", 16: "32M", 32: "64M"}[fat]
    img = make_fat(rtmp / "r.img", fat=fat, size=size)
    src = rtmp / "src"
    (src / "Dir One" / "Deeper").mkdir(parents=True)
    for i in range(12):
        d = [src, src / "Dir One", src / "Dir One" / "Deeper"][i % 3]
        (d / f"A long file name {i}.bin").write_bytes(rnd.randbytes(rnd.choice([0, 10, 3000, 40000])))
    for e in os.listdir(src):
        mtools("mcopy", "-s", "-i", img, src / e, "::")
    pristine = Path(img).read_bytes()
    layout = FatLayout(pristine)
    tree = layout.tree()
    contents = {p: (src / p).read_bytes() for p, n in tree.items() if p and not n.is_dir}
    im = Image(img)
    root_off, root_len = im.root_dir()
    regions = [(im.fat_offset, im.fatsz * im.bps), (root_off, root_len),
               (im.data_offset, 16 * im.cluster_size)]
    for _ in range(40):
        start, length = rnd.choice(regions)
        off = start + rnd.randrange(length)
        im.write(off, rnd.randbytes(rnd.choice([1, 2, 4, 32])))
    damaged = Path(img).read_bytes()
    intact = Intact(layout, tree, damaged)
    before = fsck_fat(img)
    try:
        v = fatvol(img=img)
    except Exception as e:  # a clean refusal is fine
        assert "not a FAT file system" in str(e) or "root directory" in str(e), str(e)
        return
    failures, expected = bounded(lambda: random_session(v.path, tree, intact), 120,
                                 v.mount.kill, "the session")
    expected = {p: contents[p] for p in expected}
    failures += reread_intact(v.path, expected)
    assert v.mount.proc.poll() is None, "the daemon died"
    v.unmount()  # exits 0: no crash, and the sanitizers said nothing
    after = Path(img).read_bytes()
    failures += [f"'{p}' does not hold on the image what it should"
                 for p, data in sorted(expected.items()) if on_disk(after, p) != data]
    worse = fsck_worse(before, fsck_fat(img))
    assert not worse, f"fsck.fat -n finds what the damage alone did not: {worse}"
    assert not failures, "\n".join(failures)


def two_files_image(rtmp, fat=16):
    """A.BIN (10 clusters), B.BIN (9) and OTHER.TXT, then A's chain made to run into B's
    after its first cluster: A still has as many clusters as its size needs, so nothing but
    the other claim on B's clusters tells that they are shared."""
    img = make_fat(rtmp / "s.img", fat=fat, size="32M" if fat == 16 else "64M",
                   cluster_sectors=1)
    a, b = os.urandom(10 * 512), os.urandom(9 * 512)
    for name, data in [("A.BIN", a), ("B.BIN", b), ("OTHER.TXT", b"other\n")]:
        (rtmp / name).write_bytes(data)
        mtools("mcopy", "-i", img, rtmp / name, f"::{name}")
    im = Image(img)
    first_a = im.entry_cluster(im.find_short(b"A       BIN"))
    first_b = im.entry_cluster(im.find_short(b"B       BIN"))
    im.set_fat(first_a, first_b)
    return img, im, a, b


@pytest.mark.parametrize("fat", [16, 32])
def test_two_files_sharing_clusters_can_be_read_but_not_changed(fatvol, rtmp, fat):
    img, im, a, b = two_files_image(rtmp, fat)
    before = fsck_fat(img)
    assert "share clusters" in before
    v = fatvol(img=img)
    pa, pb = v.path / "A.BIN", v.path / "B.BIN"
    assert pb.read_bytes() == b  # reading is harmless: B reads as it was
    assert pa.read_bytes()[:512] == a[:512] and pa.read_bytes()[512:] == b  # A runs into B
    def write_at(p, flags, data, off=None):
        fd = os.open(p, flags)
        try:
            return os.write(fd, data) if off is None else os.pwrite(fd, data, off)
        finally:
            os.close(fd)

    changes = [lambda p: write_at(p, os.O_WRONLY | os.O_TRUNC, b"x" * 3000),
               lambda p: os.truncate(p, 100),
               lambda p: write_at(p, os.O_WRONLY, b"y" * 1000, 1000),      # in place
               lambda p: write_at(p, os.O_WRONLY | os.O_APPEND, b"z" * 1000),
               lambda p: p.unlink(),
               lambda p: os.rename(v.path / "OTHER.TXT", p)]                # replace it
    for p in (pa, pb):
        for change in changes:
            with pytest.raises(OSError) as e:
                change(p)
            assert e.value.errno == errno.EIO, (p.name, e.value)
    assert pb.read_bytes() == b and pa.read_bytes()[512:] == b
    # the rest of the volume works as ever, and its space never comes from the shared chain
    (v.path / "OTHER.TXT").write_bytes(os.urandom(20 * 512))
    (v.path / "NEW.BIN").write_bytes(os.urandom(30 * 512))
    os.utime(pa, (0, 1_000_000_000))  # its entry is its own: times change
    assert "shares clusters" in v.mount.stderr()
    v.unmount()
    assert fsck_worse(before, fsck_fat(img)) == []
    assert on_disk(Path(img).read_bytes(), "B.BIN") == b


def test_free_cluster_a_file_still_names_is_never_allocated(fatvol, rtmp):
    img = make_fat(rtmp / "f.img", fat=16, size="32M", cluster_sectors=1)
    (rtmp / "victim").write_bytes(os.urandom(4 * 512))
    mtools("mcopy", "-i", img, rtmp / "victim", "::VICTIM.BIN")
    im = Image(img)
    head = im.entry_cluster(im.find_short(b"VICTIM  BIN"))
    assert head == 2  # the lowest cluster: the first a new file would take
    im.set_fat(head, 0)  # VICTIM's entry still names it, the FAT calls it free
    before = fsck_fat(img)
    v = fatvol(img=img)
    with pytest.raises(OSError) as e:
        (v.path / "VICTIM.BIN").read_bytes()
    assert e.value.errno == errno.EIO
    data = os.urandom(10 * 512)
    (v.path / "NEW.BIN").write_bytes(data)
    free_seen = os.statvfs(v.path).f_bfree
    v.unmount()
    new_first = im.entry_cluster(im.find_short(b"NEW     BIN"))
    assert new_first != head
    assert im.get_fat(head) == 0  # never taken
    assert fsck_worse(before, fsck_fat(img)) == []
    assert on_disk(Path(img).read_bytes(), "NEW.BIN") == data
    # statfs does not count the cluster it will never hand out
    assert free_seen == sum(1 for c in range(2, im.clusters + 2) if im.get_fat(c) == 0) - 1


@pytest.mark.parametrize("damage", ["first_fat_sector_zeroed", "copies_differ_in_one_entry"])
def test_fat_copies_that_disagree_are_not_overwritten_with_the_damaged_one(fatvol, rtmp, damage):
    """A FAT whose first sector is lost is read from the second copy, as fsck.fat does; copies
    that merely differ keep differing where they did (the second copy is what fsck.fat would
    repair the first from): a write-back never copies a damaged block over a good one."""
    img, data = image_with_files(rtmp)
    im = Image(img)
    if damage == "first_fat_sector_zeroed":
        im.write(im.fat_offset, bytes(512))
    else:
        other = im.entry_cluster(im.find_short(b"OTHER   TXT"))
        im.write(im.fat_entry_offset(other, copy=1), struct.pack("<H", 0xFFF7))
    copy2_block0 = im.read(im.fat_offset + im.fatsz * im.bps, 512)
    before = fsck_fat(img)
    v = fatvol(img=img)
    assert (v.path / "VICTIM.BIN").read_bytes() == data  # whichever copy is used, it is whole
    (v.path / "NEW.BIN").write_bytes(os.urandom(100_000))
    (v.path / "SUBDIR" / "MORE.TXT").write_bytes(b"more\n")
    if damage == "first_fat_sector_zeroed":
        assert "copy 2 is used" in v.mount.stderr()
    v.unmount()
    after = fsck_fat(img)
    assert fsck_worse(before, after) == [], after
    if damage == "copies_differ_in_one_entry":
        # the block that differed was written to the copy in use only
        assert im.read(im.fat_offset + im.fatsz * im.bps, 512) == copy2_block0
    v = fatvol(img=img, opts=("ro",))
    assert (v.path / "VICTIM.BIN").read_bytes() == data
    assert (v.path / "SUBDIR" / "MORE.TXT").read_bytes() == b"more\n"
    v.unmount()
