"""Full disks: a FAT volume filled to the last cluster (FAT12, FAT16, FAT32, by several writers at
once, and its fixed root directory filled to the last entry), a FAT volume on a umdev RAM disk
filled the same way, a RAM disk (and a partition on it) written past its end, and a FAT image
whose host file system fills up under it. Each time the error reaches the writer (ENOSPC, or
EIO where the host refused a write of metadata), everything written before reads back whole —
through the mount, after a remount, and by fsck.fat -n, which must find the volume clean."""
import errno
import hashlib
import os
import random
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import make_fat
from rellib import MIB, DaemonPool, is_mountpoint, wait_until

FAT = "umfuse-fat"
RAMDISK = "umdev-ramdisk"


def fsck_clean(img):
    r = subprocess.run(["fsck.fat", "-n", str(img)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    findings = [line for line in out.splitlines() if line and not line.startswith("fsck.fat ")
                and not line.startswith(f"{img}:")]
    return r.returncode == 0 and not findings, out


def fill(mnt, subdir, rnd, written, partial, lock, sizes=(1, 700, 5000, 40000, 300000)):
    """Write files into mnt/subdir (a directory of its own: a fixed FAT12/16 root would run
    out of entries first) until the volume is full. written gets each file written whole,
    partial the one the error cut short (its intended bytes); returns the errno."""
    n = 0
    while True:
        n += 1
        data = rnd.randbytes(rnd.choice(sizes))
        name = f"{subdir}/file {n} with a long name.bin" if subdir else \
            f"file {n} with a long name.bin"
        try:
            fd = os.open(mnt / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            return e.errno
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])  # a short write, then ENOSPC
        except OSError as e:
            with lock:
                partial[name] = data
            return e.errno
        finally:
            os.close(fd)
        with lock:
            written[name] = hashlib.sha256(data).hexdigest()


def read_back(mnt, written, partial=None):
    """What differs from what was written: whole files whole, a file cut short by the error
    a prefix of what was meant (never other bytes)."""
    bad = []
    for name, digest in written.items():
        try:
            if hashlib.sha256((mnt / name).read_bytes()).hexdigest() != digest:
                bad.append(f"{name} differs")
        except OSError as e:
            bad.append(f"{name}: {e}")
    for name, data in (partial or {}).items():
        try:
            got = (mnt / name).read_bytes()
            if got != data[:len(got)]:
                bad.append(f"{name} (cut short) holds other bytes than were written")
        except FileNotFoundError:
            pass  # the create itself failed
        except OSError as e:
            bad.append(f"{name}: {e}")
    return bad


def tree_files(mnt):
    return sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file())


