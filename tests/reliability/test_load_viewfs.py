"""Load on viewfs: ten processes of the unprivileged user race on one cow mount over an original
tree for a bounded time (8 s; 120 s with VIEWOS_LONG=1), with a watchdog that fails the test
when no process makes progress for 20 s (a deadlock), and shows where the daemon's threads wait.

The processes (this file run as a script, `worker KIND`): two writers of self-checking files
(written under a temporary name, then renamed into place over each other), two appenders of
self-checking lines to original files (copy-ups racing readers that opened the original), two
renamers (files over each other across directories, and whole original directories back and
forth), an unlinker (of original and new files alike), a lister (readdir and lstat of each
entry, again and again) and two readers that open files at random and check every complete
line or whole file they read. A name that vanished under a racer (ENOENT) is part of the race;
any other error, and any content that does not check, is a failure.

Afterwards: every file in the view checks, the original tree is unchanged (digest), the daemon
leaves cleanly at the unmount (exit 0) and the layer mounts again with every file checking."""
import errno
import hashlib
import os
import random
import sys
import time

RENAMED_DIRS = ["orig/d0", "orig/d1"]


def line(payload):
    return hashlib.sha256(payload).hexdigest().encode() + b" " + payload + b"\n"


def check_lines(data):
    """None if every complete line checks (the last one may be an append under way)."""
    for ln in data.split(b"\n")[:-1]:
        digest, _, payload = ln.partition(b" ")
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            return f"a line does not check: {ln[:80]!r}"
    return None


def whole(payload):
    return hashlib.sha256(payload).digest() + payload


def check_whole(data):
    if len(data) < 32 or hashlib.sha256(data[32:]).digest() != data[:32]:
        return f"a self-checking file does not check ({len(data)} bytes)"
    return None


def check_file(path):
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    if name.startswith("w"):
        return check_whole(data)
    return check_lines(data)


def files_under(mnt):
    out = []
    for dirpath, _, filenames in os.walk(mnt):
        out += [os.path.join(dirpath, n) for n in filenames if not n.startswith("tmp-")]
    return out


def worker(kind, mnt, me, progress):
    rnd = random.Random(f"{kind}-{me}")
    n = 0
    bump = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    dirs = [os.path.join(mnt, d) for d in ("new", "orig/d0", "orig/d1", "orig/d2")]
    while True:
        n += 1
        try:
            if kind == "writer":
                d = rnd.choice(dirs[:1] + dirs[3:])
                tmp = os.path.join(d, f"tmp-{me}-{n}")
                with open(tmp, "wb") as f:
                    f.write(whole(rnd.randbytes(rnd.choice([10, 4000, 70000]))))
                os.rename(tmp, os.path.join(d, f"w{rnd.randrange(40)}"))
            elif kind == "appender":
                p = rnd.choice(files_under(os.path.join(mnt, "orig")) or [None])
                if p and not os.path.basename(p).startswith("w"):
                    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
                    try:
                        os.write(fd, line(rnd.randbytes(rnd.randrange(1, 300)).hex().encode()))
                    finally:
                        os.close(fd)
            elif kind == "renamer":
                if rnd.random() < 0.2:
                    a, b = (os.path.join(mnt, d) for d in RENAMED_DIRS)
                    if os.path.exists(a):
                        os.rename(a, b + "-moved") if not os.path.exists(b + "-moved") else None
                    elif os.path.exists(b + "-moved"):
                        os.rename(b + "-moved", a)
                else:
                    src = rnd.choice(files_under(mnt) or [None])
                    if src:
                        name = os.path.basename(src)
                        os.rename(src, os.path.join(rnd.choice(dirs), name))
            elif kind == "unlinker":
                p = rnd.choice(files_under(mnt) or [None])
                if p and rnd.random() < 0.5:
                    os.unlink(p)
                time.sleep(0.01)
            elif kind == "lister":
                for dirpath, dirnames, filenames in os.walk(mnt):
                    for name in dirnames + filenames:
                        try:
                            os.lstat(os.path.join(dirpath, name))
                        except FileNotFoundError:
                            pass
            elif kind == "reader":
                p = rnd.choice(files_under(mnt) or [None])
                if p:
                    why = check_file(p)
                    if why:
                        print(f"BAD {p}: {why}", flush=True)
                        return 1
        except FileNotFoundError:
            pass  # a racer moved or removed it first
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.ECONNABORTED) and os.path.exists(mnt + ".stop"):
                return 0
            print(f"BAD {kind}: {e!r}", flush=True)
            return 1
        os.pwrite(bump, f"{n:12d}".encode(), 0)
        if os.path.exists(mnt + ".stop"):
            return 0


