"""A real tree (thousands of files, nested directories, long and UTF-8 names, symlinks, hard
links, holes) written through umfuse-ext2 with tar reads back identical — names, contents,
modes, owners, nanosecond mtimes, inode sharing — through the mount, after a remount, and
through the kernel's own ext4 driver, also when an unprivileged user untars it on an image they
own; e2fsck finds every image clean."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import diff_r, make_tree, run, tree_digest
from e2lib import KINDS, as_user, assert_clean, dumpe2fs, ext2, uext2  # noqa: F401


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The source tree and its tar (owners and times as they are), made once."""
    base = tmp_path_factory.mktemp("sample")
    src = make_tree(base / "src", nfiles=1500, seed=7)
    paths = sorted(src.rglob("*"))
    for p in paths[::11]:
        os.lchown(p, 1234, 5678)  # owners that exist nowhere
    for p in paths[::7]:
        if not p.is_symlink():
            os.utime(p, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    os.chmod(paths[3], 0o4755 if paths[3].is_file() else 0o1777)
    with open(src / "sparse", "wb") as f:  # a hole, then data
        f.seek(3 << 20)
        f.write(b"end")
    tar = base / "tree.tar"
    run(["tar", "cf", tar, "--format=posix", "--sparse", "-C", src, "."])
    return src, tar


def digest(root, img):
    """tree_digest with times at the precision of the image: 128-byte inodes keep seconds."""
    d = tree_digest(root)
    if int(dumpe2fs(img)["Inode size"]) > 128:
        return d
    return {k: tuple(v // 10**9 * 10**9 if i == 3 and len(t) >= 5 else v for i, v in enumerate(t))
            for k, t in d.items()}


def inode_groups(root):
    """Sets of paths that share an inode (hard links), as path tuples."""
    by_ino = {}
    for p in Path(root).rglob("*"):
        st = p.lstat()
        by_ino.setdefault(st.st_ino, []).append(str(p.relative_to(root)))
    return sorted(tuple(sorted(v)) for v in by_ino.values() if len(v) > 1)


@pytest.mark.parametrize("kind, opts", [(k, ()) for k in KINDS] +
                         [("ext4-4k", ("writeback",)), ("ext3-4k", ("writeback",))])
def test_untar_reads_back_identical_and_fsck_clean(ext2, sample, kind, opts):
    src, tar = sample
    img = ext2.image(kind, size="256M")
    m = ext2.mount(img, *opts)
    (m.path / "t").mkdir()
    run(["tar", "xf", tar, "--sparse", "--numeric-owner", "-p", "-C", m.path / "t"])
    assert diff_r(src, m.path / "t") == ""
    assert digest(m.path / "t", img) == digest(src, img)
    assert inode_groups(m.path / "t") == inode_groups(src)
    m.unmount()
    assert_clean(img)

    # a second mount reads what the first wrote
    m = ext2.mount(img, "ro")
    assert digest(m.path / "t", img) == digest(src, img)
    m.unmount()


def owned_tree(root, uid, gid):
    """As the user who untarred it: the tree's digest without owners, its hard-link groups,
    and the paths not owned by the user (none: a user's tar cannot give files away)."""
    others = [str(p) for p in Path(root).rglob("*")
              if (p.lstat().st_uid, p.lstat().st_gid) != (uid, gid)]
    return tree_digest(root, owners=False), inode_groups(root), others


def test_untar_by_an_unprivileged_user_reads_back_identical_and_fsck_clean(uext2, user, utmp,
                                                                          sample):
    src, tar = sample
    mine = utmp / "tree.tar"  # the sample lives where only root can read
    shutil.copyfile(tar, mine)
    img = uext2.image("ext4-4k", size="256M", owner=user)
    m = uext2.mount(img, user=user)
    run(["mkdir", m.path / "t"], user=user)
    run(["tar", "xf", mine, "--sparse", "-p", "-C", m.path / "t"], user=user)
    digest_as_user, groups, others = as_user(user, owned_tree, m.path / "t", user.uid, user.gid)
    assert digest_as_user == tree_digest(src, owners=False)
    assert groups == inode_groups(src)
    assert others == []
    m.unmount()
    assert_clean(img)


def test_kernel_ext4_reads_what_umfuse_wrote_and_the_reverse(ext2, sample, rtmp):
    src, tar = sample
    img = ext2.image("ext4-4k", size="256M")
    m = ext2.mount(img)
    (m.path / "t").mkdir()
    run(["tar", "xf", tar, "--sparse", "--numeric-owner", "-p", "-C", m.path / "t"])
    m.unmount()
    kmnt = rtmp / "kernel"
    kmnt.mkdir()
    run(["mount", "-t", "ext4", "-o", "loop", img, kmnt])
    try:
        assert tree_digest(kmnt / "t") == tree_digest(src)
        assert inode_groups(kmnt / "t") == inode_groups(src)
        # the kernel writes: a directory with enough names to get an htree index
        big = kmnt / "kernel-big"
        big.mkdir()
        for i in range(3000):
            (big / f"kernel-file-{i:05d}-with-a-longer-name").write_bytes(b"k")
    finally:
        run(["umount", kmnt])
    assert_clean(img)
    out = subprocess.run(["debugfs", "-R", "stat /kernel-big", str(img)], capture_output=True,
                         text=True).stdout
    flags = int(out.split("Flags:")[1].split()[0], 16)
    assert flags & 0x1000, "the kernel did not index (htree) the directory"

    # umfuse-ext2 reads the kernel's htree directory and changes it; e2fsck stays happy
    m = ext2.mount(img)
    big = m.path / "kernel-big"
    names = sorted(os.listdir(big))
    assert len(names) == 3000
    assert (big / "kernel-file-01234-with-a-longer-name").read_bytes() == b"k"
    for i in range(0, 3000, 3):
        os.unlink(big / f"kernel-file-{i:05d}-with-a-longer-name")
    for i in range(2000):
        (big / f"added-by-umfuse-{i}").write_bytes(b"u")
    os.rename(big / "kernel-file-00001-with-a-longer-name", big / "renamed-in-htree")
    expected = 3000 - 1000 + 2000
    assert len(os.listdir(big)) == expected
    m.unmount()
    assert_clean(img)
    run(["mount", "-t", "ext4", "-o", "loop,ro", img, kmnt])
    try:
        assert len(os.listdir(kmnt / "kernel-big")) == expected
        assert (kmnt / "kernel-big" / "renamed-in-htree").read_bytes() == b"k"
        assert (kmnt / "kernel-big" / "added-by-umfuse-1999").read_bytes() == b"u"
    finally:
        run(["umount", kmnt])


def test_inode_numbers_are_the_ext2_numbers(ext2):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_text("x")
    os.link(m.path / "d" / "f", m.path / "hard")
    inos = {p: os.lstat(m.path / p).st_ino for p in ["", "d", "d/f", "hard", "lost+found"]}
    m.unmount()
    assert_clean(img)
    for p in ["d", "d/f", "hard", "lost+found"]:
        out = subprocess.run(["debugfs", "-R", f"stat /{p}", str(img)], capture_output=True,
                             text=True).stdout
        assert f"Inode: {inos[p]} " in out, out[:200]
    assert inos[""] == 2  # the root directory
    assert inos["hard"] == inos["d/f"]
    m = ext2.mount(img, "ro")
    r = run(["find", m.path, "-inum", str(inos["d/f"])])
    assert sorted(r.stdout.split()) == sorted([str(m.path / "d/f"), str(m.path / "hard")])
