"""Resources of viewfs stay bounded: a cow view over an original tree of 10 000 files (5
directories of 2 000; 20 000 in 10 with VIEWOS_LONG=1), a tenth of them also in the layer,
where they shadow the original, is
looked up by name in rounds (lstat of every path: each one a FUSE LOOKUP across both layers),
and after each round the kernel is made to forget them (echo 2 > /proc/sys/vm/drop_caches: it
sends FORGET for every inode it dropped, and the daemon frees its nodes and their directory
fds). 4 rounds (40 000 lookups, about 30 s under ASan) in the suite, 50 rounds (1 000 000
lookups) with VIEWOS_LONG=1.

Measured (VmRSS and the number of open fds of the daemon, from /proc) and asserted:
  * the lookups reach the daemon and the forgets come back to it, every round: before the
    forget the daemon holds at least one more fd per directory (a directory's node keeps its
    directory fds), after it exactly the fds it had at the start; and after the first round's
    lookups its memory has grown by at least 64 bytes per file looked up (a node is more);
  * the memory after the last round is within 8 MiB of what it was after the first (rounds
    after the first cost nothing more), and within ALLOWANCE of what it was at the start:
    memory that was freed is not given back to the system (glibc and AddressSanitizer keep
    their heaps, the node table keeps its grown bucket array), so one round's nodes may stay
    mapped, at most NODE_BYTES each, plus SLACK for what the first requests touch once (the
    worker threads' stacks and FUSE buffers, the cached listings of .-). A daemon that kept
    its nodes would exceed it after a few rounds.
The figures are printed. As in test_resources_ext2.py the daemon runs without
AddressSanitizer's quarantine of freed memory (quarantine_size_mb=0; its other checks stay), so
that RSS shows what the program keeps."""
import os

import pytest

from relb_util import LONG, DaemonPool, forget_all as forget, open_fds as fds, rss_kib

ROUNDS = 50 if LONG else 4
DIRS, PER_DIR = (10, 2000) if LONG else (5, 2000)
NODE_BYTES = 1024    # a node under ASan: the struct, its name, their redzones (about 560 seen)
SLACK = 4 * 1024     # KiB
ALLOWANCE = DIRS * PER_DIR * NODE_BYTES // 1024 + SLACK  # KiB: 14 MiB in the suite


@pytest.mark.timeout(3600 if LONG else 300)
def test_lookups_and_forgets_leave_memory_and_fds_where_they_were(tmp_path):
    orig, layer = tmp_path / "mnt", tmp_path / "layer"
    paths = []
    for d in range(DIRS):
        (orig / f"d{d}").mkdir(parents=True)
        (layer / f"d{d}").mkdir(parents=True)
        for i in range(PER_DIR):
            name = f"d{d}/file-with-a-name-of-some-length-{i:05d}"
            (orig / name).touch()
            if i % 10 == 0:
                (layer / name).write_bytes(b"layer")
            paths.append(name)
    pool = DaemonPool(tmp_path)
    try:
        d = pool.new("viewfs", ["-o", "cow", layer, orig], orig,
                     asan_options="quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
        assert d.start(), d.output()
        pid = d.proc.pid
        start_rss, start_fds = rss_kib(pid), fds(pid)
        peak, after = 0, []
        lookups = 0
        for r in range(ROUNDS):
            for p in paths:
                os.lstat(orig / p)
            lookups += len(paths)
            peak = max(peak, rss_kib(pid))
            if r == 0:
                grown = rss_kib(pid) - start_rss
            peak_fds = fds(pid)
            # every directory was looked up by the daemon (again: the last forget dropped it)
            assert peak_fds >= start_fds + DIRS, \
                f"round {r}: {peak_fds} open fds after looking up {DIRS} directories"
            forget()
            after.append(rss_kib(pid))
            assert fds(pid) == start_fds, f"round {r}: open fds {start_fds} -> {fds(pid)}"
        figures = (f"viewfs -o cow, {lookups} lookups: RSS {start_rss} KiB at the start, "
                   f"{after[0]} KiB after the first round and its forget, peak {peak} KiB, "
                   f"{after[-1]} KiB after the last (allowance {ALLOWANCE} KiB); open fds "
                   f"{start_fds} at the start, {peak_fds} before a forget, {fds(pid)} after; "
                   f"after each round: {after}")
        print(figures)
        # the files were looked up by the daemon: each is a node
        assert grown * 1024 >= len(paths) * 64, figures
        assert after[-1] - after[0] < 8 * 1024, figures
        assert after[-1] - start_rss < ALLOWANCE, figures
        assert d.stop() == 0, d.output()
        assert not d.sanitizer_report()
    finally:
        pool.cleanup()
