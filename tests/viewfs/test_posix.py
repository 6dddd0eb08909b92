"""POSIX as the kernel's own file systems do it, through a cow view over original files: mmap
(shared, writable), O_APPEND, O_DIRECT, fallocate, copy_file_range, SEEK_DATA/SEEK_HOLE,
extended attributes, POSIX and flock locks, unlinked-but-open files, UTIME_NOW/UTIME_OMIT,
255-byte names, setuid cleared on write and chown, umask, and the kernel's errno values."""
import os

import pytest

from viewfs_fixtures import record, view  # noqa: F401


@pytest.fixture
def cow(view):
    view.make({"f": "0123456789", "big": b"\0" * 8192, "d/x": "x"})
    view.mount("cow")
    return view


def test_mmap_shared_writable_of_an_original_file(cow):
    r = cow.py("import mmap\n"
               "fd = os.open(P('f'), os.O_RDWR); m = mmap.mmap(fd, 10); m[0:3] = b'abc';"
               "m.flush(); m.close(); os.close(fd); result = read('f')")
    assert r == "abc3456789"
    assert (cow.layer / "f").read_text() == "abc3456789"
    assert cow.orig("f").read_text() == "0123456789"


def test_o_append_from_two_descriptors(cow):
    r = cow.py("a = os.open(P('f'), os.O_WRONLY | os.O_APPEND);"
               "b = os.open(P('f'), os.O_WRONLY | os.O_APPEND);"
               "os.write(a, b'A'); os.write(b, b'B'); os.write(a, b'C');"
               "os.close(a); os.close(b); result = read('f')")
    assert r == "0123456789ABC"


def test_o_direct_reads_and_writes(cow):
    r = cow.py("import mmap\n"
               "buf = mmap.mmap(-1, 4096); buf.write(b'D' * 4096)\n"
               "fd = os.open(P('big'), os.O_RDWR | os.O_DIRECT)\n"
               "w = os.pwritev(fd, [buf], 4096)\n"
               "rb = mmap.mmap(-1, 4096); n = os.preadv(fd, [rb], 4096)\n"
               "os.close(fd)\n"
               "result = [w, n, rb[:4] == b'DDDD', read('big')[4096:4100]]")
    assert r == [4096, 4096, True, "DDDD"]


def test_fallocate_and_holes(cow):
    """SEEK_DATA never skips data just written (still in the kernel's write-back cache)."""
    r = cow.py("fd = os.open(P('sparse'), os.O_RDWR | os.O_CREAT, 0o644);"
               "os.posix_fallocate(fd, 0, 65536); os.pwrite(fd, b'end', 1 << 20);"
               "data = os.lseek(fd, 70000, os.SEEK_DATA); hole = os.lseek(fd, 1 << 20, os.SEEK_HOLE);"
               "got = os.pread(fd, 3, data if data == 1 << 20 else 1 << 20);"
               "os.close(fd); s = os.stat(P('sparse'));"
               "result = [s.st_size, data <= 1 << 20, hole, got.decode()]")
    assert r == [(1 << 20) + 3, True, (1 << 20) + 3, "end"]


def test_copy_file_range_between_view_files(cow):
    r = cow.py("a = os.open(P('f'), os.O_RDONLY); b = os.open(P('copy'), os.O_WRONLY | os.O_CREAT, 0o644);"
               "n = os.copy_file_range(a, b, 5, 2, 0); os.close(a); os.close(b);"
               "result = [n, read('copy')]")
    assert r == [5, "23456"]


def test_xattrs_list_get_remove(cow):
    r = cow.py("os.setxattr(P('f'), 'user.a', b'1'); os.setxattr(P('f'), 'user.b', b'2');"
               "os.removexattr(P('f'), 'user.a');"
               "result = [sorted(os.listxattr(P('f'))), os.getxattr(P('f'), 'user.b').decode(),"
               " err(os.getxattr, P('f'), 'user.a')]")
    assert r == [["user.b"], "2", "ENODATA"]
    assert os.listxattr(cow.orig("f")) == []


def test_copy_up_keeps_xattrs_mode_times(view):
    view.make({"f": "x"})
    os.setxattr(view.mnt / "f", "user.keep", b"yes")
    os.chmod(view.mnt / "f", 0o751)
    os.utime(view.mnt / "f", (111, 222))
    view.mount("cow")
    r = view.py("append('f', 'y'); s = st('f');"
                "result = [os.getxattr(P('f'), 'user.keep').decode(), s['perm'], s['mtime'] > 222e9]")
    assert r == ["yes", 0o751, True]  # the write itself sets mtime
    up = view.layer / "f"
    assert os.getxattr(up, "user.keep") == b"yes"
    assert up.stat().st_mode & 0o777 == 0o751


