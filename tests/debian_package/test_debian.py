"""Debian packaging (issue 9): dpkg-buildpackage builds an installable .deb from a clean copy
of the tree; apt-get installs it; the installed daemons, man pages and nbdkit plugin are where
users and tools look for them, and mount -t fuse.NAME and /etc/fstab work through mount.fuse3
with the installed files. The package is removed again at the end."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, make_fat, mounted_at, run

COMMANDS = ["viewfs", "umdev-mbr", "umdev-ramdisk", "umdev-null", "umfuse-ext2", "umfuse-fat",
            "umfuse-iso9660"]
MAN_PAGES = COMMANDS + ["nbdkit-umdev-plugin"]
FSTAB = Path("/etc/fstab")


def wait_released(image, timeout=30):
    """umount of a (non-fuseblk) FUSE mount returns before the daemon has written its last
    state and exited: wait, as a careful user would, until no process holds the image."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["fuser", "-s", str(image)]).returncode == 0:
        assert time.monotonic() < deadline, f"a daemon still holds {image}"
        time.sleep(0.05)


def clean_copy(dest):
    """The tree as a fresh clone has it: tracked files only when this is a git checkout."""
    if (REPO / ".git").exists():
        run(["git", "clone", "--quiet", "--no-hardlinks", REPO, dest])
        # uncommitted work is part of what CI checks when it runs on a working tree
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=REPO, capture_output=True)
        if diff.stdout:
            subprocess.run(["git", "apply", "--allow-empty"], cwd=dest, input=diff.stdout,
                           check=True)
    else:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns("build*", "obj-*", ".git"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("deb")
    src = work / "viewos"
    clean_copy(src)
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, timeout=1800, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    debs = sorted(work.glob("viewos_*.deb"))
    assert len(debs) == 1, list(work.iterdir())
    run(["apt-get", "install", "-y", "-q", str(debs[0])], timeout=600,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    try:
        yield debs[0]
    finally:
        run(["apt-get", "purge", "-y", "-q", "viewos"], check=False, timeout=600)


def test_package_metadata_and_dependencies(installed):
    info = run(["dpkg-deb", "--field", installed, "Package", "Depends"]).stdout
    assert "Package: viewos" in info
    for dep in ("fuse3", "libfuse3-3", "libext2fs2", "libnbd0", "libc6"):
        assert dep in info, info


def test_files_are_where_users_and_tools_look(installed):
    files = run(["dpkg", "-L", "viewos"]).stdout.split()
    for c in COMMANDS:
        assert f"/usr/bin/{c}" in files, c
        assert os.access(f"/usr/bin/{c}", os.X_OK)
    for page in MAN_PAGES:
        assert f"/usr/share/man/man1/{page}.1.gz" in files, page
    plugindir = run(["pkg-config", "nbdkit", "--variable=plugindir"]).stdout.strip()
    assert f"{plugindir}/nbdkit-umdev-plugin.so" in files


def test_installed_commands_run(installed):
    for c in COMMANDS:
        r = run([f"/usr/bin/{c}", "--version"])
        assert r.stdout.startswith(f"{c} (viewos) "), r.stdout


def test_nbdkit_finds_the_installed_plugin(installed):
    r = run(["nbdkit", "-U", "-", "umdev", "ramdisk", "size=1M", "--run", "nbdinfo --size $uri"])
    assert r.stdout.strip() == str(1 << 20)


def test_mount_t_fuse_name_with_installed_daemon(installed, rtmp):
    img, mnt = make_fat(rtmp / "fat.img", fat=16, size="32M"), rtmp / "mnt"
    mnt.mkdir()
    run(["mount", "-t", "fuse.umfuse-fat", img, mnt])
    try:
        assert "fuse.umfuse-fat" in mounted_at(mnt)
        (mnt / "Hello World.txt").write_text("installed")
    finally:
        run(["umount", mnt])
    wait_released(img)
    run(["fsck.fat", "-n", img])
    assert "Hello World.txt" in run(["mdir", "-i", img, "-b", "::"]).stdout


def test_fstab_line_mounts_through_mount_fuse3(installed, rtmp):
    img, mnt = make_fat(rtmp / "fstab.img", fat=32, size="64M"), rtmp / "fstab-mnt"
    mnt.mkdir()
    saved = FSTAB.read_text() if FSTAB.exists() else None
    line = f"{img} {mnt} fuse.umfuse-fat noauto,ro 0 0\n"
    FSTAB.write_text((saved or "") + line)
    try:
        run(["mount", str(mnt)])
        try:
            fields = mounted_at(mnt).split()
            assert "ro" in fields[5].split(",")
        finally:
            run(["umount", mnt])
            wait_released(img)
    finally:
        if saved is None:
            FSTAB.unlink()
        else:
            FSTAB.write_text(saved)


def test_mount_t_fuse_viewfs_with_installed_daemon(installed, rtmp):
    layer, mnt = rtmp / "layer", rtmp / "view"
    layer.mkdir()
    mnt.mkdir()
    (mnt / "original").write_text("below\n")
    run(["mount", "-t", "fuse.viewfs", "-o", "cow", layer, mnt])
    try:
        assert "fuse.viewfs" in mounted_at(mnt)
        with open(mnt / "original", "a") as f:
            f.write("changed in the view\n")
        assert (mnt / "original").read_text() == "below\nchanged in the view\n"
    finally:
        run(["umount", mnt])
    assert (mnt / "original").read_text() == "below\n"
    assert (layer / "original").read_text() == "below\nchanged in the view\n"
