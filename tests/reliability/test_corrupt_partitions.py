"""Corrupted partition tables through the real umdev-mbr: more than 200 variants of an MBR with
an extended partition and four logical ones, and of a GPT with six partitions, both written by
sfdisk on a disk of random bytes: flipped bytes, zeroed sectors, truncated images, entries and
EBR links pointing outside the disk, at themselves or in loops, impossible GPT headers (with
their checksums recomputed, so the damage gets past them), and random entries.

Most variants are written through the disk's device file of one running daemon and re-read
with BLKRRPART, as a user repairing or damaging a table would: the daemon must then show
exactly the partitions that the table describes under the documented rules (an independent
reader in rellib.py applies them: docs/umdev.md), each partition file must read the image's
bytes at its place, and writes through a partition file must change the image inside that
partition and nowhere else (a write at its end fails with ENOSPC, one across it is cut there).
Truncated images are each given to a daemon of their own at start-up (a size that is not whole
sectors must be refused with one line). Every operation is bounded in time; the daemon must
never die, and it must exit 0 at the end."""
import errno
import fcntl
import os
import random
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rellib import (SECTOR, DaemonPool, Hang, bounded, ebr_chain, expected_partitions,
                    gpt_fix_crcs, is_mountpoint, one_line_error, wait_until)

MBR = "umdev-mbr"
BLKRRPART = 0x125F
DISK_SECTORS = 16384  # 8 MiB
OP_TIMEOUT = 30

MBR_SCRIPT = """label: dos
start=2048, size=1024, type=83
start=3072, size=1024, type=c
start=4096, size=512, type=82
start=6144, size=8192, type=5
start=6200, size=1000, type=83
start=7300, size=1000, type=83
start=8400, size=1000, type=7
start=9500, size=1000, type=83
"""
GPT_SCRIPT = """label: gpt
start=2048, size=1000
start=3100, size=1000
start=4200, size=1000, name="données"
start=5300, size=1000
start=6400, size=1000
start=7500, size=1000
"""


def make_disk(path, script, seed):
    """A disk of random bytes partitioned by sfdisk; returns its bytes."""
    path.write_bytes(random.Random(seed).randbytes(DISK_SECTORS * SECTOR))
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)],
                   input=script, text=True, check=True, capture_output=True)
    return path.read_bytes()


def partition_files(disk):
    """{number: path} of the partition files next to the disk file."""
    disk = Path(disk)
    out = {}
    for f in disk.parent.iterdir():
        rest = f.name[len(disk.name):]
        if f.name.startswith(disk.name) and rest.isdigit():
            out[int(rest)] = f
    return out


# --------------------------------------------------------------------------- variants

def patch(data, off, new):
    data[off:off + len(new)] = new


def mbr_entry(data, base, i, boot=0, typ=0x83, start=0, size=0):
    patch(data, base + 0x1BE + 16 * i,
          bytes([boot, 0, 0, 0, typ, 0, 0, 0]) + struct.pack("<II", start, size))


