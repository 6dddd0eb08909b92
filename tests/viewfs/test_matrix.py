"""The matrix of the issue: every mode × where the object is (only in the original, only in the
layer, in both) × every operation, checking the view, the layer and the original.

Where a change must land (the modes of viewfs(1)):
  move    the layer; an object only in the original does not exist (ENOENT);
  merge   the original for an object only there; an object of the layer is read-only (EROFS);
  cow     the layer; the original is never modified (whole-tree digest before and after:
          content, modes, owners, inode numbers, link counts, xattrs, mtime and ctime of every
          file and directory);
  mincow  the original when the user may change it (here: the original belongs to the user),
          the layer for an object the layer already holds.
In merge, and in mincow when the change goes to the original, SOURCE is not touched at all
(the same digest of the layer before and after).
The tree: directory d exists in both layers; the object is d/f (a file: "orig\\n" in the
original, "layer\\n" in the layer) or d/e (an empty directory)."""
import pytest

from viewfs_fixtures import view, whiteout  # noqa: F401

MODES = ["move", "merge", "cow", "mincow"]
PLACES = ["original", "layer", "both"]
ORIG, LAYER = "orig\n", "layer\n"
OTHER = {"keep/a": "untouched\n", "keep/b/c": "deep\n", "keep/link": ("link", "a")}


def where(mode, place, inside=False):
    """Where a change of the object lands: 'layer', 'orig', or the errno the view gives.
    inside: the change makes a new entry in the object (a directory); merge and mincow put new
    entries in the original whenever the original has that directory."""
    if mode == "move":
        return "ENOENT" if place == "original" else "layer"
    if mode == "cow":
        return "layer"
    in_orig = place == "original" or (inside and place == "both")
    if mode == "merge":
        return "orig" if in_orig else "EROFS"
    return "orig" if in_orig else "layer"


def visible(mode, place):
    """The content the view shows before any change."""
    if mode == "move" and place == "original":
        return "ENOENT"
    return LAYER if place in ("layer", "both") else ORIG


def build(view, place, kind):
    obj = "d/f" if kind == "file" else "d/e"
    orig = dict(OTHER, **{"d": None})
    layer = {"d": None}
    if place in ("original", "both"):
        orig[obj] = ORIG if kind == "file" else None
    if place in ("layer", "both"):
        layer[obj] = LAYER if kind == "file" else None
    view.make(orig, "orig")
    view.make(layer, "layer")
    return obj


class Case:
    """One operation: `act` runs in the view (as the user, Python with the view helpers) and sets
    result; `check(ctx)` asserts the view's answer and where the change went."""
    kind = "file"
    reads_only = False
    inside = False  # makes a new entry inside the object


# ---------------------------------------------------------------- file operations

class Read(Case):
    reads_only = True
    act = "result = read('d/f')"

    def check(self, c):
        assert c.result == c.visible


class Append(Case):
    act = "e = append('d/f', 'x'); result = [e, read('d/f')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result == [None, c.visible + "x"]
        c.landed("d/f", lambda p: p.read_text() == c.visible + "x")


class Truncate(Case):
    act = "result = [err(os.truncate, P('d/f'), 2), read('d/f')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result == [None, c.visible[:2]]
        c.landed("d/f", lambda p: p.read_text() == c.visible[:2])


class Chmod(Case):
    act = "result = [err(os.chmod, P('d/f'), 0o640), st('d/f')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result[0] is None and c.result[1]["perm"] == 0o640
        c.landed("d/f", lambda p: (p.stat().st_mode & 0o7777) == 0o640)


class ChownSelf(Case):
    """chown to the owner's own ids: a change like any other (cow copies up first)."""
    act = "result = [err(os.chown, P('d/f'), os.getuid(), os.getgid()), st('d/f')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result[0] is None and c.result[1]["uid"] == c.user.uid
        c.landed("d/f", lambda p: p.stat().st_uid == c.user.uid)


class ChownRoot(Case):
    """chown to root, without vstat: refused (EPERM) in every mode, nothing changes (not even a
    useless copy in the layer)."""
    act = "result = [err(os.chown, P('d/f'), 0, 0), st('d/f')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result[0] == "EPERM" and c.result[1]["uid"] == c.user.uid
        c.unchanged_original()
        assert c.view.layer_digest() == c.layer_before


class Utimes(Case):
    act = "result = [err(os.utime, P('d/f'), (1e9, 1e9)), st('d/f')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result[0] is None and c.result[1]["mtime"] == 10**18
        c.landed("d/f", lambda p: p.stat().st_mtime_ns == 10**18)


class Rename(Case):
    act = ("e = err(os.rename, P('d/f'), P('d/renamed'));"
           "result = [e, st('d/f'), read('d/renamed'), ls('d')]")

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result[0] is None and c.result[1] == "ENOENT" and c.result[2] == c.visible
        assert "f" not in c.result[3] and "renamed" in c.result[3]
        c.landed("d/renamed", lambda p: p.read_text() == c.visible)
        if c.where == "layer":
            assert not (c.view.layer / "d/f").exists()
            assert whiteout(c.view.layer, "d/f").exists() == (
                c.place != "layer" and c.mode != "move")


