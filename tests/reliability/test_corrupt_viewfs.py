"""A corrupted viewfs layer through the real daemon: one real layer, damaged in at least 200 ways
(every kind of damage once or more in the suite; every kind on every record it applies to, and
more random byte flips, with VIEWOS_LONG=1), each mounted with `viewfs -o cow,vstat` by the
unprivileged test user. The layer is the user's to edit, so it is untrusted input.

The layer is made by viewfs itself (docs/viewfs-layer-format.md): a cow,vstat run over a small
original tree, as the user, that copies files up, chmods and chowns (records with owners and
modes, of files, a directory, a symlink, the root and a 255-byte name, whose record name is a
hash), makes device nodes (records with `type` and `rdev`), a FIFO, whiteouts (of files, a
directory, a 255-byte name), an opaque directory, a renamed original directory (a `redirect`
record), a hard link made in the view and a copied-up original hard link (their shared
records and copy in the index of the work area, `.-/.-/index`). The variants are made from what
the layer holds (every record, whiteout and metadata directory found there), so they follow
the format as it grows.

The damage: records replaced by garbage, truncated, empty, larger than 64 KiB, with a NUL,
without '=', with unknown or badly spelled keys, numbers that are not numbers, negative,
overflowing or out of range, types and keys that do not fit the object, `redirect` to `..`, to
`/`, through a symlink, to a file, to itself, to an ancestor; forged inode numbers; random byte
flips; `.-` or `.-/DIR` or the work area `.-/.-` as a file, a FIFO, a symlink to /etc or to a
directory outside (holding records and work files), unreadable, missing; leftovers in the work
area; whiteouts that are directories, FIFOs, sockets or symlinks, or that name what does not
exist; records for names that do not exist and deep `.-` trees of them; objects of the layer
replaced by symlinks pointing outside, by FIFOs, files by directories and back; 255-byte names
and names ending in 0x7F; the index's shared records and copies damaged, the index a file, a
symlink, unreadable; a journal of a rename under way (which viewfs finishes at the mount) that
is garbage, names paths outside, through symlinks, into `.-`, onto itself, a directory into
itself, asks to move the original's file in cow mode, or is a directory, a FIFO, a symlink.

Each variant is a copy of the layer, mounted over the original (4 at a time: three of them
through bind mounts of it, as a layer is tied to its original's inode numbers); the user
then walks the view without ever following a symlink (directory fds, O_NOFOLLOW: lstat, list,
read, readlink of everything, and every path of the undamaged view by name), then makes a few
changes where the damage is (create, chmod, chown, mkdir, unlink: they may fail, they must not
hang or write outside the layer). Asserted for every variant:
  * the daemon refuses with one line `viewfs: what failed: why` naming the layer and a non-zero
    exit, nothing left mounted (a layer that is still valid must mount); or it serves, and
  * every path the damage did not touch shows exactly as before (type, mode, owner, link count,
    size, contents, target, device number, mtime; and in each directory the same untouched
    names); the damaged ones give data or EIO, ENOENT, EINVAL (EACCES where the damage is a
    mode or an owner); a record the format calls corrupt gives EIO for its object; a damage the
    format calls harmless changes nothing at all;
  * nothing outside the original and the layer is ever shown: no listing with /etc's names or
    the names of a directory next to the layer, no file with their contents, no owner that
    only the records in that directory give;
  * no two paths share an inode number unless they did before (a forged `ino` must not make
    another file show this one's data);
  * the original tree and the directory outside are unchanged; the daemon exits 0 after the
    unmount, within bounds (30 s to mount, 30 s for the walk, 30 s for the exit), without a
    sanitizer report.
About 250 variants in the suite (under a minute on two cores), about 1900 with VIEWOS_LONG=1.
"""
import errno
import hashlib
import json
import os
import stat
import sys

CANARY = b"VIEWOS-OUTSIDE-CANARY"
READ_CAP = 1 << 20


# --------------------------------------------------------------------------- run as the user

def _entry(dfd, name, want_fd=False):
    """What one name of a directory fd is, never following a symlink: (entry, dir fd or None)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError as e:
        return ["err", "lstat", e.errno], None
    base = [st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_ino]
    mt = st.st_mtime_ns
    if stat.S_ISDIR(st.st_mode):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=dfd)
        except OSError as e:
            return ["err", "opendir", e.errno], None
        try:
            names = sorted(os.listdir(fd))
        except OSError as e:
            os.close(fd)
            return ["err", "listdir", e.errno], None
        return ["d", *base, names], fd
    if stat.S_ISREG(st.st_mode):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except OSError as e:
            return ["err", "open", e.errno], None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ["err", "changed type", 0], None
            data = b""
            while len(data) < READ_CAP:
                chunk = os.read(fd, READ_CAP - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            return ["err", "read", e.errno], None
        finally:
            os.close(fd)
        leak = CANARY in data or b"root:x:0:0:" in data
        return ["f", *base, mt, st.st_size, hashlib.sha256(data).hexdigest(), leak], None
    if stat.S_ISLNK(st.st_mode):
        try:
            return ["l", *base, mt, os.readlink(name, dir_fd=dfd)], None
        except OSError as e:
            return ["err", "readlink", e.errno], None
    return ["o", *base, mt, st.st_rdev], None


def _open_parent(root_fd, rel):
    """A directory fd for rel's parent, walking component by component without following
    symlinks; (fd, last name) or (None, errno)."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    for p in parts[:-1]:
        try:
            nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
        except OSError as e:
            os.close(fd)
            return None, e.errno
        os.close(fd)
        fd = nfd
    return fd, parts[-1]


