"""The daemon life cycle every viewos daemon shares (common/daemon.c), checked through
vo-testfs, the smallest daemon built on it: it shows a block source as MOUNTPOINT/data."""
import os
import signal
import subprocess
import time

import pytest

from conftest import mounted_at, run, viewos_bin

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
    assert "flushed" in m.stderr()
    assert img.read_bytes()[:7] == b"durable"


def test_fusermount_u_flushes_and_exits_zero(rtmp, mounts):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"\0" * 65536)
    mnt.mkdir()
    m = mounts.start(TESTFS, img, mnt, mountpoint=mnt)
    m.unmount()  # fails the test unless the daemon exits 0
    assert "vo-testfs: flushed" in m.stderr()


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
    """A datagram socket at /dev/log standing in for the syslog daemon (none runs in CI).
    Only when nothing owns /dev/log already; we never take over a real logger."""
    import socket
    if os.path.exists("/dev/log"):
        pytest.skip("/dev/log belongs to a running syslog daemon; not replacing it")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("/dev/log")
    s.settimeout(10)
    try:
        yield s
    finally:
        s.close()
        os.unlink("/dev/log")


def test_detached_daemon_logs_to_syslog(rtmp, syslog_socket):
    img, mnt = rtmp / "img", rtmp / "mnt"
    img.write_bytes(b"\0" * 4096)
    mnt.mkdir()
    r = run([viewos_bin(TESTFS), img, mnt])
    assert r.stderr == ""
    os.stat(mnt / "data")  # the kernel's INIT reaches the daemon
    run(["fusermount3", "-u", mnt])
    msg = syslog_socket.recv(4096).decode()
    # <30> = daemon facility (3) * 8 + info (6); the pid is in brackets
    assert msg.startswith("<30>") and "vo-testfs[" in msg and f"flushed {img}: ok" in msg
