"""Helpers shared by the umfuse-iso9660 tests: making images with xorriso, mounting them, and
describing a tree (mounted or not) so that two trees can be compared field by field.

The oracles are the source tree the image was made from and libarchive (bsdtar), which reads
ISO 9660, Rock Ridge, Joliet and zisofs with code that has nothing in common with ours."""
import hashlib
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

from conftest import make_tree, run

DAEMON = "umfuse-iso9660"


def mkisofs(iso, src, *args):
    """xorriso -as mkisofs ARGS -o ISO SRC (the way most images are made)."""
    run(["xorriso", "-as", "mkisofs", "-quiet", *args, "-o", iso, src])
    return Path(iso)


def xorriso(*args):
    """xorriso in its own command language (zisofs filters, sessions)."""
    return run(["xorriso", "-abort_on", "FAILURE", *args])


def mount_iso(mounts, iso, mnt, *opts, user=None):
    mnt = Path(mnt)
    if not mnt.exists():
        mnt.mkdir()
        if user is not None:
            user.chown(mnt)
    args = ["-o", ",".join(opts)] if opts else []
    return mounts.start(DAEMON, *args, iso, mnt, mountpoint=mnt, user=user)


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(root, owners=True, times=True, dir_times=True):
    """{relative path: {field: value}} for every object under root: type, permission bits,
    owner, mtime (seconds: what ISO 9660 records), and size + content hash, link target or
    device number as the type has."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            d = {"type": stat.S_IFMT(st.st_mode)}
            if not stat.S_ISLNK(st.st_mode):
                d["perm"] = oct(stat.S_IMODE(st.st_mode))
            if owners:
                d["owner"] = (st.st_uid, st.st_gid)
            if times and (dir_times or not stat.S_ISDIR(st.st_mode)):
                d["mtime"] = int(st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                d["size"] = st.st_size
                d["sha"] = sha(p)
            elif stat.S_ISLNK(st.st_mode):
                d["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                d["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[str(p.relative_to(root))] = d
    return out


def assert_same_tree(expected, actual):
    """Compare two describe() results with a readable message on the first differences."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differ = [(k, expected[k], actual[k]) for k in sorted(set(expected) & set(actual))
              if expected[k] != actual[k]]
    assert not missing and not extra and not differ, (
        f"missing {missing[:5]}, extra {extra[:5]}, differing {differ[:5]}")


def rich_tree(root):
    """The sample tree of the harness (long and UTF-8 names, symlinks, a hard link) plus what
    Rock Ridge has to carry: device nodes, a FIFO, a socket, owners and set-id bits, old and
    far-future times, symlinks of every shape, and directories 12 levels deep. Needs root."""
    root = Path(root)
    make_tree(root, nfiles=120, seed=8)
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "sda1", 0o660 | stat.S_IFBLK, os.makedev(8, 1))
    os.mknod(root / "bigdev", 0o600 | stat.S_IFCHR, os.makedev(259, 65537))
    os.mkfifo(root / "fifo", 0o640)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "socket"))
    deep = root / "deep"
    p = deep
    for i in range(12):
        p = p / f"level{i:02d}"
    p.mkdir(parents=True)
    (p / "bottom.txt").write_text("at the bottom\n")
    (root / "owned").write_bytes(b"owned by someone else\n")
    os.chown(root / "owned", 1234, 5678)
    (root / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "setuid", 0o4755)
    (root / "private").write_bytes(b"secret\n")
    os.chmod(root / "private", 0o600)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    (root / "empty-dir").mkdir()
    (root / "empty-file").write_bytes(b"")
    (root / "name with spaces; and;semicolons").write_bytes(b"x")
    (root / ".hidden").write_bytes(b"dotfile")
    (root / "link-abs").symlink_to("/usr/share/doc")
    (root / "link-dots").symlink_to("./a/../../b/./c")
    (root / "link-dir").symlink_to("deep/level00")
    old = root / "old"
    old.write_bytes(b"1985")
    os.utime(old, (489024000, 489024000))          # 1985-07-01
    future = root / "future"
    future.write_bytes(b"2099")
    os.utime(future, (4089312000, 4089312000))     # 2099-08-02
    # directory times last: creating entries changed them
    for dirpath, dirnames, _ in os.walk(root, topdown=False):
        for d in dirnames:
            os.utime(Path(dirpath) / d, (1600000000, 1600000000))
    return root


# ---------------------------------------------------------------- bsdtar, the independent oracle

LISTING = re.compile(r"^(?P<mode>\S{10})\s+(?P<nlink>\d+)\s+(?P<uid>\S+)\s+(?P<gid>\S+)\s+"
                     r"(?P<size>\d+(?:,\d+)?)\s+(?P<date>\w{3} [ \d]\d (?: \d{4}|\d\d:\d\d)) "
                     r"(?P<name>.*?)(?: -> (?P<target>.*))?$")


def bsdtar_listing(iso):
    """{path: (mode string, uid, gid, size-or-device, target)} from bsdtar -tvf --numeric-owner."""
    out = {}
    text = run(["bsdtar", "-tvf", iso, "--numeric-owner"]).stdout
    for line in text.splitlines():
        m = LISTING.match(line)
        assert m, f"unexpected bsdtar line: {line!r}"
        name = m["name"].rstrip("/")
        mode = m["mode"]
        size = m["size"] if mode[0] in "-cb" else None
        if " link to " in name:
            # a hard link: bsdtar lists it like tar does, with size 0 and the other name
            name = name.split(" link to ")[0]
            size = "hardlink"
        if name in (".", ""):
            continue
        out[name] = (mode, int(m["uid"]), int(m["gid"]), size, m["target"])
    return out


def mount_listing(root):
    """The same view of a mounted tree as bsdtar_listing gives of the image."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            mode = stat.filemode(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                size = str(st.st_size)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                size = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            else:
                size = None
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[str(p.relative_to(root))] = (mode, st.st_uid, st.st_gid, size, target)
    return out


def wait_for(cond, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def daemon_alive(m):
    return m.proc is not None and m.proc.poll() is None


def errno_of(fn, *args):
    """The errno an os call fails with, or None when it succeeds."""
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return None


def image_unchanged_guard(iso):
    """Hash of the image, to check afterwards that nothing wrote to it."""
    return sha(iso)


def subprocess_with_timeout(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
