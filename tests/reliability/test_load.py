"""Load and concurrency, for a bounded time, with a watchdog.

umfuse-fat: 9 processes at once — 4 writers replacing whole files in their own directories
(write aside, rename over), 2 writers doing the same in shared directories plus renames between
them and unlinks, 2 readers that keep files open across those renames and unlinks, and a lister
walking and stat-ing everything — once with the default single serving thread and once with
-o max_threads=4. Afterwards fsck.fat -n finds the volume clean, every writer's directory holds
exactly the versions it last wrote, every file anywhere is a whole version of itself, and no
reader ever saw a torn or misnamed file.

umdev-mbr: 8 processes — 3 writers of self-checking 4 KiB blocks, one per partition, 3 readers
of the whole disk (each whole block they read must lie where its header says), a process
adding and removing a 4th partition through the disk file (a table re-read at each close, and
BLKRRPART), and a reader of that coming and going partition. Afterwards every block holds what
its writer last wrote and the table is one of the two written.

The watchdog fails the test, naming where the daemon's threads wait, when any process makes no
progress for STALL seconds. 8 seconds of load per case; VIEWOS_LONG=1 makes it 300."""
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_fat
from rellib import LONG, MIB, DaemonPool, in_mountinfo, is_mountpoint, wait_until

FAT = "umfuse-fat"
MBR = "umdev-mbr"
WORKLOAD = Path(__file__).with_name("load_workload.py")
SECONDS = 300 if LONG else 8
STALL = 30
BLOCK = 4096