def mbr_variants(base, kind):
    rnd = random.Random(f"mbr-{kind}")
    ebrs = ebr_chain(base)
    ext = 6144
    out = []

    def add(name, fn):
        d = bytearray(base)
        fn(d)
        out.append((name, d))

    if kind == "flipped_bytes":
        areas = [0] + [e * SECTOR for e in ebrs]
        for i in range(30):
            at = rnd.choice(areas)
            n = rnd.choice([1, 1, 2, 4])

            def flip(d, at=at, n=n):
                for _ in range(n):
                    o = at + 0x1BE + rnd.randrange(66)
                    d[o] ^= rnd.randrange(1, 256)
            add(f"{n} byte(s) flipped in the table at sector {at // SECTOR}", flip)
    elif kind == "zeroed_sectors":
        add("zeroed MBR", lambda d: patch(d, 0, bytes(SECTOR)))
        for i, e in enumerate(ebrs):
            add(f"zeroed EBR {i + 1}", lambda d, e=e: patch(d, e * SECTOR, bytes(SECTOR)))
        add("zeroed MBR and first EBR",
            lambda d: (patch(d, 0, bytes(SECTOR)), patch(d, ebrs[0] * SECTOR, bytes(SECTOR))))
    elif kind == "records":
        link = lambda d, e, target: patch(d, e * SECTOR + 0x1BE + 16 + 8,  # noqa: E731
                                          struct.pack("<I", target - ext))

        def many_ebrs(count, with_logicals):
            def fn(d):
                for k in range(count):
                    s = ext + 2 * k
                    patch(d, s * SECTOR, bytes(SECTOR))
                    if with_logicals:
                        mbr_entry(d, s * SECTOR, 0, start=1, size=1)
                    if k + 1 < count:
                        mbr_entry(d, s * SECTOR, 1, typ=5, start=2 * (k + 1), size=2)
                    patch(d, s * SECTOR + 510, b"\x55\xaa")
            return fn
        cases = [
            ("a primary partition starting past the end",
             lambda d: mbr_entry(d, 0, 0, start=DISK_SECTORS + 10, size=100)),
            ("a primary partition crossing the end",
             lambda d: mbr_entry(d, 0, 1, start=DISK_SECTORS - 100, size=1000)),
            ("a primary partition of 2^32-1 sectors",
             lambda d: mbr_entry(d, 0, 2, start=100, size=0xFFFFFFFF)),
            ("a primary partition over the MBR itself",
             lambda d: mbr_entry(d, 0, 0, start=0, size=100)),
            ("a boot flag 0x7F (a boot sector, not an MBR)", lambda d: patch(d, 0x1BE + 32, b"\x7f")),
            ("a boot flag 0x80", lambda d: patch(d, 0x1BE, b"\x80")),
            ("a GPT protective entry beside MBR partitions (no GPT on the disk)",
             lambda d: mbr_entry(d, 0, 2, typ=0xEE, start=1, size=DISK_SECTORS - 1)),
            ("the extended partition starting past the end",
             lambda d: mbr_entry(d, 0, 3, typ=5, start=DISK_SECTORS + 1, size=100)),
            ("the extended partition at sector 0 (the MBR read as an EBR)",
             lambda d: mbr_entry(d, 0, 3, typ=5, start=0, size=DISK_SECTORS)),
            ("the first EBR linking to itself", lambda d: link(d, ebrs[0], ebrs[0])),
            ("the third EBR linking back to the first", lambda d: link(d, ebrs[2], ebrs[0])),
            ("an EBR linking past the end", lambda d: link(d, ebrs[1], DISK_SECTORS + 5)),
            ("an EBR linking to the last sector",
             lambda d: link(d, ebrs[1], DISK_SECTORS - 1)),
            ("a logical partition starting past the end",
             lambda d: mbr_entry(d, ebrs[1] * SECTOR, 0, start=DISK_SECTORS, size=10)),
            ("a logical partition outside its extended partition",
             lambda d: mbr_entry(d, ebrs[1] * SECTOR, 0, start=12000, size=1000)),
            ("an EBR without its signature", lambda d: patch(d, ebrs[2] * SECTOR + 510, b"\0\0")),
            ("a second extended partition",
             lambda d: mbr_entry(d, 0, 2, typ=5, start=4096, size=1000)),
            ("an extended partition of type 0x85",
             lambda d: patch(d, 0x1BE + 48 + 4, b"\x85")),
            ("an extended partition of type 0x0F",
             lambda d: patch(d, 0x1BE + 48 + 4, b"\x0f")),
            ("an EBR holding two logical partitions",
             lambda d: mbr_entry(d, ebrs[0] * SECTOR, 2, start=700, size=50)),
            ("an EBR holding two links",
             lambda d: mbr_entry(d, ebrs[0] * SECTOR, 2, typ=5, start=5000, size=10)),
            ("a chain of 300 EBRs without partitions", many_ebrs(300, False)),
            ("a chain of 40 EBRs with one sector each", many_ebrs(40, True)),
            ("four identical primary partitions", lambda d: [
                mbr_entry(d, 0, i, start=2048, size=1024) for i in range(4)]),
            ("a partition over the whole disk",
             lambda d: mbr_entry(d, 0, 0, start=0, size=DISK_SECTORS)),
            ("a logical partition of no sectors",
             lambda d: mbr_entry(d, ebrs[1] * SECTOR, 0, start=1, size=0)),
            ("a logical entry of type 0 with sectors",
             lambda d: mbr_entry(d, ebrs[1] * SECTOR, 0, typ=0, start=1, size=50)),
        ]
        for name, fn in cases:
            add(name, fn)
    elif kind == "random_entries":
        types = [0, 0x83, 0x83, 0x0C, 0x05, 0x0F, 0x85, 0x07]
        for i in range(40):
            def fn(d, i=i):
                where = [0] + [e * SECTOR for e in ebrs] if i % 2 else [0]
                for at in where:
                    for k in range(4):
                        start = rnd.randrange(DISK_SECTORS + 200)
                        size = rnd.choice([0, 1, rnd.randrange(1, 4000),
                                           rnd.randrange(1, 1 << 32)])
                        mbr_entry(d, at, k, boot=rnd.choice([0, 0, 0x80]),
                                  typ=rnd.choice(types), start=start, size=size)
            add(f"random entries {i}" + (" in the MBR and EBRs" if i % 2 else ""), fn)
    return out


