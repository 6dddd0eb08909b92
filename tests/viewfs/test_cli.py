"""The viewfs command line: options checked strictly, bad input gives one line `viewfs: what
failed: why`, a non-zero exit and nothing mounted; the standard daemon conventions (--help,
--version, detaching only once mounted, mount -t fuse.viewfs)."""
import os
import subprocess

import pytest

from conftest import mounted_at, run, viewos_bin
from viewfs_fixtures import view  # noqa: F401


def viewfs(*args, user=None):
    return run([viewos_bin("viewfs"), *args], check=False, user=user)


def assert_one_line_error(r, status, *words):
    assert r.returncode == status, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("viewfs: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("opts, words", [
    ("bogus", ["unknown option 'bogus'"]),
    ("cow,merge", ["'cow' and 'merge' cannot be combined"]),
    ("move,mincow", ["'move' and 'mincow' cannot be combined"]),
    ("bind,cow", ["'move' and 'cow' cannot be combined"]),
    ("except=tmp", ["invalid value 'tmp' for option 'except'", "starting with /"]),
    ("except=/a/../b", ["invalid value '/a/../b'", "no . or .."]),
    ("except=/", ["the whole view cannot be excepted"]),
    ("except", ["option 'except' needs a value"]),
    ("vstat=1", ["option 'vstat' takes no value"]),
    ("timeout=soon", ["invalid value 'soon' for option 'timeout'"]),
    ("writeback=maybe", ["invalid value 'maybe' for option 'writeback'"]),
])
def test_bad_option_one_line_nothing_mounted(view, opts, words):
    r = viewfs("-o", opts, view.layer, view.mnt, user=view.user)
    assert_one_line_error(r, 1, *words)
    assert not mounted_at(view.mnt)


def test_missing_source_one_line_nothing_mounted(view):
    r = viewfs("-o", "cow", view.base / "nowhere", view.mnt, user=view.user)
    assert_one_line_error(r, 2, f"cannot open layer {view.base}/nowhere",
                          "No such file or directory")
    assert not mounted_at(view.mnt)


def test_source_not_a_directory(view):
    (view.base / "file").write_text("x")
    r = viewfs(view.base / "file", view.mnt, user=view.user)
    assert_one_line_error(r, 2, "cannot open layer", "Not a directory")
    assert not mounted_at(view.mnt)


def test_missing_mountpoint(view):
    r = viewfs(view.layer, view.base / "nomnt", user=view.user)
    assert_one_line_error(r, 32, f"cannot mount on {view.base}/nomnt")


def test_source_inside_mountpoint_is_refused(view):
    view.make({"inner": None})
    r = viewfs("-o", "cow", view.mnt / "inner", view.mnt, user=view.user)
    assert_one_line_error(r, 2, f"cannot use {view.mnt}/inner as the layer of {view.mnt}",
                          "inside the mount point")
    assert not mounted_at(view.mnt)
    assert not (view.mnt / "inner" / ".-").exists()


def test_source_that_is_the_mountpoint_is_refused(view):
    r = viewfs("-o", "cow", view.mnt, view.mnt, user=view.user)
    assert_one_line_error(r, 2, "it is the mount point itself")
    assert not mounted_at(view.mnt)


def test_source_inside_mountpoint_allowed_under_except(view):
    """The view launcher's case (SOURCE /tmp/newroot over / with except=/tmp)."""
    view.make({"tmp/layer": None, "etc/conf": "orig\n"})
    view.layer = view.mnt / "tmp" / "layer"
    view.mount("cow,except=/tmp")
    assert view.py("write('etc/conf', 'changed\\n'); result = ls('tmp/layer')") == [".-", "etc"]
    assert (view.orig("etc/conf")).read_text() == "orig\n"


def test_unwritable_layer_for_cow(view):
    os.chown(view.layer, 0, 0)
    r = viewfs("-o", "cow", view.layer, view.mnt, user=view.user)
    assert_one_line_error(r, 2, f"cannot set up the layer metadata {view.layer}/.-",
                          "Permission denied")
    assert not mounted_at(view.mnt)
    # move needs no metadata: a read-only layer is fine
    m = view.mount("move")
    assert view.py("result = ls()") == []
    view.unmount()
    del m


