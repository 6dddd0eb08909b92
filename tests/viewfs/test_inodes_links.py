"""Hard links and inode numbers: `ln` of an original file makes both names one file (nlink
right at the first stat, a write through one name seen through the other); st_ino is the same
before and after a copy-up, across remounts of the same layer, and unique within the view, also
when the original and the layer are on different file systems; every name of an original file
with several names follows its copy-up, also after a remount (the layer's index)."""
import os
import subprocess

import pytest

from viewfs_fixtures import record, view  # noqa: F401


@pytest.mark.parametrize("mode", ["cow", "mincow", "move"])
def test_ln_of_a_file_makes_one_file(view, mode):
    where = "orig" if mode != "move" else "layer"
    view.make({"d/f": "one\n"}, where)
    if mode == "mincow":
        view.give_root("d")  # the real link is refused: done in the layer
    view.mount(mode)
    r = view.py("os.link(P('d/f'), P('d/g')); a, b = st('d/f'), st('d/g');"
                "append('d/g', 'two\\n');"
                "result = [a['nlink'], b['nlink'], a['ino'] == b['ino'], read('d/f')]")
    assert r == [2, 2, True, "one\ntwo\n"]
    view.remount(mode)
    r = view.py("a, b = st('d/f'), st('d/g'); append('d/f', 'three\\n');"
                "result = [a['nlink'], a['ino'] == b['ino'], read('d/g')]")
    assert r == [2, True, "one\ntwo\nthree\n"]
    if mode != "move":
        assert view.orig("d/f").read_text() == "one\n"


def test_unlink_one_name_of_a_link_keeps_the_other(view):
    view.make({"f": "data\n"})
    view.mount("cow")
    r = view.py("os.link(P('f'), P('g')); os.unlink(P('f'));"
                "result = [st('g')['nlink'], read('g'), st('f')]")
    assert r == [1, "data\n", "ENOENT"]
    view.remount("cow")
    assert view.py("result = [st('g')['nlink'], read('g'), st('f')]") == [1, "data\n", "ENOENT"]


def test_a_removed_file_never_returns_as_the_new_file_that_got_its_number(view):
    """ext4 gives a freed inode number to the next new file at once: the view must not take the
    new file for the removed one (whose kernel inode is still held by an O_PATH fd), or the old
    fd would show the new file's attributes and data, with nlink 1."""
    view.mount("cow")
    r = view.py("reused = revived = 0\n"
                "for i in range(30):\n"
                "    write('a', 'A' * 100); fd = os.open(P('a'), os.O_PATH)\n"
                "    ino = os.fstat(fd).st_ino; os.unlink(P('a')); write('b', 'B' * 7)\n"
                "    reused += st('b')['ino'] == ino\n"
                "    try:\n"
                "        s = os.fstat(fd); revived += s.st_nlink != 0 or s.st_size != 100\n"
                "    except FileNotFoundError:\n"
                "        pass\n"
                "    os.close(fd); os.unlink(P('b'))\n"
                "result = [reused, revived]")
    assert r[0] > 0, "the layer's file system never reused a number: nothing was tested"
    assert r[1] == 0, f"{r[1]} of 30 removed files came back as the new file"


def test_a_file_replaced_by_a_rename_is_never_opened_as_its_replacement(view):
    """A rename over a name frees the old file; the kernel may still open it (here through an
    O_PATH fd and /proc/self/fd; in a race, by a lookup just before the rename). The view must
    not open whatever has its old name now: the reader of the load test got the new file's
    bytes cut to the old file's size."""
    view.mount("cow")
    r = view.py("out = []\n"
                "for i in range(10):\n"
                "    write('a', 'A' * 4); write('b', 'B' * 8)\n"
                "    fd = os.open(P('a'), os.O_PATH); os.rename(P('b'), P('a'))\n"
                "    try:\n"
                "        with open(f'/proc/self/fd/{fd}', 'rb') as f:\n"
                "            out.append(f.read().decode())\n"
                "    except FileNotFoundError:\n"
                "        out.append('ENOENT')\n"
                "    os.close(fd)\n"
                "result = [sorted(set(out)), read('a')]")
    assert set(r[0]) <= {"ENOENT", "AAAA"}, r[0]
    assert r[1] == "B" * 8


