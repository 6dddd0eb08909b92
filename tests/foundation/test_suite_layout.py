"""The test suite itself: pytest imports test modules by their base name (tests/<component>/
is on sys.path), so two suites with a test_posix.py would collide at collection time."""
from collections import Counter

from conftest import REPO


def test_test_module_names_are_unique_across_suites():
    names = Counter(p.name for p in (REPO / "tests").rglob("*.py") if p.name != "conftest.py")
    assert [n for n, count in names.items() if count > 1] == []
