"""The three namespaces of an image (Rock Ridge, Joliet, plain ISO 9660) and the options that
choose between them and shape their names: norock, nojoliet, map=, check=, and the owner and
modes (uid=, gid=, mode=, dmode=) of trees that record none. libarchive reads each namespace
on its own with --options iso9660:!rockridge / !joliet and serves as the oracle for names."""
import errno
import os
import stat

import pytest

from conftest import run
from isohelpers import errno_of, mkisofs, mount_iso

NAMES = ["readme.txt", "Makefile", "a.b.c", "Hello World.TXT", "smile-😀.txt", "été-日本.txt",
         "j" * 70]


@pytest.fixture(scope="module")
def names_tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    src = base / "src"
    (src / "SubDir").mkdir(parents=True)
    for i, n in enumerate(NAMES):
        (src / n).write_bytes(f"file {i}\n".encode())
    (src / "SubDir" / "inner").write_bytes(b"inner\n")
    (src / "link").symlink_to("readme.txt")
    os.utime(src / "readme.txt", (1234567890, 1234567890))
    return src


def bsdtar_names(iso, *disable):
    opts = ",".join(f"iso9660:!{d}" for d in disable)
    args = ["--options", opts] if opts else []
    lines = run(["bsdtar", "-tf", iso, *args]).stdout.splitlines()
    return {line.rstrip("/") for line in lines if line not in (".", "./")}


def tree_names(root):
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def test_norock_shows_the_joliet_tree(names_tree, tmp_path, mounts):
    iso = mkisofs(tmp_path / "rj.iso", names_tree, "-R", "-J", "-joliet-utf16")
    m = mount_iso(mounts, iso, tmp_path / "mnt", "norock")
    names = tree_names(m.path)
    assert names == bsdtar_names(iso, "rockridge")
    # UTF-16 with a surrogate pair (the emoji) and non-Latin characters come out as UTF-8;
    # Joliet keeps 64 characters of a longer name; symlinks do not exist in Joliet
    assert {"smile-😀.txt", "été-日本.txt", "Hello World.TXT", "j" * 64, "SubDir/inner"} <= names
    assert "link" not in names
    assert (m.path / "été-日本.txt").read_bytes() == b"file 5\n"
    # no POSIX attributes in Joliet: r-x for all and the mounting user, as Linux does
    st = os.stat(m.path / "readme.txt")
    assert stat.S_IMODE(st.st_mode) == 0o555 and (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(os.stat(m.path / "SubDir").st_mode) == 0o555
    assert int(st.st_mtime) == 1234567890  # the recording date of the record


def test_joliet_only_image_is_read_as_joliet(names_tree, tmp_path, mounts):
    iso = mkisofs(tmp_path / "j.iso", names_tree, "--norock", "-J", "-joliet-long")
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    names = tree_names(m.path)
    assert names == bsdtar_names(iso)
    assert "j" * 70 in names  # -joliet-long keeps up to 103 characters


@pytest.mark.parametrize("map_opt", [None, "map=normal", "map=n"])
def test_nojoliet_and_norock_show_plain_names_mapped_like_linux(names_tree, tmp_path, mounts,
                                                                map_opt):
    """map=normal (the default; map=n as the kernel abbreviates it): lower case, no ';1'
    version, no dot before it."""
    iso = mkisofs(tmp_path / "rj.iso", names_tree, "-R", "-J")
    m = mount_iso(mounts, iso, tmp_path / "mnt", "norock", "nojoliet", *filter(None, [map_opt]))
    names = tree_names(m.path)
    assert names == {n.lower() for n in bsdtar_names(iso, "rockridge", "joliet")}
    assert {"readme.txt", "makefile", "a_b.c", "subdir/inner"} <= names
    assert (m.path / "makefile").read_bytes() == b"file 1\n"


@pytest.mark.parametrize("map_opt", ["map=off", "map=o"])
def test_map_off_shows_identifiers_as_recorded(names_tree, tmp_path, mounts, map_opt):
    iso = mkisofs(tmp_path / "rj.iso", names_tree, "-R", "-J")
    m = mount_iso(mounts, iso, tmp_path / "mnt", "norock", "nojoliet", map_opt)
    names = set(os.listdir(m.path))
    assert {"README.TXT;1", "MAKEFILE.;1", "A_B.C;1", "SUBDIR"} <= names
    assert (m.path / "README.TXT;1").read_bytes() == b"file 0\n"


def test_plain_image_without_extensions(names_tree, tmp_path, mounts):
    """An image with neither Rock Ridge nor Joliet reads as plain ISO 9660 without options."""
    iso = mkisofs(tmp_path / "plain.iso", names_tree, "--norock")
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    assert "readme.txt" in os.listdir(m.path)
    assert (m.path / "subdir" / "inner").read_bytes() == b"inner\n"


def test_check_relaxed_matches_any_case_and_strict_does_not(names_tree, tmp_path, mounts):
    iso = mkisofs(tmp_path / "rj.iso", names_tree, "-R", "-J")
    strict = mount_iso(mounts, iso, tmp_path / "strict", "norock", "nojoliet")
    relaxed = mount_iso(mounts, iso, tmp_path / "relaxed", "norock", "nojoliet", "check=r")
    # plain names are strict by default
    assert errno_of(os.stat, strict.path / "README.TXT") == errno.ENOENT
    assert (relaxed.path / "README.TXT").read_bytes() == b"file 0\n"
    assert (relaxed.path / "SubDir" / "INNER").read_bytes() == b"inner\n"
    # Joliet is relaxed by default, as Windows expects; check=strict turns that off
    joliet = mount_iso(mounts, iso, tmp_path / "joliet", "norock")
    jstrict = mount_iso(mounts, iso, tmp_path / "jstrict", "norock", "check=strict")
    assert (joliet.path / "HELLO world.txt").read_bytes() == b"file 3\n"
    assert errno_of(os.stat, jstrict.path / "HELLO world.txt") == errno.ENOENT
    assert (jstrict.path / "Hello World.TXT").read_bytes() == b"file 3\n"
    # Rock Ridge names are exact by default
    rock = mount_iso(mounts, iso, tmp_path / "rock")
    assert errno_of(os.stat, rock.path / "README.TXT") == errno.ENOENT


def test_owner_and_modes_of_trees_without_rock_ridge(names_tree, tmp_path, mounts):
    iso = mkisofs(tmp_path / "rj.iso", names_tree, "-R", "-J")
    m = mount_iso(mounts, iso, tmp_path / "mnt", "norock", "uid=1234", "gid=99", "mode=0440",
                  "dmode=0750")
    st = os.stat(m.path / "readme.txt")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 99, 0o440)
    st = os.stat(m.path / "SubDir")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 99, 0o750)
    # with Rock Ridge, the image's own owners and modes count
    rock = mount_iso(mounts, iso, tmp_path / "rock", "uid=1234", "mode=0440")
    st = os.stat(rock.path / "readme.txt")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)


