"""except=PATH: paths at or under PATH (on component boundaries) behave exactly like the
original in every mode; an excepted name shows in listings even in move mode."""
import pytest

from viewfs_fixtures import view  # noqa: F401

ORIG = {"tmp/f": "orig-tmp\n", "tmpx/f": "orig-tmpx\n", "a/b/c/f": "deep\n", "a/b/d": "d\n",
        "top": "top\n"}
LAYER = {"tmp/f": "layer-tmp\n", "tmpx/f": "layer-tmpx\n", "a/b/c/f": "layer-deep\n",
         "a/b/d": "layer-d\n", "top": "layer-top\n"}


@pytest.mark.parametrize("mode", ["move", "merge", "cow", "mincow"])
def test_excepted_path_is_the_original_in_every_mode(view, mode):
    view.make(ORIG, "orig")
    view.make(LAYER, "layer")
    view.mount(f"{mode},except=/tmp:/a/b/c")
    r = view.py("result = [read('tmp/f'), read('a/b/c/f'), read('tmpx/f'), read('a/b/d')]")
    other = "layer-tmpx\n", "layer-d\n"
    assert r == ["orig-tmp\n", "deep\n", *other]
    # changes under the except= paths go to the original, whatever the mode
    r = view.py("result = [append('tmp/f', 'x'), write('tmp/new', 'n'), err(os.mkdir, P('a/b/c/sub')),"
                " err(os.unlink, P('a/b/c/f')), ls('tmp'), ls('a/b/c')]")
    assert r == [None, None, None, None, ["f", "new"], ["sub"]]
    assert view.orig("tmp/f").read_text() == "orig-tmp\nx"
    assert view.orig("tmp/new").read_text() == "n"
    assert view.orig("a/b/c/sub").is_dir() and not view.orig("a/b/c/f").exists()
    assert (view.layer / "tmp/f").read_text() == "layer-tmp\n"  # the layer's copy is ignored
    assert not (view.layer / ".-" / "tmp").exists() and not (view.layer / "tmp/new").exists()


def test_component_boundary(view):
    view.make(ORIG, "orig")
    view.mount("cow,except=/tmp")
    view.py("append('tmp/f', 'x'); append('tmpx/f', 'y')")
    assert view.orig("tmp/f").read_text() == "orig-tmp\nx"
    assert view.orig("tmpx/f").read_text() == "orig-tmpx\n"  # /tmpx is not /tmp
    assert (view.layer / "tmpx/f").read_text() == "orig-tmpx\ny"


def test_excepted_name_listed_in_move_mode(view):
    """move shows SOURCE alone, but an excepted name appears without a placeholder."""
    view.make(ORIG, "orig")
    view.make({"other": "o\n"}, "layer")
    view.mount("move,except=/tmp")
    assert view.py("result = [ls(), ls('tmp'), st('top'), read('tmp/f')]") == [
        ["other", "tmp"], ["f"], "ENOENT", "orig-tmp\n"]


def test_rename_and_link_across_the_boundary(view):
    """An excepted path is another file system as far as the view is concerned."""
    view.make(ORIG, "orig")
    view.mount("cow,except=/tmp")
    r = view.py("result = [err(os.rename, P('top'), P('tmp/top')), err(os.link, P('tmp/f'), P('g')),"
                " err(os.rename, P('tmp/f'), P('tmp/g')), ls('tmp')]")
    assert r == ["EXDEV", "EXDEV", None, ["g"]]
    assert view.orig("tmp/g").exists()


def test_whiteouts_do_not_hide_excepted_paths(view):
    """A layer whose metadata deletes /tmp still shows the real /tmp under except=/tmp."""
    view.make(ORIG, "orig")
    view.mount("cow")
    view.py("import shutil; shutil.rmtree(P('tmp'))")
    view.remount("cow,except=/tmp")
    assert view.py("result = [ls('tmp'), read('tmp/f')]") == [["f"], "orig-tmp\n"]


def test_nested_except_path_reached_in_move_mode_with_an_empty_layer(view):
    """move,except=/a/b/c with a layer that has no /a: the directories on the way show (with
    only the way in them), and /a/b/c is the original's, in lookups and listings."""
    view.make({"a/b/c/f": "deep\n", "a/b/other": "o\n", "a/sibling": "s\n", "top": "t\n"},
              "orig")
    view.mount("move,except=/a/b/c")
    r = view.py("result = [ls(), ls('a'), ls('a/b'), ls('a/b/c'), read('a/b/c/f'),"
                " st('a/b/other'), st('a/sibling'), st('top'), st('a')['fmt'],"
                " write('a/b/c/new', 'n'), os.path.isdir(P('a/b'))]")
    assert r == [["a"], ["b"], ["c"], ["f"], "deep\n", "ENOENT", "ENOENT", "ENOENT",
                 0o040000, None, True]
    assert view.orig("a/b/c/new").read_text() == "n"
