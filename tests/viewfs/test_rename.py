"""rename across the layers: files, symlinks and whole directories of the original (recorded as
a redirect, nothing copied), over existing targets, RENAME_NOREPLACE and RENAME_EXCHANGE; never
EXDEV inside the view (the tests call rename(2) directly, without mv's copy fallback)."""
import os
import stat

import pytest

from conftest import tree_digest
from viewfs_fixtures import record, view, whiteout  # noqa: F401

RENAMEAT2 = r'''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, P(a).encode(), AT_FDCWD, P(b).encode(), flags) != 0:
        return errno.errorcode[ctypes.get_errno()]
    return None
NOREPLACE, EXCHANGE = 1, 2
'''

TREE = {"src/a": "a\n", "src/sub/b": "b\n", "src/sub/deeper/c": "c\n", "src/link": ("link", "a"),
        "dst/existing": "e\n", "file": "file\n", "other": "other\n"}


@pytest.mark.parametrize("mode", ["cow", "mincow"])
def test_rename_original_directory_keeps_original_intact(view, mode):
    view.make(TREE)
    if mode == "mincow":
        view.give_root("src", "dst")  # the real rename is refused
    view.mount(mode)
    before = view.orig_digest()
    view_before = view.py("result = [read('src/a'), read('src/sub/deeper/c'), ls('src/sub')]")
    r = view.py("result = [err(os.rename, P('src'), P('dst/moved')), ls(), ls('dst'),"
                " read('dst/moved/a'), read('dst/moved/sub/deeper/c'), ls('dst/moved/sub'),"
                " os.readlink(P('dst/moved/link')), st('src')]")
    assert r[0] is None
    assert "src" not in r[1] and r[2] == ["existing", "moved"]
    assert r[3:6] == view_before
    assert r[6] == "a" and r[7] == "ENOENT"
    assert view.orig_digest() == before
    # nothing was copied: the layer holds an empty directory and where its content is
    assert record(view.layer, "dst/moved")["redirect"] == "/src"
    assert sorted(p.name for p in (view.layer / "dst/moved").iterdir()) == []
    assert whiteout(view.layer, "src").is_file()
    # after a remount, and with changes inside the moved directory
    view.remount(mode)
    r = view.py("append('dst/moved/sub/b', 'more\\n'); os.unlink(P('dst/moved/a'));"
                "result = [ls('dst/moved'), read('dst/moved/sub/b'), st('src')]")
    assert r == [["link", "sub"], "b\nmore\n", "ENOENT"]
    if mode == "cow":
        assert (view.layer / "dst/moved/sub/b").read_text() == "b\nmore\n"
        assert view.orig_digest() == before
    else:
        # mincow: the user's own file is edited in place, root's directory gets a whiteout
        assert view.orig("src/sub/b").read_text() == "b\nmore\n"
        assert not (view.layer / "dst/moved/sub/b").exists()
        assert view.orig("src/a").exists()


def test_rename_directory_keeps_inode_numbers(view):
    view.make(TREE)
    view.mount("cow")
    before = view.py("result = [st('src')['ino'], st('src/sub')['ino'], st('src/a')['ino']]")
    view.py("os.rename(P('src'), P('renamed'))")
    after = view.py("result = [st('renamed')['ino'], st('renamed/sub')['ino'],"
                    " st('renamed/a')['ino']]")
    assert after == before
    view.remount("cow")
    assert view.py("result = [st('renamed')['ino'], st('renamed/sub')['ino'],"
                   " st('renamed/a')['ino']]") == before


def test_rename_back_and_forth(view):
    view.make(TREE)
    view.mount("cow")
    view.py("os.rename(P('src'), P('x')); os.rename(P('x'), P('y')); os.rename(P('y'), P('src'))")
    assert view.py("result = [ls(), ls('src'), read('src/sub/b')]") == [
        ["dst", "file", "other", "src"], ["a", "link", "sub"], "b\n"]
    view.remount("cow")
    assert view.py("result = [ls(), ls('src')]") == [["dst", "file", "other", "src"],
                                                    ["a", "link", "sub"]]


def test_new_directory_in_place_of_a_renamed_one_is_empty(view):
    view.make(TREE)
    view.mount("cow")
    assert view.py("os.rename(P('src'), P('moved')); os.mkdir(P('src'));"
                   "result = [ls('src'), ls('moved')]") == [[], ["a", "link", "sub"]]


def test_rename_over_existing_targets(view):
    view.make(TREE)
    view.mount("cow")
    r = view.py(
        "os.mkdir(P('emptydir'));"
        "result = [err(os.rename, P('file'), P('other')), read('other'), st('file'),"
        "  err(os.rename, P('src/sub'), P('emptydir')), ls('emptydir'),"
        "  err(os.rename, P('emptydir'), P('dst')),"
        "  err(os.rename, P('dst/existing'), P('emptydir')),"
        "  err(os.rename, P('emptydir'), P('dst/existing'))]")
    assert r == [None, "file\n", "ENOENT", None, ["b", "deeper"], "ENOTEMPTY", "EISDIR",
                 "ENOTDIR"]


