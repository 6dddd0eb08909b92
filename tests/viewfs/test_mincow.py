"""mincow on a tree with files the user can and cannot change (made by root): what the user may
do is done on the original (an editable file in their home is edited in place), what they may
not is done in the layer (copy-up, whiteout), decided per operation; and nothing lets the user
read or write on the host what they could not without the view. Every way to the layer is
tried: EACCES/EPERM for the user (rmdir, symlink, mkfifo, setxattr, truncate, rm -r + mkdir
in root's directories, a directory emptied only by whiteouts), EROFS for root on a read-only
original; and an error that is not a refusal (ENOSPC) is the answer, not a reason to use the
layer."""
import os
import subprocess

import pytest

from viewfs_fixtures import record, strong_digest, view, whiteout  # noqa: F401

TREE = {
    "home/mine.txt": "mine\n",          # the user's, in the user's directory
    "home/sub/deep.txt": "deep\n",
    "etc/conf": "root's\n",             # root's 0644, in root's 0755 directory
    "etc/secret": "secret\n",           # root's 0600
    "etc/shared.txt": "shared\n",       # the user's file in root's directory
}


@pytest.fixture
def mixed(view):
    view.make(TREE)
    view.give_root("etc", "etc/conf", "etc/secret")
    os.chmod(view.mnt / "etc/secret", 0o600)
    view.mount("mincow")
    return view


def test_editable_file_is_edited_in_place(mixed):
    r = mixed.py("append('home/mine.txt', 'more\\n'); result = read('home/mine.txt')")
    assert r == "mine\nmore\n"
    assert mixed.orig("home/mine.txt").read_text() == "mine\nmore\n"
    assert not (mixed.layer / "home/mine.txt").exists()


def test_file_of_root_is_copied_up(mixed):
    r = mixed.py("append('etc/conf', 'virtual\\n'); result = [read('etc/conf'), st('etc/conf')]")
    assert r[0] == "root's\nvirtual\n"
    assert mixed.orig("etc/conf").read_text() == "root's\n"
    assert (mixed.layer / "etc/conf").read_text() == "root's\nvirtual\n"
    assert r[1]["ino"] == os.stat(mixed.orig("etc/conf")).st_ino


def test_unreadable_file_stays_unreadable(mixed):
    """Copying up needs reading the original: a file the user may not read stays unreadable
    and unwritable, and nothing of it reaches the layer."""
    r = mixed.py("result = [read('etc/secret'), append('etc/secret', 'x'),"
                 " err(os.truncate, P('etc/secret'), 0)]")
    assert r == ["EACCES", "EACCES", "EACCES"]
    assert not (mixed.layer / "etc/secret").exists()
    assert mixed.orig("etc/secret").read_text() == "secret\n"


def test_delete_decided_per_directory(mixed):
    r = mixed.py("result = [err(os.unlink, P('home/mine.txt')), err(os.unlink, P('etc/conf')),"
                 " err(os.unlink, P('etc/shared.txt')), ls('home'), ls('etc')]")
    assert r == [None, None, None, ["sub"], ["secret"]]
    assert not mixed.orig("home/mine.txt").exists()      # really deleted
    assert mixed.orig("etc/conf").exists()               # root's directory: a whiteout
    assert whiteout(mixed.layer, "etc/conf").is_file()
    assert mixed.orig("etc/shared.txt").exists()
    assert whiteout(mixed.layer, "etc/shared.txt").is_file()
    assert not whiteout(mixed.layer, "home/mine.txt").exists()


def test_create_decided_per_directory(mixed):
    mixed.py("write('home/new', 'n'); write('etc/new', 'n'); os.mkdir(P('etc/newdir'));"
             "os.mkdir(P('home/newdir'))")
    assert mixed.orig("home/new").exists() and mixed.orig("home/newdir").is_dir()
    assert not mixed.orig("etc/new").exists() and not mixed.orig("etc/newdir").exists()
    assert (mixed.layer / "etc/new").exists() and (mixed.layer / "etc/newdir").is_dir()
    assert not (mixed.layer / "home/new").exists()


def test_user_file_in_root_directory_is_written_in_place(mixed):
    """Writing needs only the file's permission, so it happens on the original even though
    the directory is root's."""
    mixed.py("append('etc/shared.txt', 'x')")
    assert mixed.orig("etc/shared.txt").read_text() == "shared\nx"
    assert not (mixed.layer / "etc/shared.txt").exists()


