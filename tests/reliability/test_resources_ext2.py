"""Resources of umfuse-ext2 stay bounded: 20 000 files (mke2fs -d) are looked up by name in
rounds (stat of every path, so every one is a FUSE LOOKUP), and after each round the kernel is
made to forget them (echo 2 > /proc/sys/vm/drop_caches: it sends FORGET for every inode it
dropped, and the daemon frees its nodes and directory indexes). 5 rounds (100 000 lookups) in
the suite, 50 rounds (1 000 000 lookups) with VIEWOS_LONG=1.

What is measured (VmRSS and the number of open fds of the daemon, from /proc) and asserted:
the open fds are what they were at the start; the memory after the last round is within 8 MiB
of what it was after the first (the caches — libext2fs' inode cache and the daemon's metadata
block cache, bounded by cache_size — are warm by then, and what a lookup adds must be given
back when the kernel forgets). The figures are printed. Under AddressSanitizer freed memory
goes to a quarantine (256 MiB) before it is used again, so RSS would show the sanitizer
filling it; this daemon runs without one (quarantine_size_mb=0: its other checks stay), so
that RSS shows what the program keeps."""
import os
import subprocess
import time

from relb_util import LONG, DaemonPool

DAEMON = "umfuse-ext2"
ROUNDS = 50 if LONG else 5
DIRS, PER_DIR = 10, 2000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def forget():
    """Make the kernel drop its dentries and inodes (and so FORGET them to the daemon)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    time.sleep(0.3)  # FORGETs are sent as the kernel evicts: let them arrive


def test_lookups_and_forgets_leave_memory_and_fds_where_they_were(tmp_path):
    src = tmp_path / "src"
    paths = []
    for d in range(DIRS):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(PER_DIR):
            p = src / f"d{d}" / f"file-with-a-name-of-some-length-{i:05d}"
            p.touch()
            paths.append(p.relative_to(src))
    img = tmp_path / "img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-N", str(DIRS * PER_DIR + 1000), "-d", str(src),
                    str(img)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    try:
        # no sanitizer quarantine (see the docstring); its reports still count
        d = pool.new(DAEMON, ["-o", "ro", img, mnt], mnt, asan_options="quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
        assert d.start(), d.output()
        pid = d.proc.pid
        start_rss, start_fds = rss_kib(pid), fds(pid)
        peak, after = 0, []
        lookups = 0
        for r in range(ROUNDS):
            for p in paths:
                os.stat(mnt / p)
            lookups += len(paths)
            peak = max(peak, rss_kib(pid))
            forget()
            after.append(rss_kib(pid))
            assert fds(pid) == start_fds, f"round {r}: open fds {start_fds} -> {fds(pid)}"
        figures = (f"{lookups} lookups: RSS {start_rss} KiB at the start, {after[0]} KiB after "
                   f"the first round and its forget, peak {peak} KiB, {after[-1]} KiB after the "
                   f"last; open fds {start_fds} -> {fds(pid)}; after each round: {after}")
        print(figures)
        assert after[-1] - after[0] < 8 * 1024, figures
        assert d.stop() == 0, d.output()
        assert not d.sanitizer_report()
    finally:
        pool.cleanup()
