"""vstat: virtual owner, group, mode bits and device nodes, kept in the layer's records:
chown/chmod that the real file system refuses succeed and show in stat; mknod of devices,
FIFOs and sockets works for an unprivileged user; chown/chmod of an original file record
metadata without copying its data; virtual bits never reach a real file; all of it survives a
remount."""
import os
import stat
import subprocess

import pytest

from viewfs_fixtures import record, view  # noqa: F401


@pytest.mark.parametrize("mode", ["cow", "mincow"])
def test_chown_to_root_succeeds_virtually_without_copying_data(view, mode):
    view.make({"bin/tool": "#!/bin/sh\necho hi\n"})
    os.chmod(view.mnt / "bin/tool", 0o755)
    view.mount(f"{mode},vstat")
    before = view.orig_digest()
    r = view.py("result = [err(os.chown, P('bin/tool'), 0, 0), err(os.chmod, P('bin/tool'), 0o4755),"
                " st('bin/tool')]")
    assert r[0] is None and r[1] is None
    assert (r[2]["uid"], r[2]["gid"], r[2]["perm"]) == (0, 0, 0o4755)
    assert not (view.layer / "bin/tool").exists()  # no data copy
    rec = record(view.layer, "bin/tool")
    assert rec["uid"] == "0" and rec["gid"] == "0" and rec["mode"] == "04755"
    view.remount(f"{mode},vstat")
    s = view.py("result = st('bin/tool')")
    assert (s["uid"], s["gid"], s["perm"]) == (0, 0, 0o4755)
    if mode == "cow":
        assert view.orig_digest() == before
    else:
        # mincow chmods the user's own file for real (0755: the setuid bit stays virtual),
        # which moves its ctime and nothing else
        after = view.orig_digest()
        del before["bin/tool"]["ctime"], after["bin/tool"]["ctime"]
        assert after == before


def test_virtual_setuid_never_on_a_real_file(view):
    view.make({"prog": "x"})
    view.mount("cow,vstat")
    view.py("os.chown(P('prog'), 0, 0); os.chmod(P('prog'), 0o4755); append('prog', 'y')")
    real = (view.layer / "prog").stat()
    assert real.st_uid == view.user.uid
    assert not real.st_mode & (stat.S_ISUID | stat.S_ISGID)
    s = view.py("result = st('prog')")
    assert s["uid"] == 0
    # a write by someone without CAP_FSETID clears setuid, as on any file system
    assert s["perm"] == 0o755


@pytest.mark.parametrize("mode", ["cow", "mincow", "move"])
def test_unprivileged_user_makes_devices_fifos_sockets(view, mode):
    """The kernel refuses mknod(2) of devices to a caller without CAP_MKNOD before asking any
    FUSE file system, so a user turns an empty file into a device with the user.viewfs.mknod
    attribute; FIFOs and sockets are made by mknod(2) as usual."""
    view.mount(f"{mode},vstat")
    r = view.py("result = [err(os.mknod, P('direct'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))]\n"
                "write('null', ''); os.chmod(P('null'), 0o666);"
                "os.setxattr(P('null'), 'user.viewfs.mknod', b'c 1 3');"
                "write('sda', ''); os.chmod(P('sda'), 0o660);"
                "os.setxattr(P('sda'), 'user.viewfs.mknod', b'b 8 0');"
                "os.mkfifo(P('fifo'));"
                "import socket; s = socket.socket(socket.AF_UNIX); s.bind(P('sock')); s.close();"
                "result += [st(n) for n in ('null', 'sda', 'fifo', 'sock')]")
    direct, null, sda, fifo, sock = r
    assert direct == "EPERM"
    assert (null["fmt"], null["rdev"], null["perm"]) == (stat.S_IFCHR, [1, 3], 0o666)
    assert (sda["fmt"], sda["rdev"], sda["perm"]) == (stat.S_IFBLK, [8, 0], 0o660)
    assert fifo["fmt"] == stat.S_IFIFO and sock["fmt"] == stat.S_IFSOCK
    # on disk: plain files plus records for the devices; FIFOs and sockets are real. (mincow
    # makes new files in the original, whose directory is the user's; records are the layer's)
    disk = view.orig() if mode == "mincow" else view.layer
    assert stat.S_ISREG((disk / "null").lstat().st_mode)
    assert record(view.layer, "null")["type"] == "c"
    assert record(view.layer, "null")["rdev"] == "1,3"
    assert record(view.layer, "sda")["type"] == "b"
    assert stat.S_ISFIFO((disk / "fifo").lstat().st_mode)
    assert stat.S_ISSOCK((disk / "sock").lstat().st_mode)
    view.remount(f"{mode},vstat")
    r = view.py("result = [st('null'), sorted((e.name, e.inode() == st(e.name)['ino'],"
                " stat.S_IFMT(e.stat(follow_symlinks=False).st_mode)) for e in os.scandir(M))]")
    assert (r[0]["fmt"], r[0]["rdev"]) == (stat.S_IFCHR, [1, 3])
    assert r[1] == [["fifo", True, stat.S_IFIFO], ["null", True, stat.S_IFCHR],
                    ["sda", True, stat.S_IFBLK], ["sock", True, stat.S_IFSOCK]]


