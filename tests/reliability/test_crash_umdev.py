"""kill -9 of the umdev daemons while processes write through partition files.

umdev-mbr: two writers, one per partition of an image partitioned by sfdisk, each logging (in a
file of its own, outside the image) every 4 KiB block before writing it and again once fsync
returned. The daemon is killed at a random moment, again and again on the same image; after each
kill every block whose fsync returned must be in the image at its place (partition start + its
offset), and the partition table must be intact. 50 kills here, 200 with VIEWOS_LONG=1.

umdev-ramdisk keeps its disk in memory, which by design does not outlive the daemon
(umdev-ramdisk(1)): what a kill must not do there is leave a writer hanging. The writer must
get an error at once, and the dead device files must be removable and the path reusable."""
import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import force_unmount
from rellib import LONG, MIB, DaemonPool, in_mountinfo, is_mountpoint, wait_until

MBR = "umdev-mbr"
RAMDISK = "umdev-ramdisk"
WORKLOAD = Path(__file__).with_name("fsync_workload.py")
BLOCK = 4096
KILLS = 200 if LONG else 50
CHAINS = 2
TABLE = "label: dos\nstart=2048, size=12288, type=83\nstart=14336, size=12288, type=83\n"


def parts_of(dev):
    return [Path(f"{dev}{n}") for n in (1, 2)]


def durable_blocks(log):
    """{slot: sha256} of the blocks whose last record is a completed fsync."""
    last = {}
    if log.exists():
        for line in log.read_text().splitlines():
            kind, *rest = line.split()
            last[int(rest[0])] = rest[1] if kind == "S" else None
    return {s: h for s, h in last.items() if h}


def remove_dead_mounts(paths):
    """Lazily unmount the dead mounts among paths, with one umount(8) for all of them (this
    runs once per kill, so a process per path adds up)."""
    dead = [str(p) for p in paths if in_mountinfo(p)]
    if dead:
        subprocess.run(["umount", "-l", *dead], capture_output=True)
    for p in dead:
        if in_mountinfo(p):
            force_unmount(p)