def walk(mount, probes, pokes, uid):
    """The view as the user sees it: {rel: entry}, then the changes of `pokes`."""
    out = {}
    try:
        root_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        return {"view": {"": ["err", "root", e.errno]}, "poked": []}
    try:
        st = os.stat(root_fd)
        names = sorted(os.listdir(root_fd))
        out[""] = ["d", st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_ino, names]
    except OSError as e:
        out[""] = ["err", "root", e.errno]
        names = []
    todo = [(os.dup(root_fd), "", names)]
    while todo and len(out) < 5000:
        dfd, rel, names = todo.pop()
        for n in names:
            r = f"{rel}/{n}" if rel else n
            e, fd = _entry(dfd, n)
            out[r] = e
            if fd is not None:
                todo.append((fd, r, e[-1]))
        os.close(dfd)
    for rel in probes:
        if rel in out:
            continue
        fd, last = _open_parent(root_fd, rel)
        if fd is None:
            out[rel] = ["err", "parent", last]
            continue
        e, sub = _entry(fd, last)
        out[rel] = e
        for x in (fd, sub):
            if x is not None:
                os.close(x)
    poked = []
    for rel in pokes:
        fd, last = _open_parent(root_fd, rel) if rel else (os.dup(root_fd), None)
        if fd is None:
            continue
        ops = []
        if last is not None:
            try:
                st = os.stat(last, dir_fd=fd, follow_symlinks=False)
            except OSError:
                st = None
            if st is not None:
                if not stat.S_ISLNK(st.st_mode):
                    ops.append(lambda: os.chmod(last, 0o640, dir_fd=fd))
                ops.append(lambda: os.chown(last, uid, 0, dir_fd=fd, follow_symlinks=False))
                if stat.S_ISDIR(st.st_mode):
                    ops.append(lambda: _poke_in(fd, last))
                ops.append(lambda: (os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(
                    last, dir_fd=fd))
        else:
            ops.append(lambda: _poke_here(fd))
        for op in ops:
            try:
                op()
                poked.append(0)
            except OSError as e:
                poked.append(e.errno)
        os.close(fd)
    os.close(root_fd)
    return {"view": out, "poked": poked}


def _poke_here(dfd):
    fd = os.open("viewfs-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                 dir_fd=dfd)
    os.write(fd, b"probe\n")
    os.close(fd)
    os.mkdir("viewfs-probe-dir", dir_fd=dfd)


def _poke_in(dfd, name):
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
    try:
        _poke_here(fd)
    finally:
        os.close(fd)


def build_layer(mount, uid, gid):
    """The changes that make the layer, made through a cow,vstat view (as the user)."""
    P = lambda rel: os.path.join(mount, rel)  # noqa: E731
    with open(P("README"), "a") as f:                       # copy-up (record: ino)
        f.write("more\n")
    os.chmod(P("data/a.txt"), 0o600)                         # record of an original: mode
    os.chown(P("tools/prog"), 0, 0)                          # owners and setuid, no copy-up
    os.chmod(P("tools/prog"), 0o4755)
    os.chown(P("link-rel"), 0, 0, follow_symlinks=False)     # a symlink's record
    for name, dev in (("devnull", "c 1 3"), ("blk", "b 8 0")):  # device nodes: type, rdev
        open(P(name), "w").close()
        os.setxattr(P(name), "user.viewfs.mknod", dev.encode())
    os.mkfifo(P("fifo"))
    os.unlink(P("victim.txt"))                               # whiteouts
    os.unlink(P("data/sub/c.txt"))
    os.unlink(P("M" * 255))
    for n in os.listdir(P("gone")):                          # an opaque directory
        os.unlink(P(f"gone/{n}"))
    os.rmdir(P("gone"))
    os.mkdir(P("gone"))
    with open(P("gone/new.txt"), "w") as f:
        f.write("new\n")
    os.rename(P("olddir"), P("newdir"))                      # redirect (and a whiteout)
    with open(P("data/b.bin"), "ab") as f:                   # a hard link in the layer
        f.write(b"+")
    os.link(P("data/b.bin"), P("data/b-link"))
    with open(P("newfile.txt"), "w") as f:
        f.write("newfile\n")
    os.makedirs(P("newd/inner"))
    with open(P("newd/inner/i.txt"), "w") as f:
        f.write("inner\n")
    os.chmod(P("L" * 255), 0o700)                            # a hashed record name
    os.symlink("/etc/passwd", P("abs-link"))
    os.mkdir(P("data/sub2"))
    os.chown(P("data/sub2"), 0, 0)                           # a directory's record
    os.chown(mount, uid, 0)                                  # the root's record
    with open(P("hard1"), "a") as f:                         # an original hard link copied up
        f.write("appended through one name\n")


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build_layer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:  # walks, one JSON line of arguments in, one of results out, until stdin ends
        for line in sys.stdin:
            args = json.loads(line)
            print(json.dumps(walk(args["mount"], args["probes"], args["pokes"], args["uid"])),
                  flush=True)
    sys.exit(0)


# --------------------------------------------------------------------------- the test

import ctypes  # noqa: E402
import queue  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from conftest import sanitizer_env, tree_digest, viewos_bin  # noqa: E402
from conftest import mounted_at  # noqa: E402
from relb_util import LONG, in_mountinfo, one_line_refusal  # noqa: E402

ME = os.path.abspath(__file__)
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
SLOTS = 4
MARK = "\x7f"
OPTIONS = "cow,vstat"
ETC_NAMES = {"passwd", "fstab", "os-release", "shadow", "hostname"}
OUTSIDE_NAME = "OUTSIDE-CANARY-entry"
OUTSIDE_ID = 4242  # the owner the records outside the layer give
# errnos a damaged path may give; EACCES too when the damage is a mode or an owner
DAMAGED_ERRNOS = {errno.EIO, errno.ENOENT, errno.EINVAL}


def record_hash(name):
    """The 128-bit FNV-1a hash (hex) that names the record of a 255-byte name."""
    h = (0x6c62272e07bb0142 << 64) | 0x62b821756295c58d
    prime = (1 << 88) | 0x13b
    for b in os.fsencode(name):
        h ^= b
        h = (h * prime) & ((1 << 128) - 1)
    return f"{h:032x}"


def record_file_name(name):
    """The file name of name's record (docs/viewfs-layer-format.md)."""
    if len(os.fsencode(name)) < 255:
        return name + MARK
    return MARK + record_hash(name) + MARK


def view_mounted(path):
    """A FUSE mount is the topmost at path (under it there may be a slot's bind mount)."""
    line = mounted_at(path)
    return line is not None and line.split(" - ")[1].startswith("fuse")


def drop_view(path):
    """Detach the view at path (lazily: a hung daemon's mount too), not what is under it."""
    if view_mounted(path):
        LIBC.umount2(str(path).encode(), 2)  # MNT_DETACH


def give(top, user):
    """chown -R -h to the user (without a process per variant)."""
    os.lchown(top, user.uid, user.gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), user.uid, user.gid)


def parent(rel):
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def under(rel, prefixes):
    """Is rel in one of the subtrees `prefixes` ("" is everything; "/" stands for the root's
    own attributes only, not for what is under it)?"""
    return any(t == "" or (t != "/" and (rel == t or rel.startswith(t + "/")))
               for t in prefixes)


# --------------------------------------------------------------------------- the base

def make_original(root):
    (root / "data/sub").mkdir(parents=True)
    for d in ("docs", "olddir/y", "gone", "tools"):
        (root / d).mkdir(parents=True)
    rnd = random.Random(7)
    files = {"README": b"readme\n", "data/a.txt": b"a\n", "data/b.bin": rnd.randbytes(10000),
             "data/sub/c.txt": b"c\n", "docs/guide.txt": b"guide\n", "docs/old.txt": b"old\n",
             "olddir/x.txt": b"x\n", "olddir/y/z.txt": b"z\n", "gone/q.txt": b"q\n",
             "victim.txt": b"victim\n", "hard1": b"hard\n", "tools/prog": b"#!/bin/sh\n",
             "L" * 255: b"long\n", "M" * 255: b"long too\n"}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.chmod(root / "tools/prog", 0o755)
    os.link(root / "hard1", root / "hard2")
    os.symlink("data/a.txt", root / "link-rel")
    os.symlink("../outside", root / "escape")
    os.utime(root / "README", (1_600_000_000, 1_600_000_000))


def make_outside(root):
    """A directory next to the layer that the user may read and write: nothing of it may ever
    show in a view, nothing in it may change."""
    root.mkdir()
    (root / OUTSIDE_NAME).write_bytes(CANARY + b" file\n")
    (root / "secret.txt").write_bytes(CANARY + b" secret\n")
    for n in ("tmp.1", "tmp.2"):
        (root / n).write_bytes(CANARY + b" work\n")
    meta = root / "meta"
    (meta / "data").mkdir(parents=True)
    # records and a whiteout, should a damaged layer lead viewfs here: their owner is one no
    # view may ever show, and docs/ would vanish
    (meta / ("README" + MARK)).write_bytes(b"uid=%d\ngid=%d\n" % (OUTSIDE_ID, OUTSIDE_ID))
    (meta / "docs").write_bytes(b"")
    (meta / "data" / ("a.txt" + MARK)).write_bytes(b"uid=%d\n" % OUTSIDE_ID)
    (meta / ("gone" + MARK)).write_bytes(b"gid=%d\n" % OUTSIDE_ID)
    (meta / "data" / ("sub2" + MARK)).write_bytes(b"uid=%d\n" % OUTSIDE_ID)
    (meta / ".-").mkdir()
    (meta / ".-" / "tmp.9").write_bytes(CANARY + b" work\n")


class Base:
    """The original, the pristine layer, the outside directory and what the view shows."""

    def __init__(self, top, user):
        self.top, self.user = top, user
        self.orig0 = top / "slots" / "0" / "orig"
        self.layer = top / "layer"
        self.outside = top / "outside"
        self.expected = None  # {rel: entry}
        self.records = {}     # record file (relative to .-) -> view path
        self.whiteouts = {}   # whiteout file (relative to .-) -> view path
        self.metadirs = []    # directories of .- (relative), not the work area
        self.index_copies = {}  # layer copies of original hard links (under .-) -> a view path
        self.extra_meta = []  # other files viewfs keeps under .- (e.g. in the work area)

    def meta_paths(self):
        return set(self.records.values()) | set(self.whiteouts.values()) | set(self.metadirs)

    def kind(self, rel):
        e = self.expected.get(rel)
        return e[0] if e else None

    def links_of(self, rel):
        """rel and every other name of the same file (hard links share a record)."""
        e = self.expected.get(rel)
        if not e or e[0] == "d" or e[0] == "err":
            return {rel}
        return {p for p, x in self.expected.items() if x[0] == e[0] and x[5] == e[5]}


def scan_meta(base):
    """Find the records, whiteouts and metadata directories in the pristine layer, and the view
    path each one stands for."""
    meta = base.layer / ".-"
    for dirpath, dirnames, filenames in os.walk(meta):
        drel = os.path.relpath(dirpath, meta)
        drel = "" if drel == "." else drel
        if drel == ".-" or drel.startswith(".-/"):  # the work area: viewfs's own files
            base.extra_meta += [f"{drel}/{n}" for n in filenames]
            continue
        for d in dirnames:
            if not (drel == "" and d == ".-"):
                base.metadirs.append(f"{drel}/{d}" if drel else d)
        for n in filenames:
            frel = f"{drel}/{n}" if drel else n
            if n.endswith(MARK):
                if n == MARK:
                    base.records[frel] = drel
                    continue
                key = n[:-1]
                if key.startswith(MARK):
                    listing = base.expected.get(drel, ["d"] + [None] * 5 + [[]])[-1]
                    match = [c for c in listing if len(os.fsencode(c)) >= 255
                             and MARK + record_hash(c) == key]
                    assert match, f"no name of {drel!r} hashes to record {n!r}"
                    name = match[0]
                else:
                    name = key
                base.records[frel] = f"{drel}/{name}" if drel else name
            else:
                base.whiteouts[frel] = frel
    # the index of files with several names (docs/viewfs-layer-format.md): a shared record
    # `index/KEY` + 0x7F stands for the names whose record says link=KEY; a copy `index/KEY`
    # for the names of the original file whose number in the view is KEY. Anything else of
    # viewfs's own stays in extra_meta (damaged, it may change anything).
    link_of = {}
    for frel, view in base.records.items():
        for key in re.findall(r"^link=(\w+)$", (meta / frel).read_text(errors="replace"), re.M):
            link_of.setdefault(key, view)
    for frel in list(base.extra_meta):
        d, _, n = frel.rpartition("/")
        if d != ".-/index":
            continue
        if n.endswith(MARK) and n[:-1] in link_of:
            base.records[frel] = link_of[n[:-1]]
            base.extra_meta.remove(frel)
        elif n.isdigit():
            names = [p for p, e in base.expected.items() if e[0] == "f" and e[5] == int(n)]
            if names:
                base.index_copies[frel] = names[0]
                base.extra_meta.remove(frel)


# --------------------------------------------------------------------------- daemons

class StartHang(Exception):
    pass


class Run:
    """One viewfs as the user, in the foreground: started, then stopped or found refusing."""

    def __init__(self, user, layer, mountpoint, logdir):
        self.user, self.layer, self.mountpoint = user, str(layer), str(mountpoint)
        self.log = Path(logdir) / f"viewfs-{threading.get_ident()}-{time.monotonic_ns()}.log"
        self.proc = None

    def start(self, timeout=30):
        argv = self.user.wrap([viewos_bin("viewfs"), "-f", "-o", OPTIONS, self.layer,
                               self.mountpoint])
        self.env = sanitizer_env(self.user.env())
        with open(self.log, "w") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not view_mounted(self.mountpoint):
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise StartHang(f"viewfs did not mount within {timeout}s: {self.output()}")
            time.sleep(0.005)
        return True

    def output(self):
        return self.log.read_text(errors="replace")

    def sanitizer_logs(self):
        """The sanitizer reports this daemon wrote (setpriv execs it: same pid)."""
        logs = []
        for part in self.env["ASAN_OPTIONS"].split(":") + self.env["UBSAN_OPTIONS"].split(":"):
            if part.startswith("log_path="):
                p = Path(part[len("log_path="):])
                logs += [x for x in p.parent.glob(f"{p.name}.{self.proc.pid}*")]
        return logs

    def stop(self, timeout=30):
        """Unmount (umount(2) as root, as `fusermount3 -u` does for the user: the daemon sees
        its session end either way) and wait for the exit status."""
        for _ in range(100):
            if not view_mounted(self.mountpoint):
                break
            if LIBC.umount2(self.mountpoint.encode(), 0) == 0:
                break
            time.sleep(0.05)  # EBUSY: a walker may still be leaving
        else:
            drop_view(self.mountpoint)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return "did not exit within %ds of the unmount" % timeout

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if view_mounted(self.mountpoint):
            drop_view(self.mountpoint)


class Walker:
    """This file run as the user (`walk`): walks of mounts on request (see walk()), one
    process for many walks (a Python start-up per variant would cost more than the walk)."""

    def __init__(self, user):
        self.user = user
        self.proc = None

    def _start(self):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.user.wrap(["/usr/bin/python3", ME, "walk"]),
                                     env=self.user.env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc, lines):
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def walk(self, mount, probes, pokes, timeout, on_hang):
        """The user's walk of a mount; None when it did not finish within timeout seconds
        (on_hang() is called then: it must make the mount's requests fail)."""
        if self.proc is None:
            self._start()
        args = {"mount": str(mount), "probes": probes, "pokes": pokes, "uid": self.user.uid}
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            on_hang()
            self.close()
            return None
        if line is None:
            self.proc.wait()
            self.err.seek(0)
            text = self.err.read().decode(errors="replace")
            self.proc = None
            raise AssertionError(f"the walker failed: {text[-3000:]}")
        return json.loads(line)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --------------------------------------------------------------------------- variants

