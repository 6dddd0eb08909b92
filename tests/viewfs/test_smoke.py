from viewfs_fixtures import view  # noqa: F401


def test_view_smoke(view):
    view.make({"d/f": "orig\n", "keep": "k"})
    view.mount("cow")
    assert view.py("result = (read('d/f'), ls(''))") == ["orig\n", ["d", "keep"]]