class Link(Case):
    act = ("e = err(os.link, P('d/f'), P('d/linked'));"
           "w = append('d/linked', 'y');"
           "result = [e, st('d/f'), st('d/linked'), read('d/f')]")

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        e, sf, sl, content = c.result
        assert e is None
        assert sf["ino"] == sl["ino"] and sf["nlink"] == 2 == sl["nlink"]
        assert content == c.visible + "y"  # one file: written through the other name
        c.landed("d/linked", lambda p: p.stat().st_ino == (p.parent / "f").stat().st_ino)


class Unlink(Case):
    act = "result = [err(os.unlink, P('d/f')), st('d/f'), ls('d')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result == [None, "ENOENT", []]
        if c.where == "layer":
            assert not (c.view.layer / "d/f").exists()
            assert whiteout(c.view.layer, "d/f").exists() == (
                c.place != "layer" and c.mode != "move")
        else:
            assert not c.view.orig("d/f").exists()


class Xattr(Case):
    act = ("e = err(os.setxattr, P('d/f'), 'user.test', b'hello');"
           "result = [e, os.getxattr(P('d/f'), 'user.test').decode() if e is None else None]")

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result == [None, "hello"]
        c.landed("d/f", lambda p: __import__("os").getxattr(p, "user.test") == b"hello")


# ---------------------------------------------------------------- directory operations

class Mkdir(Case):
    kind = "dir"
    inside = True
    act = "result = [err(os.mkdir, P('d/e/sub')), st('d/e/sub'), ls('d/e')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result[0] is None and c.result[2] == ["sub"]
        c.landed("d/e/sub", lambda p: p.is_dir())


class Rmdir(Case):
    kind = "dir"
    act = "result = [err(os.rmdir, P('d/e')), st('d/e'), ls('d')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result == [None, "ENOENT", []]
        if c.where == "layer":
            assert not (c.view.layer / "d/e").exists()
            assert whiteout(c.view.layer, "d/e").is_file() == (
                c.place != "layer" and c.mode != "move")
        else:
            assert not c.view.orig("d/e").exists()


class Create(Case):
    kind = "dir"
    inside = True
    act = "e = write('d/e/new', 'new\\n'); result = [e, read('d/e/new'), ls('d/e')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result == [None, "new\n", ["new"]]
        c.landed("d/e/new", lambda p: p.read_text() == "new\n")


class Symlink(Case):
    kind = "dir"
    inside = True
    act = "result = [err(os.symlink, '../target', P('d/e/sl')), err(os.readlink, P('d/e/sl')) or os.readlink(P('d/e/sl'))]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result == [None, "../target"]
        c.landed("d/e/sl", lambda p: __import__("os").readlink(p) == "../target")


class Mkfifo(Case):
    kind = "dir"
    inside = True
    act = "result = [err(os.mkfifo, P('d/e/fifo')), st('d/e/fifo')]"

    def check(self, c):
        if c.where in ("ENOENT", "EROFS"):
            assert c.result[0] == c.where
            return
        assert c.result[0] is None and c.result[1]["fmt"] == 0o010000
        c.landed("d/e/fifo", lambda p: p.is_fifo())


CASES = [Read, Append, Truncate, Chmod, ChownSelf, ChownRoot, Utimes, Rename, Link, Unlink,
         Xattr, Mkdir, Rmdir, Create, Symlink, Mkfifo]


class Ctx:
    def __init__(self, case, view, mode, place, result, orig_before, layer_before):
        self.view, self.mode, self.place, self.result = view, mode, place, result
        self.user = view.user
        self.where = where(mode, place, case.inside)
        self.visible = visible(mode, place)
        self.orig_before, self.layer_before = orig_before, layer_before

    def unchanged_original(self):
        assert self.view.orig_digest() == self.orig_before

    def landed(self, rel, ok):
        """The change is in the layer (and the original is untouched) or in the original (and
        the layer has no copy), as where() says."""
        if self.where == "layer":
            assert ok(self.view.layer / rel), f"{rel} not changed in the layer"
            self.unchanged_original()
        else:
            assert ok(self.view.orig(rel)), f"{rel} not changed in the original"
            assert not (self.view.layer / rel).exists(), f"{rel} was copied into the layer"


def case_id(case):
    return case.__name__.lower()


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("mode", MODES)
def test_operation(view, mode, place, case):
    c = case()
    build(view, place, c.kind)
    view.mount(mode)
    orig_before = view.orig_digest()
    layer_before = view.layer_digest()
    result = view.py(c.act)
    ctx = Ctx(c, view, mode, place, result, orig_before, layer_before)
    c.check(ctx)
    if ctx.where in ("ENOENT", "EROFS") or c.reads_only:
        assert view.orig_digest() == orig_before
        assert view.layer_digest() == layer_before
    if mode in ("cow", "move"):
        assert view.orig_digest() == orig_before  # the original is never modified
    if mode == "merge" or (mode == "mincow" and ctx.where == "orig"):
        assert view.layer_digest() == layer_before  # SOURCE is not touched
    view.unmount()
    if mode == "cow":
        assert view.orig_digest() == orig_before
