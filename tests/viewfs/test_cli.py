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
    assert_one_line_error(r, 2, "cannot set up the layer metadata", "Permission denied")
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