def test_nlink_and_ctime_change_at_once(view):
    view.make({"f": "x"})
    view.mount("cow")
    r = view.py("import time\n"
                "c0 = st('f')['ctime']; time.sleep(0.05); os.link(P('f'), P('g'));"
                "s1 = st('f'); os.unlink(P('g')); s2 = st('f');"
                "result = [s1['nlink'], s1['ctime'] > c0, s2['nlink'], s2['ctime'] >= s1['ctime']]")
    assert r == [2, True, 1, True]


@pytest.mark.parametrize("mode", ["cow", "mincow"])
def test_st_ino_stable_across_copy_up_and_remount(view, mode):
    view.make({"f": "x\n", "d/g": "y\n", "d/sl": ("link", "g"), "e": None})
    view.give_root("f") if mode == "mincow" else None
    view.mount(mode)
    names = ["f", "d", "d/g", "d/sl", "e"]
    before = view.py(f"result = [st(n)['ino'] for n in {names!r}]")
    real = [os.lstat(view.orig(n)).st_ino for n in names]
    assert before == real  # the original's own numbers show through
    view.py("append('f', 'more'); append('d/g', 'more'); os.utime(P('d/sl'), (1, 1),"
            " follow_symlinks=False); os.chmod(P('e'), 0o700)")
    assert (view.layer / "f").exists()
    after = view.py(f"result = [st(n)['ino'] for n in {names!r}]")
    assert after == before
    view.remount(mode)
    assert view.py(f"result = [st(n)['ino'] for n in {names!r}]") == before
    assert record(view.layer, "f")["ino"] == str(before[0])


def unique_inodes(view):
    return view.py("seen = {}\n"
                   "for r, ds, fs in os.walk(M):\n"
                   "    for n in ds + fs:\n"
                   "        s = os.lstat(os.path.join(r, n))\n"
                   "        seen.setdefault(s.st_ino, set()).add(os.path.join(r, n))\n"
                   "result = {str(k): sorted(v) for k, v in seen.items() if len(v) > 1}")


def test_inodes_unique_with_layer_on_another_file_system(view, user, tmp_path_factory):
    """The original on the disk (/tmp), the layer on tmpfs: their inode numbers overlap, the
    view's do not."""
    shm = subprocess.check_output(["mktemp", "-d", "/dev/shm/viewfs-test.XXXXXX"],
                                  text=True).strip()
    try:
        os.chown(shm, user.uid, user.gid)
        view.make({f"o{i}": f"{i}\n" for i in range(50)})
        view.layer.rmdir()
        view.layer = type(view.layer)(shm)
        view.mount("cow")
        view.py("for i in range(50): write(f'n{i}', 'new')\n"
                "for i in range(0, 50, 2): append(f'o{i}', 'changed')")
        assert os.stat(shm).st_dev != os.stat(view.base).st_dev
        assert unique_inodes(view) == {}
        view.remount("cow")
        assert unique_inodes(view) == {}
    finally:
        if view.m is not None:
            view.unmount()
        subprocess.run(["rm", "-rf", shm])


def test_inodes_unique_with_a_mount_inside_the_original(view, rtmp):
    """A tmpfs mounted below the original (a third file system): still no collisions."""
    view.make({f"f{i}": "x" for i in range(20)})
    view.make({"sub": None})
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"uid={view.user.uid}", "t", view.mnt / "sub"],
                   check=True)
    try:
        for i in range(20):
            (view.mnt / "sub" / f"g{i}").write_text("y")
        subprocess.run(["chown", "-R", f"{view.user.uid}", view.mnt / "sub"], check=True)
        view.mount("cow")
        view.py("for i in range(20): write(f'n{i}', 'new'); write(f'sub/m{i}', 'new')")
        assert unique_inodes(view) == {}
        view.unmount()
    finally:
        subprocess.run(["umount", view.mnt / "sub"])