def test_attributes_decided_per_operation(mixed):
    r = mixed.py("result = [err(os.chmod, P('home/mine.txt'), 0o600),"
                 " err(os.chmod, P('etc/conf'), 0o600), st('etc/conf')['perm'],"
                 " err(os.utime, P('etc/conf'), (5, 5)), st('etc/conf')['mtime']]")
    assert r == [None, None, 0o600, None, 5 * 10**9]
    assert os.stat(mixed.orig("home/mine.txt")).st_mode & 0o777 == 0o600
    assert os.stat(mixed.orig("etc/conf")).st_mode & 0o777 == 0o644
    assert (mixed.layer / "etc/conf").stat().st_mode & 0o777 == 0o600


def test_rename_decided_per_operation(mixed):
    r = mixed.py("result = [err(os.rename, P('home/mine.txt'), P('home/renamed')),"
                 " err(os.rename, P('etc/conf'), P('etc/conf2')), ls('home'), ls('etc')]")
    assert r == [None, None, ["renamed", "sub"], ["conf2", "secret", "shared.txt"]]
    assert mixed.orig("home/renamed").exists() and not mixed.orig("home/mine.txt").exists()
    assert mixed.orig("etc/conf").exists() and (mixed.layer / "etc/conf2").exists()


def test_remount_keeps_both_kinds_of_changes(mixed):
    mixed.py("append('home/mine.txt', 'a'); append('etc/conf', 'b'); os.unlink(P('etc/secret'))")
    mixed.remount("mincow")
    assert mixed.py("result = [read('home/mine.txt'), read('etc/conf'), ls('etc')]") == [
        "mine\na", "root's\nb", ["conf", "shared.txt"]]


@pytest.fixture
def guarded(view):
    """The user's home with one directory of root's in it, and root's /etc."""
    view.make({"home/mine": "mine\n", "home/rootdir/x": "rx\n", "etc/conf": "root's\n",
               "etc/emptydir": None, "etc/d/x": "x\n", "etc/d/y": "y\n"})
    view.give_root("etc", "etc/conf", "etc/emptydir", "etc/d", "etc/d/x", "etc/d/y",
                   "home/rootdir", "home/rootdir/x")
    view.mount("mincow")
    return view


def test_refused_rmdir_becomes_a_whiteout(guarded):
    r = guarded.py("result = [err(os.rmdir, P('etc/emptydir')), st('etc/emptydir'), ls('etc')]")
    assert r == [None, "ENOENT", ["conf", "d"]]
    assert guarded.orig("etc/emptydir").is_dir()
    assert whiteout(guarded.layer, "etc/emptydir").is_file()


def test_rmdir_of_a_directory_emptied_by_whiteouts(guarded):
    """home/rootdir is root's: its file can only be deleted virtually. The real rmdir of the
    directory (in the user's home: allowed) then fails with ENOTEMPTY, and the view deletes it
    virtually as well."""
    r = guarded.py("result = [err(os.unlink, P('home/rootdir/x')), ls('home/rootdir'),"
                   " err(os.rmdir, P('home/rootdir')), st('home/rootdir'), ls('home')]")
    assert r == [None, [], None, "ENOENT", ["mine"]]
    assert guarded.orig("home/rootdir/x").exists()
    assert whiteout(guarded.layer, "home/rootdir").is_file()
    guarded.remount("mincow")
    assert guarded.py("result = [ls('home'), st('home/rootdir/x')]") == [["mine"], "ENOENT"]


def test_symlink_and_fifo_in_a_root_directory_go_to_the_layer(guarded):
    r = guarded.py("result = [err(os.symlink, 'conf', P('etc/sl')), err(os.mkfifo, P('etc/fifo')),"
                   " os.readlink(P('etc/sl')), st('etc/fifo')['fmt'], ls('etc')]")
    assert r == [None, None, "conf", 0o010000, ["conf", "d", "emptydir", "fifo", "sl"]]
    assert (guarded.layer / "etc/sl").is_symlink() and (guarded.layer / "etc/fifo").is_fifo()
    assert not os.path.lexists(guarded.orig("etc/sl"))
    assert not os.path.lexists(guarded.orig("etc/fifo"))


