"""The -o options of umfuse-ext2 do what the man page says: commit=N writes changes to the image
without an fsync and commit=0 only on fsync; timeout= is how long the kernel trusts names (it
asks again after it); atime follows the relatime rules and noatime stops it; max_threads bounds
the threads serving requests. No assertion depends on how fast anything runs: waits end on the
awaited state, their bounds only catch hangs."""
import os
import shutil
import subprocess
import sys
import textwrap
import time

from conftest import run, viewos_bin
from e2lib import DAEMON, assert_clean, ext2, fsck  # noqa: F401


def names_on_image(img):
    """The names in the image's root directory as they are on the image right now (debugfs
    reads the image, not the daemon)."""
    out = subprocess.run(["debugfs", "-R", "ls -p /", str(img)], capture_output=True,
                         text=True).stdout
    return {line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6}


def test_commit_interval_writes_changes_without_fsync(ext2, rtmp):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img, "commit=1")
    os.mkdir(m.path / "made-by-mkdir")  # no close, no fsync: only the commit writes it
    deadline = time.monotonic() + 60
    while "made-by-mkdir" not in names_on_image(img):
        assert time.monotonic() < deadline, "commit=1 never wrote the change"
        time.sleep(0.1)
    copy = rtmp / "copy.img"
    shutil.copyfile(img, copy)  # a commit leaves a consistent image
    status, out = fsck(copy)
    assert status == 0, out
    m.unmount()
    assert_clean(img)


def test_commit_0_writes_only_on_fsync(ext2):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img, "commit=0")
    os.mkdir(m.path / "made-by-mkdir")
    assert "made-by-mkdir" not in names_on_image(img)  # nothing wrote it yet
    fd = os.open(m.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert "made-by-mkdir" in names_on_image(img)
    m.unmount()
    assert_clean(img)


def lookups(m):
    return m.stderr().count("opcode: LOOKUP")


def test_timeout_is_how_long_the_kernel_trusts_names(ext2, rtmp):
    """-d logs every request the daemon receives: with the default (a day) repeated stats of a
    path send no lookup after the first; with timeout=0 each one does."""
    counts = {}
    for opts in [[], ["-o", "timeout=0"]]:
        img = ext2.image("ext4-4k")
        mnt = rtmp / f"m{len(counts)}"
        mnt.mkdir()
        m = ext2.mounts.start(DAEMON, "-d", *opts, img, mnt, mountpoint=mnt)
        (mnt / "f").write_text("x")
        os.stat(mnt / "f")
        before = lookups(m)
        for _ in range(20):
            os.stat(mnt / "f")
        counts[tuple(opts)] = lookups(m) - before
        m.unmount()
        assert_clean(img)
    assert counts[()] == 0, counts
    assert counts[("-o", "timeout=0")] >= 20, counts


def direct_read(path):
    """Read through to the daemon (O_DIRECT: the kernel's page cache is not used)."""
    run(["dd", f"if={path}", "of=/dev/null", "bs=4096", "iflag=direct", "status=none"])


def test_atime_follows_relatime_and_noatime_stops_it(ext2):
    for opts in [(), ("noatime",)]:
        img = ext2.image("ext4-4k")
        m = ext2.mount(img, *opts)
        p = m.path / "f"
        p.write_bytes(b"a" * 8192)
        mtime = os.stat(p).st_mtime_ns
        old = mtime - 100 * 10**9
        os.utime(p, ns=(old, mtime))  # atime older than mtime: relatime updates it
        t0 = time.time_ns()
        direct_read(p)
        t1 = time.time_ns()
        first = os.stat(p).st_atime_ns
        direct_read(p)
        second = os.stat(p).st_atime_ns
        if opts:
            assert first == second == old, opts
        else:
            assert t0 <= first <= t1
            assert second == first  # newer than mtime and ctime, not a day old: kept
        m.unmount()
        assert_clean(img)


WRITERS = textwrap.dedent("""
    import os, sys
    root, me = sys.argv[1], sys.argv[2]
    d = os.path.join(root, me)
    os.mkdir(d)
    for i in range(150):
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(me.encode() * (i * 37))
        os.listdir(d)
""")


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def test_max_threads_bounds_the_threads_serving_requests(ext2):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img, "max_threads=1")
    procs = [subprocess.Popen([sys.executable, "-c", WRITERS, str(m.path), f"w{i}"])
             for i in range(4)]
    most = 0
    while any(p.poll() is None for p in procs):
        most = max(most, threads(m.proc.pid))
        time.sleep(0.005)
    assert all(p.returncode == 0 for p in procs)
    # one worker, the main thread (waiting for the loop to end) and the committer
    assert most <= 3, f"{most} threads"
    for i in range(4):
        for n in range(150):
            assert (m.path / f"w{i}" / f"f{n}").read_bytes() == f"w{i}".encode() * (n * 37)
    m.unmount()
    assert_clean(img)


def test_max_threads_out_of_range_is_one_line_exit_1(ext2, rtmp):
    img = ext2.image("ext4-4k")
    mnt = rtmp / "mnt"
    mnt.mkdir()
    for value in ["0", "lots"]:
        r = run([viewos_bin(DAEMON), "-o", f"max_threads={value}", img, mnt], check=False)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "max_threads" in r.stderr
