"""Load on umfuse-ext2: ten processes at once for a bounded time (8 s; 120 s with
VIEWOS_LONG=1) on one mount — four writers, each in its own directory (create, write, fsync,
publish by rename, unlink, mkdir/rmdir, truncate of drafts), two racers moving files between
two shared directories under colliding names (rename over each other, unlink, readdir), and
four readers walking the whole tree and reading every file they find (some of them while they
are renamed over or unlinked). Every file is self-describing (a header with its checksum), so
any file found anywhere can be checked. A writer keeps at most KEEP_FILES files (then it
unlinks where it would create), so that the long run races instead of filling the image.

A watchdog counts every process's completed operations; if none of them makes progress for 20
seconds the daemon's threads are dumped, it is killed, and the test fails as a deadlock. After
the load: every writer's directory is exactly what it says it made (names and contents), every
file anywhere is intact, the daemon exits 0, e2fsck -fn finds the image clean, and a read-only
remount shows the same."""
import hashlib
import multiprocessing
import os
import queue
import random
import struct
import time

import pytest

from conftest import make_ext
from relb_util import LONG, DaemonPool, e2fsck

DAEMON = "umfuse-ext2"
SECONDS = 120 if LONG else 8
# files a writer keeps at most (about 110 KB each): the long run filled the 512 MiB image
# before, and every writer died of ENOSPC instead of racing
KEEP_FILES = 400
STALL = 20
MAGIC = b"RLB1"


def make_content(rnd, tag):
    payload = rnd.randbytes(rnd.choice([0, 10, 4095, 4096, 20_000, 150_000, 600_000]))
    head = MAGIC + struct.pack("<I", len(payload)) + hashlib.sha256(payload).digest()
    return head + tag.encode().ljust(32, b"\0") + payload


def content_ok(data):
    if len(data) < 72 or data[:4] != MAGIC:
        return False
    n, = struct.unpack_from("<I", data, 4)
    return len(data) == 72 + n and hashlib.sha256(data[72:]).digest() == data[8:40]


def writer(root, me, deadline, progress, result):
    rnd = random.Random(me)
    d = os.path.join(root, f"own{me}")
    os.mkdir(d)
    made = {}  # name -> sha256 of the whole file
    i = 0
    while time.time() < deadline:
        i += 1
        op = rnd.random()
        if op < 0.5 and len(made) >= KEEP_FILES:
            op = 0.55  # enough kept: an unlink instead of a create
        if op < 0.5 or not made:
            data = make_content(rnd, f"w{me}-{i}")
            draft = os.path.join(d, f".draft{i}")
            with open(draft, "wb") as f:
                f.write(data)
                if rnd.random() < 0.2:
                    f.flush()
                    os.fsync(f.fileno())
            name = f"f{i}"
            os.rename(draft, os.path.join(d, name))  # published whole
            made[name] = hashlib.sha256(data).hexdigest()
        elif op < 0.6:
            name = rnd.choice(sorted(made))
            os.unlink(os.path.join(d, name))
            del made[name]
        elif op < 0.7:
            old = rnd.choice(sorted(made))
            new = f"r{i}"
            os.rename(os.path.join(d, old), os.path.join(d, new))
            made[new] = made.pop(old)
        elif op < 0.8:
            sub = os.path.join(d, f"sub{i % 5}")
            if os.path.isdir(sub):
                for n in os.listdir(sub):
                    os.unlink(os.path.join(sub, n))
                os.rmdir(sub)
            else:
                os.mkdir(sub)
                for k in range(rnd.randrange(10)):
                    with open(os.path.join(sub, f".x{k}"), "wb") as f:
                        f.write(make_content(rnd, f"w{me}-sub{k}"))
                    os.rename(os.path.join(sub, f".x{k}"), os.path.join(sub, f"x{k}"))
        elif op < 0.9:
            draft = os.path.join(d, f".trunc{i}")
            with open(draft, "wb") as f:
                f.write(rnd.randbytes(100_000))
            os.truncate(draft, rnd.randrange(100_000))
            os.unlink(draft)
        else:
            assert sorted(n for n in os.listdir(d) if n.startswith(("f", "r"))) == sorted(made)
        progress[me] += 1
    # subdirectories are not part of the manifest: make them go
    for n in os.listdir(d):
        p = os.path.join(d, n)
        if os.path.isdir(p):
            for x in os.listdir(p):
                os.unlink(os.path.join(p, x))
            os.rmdir(p)
        progress[me] += 1
    result.put((me, made))