def test_setxattr_on_a_root_file_copies_it_up(guarded):
    r = guarded.py("result = [err(os.setxattr, P('etc/conf'), 'user.k', b'v'),"
                   " os.getxattr(P('etc/conf'), 'user.k').decode(), read('etc/conf')]")
    assert r == [None, "v", "root's\n"]
    assert os.getxattr(guarded.layer / "etc/conf", "user.k") == b"v"
    assert os.listxattr(guarded.orig("etc/conf")) == []


def test_truncate_of_a_readable_root_file_copies_it_up(guarded):
    r = guarded.py("result = [err(os.truncate, P('etc/conf'), 3), read('etc/conf')]")
    assert r == [None, "roo"]
    assert (guarded.layer / "etc/conf").read_text() == "roo"
    assert guarded.orig("etc/conf").read_text() == "root's\n"


def test_rm_r_then_mkdir_gives_an_empty_directory(guarded):
    r = guarded.py("import shutil; shutil.rmtree(P('etc/d')); os.mkdir(P('etc/d'));"
                   "result = [ls('etc/d'), st('etc/d/x')]")
    assert r == [[], "ENOENT"]
    assert record(guarded.layer, "etc/d")["opaque"] == "1"
    assert sorted(os.listdir(guarded.orig("etc/d"))) == ["x", "y"]
    guarded.remount("mincow")
    assert guarded.py("result = [ls('etc/d'), st('etc/d/x')]") == [[], "ENOENT"]


def test_an_error_that_is_no_refusal_is_returned_not_done_virtually(view):
    """An original out of inodes says ENOSPC: so does the view, and nothing is made in the
    layer instead."""
    fs = view.base / "tmpfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o",
                    f"nr_inodes=32,mode=0755,uid={view.user.uid},gid={view.user.gid}", "orig",
                    fs], check=True)
    try:
        view.mnt = fs / "mnt"  # (a directory in it: the mount point of the view is no mount)
        view.mnt.mkdir()
        view.user.chown(view.mnt)
        view.make({"d/f": "f\n"})
        for i in range(64):
            try:
                (view.mnt / f"fill{i}").touch()
            except OSError:
                break
        else:
            pytest.fail("the tmpfs did not run out of inodes")
        view.mount("mincow")
        layer_before = view.layer_digest()
        r = view.py("result = [err(os.mkdir, P('newdir')), write('d/new', 'x'),"
                    " err(os.symlink, 'f', P('d/sl')), err(os.mkfifo, P('d/fifo')), ls('d')]")
        assert r == ["ENOSPC", "ENOSPC", "ENOSPC", "ENOSPC", ["f"]]
        assert view.layer_digest() == layer_before
    finally:
        if view.m is not None:
            view.unmount()
        view.close()
        subprocess.run(["umount", fs], check=False)


def test_read_only_original_falls_back_to_the_layer(rtmp, mounts):
    """root may change anything, but not on a read-only mount: EROFS makes mincow do each
    change in the layer, and the original is untouched."""
    src, ro, layer = rtmp / "src", rtmp / "ro", rtmp / "layer"
    mnt = ro / "tree"  # in the read-only mount (the view's mount point is no mount itself)
    for d in (src / "tree" / "d", ro, layer):
        d.mkdir(parents=True)
    (src / "tree" / "f").write_text("f\n")
    (src / "tree" / "d" / "g").write_text("g\n")
    subprocess.run(["mount", "--bind", src, ro], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True)
        before = strong_digest(src)
        m = mounts.start("viewfs", "-o", "mincow", layer, mnt, mountpoint=mnt)
        with open(mnt / "f", "a") as fh:
            fh.write("more\n")
        os.unlink(mnt / "d" / "g")
        os.mkdir(mnt / "new")
        os.chmod(mnt / "f", 0o600)
        os.rename(mnt / "d", mnt / "d2")
        assert (mnt / "f").read_text() == "f\nmore\n"
        assert sorted(os.listdir(mnt)) == ["d2", "f", "new"]
        assert os.listdir(mnt / "d2") == []
        m.unmount()
        assert (layer / "f").read_text() == "f\nmore\n"
        assert (layer / "f").stat().st_mode & 0o777 == 0o600
        assert whiteout(layer, "d").is_file() and (layer / "new").is_dir()
        assert strong_digest(src) == before
    finally:
        subprocess.run(["umount", ro], check=False)