def test_mknod_by_root_makes_a_virtual_device(rtmp, mounts):
    """root passes the kernel's check, and mknod(1) itself works: with vstat the layer still
    gets a plain file and a record, never a real device node."""
    mnt, layer = rtmp / "mnt", rtmp / "layer"
    mnt.mkdir()
    layer.mkdir()
    mounts.start("viewfs", "-o", "cow,vstat", layer, mnt, mountpoint=mnt)
    subprocess.run(["mknod", "-m", "666", mnt / "null", "c", "1", "3"], check=True)
    subprocess.run(["mknod", mnt / "loop9", "b", "7", "9"], check=True)
    s = os.lstat(mnt / "null")
    assert stat.S_ISCHR(s.st_mode) and os.major(s.st_rdev) == 1 and os.minor(s.st_rdev) == 3
    assert stat.S_ISBLK(os.lstat(mnt / "loop9").st_mode)
    assert stat.S_ISREG((layer / "null").lstat().st_mode)
    assert record(layer, "null")["type"] == "c" and record(layer, "loop9")["rdev"] == "7,9"


def test_device_attribute_needs_vstat_and_an_empty_file(view):
    view.make({"full": "data"})
    view.mount("cow")
    r = view.py("write('e', ''); result = [err(os.setxattr, P('e'), 'user.viewfs.mknod', b'c 1 3')]")
    assert r == ["ENOTSUP"]
    view.remount("cow,vstat")
    r = view.py("os.mkdir(P('d'));"
                "result = [err(os.setxattr, P('full'), 'user.viewfs.mknod', b'c 1 3'),"
                " err(os.setxattr, P('e'), 'user.viewfs.mknod', b'x 1 3'),"
                " err(os.setxattr, P('e'), 'user.viewfs.mknod', b'c 1'),"
                " err(os.setxattr, P('d'), 'user.viewfs.mknod', b'c 1 3'), st('e')['fmt']]")
    assert r == ["EINVAL", "EINVAL", "EINVAL", "EINVAL", stat.S_IFREG]


def test_chown_chmod_of_layer_file(view):
    """A file created in the view: the real chmod works (no record), the chown to root does
    not (a record), and chown back to the user removes the record's owner."""
    view.mount("cow,vstat")
    r = view.py("write('f', 'x'); os.chmod(P('f'), 0o600); a = st('f');"
                "os.chown(P('f'), 0, 0); b = st('f');"
                "os.chown(P('f'), os.getuid(), os.getgid()); c = st('f');"
                "result = [a['perm'], b['uid'], c['uid']]")
    assert r == [0o600, 0, view.user.uid]
    assert (view.layer / "f").stat().st_mode & 0o777 == 0o600
    assert "uid" not in record(view.layer, "f")


def test_virtual_change_updates_ctime(view):
    view.make({"f": "x"})
    view.mount("cow,vstat")
    r = view.py("import time\nc0 = st('f')['ctime']; time.sleep(0.05); os.chown(P('f'), 0, 0);"
                "result = st('f')['ctime'] > c0")
    assert r is True


def test_copy_up_keeps_virtual_owner_and_records_original_owner(view):
    """cow,vstat: a root-owned original written in the view (no default_permissions: the
    daemon writes the user's own copy) still shows root as its owner."""
    view.make({"etc/conf": "c\n"})
    view.give_root("etc/conf")
    view.mount("cow,vstat")
    r = view.py("result = [append('etc/conf', 'x'), st('etc/conf'), read('etc/conf')]")
    assert r[0] is None and r[1]["uid"] == 0 and r[1]["gid"] == 0 and r[2] == "c\nx"
    assert (view.layer / "etc/conf").stat().st_uid == view.user.uid
    assert record(view.layer, "etc/conf")["uid"] == "0"
    assert view.orig("etc/conf").read_text() == "c\n"


def test_default_permissions_enforces_virtual_modes(view):
    """With default_permissions the kernel checks the virtual owner and mode."""
    view.make({"f": "x"})
    view.mount("cow,vstat,default_permissions")
    r = view.py("os.chmod(P('f'), 0o000); result = [read('f'), append('f', 'y')]")
    assert r == ["EACCES", "EACCES"]
