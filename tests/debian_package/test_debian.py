"""Debian packaging (issue 9): dpkg-buildpackage builds an installable .deb from a clean copy
of the working tree (a fresh clone of the commits, plus the uncommitted changes and the new
files git does not ignore: what CI checks is what is in the tree); apt-get installs it; every
shared library the installed programs load belongs to a package the .deb depends on (directly
or through the packages it names), so the Depends line would also hold on a machine without
the build's libraries; the installed daemons, man pages and nbdkit plugin are where users and
tools look for them; `mount -t fuse.NAME` works through mount.fuse3 with each of the seven
installed daemons, and /etc/fstab lines with two of them. The package is removed again at the
end.

The first test to use the package pays for a full -Dwerror build and apt-get: the module's
tests have a timeout above the build's own (1800 s) rather than pytest.ini's 300 s."""
import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, make_ext, make_fat, make_iso, mounted_at, run

pytestmark = pytest.mark.timeout(2700)

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
    """The working tree without build output: a clone of the commits (so nothing ignored, no
    build directory, comes along), the uncommitted changes to tracked files, and the files git
    does not track yet but does not ignore either (a new source file, a new test). Outside a
    git checkout, a copy without build directories."""
    if (REPO / ".git").exists():
        run(["git", "clone", "--quiet", "--no-hardlinks", REPO, dest])
        # uncommitted work is part of what CI checks when it runs on a working tree
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=REPO, capture_output=True)
        if diff.stdout:
            subprocess.run(["git", "apply", "--allow-empty"], cwd=dest, input=diff.stdout,
                           check=True)
        new = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout
        for rel in filter(None, new.decode().split("\0")):
            if (REPO / rel).is_file() or (REPO / rel).is_symlink():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dest / rel, follow_symlinks=False)
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


