"""mincow on a tree with files the user can and cannot change (made by root): what the user may
do is done on the original (an editable file in their home is edited in place), what they may
not is done in the layer (copy-up, whiteout), decided per operation; and nothing lets the user
read or write on the host what they could not without the view."""
import os

import pytest

from viewfs_fixtures import view, whiteout  # noqa: F401

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