class Variant:
    """One damaged copy of the layer.
    damage(layer): makes it; touched: view paths (prefixes) the damage may change;
    expect: "any" (served paths: as before where untouched, data or a damaged errno where
    touched), "same" (the layer is still valid and means the same: the whole view is as
    before, and it must mount), "eio" (a corrupt record: eio_path gives EIO);
    perm: the damage may deny access (EACCES allowed where touched)."""

    def __init__(self, name, damage, touched, expect="any", eio_path=None, perm=False):
        self.name, self.damage, self.touched = name, damage, set(touched)
        self.expect, self.eio_path, self.perm = expect, eio_path, perm


def write(path, data, mode=0o644):
    """Replace a file (a new inode: a record shared by hard links is split, not rewritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / "new-tmp"
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def remove(path):
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def make_socket(path):
    """A socket at path (bound at a short name, then moved: sun_path holds 108 bytes)."""
    short = f"/tmp/viewos-tests/s{os.getpid()}.{threading.get_ident()}"
    s = socket.socket(socket.AF_UNIX)
    s.bind(short)
    s.close()
    os.rename(short, path)


# Contents a record parser must refuse whatever the object: EIO for the object.
CORRUPT = {
    "garbage": b"\x8b\xff this is not a record at all \x01\x02\n",
    "nul": b"mode=0644\n\0\n",
    "huge": b"x-pad=" + b"y" * 65600 + b"\n",
    "no-equals": b"mode\n",
    "empty-key": b"=5\n",
    "uppercase-key": b"MODE=0644\n",
    "space-in-key": b"mode =0644\n",
    "cr": b"mode=0644\r\n",
    "mode-not-octal": b"mode=0999\n",
    "mode-hex": b"mode=0x1ff\n",
    "mode-negative": b"mode=-1\n",
    "mode-too-big": b"mode=017777\n",
    "mode-empty": b"mode=\n",
    "mode-too-long": b"mode=" + b"0" * 30 + b"\n",
    "uid-negative": b"uid=-1\n",
    "uid-nobody-change": b"uid=4294967295\n",
    "uid-overflow": b"uid=18446744073709551616\n",
    "gid-fraction": b"gid=1.5\n",
    "gid-space": b"gid= 0\n",
    "rdev-one-number": b"type=c\nrdev=8\n",
    "rdev-three-numbers": b"rdev=1,2,3\n",
    "rdev-negative": b"rdev=-1,0\n",
    "rdev-overflow": b"rdev=4294967296,0\n",
    "ctime-one-number": b"ctime=5\n",
    "ctime-nanoseconds": b"ctime=1,1000000000\n",
    "ctime-negative": b"ctime=-5,0\n",
    "ctime-overflow": b"ctime=9223372036854775808,0\n",
    "ino-zero": b"ino=0\n",
    "ino-overflow": b"ino=18446744073709551616\n",
    "ino-letters": b"ino=abc\n",
    "type-unknown": b"type=x\n",
    "type-directory": b"type=d\n",
    "type-two-letters": b"type=ff\n",
    "type-empty": b"type=\n",
    "opaque-2": b"opaque=2\n",
    "opaque-yes": b"opaque=yes\n",
    "redirect-relative": b"redirect=olddir\n",
    "redirect-root": b"redirect=/\n",
    "redirect-dotdot": b"redirect=/..\n",
    "redirect-climbs": b"redirect=/../../../etc\n",
    "redirect-dot": b"redirect=/./olddir\n",
    "redirect-empty-component": b"redirect=//olddir\n",
    "redirect-trailing-slash": b"redirect=/olddir/\n",
    "redirect-bad-escape": b"redirect=/old\\qdir\n",
    "redirect-cut-escape": b"redirect=/olddir\\\n",
    "redirect-cut-x7f": b"redirect=/a\\x7\n",
    "redirect-long-component": b"redirect=/" + b"a" * 256 + b"\n",
    "redirect-empty": b"redirect=\n",
}

# Contents that parse but say something else (the object shows it, or cannot be reached).
DIFFERENT = {
    "empty": (b"", False),
    "mode-0": (b"mode=0\n", True),
    "mode-7777": (b"mode=07777\n", True),
    "owner-root": (b"uid=0\ngid=0\n", True),
    "owner-max": (b"uid=4294967294\ngid=4294967294\n", True),
    "char-device-max": (b"type=c\nrdev=4294967295,4294967295\n", False),
    "block-no-rdev": (b"type=b\n", False),
    "fifo": (b"type=p\n", False),
    "socket": (b"type=s\n", False),
    "regular-f": (b"type=f\n", False),
    "regular-dash": (b"type=-\n", False),
    "ctime-max": (b"ctime=9223372036854775807,999999999\n", False),
    "ino-max": (b"ino=18446744073709551615\n", False),
    "ino-1": (b"ino=1\n", False),
    "opaque-0": (b"opaque=0\n", False),
    "redirect-escaped": (b"redirect=/old\\x7fdir\\n\\\\\n", False),
    "dev-only": (b"dev=8,1\n", False),
}

# Lines that add nothing for an object (unknown keys are kept, wrong-type keys are ignored).
HARMLESS_FOR = {
    "unknown-keys": (None, b"foo=bar\nx_y-z9=1\nvufs-thing=\x01\x02 \xff\n"),
    "duplicate-lines": (None, "dup"),
    "blank-lines": (None, "blank"),
    "no-final-newline": (None, "nonl"),
    "exactly-64KiB": (None, "max"),
    "device-keys-on-a-directory": ("d", b"type=c\nrdev=1,3\n"),
    "opaque-on-a-non-directory": ("!d", b"opaque=1\n"),
    "redirect-on-a-non-directory": ("!d", b"redirect=/olddir\n"),
    "rdev-without-type": ("!dev", b"rdev=9,9\n"),
}


def harmless_content(old, how):
    if how == "dup":
        return old + old
    if how == "blank":
        return b"\n\n" + old.replace(b"\n", b"\n\n") + b"\n"
    if how == "nonl":
        return old.rstrip(b"\n")
    if how == "max":  # the largest record the format allows (VREC_MAX_SIZE)
        data = old + b"x-pad=" + b"p" * (65536 - len(old) - 7) + b"\n"
        assert len(data) == 65536
        return data
    return old + how


def generate(base):
    """Every variant, in a stable order (a seeded choice of records in the suite)."""
    rnd = random.Random(20240611)
    L = base.layer
    M = ".-"
    out = []
    records = sorted(base.records.items())
    paths_with_meta = base.meta_paths()
    everything = {""}

    def touched_of(view):
        t = set()
        for v in view if isinstance(view, (set, list, tuple)) else [view]:
            t |= base.links_of(v)
        return t

    def rec_damage(frel, data):
        return lambda layer: write(layer / M / frel, data)

    def pairs(kinds, targets):
        """Every (kind, target) with VIEWOS_LONG=1; in the suite every kind once, the targets
        taken in turn from a seeded shuffle (so each is damaged about as often)."""
        kinds, targets = list(kinds), list(targets)
        if LONG:
            return [(k, t) for k in kinds for t in targets]
        order = rnd.sample(targets, len(targets))
        return [(k, order[i % len(order)]) for i, k in enumerate(kinds)]

    # records that must be refused: EIO for their object
    for (kind, data), (frel, view) in pairs(CORRUPT.items(), records):
        out.append(Variant(f"record {kind}: {frel!r}", rec_damage(frel, data),
                           touched_of(view), "eio", eio_path=view))
    # records that parse and mean something else
    for (kind, (data, perm)), (frel, view) in pairs(DIFFERENT.items(), records):
        out.append(Variant(f"record {kind}: {frel!r}", rec_damage(frel, data),
                           touched_of(view), perm=perm))
    # records with lines that change nothing
    for kind, (applies, how) in HARMLESS_FOR.items():
        fits = []
        for frel, view in records:
            k = base.kind(view)
            e = base.expected.get(view)
            is_dev = k == "o" and stat.S_ISCHR(e[1]) or k == "o" and stat.S_ISBLK(e[1])
            if applies is None or (applies == "d" and k == "d") or \
                    (applies == "!d" and k not in ("d", None)) or (applies == "!dev" and k == "f"):
                if not (applies == "!dev" and is_dev):
                    fits.append((frel, view))
        for _, (frel, view) in pairs([kind], fits):
            old = (L / M / frel).read_bytes()
            out.append(Variant(f"record {kind}: {frel!r}",
                               rec_damage(frel, harmless_content(old, how)), set(), "same"))
    # truncated records and flipped bytes
    for frel, view in records:
        old = (L / M / frel).read_bytes()
        cuts = sorted({1, len(old) // 2, len(old) - 1} - {0, len(old)})
        for cut in (cuts if LONG else [rnd.choice(cuts)]):
            out.append(Variant(f"record cut at {cut}: {frel!r}", rec_damage(frel, old[:cut]),
                               touched_of(view), perm=True))
    for i in range(400 if LONG else 16):
        frel, view = rnd.choice(records)
        old = bytearray((L / M / frel).read_bytes())
        for _ in range(rnd.randint(1, 3)):
            pos = rnd.randrange(len(old))
            old[pos] ^= 1 << rnd.randrange(8)
        out.append(Variant(f"record {i} flipped: {frel!r}", rec_damage(frel, bytes(old)),
                           touched_of(view), perm=True))
    # a record that lost its 0x7F (now a whiteout: it hides what the layer does not hold) or
    # got a second one (the record of a name that does not exist)
    def renamed(frel, to):
        return lambda layer: os.rename(layer / M / frel, layer / M / to)

    for how, (frel, view) in pairs(["without", "doubled"],
                                   [(f, v) for f, v in records if not f.startswith(MARK)
                                    and "/" + MARK not in f
                                    and not os.path.lexists(L / M / f[:-1])]):
        to = frel[:-1] if how == "without" else frel + MARK
        out.append(Variant(f"record {frel!r} {how} its 0x7F", renamed(frel, to),
                           touched_of(view)))
    # redirects (the renamed directory's record) that point elsewhere
    redirected = [(f, v) for f, v in records if b"redirect=" in (L / M / f).read_bytes()]
    assert redirected, "the base layer has no redirect record"
    frel, view = redirected[0]
    for target in ["/data", "/newdir", "/escape", "/escape/x", "/link-rel", "/README",
                   "/olddir/y", "/gone", "/docs/../../etc", "/data/sub/../..",
                   "/" + "a" * 255, "/olddir/" + "b/" * 1500 + "c", "/L" + "L" * 254,
                   "/\\x7f", "/victim.txt"]:
        data = b"redirect=" + target.encode() + b"\n"
        out.append(Variant(f"redirect to {target[:40]!r}", rec_damage(frel, data),
                           touched_of(view)))
    # a directory redirected to its ancestor or to itself: no loop can follow
    for d, target in [("data/sub2", "/data"), ("data", "/data"), ("newd/inner", "/"),
                      ("newd", "/newd"), ("gone", "/gone")]:
        f = d + MARK
        out.append(Variant(f"redirect of {d} to {target}",
                           lambda layer, f=f, t=target: write(layer / M / f,
                                                              f"redirect={t}\n".encode()),
                           touched_of(d)))
    # forged inode numbers: another file's, the root's
    files = sorted(p for p, e in base.expected.items() if e[0] == "f")
    for whose, (frel, view) in pairs(["another file's", "the root's"],
                                     [(f, v) for f, v in records if base.kind(v) == "f"]):
        other = "" if whose == "the root's" else \
            rnd.choice([p for p in files if p not in base.links_of(view)])
        ino = base.expected[other][5]
        out.append(Variant(f"ino of {view[:30]!r} forged to {whose} {other[:30]!r}",
                           rec_damage(frel, f"ino={ino}\n".encode()), touched_of(view)))

    # whiteouts
    def wh(frel, fn, same=False):
        view = base.whiteouts[frel]
        return Variant(f"whiteout {frel[:40]!r} {fn.__name__}",
                       lambda layer: fn(layer / M / frel, layer),
                       set() if same else touched_of(view), "same" if same else "any")

    def as_empty_dir(p, layer):
        os.unlink(p)
        p.mkdir()

    def as_dir_with_records(p, layer):
        os.unlink(p)
        p.mkdir()
        (p / ("x" + MARK)).write_bytes(b"\x00garbage")
        (p / "y").write_bytes(b"")

    def as_fifo(p, layer):
        os.unlink(p)
        os.mkfifo(p)

    def as_socket(p, layer):
        os.unlink(p)
        make_socket(p)

    def as_symlink_to_etc(p, layer):
        os.unlink(p)
        os.symlink("/etc/passwd", p)

    def as_symlink_loop(p, layer):
        os.unlink(p)
        os.symlink(p.name, p)

    def removed(p, layer):
        os.unlink(p)

    def with_content(p, layer):  # any regular file is a whiteout
        p.write_bytes(b"\x7fELF" + random.Random(1).randbytes(100_000))

    def unreadable(p, layer):
        os.chmod(p, 0)

    def hard_link(p, layer):  # to another whiteout
        other = next(layer / M / q for q in sorted(base.whiteouts) if layer / M / q != p)
        os.unlink(p)
        os.link(other, p)

    for fn, frel in pairs([as_empty_dir, as_dir_with_records, as_fifo, as_socket,
                           as_symlink_to_etc, as_symlink_loop, removed], sorted(base.whiteouts)):
        out.append(wh(frel, fn))
    for fn, frel in pairs([with_content, unreadable, hard_link], sorted(base.whiteouts)):
        out.append(wh(frel, fn, same=True))

    def add_file(rel, data=b""):
        def f(layer):
            p = layer / M / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return f

    # whiteouts and records for names that do not exist, or that the layer has
    for rel in ["ghost", "data/ghost", "nodir/ghost", "a" + MARK + "b", "...", "newfile.txt",
                "newd/inner/i.txt", "nodir/" + "G" * 255, "\x01\x02"]:
        out.append(Variant(f"whiteout for {rel[:30]!r}", add_file(rel), set(), "same"))
        if rel not in base.expected:  # (a whiteout of what the layer has is harmless too)
            rec = "/".join(filter(None, [parent(rel), record_file_name(rel.rsplit("/", 1)[-1])]))
            out.append(Variant(f"record for {rel[:30]!r}", add_file(rec, b"mode=0777\nuid=0\n"),
                               set(), "same"))
    # whiteouts that hide what exists
    for rel in ["docs", "docs/guide.txt", "L" * 255, "hard1", "escape", "fifo", "newdir"]:
        out.append(Variant(f"new whiteout of {rel[:30]!r}", add_file(rel), touched_of(rel)))
    # a record for the 255-byte name under its plain (too long) name cannot exist; one under
    # a hash that matches nothing means nothing
    out.append(Variant("record under an unknown hash",
                       add_file(MARK + "0" * 32 + MARK, b"mode=0\n"), set(), "same"))

    # metadata directories
    def md(rel, fn, same=False, perm=False):
        return Variant(f"metadata dir {rel!r} {fn.__name__}",
                       lambda layer: fn(layer / M / rel, layer),
                       set() if same else set().union(*(touched_of(p) for p in paths_with_meta
                                                        if under(p, {rel}))) | {rel},
                       "same" if same else "any", perm=perm)

    def md_as_file(p, layer):
        shutil.rmtree(p)
        p.write_bytes(b"")

    def md_as_symlink_to_etc(p, layer):
        shutil.rmtree(p)
        os.symlink("/etc", p)

    def md_as_symlink_outside(p, layer):
        shutil.rmtree(p)
        os.symlink(str(base.outside / "meta"), p)

    def md_as_fifo(p, layer):
        shutil.rmtree(p)
        os.mkfifo(p)

    def md_unreadable(p, layer):
        os.chmod(p, 0)

    def md_emptied(p, layer):
        shutil.rmtree(p)
        p.mkdir()

    def md_deep_ghosts(p, layer):
        q = p
        for i in range(60):
            q = q / f"ghost{i}"
        q.mkdir(parents=True)
        (q / ("g" + MARK)).write_bytes(b"mode=0\n")

    def md_many_ghosts(p, layer):
        for i in range(1500):
            (p / f"ghost-{i:05d}{MARK}").write_bytes(b"uid=0\n")

    for fn, rel in pairs([md_as_file, md_as_symlink_to_etc, md_as_symlink_outside, md_as_fifo,
                          md_emptied], sorted(base.metadirs)):
        out.append(md(rel, fn))
    for fn, rel in pairs([md_unreadable], sorted(base.metadirs)):
        out.append(md(rel, fn, perm=True))
    for fn, rel in pairs([md_deep_ghosts], sorted(base.metadirs)):
        out.append(md(rel, fn, same=True))
    out.append(md("data", md_many_ghosts, same=True))

    # a metadata directory for a name that is a file
    def md_for_a_file(layer):
        (layer / M / "README").mkdir()
        (layer / M / "README" / ("x" + MARK)).write_bytes(b"garbage")
    out.append(Variant("metadata dir for a file", md_for_a_file, set(), "same"))

    # .- itself
    meta_touch = set().union(*(touched_of(p) for p in paths_with_meta if p)) | {"/"}

    def top(name, fn, expect="any", touched=meta_touch, perm=False):
        return Variant(f".- {name}", fn, touched, expect, perm=perm)

    def meta_replace(kind):
        def f(layer):
            shutil.rmtree(layer / M)
            if kind == "file":
                (layer / M).write_bytes(b"")
            elif kind == "fifo":
                os.mkfifo(layer / M)
            elif kind == "socket":
                make_socket(layer / M)
            elif kind == "etc":
                os.symlink("/etc", layer / M)
            elif kind == "outside":
                os.symlink(str(base.outside / "meta"), layer / M)
            elif kind == "relative-outside":
                os.symlink("../outside/meta", layer / M)
            elif kind == "empty":
                (layer / M).mkdir()
        return f

    for kind in ("file", "fifo", "socket", "etc", "outside", "relative-outside", "missing",
                 "empty"):
        out.append(top(kind, meta_replace(kind)))
    out.append(top("unreadable", lambda layer: os.chmod(layer / M, 0), perm=True))
    out.append(top("read-only", lambda layer: os.chmod(layer / M, 0o555), "same", set()))
    out.append(top("not searchable", lambda layer: os.chmod(layer / M, 0o644), perm=True))

    # the work area
    def work(kind):
        def f(layer):
            w = layer / M / M
            if kind == "leftovers":
                (w / "tmp.123.4").write_bytes(b"half a copy")
                (w / "tmp.dir").mkdir()
                (w / "tmp.dir" / "inside").write_bytes(b"x")
                (w / "tmp.empty-dir").mkdir()
                os.symlink(str(base.outside / "secret.txt"), w / "tmp.link")
                os.symlink(str(base.outside), w / "tmp.dirlink")
                os.mkfifo(w / "tmp.fifo")
                make_socket(w / "tmp.sock")
                (w / "other").write_bytes(b"not viewfs's")
                (w / ("tmp." + "t" * 251)).write_bytes(b"")
                (w / "tmp.ro").write_bytes(b"")
                os.chmod(w / "tmp.ro", 0)
            elif kind == "many-leftovers":
                for i in range(2000):
                    (w / f"tmp.{i}").write_bytes(b"")
            else:
                shutil.rmtree(w)
                if kind == "file":
                    w.write_bytes(b"")
                elif kind == "fifo":
                    os.mkfifo(w)
                elif kind == "etc":
                    os.symlink("/etc", w)
                elif kind == "outside":
                    os.symlink(str(base.outside), w)
                elif kind == "dangling":
                    os.symlink("/nonexistent/work", w)
        return f

    for kind in ("leftovers", "many-leftovers"):
        out.append(top(f"work area with {kind}", work(kind), "same", set()))
    for kind in ("file", "fifo", "etc", "outside", "dangling"):
        out.append(top(f"work area is a {kind}", work(kind), touched=everything))
    out.append(top("work area unreadable", lambda layer: os.chmod(layer / M / M, 0),
                   touched=everything, perm=True))
    for i, rel in enumerate(base.extra_meta):
        out.append(Variant(f"viewfs's own file {rel!r} garbage",
                           lambda layer, rel=rel: write(layer / M / rel, b"\xff garbage\n"),
                           everything))

    # the index of files with several names: the copies of original hard links, the directory
    linked = set().union(set(), *(touched_of(v) for f, v in records if f.startswith(".-/index/")),
                         *(touched_of(v) for v in base.index_copies.values()))
    for frel, view in sorted(base.index_copies.items()):
        for name, data in [("garbage", b"\x00\xff not the copy"), ("empty", b"")]:
            out.append(Variant(f"index copy {frel!r} {name}", rec_damage(frel, data),
                               touched_of(view)))
        out.append(Variant(f"index copy {frel!r} a symlink to /etc/passwd",
                           lambda layer, frel=frel: (os.unlink(layer / M / frel),
                                                     os.symlink("/etc/passwd", layer / M / frel)),
                           touched_of(view)))
        out.append(Variant(f"index copy {frel!r} a FIFO",
                           lambda layer, frel=frel: (os.unlink(layer / M / frel),
                                                     os.mkfifo(layer / M / frel)),
                           touched_of(view)))
    if (L / M / M / "index").is_dir():
        index = M + "/" + M + "/index"
        for name, fn in [("a file", lambda p: (shutil.rmtree(p), p.write_bytes(b""))),
                         ("a symlink outside", lambda p: (shutil.rmtree(p),
                                                         os.symlink(str(base.outside / "meta"), p))),
                         ("removed", shutil.rmtree), ("unreadable", lambda p: os.chmod(p, 0))]:
            out.append(Variant(f"index directory {name}",
                               lambda layer, fn=fn: fn(layer / index), linked | {"/"},
                               perm=True))

    # a rename under way (the journal, finished at the next mount): whatever it says, nothing
    # outside the layer may change (cow: not even the original)
    journals = [
        ("garbage", b"\x00\xff\x01 not a journal", set()),
        ("unknown keys", b"foo=bar\n", set()),
        ("from outside", b"rename=/../../outside/secret.txt\nto=/stolen\n", {"stolen"}),
        ("to outside", b"rename=/README\nto=/../../outside/secret.txt\n", {"README"}),
        ("through a symlink", b"rename=/README\nto=/escape/x\nrecord=uid=0\n",
         {"README", "escape"}),
        ("into the metadata", b"rename=/README\nto=/.-/x\n", {"README"}),
        ("a directory with its children", b"rename=/newdir\nto=/moved\nchildren=1\n",
         {"newdir", "moved"}),
        ("a directory into itself", b"rename=/data\nto=/data/sub/in\nchildren=1\n", {"data"}),
        ("onto itself", b"rename=/README\nto=/README\nwhiteout=1\n", {"README"}),
        ("the original's file in cow", b"rename=/docs/guide.txt\nto=/x\n"
         b"original=/docs/guide.txt\n", {"docs/guide.txt", "x"}),
        ("an original outside", b"rename=/README\nto=/x\noriginal=/../../outside/secret.txt\n",
         {"README", "x"}),
        ("a record that escapes", b"rename=/README\nto=/gone/new.txt\n"
         b"record=redirect=/../..\\nmode=0\n", {"README", "gone"}),
        ("bad escapes", b"rename=/REA\\qDME\nto=/x\\\n", set()),
        ("huge", b"rename=/victim.txt\nto=/x\nrecord=" + b"a" * 70000 + b"\n",
         {"victim.txt", "x"}),
        ("names of 255 bytes", b"rename=/" + b"L" * 255 + b"\nto=/" + b"Z" * 255 + b"\n",
         {"L" * 255, "Z" * 255}),
    ]
    jpath = M + "/" + M + "/journal"
    for name, data, named in journals:
        out.append(Variant(f"journal: {name}", rec_damage(jpath, data),
                           touched_of(list(named)) if named else set(), perm=True))
    for name, fn in [("a directory", lambda p: (p.mkdir(), (p / "x").write_bytes(b"x"))),
                     ("a FIFO", os.mkfifo),
                     ("a symlink outside", lambda p: os.symlink(str(base.outside / "tmp.1"), p)),
                     ("a symlink to /etc/passwd", lambda p: os.symlink("/etc/passwd", p))]:
        out.append(Variant(f"journal is {name}", lambda layer, fn=fn: fn(layer / jpath),
                           set()))

    # objects of the layer replaced
    def obj(rel, fn, extra=()):
        return Variant(f"layer object {rel[:30]!r} {fn.__name__}",
                       lambda layer: fn(layer / rel), touched_of(rel) | set(extra))

    def to_symlink_etc(p):
        remove(p)
        os.symlink("/etc/passwd", p)

    def to_symlink_outside(p):
        remove(p)
        os.symlink(os.path.relpath(base.outside, p.parent), p)

    def to_fifo(p):
        remove(p)
        os.mkfifo(p)

    def to_dir(p):
        remove(p)
        p.mkdir()
        (p / "x").write_bytes(b"x")

    def to_file(p):
        remove(p)
        p.write_bytes(b"was something else\n")

    def gone_from_layer(p):
        remove(p)

    def unreadable_obj(p):
        os.chmod(p, 0)

    layer_objs = sorted(p for p in base.expected if p and (L / p).exists() or
                        p and os.path.islink(L / p))
    for rel, fn in pairs(layer_objs, [to_symlink_etc, to_symlink_outside, to_fifo, to_dir,
                                      to_file, gone_from_layer]):
        out.append(obj(rel, fn))
    for rel in ("newd", "gone", "newfile.txt", "data"):
        v = obj(rel, unreadable_obj)
        v.perm = True
        out.append(v)

    # new things in the layer
    def new(rel, fn):
        return Variant(f"new in the layer {rel[:30]!r}", lambda layer: fn(layer / rel), {rel})

    out.append(new("data/evil", lambda p: os.symlink("/etc/shadow", p)))
    out.append(new("evil2", lambda p: os.symlink("../outside/secret.txt", p)))
    out.append(new("evil3", lambda p: os.symlink("/proc/self/root", p)))
    out.append(new("evil-dir", lambda p: os.symlink(str(base.outside), p)))
    out.append(new("N" * 255, lambda p: (p.write_bytes(b"n"),
                                         (p.parent / ".-" / record_file_name(p.name))
                                         .write_bytes(b"mode=0600\n"))))
    out.append(new("name-ends" + MARK, lambda p: p.write_bytes(b"x")))
    out.append(new("data/.-", lambda p: (p.mkdir(), (p / ("a" + MARK)).write_bytes(b"x"))))
    out.append(new("sock", make_socket))
    return out


# --------------------------------------------------------------------------- checking

def strip(e):
    """An entry without its inode number: copies of the layer and of the original have their
    own (what inode numbers may be shared is checked on its own)."""
    if e[0] == "err":
        return e
    return e[:5] + e[6:]


def check_view(base, v, got, failures):
    exp = base.expected
    allowed = DAMAGED_ERRNOS | ({errno.EACCES} if v.perm else set())
    if v.expect == "same":
        for rel in sorted(set(exp) | set(got)):
            a, b = got.get(rel), exp.get(rel)
            if b is None or a is None or strip(a) != strip(b):
                failures.append(f"{v.name}: {rel!r} is {a} instead of {b}")
        return
    for rel, e in sorted(exp.items()):
        if under(rel, v.touched):
            continue
        a = got.get(rel)
        if a is None:
            failures.append(f"{v.name}: untouched {rel!r} not seen")
            continue
        if e[0] == "d" and a[0] == "d":
            kids = lambda names: sorted(n for n in names  # noqa: E731
                                        if not under(f"{rel}/{n}" if rel else n, v.touched))
            same = strip(a)[:-1] == strip(e)[:-1]
            if rel == "" and "/" in v.touched:
                same = True  # the root's own record was damaged: its attributes may differ
            elif kids(a[-1]) != a[-1] or kids(e[-1]) != e[-1]:
                # a damaged child may have come or gone: the link count may follow it
                same = a[1:4] == e[1:4]
            if not same or kids(a[-1]) != kids(e[-1]):
                failures.append(f"{v.name}: untouched directory {rel!r} is {a} instead of {e}")
        elif strip(a) != strip(e):
            failures.append(f"{v.name}: untouched {rel!r} is {a} instead of {e}")
    for rel, a in sorted(got.items()):
        if a[0] != "err" or not under(rel, v.touched) or a[2] in allowed:
            continue
        if a[1] == "parent" and a[2] in (errno.ENOTDIR, errno.ELOOP):
            continue  # the walker met a damaged ancestor that is no directory any more
        failures.append(f"{v.name}: {rel!r} gives {errno.errorcode.get(a[2], a[2])} ({a[1]})")
    if v.expect == "eio":
        a = got.get(v.eio_path)
        if not (a is not None and a[0] == "err" and a[2] == errno.EIO):
            failures.append(f"{v.name}: a corrupt record's object {v.eio_path!r} is {a}, "
                            "not EIO")
    # nothing from outside
    for rel, a in got.items():
        if a[0] == "f" and a[-1]:
            failures.append(f"{v.name}: {rel!r} shows data from outside the layer")
        if a[0] != "err" and OUTSIDE_ID in (a[2], a[3]):
            failures.append(f"{v.name}: {rel!r} shows a record from outside the layer")
        if a[0] == "d":
            foreign = (set(a[-1]) & (ETC_NAMES | {OUTSIDE_NAME, "secret.txt"}))
            if rel in exp and exp[rel][0] == "d":
                foreign -= set(exp[rel][-1])
            if foreign:
                failures.append(f"{v.name}: {rel!r} lists {sorted(foreign)} from outside")
    # untouched paths share an inode number only when they did before (hard links); that a
    # damaged path may show an untouched one's object (a redirect to it) is data
    by_ino = {}
    for rel, a in got.items():
        if a[0] in ("f", "l", "o") and rel in exp and not under(rel, v.touched):
            by_ino.setdefault(a[5], []).append(rel)
    for ino, rels in by_ino.items():
        if len({exp[r][5] for r in rels}) > 1:
            failures.append(f"{v.name}: {rels} share inode {ino} in the view")


def run_variant(base, v, slot, walker, workdir, logdir, user, orig_digest, outside_digest):
    """Mount one variant, walk it, check it. Returns (outcome, failures)."""
    failures = []
    vdir = workdir / f"v{slot}"
    if vdir.exists():
        shutil.rmtree(vdir)  # (as root: modes do not stop it)
    vdir.mkdir()
    layer = vdir / "layer"
    subprocess.run(["cp", "-a", str(base.layer), str(layer)], check=True)
    v.damage(layer)
    give(layer, user)
    mnt = base.top / "slots" / str(slot) / "orig"
    d = Run(user, layer, mnt, logdir)
    hung = []
    try:
        try:
            mounted = d.start()
        except StartHang as e:
            failures.append(f"{v.name}: {e} (a hang)")
            return "hang", failures
        if not mounted:
            rc = d.proc.wait()
            out = d.output()
            if v.expect == "same":
                failures.append(f"{v.name}: a valid layer was refused ({rc}): {out.strip()}")
            elif rc == 0 or not one_line_refusal(out, "viewfs", layer):
                failures.append(f"{v.name}: refused with status {rc} and output {out!r}")
            if view_mounted(mnt):
                failures.append(f"{v.name}: left mounted after a refusal")
                drop_view(mnt)
            outcome = "refused"
        else:
            probes = sorted(base.expected)
            pokes = [""] + sorted(t for t in v.touched if t in base.expected and t)[:8]
            res = walker.walk(mnt, probes, pokes, 30, lambda: (hung.append(1), d.kill()))
            if res is None:
                failures.append(f"{v.name}: the walk did not finish within 30s (hang)")
                outcome = "hang"
            else:
                check_view(base, v, res["view"], failures)
                outcome = "served"
                if any(e[0] == "err" and e[2] == errno.EIO for e in res["view"].values()):
                    outcome = "served with EIO"
            rc = d.stop()
            if not hung and rc != 0:
                failures.append(f"{v.name}: viewfs exited with {rc} after the unmount: "
                                f"{d.output()[-2000:]}")
    finally:
        d.kill()
    for log in d.sanitizer_logs():
        failures.append(f"{v.name}: sanitizer report:\n{log.read_text(errors='replace')[:4000]}")
    if tree_digest(mnt) != orig_digest:
        failures.append(f"{v.name}: the original tree changed")
    if tree_digest(base.outside) != outside_digest:
        failures.append(f"{v.name}: the directory outside the layer changed")
    return outcome, failures


def setup_base(top, user, logdir):
    base = Base(top, user)
    base.orig0.mkdir(parents=True)
    base.layer.mkdir()
    make_original(base.orig0)
    make_outside(base.outside)
    subprocess.run(["chown", "-R", "-h", f"{user.uid}:{user.gid}", str(top)], check=True)
    for p in (top, top / "slots", top / "slots" / "0"):
        os.chmod(p, 0o755)
    d = Run(user, base.layer, base.orig0, logdir)
    try:
        assert d.start(), d.output()
        r = subprocess.run(user.wrap(["/usr/bin/python3", ME, "build", str(base.orig0),
                                      str(user.uid), str(user.gid)]), env=user.env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert d.stop() == 0, d.output()
    finally:
        d.kill()
    # The other slots are bind mounts of the same original, not copies: a layer is tied to its
    # original's inode numbers (records keep `ino`, the index is keyed by them), so a copy of
    # the original would show another view.
    for k in range(1, SLOTS):
        mp = top / "slots" / str(k) / "orig"
        mp.mkdir(parents=True)
        os.chmod(mp.parent, 0o755)
        subprocess.run(["mount", "--bind", str(base.orig0), str(mp)], check=True)
    return base


@pytest.mark.timeout(3600 if LONG else 300)
def test_a_damaged_layer_is_refused_or_served_without_harm(user, tmp_path_factory):
    top = Path(subprocess.check_output(["mktemp", "-d", "/tmp/viewos-tests/corrupt-viewfs.XXXXXX"],
                                       text=True).strip())
    os.chmod(top, 0o755)
    logdir = tmp_path_factory.mktemp("viewfs-logs")
    walkers = [Walker(user) for _ in range(SLOTS)]
    try:
        base = setup_base(top, user, logdir)
        # what the undamaged layer shows, over every slot of the original
        views = []
        for k in range(SLOTS):
            d = Run(user, base.layer, top / "slots" / str(k) / "orig", logdir)
            try:
                assert d.start(), d.output()
                res = walkers[k].walk(d.mountpoint, [], [], 30, d.kill)
                assert res is not None
                assert d.stop() == 0, d.output()
            finally:
                d.kill()
            views.append(res["view"])
        base.expected = views[0]
        for k, view in enumerate(views[1:], 1):
            assert view == base.expected, f"slot {k} shows another view"
        exp = base.expected
        # the layer is what the build meant: every feature the damage needs is there
        assert stat.S_ISCHR(exp["devnull"][1]), exp["devnull"]
        assert exp["devnull"][-1] == os.makedev(1, 3), exp["devnull"]
        assert stat.S_ISBLK(exp["blk"][1]), exp["blk"]
        assert stat.S_IMODE(exp["tools/prog"][1]) == 0o4755 and exp["tools/prog"][2] == 0
        assert exp["link-rel"][2] == 0 and exp["data/sub2"][2] == 0 and exp[""][3] == 0
        assert stat.S_IMODE(exp["L" * 255][1]) == 0o700
        assert "victim.txt" not in exp and "M" * 255 not in exp and "olddir" not in exp
        assert exp["gone"][-1] == ["new.txt"] and exp["newdir"][-1] == ["x.txt", "y"]
        assert exp["data/b.bin"][5] == exp["data/b-link"][5] and exp["data/b.bin"][4] == 2
        assert exp["hard1"][5] == exp["hard2"][5] and exp["hard1"][4] == 2
        assert exp["hard1"][-2] == exp["hard2"][-2] != hashlib.sha256(b"hard\n").hexdigest()
        scan_meta(base)
        assert {"README", "tools/prog", "link-rel", "devnull", "gone", "newdir", "L" * 255,
                "data/sub2", ""} <= set(base.records.values()), base.records
        assert {"victim.txt", "olddir", "data/sub/c.txt", "M" * 255} <= \
            set(base.whiteouts.values()), base.whiteouts
        orig_digest = tree_digest(base.orig0)
        for k in range(1, SLOTS):
            assert tree_digest(top / "slots" / str(k) / "orig") == orig_digest
        outside_digest = tree_digest(base.outside)

        variants = generate(base)
        started = time.monotonic()
        assert len(variants) >= 200, len(variants)  # what issue 10 asks of every format
        workdir = top / "work"
        workdir.mkdir()
        outcomes, failures = {}, []
        lock = threading.Lock()
        queue = list(variants)

        def worker(slot):
            while True:
                with lock:
                    if not queue:
                        return
                    v = queue.pop(0)
                outcome, f = run_variant(base, v, slot, walkers[slot], workdir, logdir, user,
                                         orig_digest, outside_digest)
                with lock:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    failures.extend(f)

        with ThreadPoolExecutor(SLOTS) as pool:
            for f in [pool.submit(worker, k) for k in range(SLOTS)]:
                f.result()
        kinds = {e: sum(v.expect == e for v in variants) for e in ("eio", "same", "any")}
        print(f"viewfs layer damaged in {len(variants)} ways (corrupt records {kinds['eio']}, "
              f"harmless {kinds['same']}, others {kinds['any']}): {outcomes}, "
              f"{time.monotonic() - started:.0f} s")
        assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    finally:
        for w in walkers:
            w.close()
        for k in range(SLOTS):
            mp = top / "slots" / str(k) / "orig"
            drop_view(mp)
            if k and in_mountinfo(mp):  # the slot's bind mount
                subprocess.run(["umount", str(mp)], check=False)
        if not any(in_mountinfo(top / "slots" / str(k) / "orig") for k in range(SLOTS)):
            subprocess.run(["rm", "-rf", "--one-file-system", str(top)], check=False)