def check_all(mnt):
    """[number of files, [(path, problem)]] of every file in the view."""
    bad, n = [], 0
    for p in files_under(mnt):
        n += 1
        why = check_file(p)
        if why:
            bad.append((p, why))
    return [n, bad]


if __name__ == "__main__":
    if sys.argv[1] == "check":
        import json
        print(json.dumps(check_all(sys.argv[2])))
        sys.exit(0)
    sys.exit(worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]))


import json  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

from conftest import run, tree_digest  # noqa: E402
from rellib import LONG  # noqa: E402

DURATION = 120 if LONG else 8
STALL = 20
KINDS = ["writer", "writer", "appender", "appender", "renamer", "renamer", "unlinker",
         "lister", "reader", "reader"]



@pytest.mark.timeout(3600 if LONG else 300)
def test_ten_processes_race_on_a_cow_view_without_deadlock_or_damage(utmp, user, mounts):
    orig, layer = utmp / "mnt", utmp / "layer"
    for d in ("orig/d0/sub", "orig/d1", "orig/d2", "new"):
        (orig / d).mkdir(parents=True)
    rnd = random.Random(8)
    for d in ("orig/d0", "orig/d0/sub", "orig/d1", "orig/d2"):
        for i in range(15):
            (orig / d / f"o{i}").write_bytes(b"".join(line(rnd.randbytes(rnd.randrange(1, 200))
                                                           .hex().encode())
                                                      for _ in range(rnd.randrange(1, 40))))
    layer.mkdir()
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(orig), str(layer)], check=True)
    before = tree_digest(orig)
    fd = os.open(orig, os.O_PATH)
    m = mounts.start("viewfs", "-o", "cow", layer, orig, mountpoint=orig, user=user)
    stop = f"{orig}.stop"
    procs, progress = [], []
    try:
        for i, kind in enumerate(KINDS):
            p = utmp / f"progress-{i}"
            progress.append(p)
            procs.append(subprocess.Popen(
                user.wrap(["/usr/bin/python3", os.path.abspath(__file__), kind, str(orig), str(i),
                           str(p)]), env=user.env(), stdout=subprocess.PIPE, text=True))

        def counts():
            out = []
            for p in progress:
                try:
                    out.append(int(p.read_text() or 0))
                except (OSError, ValueError):
                    out.append(0)
            return out

        start = last_move = time.monotonic()
        seen = counts()
        while time.monotonic() - start < DURATION:
            time.sleep(0.5)
            now = counts()
            if now != seen:
                seen, last_move = now, time.monotonic()
            dead = [KINDS[i] for i, p in enumerate(procs) if p.poll() is not None]
            assert not dead, "workers ended early: " + "; ".join(
                f"{KINDS[i]}: {p.stdout.read()}" for i, p in enumerate(procs)
                if p.poll() is not None)
            if time.monotonic() - last_move > STALL:
                threads = ""
                for tid in os.listdir(f"/proc/{m.proc.pid}/task"):
                    try:
                        threads += f"{tid}: " + open(f"/proc/{m.proc.pid}/task/{tid}/stack").read()
                    except OSError:
                        pass
                raise AssertionError(f"no worker made progress for {STALL}s (deadlock?); "
                                     f"daemon threads:\n{threads}")
        user_stop = run(["touch", stop], user=user)
        assert user_stop.returncode == 0
        for i, p in enumerate(procs):
            try:
                p.wait(STALL)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{KINDS[i]} did not stop within {STALL}s (deadlock?)")
            out = p.stdout.read()
            assert p.returncode == 0, f"{KINDS[i]}: {out}"
        ops = sum(counts())
        r = run(["/usr/bin/python3", os.path.abspath(__file__), "check", str(orig)], user=user)
        n, bad = json.loads(r.stdout)
        assert not bad, bad[:5]
        assert n > 20, "the workers removed almost everything: nothing left to check"
        assert tree_digest(f"/proc/{os.getpid()}/fd/{fd}") == before, "the original changed"
        m.unmount()
        m2 = mounts.start("viewfs", "-o", "cow", layer, orig, mountpoint=orig, user=user)
        r = run(["/usr/bin/python3", os.path.abspath(__file__), "check", str(orig)], user=user)
        n2, bad = json.loads(r.stdout)
        assert not bad and n2 == n, (n, n2, bad[:5])
        m2.unmount()
        print(f"{len(KINDS)} processes for {DURATION}s on viewfs -o cow: {ops} operations, "
              f"{n} files checked after (and again after a remount), original unchanged")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        os.close(fd)