def test_files_without_rock_ridge_belong_to_the_mounting_user(names_tree, utmp, user, mounts):
    iso = mkisofs(utmp / "j.iso", names_tree, "--norock", "-J")
    user.chown(iso)
    m = mount_iso(mounts, iso, utmp / "mnt", user=user)
    r = run(["stat", "-c", "%u:%g %a", m.path / "readme.txt"], user=user)
    assert r.stdout.strip() == f"{user.uid}:{user.gid} 555"


@pytest.mark.parametrize("level", ["1", "2", "3"])
def test_plain_names_at_every_iso_level(names_tree, tmp_path, mounts, level):
    """Level 1 (8.3 names), 2 (31 characters) and 3 (multi-extent allowed) without extensions:
    the names libarchive reads, mapped like Linux, and every file's bytes."""
    iso = mkisofs(tmp_path / "l.iso", names_tree, "--norock", "-iso-level", level)
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    names = tree_names(m.path)
    assert names == {n.lower() for n in bsdtar_names(iso)}
    if level == "1":
        assert all(len(n.split(".")[0]) <= 8 for n in os.listdir(m.path))
    else:
        assert any(len(n) > 12 for n in os.listdir(m.path))

    def contents(root):
        return sorted(p.read_bytes() for p in root.rglob("*") if p.is_file() and
                      not p.is_symlink())

    assert contents(m.path) == contents(names_tree)
