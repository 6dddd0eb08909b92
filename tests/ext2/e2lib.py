"""Helpers and fixtures of the umfuse-ext2 suite (test modules import the fixtures): real
images made by mke2fs, mounts of the daemon through the harness's `mounts` fixture (always
unmounted), and e2fsck as the judge after every write."""
import os
import pickle
import subprocess
import traceback
from pathlib import Path

import pytest

from conftest import make_ext, run

DAEMON = "umfuse-ext2"

# name -> (mkfs type, block size, -O features): the kinds of file system the suite runs on
KINDS = {
    "ext2-1k": ("ext2", 1024, None),
    "ext3-4k": ("ext3", 4096, None),
    "ext4-4k": ("ext4", 4096, None),                       # metadata_csum, 64bit, extents
    "ext4-1k-nojournal": ("ext4", 1024, "^has_journal"),
    "ext4-nocsum": ("ext4", 4096, "^metadata_csum,^64bit"),
}


def make_image(path, kind="ext4-4k", size="64M", owner=None, extra=()):
    fstype, bs, features = KINDS[kind]
    return Path(make_ext(path, fstype=fstype, size=size, blocksize=bs, features=features,
                         extra=extra, owner=owner))


def fsck(img, fix=False):
    """e2fsck -fn (or -fy); returns (status, output)."""
    r = subprocess.run(["e2fsck", "-fy" if fix else "-fn", str(img)], capture_output=True,
                       text=True)
    return r.returncode, r.stdout + r.stderr


def assert_clean(img):
    status, out = fsck(img)
    assert status == 0, f"e2fsck -fn {img} is not clean:\n{out}"


def dumpe2fs(img):
    """The header of dumpe2fs -h as a dict."""
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True,
                         check=True).stdout
    fields = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    return fields


def as_user(user, fn, *args):
    """fn(*args) in a child process with the user's ids (a mount the user made is closed to
    root); returns its result, or fails the test with the child's traceback."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        status = 1
        try:
            os.close(rfd)
            os.setgroups(os.getgrouplist(user.name, user.gid))
            os.setgid(user.gid)
            os.setuid(user.uid)
            out = (True, fn(*args))
        except BaseException:
            out = (False, traceback.format_exc())
        try:
            with os.fdopen(wfd, "wb") as w:
                pickle.dump(out, w)
            status = 0
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"the child as {user} died (status {status})"
    ok, value = pickle.loads(data)
    if not ok:
        pytest.fail(f"as {user}:\n{value}", pytrace=False)
    return value


class Ext2:
    """Mounts umfuse-ext2 images in a test; every mount is unmounted by the harness."""

    def __init__(self, mounts, tmp):
        self.mounts, self.tmp, self.n = mounts, Path(tmp), 0

    def image(self, kind="ext4-4k", size="64M", owner=None, name=None, extra=()):
        self.n += 1
        return make_image(self.tmp / (name or f"img{self.n}"), kind, size, owner, extra)

    def mount(self, img, *opts, user=None, mountpoint=None, env=None):
        if mountpoint is None:
            self.n += 1
            mountpoint = self.tmp / f"mnt{self.n}"
            mountpoint.mkdir()
            if user is not None:
                user.chown(mountpoint)
        args = []
        if opts:
            args = ["-o", ",".join(opts)]
        return self.mounts.start(DAEMON, *args, img, mountpoint, mountpoint=mountpoint,
                                 user=user, env=env)


@pytest.fixture
def ext2(mounts, rtmp):
    return Ext2(mounts, rtmp)


@pytest.fixture
def uext2(mounts, utmp):
    """Like ext2, in a directory the unprivileged user owns."""
    return Ext2(mounts, utmp)
