"""Helpers of the reliability suites (tests/reliability): daemons started and stopped from worker
threads, operations bounded in time, sparse copies of images, a small independent reader of FAT
images (to know which files a corruption cannot have touched) and one of MBR/EBR/GPT tables
(to know which partitions a damaged table still describes).

A module of our own rather than a conftest.py, so that `from conftest import ...` keeps meaning
the harness in tests/conftest.py. The readers here are written from the specifications, for the
tests only: they share no code with the daemons they judge."""
import errno
import os
import signal
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

from conftest import SANITIZER_MARKERS, force_unmount, sanitizer_env, viewos_bin

MIB = 1 << 20
LONG = os.environ.get("VIEWOS_LONG") == "1"


# --------------------------------------------------------------------------- time bounds

class Hang(Exception):
    """An operation did not finish within its bound."""


def bounded(fn, timeout, on_timeout=None, what="operation"):
    """Run fn() in a thread; return its result or raise its exception. When it takes longer
    than timeout seconds, call on_timeout() (which must unblock it, e.g. by killing the daemon
    so that its pending FUSE requests fail) and raise Hang."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the caller
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        if on_timeout:
            on_timeout()
        t.join(30)
        raise Hang(f"{what} did not finish within {timeout}s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise Hang(f"timed out waiting for {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------------- daemons

def is_mountpoint(path):
    """True when something is mounted at path (its device differs from its parent's)."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(os.path.abspath(path))).st_dev
    except OSError as e:
        # a dead FUSE mount (daemon killed) answers ENOTCONN: still mounted
        return e.errno == errno.ENOTCONN


def in_mountinfo(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].encode().decode("unicode_escape") == path for line in f)


class Daemon:
    """A viewos daemon in the foreground (-f), safe to start and stop from worker threads.
    Its stderr goes to a log file; the exit status is the caller's to judge."""

    def __init__(self, name, args, mountpoint, logdir, env=None):
        self.name = name
        self.argv = [viewos_bin(name), "-f", *[str(a) for a in args]]
        self.mountpoint = str(mountpoint)
        self.log = Path(logdir) / f"{name}-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}.log"
        self.proc = None
        self.env = env

    def start(self, timeout=20):
        """Start it; True once mounted, False when it exited first (a refusal)."""
        with open(self.log, "w") as logf:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                         env=sanitizer_env(self.env), start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                # it may have mounted and died at once: leave nothing behind
                if in_mountinfo(self.mountpoint):
                    force_unmount(self.mountpoint)
                return False
            if is_mountpoint(self.mountpoint):
                return True
            if time.monotonic() > deadline:
                self.kill()
                raise Hang(f"{' '.join(self.argv)} did not mount within {timeout}s:\n"
                           + self.stderr())
            time.sleep(0.005)

    def stderr(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sanitizer_report(self):
        text = self.stderr()
        return text if any(m in text for m in SANITIZER_MARKERS) else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=60):
        """fusermount3 -u and wait for the exit; returns the exit status. A daemon that does
        not leave raises Hang (after it is killed and its mount removed)."""
        if self.proc is None:
            return None
        for _ in range(50):
            if not in_mountinfo(self.mountpoint):
                break
            r = subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)  # busy: a walker may still be leaving
        else:
            force_unmount(self.mountpoint)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            where = self.threads()
            self.kill()
            raise Hang(f"{self.name} did not exit within {timeout}s of the unmount; its "
                       f"threads were in:\n{where}\n{self.stderr()}")

    def threads(self):
        """Where each thread of the daemon waits (kernel stacks), for a hang's report."""
        out = []
        try:
            for tid in sorted(os.listdir(f"/proc/{self.proc.pid}/task")):
                base = f"/proc/{self.proc.pid}/task/{tid}"
                try:
                    wchan = open(f"{base}/wchan").read()
                    stack = open(f"{base}/stack").read().strip().replace("\n", " | ")
                except OSError:
                    wchan, stack = "?", ""
                out.append(f"  {tid} {wchan}: {stack}")
        except OSError:
            pass
        return "\n".join(out)

    def kill(self, sig=signal.SIGKILL, unmount=True):
        """Kill it (a crash test, or a hang) and remove the dead mount. unmount=False leaves the
        dead mount in place: whoever still uses it gets ENOTCONN, where after the unmount
        the same paths would quietly reach the directory underneath."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if unmount and in_mountinfo(self.mountpoint):
            force_unmount(self.mountpoint)


class DaemonPool:
    """Every Daemon a test started, so that teardown leaves none running or mounted."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.started = []
        self.lock = threading.Lock()

    def new(self, name, args, mountpoint, env=None):
        d = Daemon(name, args, mountpoint, self.logdir, env)
        with self.lock:
            self.started.append(d)
        return d

    def cleanup(self):
        for d in self.started:
            if d.alive():
                try:
                    d.stop(10)
                except Hang:
                    pass
            d.kill()


