"""The command: options, bad input (one line, non-zero exit, nothing mounted, image untouched),
read-only behaviour, mount(8), El Torito images, and block sources other than an image file
(an NBD export, and a device file on a FUSE mount as umdev makes them)."""
import errno
import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_ext, mounted_at, run, viewos_bin
from isohelpers import DAEMON, describe, errno_of, mkisofs, mount_iso, sha, assert_same_tree


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("small")
    src = base / "src"
    (src / "dir").mkdir(parents=True)
    (src / "file").write_text("hello\n")
    (src / "dir" / "inner").write_bytes(os.urandom(300_000))
    (src / "link").symlink_to("file")
    iso = mkisofs(base / "small.iso", src, "-R", "-J")
    return src, iso


def refused(args, mnt, status):
    """Run the daemon expecting failure: returns its one line of error."""
    r = run([viewos_bin(DAEMON), *args], check=False)
    assert r.returncode == status, r
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{DAEMON}: ")
    assert not mounted_at(mnt)
    return lines[0]


def test_help_and_version():
    r = run([viewos_bin(DAEMON), "--help"])
    assert r.stdout.startswith(f"usage: {DAEMON} [options] SOURCE MOUNTPOINT")
    for opt in ["norock", "nojoliet", "map=off|normal", "check=relaxed|strict", "session=N",
                "sbsector=BLOCK", "uid=UID", "gid=GID", "mode=MODE", "dmode=MODE"]:
        assert f"-o {opt}" in r.stdout
    r = run([viewos_bin(DAEMON), "--version"])
    assert r.stdout.startswith(f"{DAEMON} (viewos) ")


@pytest.mark.parametrize("opts, words", [
    ("bogus", "unknown option 'bogus'"),
    ("map=weird", "invalid value 'weird' for option 'map' (expected off or normal)"),
    ("map=acorn", "Acorn extensions are not supported"),
    ("check=maybe", "invalid value 'maybe' for option 'check' (expected relaxed or strict)"),
    ("session=abc", "invalid value 'abc' for option 'session'"),
    ("session=1,sbsector=0", "options 'session' and 'sbsector' cannot be combined"),
    ("norock=1", "option 'norock' takes no value"),
])
def test_bad_option_gives_one_line_and_nothing_mounted(small, tmp_path, opts, words):
    _, iso = small
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    line = refused(["-o", opts, iso, mnt], mnt, 1)
    assert words in line


def bad_sources(tmp):
    """name -> (path, the end of the expected message)"""
    empty = tmp / "empty.iso"
    empty.write_bytes(b"")
    noise = tmp / "noise.iso"
    noise.write_bytes(os.urandom(1 << 20))
    ext = Path(make_ext(tmp / "ext.img", "ext2", size="4M"))
    return {
        "missing": (tmp / "nope.iso", "No such file or directory"),
        "empty": (empty, "not an ISO 9660 image (only 0 bytes)"),
        "noise": (noise, "not an ISO 9660 image (no primary volume descriptor at block 16)"),
        "ext2": (ext, "not an ISO 9660 image (no primary volume descriptor at block 16)"),
        "directory": (tmp, "is a directory, not an image or a device"),
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "noise", "ext2", "directory"])
def test_bad_source_gives_one_line_and_nothing_mounted(tmp_path, kind):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    path, words = bad_sources(tmp_path)[kind]
    before = sha(path) if path.is_file() else None
    line = refused([path, mnt], mnt, 2)
    assert line.endswith(words) and str(path) in line
    if before:
        assert sha(path) == before


def test_truncated_image_is_refused(small, tmp_path):
    _, iso = small
    cut = tmp_path / "cut.iso"
    root_block = int.from_bytes(iso.read_bytes()[16 * 2048 + 158:16 * 2048 + 162], "little")
    cut.write_bytes(iso.read_bytes()[:root_block * 2048])  # the descriptors, not the root
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    line = refused([cut, mnt], mnt, 2)
    assert line == (f"{DAEMON}: cannot mount {cut}: primary root directory lies outside the "
                    "image (truncated image?)")


def test_missing_mountpoint(small, tmp_path):
    _, iso = small
    line = refused([iso, tmp_path / "nowhere"], tmp_path / "nowhere", 32)
    assert line == f"{DAEMON}: cannot mount on {tmp_path}/nowhere: No such file or directory"


