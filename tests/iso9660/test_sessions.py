"""Multi-session images: the last session by default, any other with session=N (counted from 0,
as Linux's isofs counts them) or sbsector=N, in the two layouts that exist in image files:
xorriso's own (sessions grown in place, with a copy of the newest volume descriptors at block
16) and mkisofs -C/-M sessions appended to the first one, as a dump of a multi-session CD has
them."""
import pytest

from conftest import mounted_at, run, viewos_bin
from isohelpers import DAEMON, mkisofs, mount_iso, xorriso


def read_tree(root):
    return {p.name: p.read_text() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """Three sessions written by xorriso into one file: add, change and add, remove."""
    base = tmp_path_factory.mktemp("grown")
    s1, s2 = base / "s1", base / "s2"
    s1.mkdir()
    s2.mkdir()
    (s1 / "a").write_text("one\n")
    (s2 / "a").write_text("one, changed\n")
    (s2 / "b").write_text("two\n")
    iso = base / "grown.iso"
    xorriso("-outdev", iso, "-map", s1, "/", "-commit")
    xorriso("-dev", iso, "-map", s2, "/", "-commit")
    xorriso("-dev", iso, "-rm", "/b", "--", "-commit")
    toc = run(["xorriso", "-indev", iso, "-toc"]).stdout + run(
        ["xorriso", "-indev", iso, "-toc"]).stderr
    starts = [int(line.split(",")[1]) for line in toc.splitlines()
              if line.startswith("ISO session")]
    assert len(starts) == 3, toc
    return iso, starts


EXPECTED = {
    1: {"a": "one\n"},
    2: {"a": "one, changed\n", "b": "two\n"},
    3: {"a": "one, changed\n"},
}


def test_the_last_session_is_mounted_by_default(grown, tmp_path, mounts):
    iso, _ = grown
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    assert read_tree(m.path) == EXPECTED[3]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_session_option_counts_from_0_as_the_kernel_does(grown, tmp_path, mounts, n):
    """session=0 is the oldest session, as Linux's isofs counts them (it reads track N + 1 of
    a CD's table of contents); xorriso -toc numbers the same session 1."""
    iso, _ = grown
    m = mount_iso(mounts, iso, tmp_path / "mnt", f"session={n - 1}")
    assert read_tree(m.path) == EXPECTED[n]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sbsector_mounts_the_session_starting_there(grown, tmp_path, mounts, n):
    """The session starts are those xorriso -toc reports."""
    iso, starts = grown
    m = mount_iso(mounts, iso, tmp_path / "mnt", f"sbsector={starts[n - 1]}")
    assert read_tree(m.path) == EXPECTED[n]


@pytest.mark.parametrize("opts, words", [
    ("session=3", "session=3 does not exist (the image has 3 sessions: session=0 to session=2)"),
    ("sbsector=5", "no ISO 9660 volume starts at block 5 (sbsector=5)"),
])
def test_a_session_that_does_not_exist_is_refused(grown, tmp_path, opts, words):
    """(The kernel, asked for a track a CD does not have, logs it and mounts the last session;
    here a script that asks for a session it cannot have gets an error, not other data.)"""
    iso, _ = grown
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run([viewos_bin(DAEMON), "-o", opts, iso, mnt], check=False)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"{DAEMON}: cannot mount {iso}: {words}"]
    assert not mounted_at(mnt)


@pytest.mark.parametrize("value", ["99", "100000", "-1"])
def test_a_session_number_isofs_refuses_is_a_bad_option(grown, tmp_path, value):
    """isofs takes session=0 to 98 (track numbers run from 1 to 99): beyond is a bad option,
    exit 1, one line, nothing mounted."""
    iso, _ = grown
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run([viewos_bin(DAEMON), "-o", f"session={value}", iso, mnt], check=False)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{DAEMON}: ") and "session" in lines[0], \
        r.stderr
    assert not mounted_at(mnt)


def test_sessions_appended_with_mkisofs_multisession(tmp_path, mounts):
    """mkisofs -C LAST,NEXT -M OLD writes a session addressed from block NEXT; placed there
    after the first session it makes the layout of a multi-session disc."""
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    s1.mkdir()
    s2.mkdir()
    (s1 / "first").write_text("from session 1\n")
    (s2 / "second").write_text("from session 2\n")
    first = mkisofs(tmp_path / "s1.iso", s1, "-R")
    nwa = (first.stat().st_size // 2048 + 31) // 32 * 32
    part = mkisofs(tmp_path / "s2.part", s2, "-R", "-C", f"0,{nwa}", "-M", first)
    disc = tmp_path / "disc.iso"
    run(["cp", first, disc])
    run(["dd", f"if={part}", f"of={disc}", "bs=2048", f"seek={nwa}", "conv=notrunc",
         "status=none"])
    last = mount_iso(mounts, disc, tmp_path / "last")
    assert read_tree(last.path) == {"first": "from session 1\n", "second": "from session 2\n"}
    one = mount_iso(mounts, disc, tmp_path / "one", "session=0")  # the first, counted from 0
    assert read_tree(one.path) == {"first": "from session 1\n"}
    two = mount_iso(mounts, disc, tmp_path / "two", "session=1")
    assert read_tree(two.path) == read_tree(last.path)
