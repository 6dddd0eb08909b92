"""Resources of umfuse-ext2 stay bounded: 20 000 files (mke2fs -d) are looked up by name in
rounds (stat of every path, so every one is a FUSE LOOKUP), and after each round the kernel is
made to forget them (echo 2 > /proc/sys/vm/drop_caches: it sends FORGET for every inode it
dropped, and the daemon frees its nodes and directory indexes). 5 rounds (100 000 lookups) in
the suite, 50 rounds (1 000 000 lookups) with VIEWOS_LONG=1.

That the rounds really reach the daemon is checked first on a sample with -d (which logs every
request): each round's stats send a LOOKUP per path, also after a forget — so the kernel did
forget them, and did send the FORGETs.

What is measured (VmRSS and the number of open fds of the daemon, from /proc) and asserted:
  * the open fds are what they were at the start;
  * the first round makes the daemon grow (it built a node for each of the 20 000 inodes the
    kernel looked up: another sign the lookups reached it);
  * the memory after the last round is within 8 MiB of what it was after the first (the caches
    are warm by then, and what a lookup adds must be given back when the kernel forgets);
  * the memory after the last round is within cache_size + 12 MiB of what it was at the
    start: all the daemon may keep is its metadata block cache (bounded by cache_size, here
    8 MiB) and, in the margin, libext2fs' inode cache (128 inodes), what malloc keeps of freed
    memory (the node table and the directory indexes of 20 000 names, some 4 MiB at their peak
    and 6 with AddressSanitizer's redzones, are freed at each forget but not necessarily given
    back to the system) and AddressSanitizer's shadow of all that (an eighth). Measured: 14 MiB
    over the start with the sanitizers.
The figures are printed. Under AddressSanitizer freed memory
goes to a quarantine (256 MiB) before it is used again, so RSS would show the sanitizer
filling it; this daemon runs without one (quarantine_size_mb=0: its other checks stay), so
that RSS shows what the program keeps."""
import os
import subprocess
import time

import pytest

from relb_util import LONG, DaemonPool

DAEMON = "umfuse-ext2"
ROUNDS = 50 if LONG else 5
DIRS, PER_DIR = 10, 2000
CACHE_MIB = 8
MARGIN_MIB = 12
SAMPLE = 300


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


def lookups_in_log(d):
    return d.output().count("opcode: LOOKUP ")


def check_rounds_reach_the_daemon(pool, img, mnt, sample):
    """With -d: each round of stats sends a LOOKUP per path, the second (after a forget) too."""
    d = pool.new(DAEMON, ["-d", "-o", "ro", img, mnt], mnt)
    assert d.start(), d.output()
    sent = []
    for _ in range(2):
        before = lookups_in_log(d)
        for p in sample:
            os.stat(mnt / p)
        sent.append(lookups_in_log(d) - before)
        forget()
    assert d.stop() == 0, d.output()[-3000:]
    assert all(n >= len(sample) for n in sent), f"{len(sample)} paths stat'ed, lookups: {sent}"


# the long run (VIEWOS_LONG=1) outlasts pytest.ini's 300 s
@pytest.mark.timeout(3600 if LONG else 300)
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
        check_rounds_reach_the_daemon(pool, img, mnt, paths[:SAMPLE])
        # no sanitizer quarantine (see the docstring); its reports still count
        d = pool.new(DAEMON, ["-o", f"ro,cache_size={CACHE_MIB}M", img, mnt], mnt,
                     asan_options="quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
        assert d.start(), d.output()
        pid = d.proc.pid
        start_rss, start_fds = rss_kib(pid), fds(pid)
        peak, after, first_round = 0, [], None
        lookups = 0
        for r in range(ROUNDS):
            for p in paths:
                os.stat(mnt / p)
            lookups += len(paths)
            if first_round is None:
                first_round = rss_kib(pid)
            peak = max(peak, rss_kib(pid))
            forget()
            after.append(rss_kib(pid))
            assert fds(pid) == start_fds, f"round {r}: open fds {start_fds} -> {fds(pid)}"
        figures = (f"{lookups} lookups: RSS {start_rss} KiB at the start, {first_round} KiB "
                   f"at the end of the first round, {after[0]} KiB after its forget, peak {peak} "
                   f"KiB, {after[-1]} KiB after the last; open fds {start_fds} -> {fds(pid)}; "
                   f"after each round: {after}")
        print(figures)
        # a node is some 80 bytes with malloc's overhead: 20 000 of them at least
        assert first_round - start_rss > len(paths) * 80 // 1024, figures
        assert after[-1] - after[0] < 8 * 1024, figures
        assert after[-1] - start_rss < (CACHE_MIB + MARGIN_MIB) * 1024, figures
        assert d.stop() == 0, d.output()
        assert not d.sanitizer_report()
    finally:
        pool.cleanup()