def test_copy_up_with_o_trunc_copies_nothing(view):
    """O_TRUNC needs none of the original's content: the user's own file that is write-only
    (0200, unreadable even to its owner) can be opened with O_TRUNC and ends empty, where an
    append, which must copy the content first, gets EACCES."""
    view.make({"f": "old content", "wo": "secret content"})
    os.chmod(view.mnt / "wo", 0o200)
    view.mount("cow")
    r = view.py("fd = os.open(P('f'), os.O_WRONLY | os.O_TRUNC); os.write(fd, b'new');"
                "os.close(fd);"
                "e1 = append('wo', 'x');"
                "e2 = err(lambda: os.close(os.open(P('wo'), os.O_WRONLY | os.O_TRUNC)));"
                "result = [read('f'), e1, e2, st('wo')['size'], st('wo')['perm']]")
    assert r == ["new", "EACCES", None, 0, 0o200]
    assert (view.layer / "f").read_text() == "new"
    assert (view.layer / "wo").read_bytes() == b""
    assert view.orig("wo").read_text() == "secret content"


def test_copy_up_keeps_times(view):
    view.make({"f": "x"})
    os.utime(view.mnt / "f", (1000000, 2000000))
    view.mount("cow")
    r = view.py("os.chmod(P('f'), 0o600); s = os.stat(P('f')); result = [s.st_atime, s.st_mtime]")
    assert r == [1000000, 2000000]


def test_posix_locks_and_flock_between_processes(cow):
    r = cow.py("import fcntl, subprocess, sys\n"
               "fd = os.open(P('f'), os.O_RDWR)\n"
               "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
               "fl = os.open(P('d/x'), os.O_RDONLY)\n"
               "fcntl.flock(fl, fcntl.LOCK_EX)\n"
               "code = ('import fcntl, os, sys\\n'\n"
               "        'fd = os.open(sys.argv[1], os.O_RDWR)\\n'\n"
               "        'try:\\n'\n"
               "        '    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); a = \"got\"\\n'\n"
               "        'except OSError as e: a = e.errno\\n'\n"
               "        'fl = os.open(sys.argv[2], os.O_RDONLY)\\n'\n"
               "        'try:\\n'\n"
               "        '    fcntl.flock(fl, fcntl.LOCK_EX | fcntl.LOCK_NB); b = \"got\"\\n'\n"
               "        'except OSError as e: b = e.errno\\n'\n"
               "        'print(a, b)')\n"
               "out = subprocess.run([sys.executable, '-c', code, P('f'), P('d/x')],"
               " capture_output=True, text=True).stdout.split()\n"
               "result = [errno.errorcode.get(int(x), x) if x.isdigit() else x for x in out]")
    assert r == ["EAGAIN", "EAGAIN"]  # (EWOULDBLOCK is EAGAIN on Linux)


def test_unlinked_open_file_stays_usable(cow):
    r = cow.py("fd = os.open(P('f'), os.O_RDWR); os.unlink(P('f'));"
               "os.pwrite(fd, b'XY', 0); data = os.pread(fd, 20, 0); s = os.fstat(fd);"
               "w = os.open(P('new'), os.O_RDWR | os.O_CREAT, 0o644); os.unlink(P('new'));"
               "os.write(w, b'anon'); s2 = os.fstat(w); d2 = os.pread(w, 10, 0);"
               "os.close(fd); os.close(w);"
               "result = [data.decode(), s.st_nlink, s2.st_nlink, d2.decode(), ls()]")
    assert r == ["XY23456789", 0, 0, "anon", ["big", "d"]]
    leftovers = [p.name for p in cow.layer.rglob("*") if p.name.startswith(".fuse_hidden")]
    assert leftovers == []


def test_utime_now_and_omit(cow):
    r = cow.py("import time\n"
               "os.utime(P('f'), ns=(5 * 10**9, 7 * 10**9)); a = os.stat(P('f'))\n"
               "import ctypes\n"
               "libc = ctypes.CDLL(None, use_errno=True)\n"
               "class TS(ctypes.Structure): _fields_ = [('s', ctypes.c_long), ('ns', ctypes.c_long)]\n"
               "UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2\n"
               "ts = (TS * 2)(TS(0, UTIME_OMIT), TS(0, UTIME_NOW))\n"
               "t0 = time.time(); libc.utimensat(-100, P('f').encode(), ts, 0); b = os.stat(P('f'))\n"
               "ts = (TS * 2)(TS(0, UTIME_NOW), TS(0, UTIME_OMIT))\n"
               "libc.utimensat(-100, P('f').encode(), ts, 0); c = os.stat(P('f'))\n"
               "result = [a.st_atime_ns == 5 * 10**9, b.st_atime_ns == 5 * 10**9,"
               " b.st_mtime >= t0 - 1, c.st_mtime_ns == b.st_mtime_ns, c.st_atime >= t0 - 1]")
    assert r == [True, True, True, True, True]