def racer(root, me, deadline, progress, result):
    rnd = random.Random(100 + me)
    a, b = os.path.join(root, "shared-a"), os.path.join(root, "shared-b")
    for d in (a, b):
        os.makedirs(d, exist_ok=True)
    problems = []
    i = 0
    while time.time() < deadline:
        i += 1
        src, dst = (a, b) if rnd.random() < 0.5 else (b, a)
        name = f"n{rnd.randrange(40)}"
        try:
            op = rnd.random()
            if op < 0.4:
                tmp = os.path.join(src, f".t{me}-{i}")
                with open(tmp, "wb") as f:
                    f.write(make_content(rnd, f"racer{me}-{i}"))
                os.rename(tmp, os.path.join(src, name))  # may replace another's
            elif op < 0.7:
                os.rename(os.path.join(src, name), os.path.join(dst, name))
            elif op < 0.8:
                os.unlink(os.path.join(src, name))
            else:
                os.listdir(src)
        except FileNotFoundError:
            pass  # the other racer got there first
        except OSError as e:
            problems.append(f"racer {me}: {os.strerror(e.errno)}")
        progress[me] += 1
    result.put((me, problems))


def reader(root, me, deadline, progress, result):
    problems = []
    files = 0
    while time.time() < deadline:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in filenames:
                if n.startswith("."):
                    continue  # drafts: written while we look
                try:
                    with open(os.path.join(dirpath, n), "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue  # renamed or unlinked between the listing and the open
                except OSError as e:
                    problems.append(f"reader {me}: {n}: {os.strerror(e.errno)}")
                    continue
                files += 1
                if not content_ok(data):
                    problems.append(f"reader {me}: {os.path.join(dirpath, n)}: damaged")
                progress[me] += 1
            progress[me] += 1
    result.put((me, problems, files))


def check_tree(root, manifests):
    bad = []
    for me, made in manifests.items():
        d = os.path.join(root, f"own{me}")
        names = sorted(n for n in os.listdir(d))
        if names != sorted(made):
            bad.append(f"own{me}: {set(names) ^ set(made)}")
        for name, digest in made.items():
            with open(os.path.join(d, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    bad.append(f"own{me}/{name}: content")
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            with open(os.path.join(dirpath, n), "rb") as f:
                if not content_ok(f.read()):
                    bad.append(f"{dirpath}/{n}: damaged")
    return bad


# the long run (VIEWOS_LONG=1) outlasts pytest.ini's 300 s
@pytest.mark.timeout(1200 if LONG else 300)
def test_ten_processes_race_without_deadlock_or_damage(tmp_path):
    img = make_ext(tmp_path / "img", fstype="ext4", size="512M", blocksize=4096)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pool = DaemonPool(tmp_path)
    ctx = multiprocessing.get_context("fork")
    procs = []
    try:
        d = pool.new(DAEMON, [img, mnt], mnt)
        assert d.start(), d.output()
        deadline = time.time() + SECONDS
        progress = ctx.Array("q", 10, lock=False)
        results = ctx.Queue()
        roles = [(writer, i) for i in range(4)] + [(racer, i) for i in (4, 5)] + \
                [(reader, i) for i in range(6, 10)]
        procs = [ctx.Process(target=fn, args=(str(mnt), i, deadline, progress, results))
                 for fn, i in roles]
        for p in procs:
            p.start()
        # the watchdog: results are collected as they come (a child cannot exit before its
        # result is read), and a stall of every unfinished process fails the test
        got = []
        last, last_change = list(progress), time.monotonic()
        while len(got) < len(procs):
            try:
                got.append(results.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            now = list(progress)
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > STALL:
                stacks = d.stacks()
                d.kill()
                raise AssertionError(f"no process made progress for {STALL}s: a deadlock. "
                                     f"The daemon's threads:\n{stacks}")
            if not any(p.is_alive() for p in procs) and results.empty():
                break
        for p in procs:
            p.join(30)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        assert len(got) == len(procs)
        manifests = {g[0]: g[1] for g in got if g[0] < 4}
        problems = [p for g in got if g[0] >= 4 for p in g[1]]
        assert not problems, problems[:20]
        read = sum(g[2] for g in got if g[0] >= 6)
        assert read > 100, "the readers read too little to prove anything"
        assert check_tree(str(mnt), manifests) == []
        print(f"{SECONDS}s: {sum(progress)} operations ({read} files read back by the readers), "
              f"{sum(len(m) for m in manifests.values())} files kept by the writers")
        assert d.stop() == 0, d.output()
        assert not d.sanitizer_report()
        status, out = e2fsck(img)
        assert status == 0, out
        d = pool.new(DAEMON, ["-o", "ro", img, mnt], mnt)
        assert d.start()
        assert check_tree(str(mnt), manifests) == []
        assert d.stop() == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        pool.cleanup()