def kill_chain(workdir, pool, rounds, seed):
    """One image, one daemon after another, each killed while two writers fsync blocks through
    its partition files. Returns (kills, blocks checked, failures)."""
    workdir.mkdir()
    img = workdir / "disk.img"
    img.write_bytes(b"")
    os.truncate(img, 16 * MIB)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(img)],
                   input=TABLE, text=True, check=True, capture_output=True)
    table = img.read_bytes()[:512]
    starts = [2048 * 512, 14336 * 512]
    slots = 12288 * 512 // BLOCK
    dev = workdir / "hd"
    logs = [workdir / "log1", workdir / "log2"]
    rnd = random.Random(seed)
    failures, kills, checked = [], 0, 0
    try:
        for round_ in range(rounds):
            d = pool.new(MBR, [img, dev], dev)
            if not d.start():
                failures.append(f"round {round_}: the daemon did not start: {d.stderr()}")
                break
            wait_until(lambda: all(is_mountpoint(p) for p in parts_of(dev)), 20,
                       "the partition files")
            workers = [subprocess.Popen([sys.executable, str(WORKLOAD), "blocks", str(p),
                                         str(log), str(seed * 1000 + round_ * 10 + i),
                                         str(slots)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
                       for i, (p, log) in enumerate(zip(parts_of(dev), logs))]
            for w in workers:
                w.stdout.readline()
            time.sleep(rnd.uniform(0.0, 0.3))
            if not d.alive():
                failures.append(f"round {round_}: the daemon died by itself: {d.stderr()}")
            d.kill(unmount=False)
            for w in workers:
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
                    failures.append(f"round {round_}: a writer hung after the kill")
                err = w.stderr.read()
                w.stdout.close()
                w.stderr.close()
                if w.returncode != 0:
                    failures.append(f"round {round_}: a writer failed: {err}")
            remove_dead_mounts([dev, *parts_of(dev)])
            if d.sanitizer_report():
                failures.append(f"round {round_}: {d.sanitizer_report()}")
            data = img.read_bytes()
            if data[:512] != table:
                failures.append(f"round {round_}: the partition table changed")
            for start, log in zip(starts, logs):
                for slot, sha in durable_blocks(log).items():
                    off = start + slot * BLOCK
                    checked += 1
                    if hashlib.sha256(data[off:off + BLOCK]).hexdigest() != sha:
                        failures.append(f"round {round_}: fsynced block {slot} of the "
                                        f"partition at {start} is not in the image")
            kills += 1
            if failures:
                break
    finally:
        remove_dead_mounts([dev, *parts_of(dev)])
    return kills, checked, [f"{workdir.name}: {f}" for f in failures]


@pytest.mark.timeout(3600 if LONG else 300)
def test_kill_9_of_umdev_mbr_keeps_every_fsynced_block(tmp_path):
    """CHAINS chains run side by side, each on its own image, so that the kills add up
    without the run taking KILLS times a round: a round mostly waits (for a start, for the
    writers, for the kill), and two daemons killed at unrelated moments is no weaker a test."""
    pool = DaemonPool(tmp_path)
    per_chain = [KILLS // CHAINS + (i < KILLS % CHAINS) for i in range(CHAINS)]
    results = [None] * CHAINS

    def run_chain(i):
        try:
            results[i] = kill_chain(tmp_path / f"chain{i}", pool, per_chain[i], 5 + i)
        except Exception as e:  # a Hang or a failed wait: reported below
            results[i] = (0, 0, [f"chain{i}: {e!r}"])

    threads = [threading.Thread(target=run_chain, args=(i,)) for i in range(CHAINS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        pool.cleanup()
    failures = [f for r in results for f in r[2]]
    kills = sum(r[0] for r in results)
    checked = sum(r[1] for r in results)
    assert not failures, "\n".join(failures[:20])
    assert kills == KILLS and checked > KILLS
    print(f"umdev-mbr kills survived: {kills}, fsynced blocks checked: {checked}")


def test_kill_9_of_umdev_ramdisk_fails_writers_at_once_and_frees_the_path(tmp_path):
    dev = tmp_path / "ram"
    pool = DaemonPool(tmp_path)
    try:
        d = pool.new(RAMDISK, ["-o", "size=16M", dev], dev)
        assert d.start(), d.stderr()
        subprocess.run(["sfdisk", "--quiet", str(dev)], input=TABLE, text=True, check=True,
                       capture_output=True, timeout=60)
        wait_until(lambda: all(is_mountpoint(p) for p in parts_of(dev)), 20,
                   "the partition files")
        stop = threading.Event()
        outcome = {}

        def writer(path, base):
            fd = os.open(path, os.O_RDWR)
            try:
                i = 0
                while True:
                    os.pwrite(fd, os.urandom(BLOCK), base + (i % 200) * BLOCK)
                    if i % 8 == 0:
                        os.fsync(fd)
                    i += 1
                    if stop.is_set():
                        return "still writing"
            except OSError as e:
                return e.errno
            finally:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the flush of a dead device fails too

        results = []
        # the disk's writer stays clear of the table (past both partitions)
        targets = [(dev, 14 * MIB)] + [(p, 0) for p in parts_of(dev)]
        threads = [threading.Thread(target=lambda t=t: results.append(writer(*t)))
                   for t in targets]
        for t in threads:
            t.start()
        time.sleep(0.3)
        d.kill(signal.SIGKILL, unmount=False)
        for t in threads:
            t.join(10)
        stop.set()
        for t in threads:
            t.join(5)
        outcome["errors"] = sorted(results)
        # every writer was stopped by an error from the dead device (the kernel answers a
        # request in flight with ECONNABORTED, later ones with ENOTCONN or EIO), none hangs
        dead = (errno.EIO, errno.ENOTCONN, errno.ECONNABORTED)
        assert len(results) == 3 and all(r in dead for r in results), outcome
        remove_dead_mounts([dev, *parts_of(dev)])
        for p in [dev, *parts_of(dev)]:
            assert not in_mountinfo(p)
        # the path is free for a new RAM disk, which starts empty
        d2 = pool.new(RAMDISK, ["-o", "size=16M", dev], dev)
        assert d2.start(), d2.stderr()
        assert dev.stat().st_size == 16 * MIB
        with open(dev, "rb") as f:
            assert f.read(1 << 20) == bytes(1 << 20)
        assert d2.stop() == 0
        assert not d2.sanitizer_report()
    finally:
        pool.cleanup()
        remove_dead_mounts([dev, *parts_of(dev)])
