"""Listings: the union with each name once, the layer's entry winning (type and inode),
whiteouts and the layer's metadata never shown, d_type and d_ino as stat says, and
telldir/seekdir positions stable while entries are added."""
import pytest

from viewfs_fixtures import view  # noqa: F401

SEEKDIR = r'''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]
libc.opendir.restype = ctypes.c_void_p
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]
def names_from(d, n=None):
    out = []
    while n is None or len(out) < n:
        e = libc.readdir(d)
        if not e:
            break
        nm = e.contents.d_name.decode()
        if nm not in (".", ".."):
            out.append(nm)
    return out
'''


def test_union_each_name_once_layer_wins(view):
    view.make({"both-file": "o", "both-dir/o": "o", "only-orig": "o", "file-over-dir/x": "o",
               "dir-over-file": "o", "gone": "o"})
    view.make({"both-file": "layer", "both-dir/l": "l", "only-layer": "l", "file-over-dir": "l",
               "dir-over-file/y": "l"}, "layer")
    view.mount("cow")
    view.py("os.unlink(P('gone'))")
    r = view.py("result = sorted((e.name, e.is_dir(follow_symlinks=False),"
                " e.inode() == os.lstat(e.path).st_ino) for e in os.scandir(M))")
    assert r == [["both-dir", True, True], ["both-file", False, True],
                 ["dir-over-file", True, True], ["file-over-dir", False, True],
                 ["only-layer", False, True], ["only-orig", False, True]]
    assert view.py("result = [ls('both-dir'), read('both-file'), ls('dir-over-file'),"
                   " read('file-over-dir')]") == [["l", "o"], "layer", ["y"], "l"]


def test_d_type_of_every_kind(view):
    view.make({"f": "x", "d": None, "l": ("link", "f")})
    view.mount("cow")
    view.py("os.mkfifo(P('p')); os.symlink('d', P('l2')); os.mkdir(P('d2')); write('f2', '')")
    r = view.py("import stat\n"
                "result = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink(),"
                " e.is_file(follow_symlinks=False)) for e in os.scandir(M))")
    assert r == [["d", True, False, False], ["d2", True, False, False],
                 ["f", False, False, True], ["f2", False, False, True],
                 ["l", False, True, False], ["l2", False, True, False],
                 ["p", False, False, False]]


def test_telldir_seekdir_stable_while_entries_are_added(view):
    view.make({f"o{i:03d}": "x" for i in range(300)})
    view.make({f"l{i:03d}": "x" for i in range(300)}, "layer")
    view.mount("cow")
    r = view.py(SEEKDIR +
                "d = libc.opendir(M.encode())\n"
                "first = names_from(d, 250)\n"
                "pos = libc.telldir(d)\n"
                "nxt = names_from(d, 5)\n"
                "for i in range(50): write(f'new{i}', 'n')\n"
                "libc.seekdir(d, pos)\n"
                "again = names_from(d, 5)\n"
                "rest = names_from(d)\n"
                "libc.closedir(d)\n"
                "allnames = first + again + rest\n"
                "result = [nxt == again, len(allnames), len(set(allnames))]")
    assert r == [True, 600, 600]


def test_rewinddir_sees_new_entries(view):
    view.make({"a": "x"})
    view.mount("cow")
    r = view.py(SEEKDIR + "libc.rewinddir.argtypes = [ctypes.c_void_p]\n"
                "d = libc.opendir(M.encode()); one = names_from(d)\n"
                "write('b', 'y'); libc.rewinddir(d); two = names_from(d); libc.closedir(d)\n"
                "result = [sorted(one), sorted(two)]")
    assert r == [["a"], ["a", "b"]]


@pytest.mark.parametrize("mode", ["move", "merge", "cow", "mincow"])
def test_large_directory_lists_completely(view, mode):
    view.make({f"d/o{i:04d}": "" for i in range(1500)})
    view.make({f"d/l{i:04d}": "" for i in range(1500)}, "layer")
    view.mount(mode)
    want = (0 if mode == "move" else 1500) + 1500
    assert view.py("result = len(os.listdir(P('d')))") == want
