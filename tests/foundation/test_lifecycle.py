"""The daemon life cycle every viewos daemon shares (common/daemon.c), checked through
vo-testfs, the smallest daemon built on it: it shows a block source as MOUNTPOINT/data."""
import os
import signal
import subprocess
import time

import pytest

from conftest import BUILD, fuse_mounts, make_fat, mounted_at, run, sanitizer_env, viewos_bin

TESTFS = "vo-testfs"


def pids_serving(mountpoint):
    """Pids of vo-testfs processes whose command line names this mount point."""
    out = subprocess.run(["pgrep", "-f", f"vo-testfs.* {mountpoint}$"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def wait_gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
                 open(f"/proc/{p}/stat").read().split()[2] != "Z"]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_detached_daemon_returns_only_once_mounted(rtmp):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"hello world".ljust(4096, b"\0"))
    mnt.mkdir()
    # the source takes a second to open: the command must still not return before the mount
    r = run([viewos_bin(TESTFS), "-o", "sleep_start=1", img, mnt])
    try:
        assert r.stderr == ""
        assert mounted_at(mnt), "the command returned before the mount existed"
        assert (mnt / "data").read_bytes()[:11] == b"hello world"
        pids = pids_serving(mnt)
        assert len(pids) == 1
    finally:
        run(["fusermount3", "-u", mnt])
    assert wait_gone(pids), "the daemon did not exit after fusermount3 -u"
    assert not mounted_at(mnt)


@pytest.mark.parametrize("args, status, words", [
    (["-o", "bogus"], 1, ["unknown option 'bogus'"]),
    (["-o", "sleep_start=abc"], 1, ["invalid value 'abc'", "sleep_start"]),
    (["-o", "sleep_start"], 1, ["needs a value"]),
    (["--frobnicate"], 1, ["unknown option '--frobnicate'"]),
])
def test_bad_option_gives_one_line_and_nothing_mounted(rtmp, args, status, words):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"\0" * 4096)
    mnt.mkdir()
    r = run([viewos_bin(TESTFS), *args, img, mnt], check=False)
    assert r.returncode == status
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("vo-testfs: ")
    for w in words:
        assert w in lines[0]
    assert not mounted_at(mnt)


@pytest.mark.parametrize("foreground", [False, True])
def test_missing_source_gives_one_line_and_nothing_mounted(rtmp, foreground):
    mnt = rtmp / "mnt"
    mnt.mkdir()
    args = ["-f"] if foreground else []
    r = run([viewos_bin(TESTFS), *args, rtmp / "no-such.img", mnt], check=False)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"vo-testfs: cannot open {rtmp}/no-such.img: No such file or directory"]
    assert not mounted_at(mnt)


def test_missing_mountpoint_gives_one_line(rtmp):
    img = rtmp / "img"
    img.write_bytes(b"\0" * 4096)
    r = run([viewos_bin(TESTFS), img, rtmp / "nowhere"], check=False)
    assert r.returncode == 32
    assert r.stderr.splitlines() == [
        f"vo-testfs: cannot mount on {rtmp}/nowhere: No such file or directory"]


def mount_step_source(name, path, owner=None):
    """A source each daemon opens: mount-step failures come after it is open."""
    if name == TESTFS:
        path.write_bytes(b"\0" * 4096)
        if owner is not None:
            owner.chown(path)
    else:
        make_fat(path, fat=12, size="1440K", owner=owner)
    return path


def built(name):
    """Whether name is built (a build with -Dcomponents= may leave the fsmods out; CI builds
    everything, and a skip fails CI: see tests/conftest.py)."""
    return any(p.is_file() for p in BUILD.rglob(name))


def fails_at_the_mount_step(name, args, mnt, user=None):
    """Run a daemon whose mount itself fails: one line `NAME: cannot mount MNT: why`, exit
    32, nothing mounted. Returns why."""
    before = fuse_mounts()
    r = run([viewos_bin(name), *args], check=False, user=user)
    assert (r.returncode, r.stdout) == (32, ""), r
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    prefix = f"{name}: cannot mount {mnt}: "
    assert lines[0].startswith(prefix), lines[0]
    assert not mounted_at(mnt)
    assert not {m for m in fuse_mounts() - before if m.startswith(str(mnt))}
    return lines[0][len(prefix):]


# vo-testfs ends through vo_daemon_main (as umfuse-ext2 and umfuse-iso9660 do); umfuse-fat
# calls vo_mount itself. Both report mount failures the same way, in common/daemon.c.
MOUNT_STEP_DAEMONS = [TESTFS, "umfuse-fat"]