def test_help_and_version():
    r = run([viewos_bin("viewfs"), "--help"])
    assert r.stdout.startswith("usage: viewfs [options] SOURCE MOUNTPOINT")
    for opt in ("-o move", "-o merge", "-o cow", "-o mincow", "-o except=/PATH", "-o vstat",
                "-o wok", "-o bind"):
        assert opt in r.stdout
    r = run([viewos_bin("viewfs"), "--version"])
    assert r.stdout.startswith("viewfs (viewos) ")


def test_detached_daemon_returns_once_mounted(view):
    """Without -f the command returns when the view is usable, and fusermount3 -u ends it."""
    view.make({"f": "orig\n"})
    r = viewfs("-o", "cow", view.layer, view.mnt, user=view.user)
    try:
        assert r.returncode == 0 and r.stderr == ""
        assert mounted_at(view.mnt)
        assert view.py("result = read('f')") == "orig\n"
    finally:
        run(["fusermount3", "-u", view.mnt], user=view.user)
    assert not mounted_at(view.mnt)


def test_mount_t_fuse_viewfs(rtmp):
    """mount(8) with the uninstalled binary (TYPE#SOURCE form of mount.fuse3)."""
    mnt, layer = rtmp / "mnt", rtmp / "layer"
    mnt.mkdir()
    layer.mkdir()
    (mnt / "f").write_text("orig\n")
    run(["mount", "-t", "fuse", "-o", "subtype=viewfs,cow,noatime",
         f"{viewos_bin('viewfs')}#{layer}", mnt])
    try:
        assert "fuse.viewfs" in mounted_at(mnt)
        with open(mnt / "f", "a") as f:
            f.write("x")
        assert (mnt / "f").read_text() == "orig\nx"
        assert (layer / "f").read_text() == "orig\nx"
    finally:
        run(["umount", mnt])
    assert (mnt / "f").read_text() == "orig\n"


def test_quoted_comma_in_except_path(view):
    """Commas inside quotes do not split options (View-OS's tokeniser)."""
    view.make({"a,b/f": "real\n", "x": "orig\n"})
    view.mount("cow,except='/a,b'")
    view.py("write('a,b/f', 'changed\\n'); write('x', 'changed\\n')")
    assert view.orig("a,b/f").read_text() == "changed\n"  # excepted: the original
    assert view.orig("x").read_text() == "orig\n"


def test_ro_mount_changes_nothing(view):
    view.make({"f": "orig\n"})
    view.mount("cow,ro")
    r = view.py("result = [read('f'), append('f', 'x'), write('new', 'n'), err(os.unlink, P('f'))]")
    assert r == ["orig\n", "EROFS", "EROFS", "EROFS"]
    assert not (view.layer / ".-").exists()  # a read-only view does not even make its metadata


def test_wok_reports_write_permission(view):
    """wok: tools that check write permission first (access(W_OK), the mode bits) go ahead,
    and cow diverts the write."""
    view.make({"etc/conf": "c\n"})
    view.give_root("etc/conf")
    os.chmod(view.mnt / "etc/conf", 0o444)
    view.mount("cow")
    assert view.py("result = [os.access(P('etc/conf'), os.W_OK), st('etc/conf')['perm']]") == [
        False, 0o444]
    view.remount("cow,wok")
    assert view.py("result = [os.access(P('etc/conf'), os.W_OK), st('etc/conf')['perm']]") == [
        True, 0o666]


def test_debug_option_prints_operations(view):
    view.make({"f": "x"})
    m = view.mount("cow,debug")
    view.py("result = read('f')")
    view.unmount()
    assert "LOOKUP" in m.stderr() and "opcode" in m.stderr()


def test_cow_never_reads_what_the_user_may_not(view):
    view.make({"secret": "s\n"})
    view.give_root("secret")
    os.chmod(view.mnt / "secret", 0o600)
    view.mount("cow,vstat")
    r = view.py("result = [read('secret'), append('secret', 'x'), err(os.truncate, P('secret'), 0),"
                " err(os.chown, P('secret'), os.getuid(), os.getgid()), read('secret')]")
    # a virtual chown only changes what stat says: the data stays root's and unreadable
    assert r == ["EACCES", "EACCES", "EACCES", None, "EACCES"]
    assert not (view.layer / "secret").exists()


