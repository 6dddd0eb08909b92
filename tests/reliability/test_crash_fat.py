"""kill -9 of umfuse-fat at random moments of a write workload, over and over on the same images
(FAT12, FAT16 and FAT32, one chain of kills each, in parallel): after each kill, without
mounting again, `fsck.fat -a` must repair the image (and `fsck.fat -n` then find nothing), and
every file whose fsync returned before the kill — as the workload's own log says, kept outside
the image — must read back whole, by an independent reader of the image (rellib.FatLayout) and,
for one file each time, by mtools. Then the image is mounted again for the next round, so files
made durable rounds ago are checked after every later crash too.

At least 50 kills in the normal suite; VIEWOS_LONG=1 makes it 501 (167 per FAT type)."""
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import make_fat
from rellib import LONG, DaemonPool, FatLayout, Hang

FAT = "umfuse-fat"
WORKLOAD = Path(__file__).with_name("fsync_workload.py")
KILLS_PER_TYPE = 167 if LONG else 17
FORMATS = {12: ("4M", 4), 16: ("16M", 1), 32: ("36M", 1)}


def fsck(img, *args):
    r = subprocess.run(["fsck.fat", *args, str(img)], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


def findings(img, out):
    return [line for line in out.splitlines() if line and not line.startswith("fsck.fat ")
            and not line.startswith(f"{img}:")]


def expected_files(log):
    """{path: (size, sha256)} of the files the workload made durable and did not give up."""
    out = {}
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "F":
            path, size, sha = rest.rsplit(" ", 2)
            out[path] = (int(size), sha)
        elif kind == "U":
            out.pop(rest, None)
    return out


def read_by_layout(layout, tree, path):
    node = tree.get(path)
    if node is None or node.is_dir:
        return None
    out = bytearray()
    for c in layout.chain(node.first):
        off, n = layout.cluster_range(c)
        out += layout.data[off:off + n]
    return bytes(out[:node.size]) if len(out) >= node.size else None


def mtools_read(img, path):
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8")
    r = subprocess.run(["mtype", "-i", str(img), "::" + path], capture_output=True, env=env,
                       timeout=60)
    return r.stdout if r.returncode == 0 else None


def kill_chain(pool, workdir, fat, kills, first_seed, stats):
    """Rounds of mount, workload, kill -9, repair and check on one image; returns failures."""
    size, spc = FORMATS[fat]
    img = Path(make_fat(workdir / f"crash{fat}.img", fat=fat, size=size, cluster_sectors=spc))
    mnt = workdir / f"mnt{fat}"
    mnt.mkdir()
    log = workdir / f"log{fat}"
    rnd = random.Random(fat)
    failures = []
    for round_ in range(kills):
        seed = first_seed + round_
        d = pool.new(FAT, [img, mnt], mnt)
        if not d.start():
            return failures + [f"round {round_}: the repaired image was refused: {d.stderr()}"]
        wl = subprocess.Popen([sys.executable, str(WORKLOAD), "files", str(mnt), str(log),
                               str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        try:
            wl.stdout.readline()  # "started"
            time.sleep(rnd.uniform(0.0, 0.4))
            if not d.alive():
                failures.append(f"round {round_}: the daemon died by itself: {d.stderr()}")
            # SIGKILL; the dead mount stays until the workload has met it (ENOTCONN) and ended
            d.kill(unmount=False)
            wl.wait(30)
        except subprocess.TimeoutExpired:
            wl.kill()
            wl.wait()
            failures.append(f"round {round_}: the workload did not end after the kill")
        d.kill()  # now the dead mount goes
        err = wl.stderr.read()
        wl.stdout.close()
        wl.stderr.close()
        if wl.returncode != 0:
            failures.append(f"round {round_}: the workload failed: {err}")
        if d.sanitizer_report():
            failures.append(f"round {round_}: sanitizer report: {d.sanitizer_report()}")
        # repair, without mounting
        status, out = fsck(img, "-a")
        if status not in (0, 1):
            failures.append(f"round {round_}: fsck.fat -a failed ({status}): {out}")
            break
        with stats["lock"]:
            stats["repaired"] += status == 1
        status, out = fsck(img, "-n")
        if status != 0 or findings(img, out):
            failures.append(f"round {round_}: not clean after fsck.fat -a ({status}): {out}")
            break
        # every durable file, whole
        expected = expected_files(log)
        layout = FatLayout(img.read_bytes())
        tree = layout.tree()
        for path, (size, sha) in expected.items():
            data = read_by_layout(layout, tree, path)
            if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                failures.append(f"round {round_}: fsynced '{path}' ({size} bytes) is "
                                f"{'missing' if data is None else 'damaged'} after the kill")
        if expected:
            path = rnd.choice(sorted(expected))
            data = mtools_read(img, path)
            if data is None or hashlib.sha256(data).hexdigest() != expected[path][1]:
                failures.append(f"round {round_}: mtools reads '{path}' differently")
        with stats["lock"]:
            stats["kills"] += 1
            stats["checked"] += len(expected)
        if failures:
            break
    return failures


@pytest.mark.timeout(3600 if LONG else 300)
def test_kill_9_during_writes_fsck_repairs_and_fsynced_files_survive(tmp_path):
    pool = DaemonPool(tmp_path)
    stats = {"kills": 0, "repaired": 0, "checked": 0, "lock": threading.Lock()}
    results = {}

    def chain(fat):
        try:
            results[fat] = kill_chain(pool, tmp_path, fat, KILLS_PER_TYPE, fat * 10000, stats)
        except (Hang, OSError, subprocess.SubprocessError) as e:
            results[fat] = [f"FAT{fat}: {e!r}"]

    threads = [threading.Thread(target=chain, args=(fat,)) for fat in FORMATS]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        pool.cleanup()
    failures = [f"FAT{fat}: {f}" for fat, r in sorted(results.items()) for f in r]
    assert not failures, "\n".join(failures)
    assert stats["kills"] == 3 * KILLS_PER_TYPE >= 50
    # the kills did land in the middle of things: fsck had something to repair
    assert stats["repaired"] > 0, stats
    print(f"kills survived: {stats['kills']}, repaired by fsck.fat -a: {stats['repaired']}, "
          f"fsynced files checked: {stats['checked']}")