def owners(paths):
    """{path: the installed package that owns it}, by one dpkg -S. dpkg knows a file by the
    path its package ships: on a merged-/usr system /lib/x/libc.so.6 may be listed as
    /usr/lib/x/... or the other way round, so each path is asked in both spellings."""
    spellings = {}
    for path in paths:
        for p in {path, os.path.realpath(path)}:
            other = p[4:] if p.startswith("/usr/") else "/usr" + p
            spellings.setdefault(path, []).extend([p, other])
    asked = sorted({p for ps in spellings.values() for p in ps})
    r = subprocess.run(["dpkg", "-S", *asked], capture_output=True, text=True)
    found = {}
    for line in r.stdout.splitlines():
        if line.startswith("diversion "):
            continue
        pkgs, _, path = line.partition(": ")
        found[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    return {path: next((found[p] for p in ps if p in found), None)
            for path, ps in spellings.items()}


def installed_depends():
    """{package: the packages it names in Depends and Pre-Depends (every alternative, without
    version constraints and architecture qualifiers)} for every installed package."""
    out = run(["dpkg-query", "-W", "-f", "${Package}\t${Depends}, ${Pre-Depends}\n"]).stdout
    table = {}
    for line in out.splitlines():
        package, _, deps = line.partition("\t")
        names = set()
        for alt in re.split(r"[,|]", deps):
            name = re.sub(r"\(.*?\)|\[.*?\]", "", alt).strip().split(":")[0]
            if name:
                names.add(name)
        table.setdefault(package, set()).update(names)
    return table


def test_every_library_the_programs_load_comes_with_a_dependency(installed):
    """The test machine has every library installed already (install-deps), so a missing
    Depends would go unnoticed by apt-get: each library ldd resolves for an installed program
    must belong to a package in the closure of the .deb's Depends."""
    depends = installed_depends()
    closure, todo = set(), set(depends["viewos"])
    while todo:
        p = todo.pop()
        if p not in closure:
            closure.add(p)
            todo |= depends.get(p, set()) - closure
    plugindir = run(["pkg-config", "nbdkit", "--variable=plugindir"]).stdout.strip()
    programs = [f"/usr/bin/{c}" for c in COMMANDS] + [f"{plugindir}/nbdkit-umdev-plugin.so"]
    loads = []
    for prog in programs:
        out = run(["ldd", prog]).stdout
        assert "not found" not in out, f"{prog}: {out}"
        # linux-vdso.so.1 has no path: the kernel's
        loads += [(prog, m) for m in re.findall(r"(/\S+) \(0x", out)]
    assert len(loads) > len(programs), "ldd found no libraries"
    owner = owners({lib for _, lib in loads})
    missing = [f"{prog}: {lib} ({owner[lib] or 'no package'})" for prog, lib in loads
               if owner[lib] not in closure]
    assert not missing, f"Depends ({sorted(depends['viewos'])}) does not bring: {missing}"


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


@contextlib.contextmanager
def fstab_line(line):
    """/etc/fstab with one more line, restored afterwards."""
    saved = FSTAB.read_text() if FSTAB.exists() else None
    FSTAB.write_text((saved or "") + line)
    try:
        yield
    finally:
        if saved is None:
            FSTAB.unlink()
        else:
            FSTAB.write_text(saved)


def daemon_of(path):
    """The program serving the mount at path (mount.fuse3 execs it): its /proc/PID/exe."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if str(path).encode() in argv:
            return exe
    return None


def test_fstab_line_mounts_through_mount_fuse3(installed, rtmp):
    img, mnt = make_fat(rtmp / "fstab.img", fat=32, size="64M"), rtmp / "fstab-mnt"
    mnt.mkdir()
    with fstab_line(f"{img} {mnt} fuse.umfuse-fat noauto,ro 0 0\n"):
        run(["mount", str(mnt)])
        try:
            fields = mounted_at(mnt).split()
            assert "ro" in fields[5].split(",")
        finally:
            run(["umount", mnt])
            wait_released(img)


def test_fstab_line_mounts_ext2_read_write(installed, rtmp):
    img, mnt = make_ext(rtmp / "fstab-ext2.img", "ext2", "32M"), rtmp / "fstab-ext2"
    mnt.mkdir()
    with fstab_line(f"{img} {mnt} fuse.umfuse-ext2 noauto,rw,noatime 0 0\n"):
        run(["mount", str(mnt)])
        try:
            assert "fuse.umfuse-ext2" in mounted_at(mnt)
            assert daemon_of(mnt) == "/usr/bin/umfuse-ext2"
            (mnt / "from-fstab").write_text("written through an fstab mount\n")
        finally:
            run(["umount", mnt])
            wait_released(img)
    run(["e2fsck", "-fn", img])
    assert run(["debugfs", "-R", "cat /from-fstab", img]).stdout == \
        "written through an fstab mount\n"


def mount_ext2(rtmp):
    img, mnt = make_ext(rtmp / "ext2.img", "ext2", "32M"), rtmp / "mnt"
    mnt.mkdir()
    return ["-o", "rw", img], mnt, img


def check_ext2(mnt, img):
    (mnt / "f").write_text("installed ext2\n")

    def after():
        wait_released(img)
        run(["e2fsck", "-fn", img])
        return run(["debugfs", "-R", "cat /f", img]).stdout == "installed ext2\n"
    return after


def mount_iso(rtmp):
    src = rtmp / "src"
    src.mkdir()
    (src / "hello.txt").write_text("on the disc\n")
    img, mnt = make_iso(rtmp / "cd.iso", src), rtmp / "mnt"
    mnt.mkdir()
    return [img], mnt, img


def check_iso(mnt, img):
    assert (mnt / "hello.txt").read_text() == "on the disc\n"
    return lambda: True


def mount_mbr(rtmp):
    img, disk = rtmp / "disk.img", rtmp / "hda"
    run(["truncate", "-s", "32M", img])
    run(["sfdisk", "--quiet", img], input="size=4MiB\n")
    disk.touch()
    return ["-o", "mode=0644", img], disk, img


def check_mbr(disk, img):
    part = Path(str(disk) + "1")
    assert mounted_at(part) and part.stat().st_size == 4 << 20
    assert disk.stat().st_size == 32 << 20
    return lambda: wait_gone(part)


def mount_ramdisk(rtmp):
    return ["-o", "size=8M", "none"], rtmp / "ram", None


def check_ramdisk(ram, img):
    assert ram.stat().st_size == 8 << 20
    fd = os.open(ram, os.O_RDWR)
    try:
        os.pwrite(fd, b"ram" * 1000, 4096)
        assert os.pread(fd, 3000, 4096) == b"ram" * 1000
    finally:
        os.close(fd)
    return lambda: wait_gone(ram)


def mount_null(rtmp):
    return ["none"], rtmp / "null", None


def check_null(null, img):
    assert null.stat().st_size == 0 and null.read_bytes() == b""
    return lambda: wait_gone(null)


def wait_gone(path, timeout=30):
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} is still there"
        time.sleep(0.05)
    return True


MOUNTED_BY_TYPE = {"umfuse-ext2": (mount_ext2, check_ext2),
                   "umfuse-iso9660": (mount_iso, check_iso),
                   "umdev-mbr": (mount_mbr, check_mbr),
                   "umdev-ramdisk": (mount_ramdisk, check_ramdisk),
                   "umdev-null": (mount_null, check_null)}


@pytest.mark.parametrize("name", sorted(MOUNTED_BY_TYPE))
def test_mount_t_fuse_name_runs_the_installed_daemon(installed, rtmp, name):
    """`mount -t fuse.NAME SOURCE PATH` for the daemons the two tests around it do not cover
    (umfuse-fat, viewfs): mount.fuse3 runs /usr/bin/NAME, which serves what it should."""
    make, check = MOUNTED_BY_TYPE[name]
    args, path, img = make(rtmp)
    run(["mount", "-t", f"fuse.{name}", *args, path])
    try:
        assert f"fuse.{name}" in mounted_at(path)
        assert daemon_of(path) == f"/usr/bin/{name}"
        after = check(path, img)
    finally:
        run(["umount", path])
    assert after()


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