def gpt_variants(base, kind):
    rnd = random.Random(f"gpt-{kind}")
    last = DISK_SECTORS - 1
    barray = (last - 32) * SECTOR  # sfdisk puts the backup array right before the backup header
    out = []

    def add(name, fn, fix=(1, last)):
        d = bytearray(base)
        fn(d)
        for lba in fix:
            gpt_fix_crcs(d, lba)
        out.append((name, d))

    def entry(d, i, first=None, lastlba=None, guid=None, array=2 * SECTOR):
        o = array + 128 * i
        if guid is not None:
            patch(d, o, guid)
        if first is not None:
            patch(d, o + 32, struct.pack("<Q", first))
        if lastlba is not None:
            patch(d, o + 40, struct.pack("<Q", lastlba))

    def both(fn):
        """Apply fn to the primary's entries and to the backup's."""
        return lambda d: (fn(d, 2 * SECTOR), fn(d, barray))

    def header(d, off, fmt, value, lba=1):
        patch(d, lba * SECTOR + off, struct.pack(fmt, value))

    def headers(off, fmt, value):
        """The same damage in both headers: no good copy to fall back on."""
        return lambda d: (header(d, off, fmt, value), header(d, off, fmt, value, lba=last))

    if kind == "flipped_bytes":
        areas = [(SECTOR, 92), (2 * SECTOR, 6 * 128), (last * SECTOR, 92), (barray, 6 * 128),
                 (0x1BE, 16)]
        for i in range(24):
            at, n = rnd.choice(areas)
            count = rnd.choice([1, 1, 2, 4])
            fixed = i % 2 == 1

            def flip(d, at=at, n=n, count=count):
                for _ in range(count):
                    o = at + rnd.randrange(n)
                    if fixed and o % SECTOR in range(16, 20) and at in (SECTOR, last * SECTOR):
                        continue  # the header checksum itself: recomputed anyway
                    d[o] ^= rnd.randrange(1, 256)
            add(f"{count} byte(s) flipped at {at}" + (", checksums recomputed" if fixed else ""),
                flip, fix=(1, last) if fixed else ())
    elif kind == "zeroed_sectors":
        for name, secs in [("the protective MBR", [0]), ("the primary header", [1]),
                           ("the primary entries", [2]), ("the backup header", [last]),
                           ("the backup entries", [last - 32]), ("both headers", [1, last])]:
            add(f"zeroed {name}", lambda d, secs=secs: [patch(d, s * SECTOR, bytes(SECTOR))
                                                        for s in secs], fix=())
    elif kind == "records":
        cases = [
            ("an entry starting past the end", both(lambda d, a: entry(d, 0, DISK_SECTORS + 7,
                                                                        DISK_SECTORS + 9,
                                                                        array=a))),
            ("an entry crossing the end", both(lambda d, a: entry(d, 1, 16000, 20000, array=a))),
            ("an entry ending before it starts", both(lambda d, a: entry(d, 2, 5000, 4999,
                                                                          array=a))),
            ("an entry over the whole disk, the GPT included",
             both(lambda d, a: entry(d, 3, 0, last, array=a))),
            ("an entry at LBA 2^64-1", both(lambda d, a: entry(d, 4, 2**64 - 1, 2**64 - 1,
                                                              array=a))),
            ("an entry over the whole 64-bit range", both(lambda d, a: entry(d, 5, 0, 2**64 - 1,
                                                                             array=a))),
            ("the entry array at the header itself", headers(72, "<Q", 1)),
            ("the entry array past the end", headers(72, "<Q", DISK_SECTORS + 3)),
            ("the entry array crossing the end", headers(72, "<Q", last)),
            ("no entries", headers(80, "<I", 0)),
            ("2^32-1 entries", headers(80, "<I", 0xFFFFFFFF)),
            ("entries of 64 bytes", headers(84, "<I", 64)),
            ("entries of 4096 bytes", headers(84, "<I", 4096)),
            ("entries of 3000 bytes", headers(84, "<I", 3000)),
            ("a header of 91 bytes", headers(12, "<I", 91)),
            ("a header of 513 bytes", headers(12, "<I", 513)),
            ("a primary header naming another location", lambda d: header(d, 24, "<Q", 2)),
            ("both headers naming another location",
             lambda d: (header(d, 24, "<Q", 2), header(d, 24, "<Q", 5, lba=last))),
            ("a usable area that ends before it starts", headers(40, "<Q", 20000)),
            ("a usable area past the end", headers(48, "<Q", DISK_SECTORS + 100)),
            ("the backup said to lie at LBA 2^64-1", lambda d: header(d, 32, "<Q", 2**64 - 1)),
            ("the backup said to lie at LBA 1 (the primary)", lambda d: header(d, 32, "<Q", 1)),
            ("a name of unpaired surrogates and noise",
             both(lambda d, a: patch(d, a + 56, b"\x00\xd8A\x00\x00\xdc\xff\xfe" * 9))),
            ("40 small partitions", both(lambda d, a: [
                entry(d, i, 10000 + 20 * i, 10000 + 20 * i + 9, guid=bytes([i + 1]) * 16,
                      array=a) for i in range(6, 46)])),
            ("two entries with the same place", both(lambda d, a: entry(d, 1, 2048, 3047,
                                                                         array=a))),
            ("both headers unusable", lambda d: (header(d, 12, "<I", 9),
                                                 header(d, 12, "<I", 9, lba=last))),
            ("a primary whose entries differ from the backup's",
             lambda d: entry(d, 0, 12000, 12999)),
            ("a damaged primary and a backup with other partitions",
             lambda d: (entry(d, 0, 12000, 12999, array=barray), patch(d, SECTOR, b"EFI PAR\0"))),
            ("a hybrid MBR beside the GPT",
             lambda d: mbr_entry(d, 0, 1, typ=0x83, start=2048, size=1000)),
            ("no protective entry", lambda d: patch(d, 0x1BE, bytes(16))),
        ]
        for name, fn in cases:
            add(name, fn)
    elif kind == "random_entries":
        for i in range(40):
            def fn(d, i=i):
                for a in (2 * SECTOR, barray):
                    for k in range(rnd.randrange(1, 12)):
                        first = rnd.choice([rnd.randrange(DISK_SECTORS + 50),
                                            rnd.randrange(1 << 64)])
                        length = rnd.choice([1, rnd.randrange(1, 3000), rnd.randrange(1 << 64)])
                        entry(d, rnd.randrange(128), first, min(first + length - 1, 2**64 - 1),
                              guid=rnd.randbytes(16), array=a)
            add(f"random entries {i}", fn)
    return out


