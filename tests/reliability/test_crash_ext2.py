"""kill -9 of umfuse-ext2 at random points of a write workload, over and over on one image: 60
kills in the suite (500 with VIEWOS_LONG=1). tests/ext2/test_durability.py kills it once;
here the kills are chained, so every repair is also the starting point of the next round.

Each round mounts the image (read-write; some rounds with the kernel's writeback cache, some
with a metadata cache so small that dirty blocks reach the image between commits), runs a
workload for a random time between 20 ms and 0.4 s and kills the daemon with SIGKILL wherever
it is. The workload writes files of random sizes and fsyncs some of them — when an fsync
returns it records the file's path and checksum in a log outside the image — and churns the
rest: renames, unlinks, truncates, appends, directories made and removed, attributes set. A
file is never changed once its fsync returned; to keep the image from filling up (which would
stop every later round's workload at ENOSPC before its kill), the workload deletes the oldest
fsync'ed files once they hold more than 32 MiB, each deletion logged before the unlink (from
then on that file is not checked), and files whose fsync the kill cut short are removed before
the next round.

After each kill: the dead mount is removed, `e2fsck -fy` must repair the image (exit 0 or 1)
and a second `e2fsck -fn` must find it clean; the next round's mount must then read back every
file logged since the previous kill, byte for byte, under its logged name (older ones are
sampled each round, and all of them are read at the end). The daemon must not report to a
sanitizer before it is killed."""
import errno
import hashlib
import os
import random
import signal
import threading
import time

import pytest

from conftest import make_ext
from relb_util import LONG, DaemonPool, e2fsck

DAEMON = "umfuse-ext2"
KILLS = 500 if LONG else 60
KEEP_BYTES = 32 << 20  # fsync'ed bytes kept on the 128 MiB image; older files are deleted


class Workload:
    """Writes, fsyncs and churns under root until stopped or the mount dies."""

    def __init__(self, root, round_no, log, rnd, kept):
        self.root, self.round, self.log, self.rnd = root, round_no, log, rnd
        self.kept = kept  # the fsync'ed files not yet deleted, oldest first: [path, size]
        self.stop = threading.Event()
        self.synced = []
        self.error = None
        self.enospc = False

    def run(self):
        try:
            self._run()
        except OSError as e:
            if e.errno not in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ENOENT,
                               errno.ENOSPC):
                self.error = e
            self.enospc = e.errno == errno.ENOSPC
        except Exception as e:  # a bug of the test itself: reported
            self.error = e

    def _run(self):
        rnd, r = self.rnd, self.round
        d = os.path.join(self.root, f"r{r % 16}")
        os.makedirs(d, exist_ok=True)
        scratch = os.path.join(self.root, "scratch")
        os.makedirs(scratch, exist_ok=True)
        i = 0
        while not self.stop.is_set():
            size = rnd.choice([0, 1, 100, 4095, 4096, 5000, 65536, 200_000, 1 << 20])
            data = rnd.randbytes(size)
            if rnd.random() < 0.4:
                p = os.path.join(d, f"synced-{r}-{i}")
                with open(p, "wb") as f:
                    for off in range(0, max(size, 1), 300_000):
                        f.write(data[off:off + 300_000])
                    f.flush()
                    os.fsync(f.fileno())
                # the fsync returned: this file must survive whatever comes next
                rel = os.path.relpath(p, self.root)
                self.log.write(f"{rel} {hashlib.sha256(data).hexdigest()}\n")
                self.log.flush()
                self.synced.append(p)
                self.kept.append([rel, size])
                while sum(k[1] for k in self.kept) > KEEP_BYTES:
                    old = self.kept.pop(0)
                    self.log.write(f"- {old[0]}\n")  # logged first: then never checked
                    self.log.flush()
                    os.unlink(os.path.join(self.root, old[0]))
            else:
                p = os.path.join(scratch, f"s{rnd.randrange(64)}")
                op = rnd.randrange(8)
                if op <= 2:
                    with open(p, "wb") as f:
                        f.write(data)
                elif op == 3 and os.path.exists(p):
                    os.rename(p, os.path.join(scratch, f"s{rnd.randrange(64)}"))
                elif op == 4 and os.path.exists(p):
                    os.unlink(p)
                elif op == 5 and os.path.exists(p):
                    os.truncate(p, rnd.randrange(100_000))
                elif op == 6:
                    q = os.path.join(scratch, f"d{rnd.randrange(8)}")
                    if os.path.isdir(q):
                        for name in os.listdir(q):
                            os.unlink(os.path.join(q, name))
                        os.rmdir(q)
                    else:
                        os.mkdir(q)
                        for k in range(rnd.randrange(20)):
                            with open(os.path.join(q, f"f{k}"), "wb") as f:
                                f.write(data[:5000])
                elif op == 7 and os.path.exists(p):
                    os.setxattr(p, "user.round", str(r).encode() * rnd.randrange(1, 200))
            i += 1