@pytest.mark.parametrize("name", MOUNT_STEP_DAEMONS)
def test_mount_point_fusermount3_refuses_gives_one_line(utmp, user, name):
    """A directory of root's: our checks pass (it exists and is a directory), then fusermount3
    refuses the user. Its reason, which names the path, is the one line."""
    if not built(name):
        pytest.skip(f"{name} is not built in {BUILD}")
    src = mount_step_source(name, utmp / "img", owner=user)
    mnt = utmp / "roots"
    mnt.mkdir()
    why = fails_at_the_mount_step(name, [src, mnt], mnt, user=user)
    assert why == f"fusermount3: user has no write access to mountpoint {mnt}"


@pytest.mark.parametrize("name", MOUNT_STEP_DAEMONS)
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "user"])
def test_option_the_kernel_rejects_gives_one_line(utmp, user, name, as_user):
    """blksize= belongs to fuseblk mounts: the kernel refuses it, through fusermount3 for a
    user and directly for root. (libfuse passes it on unchecked.)"""
    if not built(name):
        pytest.skip(f"{name} is not built in {BUILD}")
    who = user if as_user else None
    src = mount_step_source(name, utmp / "img", owner=user)
    mnt = utmp / "mnt"
    run(["mkdir", mnt], user=user)
    why = fails_at_the_mount_step(name, ["-o", "blksize=4096", src, mnt], mnt, user=who)
    assert why.endswith("mount failed: Invalid argument"), why


@pytest.mark.parametrize("name", MOUNT_STEP_DAEMONS)
def test_option_libfuse_cannot_parse_gives_one_line(rtmp, name):
    if not built(name):
        pytest.skip(f"{name} is not built in {BUILD}")
    src = mount_step_source(name, rtmp / "img")
    mnt = rtmp / "mnt"
    mnt.mkdir()
    why = fails_at_the_mount_step(name, ["-o", "max_read=abc", src, mnt], mnt)
    assert why == "invalid parameter in option `max_read=abc'"


def test_missing_arguments_give_usage(rtmp):
    r = run([viewos_bin(TESTFS), rtmp], check=False)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "vo-testfs: missing arguments (usage: vo-testfs [options] SOURCE MOUNTPOINT)"]


def test_help_and_version():
    r = run([viewos_bin(TESTFS), "--help"])
    assert r.stdout.startswith("usage: vo-testfs [options] SOURCE MOUNTPOINT")
    assert "-o sleep_start=SECONDS" in r.stdout and "-o allow_other" in r.stdout
    r = run([viewos_bin(TESTFS), "--version"])
    assert r.stdout.startswith("vo-testfs (viewos) ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_unmounts_and_flushes(rtmp, mounts, sig):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"\0" * 65536)
    mnt.mkdir()
    m = mounts.start(TESTFS, img, mnt, mountpoint=mnt)
    with open(mnt / "data", "r+b") as f:
        f.write(b"durable")
    m.proc.send_signal(sig)
    assert m.proc.wait(10) == 0
    m.unmounted = True
    assert not mounted_at(mnt)
    assert f"vo-testfs: flushed {img}: ok" in m.stderr()
    assert img.read_bytes()[:7] == b"durable"


def test_fusermount_u_flushes_and_exits_zero(rtmp, mounts):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"\0" * 65536)
    mnt.mkdir()
    m = mounts.start(TESTFS, img, mnt, mountpoint=mnt)
    m.unmount()  # fails the test unless the daemon exits 0
    assert f"vo-testfs: flushed {img}: ok" in m.stderr()


def test_read_only_option(rtmp, mounts):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"x" * 4096)
    mnt.mkdir()
    mounts.start(TESTFS, "-o", "ro", img, mnt, mountpoint=mnt)
    assert " ro," in mounted_at(mnt) or "ro," in mounted_at(mnt).split()[5]
    with pytest.raises(OSError):
        with open(mnt / "data", "r+b") as f:
            f.write(b"y")
    assert img.read_bytes() == b"x" * 4096


def test_unprivileged_user_mounts_and_unmounts(utmp, user, mounts):
    img, mnt = utmp / "img", utmp / "mnt"
    run(["truncate", "-s", "1M", img], user=user)
    run(["mkdir", mnt], user=user)
    m = mounts.start(TESTFS, img, mnt, mountpoint=mnt, user=user)
    assert f"user_id={user.uid}" in mounted_at(mnt)
    run(["dd", f"of={mnt}/data", "conv=notrunc", "status=none"], user=user, input="as user")
    m.unmount()
    assert img.read_bytes()[:7] == b"as user"


