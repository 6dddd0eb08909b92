"""Corrupt and hostile images: cluster chains that loop or leave the volume, a FAT that
disagrees with the directory size, directories whose chain is broken, random damage to the FAT
and the directories. umfuse-fat must answer EIO or refuse cleanly — never crash, hang, or write
anything that spreads the damage."""
import errno
import os
import random
import struct
import subprocess

import pytest

from conftest import make_fat
from fatlib import Image, fatvol, mtools, sha  # noqa: F401


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


def test_fat_shorter_than_the_size_reads_what_it_has(fatvol, rtmp):
    img, data = image_with_files(rtmp)
    im = Image(img)
    first = im.entry_cluster(im.find_short(b"VICTIM  BIN"))
    im.set_fat(first, 0xFFFF)  # the chain ends after one cluster; the size says 100 KiB
    v = fatvol(img=img, opts=("ro",))
    with open(v.path / "VICTIM.BIN", "rb") as f:
        head = f.read(im.cluster_size)
        assert head == data[:im.cluster_size]
        with pytest.raises(OSError) as e:
            f.read(im.cluster_size)
        assert e.value.errno == errno.EIO
    v.unmount()


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


@pytest.mark.parametrize("seed", range(12))
def test_random_damage_never_crashes_or_hangs(fatvol, rtmp, seed):
    """Random bytes over the FAT and the directories of an image with content; then everything
    is read and written through the mount. Errors are allowed, a crash or a hang is not."""
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
    im = Image(img)
    root_off, root_len = im.root_dir()
    regions = [(im.fat_offset, im.fatsz * im.bps), (root_off, root_len),
               (im.data_offset, 16 * im.cluster_size)]
    for _ in range(40):
        start, length = rnd.choice(regions)
        off = start + rnd.randrange(length)
        im.write(off, rnd.randbytes(rnd.choice([1, 2, 4, 32])))
    try:
        v = fatvol(img=img)
    except Exception as e:  # a clean refusal is fine
        assert "not a FAT file system" in str(e) or "root directory" in str(e), str(e)
        return
    script = f"""
        cd '{v.path}' || exit 0
        find . -xdev 2>/dev/null | head -2000 > /dev/null
        find . -xdev -type f 2>/dev/null | head -200 | while read -r f; do cat "$f" > /dev/null 2>&1; done
        for d in . 'Dir One' 'Dir One/Deeper'; do
            echo new > "$d/fresh file.txt" 2>/dev/null
            mkdir "$d/fresh dir" 2>/dev/null
            mv "$d/fresh file.txt" "$d/fresh dir/" 2>/dev/null
        done
        find . -xdev -type f -name '*.bin' 2>/dev/null | head -5 | while read -r f; do rm -f "$f" 2>/dev/null; done
        exit 0
    """
    subprocess.run(["sh", "-c", script], timeout=60)
    assert v.mount.proc.poll() is None, "the daemon died"
    v.unmount()  # exits 0: no crash, and the sanitizers said nothing
