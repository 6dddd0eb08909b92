"""Resources of umfuse-ext2 stay bounded: files of an ext4 image are looked up by
name in rounds of 20 000 (stat of every path, so every one is a FUSE LOOKUP), and after each
round the kernel is made to forget them (echo 2 > /proc/sys/vm/drop_caches: it sends FORGET for
every inode it dropped, and the daemon frees its nodes and directory indexes). The image holds
SETS different sets of 20 000 files and round r looks up set r % SETS: a daemon that kept what
it built for each inode (and found it again by inode number) would grow with every new set,
where one round after another over the same files would not show it. 5 rounds (100 000
lookups; sets 0 and 1 met twice) in the suite, 50 rounds (1 000 000 lookups) with
VIEWOS_LONG=1.

That the rounds really reach the daemon is checked first on a sample with -d (which logs every
request): each round's stats send a LOOKUP per path, also after a forget — so the kernel did
forget them, and did send the FORGETs.

What is measured (VmRSS and the number of open fds of the daemon, from /proc) and asserted:
  * the open fds are what they were at the start;
  * the first round makes the daemon grow (it built a node for each of the 20 000 inodes the
    kernel looked up: another sign the lookups reached it);
  * the memory after the last round is within 8 MiB of what it was after the first (the caches
    are warm by then, and what a lookup adds must be given back when the kernel forgets: two
    new sets of 20 000 nodes and indexes kept would be some 12 MiB more);
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

import pytest

from relb_util import (LONG, DaemonPool, forget_all as forget, lookups_per_round,
                       open_fds as fds, rss_kib)

DAEMON = "umfuse-ext2"
ROUNDS = 50 if LONG else 5
SETS, DIRS, PER_DIR = 3, 10, 2000
CACHE_MIB = 8
MARGIN_MIB = 12
SAMPLE = 300


# the long run (VIEWOS_LONG=1) outlasts pytest.ini's 300 s
@pytest.mark.timeout(3600 if LONG else 300)
def test_lookups_and_forgets_leave_memory_and_fds_where_they_were(tmp_path):
    # the files are made by the kernel's ext4 on a loop device: mke2fs -d took 28 s for them
    per_set = DIRS * PER_DIR
    img = tmp_path / "img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-N", str(SETS * per_set + 1000), str(img)], check=True,
                   capture_output=True)
    kmnt = tmp_path / "kmnt"
    kmnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(kmnt)], check=True)
    sets = [[] for _ in range(SETS)]
    try:
        for s in range(SETS):
            for d in range(DIRS):
                (kmnt / f"s{s}-d{d}").mkdir()
                for i in range(PER_DIR):
                    name = f"s{s}-d{d}/file-with-a-name-of-some-length-{i:05d}"
                    os.close(os.open(kmnt / name, os.O_CREAT | os.O_WRONLY, 0o644))
                    sets[s].append(name)
    finally:
        subprocess.run(["umount", str(kmnt)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    try:
        sent = lookups_per_round(pool, DAEMON, ["-o", "ro", img, mnt], mnt, sets[0][:SAMPLE])
        assert all(n >= SAMPLE for n in sent), f"{SAMPLE} paths stat'ed, lookups: {sent}"
        # no sanitizer quarantine (see the docstring); its reports still count
        d = pool.new(DAEMON, ["-o", f"ro,cache_size={CACHE_MIB}M", img, mnt], mnt,
                     asan_options="quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
        assert d.start(), d.output()
        pid = d.proc.pid
        start_rss, start_fds = rss_kib(pid), fds(pid)
        peak, after, first_round = 0, [], None
        lookups = 0
        for r in range(ROUNDS):
            for p in sets[r % SETS]:
                os.stat(mnt / p)
            lookups += per_set
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
        assert first_round - start_rss > per_set * 80 // 1024, figures
        assert after[-1] - after[0] < 8 * 1024, figures
        assert after[-1] - start_rss < (CACHE_MIB + MARGIN_MIB) * 1024, figures
        assert d.stop() == 0, d.output()
        assert not d.sanitizer_report()
    finally:
        pool.cleanup()