def test_255_byte_names(view):
    long = "n" * 251 + "0001"
    other = "n" * 251 + "0002"
    view.make({long: "orig\n", other: "other\n"})
    view.mount("cow")
    r = view.py(f"L, O = {long!r}, {other!r}\n"
                "append(L, 'more'); os.chmod(P(O), 0o600);"
                "result = [read(L), st(O)['perm'], write('x' * 256, 'y'),"
                " st(L)['ino'] == os.stat(P(L)).st_ino]")
    assert r == ["orig\nmore", 0o600, "ENAMETOOLONG", True]
    ino = view.py(f"result = st({long!r})['ino']")
    assert ino == view.orig(long).stat().st_ino  # the record of a 255-byte name works
    view.remount("cow")
    assert view.py(f"result = [st({long!r})['ino'], read({long!r})]") == [ino, "orig\nmore"]
    r = view.py("result = err(os.open, P('x' * 256), os.O_CREAT | os.O_WRONLY, 0o644)")
    assert r == "ENAMETOOLONG"


def test_setuid_cleared_on_write_and_chown(view):
    """In move mode the layer's files are real: the real file system clears the bits."""
    view.mount("move")
    r = view.py("write('s', 'x'); os.chmod(P('s'), 0o6755); a = st('s')['perm'];"
                "append('s', 'y'); b = st('s')['perm'];"
                "os.chmod(P('s'), 0o4755); os.chown(P('s'), os.getuid(), os.getgid());"
                "c = st('s')['perm']; result = [a, b, c]")
    assert r == [0o6755, 0o755, 0o755]


def test_umask_is_applied(cow):
    r = cow.py("os.umask(0o027); write('u', 'x'); os.mkdir(P('ud'), 0o777);"
               "result = [st('u')['perm'], st('ud')['perm']]")
    assert r == [0o640, 0o750]


def test_kernel_errno_values(cow):
    r = cow.py("result = [err(os.rmdir, P('d')), err(os.unlink, P('d')), err(os.mkdir, P('f')),"
               " err(os.rmdir, P('f')), err(os.open, P('f/x'), os.O_RDONLY),"
               " err(os.open, P('f'), os.O_CREAT | os.O_EXCL | os.O_WRONLY),"
               " err(os.rename, P('d'), P('d/x/y')), err(os.link, P('d'), P('dl')),"
               " err(os.readlink, P('f')), err(os.open, P('nothere'), os.O_RDONLY)]")
    assert r == ["ENOTEMPTY", "EISDIR", "EEXIST", "ENOTDIR", "ENOTDIR", "EEXIST", "ENOTDIR",
                 "EPERM", "EINVAL", "ENOENT"]


def test_layer_holds_no_temporary_files_after_work(cow):
    cow.py("for i in range(30): append('f', str(i)); os.chmod(P('big'), 0o600)\n"
           "os.rename(P('d'), P('d2')); os.unlink(P('big'))")
    work = cow.layer / ".-" / ".-"
    assert list(work.iterdir()) == []
    assert record(cow.layer, "f")["ino"]


def test_syncfs_after_deleting_written_files(cow):
    """The kernel writes back the times of files written through the cache even after they
    were deleted: the daemon keeps deleted files it knows by fd, so sync succeeds."""
    r = cow.py("for i in range(20): write(f'w{i}', 'data' * 100)\n"
               "for i in range(20): os.unlink(P(f'w{i}'))\n"
               "fd = os.open(M, os.O_RDONLY); os.sync(); import ctypes\n"
               "libc = ctypes.CDLL(None, use_errno=True)\n"
               "result = [libc.syncfs(fd), ctypes.get_errno()]; os.close(fd)")
    assert r == [0, 0]


def test_reader_open_before_copy_up_sees_the_new_data(cow):
    """A file open for reading when another descriptor's write copies it up reads the copy
    (no mix of original and new data)."""
    r = cow.py("fd = os.open(P('f'), os.O_RDONLY); a = os.pread(fd, 10, 0)\n"
               "w = os.open(P('f'), os.O_WRONLY); os.pwrite(w, b'NEW', 0); os.close(w)\n"
               "import mmap\n"
               "b = os.pread(fd, 10, 0); os.close(fd)\n"
               "result = [a.decode(), b.decode()]")
    assert r == ["0123456789", "NEW3456789"]


def test_direct_reader_open_before_copy_up_sees_the_new_data(cow):
    """The same with O_DIRECT, which bypasses the kernel's cache: the daemon itself must have
    moved the open reader to the copy."""
    r = cow.py("import mmap\n"
               "fd = os.open(P('big'), os.O_RDONLY | os.O_DIRECT)\n"
               "w = os.open(P('big'), os.O_WRONLY); os.pwrite(w, b'NEW', 0); os.fsync(w); os.close(w)\n"
               "buf = mmap.mmap(-1, 4096); os.preadv(fd, [buf], 0); os.close(fd)\n"
               "result = buf[:3].decode()")
    assert r == "NEW"


def test_read_only_directory_in_cow_still_takes_copies(view):
    """chmod 555 of a directory in the view, then an edit of an original file in it: the
    copy-up must not fail on the layer's directory (the view's mode is in the record)."""
    view.make({"d/f": "orig\n"})
    view.mount("cow")
    r = view.py("os.chmod(P('d'), 0o555); e = append('d/f', 'x');"
                "result = [e, read('d/f'), st('d')['perm']]")
    assert r == [None, "orig\nx", 0o555]
    assert (view.layer / "d").stat().st_mode & 0o700 == 0o700