class Load:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, role, seed, *args):
        i = len(self.procs)
        progress, result = self.workdir / f"progress{i}", self.workdir / f"result{i}.json"
        p = subprocess.Popen([sys.executable, str(WORKLOAD), role, str(progress), str(result),
                              str(self.deadline), str(seed), *[str(a) for a in args]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append((role, p, progress, result))

    def begin(self, seconds):
        self.deadline = time.time() + seconds

    def watch(self, daemon):
        """Wait for every process to end; a stall (or a dead daemon) kills the daemon, so that
        stuck requests fail, and is returned as a problem."""
        last = {}
        while True:
            now = time.monotonic()
            running = [x for x in self.procs if x[1].poll() is None]
            if not running:
                return None
            for role, p, progress, _ in running:
                try:
                    count = struct.unpack("<Q", progress.read_bytes()[:8])[0]
                except (OSError, struct.error):
                    count = 0
                seen, since = last.get(p.pid, (None, now))
                if count != seen:
                    last[p.pid] = (count, now)
                elif now - since > STALL:
                    where = daemon.threads()
                    wchan = open(f"/proc/{p.pid}/wchan").read() if \
                        os.path.exists(f"/proc/{p.pid}/wchan") else "?"
                    daemon.kill(unmount=False)
                    for _, q, _, _ in self.procs:
                        try:
                            q.wait(30)
                        except subprocess.TimeoutExpired:
                            q.kill()
                    daemon.kill()
                    return (f"no progress for {STALL}s: {role} (pid {p.pid}, waiting in "
                            f"{wchan}) stuck after {count} operations; daemon threads:\n{where}")
            if not daemon.alive():
                for _, q, _, _ in self.procs:
                    q.kill()
                return f"the daemon died: {daemon.stderr()}"
            time.sleep(0.5)

    def results(self):
        out = []
        for role, p, _, result in self.procs:
            err = p.stderr.read()
            p.stderr.close()
            try:
                res = json.loads(result.read_text())
            except (OSError, ValueError):
                res = {"problems": [f"no result (exit {p.returncode}): {err}"], "ops": 0,
                       "checked": 0}
            out.append((role, res))
        return out

    def cleanup(self):
        for _, p, _, _ in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def whole_piece(data):
    if len(data) < 34 or hashlib.sha256(data[:-32]).digest() != data[-32:]:
        return None
    n = struct.unpack_from("<H", data)[0]
    return data[2:2 + n].decode()


@pytest.mark.timeout(SECONDS + 280)
@pytest.mark.parametrize("fat,threads", [(16, 1), (32, 4)])
def test_parallel_writers_readers_renames_and_listings_on_umfuse_fat(tmp_path, fat, threads):
    img = make_fat(tmp_path / "load.img", fat=fat, size="64M" if fat == 32 else "48M",
                   cluster_sectors=2 if fat == 16 else 1)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    load = Load(tmp_path)
    opts = ["-o", f"max_threads={threads}"] if threads > 1 else []
    try:
        d = pool.new(FAT, [*opts, img, mnt], mnt)
        assert d.start(), d.stderr()
        for sub in ["shared", "shared/one", "shared/two"] + [f"writer {i}" for i in range(8)]:
            os.mkdir(mnt / sub)
        load.begin(SECONDS)
        for i in range(4):
            load.start("writer", i, mnt, i)
        for i in range(4, 6):
            load.start("shared", i, mnt, i)
        for i in range(2):
            load.start("reader", 10 + i, mnt)
        load.start("lister", 20, mnt)
        stall = load.watch(d)
        assert stall is None, stall
        results = load.results()
        assert d.stop() == 0, d.stderr()
        assert not d.sanitizer_report()
    finally:
        load.cleanup()
        pool.cleanup()
    problems = [f"{role}: {p}" for role, r in results for p in r["problems"]]
    assert not problems, "\n".join(problems)
    ops = {role: 0 for role, _ in results}
    for role, r in results:
        ops[role] += r["ops"]
    assert all(n > 10 for n in ops.values()), ops
    assert sum(r["checked"] for role, r in results if role == "reader") > 20
    r = subprocess.run(["fsck.fat", "-n", str(img)], capture_output=True, text=True)
    findings = [line for line in (r.stdout + r.stderr).splitlines()
                if line and not line.startswith("fsck.fat ") and not line.startswith(f"{img}:")]
    assert r.returncode == 0 and not findings, r.stdout + r.stderr
    # the end state, read through a fresh read-only mount
    pool = DaemonPool(tmp_path)
    try:
        d = pool.new(FAT, ["-o", "ro", img, mnt], mnt)
        assert d.start(), d.stderr()
        wid = 0
        for role, res in results:
            if role != "writer":
                continue
            wdir = mnt / f"writer {wid}"
            on_disk = {n: hashlib.sha256((wdir / n).read_bytes()).hexdigest()
                       for n in os.listdir(wdir) if n.endswith(".bin")}
            assert on_disk == res["state"], f"writer {wid}"
            wid += 1
        for sub in ["shared", "shared/one", "shared/two"]:
            for n in os.listdir(mnt / sub):
                if n.endswith(".bin"):
                    tag = whole_piece((mnt / sub / n).read_bytes())
                    assert tag and tag.rsplit(" v", 1)[0].rsplit("/", 1)[-1] == n, f"{sub}/{n}"
        assert d.stop() == 0
    finally:
        pool.cleanup()
    reads = sum(r["checked"] for role, r in results if role == "reader")
    print(f"FAT{fat}, {threads} thread(s), {SECONDS}s: operations {ops}, whole files read "
          f"by the readers {reads}")


def mbr_sector0(parts):
    """An MBR with these (start, sectors) primary partitions, type 0x83."""
    s = bytearray(512)
    for i, (start, count) in enumerate(parts):
        s[0x1BE + 16 * i + 4] = 0x83
        s[0x1BE + 16 * i + 8:0x1BE + 16 * i + 16] = struct.pack("<II", start, count)
    s[510:512] = b"\x55\xaa"
    return bytes(s)


@pytest.mark.timeout(SECONDS + 280)
def test_parallel_partition_writers_disk_readers_and_table_rereads_on_umdev(tmp_path):
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(32 * MIB)
    three = [(2048 + i * 16384, 16384) for i in range(3)]
    four = three + [(51200, 8192)]
    with4, without4 = mbr_sector0(four), mbr_sector0(three)
    img.write_bytes(without4 + bytes(32 * MIB - 512))
    dev = tmp_path / "hd"
    pool = DaemonPool(tmp_path)
    load = Load(tmp_path)
    starts = {n + 1: start * 512 for n, (start, _) in enumerate(three)}
    slots = 16384 * 512 // BLOCK
    try:
        d = pool.new(MBR, [img, dev], dev)
        assert d.start(), d.stderr()
        wait_until(lambda: all(is_mountpoint(f"{dev}{n}") for n in (1, 2, 3)), 20,
                   "the partition files")
        load.begin(SECONDS)
        for n in (1, 2, 3):
            load.start("blocks", n, f"{dev}{n}", n, slots)
        for i in range(3):
            load.start("scan", 10 + i, dev, json.dumps(starts))
        load.start("table", 20, dev, with4.hex(), without4.hex())
        load.start("partfile", 21, f"{dev}4")
        stall = load.watch(d)
        assert stall is None, stall
        results = load.results()
        assert d.stop() == 0, d.stderr()
        assert not d.sanitizer_report()
    finally:
        load.cleanup()
        pool.cleanup()
        for p in [dev] + [Path(f"{dev}{n}") for n in range(1, 5)]:
            if in_mountinfo(p):
                subprocess.run(["umount", "-l", str(p)], capture_output=True)
    problems = [f"{role}: {p}" for role, r in results for p in r["problems"]]
    assert not problems, "\n".join(problems)
    data = img.read_bytes()
    assert data[:512] in (with4, without4)
    checked = 0
    writers = [r for role, r in results if role == "blocks"]  # partitions 1, 2, 3 in order
    for n, r in zip((1, 2, 3), writers):
        assert r["ops"] > 10
        for slot, digest in r["state"].items():
            off = starts[n] + int(slot) * BLOCK
            block = data[off:off + BLOCK]
            assert hashlib.sha256(block).hexdigest() == digest, \
                f"partition {n} slot {slot}: the last version written is not there"
            assert whole_piece(block).split()[1:3] == [f"p{n}", f"s{slot}"]
            checked += 1
    scans = sum(r["checked"] for role, r in results if role == "scan")
    rereads = sum(r["checked"] for role, r in results if role == "table")
    assert checked > 30 and scans > 10 and rereads > 10, (checked, scans, rereads)
    print(f"umdev {SECONDS}s: blocks verified {checked}, blocks placed right by readers "
          f"{scans}, table changes {rereads}")
