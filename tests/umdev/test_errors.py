"""Bad input to the umdev daemons: a one-line message `NAME: what failed: why` naming the path,
a non-zero exit (1 usage, 2 source, 32 mount), nothing left mounted, no file left behind, and
the image untouched."""
import os
import socket

import pytest

from conftest import fuse_mounts, run, viewos_bin
from umdevlib import MIB, make_image, start


def ours(mounts_set, args):
    """The mounts among mounts_set that lie in the directories our arguments name (other
    engineers' daemons may mount elsewhere on this machine meanwhile)."""
    dirs = {str(os.path.dirname(str(a))) for a in args if str(a).startswith("/")}
    return {m for m in mounts_set if any(m.startswith(d + "/") for d in dirs)}


def fails(args, status, *words, user=None, name="umdev-mbr", cwd=None):
    """Run a daemon that must fail; check the one line, the status and that no mount appeared."""
    before = fuse_mounts()
    r = run([viewos_bin(name), *args], check=False, user=user, cwd=cwd)
    assert r.returncode == status, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{name}: ")
    for w in words:
        assert w in lines[0], lines[0]
    assert ours(fuse_mounts() - before, args) == set()
    return lines[0]


@pytest.mark.parametrize("foreground", [[], ["-f"]])
def test_missing_image(rtmp, foreground):
    fails([*foreground, rtmp / "nope.img", rtmp / "hda"], 2,
          f"cannot open {rtmp}/nope.img: No such file or directory")
    assert not (rtmp / "hda").exists()


def test_image_not_a_multiple_of_512(rtmp):
    img = rtmp / "odd.img"
    img.write_bytes(b"\0" * 1000)
    fails([img, rtmp / "hda"], 2, str(img), "512")
    assert img.read_bytes() == b"\0" * 1000
    assert not (rtmp / "hda").exists()


def test_empty_image(rtmp):
    img = rtmp / "empty.img"
    img.write_bytes(b"")
    fails([img, rtmp / "hda"], 2, str(img))


@pytest.mark.parametrize("name", ["umdev-mbr", "umdev-ramdisk", "umdev-null"])
def test_unknown_option(rtmp, name):
    args = [rtmp / "img"] if name == "umdev-mbr" else []
    fails(["-o", "bogus", *args, rtmp / "dev"], 1, "unknown option 'bogus'", name=name)


@pytest.mark.parametrize("opt, words", [
    ("size=0", ["size=0"]),
    ("size=garbage", ["invalid value 'garbage'", "size"]),
    ("size=1000B", ["512-byte sectors"]),
    ("size=", ["needs a value"]),
    ("mode=999", ["mode"]),
    ("nbd=bogus", ["nbd", "unix:SOCKET"]),
    ("nbd=tcp:host:notaport", ["nbd"]),
])
def test_bad_ramdisk_options(rtmp, opt, words):
    fails(["-o", opt, rtmp / "ram"], 1, *words, name="umdev-ramdisk")
    assert not (rtmp / "ram").exists()


@pytest.mark.parametrize("opt, words", [
    ("size=garbage", ["invalid value 'garbage'", "size"]),
    ("size=", ["needs a value"]),
    ("size=1000B", ["512-byte sectors"]),
])
def test_bad_null_device_options(rtmp, opt, words):
    fails(["-o", opt, rtmp / "null"], 1, *words, name="umdev-null")
    assert not (rtmp / "null").exists()


def test_path_in_a_directory_without_write_permission(utmp, user):
    img = make_image(utmp / "disk.img", 32 * MIB, user=user)
    locked = utmp / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    user.chown(locked)
    fails([img, locked / "hda"], 32, f"cannot create {locked}/hda: Permission denied",
          user=user)
    fails(["-o", "size=1M", locked / "ram"], 32, "cannot create", user=user,
          name="umdev-ramdisk")


def test_path_in_a_missing_directory(rtmp):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    fails([img, rtmp / "no" / "hda"], 32, f"cannot mount on {rtmp}/no/hda")


def test_path_is_a_directory(rtmp):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    (rtmp / "dir").mkdir()
    fails([img, rtmp / "dir"], 32, "not a regular file")


def test_busy_mount_point(rtmp, mounts):
    start(mounts, "umdev-null", path=rtmp / "null")
    img = make_image(rtmp / "disk.img", 32 * MIB)
    fails([img, rtmp / "null"], 32, f"{rtmp}/null", "already a mount point")


def test_image_in_use_by_another_daemon(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    start(mounts, "umdev-mbr", img, path=rtmp / "hda")
    fails([img, rtmp / "hdb"], 2, str(img), "in use by another program")
    assert not (rtmp / "hdb").exists()


def test_nbd_socket_in_use(rtmp):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    taken = rtmp / "taken.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(taken))
    try:
        fails(["-o", f"nbd=unix:{taken}", img, rtmp / "hda"], 32,
              f"cannot listen on {taken}: Address already in use")
    finally:
        s.close()
    assert not (rtmp / "hda").exists()


def test_missing_arguments_and_help(rtmp):
    fails([rtmp / "img"], 1, "missing arguments (usage: umdev-mbr [options] IMAGE PATH)")
    for name in ("umdev-mbr", "umdev-ramdisk", "umdev-null"):
        r = run([viewos_bin(name), "--help"])
        assert r.stdout.startswith(f"usage: {name} [options] ")
        assert "-o uid=UID" in r.stdout and "-o mode=MODE" in r.stdout
        r = run([viewos_bin(name), "--version"])
        assert r.stdout.startswith(f"{name} (viewos) ")


@pytest.mark.parametrize("foreground", [[], ["-f"]])
def test_path_that_fusermount3_refuses(utmp, user, foreground):
    """An existing file owned by root, in a directory of the user's: it passes our own checks
    (a regular file, not a mount point), then fusermount3 refuses to open it. Its reason
    becomes our one line; the file is left as it was."""
    img = make_image(utmp / "disk.img", 32 * MIB, user=user)
    path = utmp / "hda"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    fails([*foreground, img, path], 32,
          f"umdev-mbr: cannot mount {path}: fusermount3: failed to open {path}: "
          "Permission denied", user=user)
    st = path.stat()
    assert (st.st_uid, st.st_size) == (0, 0)


@pytest.mark.parametrize("user_or_root", ["user", "root"])
def test_option_the_kernel_rejects(utmp, user, user_or_root):
    """blksize= is for fuseblk mounts only: the kernel refuses it on ours (through fusermount3
    for a user, directly for root). One line, and the file we created for the mount is gone."""
    who = user if user_or_root == "user" else None
    img = make_image(utmp / "disk.img", 32 * MIB, user=user)
    line = fails(["-o", "blksize=4096", img, utmp / "hda"], 32,
                 f"umdev-mbr: cannot mount {utmp}/hda: ", "Invalid argument", user=who)
    assert not (utmp / "hda").exists(), line
