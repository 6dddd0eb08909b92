"""POSIX behaviour of umfuse-ext2 as the kernel's ext4 shows it: unlinked-but-open files, link
counts and ctime at once, utimensat with UTIME_NOW/UTIME_OMIT and nanoseconds, 255-byte
names, the errno values of the usual mistakes, the rename matrix (RENAME_NOREPLACE and
RENAME_EXCHANGE too), fast and slow symlinks, device nodes, FIFOs and sockets, owners above
65535, truncate, holes and SEEK_DATA/SEEK_HOLE, files over 4 GiB, fallocate and punch hole,
statfs against dumpe2fs and the kernel. Every test ends with e2fsck -fn clean."""
import ctypes
import errno
import os
import socket
import stat
import subprocess
import time

import pytest

from conftest import run
from e2lib import as_user, assert_clean, dumpe2fs, ext2, uext2  # noqa: F401

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(old))


def raises_errno(code, fn, *args):
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == code, f"{fn.__name__}{args}: {ei.value}"


@pytest.fixture(params=["default", "writeback"])
def fs(ext2, request):
    """A fresh ext4 image mounted read-write (also with the kernel's writeback cache, -o
    writeback); checked with e2fsck after the test."""
    img = ext2.image("ext4-4k", size="128M")
    m = ext2.mount(img, *(["writeback"] if request.param == "writeback" else []))
    yield m
    m.unmount()
    assert_clean(img)


def test_unlinked_open_file_stays_usable_and_is_freed_on_close(fs):
    before = os.statvfs(fs.path)
    f = open(fs.path / "f", "w+b")
    f.write(b"x" * 300_000)
    f.flush()
    os.fsync(f.fileno())  # with -o writeback the data would otherwise wait in the kernel
    os.unlink(fs.path / "f")
    assert os.listdir(fs.path) == ["lost+found"]  # no .fuse_hidden file
    assert os.fstat(f.fileno()).st_nlink == 0
    f.seek(0)
    assert f.read() == b"x" * 300_000
    f.write(b"more")  # still writable
    f.flush()
    os.fsync(f.fileno())
    assert os.fstat(f.fileno()).st_size == 300_004
    during = os.statvfs(fs.path)
    assert during.f_bfree < before.f_bfree  # its blocks are still in use
    f.close()
    # the kernel sends FORGET after the last close, which another daemon thread may still be
    # handling when statfs is answered: wait for it (the bound only catches a hang)
    deadline = time.monotonic() + 60
    while os.statvfs(fs.path).f_bfree != before.f_bfree:
        assert time.monotonic() < deadline, "the blocks of the closed file were never freed"
        time.sleep(0.05)
    assert os.statvfs(fs.path).f_ffree == before.f_ffree


def test_unlinked_open_directory_and_cwd(fs):
    d = fs.path / "d"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY)
    os.rmdir(d)
    assert os.fstat(fd).st_nlink == 0
    assert os.listdir(f"/proc/self/fd/{fd}") == []
    raises_errno(errno.ENOENT, os.open, f"/proc/self/fd/{fd}/new", os.O_CREAT | os.O_WRONLY)
    os.close(fd)


def test_link_counts_and_ctime_change_at_once(fs):
    a = fs.path / "a"
    a.write_text("a")
    st0 = os.stat(a)
    time.sleep(0.01)
    os.link(a, fs.path / "b")
    st1 = os.stat(a)
    assert st1.st_nlink == 2 and st1.st_ctime_ns > st0.st_ctime_ns
    root0 = os.stat(fs.path)
    os.mkdir(fs.path / "sub")
    root1 = os.stat(fs.path)
    assert root1.st_nlink == root0.st_nlink + 1
    assert root1.st_mtime_ns > root0.st_mtime_ns and root1.st_ctime_ns >= root1.st_mtime_ns
    assert os.stat(fs.path / "sub").st_nlink == 2
    time.sleep(0.01)
    os.unlink(fs.path / "b")
    st2 = os.stat(a)
    assert st2.st_nlink == 1 and st2.st_ctime_ns > st1.st_ctime_ns
    os.rmdir(fs.path / "sub")
    assert os.stat(fs.path).st_nlink == root0.st_nlink
    time.sleep(0.01)
    os.chmod(a, 0o600)
    assert os.stat(a).st_ctime_ns > st2.st_ctime_ns