def test_image_written_by_another_program_is_refused(small, tmp_path):
    """A writer holding the image (as umfuse-ext2 -o rw would, with an exclusive lock)."""
    _, iso = small
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with open(iso, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        line = refused([iso, mnt], mnt, 2)
    assert line == f"{DAEMON}: {iso} is in use by another program that writes it"


def test_every_change_fails_with_erofs_and_the_image_is_untouched(small, tmp_path, mounts):
    _, iso = small
    before = sha(iso)
    m = mount_iso(mounts, iso, tmp_path / "mnt", "rw")  # rw is not granted
    p = m.path
    assert "ro" in mounted_at(p).split()[5].split(",")
    attempts = {
        "create": lambda: open(p / "new", "w"),
        "write": lambda: open(p / "file", "r+"),
        "truncate": lambda: os.truncate(p / "file", 0),
        "mkdir": lambda: os.mkdir(p / "newdir"),
        "unlink": lambda: os.unlink(p / "file"),
        "rmdir": lambda: os.rmdir(p / "dir"),
        "rename": lambda: os.rename(p / "file", p / "moved"),
        "link": lambda: os.link(p / "file", p / "hard"),
        "symlink": lambda: os.symlink("x", p / "sym"),
        "mknod": lambda: os.mkfifo(p / "fifo"),
        "chmod": lambda: os.chmod(p / "file", 0o777),
        "chown": lambda: os.chown(p / "file", 1, 1),
        "utime": lambda: os.utime(p / "file", (1, 1)),
        "setxattr": lambda: os.setxattr(p / "file", "user.x", b"1"),
    }
    for what, fn in attempts.items():
        assert errno_of(fn) == errno.EROFS, what
    assert (p / "file").read_text() == "hello\n"
    m.unmount()
    assert sha(iso) == before


def test_detached_daemon_returns_once_mounted_and_exits_on_unmount(small, tmp_path):
    src, iso = small
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run([viewos_bin(DAEMON), iso, mnt])
    try:
        assert mounted_at(mnt)
        assert (mnt / "file").read_text() == "hello\n"
    finally:
        run(["fusermount3", "-u", mnt])
    assert not mounted_at(mnt)


def test_mount_t_fuse_through_mount_fuse3(small, tmp_path):
    src, iso = small
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run(["mount", "-t", "fuse", "-o", f"nojoliet,noatime,subtype={DAEMON}",
         f"{viewos_bin(DAEMON)}#{iso}", mnt])
    try:
        line = mounted_at(mnt)
        assert f"fuse.{DAEMON}" in line and "ro" in line.split()[5].split(",")
        assert os.readlink(mnt / "link") == "file"
        assert (mnt / "dir" / "inner").read_bytes() == (src / "dir" / "inner").read_bytes()
    finally:
        run(["umount", mnt])


def test_el_torito_boot_image_is_ignored_and_harmless(tmp_path, mounts):
    src = tmp_path / "src"
    (src / "boot").mkdir(parents=True)
    (src / "boot" / "loader.bin").write_bytes(os.urandom(2048 * 4))
    (src / "readme").write_text("bootable\n")
    iso = mkisofs(tmp_path / "boot.iso", src, "-R", "-J", "-b", "boot/loader.bin", "-c",
                  "boot/boot.cat", "-no-emul-boot", "-boot-load-size", "4")
    assert "El Torito" in run(["xorriso", "-indev", iso, "-report_el_torito", "plain"]).stdout
    m = mount_iso(mounts, iso, tmp_path / "mnt")
    mine = describe(m.path)
    assert mine.pop("boot/boot.cat")["type"] == 0o100000  # the catalog shows as a file
    assert_same_tree(describe(src), mine)


@pytest.fixture
def nbdkit(tmp_path):
    """nbdkit serving a file on a Unix socket; stopped at the end (after the mounts, which
    are torn down first because `mounts` is requested after this fixture)."""
    procs = []

    def start(path):
        sock, pidfile = tmp_path / "nbd.sock", tmp_path / "nbd.pid"
        p = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-r", "-P", pidfile, "-U",
                              sock, "file", path], stderr=subprocess.PIPE)
        procs.append(p)
        for _ in range(500):
            if pidfile.exists():
                return sock
            time.sleep(0.01)
        pytest.fail("nbdkit did not start: " + p.stderr.read().decode())

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def test_image_over_nbd(small, tmp_path, nbdkit, mounts):
    src, iso = small
    sock = nbdkit(iso)
    m = mount_iso(mounts, f"nbd+unix:///?socket={sock}", tmp_path / "mnt")
    assert_same_tree(describe(src), describe(m.path))


def test_image_through_a_device_file_on_a_fuse_mount(small, tmp_path, mounts):
    """umdev shows devices as regular files on FUSE mounts; vo-testfs (the foundation's test
    daemon) shows the image the same way, as dev/data."""
    src, iso = small
    dev = tmp_path / "dev"
    dev.mkdir()
    mounts.start("vo-testfs", "-o", "ro", iso, dev, mountpoint=dev)
    m = mount_iso(mounts, dev / "data", tmp_path / "mnt")
    assert_same_tree(describe(src), describe(m.path))


@pytest.mark.parametrize("how", [["-s"], ["-o", "max_threads=2"], ["-d"]])
def test_threading_and_debug_options(small, tmp_path, mounts, how):
    src, iso = small
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = mounts.start(DAEMON, *how, iso, mnt, mountpoint=mnt)
    assert_same_tree(describe(src), describe(m.path))
    if how == ["-d"]:
        m.unmount()
        assert "opcode: READDIRPLUS" in m.stderr()