def test_mount_t_fuse_type_through_mount_fuse3(rtmp):
    """mount -t fuse.NAME finds the daemon on PATH and calls it as `NAME SOURCE MNT -o ...`."""
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"via mount(8)".ljust(4096, b"\0"))
    mnt.mkdir()
    # mount(8) runs helpers with a fixed PATH, so name the uninstalled daemon by its full
    # path with mount.fuse3's TYPE#SOURCE form (installed daemons are found as fuse.NAME).
    run(["mount", "-t", "fuse", "-o", "ro,noatime,subtype=vo-testfs",
         f"{viewos_bin(TESTFS)}#{img}", mnt])
    try:
        line = mounted_at(mnt)
        assert "fuse.vo-testfs" in line and "ro" in line.split()[5]
        assert (mnt / "data").read_bytes()[:12] == b"via mount(8)"
    finally:
        run(["umount", mnt])


def test_debug_flag_stays_in_foreground_and_traces_requests(rtmp):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"\0" * 4096)
    mnt.mkdir()
    log = open(rtmp / "log", "w")
    p = subprocess.Popen([viewos_bin(TESTFS), "-d", img, mnt], stderr=log)
    try:
        for _ in range(500):
            if mounted_at(mnt):
                break
            time.sleep(0.01)
        assert mounted_at(mnt), "-d did not mount"
        assert p.poll() is None, "-d must keep the daemon in the foreground"
        os.stat(mnt / "data")
    finally:
        run(["fusermount3", "-u", mnt], check=False)
        status = p.wait(10)
    assert status == 0
    text = (rtmp / "log").read_text()
    assert "vo-testfs: unique:" in text and "LOOKUP" in text  # libfuse's trace, our prefix


@pytest.fixture
def syslog_socket(rtmp):
    """A datagram socket standing in for the syslog daemon, seen as /dev/log only by the
    processes of a private mount namespace (see in_syslog_namespace): a running journald or
    rsyslog is never replaced, and other programs' messages never reach the test.

    The bind mount needs something to cover. /dev/log, or the socket it links to, when it
    exists; otherwise an empty placeholder, made for the test and removed after it (a
    program that logs meanwhile finds no logger there, as it would without it)."""
    import socket
    path = rtmp / "log.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(10)
    target = os.path.realpath("/dev/log")
    placeholder = None
    if not os.path.exists(target):
        if not os.path.isdir(os.path.dirname(target)):
            pytest.fail(f"/dev/log points into {os.path.dirname(target)}, which does not exist")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        placeholder = os.stat(target)
    try:
        yield s, path, target
    finally:
        s.close()
        # only our own placeholder goes: a logger that started meanwhile replaced it
        if placeholder is not None:
            try:
                st = os.stat(target)
                if (st.st_dev, st.st_ino) == (placeholder.st_dev, placeholder.st_ino):
                    os.unlink(target)
            except FileNotFoundError:
                pass


def in_syslog_namespace(sock, target, script, *args):
    """Run a shell script (with args as $1...) in a private mount namespace whose /dev/log is
    our socket. The script's mounts are invisible outside, so the harness cannot clean them
    up: it must unmount them itself (a trap)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                           'mount --bind "$1" "$2"; shift 2\n' + script, "sh", str(sock),
                           target, *[str(a) for a in args]],
                          capture_output=True, text=True, timeout=60, env=sanitizer_env())


def syslog_line(s, words):
    """The first datagram that contains words (None after the socket's timeout)."""
    import socket
    try:
        while True:
            msg = s.recv(4096).decode(errors="replace")
            if words in msg:
                return msg
    except socket.timeout:
        return None


def test_detached_daemon_logs_to_syslog(rtmp, syslog_socket):
    s, sock, target = syslog_socket
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"\0" * 4096)
    mnt.mkdir()
    # the daemon detaches (its stderr becomes /dev/null), the kernel's INIT reaches it (stat),
    # and fusermount3 -u ends it: its last words can only go to syslog
    r = in_syslog_namespace(sock, target, """
        daemon=$1 img=$2 mnt=$3
        trap 'fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || :' EXIT
        "$daemon" "$img" "$mnt"
        stat "$mnt/data" >/dev/null
        fusermount3 -u "$mnt"
        trap - EXIT
        """, viewos_bin(TESTFS), img, mnt)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
    msg = syslog_line(s, f"flushed {img}:")
    assert msg is not None, "no syslog line about the flush arrived within 10 s"
    # <30> = daemon facility (3) * 8 + info (6); the pid is in brackets
    assert msg.startswith("<30>") and "vo-testfs[" in msg and f"flushed {img}: ok" in msg, msg
