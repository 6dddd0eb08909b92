"""Resources of umfuse-iso9660: what its memory grows with, and that nothing else grows it.

umfuse-iso9660 keeps every directory it has parsed, with a node per entry, until the unmount
(see fsmods/iso9660/isofs.h: the node's address is its FUSE id, so a FORGET has nothing to
free). Its memory is therefore bounded by the part of the image that was visited, not by the
number of lookups, and unlike umfuse-ext2 and viewfs it does not shrink when the kernel forgets.
This test pins that model down, so that a change to it is seen:

The image (xorriso, Rock Ridge and Joliet) holds SETS different sets of files. Round r stats
every file of set r % SETS (each one a FUSE LOOKUP) and then makes the kernel forget them (echo
2 > /proc/sys/vm/drop_caches sends FORGET for every inode it drops). The first SETS rounds
visit new directories, the rounds after them visit the same ones again. 2 * SETS rounds in the
suite (60 000 lookups), 50 with VIEWOS_LONG=1 (500 000).

That the rounds reach the daemon is checked first on a sample with -d (it logs every request):
each round sends a LOOKUP per path, also after a forget.

Measured (VmRSS and open fds of the daemon, from /proc) and asserted:
  * the open fds are what they were at the start, after every round;
  * the first round makes the daemon grow by at least 80 bytes per file (a node each);
  * each new set adds at most NODE_BYTES per file (a node, its name, its share of the listing,
    AddressSanitizer's redzones and shadow);
  * once every set has been visited, the rounds that visit them again add less than 2 MiB in
    all: lookups, forgets and reads of what is already parsed cost nothing that stays.
The figures are printed. The daemon runs without AddressSanitizer's quarantine of freed memory
(quarantine_size_mb=0, its other checks stay), so that RSS shows what the program keeps."""
import os
import subprocess

import pytest

from relb_util import LONG, DaemonPool, forget_all, lookups_per_round, open_fds, rss_kib

DAEMON = "umfuse-iso9660"
SETS, DIRS, PER_DIR = 3, 10, 1000
ROUNDS = 50 if LONG else 2 * SETS
NODE_BYTES = 600   # measured about 310 under ASan
SLACK_KIB = 2048
SAMPLE = 300


# the long run (VIEWOS_LONG=1) outlasts pytest.ini's 300 s
@pytest.mark.timeout(3600 if LONG else 300)
def test_memory_grows_with_the_directories_visited_and_not_with_lookups(tmp_path):
    src = tmp_path / "src"
    sets = [[] for _ in range(SETS)]
    for s in range(SETS):
        for d in range(DIRS):
            (src / f"s{s}-d{d}").mkdir(parents=True)
            for i in range(PER_DIR):
                p = src / f"s{s}-d{d}" / f"file-with-a-name-of-some-length-{i:05d}"
                p.touch()
                sets[s].append(p.relative_to(src))
    img = tmp_path / "img.iso"
    subprocess.run(["xorriso", "-abort_on", "FAILURE", "-outdev", str(img), "-joliet", "on",
                    "-map", str(src), "/"], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    per_set = DIRS * PER_DIR
    try:
        sent = lookups_per_round(pool, DAEMON, [img, mnt], mnt, sets[0][:SAMPLE])
        assert all(n >= SAMPLE for n in sent), f"{SAMPLE} paths stat'ed, lookups: {sent}"
        d = pool.new(DAEMON, [img, mnt], mnt,
                     asan_options="quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
        assert d.start(), d.output()
        pid = d.proc.pid
        start_rss, start_fds = rss_kib(pid), open_fds(pid)
        after = []
        for r in range(ROUNDS):
            for p in sets[r % SETS]:
                os.stat(mnt / p)
            forget_all()
            after.append(rss_kib(pid))
            assert open_fds(pid) == start_fds, \
                f"round {r}: open fds {start_fds} -> {open_fds(pid)}"
        growth = [b - a for a, b in zip([start_rss] + after, after[:SETS])]
        figures = (f"{ROUNDS * per_set} lookups over {SETS} sets of {per_set} files: RSS "
                   f"{start_rss} KiB at the start; growth with each new set {growth} KiB "
                   f"({[g * 1024 // per_set for g in growth]} bytes per file); "
                   f"{after[SETS - 1]} KiB when all were visited, {after[-1]} KiB after the "
                   f"last round; open fds {start_fds} -> {open_fds(pid)}; after each round: "
                   f"{after}")
        print(figures)
        assert growth[0] * 1024 > per_set * 80, figures
        assert all(g * 1024 < per_set * NODE_BYTES for g in growth), figures
        assert after[-1] - after[SETS - 1] < SLACK_KIB, figures
        assert d.stop() == 0, d.output()
        assert not d.sanitizer_report()
    finally:
        pool.cleanup()