def one_line_error(text, name, path):
    """The daemon's whole output is one line `NAME: what failed: why` naming path."""
    lines = [line for line in text.splitlines() if line.strip()]
    return (len(lines) == 1 and lines[0].startswith(f"{name}: ") and str(path) in lines[0]
            and lines[0].count(": ") >= 2)


# --------------------------------------------------------------------------- files

def sparse_copy(src, dst):
    """Copy a file keeping its holes (images are mostly holes: mkfs writes only metadata)."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        off = 0
        while off < size:
            try:
                data = os.lseek(fi.fileno(), off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            hole = os.lseek(fi.fileno(), data, os.SEEK_HOLE)
            pos = data
            while pos < hole:
                chunk = os.pread(fi.fileno(), min(4 * MIB, hole - pos), pos)
                os.pwrite(fo.fileno(), chunk, pos)
                pos += len(chunk)
            off = hole
        fo.truncate(size)


def pread_file(path, off, n):
    with open(path, "rb", buffering=0) as f:
        return os.pread(f.fileno(), n, off)


def pwrite_file(path, off, data):
    with open(path, "r+b", buffering=0) as f:
        os.pwrite(f.fileno(), data, off)


# --------------------------------------------------------------------------- FAT, read-only

class FatLayout:
    """The geometry of a FAT volume and its tree, read from bytes: enough to tell, for each
    file and directory, which bytes of the image its reading depends on."""

    def __init__(self, data):
        self.data = data
        b = data[:512]
        self.bps, self.spc = struct.unpack_from("<HB", b, 11)
        self.reserved, self.nfats, self.root_entries = struct.unpack_from("<HBH", b, 14)
        total16, = struct.unpack_from("<H", b, 19)
        fat16, = struct.unpack_from("<H", b, 22)
        total32, fat32 = struct.unpack_from("<II", b, 32)
        self.total = (total16 or total32) * self.bps
        self.fatsz = (fat16 or fat32) * self.bps
        self.fat_offset = self.reserved * self.bps
        self.root_offset = self.fat_offset + self.nfats * self.fatsz
        root_bytes = -(-self.root_entries * 32 // self.bps) * self.bps
        self.data_offset = self.root_offset + root_bytes
        self.cluster_size = self.bps * self.spc
        self.clusters = (self.total - self.data_offset) // self.cluster_size
        self.type = 32 if fat16 == 0 else 12 if self.clusters < 4085 else 16
        self.root_cluster = struct.unpack_from("<I", b, 44)[0] if self.type == 32 else 0
        self.fsinfo = struct.unpack_from("<H", b, 48)[0] if self.type == 32 else 0

    # the FAT
    def entry_range(self, c, copy=0):
        base = self.fat_offset + copy * self.fatsz
        if self.type == 12:
            return base + c * 3 // 2, 2
        return base + c * self.type // 8, self.type // 8

    def get(self, c):
        off, n = self.entry_range(c)
        v = int.from_bytes(self.data[off:off + n], "little")
        if self.type == 12:
            return v >> 4 if c & 1 else v & 0xFFF
        return v & 0x0FFFFFFF if self.type == 32 else v

    def eoc(self):
        return {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFF8}[self.type]

    def bad(self):
        return {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}[self.type]

    def chain(self, first):
        out, c = [], first
        while 2 <= c < self.clusters + 2 and c not in out:
            out.append(c)
            c = self.get(c)
            if c >= self.eoc():
                return out
        return out

    def cluster_range(self, c):
        return self.data_offset + (c - 2) * self.cluster_size, self.cluster_size

    def set_entry_bytes(self, c, value):
        """[(offset, bytes)] that give cluster c's entry this value in every FAT copy."""
        out = []
        for copy in range(self.nfats):
            off, n = self.entry_range(c, copy)
            if self.type == 12:
                old = int.from_bytes(self.data[off:off + 2], "little")
                v = (old & 0x000F) | (value << 4) if c & 1 else (old & 0xF000) | (value & 0xFFF)
                out.append((off, (v & 0xFFFF).to_bytes(2, "little")))
            elif self.type == 16:
                out.append((off, (value & 0xFFFF).to_bytes(2, "little")))
            else:
                old = int.from_bytes(self.data[off:off + 4], "little")
                out.append((off, ((old & 0xF0000000) | (value & 0x0FFFFFFF)).to_bytes(4, "little")))
        return out

    # directories
    def dir_regions(self, first):
        """[(offset, length)] of a directory's bytes; first 0 is the root."""
        if first == 0 and self.type != 32:
            return [(self.root_offset, self.root_entries * 32)]
        return [self.cluster_range(c) for c in self.chain(first or self.root_cluster)]

    def entries(self, regions):
        """The named entries of a directory: (name, short, offset of its first slot, offset of
        its short entry, attr, first cluster, size)."""
        out, lfn, lfn_start, lfn_sum = [], {}, None, None
        slots = [off + i for off, n in regions for i in range(0, n, 32)]
        for off in slots:
            e = self.data[off:off + 32]
            if e[0] == 0:
                break
            if e[0] == 0xE5:
                lfn = {}
                continue
            if e[11] & 0x3F == 0x0F:
                if e[0] & 0x40:
                    lfn, lfn_start, lfn_sum = {}, off, e[13]
                lfn[e[0] & 0x3F] = e[1:11] + e[14:26] + e[28:32]
                continue
            if e[11] & 0x08 or e[0:2] in (b". ", b".."):
                lfn = {}
                continue
            total = 0
            for x in e[:11]:
                total = (((total & 1) << 7) + (total >> 1) + x) & 0xFF
            name = None
            if lfn and total == lfn_sum and sorted(lfn) == list(range(1, len(lfn) + 1)):
                units = b"".join(lfn[i] for i in sorted(lfn))
                name = units.decode("utf-16-le", "replace").split("\0")[0]
            short = e[:8].rstrip(b" ").decode("latin-1")
            ext = e[8:11].rstrip(b" ").decode("latin-1")
            if e[12] & 0x08:
                short = short.lower()
            if e[12] & 0x10:
                ext = ext.lower()
            short = short + ("." + ext if ext else "")
            first_cluster = struct.unpack_from("<H", e, 26)[0]
            if self.type == 32:
                first_cluster |= struct.unpack_from("<H", e, 20)[0] << 16
            size, = struct.unpack_from("<I", e, 28)
            out.append((name or short, short, lfn_start if name else off, off, e[11],
                        first_cluster, size))
            lfn = {}
        return out

    def tree(self):
        """{path: Node} of every file and directory ('' is the root)."""
        nodes = {"": Node("", True, 0, 0, [], self.dir_regions(0), self.tree_root_chain())}
        todo = [""]
        while todo:
            parent = nodes[todo.pop()]
            for name, short, lo, short_off, attr, first, size in self.entries(parent.regions):
                path = f"{parent.path}/{name}" if parent.path else name
                is_dir = bool(attr & 0x10)
                chain = self.chain(first)
                regions = self.dir_regions(first) if is_dir else \
                    [self.cluster_range(c) for c in chain[:-(-size // self.cluster_size) or None]]
                node = Node(path, is_dir, first, size, [(lo, short_off + 32 - lo)], regions, chain)
                node.parent = parent
                node.short = short
                nodes[path] = node
                if is_dir:
                    todo.append(path)
        return nodes

    def root_depends_on(self):
        """What mounting depends on: the boot sector's jump, BPB fields and signature (not its
        OEM name, label, serial number or boot code), and on FAT32 the root's chain."""
        bpb = (11, 37) if self.type == 32 else (11, 25)
        return [(0, 3), bpb, (510, 2)] + [self.entry_range(c) for c in self.tree_root_chain()]

    def tree_root_chain(self):
        return self.chain(self.root_cluster) if self.type == 32 else []


class Intact:
    """Which files and directories of a damaged copy of an image still read as they did: the
    damage reached none of the bytes that reading them involves. A file's contents need its
    FAT entries (the end mark too) and its clusters; a listing needs every byte of the
    directory; and reaching either by its path needs, in each directory on the way, its own
    entry (long-name slots too) unchanged, no end mark before it, and no other entry that
    answers to its name (as this reader parses the damaged directory), for a lookup could find
    that one instead."""

    def __init__(self, layout, tree, vdata):
        self.L, self.tree, self.v = layout, tree, vdata
        self.base = layout.data
        self.boot_ok = self.same(layout.root_depends_on())
        self.vl = FatLayout(vdata) if self.boot_ok else None
        self.cache = {}

    def same(self, ranges):
        return unchanged(self.base, self.v, ranges)

    def reachable(self, node):
        if node.path in self.cache:
            return self.cache[node.path]
        if node.parent is None:
            ok = self.boot_ok
        else:
            p = node.parent
            ok = (self.reachable(p) and self.same(node.entry)
                  and self.same([self.L.entry_range(c) for c in p.chain]))
            if ok:
                short_off = node.entry[0][0] + node.entry[0][1] - 32
                keys = {node.path.rsplit("/", 1)[-1].casefold(), node.short.casefold()}
                answering = [e for e in self.vl.entries(p.regions)
                             if e[0].casefold() in keys or e[1].casefold() in keys]
                ok = len(answering) == 1 and answering[0][3] == short_off
        self.cache[node.path] = ok
        return ok

    def contents(self, node):
        return (self.reachable(node) and self.same(node.regions)
                and self.same([self.L.entry_range(c) for c in node.chain]))

    def listing(self, node):
        return self.contents(node)


class Node:
    def __init__(self, path, is_dir, first, size, entry, regions, chain):
        self.path, self.is_dir, self.first, self.size = path, is_dir, first, size
        self.entry, self.regions, self.chain = entry, regions, chain
        self.parent = None
        self.short = ""


def unchanged(base, variant, ranges):
    """Are the bytes of every range the same in both (a range past variant's end is not)?"""
    for off, n in ranges:
        if off + n > len(variant) or base[off:off + n] != variant[off:off + n]:
            return False
    return True


# --------------------------------------------------------------------------- partition tables

SECTOR = 512


def le(b, off, n):
    return int.from_bytes(b[off:off + n], "little")


def ebr_chain(disk):
    """Sector numbers of the EBRs of the first extended partition, in chain order."""
    out = []
    for i in range(4):
        e = disk[0x1BE + 16 * i:0x1BE + 16 * i + 16]
        if e[4] in (0x05, 0x0F, 0x85) and le(e, 12, 4):
            start = ebr = le(e, 8, 4)
            while ebr not in out and (ebr + 1) * SECTOR <= len(disk):
                sec = disk[ebr * SECTOR:(ebr + 1) * SECTOR]
                if sec[510:512] != b"\x55\xaa":
                    break
                out.append(ebr)
                links = [le(sec, 0x1BE + 16 * k + 8, 4) for k in range(4)
                         if sec[0x1BE + 16 * k + 4] in (0x05, 0x0F, 0x85)]
                if not links:
                    break
                ebr = start + links[0]
            break
    return out


def expected_partitions(disk):
    """{number: (start, length)} in bytes, as a disk's MBR/EBR or GPT describes it, with the
    rules umdev documents (docs/umdev.md, umdev/mbr.c, umdev/gpt.c) and Linux follows: boot
    flags 0x00/0x80 only, a 0xEE entry means GPT (primary, else the backup), logical
    partitions from 5 in chain order along the first extended partition (a loop, a link past
    the end, a missing signature or 256 links end the chain), partitions past the end of the
    disk dropped, ones crossing it cut there."""
    nsec = len(disk) // SECTOR
    out = {}

    def add(number, start, count):
        if count == 0 or start >= nsec:
            return
        out[number] = (start * SECTOR, min(count, nsec - start) * SECTOR)

    if nsec == 0 or disk[510:512] != b"\x55\xaa":
        return out
    entries = [disk[0x1BE + 16 * i:0x1BE + 16 * i + 16] for i in range(4)]
    if any(e[0] not in (0, 0x80) for e in entries):
        return out
    if any(e[4] == 0xEE for e in entries):
        return gpt_partitions(disk)
    extended_done = False
    for i, e in enumerate(entries):
        typ, start, count = e[4], le(e, 8, 4), le(e, 12, 4)
        if typ == 0 or count == 0:
            continue
        add(i + 1, start, count)
        if typ in (0x05, 0x0F, 0x85) and start < nsec and not extended_done:
            extended_done = True
            number, ebr, seen = 5, start, []
            for _ in range(256):
                if ebr in seen or ebr >= nsec:
                    break
                seen.append(ebr)
                sec = disk[ebr * SECTOR:(ebr + 1) * SECTOR]
                if sec[510:512] != b"\x55\xaa":
                    break
                nxt = None
                for k in range(4):
                    x = sec[0x1BE + 16 * k:0x1BE + 16 * k + 16]
                    t, s, c = x[4], le(x, 8, 4), le(x, 12, 4)
                    if t == 0 or c == 0:
                        continue
                    if t in (0x05, 0x0F, 0x85):
                        if nxt is None:
                            nxt = start + s
                        continue
                    if ebr + s < nsec:
                        add(number, ebr + s, c)
                        number += 1
                if nxt is None:
                    break
                ebr = nxt
    return out


def gpt_header(disk, lba):
    """(entries_lba, count, entry_size, alternate) of a valid GPT header at lba, or None."""
    nsec = len(disk) // SECTOR
    if lba == 0 or lba >= nsec:
        return None
    h = bytearray(disk[lba * SECTOR:(lba + 1) * SECTOR])
    if h[:8] != b"EFI PART":
        return None
    hsize = le(h, 12, 4)
    if hsize < 92 or hsize > SECTOR:
        return None
    crc = le(h, 16, 4)
    h[16:20] = b"\0\0\0\0"
    if zlib.crc32(bytes(h[:hsize])) != crc or le(h, 24, 8) != lba:
        return None
    first, last, elba = le(h, 40, 8), le(h, 48, 8), le(h, 72, 8)
    count, esize, ecrc = le(h, 80, 4), le(h, 84, 4), le(h, 88, 4)
    if first > last or last >= nsec:
        return None
    if esize < 128 or esize > 4096 or esize & (esize - 1):
        return None
    if count == 0 or count * esize > MIB:
        return None
    nbytes = count * esize
    if elba < 2 or elba >= nsec or -(-nbytes // SECTOR) > nsec - elba:
        return None
    if zlib.crc32(disk[elba * SECTOR:elba * SECTOR + nbytes]) != ecrc:
        return None
    return elba, count, esize, le(h, 32, 8)


def gpt_partitions(disk):
    nsec = len(disk) // SECTOR
    primary = gpt_header(disk, 1)
    used = primary or gpt_header(disk, nsec - 1)
    out = {}
    if used is None:
        return out
    elba, count, esize, _ = used
    for i in range(count):
        e = disk[elba * SECTOR + i * esize:elba * SECTOR + (i + 1) * esize]
        if e[:16] == bytes(16):
            continue
        first, last = le(e, 32, 8), le(e, 40, 8)
        if first > last or first >= nsec:
            continue
        out[i + 1] = (first * SECTOR, (min(last, nsec - 1) - first + 1) * SECTOR)
    return out


def gpt_fix_crcs(disk, lba):
    """Recompute the CRCs of the GPT header at lba (and of its entry array), in place, so that
    a damaged field gets past the checksums (what a careless or hostile tool would write)."""
    nsec = len(disk) // SECTOR
    if lba >= nsec:
        return
    h = lba * SECTOR
    elba, count, esize = le(disk, h + 72, 8), le(disk, h + 80, 4), le(disk, h + 84, 4)
    if elba < nsec and count * esize <= MIB and elba * SECTOR + count * esize <= len(disk):
        disk[h + 88:h + 92] = zlib.crc32(bytes(disk[elba * SECTOR:elba * SECTOR + count * esize])
                                         ).to_bytes(4, "little")
    hsize = le(disk, h + 12, 4)
    if 92 <= hsize <= SECTOR:
        disk[h + 16:h + 20] = b"\0\0\0\0"
        disk[h + 16:h + 20] = zlib.crc32(bytes(disk[h:h + hsize])).to_bytes(4, "little")