@pytest.mark.parametrize("sig", ["TERM", "INT", "HUP"])
def test_signal_unmounts_and_exits_zero(view, sig):
    import signal
    view.make({"f": "x"})
    m = view.mount("cow")
    view.py("append('f', 'y')")
    m.proc.send_signal(getattr(signal, f"SIG{sig}"))
    assert m.proc.wait(10) == 0
    m.unmounted = True
    view.m = None
    assert not mounted_at(view.mnt)
    assert (view.layer / "f").read_text() == "xy"


def test_parallel_clients(view):
    """Several processes at once (the serving loop hands requests to more threads)."""
    view.make({f"d{i}/f{j}": f"{i}.{j}\n" for i in range(8) for j in range(50)})
    view.mount("cow")
    r = view.py("import concurrent.futures as cf\n"
                "def work(i):\n"
                "    out = []\n"
                "    for j in range(50):\n"
                "        append(f'd{i}/f{j}', 'x')\n"
                "        out.append(read(f'd{i}/f{j}'))\n"
                "    write(f'd{i}/new', 'n'); os.rename(P(f'd{i}/new'), P(f'd{i}/renamed'))\n"
                "    return out\n"
                "with cf.ProcessPoolExecutor(8) as ex: res = list(ex.map(work, range(8)))\n"
                "result = [all(r == f'{i}.{j}\\nx' for j, r in enumerate(rs)) for i, rs in enumerate(res)]")
    assert r == [True] * 8


def test_concurrent_namespace_changes_stress(view):
    """Processes creating, renaming, deleting, listing and copying up in the same directories
    at once: no deadlock, no crash (the sanitizers watch), and a consistent tree afterwards."""
    view.make({f"s/d{i}/f{j}": "orig\n" for i in range(6) for j in range(20)})
    view.mount("cow")
    r = view.py("import concurrent.futures as cf, random, time\n"
                "def work(k):\n"
                "    rnd = random.Random(k); end = time.time() + 3; n = 0\n"
                "    while time.time() < end:\n"
                "        d = f's/d{rnd.randrange(6)}'; f = f'{d}/f{rnd.randrange(20)}'\n"
                "        op = rnd.randrange(6)\n"
                "        if op == 0: append(f, 'x')\n"
                "        elif op == 1: err(os.rename, P(f), P(f'{d}/r{k}'))\n"
                "        elif op == 2: err(os.rename, P(f'{d}/r{k}'), P(f))\n"
                "        elif op == 3: err(os.unlink, P(f)); write(f, 'new\\n')\n"
                "        elif op == 4: ls(d); st(f)\n"
                "        else: err(os.mkdir, P(f'{d}/sub{k}')); err(os.rmdir, P(f'{d}/sub{k}'))\n"
                "        n += 1\n"
                "    return n\n"
                "with cf.ProcessPoolExecutor(6) as ex: counts = list(ex.map(work, range(6)))\n"
                "bad = []\n"
                "for r, ds, fs in os.walk(M):\n"
                "    for f in fs:\n"
                "        c = read(os.path.relpath(os.path.join(r, f), M))\n"
                "        if not (c.startswith('orig\\n') or c.startswith('new\\n')): bad.append((f, c))\n"
                "result = [min(counts) > 0, bad]")
    assert r == [True, []]
    view.remount("cow")
    assert view.py("result = len(ls('s'))") == 6


def test_root_daemon_for_other_users_checks_permissions(utmp, mounts, user):
    """viewfs run by root with allow_other: another user may not read root's 0600 file
    through it (default_permissions is added), but may read what they could anyway."""
    mnt, layer = utmp / "mnt", utmp / "layer"
    mnt.mkdir()
    layer.mkdir()
    (mnt / "secret").write_text("s\n")
    os.chmod(mnt / "secret", 0o600)
    (mnt / "public").write_text("p\n")
    mounts.start("viewfs", "-o", "cow,allow_other", layer, mnt, mountpoint=mnt)
    assert "default_permissions" in mounted_at(mnt)
    r = run(["cat", mnt / "secret"], user=user, check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert run(["cat", mnt / "public"], user=user).stdout == "p\n"