# --------------------------------------------------------------------------- checking

class LiveDisk:
    """One umdev-mbr on a copy of a base disk; variants are written through its disk file."""

    def __init__(self, pool, workdir, base, label):
        self.workdir = workdir
        self.img = workdir / f"{label}.img"
        self.img.write_bytes(base)
        self.dev = workdir / "dev" / "hd"
        self.dev.parent.mkdir()
        self.d = pool.new(MBR, [self.img, self.dev], self.dev)
        assert self.d.start(), self.d.stderr()
        self.current = bytearray(base)
        self.dirty = []  # ranges written by the previous variant's checks

    def load(self, variant):
        """Write what differs (and what the last checks wrote) through the disk file, then
        BLKRRPART. Returns the ranges written."""
        ranges = list(self.dirty)
        for off in range(0, len(variant), SECTOR):
            if variant[off:off + SECTOR] != self.current[off:off + SECTOR]:
                ranges.append((off, SECTOR))
        fd = os.open(self.dev, os.O_RDWR)
        try:
            for off, n in ranges:
                os.pwrite(fd, bytes(variant[off:off + n]), off)
            fcntl.ioctl(fd, BLKRRPART, 0)
        finally:
            os.close(fd)
        self.current = bytearray(variant)
        self.dirty = []

    def image(self):
        return self.img.read_bytes()


def diff_outside(before, after, lo, hi):
    """First offset outside [lo, hi) where the bytes differ, or None."""
    for a, b in ((0, lo), (hi, len(before))):
        if before[a:b] != after[a:b]:
            for k in range(a, b):
                if before[k] != after[k]:
                    return k
    return None


