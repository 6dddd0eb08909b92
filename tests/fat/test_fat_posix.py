"""POSIX through umfuse-fat, as Linux vfat does it: writes, truncation both ways, holes that read
as zeros, unlinked-but-open files, the rename matrix, mkdir/rmdir and link counts, utimensat
with FAT's granularity, chmod mapped to the read-only attribute, user.fat.attributes, statfs,
ENOSPC, uid=/gid=/umask=, stable inode numbers and parallel writers. fsck.fat -n after each."""
import ctypes
import errno
import os
import stat
import subprocess
import threading
import time

import pytest

from conftest import make_fat, run
from fatlib import Image, assert_clean, fatvol, mtools  # noqa: F401

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(a, b, flags):
    if libc.renameat2(-100, os.fsencode(str(a)), -100, os.fsencode(str(b)), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def free_clusters(path):
    return os.statvfs(path).f_bfree


def test_write_read_truncate_both_ways(fatvol):
    v = fatvol(fat=32)
    p = v.path / "file.bin"
    data = os.urandom(1_500_000)
    p.write_bytes(data)
    assert p.read_bytes() == data
    os.truncate(p, 100_000)
    assert p.read_bytes() == data[:100_000]
    os.truncate(p, 3_000_000)  # up: the new part reads as zeros
    back = p.read_bytes()
    assert back[:100_000] == data[:100_000] and back[100_000:] == bytes(2_900_000)
    with open(p, "r+b") as f:
        f.truncate(10)
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
    assert p.read_bytes() == data[:10] + b"tail"
    with open(p, "ab") as f:  # O_APPEND
        f.write(b"+appended")
    assert p.read_bytes() == data[:10] + b"tail+appended"
    with open(p, "wb") as f:  # O_TRUNC
        f.write(b"new")
    assert p.read_bytes() == b"new"
    os.truncate(p, 0)
    assert p.stat().st_size == 0 and p.stat().st_blocks == 0
    v.check()


def test_a_file_in_many_fragments_reads_back_whole(fatvol):
    """Two files grown a cluster at a time, in turn, end up interleaved: each is a hundred runs
    of one cluster. A read then spans many runs (more than one reply of the splice path holds),
    and every byte must come back from the right cluster."""
    v = fatvol(fat=16, size="16M", cluster_sectors=1)
    chunks = {name: [os.urandom(512) for _ in range(100)] for name in ("A.BIN", "B.BIN")}
    fds = {name: os.open(v.path / name, os.O_CREAT | os.O_WRONLY, 0o644) for name in chunks}
    try:
        for i in range(100):
            for name, fd in fds.items():
                assert os.write(fd, chunks[name][i]) == 512
    finally:
        for fd in fds.values():
            os.close(fd)
    for name in chunks:
        assert (v.path / name).read_bytes() == b"".join(chunks[name])
        with open(v.path / name, "rb", buffering=0) as f:  # and from the middle, unaligned
            f.seek(700)
            assert f.read(30_000) == b"".join(chunks[name])[700:30_700]
    v.check()
    im = Image(v.img)
    c, runs = im.entry_cluster(im.find_short(b"A       BIN")), 1
    while True:
        nxt = im.get_fat(c)
        if nxt >= 0xFFF8:
            break
        runs += nxt != c + 1
        c = nxt
    assert runs >= 50, f"the file is in {runs} runs only: the read did not cross many"


def test_holes_read_as_zeros_even_over_old_data(fatvol):
    v = fatvol(fat=16, size="16M")
    # fill most of the disk with 0xFF and free it: later clusters hold old bytes
    (v.path / "junk").write_bytes(b"\xff" * 12_000_000)
    os.unlink(v.path / "junk")
    with open(v.path / "gappy", "wb") as f:
        f.write(b"start")
        f.seek(5_000_000)
        f.write(b"end")
    back = (v.path / "gappy").read_bytes()
    assert back == b"start" + bytes(5_000_000 - 5) + b"end"
    with open(v.path / "grown", "wb") as f:
        f.write(b"x")
    os.truncate(v.path / "grown", 3_000_000)
    assert (v.path / "grown").read_bytes() == b"x" + bytes(2_999_999)
    v.check()


def test_unlinked_open_file_stays_usable_and_its_clusters_come_back(fatvol):
    v = fatvol(fat=32)
    data = os.urandom(2_000_000)
    free0 = free_clusters(v.path)
    f = open(v.path / "doomed.bin", "w+b")
    f.write(data)
    f.flush()
    held = free0 - free_clusters(v.path)
    assert held > 0
    os.unlink(v.path / "doomed.bin")
    assert os.listdir(v.path) == []  # no .fuse_hidden leftovers
    assert os.fstat(f.fileno()).st_nlink == 0
    f.seek(0)
    assert f.read() == data
    f.write(b"still writable")
    assert free_clusters(v.path) <= free0 - held  # kept until the last close
    f2 = open(f"/proc/self/fd/{f.fileno()}", "rb")  # a second open of the same file
    f.close()
    assert f2.read()[:100] == data[:100]
    assert free_clusters(v.path) < free0
    f2.close()
    assert free_clusters(v.path) == free0
    # replaced by rename while open: the same
    (v.path / "old").write_bytes(b"old content")
    g = open(v.path / "old", "rb")
    (v.path / "new").write_bytes(b"new content")
    os.rename(v.path / "new", v.path / "old")
    assert g.read() == b"old content"
    assert (v.path / "old").read_bytes() == b"new content"
    g.close()
    v.check()


def test_unlinked_file_still_open_at_unmount_leaves_no_lost_clusters(fatvol):
    v = fatvol(fat=16, size="16M")
    (v.path / "f").write_bytes(os.urandom(300_000))
    # a process keeps it open while the daemon is told to stop
    holder = subprocess.Popen(["sh", "-c", f"exec 3<'{v.path}/f'; rm '{v.path}/f'; "
                               "echo ready; exec sleep 60"], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"ready\n"
    v.mount.proc.terminate()
    assert v.mount.proc.wait(20) == 0
    holder.kill()
    holder.wait()
    v.mount.unmounted = True
    subprocess.run(["umount", "-l", str(v.path)], capture_output=True)
    assert_clean(v.img)


def populated(v):
    (v.path / "d1").mkdir()
    (v.path / "d2").mkdir()
    (v.path / "d1" / "sub").mkdir()
    (v.path / "d1" / "sub" / "deep.txt").write_text("deep")
    (v.path / "f1").write_text("one")
    (v.path / "f2").write_text("two")
    (v.path / "empty").mkdir()


@pytest.mark.parametrize("case", [
    "file_same_dir", "file_other_dir", "file_replaces_file", "long_to_short_name",
    "dir_other_dir", "dir_replaces_empty_dir", "dir_onto_nonempty_dir", "file_onto_dir",
    "dir_onto_file", "dir_into_itself", "noreplace", "exchange_files", "exchange_file_and_dir",
])
def test_rename_matrix(fatvol, case):
    v = fatvol(fat=32)
    populated(v)
    p = v.path
    free0 = free_clusters(p)
    if case == "file_same_dir":
        os.rename(p / "f1", p / "A much longer name for f1.txt")
        assert (p / "a much longer name for F1.TXT").read_text() == "one"
        assert not (p / "f1").exists()
    elif case == "file_other_dir":
        os.rename(p / "f1", p / "d1" / "sub" / "f1-moved")
        assert (p / "d1" / "sub" / "f1-moved").read_text() == "one"
        assert sorted(os.listdir(p)) == ["d1", "d2", "empty", "f2"]
    elif case == "file_replaces_file":
        ino = os.stat(p / "f1").st_ino
        os.rename(p / "f1", p / "F2")  # another case of an existing name: replaced
        assert os.stat(p / "f2").st_ino == ino
        assert (p / "f2").read_text() == "one"
        assert sorted(os.listdir(p)) == ["F2", "d1", "d2", "empty"]
        assert free_clusters(p) == free0 + 1  # f2's cluster is free again
    elif case == "long_to_short_name":
        os.rename(p / "d1" / "sub" / "deep.txt", p / "d1" / "sub" / "A name that needs LFN")
        os.rename(p / "d1" / "sub" / "A name that needs LFN", p / "d1" / "sub" / "X")
        assert os.listdir(p / "d1" / "sub") == ["X"]
    elif case == "dir_other_dir":
        os.rename(p / "d1" / "sub", p / "d2" / "sub-moved")
        assert (p / "d2" / "sub-moved" / "deep.txt").read_text() == "deep"
        assert os.stat(p / "d1").st_nlink == 2 and os.stat(p / "d2").st_nlink == 3
        # ".." follows the move: fsck.fat checks it, and so does the kernel's lookup of ..
        assert os.path.samefile(p / "d2" / "sub-moved" / "..", p / "d2")
    elif case == "dir_replaces_empty_dir":
        os.rename(p / "d1", p / "empty")
        assert (p / "empty" / "sub" / "deep.txt").read_text() == "deep"
        assert sorted(os.listdir(p)) == ["d2", "empty", "f1", "f2"]
    elif case == "dir_onto_nonempty_dir":
        with pytest.raises(OSError) as e:
            os.rename(p / "d2", p / "d1")
        assert e.value.errno == errno.ENOTEMPTY
    elif case == "file_onto_dir":
        with pytest.raises(OSError) as e:
            os.rename(p / "f1", p / "d2")
        assert e.value.errno == errno.EISDIR
    elif case == "dir_onto_file":
        with pytest.raises(OSError) as e:
            os.rename(p / "d2", p / "f1")
        assert e.value.errno == errno.ENOTDIR
    elif case == "dir_into_itself":
        with pytest.raises(OSError) as e:
            os.rename(p / "d1", p / "d1" / "sub" / "x")
        assert e.value.errno == errno.EINVAL
    elif case == "noreplace":
        with pytest.raises(OSError) as e:
            renameat2(p / "f1", p / "f2", RENAME_NOREPLACE)
        assert e.value.errno == errno.EEXIST
        renameat2(p / "f1", p / "f3", RENAME_NOREPLACE)
        assert (p / "f3").read_text() == "one"
    elif case == "exchange_files":
        renameat2(p / "f1", p / "d1" / "sub" / "deep.txt", RENAME_EXCHANGE)
        assert (p / "f1").read_text() == "deep"
        assert (p / "d1" / "sub" / "deep.txt").read_text() == "one"
    elif case == "exchange_file_and_dir":
        renameat2(p / "f1", p / "d1", RENAME_EXCHANGE)
        assert (p / "d1").read_text() == "one"
        assert (p / "f1" / "sub" / "deep.txt").read_text() == "deep"
        assert os.path.samefile(p / "f1" / "sub" / "..", p / "f1")
    v.check()


def test_mkdir_rmdir_and_link_counts(fatvol):
    v = fatvol(fat=16, size="16M")
    root_links = os.stat(v.path).st_nlink
    (v.path / "a").mkdir()
    (v.path / "a" / "b").mkdir()
    (v.path / "a" / "c").mkdir()
    (v.path / "a" / "file").write_text("x")
    assert os.stat(v.path).st_nlink == root_links + 1
    assert os.stat(v.path / "a").st_nlink == 4
    with pytest.raises(OSError) as e:
        os.rmdir(v.path / "a")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.rmdir(v.path / "a" / "file")
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        os.unlink(v.path / "a" / "b")
    assert e.value.errno == errno.EISDIR
    os.rmdir(v.path / "a" / "b")
    assert os.stat(v.path / "a").st_nlink == 3
    os.unlink(v.path / "a" / "file")
    os.rmdir(v.path / "a" / "c")
    os.rmdir(v.path / "a")
    assert os.stat(v.path).st_nlink == root_links
    assert os.listdir(v.path) == []
    # a directory large enough to need more clusters
    (v.path / "big").mkdir()
    for i in range(300):
        (v.path / "big" / f"a long file name number {i:04d}.txt").write_text(str(i))
    assert len(os.listdir(v.path / "big")) == 300
    assert (v.path / "big" / "A LONG FILE NAME NUMBER 0299.TXT").read_text() == "299"
    v.check()


def test_links_symlinks_and_devices_are_eperm(fatvol):
    v = fatvol(fat=16, size="16M")
    (v.path / "f").write_text("x")
    for action in [lambda: os.link(v.path / "f", v.path / "g"),
                   lambda: os.symlink("f", v.path / "s"),
                   lambda: os.mkfifo(v.path / "fifo"),
                   lambda: os.mknod(v.path / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))]:
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno == errno.EPERM
    os.mknod(v.path / "regular", stat.S_IFREG | 0o644)  # a plain file is fine
    assert (v.path / "regular").is_file()
    v.check()


def test_times_have_fat_granularity(fatvol):
    v = fatvol(fat=32)
    p = v.path / "t"
    p.write_text("x")
    t = 1_700_000_001  # an odd second
    os.utime(p, ns=(t * 10**9 + 123, t * 10**9 + 987_654_321))
    st = p.stat()
    assert st.st_mtime_ns == (t - 1) * 10**9  # 2-second units, rounded down
    lt = time.localtime(st.st_atime)
    assert (lt.tm_hour, lt.tm_min, lt.tm_sec) == (0, 0, 0)  # the date only
    assert time.localtime(t)[:3] == lt[:3]
    # utimensat with UTIME_OMIT (touch -m leaves atime alone) and UTIME_NOW
    atime = st.st_atime_ns
    run(["touch", "-m", "-d", "2001-02-03 04:05:06", p])
    st = p.stat()
    assert st.st_atime_ns == atime
    assert time.localtime(st.st_mtime)[:6] == (2001, 2, 3, 4, 5, 6)
    # UTIME_NOW: the clock between before and after, rounded down to FAT's 2-second unit (the
    # 2 below is that granularity, not a bound on how fast anything runs)
    before = time.time_ns()
    run(["touch", p])
    after = time.time_ns()
    assert before - 2 * 10**9 < p.stat().st_mtime_ns <= after
    # ctime (kept where FAT keeps the creation time, as Linux does): 10 ms units, changes on
    # chmod and rename
    before = time.time_ns()
    os.chmod(p, 0o555)
    after = time.time_ns()
    c1 = p.stat().st_ctime_ns
    assert c1 % 10_000_000 == 0 and before - 10_000_000 < c1 <= after
    while time.time_ns() < c1 + 10_000_000:  # the clock reaches the next 10 ms unit
        time.sleep(0.001)
    os.rename(p, v.path / "t2")
    assert (v.path / "t2").stat().st_ctime_ns > c1
    # dates before 1980 cannot be stored: clamped to the earliest FAT date
    os.utime(v.path / "t2", (0, 0))
    assert time.localtime((v.path / "t2").stat().st_mtime)[:3] == (1980, 1, 1)
    v.check()


def entry_time(im, sfn):
    """(year, month, day, hour, minute, second) of a root entry's modification time as stored."""
    import struct
    e = im.read(im.find_short(sfn), 32)
    t, d = struct.unpack_from("<HH", e, 22)
    return (1980 + (d >> 9), (d >> 5) & 15, d & 31, t >> 11, (t >> 5) & 63, (t & 31) * 2)


@pytest.mark.parametrize("tz_utc", [False, True], ids=["local", "tz-utc"])
def test_tz_utc_stores_times_in_utc(rtmp, mounts, tz_utc):
    """FAT stores local time; with tz=UTC (as the kernel's vfat option) it stores UTC. The
    daemon runs in Tokyo (UTC+9) so the two differ; either way stat shows the same instant."""
    from fatlib import Vol
    img = make_fat(rtmp / "tz.img", fat=16, size="16M")
    mnt = rtmp / "mnt"
    mnt.mkdir()
    env = dict(os.environ, TZ="Asia/Tokyo")
    opts = ["-o", "tz=UTC"] if tz_utc else []
    m = mounts.start("umfuse-fat", *opts, img, mnt, mountpoint=mnt, env=env)
    t = 1_622_548_800  # 2021-06-01 12:00:00 UTC, 21:00 in Tokyo
    (mnt / "F.TXT").write_text("x")
    os.utime(mnt / "F.TXT", (t, t))
    assert (mnt / "F.TXT").stat().st_mtime == t
    m.unmount()
    assert_clean(img)
    hour = 12 if tz_utc else 21
    assert entry_time(Image(img), b"F       TXT") == (2021, 6, 1, hour, 0, 0)
    # mounted again the same way, the stored time means the same instant
    m = mounts.start("umfuse-fat", *opts, img, mnt, mountpoint=mnt, env=env)
    assert (mnt / "F.TXT").stat().st_mtime == t
    m.unmount()


def test_chmod_maps_to_the_read_only_attribute(fatvol):
    v = fatvol(fat=16, size="16M")
    p = v.path / "f"
    p.write_text("x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o755  # umask 022 of the mounting root
    os.chmod(p, 0o555)
    assert stat.S_IMODE(p.stat().st_mode) == 0o555
    assert os.getxattr(p, "user.fat.attributes") == b"readonly,archive"
    os.chmod(p, 0o700)  # r/x cannot change on FAT: ignored without error, as Linux vfat
    assert stat.S_IMODE(p.stat().st_mode) == 0o555
    os.chmod(p, 0o755)
    assert stat.S_IMODE(p.stat().st_mode) == 0o755
    with pytest.raises(PermissionError):
        os.chmod(p, 0o4755)  # no set-id bits on FAT
    with pytest.raises(PermissionError):
        os.chown(p, 1234, -1)  # nor owners
    os.chown(p, os.getuid(), os.getgid())  # the owner it already has is fine
    os.chmod(p, 0o555)
    v.check()
    assert "R" in mtools("mattrib", "-i", v.img, "::f").stdout.split("::")[0]


def test_read_only_directories_only_with_rodir(fatvol, rtmp):
    img = make_fat(rtmp / "rd.img", fat=16, size="16M")
    mtools("mmd", "-i", img, "::RO")
    mtools("mattrib", "-i", img, "+r", "::RO")  # a directory with the read-only attribute
    v = fatvol(img=img)
    assert stat.S_IMODE((v.path / "RO").stat().st_mode) == 0o755  # ignored, as Linux vfat
    (v.path / "RO" / "inside").write_text("still writable")
    v.unmount()
    v = fatvol(img=img, opts=("rodir",))
    assert stat.S_IMODE((v.path / "RO").stat().st_mode) == 0o555
    os.chmod(v.path / "RO", 0o755)  # and chmod clears it
    assert stat.S_IMODE((v.path / "RO").stat().st_mode) == 0o755
    (v.path / "RW").mkdir()
    os.chmod(v.path / "RW", 0o555)
    v.check()
    assert "R" in mtools("mattrib", "-i", img, "::RW").stdout.split("::")[0]
    assert "R" not in mtools("mattrib", "-i", img, "::RO").stdout.split("::")[0]


def test_hidden_and_system_as_xattr(fatvol):
    v = fatvol(fat=32)
    p = v.path / "boot.ini"
    p.write_text("x")
    assert os.listxattr(p) == ["user.fat.attributes"]
    os.setxattr(p, "user.fat.attributes", b"hidden,system")
    assert os.getxattr(p, "user.fat.attributes") == b"hidden,system"
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.fat.attributes", b"hidden,bogus")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.other", b"x")
    assert e.value.errno == errno.ENOTSUP
    (v.path / "d").mkdir()
    os.setxattr(v.path / "d", "user.fat.attributes", b"hidden")
    v.check()
    attrs = mtools("mattrib", "-i", v.img, "::boot.ini").stdout.split("::")[0]
    assert "H" in attrs and "S" in attrs and "A" not in attrs
    # and mtools' attributes read back as the xattr
    mtools("mattrib", "-i", v.img, "+a", "-h", "::boot.ini")
    v.start()
    assert os.getxattr(v.path / "boot.ini", "user.fat.attributes") == b"system,archive"
    assert os.getxattr(v.path / "d", "user.fat.attributes") == b"hidden"
    v.check()


def test_noxattr_turns_attributes_off(fatvol):
    v = fatvol(fat=16, size="16M", opts=("noxattr",))
    (v.path / "f").write_text("x")
    for action in [lambda: os.getxattr(v.path / "f", "user.fat.attributes"),
                   lambda: os.setxattr(v.path / "f", "user.fat.attributes", b"hidden"),
                   lambda: os.listxattr(v.path / "f")]:
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno == errno.EOPNOTSUPP
    os.chmod(v.path / "f", 0o555)  # the read-only attribute still works through chmod
    v.check()
    assert "R" in mtools("mattrib", "-i", v.img, "::f").stdout.split("::")[0]


def test_statfs_counts_clusters(fatvol):
    v = fatvol(fat=16, size="128M", cluster_sectors=8)
    sv = os.statvfs(v.path)
    im = Image(v.img)
    assert sv.f_bsize == 4096
    assert sv.f_blocks == im.clusters
    assert sv.f_namemax == 255
    before = sv.f_bfree
    (v.path / "f").write_bytes(b"x" * 10_000)  # 3 clusters of 4 KiB
    assert os.statvfs(v.path).f_bfree == before - 3
    v.check()


def test_full_disk_gives_enospc_and_loses_nothing(fatvol):
    v = fatvol(fat=12, size="1440K")
    (v.path / "keep.txt").write_text("precious")
    r = subprocess.run(["dd", "if=/dev/urandom", f"of={v.path}/filler", "bs=64k",
                        "status=none"], capture_output=True, text=True)
    assert r.returncode != 0 and "No space left on device" in r.stderr
    assert os.statvfs(v.path).f_bfree == 0
    with pytest.raises(OSError) as e:
        (v.path / "newdir").mkdir()
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as e:
        os.truncate(v.path / "keep.txt", 1_000_000)
    assert e.value.errno == errno.ENOSPC
    assert (v.path / "keep.txt").read_text() == "precious"
    size = (v.path / "filler").stat().st_size
    assert size > 1_300_000
    data = (v.path / "filler").read_bytes()
    assert len(data) == size
    v.remount()
    assert (v.path / "filler").read_bytes() == data  # what was written is all there
    os.unlink(v.path / "filler")
    (v.path / "after").write_bytes(b"y" * 500_000)  # space is back
    v.check()


def test_uid_gid_umask_options(fatvol, rtmp):
    img = make_fat(rtmp / "o.img", fat=16, size="16M")
    v = fatvol(img=img, opts=("uid=1234", "gid=567", "umask=027"))
    (v.path / "d").mkdir()
    (v.path / "f").write_text("x")
    for p in (v.path / "d", v.path / "f"):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (1234, 567)
        assert stat.S_IMODE(st.st_mode) == 0o750
    v.unmount()
    v = fatvol(img=img, opts=("dmask=022", "fmask=133"))
    assert stat.S_IMODE((v.path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((v.path / "f").stat().st_mode) == 0o644
    v.unmount()
    v = fatvol(img=img, opts=("showexec",))
    (v.path / "RUN.EXE").write_text("x")
    assert stat.S_IMODE((v.path / "RUN.EXE").stat().st_mode) == 0o755
    assert stat.S_IMODE((v.path / "f").stat().st_mode) == 0o644
    v.check()


def test_inode_numbers_are_stable(fatvol):
    v = fatvol(fat=32)
    (v.path / "dir").mkdir()
    (v.path / "dir" / "file").write_text("x")
    ino_d, ino_f = os.stat(v.path / "dir").st_ino, os.stat(v.path / "dir" / "file").st_ino
    open("/proc/sys/vm/drop_caches", "w").write("2\n")  # the kernel forgets the inodes
    assert os.stat(v.path / "dir").st_ino == ino_d
    assert os.stat(v.path / "dir" / "file").st_ino == ino_f
    os.rename(v.path / "dir" / "file", v.path / "moved")
    os.rename(v.path / "dir", v.path / "dir2")
    open("/proc/sys/vm/drop_caches", "w").write("2\n")
    assert os.stat(v.path / "moved").st_ino == ino_f
    assert os.stat(v.path / "dir2").st_ino == ino_d
    (v.path / "dir2" / "file").write_text("new file where the old one was")
    assert os.stat(v.path / "dir2" / "file").st_ino != ino_f
    inos = [e.inode() for e in os.scandir(v.path)]
    assert sorted(inos) == sorted(os.stat(v.path / n).st_ino for n in os.listdir(v.path))
    v.remount()
    assert os.stat(v.path / "dir2").st_ino == ino_d  # directories: across remounts too
    v.check()


@pytest.mark.parametrize("opts", [(), ("max_threads=4",)], ids=["one-thread", "threads"])
def test_parallel_writers_and_readers(fatvol, opts):
    v = fatvol(fat=32, size="128M", opts=opts)
    blobs = {f"file {i}.bin": os.urandom(1_000_000 + i * 4097) for i in range(8)}
    errors = []

    def writer(name, data):
        try:
            with open(v.path / name, "wb") as f:
                for off in range(0, len(data), 65536):
                    f.write(data[off:off + 65536])
            assert (v.path / name).read_bytes() == data
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=kv) for kv in blobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # and in parallel: readers of every file, a writer creating and deleting next to them
    def reader(name, data):
        try:
            for _ in range(3):
                assert (v.path / name).read_bytes() == data
        except Exception as e:
            errors.append(e)

    def churn():
        try:
            for i in range(100):
                (v.path / f"tmp{i % 7}").write_bytes(os.urandom(5000))
                os.rename(v.path / f"tmp{i % 7}", v.path / f"kept{i % 5}")
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=kv) for kv in blobs.items()]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    v.remount(opts)
    for name, data in blobs.items():
        assert (v.path / name).read_bytes() == data
    v.check()
