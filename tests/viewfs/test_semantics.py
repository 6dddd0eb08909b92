"""The behaviours of ../shared/reference/view-os-semantics.md §6 that concern viewfs, driven with
the real tools (sh, cp, tar, mv, rm, ln, chmod, touch, truncate). Where another file of this
suite covers a behaviour in depth, the test here is the end-to-end version and the docstring
says where the rest is:
  1 move            test_move_replaces_the_original
  2 merge           test_merge_layer_first_read_only_changes_to_the_original
  3 cow, original never modified   test_cow_work_with_real_tools_never_modifies_the_original
  4 cow copy-up     test_cow_copy_up_append_and_trunc
  5, 6 whiteouts and their persistence   test_whiteouts.py
  7 readdir merge   test_readdir.py
  8 mincow          test_mincow.py
  9, 10 virtual metadata and devices     test_vstat.py
  11 except=        test_except.py
  12 option parsing test_cli.py (two modes, quotes, repeatable except=)
and the "unreal" example: test_view_does_not_contain_itself."""
import os
import subprocess

import pytest

from conftest import make_tree
from viewfs_fixtures import view, whiteout  # noqa: F401


@pytest.mark.parametrize("opts", ["move", "bind", None], ids=["move", "bind", "no-option"])
def test_move_replaces_the_original(view, opts):
    """move, its alias bind, and no -o at all (the default) show SOURCE alone: a name only the
    original has does not exist, also by its full path."""
    view.make({"only-orig": "o\n", "both": "orig\n", "dir/x": "x"})
    view.make({"both": "layer\n", "only-layer": "l\n"}, "layer")
    view.mount(opts)
    r = view.sh(f"ls -A; cat both; cat {view.mnt}/only-orig 2>&1; cat {view.mnt}/dir/x 2>&1",
                check=False)
    lines = r.stdout.splitlines()
    assert lines[:3] == ["both", "only-layer", "layer"]
    assert "No such file or directory" in lines[3] and "No such file or directory" in lines[4]


def test_merge_layer_first_read_only_changes_to_the_original(view):
    view.make({"both": "orig\n", "only-orig": "o\n"})
    view.make({"both": "layer\n", "only-layer": "l\n"}, "layer")
    view.mount("merge")
    layer_before = view.layer_digest()
    r = view.sh("cat both; for c in 'echo x >> both' 'truncate -s 0 both' 'chmod 600 both' "
                "'rm both'; do sh -c \"$c\" 2>&1 | grep -c 'Read-only file system'; done;"
                "echo new > created; echo more >> only-orig; cat only-orig", check=False)
    assert r.stdout.splitlines() == ["layer", "1", "1", "1", "1", "o", "more"]
    assert view.orig("created").read_text() == "new\n"
    assert not (view.layer / "created").exists()
    assert view.layer_digest() == layer_before


def test_cow_work_with_real_tools_never_modifies_the_original(view, tmp_path):
    src = make_tree(tmp_path / "src", nfiles=120)
    for i in range(1, 7):
        make_tree(src / f"w{i}", nfiles=10, seed=i, unicode=False)
    subprocess.run(["cp", "-a", f"{src}/.", str(view.mnt)], check=True)
    subprocess.run(["chown", "-R", f"{view.user.uid}:{view.user.gid}", str(view.mnt)], check=True)
    view.mount("cow")
    before = view.orig_digest()
    view.sh("set -e; touch new; echo data > new2; for f in $(find . -name 'file00*' | head -20);"
            " do echo appended >> \"$f\"; done;"
            " for f in $(find . -name 'file01*' | head -10); do truncate -s 7 \"$f\"; done;"
            " set -- $(ls -d w*); chmod -R go-rwx $1; chown -R $(id -u):$(id -g) $2;"
            " touch -d @1234567890 $(find . -type f | head -1); mv $3 moved-dir;"
            " ln hardlink-of-1 hl2; ln -s target symlink-new; rm -rf $4; mkdir -p a/b/c;"
            " rmdir a/b/c; cp -a $5 copied-dir; tar cf - $6 | (mkdir untar && tar xf - -C untar);"
            " setfattr -n user.k -v v new2; rm -r $(find . -mindepth 2 -type d | head -1)")
    assert view.orig_digest() == before
    view.unmount()
    assert view.orig_digest() == before


def test_cow_copy_up_append_and_trunc(view):
    view.make({"f": "old\n", "g": "old\n"})
    view.mount("cow")
    r = view.sh("echo x >> f; echo y > g; cat f g")
    assert r.stdout == "old\nx\ny\n"
    assert (view.layer / "f").read_text() == "old\nx\n"
    assert (view.layer / "g").read_text() == "y\n"
    assert view.orig("f").read_text() == "old\n" and view.orig("g").read_text() == "old\n"


@pytest.mark.parametrize("mode", ["move", "cow"])
def test_view_does_not_contain_itself(rtmp, mounts, mode):
    """View-OS's "unreal": a tree mounted on a directory inside it (the layer contains the
    mount point) shows no unreal/unreal; a second mount there shows the first one. (As root:
    fusermount3 cannot stack a user's mount on another one it may not enter.)"""
    tree = rtmp / "tree"
    (tree / "unreal").mkdir(parents=True)
    (tree / "file").write_text("f\n")
    mnt = tree / "unreal"
    first = mounts.start("viewfs", "-o", mode, tree, mnt, mountpoint=mnt)
    assert sorted(os.listdir(mnt)) == ["file"]
    # detached: the command returns once its mount (on top of the first) is ready
    second = mounts.start("viewfs", "-o", mode, tree, mnt, mountpoint=mnt, foreground=False)
    assert sorted(os.listdir(mnt)) == ["file", "unreal"]
    assert sorted(os.listdir(mnt / "unreal")) == ["file"]
    assert not os.path.lexists(mnt / "unreal" / "unreal")
    second.unmount()
    first.unmount()
    assert sorted(p.name for p in tree.iterdir() if p.name != ".-") == ["file", "unreal"]
    assert not whiteout(tree, "unreal").exists()