def test_original_hard_links_share_inode_in_the_view(view):
    view.make({"a": "same\n"})
    os.link(view.mnt / "a", view.mnt / "b")
    view.mount("cow")
    r = view.py("append('a', 'x'); result = [st('a')['ino'] == st('b')['ino'], read('b')]")
    assert r == [True, "same\nx"]


def test_rename_one_name_of_an_original_hard_link(view):
    view.make({"x": "same\n"})
    os.link(view.mnt / "x", view.mnt / "y")
    view.mount("cow")
    r = view.py("st('x'); st('y'); e = err(os.rename, P('y'), P('z'));"
                "result = [e, ls(), read('z'), read('x')]")
    assert r == [None, ["x", "z"], "same\n", "same\n"]
    assert (view.layer / "z").read_text() == "same\n"
    assert view.orig("y").exists()


@pytest.mark.parametrize("mode", ["cow", "mincow"])
def test_original_hard_links_follow_the_copy_after_remount(view, mode):
    """d/a and e/b are one original file; a is copied up (an append). After a remount b still
    shows the copy, not the original: one file with one st_ino (the original's), nlink 2, and a
    write through either name is seen through the other, in whichever order they are looked up.
    The layer keeps the copy in its index, the original keeps its content."""
    view.make({"d/a": "same\n", "e/x": "x"})
    os.link(view.mnt / "d/a", view.mnt / "e/b")
    if mode == "mincow":
        view.give_root("d/a")  # the real write is refused: a copy-up
    ino = os.lstat(view.mnt / "d/a").st_ino
    view.mount(mode)
    r = view.py("append('d/a', 'x\\n'); result = [st('d/a')['ino'], st('e/b')['ino'], read('e/b')]")
    assert r == [ino, ino, "same\nx\n"]
    view.remount(mode)
    r = view.py("a, b = st('d/a'), st('e/b'); append('e/b', 'y\\n');"
                "result = [a['ino'], b['ino'], a['nlink'], b['nlink'], read('d/a'), read('e/b')]")
    assert r == [ino, ino, 2, 2, "same\nx\ny\n", "same\nx\ny\n"]
    view.remount(mode)
    r = view.py("b = st('e/b'); a = st('d/a'); result = [b['ino'], a['ino'], read('e/b')]")
    assert r == [ino, ino, "same\nx\ny\n"]
    assert (view.layer / ".-" / ".-" / "index" / str(ino)).read_text() == "same\nx\ny\n"
    assert not (view.layer / "e/b").exists()
    assert view.orig("d/a").read_text() == "same\n"
    # the other name renamed (it gets its own link of the copy), then the first one deleted
    r = view.py("os.rename(P('e/b'), P('e/c')); os.unlink(P('d/a'));"
                "result = [st('e/c')['ino'], st('e/c')['nlink'], read('e/c'), st('d/a'), ls('e')]")
    assert r == [ino, 1, "same\nx\ny\n", "ENOENT", ["c", "x"]]
    view.remount(mode)
    assert view.py("result = [st('e/c')['ino'], read('e/c'), st('d/a'), st('e/b')]") == [
        ino, "same\nx\ny\n", "ENOENT", "ENOENT"]
    assert view.orig("e/b").read_text() == "same\n"


def test_vstat_change_of_an_original_hard_link_shows_through_every_name(view):
    """chown and chmod of one name of an original file with several names record metadata
    without copying data, for the file: every name shows it, also after a remount."""
    view.make({"a": "x"})
    os.link(view.mnt / "a", view.mnt / "b")
    view.mount("cow,vstat")
    code = "result = [(st(n)['uid'], st(n)['perm'], st(n)['ino']) for n in ('a', 'b')]"
    r = view.py("os.chown(P('a'), 0, 0); os.chmod(P('b'), 0o4711);" + code)
    assert r[0] == r[1] and r[0][:2] == [0, 0o4711]
    assert not (view.layer / "a").exists() and not (view.layer / "b").exists()
    view.remount("cow,vstat")
    assert view.py(code) == r
