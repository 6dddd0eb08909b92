"""A layer changed by hand is untrusted input (docs/viewfs-layer-format.md): quick checks of the
damage that tests/reliability/test_corrupt_viewfs.py found harmful, each one on its own. A
forged `ino=` never makes a name show another file's data; a journal, whiteout or record name
holding a FIFO, a symlink or a directory never hangs the daemon nor leads it out of the layer;
metadata that cannot be read gives EIO (or refuses the mount), never the entries it deletes."""
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor, TimeoutError

import pytest

from conftest import mounted_at, run, viewos_bin
from viewfs_fixtures import view  # noqa: F401


def give(v):
    subprocess.run(["chown", "-R", "-h", f"{v.user.uid}:{v.user.gid}", str(v.layer)],
                   check=True)


def within(m, seconds, fn):
    """fn(), an action in the view of daemon m; a failure when it has not returned within
    seconds (a watchdog, not a measure). The daemon is killed then: that ends the request the
    action waits for, which no signal to the action itself can (a hang must fail the test,
    not stop the suite)."""
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(fn)
        try:
            return job.result(seconds)
        except TimeoutError:
            m.kill()
            pytest.fail(f"no answer within {seconds}s: the daemon hangs")


@pytest.mark.parametrize("first", ["a", "b", "c"])
def test_a_forged_inode_number_never_shows_another_files_data(view, first):
    """`a` (an original with a record) and `c` (copied into the layer) claim `b`'s inode
    number in their records: each name still shows its own data, whichever is looked up
    first (the daemon used to give every later name the node of the first one)."""
    view.make({"a": "data of a\n", "b": "data of b\n", "c": "data of c\n"})
    view.mount("cow,vstat")
    ino_b = view.py("append('c', 'more\\n'); result = st('b')['ino']")
    view.unmount()
    for name in ("a", "c"):
        (view.layer / ".-" / (name + "\x7f")).write_text(f"ino={ino_b}\n")
    give(view)
    view.mount("cow,vstat")
    order = [first] + sorted({"a", "b", "c"} - {first})
    got = view.py(f"result = {{n: [read(n), st(n)['nlink']] for n in {order!r}}}")
    assert got == {"a": ["data of a\n", 1], "b": ["data of b\n", 1],
                   "c": ["data of c\nmore\n", 1]}


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_a_journal_that_is_no_regular_file_is_ignored(view, kind):
    """Only a regular file can be a journal viewfs wrote. A FIFO there used to hang the mount
    (its open waited for a writer); a symlink is not followed (here to a journal outside that
    asks to rename `f`). Each is ignored with a warning; the view is the layer's."""
    view.make({"f": "f\n"})
    work = view.layer / ".-" / ".-"
    work.mkdir(parents=True)
    journal = work / "journal"
    outside = view.base / "elsewhere"
    outside.write_text("rename=/f\nto=/g\nwhiteout=1\n")
    if kind == "fifo":
        os.mkfifo(journal)
    elif kind == "symlink":
        journal.symlink_to(outside)
    else:
        journal.mkdir()
    give(view)
    m = view.mount("cow")
    assert view.py("result = [ls(), read('f')]") == [["f"], "f\n"]
    view.unmount()
    assert (f"viewfs: rename journal {view.layer}/.-/.-/journal is not a regular file: "
            "ignored") in m.stderr().splitlines()
    assert os.path.isdir(journal) if kind == "directory" else not os.path.lexists(journal)
    assert outside.read_text() == "rename=/f\nto=/g\nwhiteout=1\n"
    assert not (view.layer / ".-" / "f").exists()


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_whiteout_made_over_a_fifo_or_symlink_replaces_it(view, kind):
    """A FIFO or a symlink at a whiteout's name is no whiteout (the entry shows); deleting
    the entry then replaces it with a real whiteout, without opening it (the open of a FIFO
    for writing would wait for a reader) and without writing where a symlink points."""
    view.make({"x": "x\n", "y": "y\n"})
    (view.layer / ".-").mkdir()
    target = view.base / "target"
    target.write_text("untouched\n")
    if kind == "fifo":
        os.mkfifo(view.layer / ".-" / "x")
    else:
        (view.layer / ".-" / "x").symlink_to(target)
    give(view)
    m = view.mount("cow")
    assert within(m, 30, lambda: view.py("result = [ls(), err(os.unlink, P('x')), ls()]")) == [
        ["x", "y"], None, ["y"]]
    view.remount("cow")
    assert view.py("result = ls()") == ["y"]
    w = view.layer / ".-" / "x"
    assert w.is_file() and not w.is_symlink() and w.stat().st_size == 0
    assert target.read_text() == "untouched\n"


def test_unreadable_metadata_of_a_directory_gives_eio_never_deleted_entries(view):
    """SOURCE/.-/d that cannot be read: every name of d gives EIO (it used to be read as
    empty, which showed the deleted entry again). The failure is not kept: once the
    metadata is readable again, d shows as it should without a remount."""
    view.make({"d/gone": "deleted\n", "d/kept": "kept\n"})
    view.mount("cow")
    view.py("os.unlink(P('d/gone'))")
    view.unmount()
    meta = view.layer / ".-" / "d"
    assert (meta / "gone").is_file()
    os.chmod(meta, 0)
    m = view.mount("cow")
    r = view.py("result = [ls(), ls('d'), st('d/gone'), read('d/gone'), read('d/kept')]")
    assert r == [["d"], "EIO", "EIO", "EIO", "EIO"]
    os.chmod(meta, 0o755)
    r = view.py("result = [ls('d'), st('d/gone'), read('d/kept')]")
    assert r == [["kept"], "ENOENT", "kept\n"]
    view.unmount()
    assert (f"viewfs: cannot read the layer metadata {view.layer}/.-/d/: Permission denied: "
            "its entries give EIO") in m.stderr().splitlines()


def test_unreadable_root_metadata_refuses_the_mount(view):
    """SOURCE/.- that cannot be read: the mount is refused in one line (a merge would have
    shown every deleted entry again)."""
    view.make({"gone": "deleted\n", "kept": "kept\n"})
    view.mount("cow")
    view.py("os.unlink(P('gone'))")
    view.unmount()
    os.chmod(view.layer / ".-", 0)
    r = run([viewos_bin("viewfs"), "-o", "merge", view.layer, view.mnt], check=False,
            user=view.user)
    if mounted_at(view.mnt):  # (the bug: it mounted, and showed `gone` again)
        run(["fusermount3", "-u", view.mnt], user=view.user)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        f"viewfs: cannot set up the layer metadata {view.layer}/.-: Permission denied"]
    assert not mounted_at(view.mnt)