def full_volume_checks(pool, img, mnt, writers=4, source=None):
    """Fill a mounted-on-demand FAT volume with several writers; check the errors and that
    nothing is lost. img is the image (or device file) given to umfuse-fat."""
    d = pool.new(FAT, [img, mnt], mnt)
    assert d.start(), d.stderr()
    written, partial, lock, errors = {}, {}, threading.Lock(), []
    for i in range(writers):
        os.mkdir(mnt / f"writer {i}")
    threads = [threading.Thread(target=lambda i=i: errors.append(
        fill(mnt, f"writer {i}", random.Random(i), written, partial, lock)))
        for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [errno.ENOSPC] * writers, errors
    sv = os.statvfs(mnt)
    assert sv.f_bfree == 0 or sv.f_bfree * sv.f_bsize < 300000
    # a full volume refuses a directory that needs a cluster, and a file that grows
    if sv.f_bfree == 0:
        with pytest.raises(OSError) as e:
            os.mkdir(mnt / "a directory on a full volume")
        assert e.value.errno == errno.ENOSPC
    assert len(written) > 10
    assert read_back(mnt, written, partial) == []
    assert d.stop() == 0 and not d.sanitizer_report()
    ok, out = fsck_clean(img)
    assert ok, out
    # after a remount: all there; deleting gives the space back
    d = pool.new(FAT, [img, mnt], mnt)
    assert d.start(), d.stderr()
    assert set(written) <= set(tree_files(mnt)) <= set(written) | set(partial)
    assert read_back(mnt, written, partial) == []
    victims = sorted(written)[::2]
    for name in victims:
        os.unlink(mnt / name)
        del written[name]
    (mnt / "after the space came back.bin").write_bytes(b"z" * 100000)
    assert d.stop() == 0 and not d.sanitizer_report()
    ok, out = fsck_clean(img)
    assert ok, out
    return written


@pytest.mark.parametrize("fat,size", [(12, "2M"), (16, "8M"), (32, "36M")])
def test_full_fat_volume_with_parallel_writers_loses_nothing(tmp_path, fat, size):
    img = make_fat(tmp_path / "full.img", fat=fat, size=size, cluster_sectors=4 if fat == 12
                   else 1 if fat == 32 else 2)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    try:
        full_volume_checks(pool, img, mnt)
    finally:
        pool.cleanup()


def test_full_fixed_root_directory_gives_enospc(tmp_path):
    """FAT12/16 keep the root in a fixed area: its last entry taken, a new name gets ENOSPC
    even with free clusters, and the names already there stay."""
    img = make_fat(tmp_path / "root.img", fat=16, size="8M", cluster_sectors=1,
                   extra=("-r", "32"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    try:
        d = pool.new(FAT, [img, mnt], mnt)
        assert d.start(), d.stderr()
        made = []
        for i in range(100):
            name = f"entry {i} needs long-name slots.txt"
            try:
                (mnt / name).write_text(name)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
            made.append(name)
        else:
            pytest.fail("a 32-entry root took 100 long names")
        assert 4 <= len(made) < 32
        assert os.statvfs(mnt).f_bfree > 1000  # clusters were not what ran out
        with pytest.raises(OSError) as e:
            os.mkdir(mnt / "no room for this name either")
        assert e.value.errno == errno.ENOSPC
        assert sorted(os.listdir(mnt)) == sorted(made)
        assert all((mnt / n).read_text() == n for n in made)
        assert d.stop() == 0
        ok, out = fsck_clean(img)
        assert ok, out
    finally:
        pool.cleanup()


def test_full_fat_on_a_ram_disk_loses_nothing(tmp_path):
    ram = tmp_path / "ram"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    try:
        r = pool.new(RAMDISK, ["-o", "size=6M", ram], ram)
        assert r.start(), r.stderr()
        subprocess.run(["mkfs.vfat", "-F", "16", "-s", "2", str(ram)], check=True,
                       capture_output=True, timeout=60)
        full_volume_checks(pool, ram, mnt, writers=3)
        assert r.alive()
        assert r.stop() == 0 and not r.sanitizer_report()
    finally:
        pool.cleanup()


def test_ram_disk_and_its_partition_written_past_the_end(tmp_path):
    ram = tmp_path / "ram"
    pool = DaemonPool(tmp_path)
    size = 8 * MIB
    try:
        r = pool.new(RAMDISK, ["-o", "size=8M", ram], ram)
        assert r.start(), r.stderr()
        subprocess.run(["sfdisk", "--quiet", str(ram)],
                       input="label: dos\nstart=2048, size=4096\nstart=6144, size=4096\n",
                       text=True, check=True, capture_output=True, timeout=60)
        p1, p2 = Path(f"{ram}1"), Path(f"{ram}2")
        wait_until(lambda: is_mountpoint(p1) and is_mountpoint(p2), 20, "the partitions")
        # dd past the end of the whole disk: it stops at the end with ENOSPC
        res = subprocess.run(["dd", "if=/dev/zero", f"of={ram}", "bs=1M", "seek=6",
                              "count=4", "conv=notrunc,fsync"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and "No space left on device" in res.stderr, res.stderr
        assert ram.stat().st_size == size
        # the partitions are untouched by that and keep their data; writes stop at their ends
        pattern = random.Random(3).randbytes(4096 * 512)
        p2_before = p2.read_bytes()
        fd = os.open(p1, os.O_RDWR)
        try:
            assert os.pwrite(fd, pattern, 0) == len(pattern)
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x" * 512, len(pattern))
            assert e.value.errno == errno.ENOSPC
            assert os.pwrite(fd, b"y" * 1024, len(pattern) - 512) == 512
            os.fsync(fd)
        finally:
            os.close(fd)
        assert p2.read_bytes() == p2_before
        want = pattern[:-512] + b"y" * 512
        assert p1.read_bytes() == want
        with open(ram, "rb") as f:
            f.seek(2048 * 512)
            assert f.read(len(want)) == want
            f.seek(size - MIB)
            assert f.read() == bytes(MIB)  # what dd wrote before the end
            assert f.read(1) == b""
        assert r.stop() == 0 and not r.sanitizer_report()
    finally:
        pool.cleanup()


def test_host_file_system_full_under_the_image(tmp_path):
    """The image is a sparse file on a 3 MiB tmpfs: writes into its holes fail on the host.
    The writer gets an error, nothing written before is lost, and after an unmount on a host
    with room again the volume is clean (what could not be written is not half there)."""
    host = tmp_path / "host"
    host.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(host)], check=True)
    pool = DaemonPool(tmp_path)
    try:
        img = make_fat(host / "sparse.img", fat=16, size="16M", cluster_sectors=4)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        d = pool.new(FAT, [img, mnt], mnt)
        assert d.start(), d.stderr()
        written, partial, lock = {}, {}, threading.Lock()
        err = fill(mnt, "", random.Random(9), written, partial, lock,
                   sizes=(5000, 40000, 200000))
        assert err in (errno.ENOSPC, errno.EIO), os.strerror(err)
        assert os.statvfs(mnt).f_bfree > 1000  # the volume itself had room
        assert len(written) > 3
        assert read_back(mnt, written, partial) == []
        # more room on the host: the daemon goes on, and its metadata reaches the image
        subprocess.run(["mount", "-o", "remount,size=32m", str(host)], check=True)
        (mnt / "once the host has room.bin").write_bytes(b"r" * 300000)
        written["once the host has room.bin"] = hashlib.sha256(b"r" * 300000).hexdigest()
        assert d.stop() == 0, d.stderr()
        assert not d.sanitizer_report()
        ok, out = fsck_clean(img)
        assert ok, out
        d = pool.new(FAT, ["-o", "ro", img, mnt], mnt)
        assert d.start(), d.stderr()
        assert read_back(mnt, written, partial) == []
        assert d.stop() == 0
    finally:
        pool.cleanup()
        subprocess.run(["umount", "-l", str(host)], capture_output=True)
