"""The processes of the load tests (test_load.py), one role each, run until a deadline:

  load_workload.py ROLE PROGRESS RESULT DEADLINE SEED ARGS...

Each process counts its operations into PROGRESS (8 bytes, rewritten after every operation; the
test's watchdog fails the test when the counts stop moving) and writes RESULT (JSON) at the end:
what it checked, what it found wrong, and for writers the state it left.

Every file and block written is self-checking: a header naming what it is (which file or
which partition and slot, which version) and a SHA-256 trailer of everything before it, so a
reader can tell a whole, rightly placed piece from a torn, stale or misplaced one.

FAT roles (ARGS = MOUNT WRITER_ID):
  writer    files in its own directory, each replaced whole by a new version through a
            temporary name and rename(2), some unlinked; leaves {name: digest}.
  shared    the same in a directory all share, plus renames between shared directories
            and unlink of files others may hold open.
  reader    reads files of every directory, open across renames and unlinks; each must be whole.
  lister    readdir and stat of every directory, over and over.
Block roles (ARGS = DEVICE ...):
  blocks    DEVICE PART_NUMBER SLOTS: versions of 4 KiB blocks in a partition; leaves
            {slot: digest}.
  scan      DISK PART_STARTS(json): reads of the whole disk; each whole block read must lie
            where its header says (partition start + slot * 4096); one read while it is
            written may be torn (counted, as a block device promises nothing there).
  table     DISK SECTOR0_WITH SECTOR0_WITHOUT: the 4th partition added and removed through the
            disk file (a re-read at each close), and BLKRRPART.
  partfile  PARTITION: reads of a partition that comes and goes (ENOENT/ENXIO/EIO allowed)."""
import errno
import fcntl
import hashlib
import json
import os
import random
import struct
import sys
import time

BLOCK = 4096
BLKRRPART = 0x125F


def make_piece(tag, size, rnd):
    """tag (bytes, at most 100) + filler, ending in the SHA-256 of all before it."""
    head = struct.pack("<H", len(tag)) + tag
    body = rnd.randbytes(max(0, size - len(head) - 32))
    data = head + body
    return data + hashlib.sha256(data).digest()


def piece_tag(data):
    """The tag of a whole piece, or None when it is torn or damaged."""
    if len(data) < 34 or hashlib.sha256(data[:-32]).digest() != data[-32:]:
        return None
    n = struct.unpack_from("<H", data)[0]
    return data[2:2 + n]


class Worker:
    def __init__(self, progress, result, deadline):
        self.fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644)
        self.result, self.deadline = result, deadline
        self.ops = 0
        self.out = {"problems": [], "checked": 0}

    def tick(self):
        self.ops += 1
        os.pwrite(self.fd, struct.pack("<Q", self.ops), 0)
        return time.time() < self.deadline

    def problem(self, text):
        if len(self.out["problems"]) < 20:
            self.out["problems"].append(text)

    def finish(self):
        self.out["ops"] = self.ops
        with open(self.result, "w") as f:
            json.dump(self.out, f)


ALLOWED_RACES = (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST)


def fat_writer(w, rnd, mount, wid, shared):
    base = "shared" if shared else f"writer {wid}"
    state = {}
    n = 0
    while w.tick():
        n += 1
        name = f"file {rnd.randrange(12)} of {wid}.bin" if not shared else \
            f"shared file {rnd.randrange(20)}.bin"
        d = base if not shared else rnd.choice(["shared", "shared/one", "shared/two"])
        op = rnd.random()
        try:
            if op < 0.6:
                data = make_piece(f"{d}/{name} v{n}".encode(), rnd.choice([40, 3000, 20000,
                                                                            150000]), rnd)
                tmp = f"{base}/.tmp {wid} {n}"
                with open(os.path.join(mount, tmp), "wb") as f:
                    f.write(data)
                os.rename(os.path.join(mount, tmp), os.path.join(mount, d, name))
                if not shared:
                    state[name] = hashlib.sha256(data).hexdigest()
            elif op < 0.75:
                os.unlink(os.path.join(mount, d, name))
                state.pop(name, None)
            elif shared and op < 0.9:
                other = rnd.choice(["shared", "shared/one", "shared/two"])
                os.rename(os.path.join(mount, d, name), os.path.join(mount, other, name))
            elif op < 0.95:
                os.truncate(os.path.join(mount, base, f"scratch {wid}"), rnd.randrange(9000))
            else:
                with open(os.path.join(mount, base, f"scratch {wid}"), "ab") as f:
                    f.write(rnd.randbytes(rnd.randrange(5000)))
        except OSError as e:
            if e.errno not in ALLOWED_RACES:
                w.problem(f"{op:.2f} {d}/{name}: {e}")
    w.out["state"] = state


