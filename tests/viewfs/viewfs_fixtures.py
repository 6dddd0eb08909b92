"""Fixtures of the viewfs suite. (A helper module that the test modules import, not a
conftest.py: a second module named conftest would shadow tests/conftest.py for every suite.)

A View is an original tree (the content of the mount point), a layer directory (SOURCE) and a
viewfs mount over them, made for the unprivileged test user.

A FUSE mount made without allow_other is usable only by its owner (not even root), so
everything done *in* the view runs as that user: `View.py(code)` runs a Python snippet as the
user with helpers to act and observe (errno names instead of exceptions), and returns what the
snippet put in `result`. The original stays inspectable while the view covers it through a
directory fd opened before the mount (`View.orig()`, /proc/PID/fd/N), and the layer is a plain
directory next to it (`View.layer`)."""
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import mounted_at, run

PRELUDE = r'''
import errno, json, os, stat, sys
M = sys.argv[1]
def P(rel=""):
    return os.path.join(M, rel) if rel else M
def st(rel):
    try:
        s = os.lstat(P(rel))
    except OSError as e:
        return errno.errorcode[e.errno]
    return {"mode": s.st_mode, "perm": stat.S_IMODE(s.st_mode), "fmt": stat.S_IFMT(s.st_mode),
            "uid": s.st_uid, "gid": s.st_gid, "ino": s.st_ino, "nlink": s.st_nlink,
            "size": s.st_size, "mtime": s.st_mtime_ns, "ctime": s.st_ctime_ns,
            "rdev": [os.major(s.st_rdev), os.minor(s.st_rdev)]}
def read(rel):
    try:
        with open(P(rel), "rb") as f:
            return f.read().decode("latin-1")
    except OSError as e:
        return errno.errorcode[e.errno]
def write(rel, data, mode="w"):
    try:
        with open(P(rel), mode) as f:
            f.write(data)
    except OSError as e:
        return errno.errorcode[e.errno]
def append(rel, data):
    """O_APPEND without O_CREAT: an existing file only."""
    try:
        fd = os.open(P(rel), os.O_WRONLY | os.O_APPEND)
    except OSError as e:
        return errno.errorcode[e.errno]
    try:
        os.write(fd, data.encode())
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        os.close(fd)
def ls(rel=""):
    try:
        return sorted(os.listdir(P(rel)))
    except OSError as e:
        return errno.errorcode[e.errno]
def err(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OSError as e:
        return errno.errorcode[e.errno]
    return None
result = None
'''


class View:
    """An original tree, a layer, and a viewfs mount of the layer over the original."""

    def __init__(self, base, user, mounts):
        self.base = Path(base)
        self.user, self.mounts = user, mounts
        self.mnt = self.base / "mnt"
        self.layer = self.base / "layer"
        for d in (self.mnt, self.layer):
            d.mkdir()
            user.chown(d)
        self.m = None
        self._fd = None

    # -- building trees (as root, then given to the user unless told otherwise) --
    def make(self, tree, where="orig", owner=True):
        """tree: {relpath: content (str/bytes) | None for a directory | ("link", target)}."""
        root = self.mnt if where == "orig" else self.layer
        assert self.m is None, "build trees before mounting"
        for rel, content in tree.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if content is None:
                p.mkdir(exist_ok=True)
            elif isinstance(content, tuple):
                p.symlink_to(content[1])
            else:
                p.write_bytes(content.encode() if isinstance(content, str) else content)
        if owner:
            subprocess.run(["chown", "-R", "-h", f"{self.user.uid}:{self.user.gid}", str(root)],
                           check=True)

    def give_root(self, *rels):
        """Make these original paths root's (0755 directories, 0644 files): the user may read
        them but not change them."""
        assert self.m is None
        for rel in rels:
            os.chown(self.mnt / rel, 0, 0, follow_symlinks=False)

    # -- mounting --
    def mount(self, opts="cow", *extra):
        if self._fd is None:
            self._fd = os.open(self.mnt, os.O_PATH | os.O_DIRECTORY)
        args = (["-o", opts] if opts else []) + list(extra)
        self.m = self.mounts.start("viewfs", *args, self.layer, self.mnt, mountpoint=self.mnt,
                                   user=self.user)
        return self.m

    def unmount(self):
        self.m.unmount()
        self.m = None

    def remount(self, opts="cow"):
        self.unmount()
        return self.mount(opts)

    def orig(self, rel=""):
        """The original tree, also while the view covers it."""
        base = Path(f"/proc/{os.getpid()}/fd/{self._fd}") if self.m is not None else self.mnt
        return base / rel if rel else base

    def orig_digest(self):
        return strong_digest(self.orig())

    def layer_digest(self):
        return strong_digest(self.layer)

    # -- acting in the view, as the user --
    def py(self, code, check=True):
        """Run code as the user with the PRELUDE helpers, M = the mount point; returns the
        JSON-able value the code assigned to `result`."""
        script = PRELUDE + code + "\nprint(json.dumps(result))\n"
        r = run(["/usr/bin/python3", "-c", script, str(self.mnt)], user=self.user, check=check)
        if r.returncode != 0:
            return r
        return json.loads(r.stdout.strip().splitlines()[-1])

    def sh(self, script, check=True):
        return run(["sh", "-c", f"cd '{self.mnt}' && {script}"], user=self.user, check=check)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def strong_digest(root):
    """{relative path ('' for the root itself): attributes} of a tree, with everything a change
    of any kind leaves a trace in: type and mode bits, owner, st_ino, link count, size, content
    (sha256), symlink target, mtime and ctime of every object (directories too: an entry made
    and removed again moves them; ctime moves with every chmod, chown, link, xattr or write),
    and every extended attribute, name=value. Not atime, which reading moves.
    (tests/conftest.py's tree_digest, shared by all suites, leaves out ctime, nlink, st_ino,
    xattrs and the times of directories: too weak to say "never modified".) Run it as root."""
    root = str(root)

    def attrs(p, st):
        k = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid, "ino": st.st_ino,
             "nlink": st.st_nlink, "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns}
        if stat.S_ISLNK(st.st_mode):
            k["target"] = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                data = f.read()
            k["size"], k["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            k["rdev"] = st.st_rdev
        follow = not stat.S_ISLNK(st.st_mode)
        k["xattrs"] = {n: os.getxattr(p, n, follow_symlinks=follow).hex()
                       for n in sorted(os.listxattr(p, follow_symlinks=follow))}
        return k

    out = {"": attrs(root, os.stat(root))}  # (stat: the root may be a /proc/PID/fd link)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = attrs(p, os.lstat(p))
    return out


@pytest.fixture
def view(utmp, user, mounts):
    """A fresh View in a directory of the test user (nothing mounted yet)."""
    v = View(utmp, user, mounts)
    yield v
    v.close()


@pytest.fixture
def make_view(utmp, user, mounts):
    """Several Views in one test: make_view("name")."""
    made = []

    def make(name):
        base = utmp / name
        base.mkdir()
        user.chown(base)
        v = View(base, user, mounts)
        made.append(v)
        return v
    yield make
    for v in made:
        v.close()


def whiteout(layer, rel):
    """The whiteout file of rel in a layer (docs/viewfs-layer-format.md)."""
    return Path(layer) / ".-" / rel


def record(layer, rel):
    """The record of rel in a layer, parsed ({} when there is none)."""
    p = Path(str(Path(layer) / ".-" / rel) + "\x7f")
    if not p.exists():
        return {}
    out = {}
    for line in p.read_text(encoding="latin-1").splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out