def test_utimensat_now_omit_and_nanoseconds(fs):
    p = fs.path / "t"
    p.write_text("t")
    os.utime(p, ns=(1_111_111_111_123_456_789, 1_222_222_222_987_654_321))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_111_111_111_123_456_789,
                                                1_222_222_222_987_654_321)
    t0 = time.time_ns()
    run(["touch", "-a", p])  # atime := now (the daemon's clock), mtime: UTIME_OMIT
    t1 = time.time_ns()
    st2 = os.stat(p)
    assert st2.st_mtime_ns == 1_222_222_222_987_654_321
    assert t0 <= st2.st_atime_ns <= t1
    run(["touch", "-m", "-d", "2001-02-03 04:05:06.700000008", p])  # atime: UTIME_OMIT
    st3 = os.stat(p)
    assert st3.st_atime_ns == st2.st_atime_ns
    assert st3.st_mtime_ns % 10**9 == 700000008
    # times beyond 2038 (the extra epoch bits) and before 1970
    os.utime(p, ns=(-1_000_000_000_000_000_001, 4_102_444_800_000_000_001))
    st4 = os.stat(p)
    assert (st4.st_atime_ns, st4.st_mtime_ns) == (-1_000_000_000_000_000_001,
                                                  4_102_444_800_000_000_001)


def test_times_survive_remount_to_the_nanosecond(ext2):
    img = ext2.image("ext4-1k-nojournal")
    m = ext2.mount(img)
    os.mkdir(m.path / "d")
    os.utime(m.path / "d", ns=(1_500_000_000_000_000_001, 1_600_000_000_999_999_999))
    m.unmount()
    assert_clean(img)
    m = ext2.mount(img, "ro")
    st = os.stat(m.path / "d")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_500_000_000_000_000_001,
                                                1_600_000_000_999_999_999)


def test_small_inodes_keep_whole_seconds(ext2):
    img = ext2.image("ext2-1k", extra=("-I", "128"))
    assert dumpe2fs(img)["Inode size"] == "128"
    m = ext2.mount(img)
    p = m.path / "f"
    p.write_text("x")
    os.utime(p, ns=(1_500_000_000_123_456_789, 1_600_000_000_123_456_789))
    assert os.stat(p).st_mtime_ns == 1_600_000_000_000_000_000
    m.unmount()
    assert_clean(img)


def test_names_of_255_bytes_and_not_256(fs):
    long = "n" * 255
    (fs.path / long).write_text("ok")
    utf8 = "é" * 127 + "x"  # 255 bytes
    assert len(utf8.encode()) == 255
    (fs.path / utf8).mkdir()
    assert sorted(os.listdir(fs.path)) == sorted(["lost+found", long, utf8])
    raises_errno(errno.ENAMETOOLONG, open, fs.path / ("n" * 256), "w")
    raises_errno(errno.ENAMETOOLONG, os.stat, fs.path / ("n" * 256))
    raises_errno(errno.ENAMETOOLONG, os.mkdir, fs.path / ("é" * 128))


