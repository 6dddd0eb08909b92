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

from conftest import make_ext, mounted_at, run, sanitizer_env, viewos_bin
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


@pytest.mark.parametrize("mode", ["rw", "ro"])
def test_every_change_fails_with_erofs_and_the_image_is_untouched(small, tmp_path, mounts, mode):
    """-o ro is accepted (and is what every mount is); -o rw is accepted and not granted."""
    _, iso = small
    before = sha(iso)
    m = mount_iso(mounts, iso, tmp_path / "mnt", mode)
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
         f"{viewos_bin(DAEMON)}#{iso}", mnt], env=sanitizer_env())
    try:
        line = mounted_at(mnt)
        assert f"fuse.{DAEMON}" in line and "ro" in line.split()[5].split(",")
        assert os.readlink(mnt / "link") == "file"
        assert (mnt / "dir" / "inner").read_bytes() == (src / "dir" / "inner").read_bytes()
    finally:
        run(["umount", mnt])
    wait_for_release(iso)


def on_path():
    """The environment of a mount helper that finds the built daemon on PATH."""
    return sanitizer_env(dict(os.environ, PATH=f"{os.path.dirname(viewos_bin(DAEMON))}:"
                                             f"{os.environ['PATH']}"))


def wait_for_release(img, timeout=60):
    """Until no process holds the image (the daemon has exited); a hang guard only."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["fuser", "-s", str(img)], stderr=subprocess.DEVNULL).returncode == 0:
        assert time.monotonic() < deadline, f"the daemon still holds {img} after {timeout}s"
        time.sleep(0.05)


@pytest.mark.parametrize("opts", [None, "nojoliet,norock,map=off"])
def test_mount_fuse3_type_fuse_umfuse_iso9660_runs_the_daemon_from_path(small, tmp_path, opts):
    """What `mount -t fuse.umfuse-iso9660 SOURCE MOUNTPOINT -o OPTS` runs: mount.fuse3 with
    that type finds umfuse-iso9660 on PATH and gives it the source, the mount point and the
    options; the daemon detaches once mounted, read-only. (mount(8) itself clears PATH: the
    next test goes through it with the program where an installed one would be.)"""
    src, iso = small
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = sha(iso)
    run(["mount.fuse3", iso, mnt, "-t", f"fuse.{DAEMON}"] + (["-o", opts] if opts else []),
        env=on_path())
    try:
        line = mounted_at(mnt)
        assert f" - fuse.{DAEMON} " in line and str(iso) in line
        assert "ro" in line.split()[5].split(",")
        if opts:  # the options reached the daemon: plain ISO 9660 identifiers, as recorded
            assert "FILE.;1" in os.listdir(mnt)
        else:
            assert os.readlink(mnt / "link") == "file"
            assert (mnt / "dir" / "inner").read_bytes() == (src / "dir" / "inner").read_bytes()
    finally:
        run(["umount", mnt])
    wait_for_release(iso)
    assert not mounted_at(mnt)
    assert sha(iso) == before


def test_mount_t_fuse_umfuse_iso9660_as_installed(small, tmp_path):
    """`mount -t fuse.umfuse-iso9660 SOURCE MOUNTPOINT` itself, in a private mount namespace
    in which the built program is where an installed one is found (/usr/local/sbin, on the
    default PATH that mount(8) leaves its helpers)."""
    src, iso = small
    mnt, out, bindir = tmp_path / "mnt", tmp_path / "out", tmp_path / "sbin"
    for d in (mnt, out, bindir):
        d.mkdir()
    (bindir / DAEMON).symlink_to(viewos_bin(DAEMON))
    script = f"""
        set -e
        mount --bind '{bindir}' /usr/local/sbin
        trap 'umount "{mnt}" 2>/dev/null || fuser -sk "{iso}" 2>/dev/null || true' EXIT
        mount -t fuse.{DAEMON} '{iso}' '{mnt}'
        grep " {mnt} " /proc/self/mountinfo > '{out}/mountinfo'
        readlink '{mnt}/link' > '{out}/link'
        cat '{mnt}/dir/inner' > '{out}/inner'
        umount '{mnt}'
        while fuser -s '{iso}' 2>/dev/null; do sleep 0.05; done
    """
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env=sanitizer_env(), timeout=120)
    assert f" - fuse.{DAEMON} " in (out / "mountinfo").read_text()
    assert (out / "link").read_text() == "file\n"
    assert (out / "inner").read_bytes() == (src / "dir" / "inner").read_bytes()
    assert r.stderr == ""


def test_bad_source_through_mount_fuse3_is_one_line(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run(["mount.fuse3", tmp_path / "nope.iso", mnt, "-t", f"fuse.{DAEMON}"], env=on_path(),
            check=False)
    assert r.returncode != 0
    assert r.stderr.splitlines() == [
        f"{DAEMON}: cannot open {tmp_path}/nope.iso: No such file or directory"]
    assert not mounted_at(mnt)


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