def fat_reader(w, rnd, mount):
    dirs = ["shared", "shared/one", "shared/two"] + [f"writer {i}" for i in range(8)]
    held = []
    while w.tick():
        d = rnd.choice(dirs)
        try:
            names = [n for n in os.listdir(os.path.join(mount, d)) if n.endswith(".bin")]
        except OSError as e:
            if e.errno not in ALLOWED_RACES:
                w.problem(f"listdir {d}: {e}")
            continue
        if not names:
            continue
        name = rnd.choice(names)
        try:
            f = open(os.path.join(mount, d, name), "rb")
        except OSError as e:
            if e.errno not in ALLOWED_RACES:
                w.problem(f"open {d}/{name}: {e}")
            continue
        # some files stay open across later renames and unlinks, and are read afterwards
        held.append((f"{d}/{name}", f))
        if len(held) > 4 or rnd.random() < 0.5:
            path, f = held.pop(rnd.randrange(len(held)))
            try:
                data = f.read()
            except OSError as e:
                w.problem(f"read {path}: {e}")
                data = None
            f.close()
            if data is not None:
                w.out["checked"] += 1
                tag = piece_tag(data)
                # a whole version of this very file (renames between the shared directories
                # move it, so the directory in the tag may be another)
                named = tag.decode().rsplit(" v", 1)[0].rsplit("/", 1)[-1] if tag else None
                if named != path.rsplit("/", 1)[-1]:
                    w.problem(f"{path}: {len(data)} bytes, not a whole version of it")
    for _, f in held:
        f.close()


def fat_lister(w, rnd, mount):
    while w.tick():
        for dirpath, dirnames, filenames in os.walk(mount):
            for n in filenames + dirnames:
                try:
                    os.stat(os.path.join(dirpath, n))
                except OSError as e:
                    if e.errno not in ALLOWED_RACES:
                        w.problem(f"stat {n}: {e}")
            w.out["checked"] += 1


def blocks_writer(w, rnd, dev, part, slots):
    state = {}
    fd = os.open(dev, os.O_RDWR)
    n = 0
    while w.tick():
        n += 1
        slot = rnd.randrange(slots)
        data = make_piece(f"BLK p{part} s{slot} v{n}".encode(), BLOCK, rnd)
        try:
            os.pwrite(fd, data, slot * BLOCK)
            state[slot] = hashlib.sha256(data).hexdigest()
            if n % 16 == 0:
                os.fsync(fd)
        except OSError as e:
            w.problem(f"write p{part} slot {slot}: {e}")
            break
    os.close(fd)
    w.out["state"] = {str(k): v for k, v in state.items()}


def disk_scanner(w, rnd, disk, starts):
    starts = {int(k): v for k, v in starts.items()}
    fd = os.open(disk, os.O_RDONLY)
    size = os.fstat(fd).st_size
    while w.tick():
        off = rnd.randrange(size // BLOCK) * BLOCK
        data = os.pread(fd, BLOCK * 4, off)
        for k in range(0, len(data), BLOCK):
            b = data[k:k + BLOCK]
            if b[2:6] != b"BLK ":
                continue  # never written by a writer (zeros, or the table)
            tag = piece_tag(b)
            if tag is None:
                # read while being written: a block device promises no atomicity there
                # either (the final contents are checked once the writers stop)
                w.out["torn"] = w.out.get("torn", 0) + 1
                continue
            w.out["checked"] += 1
            _, p, s, _ = tag.decode().split()
            where = starts[int(p[1:])] + int(s[1:]) * BLOCK
            if where != off + k:
                w.problem(f"block of {p} {s} found at {off + k}, belongs at {where}")
    os.close(fd)


def table_changer(w, rnd, disk, with4, without4):
    sectors = [bytes.fromhex(with4), bytes.fromhex(without4)]
    i = 0
    while w.tick():
        i += 1
        try:
            fd = os.open(disk, os.O_RDWR)
            try:
                os.pwrite(fd, sectors[i % 2], 0)
                if i % 5 == 0:
                    fcntl.ioctl(fd, BLKRRPART, 0)
            finally:
                os.close(fd)  # the re-read
        except OSError as e:
            w.problem(f"table change {i}: {e}")
        time.sleep(0.01)
    w.out["checked"] = i


def part_reader(w, rnd, part):
    while w.tick():
        try:
            with open(part, "rb", buffering=0) as f:
                f.read(BLOCK * 8)
                w.out["checked"] += 1
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENXIO, errno.EIO, errno.ENOTDIR):
                w.problem(f"partition 4: {e}")
        time.sleep(0.002)


def main():
    role, progress, result, deadline, seed = sys.argv[1:6]
    args = sys.argv[6:]
    w = Worker(progress, result, float(deadline))
    rnd = random.Random(int(seed))
    try:
        if role in ("writer", "shared"):
            fat_writer(w, rnd, args[0], int(args[1]), role == "shared")
        elif role == "reader":
            fat_reader(w, rnd, args[0])
        elif role == "lister":
            fat_lister(w, rnd, args[0])
        elif role == "blocks":
            blocks_writer(w, rnd, args[0], int(args[1]), int(args[2]))
        elif role == "scan":
            disk_scanner(w, rnd, args[0], json.loads(args[1]))
        elif role == "table":
            table_changer(w, rnd, args[0], args[1], args[2])
        elif role == "partfile":
            part_reader(w, rnd, args[0])
    except OSError as e:
        w.problem(f"{role} stopped: {e}")
    w.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