def test_errno_values_of_the_usual_mistakes(fs):
    p = fs.path
    (p / "d").mkdir()
    (p / "d" / "x").write_text("x")
    (p / "f").write_text("f")
    (p / "e").mkdir()
    raises_errno(errno.EEXIST, os.mkdir, p / "d")
    raises_errno(errno.EEXIST, os.symlink, "t", p / "f")
    raises_errno(errno.EEXIST, os.link, p / "f", p / "d")
    raises_errno(errno.ENOTEMPTY, os.rmdir, p / "d")
    raises_errno(errno.EISDIR, os.unlink, p / "d")
    raises_errno(errno.ENOTDIR, os.rmdir, p / "f")
    raises_errno(errno.ENOENT, os.stat, p / "missing")
    raises_errno(errno.ENOTDIR, os.stat, p / "f" / "x")
    raises_errno(errno.EPERM, os.link, p / "d", p / "dlink")
    raises_errno(errno.ENOTDIR, os.rename, p / "e", p / "f")
    raises_errno(errno.EISDIR, os.rename, p / "f", p / "e")
    raises_errno(errno.ENOTEMPTY, os.rename, p / "e", p / "d")
    raises_errno(errno.EINVAL, os.rename, p / "d", p / "d" / "inside")
    raises_errno(errno.EINVAL, os.readlink, p / "f")
    raises_errno(errno.EISDIR, open, p / "d", "w")


def rename_matrix(p):
    for d in ["a", "b", "b/deep"]:
        (p / d).mkdir()
    (p / "a" / "f1").write_text("one")
    (p / "a" / "f2").write_text("two")
    (p / "b" / "g").write_text("gee")
    (p / "a" / "sub").mkdir()
    (p / "a" / "sub" / "inner").write_text("in")
    nl = lambda q: os.stat(p / q).st_nlink  # noqa: E731

    # a file to a new name in the same directory, and across directories
    os.rename(p / "a" / "f1", p / "a" / "f1-renamed")
    os.rename(p / "a" / "f1-renamed", p / "b" / "f1")
    assert (p / "b" / "f1").read_text() == "one"
    # over an existing file: the old one is gone, its space freed
    ino_g = os.stat(p / "b" / "g").st_ino
    os.rename(p / "b" / "f1", p / "b" / "g")
    assert (p / "b" / "g").read_text() == "one" and os.stat(p / "b" / "g").st_ino != ino_g
    assert not (p / "b" / "f1").exists()
    # a directory across directories: ".." follows, link counts move
    a0, b0 = nl("a"), nl("b")
    os.rename(p / "a" / "sub", p / "b" / "sub")
    assert (nl("a"), nl("b")) == (a0 - 1, b0 + 1)
    assert (p / "b" / "sub" / "inner").read_text() == "in"
    assert os.stat(p / "b" / "sub" / "..").st_ino == os.stat(p / "b").st_ino
    # a directory over an empty one
    (p / "a" / "empty").mkdir()
    a1, b1 = nl("a"), nl("b")
    os.rename(p / "b" / "deep", p / "a" / "empty")
    assert (nl("a"), nl("b")) == (a1, b1 - 1)
    # RENAME_NOREPLACE
    raises_errno(errno.EEXIST, renameat2, p / "a" / "f2", p / "b" / "g", RENAME_NOREPLACE)
    renameat2(p / "a" / "f2", p / "b" / "f2", RENAME_NOREPLACE)
    assert (p / "b" / "f2").read_text() == "two"
    # RENAME_EXCHANGE of a file and a directory in different directories
    a2, b2 = nl("a"), nl("b")
    renameat2(p / "b" / "f2", p / "a" / "empty", RENAME_EXCHANGE)
    assert (p / "a" / "empty").read_text() == "two"
    assert (p / "b" / "f2").is_dir()
    assert os.stat(p / "b" / "f2" / "..").st_ino == os.stat(p / "b").st_ino
    assert (nl("a"), nl("b")) == (a2 - 1, b2 + 1)
    raises_errno(errno.ENOENT, renameat2, p / "b" / "g", p / "b" / "nothing", RENAME_EXCHANGE)
    # RENAME_EXCHANGE of two directories in different directories: each ".." follows
    (p / "a" / "x").mkdir()
    (p / "a" / "x" / "in-x").write_text("x")
    (p / "b" / "y").mkdir()
    (p / "b" / "y" / "sub-of-y").mkdir()
    ino_x, ino_y = os.stat(p / "a" / "x").st_ino, os.stat(p / "b" / "y").st_ino
    a3, b3 = nl("a"), nl("b")
    renameat2(p / "a" / "x", p / "b" / "y", RENAME_EXCHANGE)
    assert os.stat(p / "b" / "y").st_ino == ino_x and os.stat(p / "a" / "x").st_ino == ino_y
    assert (p / "b" / "y" / "in-x").read_text() == "x"
    assert (p / "a" / "x" / "sub-of-y").is_dir()
    assert os.stat(p / "b" / "y" / "..").st_ino == os.stat(p / "b").st_ino
    assert os.stat(p / "a" / "x" / "..").st_ino == os.stat(p / "a").st_ino
    assert (nl("a"), nl("b")) == (a3, b3)
    assert nl("a/x") == 3 and nl("b/y") == 2
    # two names of one inode: nothing happens
    os.link(p / "b" / "g", p / "b" / "g2")
    os.rename(p / "b" / "g", p / "b" / "g2")
    assert (p / "b" / "g").exists() and os.stat(p / "b" / "g").st_nlink == 2