def parse_log(path):
    """The log's fsync records [(path, digest)] in order, and the paths deleted since."""
    synced, deleted = [], set()
    for line in path.read_text().splitlines():
        a, b = line.split()
        if a == "-":
            deleted.add(b)
        else:
            synced.append((a, b))
    return synced, deleted


def remove_unlogged(mnt, alive):
    """Files of the fsync'ed kind whose fsync never returned (the kill came first) are left
    in r*/ by each round: removed before the next workload starts, or they fill the image."""
    for d in os.listdir(mnt):
        if d.startswith("r") and os.path.isdir(os.path.join(mnt, d)):
            for name in os.listdir(os.path.join(mnt, d)):
                if f"{d}/{name}" not in alive:
                    os.unlink(os.path.join(mnt, d, name))


def read_back(mnt, entries):
    """[(path, problem)] for logged files that do not read back as logged."""
    bad = []
    for rel, digest in entries:
        try:
            with open(os.path.join(mnt, rel), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            bad.append((rel, errno.errorcode.get(e.errno, e.errno)))
            continue
        if got != digest:
            bad.append((rel, "different content"))
    return bad


# the long run (VIEWOS_LONG=1) outlasts pytest.ini's 300 s
@pytest.mark.timeout(7200 if LONG else 900)
def test_kill_9_at_random_points_fsck_repairs_and_fsynced_files_survive(rtmp):
    img = make_ext(rtmp / "img", fstype="ext4", size="128M", blocksize=4096)
    logpath = rtmp / "fsynced.log"
    pool = DaemonPool(rtmp)
    rnd = random.Random(10)
    fixed = clean_kills = 0
    checked_new = enospc_rounds = 0
    kept = []
    try:
        with open(logpath, "w") as log:
            seen = 0
            for k in range(KILLS + 1):
                mnt = rtmp / f"m{k}"
                mnt.mkdir()
                opts = ["writeback"] if k % 3 == 1 else (["cache_size=64K"] if k % 3 == 2 else [])
                args = (["-o", ",".join(opts)] if opts else []) + [img, mnt]
                d = pool.new(DAEMON, args, mnt)
                assert d.start(), f"round {k}: the repaired image was refused:\n{d.output()}"
                entries, deleted = parse_log(logpath)
                alive = [e for e in entries if e[0] not in deleted]
                new = [e for e in entries[seen:] if e[0] not in deleted]
                old = [e for e in entries[:seen] if e[0] not in deleted]
                sample = new + rnd.sample(old, min(20, len(old)))
                if k == KILLS:
                    sample = alive  # the end: every file logged and not deleted
                bad = read_back(mnt, sample)
                assert not bad, f"after kill {k}: fsync'ed files lost or damaged: {bad[:10]}"
                checked_new += len(new)
                seen = len(entries)
                if k == KILLS:
                    assert d.stop() == 0, d.output()
                    break
                remove_unlogged(mnt, {e[0] for e in alive})
                w = Workload(str(mnt), k, log, random.Random(k), kept)
                t = threading.Thread(target=w.run, daemon=True)
                t.start()
                time.sleep(rnd.uniform(0.02, 0.4))
                d.kill(signal.SIGKILL)
                w.stop.set()
                t.join(30)
                assert not t.is_alive(), f"round {k}: the workload hangs on the dead mount"
                assert w.error is None, f"round {k}: {w.error!r}"
                enospc_rounds += w.enospc
                report = d.sanitizer_report()
                assert report is None, report
                status, out = e2fsck(img, fix=True)
                assert status in (0, 1), f"after kill {k}: e2fsck -fy exited {status}:\n{out}"
                fixed += status == 1
                clean_kills += status == 0
                status, out = e2fsck(img)
                assert status == 0, f"after kill {k}: not clean after the repair:\n{out}"
    finally:
        pool.cleanup()
    entries, deleted = parse_log(logpath)
    print(f"{KILLS} kills: e2fsck -fy repaired {fixed}, found {clean_kills} clean; "
          f"{len(entries)} files fsync'ed, {checked_new} of them read back intact after the "
          f"kill that followed (the other {len(entries) - checked_new} deleted by the workload "
          f"before that), {len(entries) - len(deleted)} kept to the end and intact; "
          f"{enospc_rounds} rounds met ENOSPC")
    assert len(entries) >= KILLS, "the workload fsync'ed too little to prove anything"
    assert enospc_rounds == 0, "the image filled up: later rounds stopped before their kill"