def test_rename_symlink_and_special_files_of_the_original(view):
    """A symlink, a FIFO, a socket and a device node of the original, renamed in a cow,vstat
    view: each is copied up as what it is (the device, which the user may not create, as a
    plain file and a record) and shows at its new name with its type, target or device
    number; the old names are gone and the original keeps all four."""
    import socket
    view.make(TREE)
    os.mkfifo(view.mnt / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(view.mnt / "sock"))
    sock.close()
    os.mknod(view.mnt / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(view.mnt / "null", 0o666)  # (mknod applies the umask)
    for n in ("fifo", "sock", "null"):
        os.chown(view.mnt / n, view.user.uid, view.user.gid)
    view.mount("cow,vstat")
    before = view.orig_digest()
    code = ("for a, b in [('src/link', 'moved-link'), ('fifo', 'src/fifo2'), ('sock', 'sock2'),"
            "             ('null', 'dst/null2')]: os.rename(P(a), P(b))\n"
            "result = [os.readlink(P('moved-link')), st('src/fifo2')['fmt'], st('sock2')['fmt'],"
            " st('dst/null2'), [st(n) for n in ('src/link', 'fifo', 'sock', 'null')]]")
    r = view.py(code)
    assert r[0] == "a" and r[1] == stat.S_IFIFO and r[2] == stat.S_IFSOCK
    assert (r[3]["fmt"], r[3]["rdev"], r[3]["perm"]) == (stat.S_IFCHR, [1, 3], 0o666)
    assert r[4] == ["ENOENT"] * 4
    assert (view.layer / "moved-link").is_symlink()
    assert (view.layer / "src/fifo2").is_fifo()
    assert (view.layer / "dst/null2").is_file()  # never a real device node in the layer
    assert record(view.layer, "dst/null2")["type"] == "c"
    assert view.orig_digest() == before
    view.remount("cow,vstat")
    r = view.py("result = [st('src/fifo2')['fmt'], st('sock2')['fmt'], st('dst/null2')['rdev'],"
                " ls()]")
    assert r == [stat.S_IFIFO, stat.S_IFSOCK, [1, 3], ["dst", "file", "moved-link", "other",
                                                       "sock2", "src"]]


def test_renameat2_noreplace_and_exchange(view):
    view.make(TREE)
    view.mount("cow")
    r = view.py(RENAMEAT2 + "result = [renameat2('file', 'other', NOREPLACE), read('file'),"
                " renameat2('file', 'other', EXCHANGE), read('file'), read('other'),"
                " renameat2('src', 'dst', EXCHANGE), ls('src'), ls('dst'),"
                " renameat2('file', 'nothere', EXCHANGE), renameat2('file', 'new', NOREPLACE),"
                " ls()]")
    assert r == ["EEXIST", "file\n", None, "other\n", "file\n", None, ["existing"],
                 ["a", "link", "sub"], "ENOENT", None, ["dst", "new", "other", "src"]]
    view.remount("cow")
    assert view.py("result = [ls('src'), ls('dst'), read('new'), read('other')]") == [
        ["existing"], ["a", "link", "sub"], "other\n", "file\n"]


def test_mv_of_a_tree_never_sees_exdev(view):
    view.make({f"big/d{i}/f{j}": f"{i}.{j}\n" for i in range(20) for j in range(20)})
    view.mount("cow")
    digest = view.py("import hashlib\n"
                     "result = sorted((r, f) for r, ds, fs in os.walk(P('big')) for f in fs)")
    assert view.py("result = err(os.rename, P('big'), P('moved'))") is None
    assert view.py("result = sorted((r.replace('/moved', '/big'), f)"
                   " for r, ds, fs in os.walk(P('moved')) for f in fs)") == digest
    assert tree_digest(view.layer / "moved") == {}  # nothing copied


def test_rename_into_a_new_directory_and_out_again(view):
    view.make(TREE)
    view.mount("cow")
    r = view.py("os.makedirs(P('n1/n2')); os.rename(P('src/sub'), P('n1/n2/sub'));"
                "os.rename(P('n1/n2/sub/deeper'), P('deeper'));"
                "result = [ls('n1/n2/sub'), read('deeper/c'), ls('src')]")
    assert r == [["b"], "c\n", ["a", "link"]]
    view.remount("cow")
    assert view.py("result = [ls('n1/n2/sub'), read('deeper/c'), ls('src')]") == [
        ["b"], "c\n", ["a", "link"]]