def test_rename_matrix(fs):
    rename_matrix(fs.path)


def test_rename_matrix_as_an_unprivileged_user(uext2, user):
    img = uext2.image("ext4-4k", owner=user)
    m = uext2.mount(img, user=user)
    as_user(user, rename_matrix, m.path)
    m.unmount()
    assert_clean(img)


def test_symlinks_fast_and_slow(ext2):
    for kind, limit in [("ext4-4k", 4095), ("ext2-1k", 1023)]:
        img = ext2.image(kind)
        m = ext2.mount(img)
        targets = {f"l{n}": ("t" * (n - 1) + "/")[:n] for n in [1, 59, 60, 61, 500, limit]}
        for name, t in targets.items():
            os.symlink(t, m.path / name)
        raises_errno(errno.ENAMETOOLONG, os.symlink, "x" * (limit + 1), m.path / "toolong")
        for name, t in targets.items():
            assert os.readlink(m.path / name) == t
            assert os.lstat(m.path / name).st_size == len(t)
        m.unmount()
        assert_clean(img)
        m = ext2.mount(img, "ro")
        for name, t in targets.items():
            assert os.readlink(m.path / name) == t
        m.unmount()


def test_device_nodes_fifos_sockets_and_big_ids(ext2, rtmp):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    p = m.path
    os.mknod(p / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(p / "loop", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mknod(p / "big", 0o600 | stat.S_IFCHR, os.makedev(300, 70000))
    os.mkfifo(p / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p / "sock"))
    s.close()
    (p / "owned").write_text("o")
    os.chown(p / "owned", 70001, 123456)
    expect = {"null": (stat.S_IFCHR, os.makedev(1, 3)), "loop": (stat.S_IFBLK, os.makedev(7, 0)),
              "big": (stat.S_IFCHR, os.makedev(300, 70000)), "fifo": (stat.S_IFIFO, 0),
              "sock": (stat.S_IFSOCK, 0)}

    def check(root):
        for name, (fmt, rdev) in expect.items():
            st = os.lstat(root / name)
            assert stat.S_IFMT(st.st_mode) == fmt, name
            assert st.st_rdev == rdev, name
        st = os.stat(root / "owned")
        assert (st.st_uid, st.st_gid) == (70001, 123456)

    check(p)
    raises_errno(errno.EACCES, open, p / "null", "wb")  # FUSE mounts are nodev by default
    m.unmount()
    assert_clean(img)
    kmnt = rtmp / "k"
    kmnt.mkdir()
    run(["mount", "-o", "loop,ro", img, kmnt])
    try:
        check(kmnt)
    finally:
        run(["umount", kmnt])


def test_truncate_shrink_then_grow_reads_zeros(fs):
    p = fs.path / "t"
    p.write_bytes(b"A" * 10000)
    os.truncate(p, 5000)
    os.truncate(p, 20000)
    data = p.read_bytes()
    assert data == b"A" * 5000 + b"\0" * 15000
    with open(p, "r+b") as f:  # O_TRUNC through open
        pass
    with open(p, "wb") as f:
        f.write(b"new")
    assert p.read_bytes() == b"new"
    with open(p, "ab") as f:  # O_APPEND
        f.write(b"+more")
    assert p.read_bytes() == b"new+more"


def test_holes_seek_data_seek_hole_and_a_file_over_4_gib(ext2, rtmp):
    img = ext2.image("ext4-4k", size="128M")
    m = ext2.mount(img)
    p = m.path / "sparse"
    five_g = 5 << 30
    with open(p, "wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(five_g)
        f.write(b"tail")

    def check(path):
        with open(path, "rb") as f:
            fd = f.fileno()
            assert os.fstat(fd).st_size == five_g + 4
            assert os.fstat(fd).st_blocks * 512 < 1 << 20  # holes take no space
            assert os.lseek(fd, 0, os.SEEK_DATA) == 0
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 4096
            assert os.lseek(fd, 4096, os.SEEK_DATA) == 1 << 20
            assert os.lseek(fd, (1 << 20) + 10, os.SEEK_HOLE) == (1 << 20) + 4096
            assert os.lseek(fd, (1 << 20) + 4096, os.SEEK_DATA) == five_g
            assert os.lseek(fd, five_g, os.SEEK_HOLE) == five_g + 4
            with pytest.raises(OSError) as ei:
                os.lseek(fd, five_g + 4, os.SEEK_DATA)
            assert ei.value.errno == errno.ENXIO
            f.seek(five_g - 2)
            assert f.read() == b"\0\0tail"
            f.seek(1 << 20)
            assert f.read(6) == b"middle"
            f.seek(3 << 30)
            assert f.read(4096) == b"\0" * 4096

    check(p)
    m.unmount()
    assert_clean(img)
    kmnt = rtmp / "k"
    kmnt.mkdir()
    run(["mount", "-o", "loop,ro", img, kmnt])
    try:
        check(kmnt / "sparse")  # the kernel sees the same holes
    finally:
        run(["umount", kmnt])


def test_large_file_on_block_mapped_ext2(ext2):
    img = ext2.image("ext2-1k", size="64M")
    m = ext2.mount(img)
    p = m.path / "big"
    with open(p, "wb") as f:
        f.write(b"x" * 3000)
        f.seek(5 << 30)  # needs triple-indirect blocks with 1 KiB blocks
        f.write(b"end")
    assert os.stat(p).st_size == (5 << 30) + 3
    with open(p, "rb") as f:
        assert f.read(3000) == b"x" * 3000
        f.seek(5 << 30)
        assert f.read() == b"end"
    os.truncate(p, 100)
    assert p.read_bytes() == b"x" * 100
    m.unmount()
    assert_clean(img)


def fallocate_checks(root):
    p = root / "fa"
    with open(p, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
    st = os.stat(p)
    assert st.st_size == 1 << 20 and st.st_blocks * 512 >= 1 << 20
    assert p.read_bytes() == b"\0" * (1 << 20)
    with open(p, "r+b") as f:
        f.write(b"\xff" * (1 << 20))
    # punch a hole (not block-aligned), keep the size
    run(["fallocate", "-p", "-o", "1000", "-l", "10000", p])
    data = p.read_bytes()
    assert data[:1000] == b"\xff" * 1000
    assert data[1000:11000] == b"\0" * 10000
    assert data[11000:] == b"\xff" * ((1 << 20) - 11000)
    assert os.stat(p).st_blocks * 512 < 1 << 20  # whole blocks went back
    # zero a range past the end: the size grows
    run(["fallocate", "-z", "-o", str((1 << 20) - 100), "-l", "5000", p])
    data = p.read_bytes()
    assert len(data) == (1 << 20) + 4900
    assert data[-5000:] == b"\0" * 5000 and data[(1 << 20) - 101] == 0xff
    # keep-size preallocation past the end
    run(["fallocate", "-n", "-o", str(4 << 20), "-l", str(1 << 20), p])
    assert os.stat(p).st_size == (1 << 20) + 4900


def test_fallocate_punch_hole_and_zero_range(fs):
    fallocate_checks(fs.path)


def test_fallocate_punch_hole_and_zero_range_as_an_unprivileged_user(uext2, user):
    img = uext2.image("ext4-4k", owner=user)
    m = uext2.mount(img, user=user)
    as_user(user, fallocate_checks, m.path)
    m.unmount()
    assert_clean(img)


def test_statfs_matches_dumpe2fs_and_the_kernel(ext2, rtmp):
    img = ext2.image("ext4-4k", size="128M")
    m = ext2.mount(img)
    for i in range(50):
        (m.path / f"f{i}").write_bytes(b"z" * (i * 1000))
    st = os.statvfs(m.path)
    m.unmount()
    assert_clean(img)
    d = dumpe2fs(img)
    assert st.f_bfree == int(d["Free blocks"])
    assert st.f_ffree == int(d["Free inodes"])
    assert st.f_files == int(d["Inode count"])
    assert st.f_bsize == int(d["Block size"])
    assert st.f_namemax == 255
    kmnt = rtmp / "k"
    kmnt.mkdir()
    run(["mount", "-o", "loop,ro", img, kmnt])
    try:
        k = os.statvfs(kmnt)
    finally:
        run(["umount", kmnt])
    assert (st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree) == \
        (k.f_blocks, k.f_bfree, k.f_bavail, k.f_files, k.f_ffree)


def test_read_only_mount_refuses_writes_and_leaves_the_image_alone(ext2):
    import hashlib
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    (m.path / "f").write_text("data")
    m.unmount()
    assert_clean(img)
    digest = hashlib.sha256(img.read_bytes()).hexdigest()
    m = ext2.mount(img, "ro")
    assert (m.path / "f").read_text() == "data"
    raises_errno(errno.EROFS, open, m.path / "g", "w")
    raises_errno(errno.EROFS, os.unlink, m.path / "f")
    raises_errno(errno.EROFS, os.chmod, m.path / "f", 0o600)
    m.unmount()
    assert hashlib.sha256(img.read_bytes()).hexdigest() == digest


def test_mmap_writes_reach_the_image(ext2):
    import mmap
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    p = m.path / "mm"
    p.write_bytes(b"\0" * 8192)
    with open(p, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 8192)
        mm[100:105] = b"hello"
        mm.flush()
        mm.close()
    m.unmount()
    assert_clean(img)
    m = ext2.mount(img, "ro")
    assert (m.path / "mm").read_bytes()[100:105] == b"hello"


def test_seek_data_with_the_writeback_cache_never_skips_data(ext2):
    """With -o writeback, data still in the kernel's page cache is invisible to the daemon, so
    SEEK_DATA/SEEK_HOLE fall back to "all data": never a wrong answer, just no holes."""
    img = ext2.image("ext4-4k")
    m = ext2.mount(img, "writeback")
    fd = os.open(m.path / "s", os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, b"x", 1 << 20)
        assert os.lseek(fd, 0, os.SEEK_DATA) <= 1 << 20
        assert os.lseek(fd, 1 << 20, os.SEEK_DATA) == 1 << 20
        assert os.lseek(fd, 1 << 20, os.SEEK_HOLE) == (1 << 20) + 1
    finally:
        os.close(fd)
    m.unmount()
    assert_clean(img)