def check_partitions(dev, image, expected):
    """The partition files against the table's rules and the image's bytes."""
    failures = []
    files = partition_files(dev)
    if sorted(files) != sorted(expected):
        return [f"partition files {sorted(files)}, the table says {sorted(expected)}"]
    for n, (start, length) in sorted(expected.items()):
        f = files[n]
        if not is_mountpoint(f):
            failures.append(f"{f.name} is not mounted")
            continue
        size = f.stat().st_size
        if size != length:
            failures.append(f"{f.name} has {size} bytes, the table says {length}")
            continue
        with open(f, "rb", buffering=0) as fh:
            for off in sorted({0, max(0, length - 8192), (length // 2) & ~511}):
                got = os.pread(fh.fileno(), 8192, off)
                want = image[start + off:start + min(length, off + 8192)]
                if got != want:
                    failures.append(f"{f.name} at {off} reads other bytes than the image at "
                                    f"{start + off}")
                    break
            if os.pread(fh.fileno(), 512, length) != b"":
                failures.append(f"{f.name} reads past its end")
    return failures


def check_writes(live, n, start, length):
    """Write through partition n at its first and last sector, at its end and across it: the
    image changes inside the partition only."""
    failures = []
    f = partition_files(live.dev).get(n)
    if f is None or length < 2 * SECTOR:
        return failures
    before = live.image()
    mark = b"WRITTEN THROUGH THE PARTITION FILE".ljust(SECTOR, b"#")
    fd = os.open(f, os.O_RDWR)
    try:
        os.pwrite(fd, mark, 0)
        os.pwrite(fd, mark, length - SECTOR)
        try:
            os.pwrite(fd, mark, length)
            failures.append(f"{f.name}: a write at its end succeeded")
        except OSError as e:
            if e.errno != errno.ENOSPC:
                failures.append(f"{f.name}: a write at its end failed with {e}, not ENOSPC")
        k = os.pwrite(fd, mark, length - SECTOR // 2)
        if k != SECTOR // 2:
            failures.append(f"{f.name}: a write across its end wrote {k} bytes, not "
                            f"{SECTOR // 2}")
        os.fsync(fd)
    finally:
        os.close(fd)
    after = live.image()
    if len(after) != len(before):
        failures.append(f"the image changed size to {len(after)}")
    at = diff_outside(before, after, start, start + length)
    if at is not None:
        failures.append(f"writing through {f.name} ({start}+{length}) changed byte {at}")
    if after[start:start + SECTOR] != mark or \
            after[start + length - SECTOR:start + length - SECTOR // 2] != mark[:SECTOR // 2]:
        failures.append(f"{f.name}: what was written is not in the image at {start}")
    live.dirty += [(start, SECTOR), (start + length - SECTOR, SECTOR)]
    live.current[start:start + SECTOR] = after[start:start + SECTOR]
    live.current[start + length - SECTOR:start + length] = \
        after[start + length - SECTOR:start + length]
    return failures


def run_live(pool, workdir, base, label, variants, stats):
    live = LiveDisk(pool, workdir, base, label)
    failures = []
    base_parts = expected_partitions(base)
    assert len(base_parts) >= 6
    # a foreground daemon mounts its partition files after the disk's: wait for them
    wait_until(lambda: sorted(partition_files(live.dev)) == sorted(base_parts) and
               all(is_mountpoint(f) for f in partition_files(live.dev).values()), 20,
               "the partition files of the base table")
    for i, (name, variant) in enumerate(variants):
        def one():
            live.load(variant)
            image = live.image()
            if image != bytes(variant):
                return ["the image is not what was written through the disk file"]
            expected = expected_partitions(image)
            errs = check_partitions(live.dev, image, expected)
            stats["changed"] += expected != base_parts
            if not errs and expected:
                n = sorted(expected)[i % len(expected)]
                errs += check_writes(live, n, *expected[n])
                stats["writes"] += 1
            return errs
        try:
            errs = bounded(one, OP_TIMEOUT, live.d.kill, name)
        except Hang as e:
            errs = [str(e)]
        except OSError as e:
            errs = [f"{e}"]
        failures += [f"{name}: {e}" for e in errs]
        if not live.d.alive():
            failures.append(f"{name}: the daemon died: {live.d.stderr()}")
            break
    if live.d.alive():
        status = live.d.stop()
        if status != 0:
            failures.append(f"exit status {status}: {live.d.stderr()}")
    if live.d.sanitizer_report():
        failures.append(f"sanitizer report: {live.d.sanitizer_report()}")
    return failures


@pytest.fixture
def shm():
    d = Path(tempfile.mkdtemp(prefix="viewos-corrupt-parts.", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


KINDS = ["flipped_bytes", "zeroed_sectors", "records", "random_entries"]
TRIED = {}  # (label, kind): variants run, for the count at the end


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("label", ["mbr", "gpt"])
def test_corrupted_table_rewritten_live_shows_what_the_rules_say(shm, tmp_path, label, kind):
    base = make_disk(shm / "base.img", MBR_SCRIPT if label == "mbr" else GPT_SCRIPT,
                     seed=label)
    variants = (mbr_variants if label == "mbr" else gpt_variants)(base, kind)
    assert len(variants) >= 6
    TRIED[(label, kind)] = len(variants)
    pool = DaemonPool(tmp_path)
    stats = {"changed": 0, "writes": 0}
    try:
        failures = run_live(pool, shm, base, label, variants, stats)
    finally:
        pool.cleanup()
    assert not failures, "\n".join(failures)
    # the damage did change what the table says, and writes were checked
    assert stats["changed"] > 0 and stats["writes"] > 0, stats


def truncations():
    last = DISK_SECTORS
    return [("to one sector", 1), ("to the MBR and the GPT header", 2),
            ("inside the GPT entries", 10), ("inside the first partition", 2500),
            ("inside the extended partition", 7000), ("before the last logical partition", 9400),
            ("before the backup GPT", last - 33), ("one sector short", last - 1),
            ("to 1000 bytes (not whole sectors)", None)]


@pytest.mark.parametrize("label", ["mbr", "gpt"])
def test_truncated_disk_image_at_start(shm, tmp_path, label):
    base = make_disk(shm / "base.img", MBR_SCRIPT if label == "mbr" else GPT_SCRIPT,
                     seed=label)
    pool = DaemonPool(tmp_path)
    cases = truncations()

    def one(case):
        i, (name, sectors) = case
        d_dir = tmp_path / f"t{i}"
        d_dir.mkdir()
        img = shm / f"t{i}.img"
        data = base[:sectors * SECTOR] if sectors else base[:1000]
        img.write_bytes(data)
        dev = d_dir / "hd"
        d = pool.new(MBR, [img, dev], dev)
        errs = []
        try:
            if not d.start():
                if sectors is not None or d.proc.returncode != 2 or \
                        not one_line_error(d.stderr(), MBR, img):
                    errs.append(f"refused with {d.proc.returncode}: {d.stderr()!r}")
            elif sectors is None:
                errs.append("served an image that is not whole sectors")
            else:
                expected = expected_partitions(data)
                wait_until(lambda: sorted(partition_files(dev)) == sorted(expected), 10,
                           "the partition files")
                if dev.stat().st_size != len(data):
                    errs.append(f"the disk file has {dev.stat().st_size} bytes")
                errs += bounded(lambda: check_partitions(dev, data, expected), OP_TIMEOUT,
                                d.kill, name)
                status = d.stop()
                if status != 0:
                    errs.append(f"exit status {status}: {d.stderr()}")
        except Hang as e:
            errs.append(str(e))
        if d.sanitizer_report():
            errs.append(f"sanitizer report: {d.sanitizer_report()}")
        if img.read_bytes() != data:
            errs.append("the image changed")
        return [f"truncated {name}: {e}" for e in errs]

    try:
        with ThreadPoolExecutor(3) as ex:
            failures = [f for r in ex.map(one, enumerate(cases)) for f in r]
    finally:
        pool.cleanup()
    assert not failures, "\n".join(failures)


def test_the_matrix_tries_at_least_200_variants(shm):
    """Issue 10 asks at least 200 corrupted variants of a format: the tests above must try that
    many (a change to a generator must not shrink the matrix unnoticed). The count is that of
    the variants the tests above ran (they note it in TRIED; a kind that did not run here, as
    with -k or pytest-xdist, is generated again to be counted), and the truncations."""
    counts = {"mbr": 0, "gpt": 0}
    for label in counts:
        base = None
        for kind in KINDS:
            if (label, kind) not in TRIED:
                if base is None:
                    base = make_disk(shm / f"{label}.img",
                                     MBR_SCRIPT if label == "mbr" else GPT_SCRIPT, seed=label)
                gen = mbr_variants if label == "mbr" else gpt_variants
                TRIED[(label, kind)] = len(gen(base, kind))
            counts[label] += TRIED[(label, kind)]
        counts[label] += len(truncations())
    print(f"corrupted partition tables: {counts} variants, {sum(counts.values())} in all")
    assert sum(counts.values()) >= 200, counts
