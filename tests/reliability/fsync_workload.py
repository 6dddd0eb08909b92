"""A write workload that keeps a log, outside the file system it writes to, of what is durable:
run as a separate process against a mount whose daemon a test kills with SIGKILL at a random
moment.

  fsync_workload.py files MOUNT LOG SEED
      Files and directories on a file system: new files written in a few pieces and fsynced
      (then never touched again, until the workload deletes old ones to bound the space:
      `U name` is logged before such an unlink), scratch files created, renamed, truncated,
      overwritten and unlinked without fsync, directories made, and fsyncdir.
      Log lines: `F path size sha256` once fsync returned; `U path` before an unlink.

  fsync_workload.py blocks DEVICE LOG SEED SLOTS
      Blocks of 4 KiB written through a device file (a partition), each at a slot of its own:
      `W slot` before the write, `S slot sha256` once fsync returned.

The log is appended with O_APPEND and each line written with one write(2), so whatever the
workload has logged is there when the daemon dies (the workload itself is not killed). Any error
from the file system ends the workload quietly: the daemon is gone (or the volume is full: a
short write counts as ENOSPC, and the file it was for is not logged)."""
import errno
import hashlib
import os
import random
import sys

BLOCK = 4096


class Log:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def line(self, text):
        os.write(self.fd, (text + "\n").encode())


def content(rnd, size):
    return rnd.randbytes(size)


def live_files(log_path):
    """Paths fsynced by earlier runs and not since given up, oldest first, with sizes."""
    live = {}
    try:
        with open(log_path) as f:
            for line in f:
                parts = line.split(" ", 1)
                if parts[0] == "F":
                    path, size, _ = parts[1].rsplit(" ", 2)
                    live[path] = int(size)
                elif parts[0] == "U":
                    live.pop(parts[1].rstrip("\n"), None)
    except FileNotFoundError:
        pass
    return live


def pwrite_all(fd, data, offset):
    """pwrite that takes a short count for what it is: a full file system (write(2) on a full
    disk writes what fits and says how much), so the file is not whole and must not be logged."""
    if os.pwrite(fd, data, offset) != len(data):
        raise OSError(errno.ENOSPC, "short write")


def files(mount, log_path, seed):
    rnd = random.Random(seed)
    log = Log(log_path)
    live = live_files(log_path)
    budget = 1 << 20  # bytes of fsynced files kept; older ones are deleted beyond it
    scratch = []
    dirs = [""] + sorted({os.path.dirname(p) for p in live if "/" in p})
    n = 0
    # scratch files of earlier runs go first: left there, they fill the volume after a few
    # hundred rounds, and every later run would stop at ENOSPC before its kill
    for name in os.listdir(mount):
        if name.startswith(("scratch ", "renamed ")) and name.endswith(".tmp"):
            os.unlink(os.path.join(mount, name))
    sys.stdout.write("started\n")
    sys.stdout.flush()
    while True:
        n += 1
        op = rnd.random()
        if op < 0.45:
            d = rnd.choice(dirs)
            name = rnd.choice([f"s{seed}-{n}.dat", f"fsynced file {seed} {n} with a long name.bin",
                               f"Mixed Case {seed}-{n}.TXT"])
            path = f"{d}/{name}" if d else name
            size = rnd.choice([0, 1, 511, 4096, 5000, 20000, 70000])
            data = content(rnd, size)
            fd = os.open(os.path.join(mount, path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                pieces = sorted(rnd.sample(range(1, size), min(3, size - 1))) if size > 1 else []
                at = 0
                for cut in pieces + [size]:
                    pwrite_all(fd, data[at:cut], at)
                    at = cut
                os.fsync(fd)
            finally:
                os.close(fd)
            log.line(f"F {path} {size} {hashlib.sha256(data).hexdigest()}")
            live[path] = size
            while sum(live.values()) > budget:
                old = next(iter(live))
                log.line(f"U {old}")
                del live[old]
                os.unlink(os.path.join(mount, old))
        elif op < 0.65:
            name = f"scratch {seed} {n}.tmp"
            with open(os.path.join(mount, name), "wb") as f:
                f.write(content(rnd, rnd.choice([100, 3000, 40000])))
            scratch.append(name)
        elif op < 0.72 and scratch:
            old = scratch.pop(rnd.randrange(len(scratch)))
            new = f"renamed {seed} {n}.tmp"
            os.rename(os.path.join(mount, old), os.path.join(mount, new))
            scratch.append(new)
        elif op < 0.80 and scratch:
            name = rnd.choice(scratch)
            with open(os.path.join(mount, name), "r+b") as f:
                f.truncate(rnd.choice([0, 10, 5000]))
                f.seek(rnd.randrange(8000))
                f.write(content(rnd, 3000))
        elif op < 0.90 and scratch:
            os.unlink(os.path.join(mount, scratch.pop(rnd.randrange(len(scratch)))))
        elif op < 0.95 and len(dirs) < 8:
            d = f"dir {seed} {n}"
            os.mkdir(os.path.join(mount, d))
            dirs.append(d)
        else:
            fd = os.open(os.path.join(mount, rnd.choice(dirs)) if dirs else mount, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def blocks(device, log_path, seed, slots):
    rnd = random.Random(seed)
    log = Log(log_path)
    fd = os.open(device, os.O_RDWR)
    sys.stdout.write("started\n")
    sys.stdout.flush()
    slot = rnd.randrange(slots)
    while True:
        count = rnd.choice([1, 1, 2, 8])
        data = rnd.randbytes(BLOCK * count)
        written = []
        for k in range(count):
            s = (slot + k) % slots
            log.line(f"W {s}")
            pwrite_all(fd, data[k * BLOCK:(k + 1) * BLOCK], s * BLOCK)
            written.append((s, data[k * BLOCK:(k + 1) * BLOCK]))
        slot = (slot + count) % slots
        if rnd.random() < 0.7:
            os.fsync(fd)
            for s, block in written:
                log.line(f"S {s} {hashlib.sha256(block).hexdigest()}")


def main():
    try:
        if sys.argv[1] == "files":
            files(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        else:
            blocks(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    except OSError:
        return 0  # the daemon is gone: that is the point
    return 0


if __name__ == "__main__":
    sys.exit(main())
