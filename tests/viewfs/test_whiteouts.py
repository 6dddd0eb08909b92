"""Whiteouts and opaque directories: a deleted original entry is gone from stat, open and
listings, stays gone after a remount, and a new entry of the same name shows only the new
content; `rm -r dir && mkdir dir` gives an empty directory (View-OS brought the old children
back)."""
import pytest

from viewfs_fixtures import record, view, whiteout  # noqa: F401


@pytest.mark.parametrize("mode", ["cow", "mincow"])
def test_deleted_original_file_is_gone_everywhere_and_after_remount(view, mode):
    view.make({"d/f": "orig\n", "d/g": "other\n"})
    if mode == "mincow":
        view.give_root("d")  # root's directory: the real unlink is refused
    view.mount(mode)
    before = view.orig_digest()
    probe = "result = [st('d/f'), read('d/f'), ls('d'), err(os.open, P('d/f'), os.O_RDONLY)]"
    assert view.py("os.unlink(P('d/f'));" + probe) == ["ENOENT", "ENOENT", ["g"], "ENOENT"]
    assert whiteout(view.layer, "d/f").is_file()
    assert whiteout(view.layer, "d/f").stat().st_size == 0
    view.remount(mode)
    assert view.py(probe) == ["ENOENT", "ENOENT", ["g"], "ENOENT"]
    assert view.orig_digest() == before


def test_recreated_name_shows_new_content_and_drops_the_whiteout(view):
    view.make({"d/f": "orig\n"})
    view.mount("cow")
    r = view.py("os.unlink(P('d/f')); write('d/f', 'new\\n'); result = [read('d/f'), ls('d')]")
    assert r == ["new\n", ["f"]]
    assert not whiteout(view.layer, "d/f").exists()
    assert (view.layer / "d/f").read_text() == "new\n"
    view.remount("cow")
    assert view.py("result = read('d/f')") == "new\n"
    assert view.orig("d/f").read_text() == "orig\n"


def test_rm_r_then_mkdir_gives_an_empty_directory(view):
    view.make({"dir/a": "1", "dir/sub/b": "2", "dir/sub/c": "3"})
    view.mount("cow")
    before = view.orig_digest()
    view.sh("rm -r dir && mkdir dir")
    assert view.py("result = [ls('dir'), st('dir/a'), st('dir/sub')]") == [[], "ENOENT", "ENOENT"]
    assert record(view.layer, "dir").get("opaque") == "1"
    view.remount("cow")
    assert view.py("result = [ls('dir'), st('dir/sub/b')]") == [[], "ENOENT"]
    # new content in the opaque directory is the only content
    assert view.py("write('dir/n', 'n'); result = ls('dir')") == ["n"]
    assert view.orig_digest() == before


def test_deleted_directory_hides_its_whole_subtree(view):
    view.make({"top/mid/leaf": "x"})
    view.mount("cow")
    view.sh("rm -r top")
    assert view.py("result = [st('top'), st('top/mid'), st('top/mid/leaf'), ls()]") == [
        "ENOENT", "ENOENT", "ENOENT", []]
    assert whiteout(view.layer, "top").is_file()
    # the whiteouts of the children were folded into the directory's own
    assert not (view.layer / ".-" / "top").is_dir()


def test_layer_metadata_never_shows_in_the_view(view):
    view.make({"f": "orig\n"})
    view.mount("cow")
    r = view.py("os.unlink(P('f')); result = [ls(), st('.-'), err(os.mkdir, P('.-'))]")
    assert r == [[], "ENOENT", "EINVAL"]
    assert (view.layer / ".-").is_dir()


def test_merge_honours_whiteouts_read_only(view):
    """A layer made by cow, mounted with merge: deletions stay deleted; the layer is not
    written (merge never writes SOURCE)."""
    view.make({"d/f": "orig\n", "d/g": "g\n"})
    view.mount("cow")
    view.py("os.unlink(P('d/f'))")
    view.unmount()
    layer_before = view.layer_digest()
    view.mount("merge")
    r = view.py("result = [ls('d'), err(os.open, P('d/f'), os.O_CREAT | os.O_WRONLY, 0o644)]")
    assert r == [["g"], "EROFS"]
    assert view.layer_digest() == layer_before


def test_whiteout_of_a_name_recreated_as_a_directory(view):
    """A file of the original deleted and a directory made in its place: no merge with
    anything, the directory is empty."""
    view.make({"x": "file\n"})
    view.mount("cow")
    assert view.py("os.unlink(P('x')); os.mkdir(P('x')); result = [ls('x'), st('x')['fmt']]") == [
        [], 0o040000]
    view.remount("cow")
    assert view.py("result = ls('x')") == []
