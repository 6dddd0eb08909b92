"""Helpers of the ext2 and ISO 9660 reliability suites (test_*ext2*.py, test_*iso9660*.py):
daemons started and stopped from worker threads, operations with time bounds, a bounded walk of
a mounted tree that records every error it meets, and a map of which bytes of an ext2 image
each file depends on (made with debugfs, the real tool), so that a test knows what a corruption
cannot have touched.

A module of our own (not a conftest.py): `from conftest import ...` keeps meaning the harness
in tests/conftest.py. The FAT/umdev suites of this folder have their own (rellib.py)."""
import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

from conftest import SANITIZER_MARKERS, force_unmount, sanitizer_env, viewos_bin

LONG = os.environ.get("VIEWOS_LONG") == "1"


# --------------------------------------------------------------------------- time bounds

class Hang(Exception):
    """An operation did not finish within its bound."""


def bounded(fn, timeout, on_timeout=None, what="operation"):
    """fn() in a thread: its result, or its exception. Past timeout seconds on_timeout() is
    called (it must unblock fn, e.g. by killing the daemon so its requests fail) and Hang is
    raised."""
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


# --------------------------------------------------------------------------- daemons

def in_mountinfo(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].encode().decode("unicode_escape") == path for line in f)


class Daemon:
    """A viewos daemon in the foreground (-f) under our control, usable from worker threads;
    its output goes to a log file."""

    def __init__(self, name, args, mountpoint, logdir, asan_options=""):
        self.name = name
        self.asan_options = asan_options  # appended to the harness's ASAN_OPTIONS
        self.argv = [viewos_bin(name), "-f", *[str(a) for a in args]]
        self.mountpoint = str(mountpoint)
        self.log = Path(logdir) / f"{name}-{threading.get_ident()}-{time.monotonic_ns()}.log"
        self.proc = None

    def start(self, timeout=30):
        """True once mounted; False when the daemon exited first (a refusal)."""
        env = sanitizer_env()
        if self.asan_options:
            env["ASAN_OPTIONS"] += ":" + self.asan_options
        with open(self.log, "w") as logf:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if in_mountinfo(self.mountpoint):
                return True
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise Hang(f"{' '.join(self.argv)} did not mount within {timeout}s:\n"
                           + self.output())
            time.sleep(0.005)

    def output(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sanitizer_report(self):
        text = self.output()
        return text if any(m in text for m in SANITIZER_MARKERS) else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        """Unmount (fusermount3 -u, retried while a walker leaves) and wait for the exit;
        returns the exit status. A daemon that does not exit is killed and raises Hang."""
        if self.proc is None:
            return None
        for _ in range(100):
            if not in_mountinfo(self.mountpoint):
                break
            if subprocess.run(["fusermount3", "-u", self.mountpoint],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        else:
            force_unmount(self.mountpoint)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            where = self.stacks()
            self.kill()
            raise Hang(f"{self.name} did not exit within {timeout}s of the unmount; its "
                       f"threads:\n{where}")

    def stacks(self):
        """Where the daemon's threads are (gdb when there is one), for a hang's report."""
        if self.proc is None or self.proc.poll() is not None:
            return ""
        if shutil.which("gdb"):
            r = subprocess.run(["gdb", "-batch", "-p", str(self.proc.pid), "-ex",
                                "thread apply all bt 12"], capture_output=True, text=True,
                               timeout=60)
            return "\n".join(line for line in r.stdout.splitlines() if line.startswith(("#", "Thread")))
        out = []
        for tid in sorted(os.listdir(f"/proc/{self.proc.pid}/task")):
            try:
                out.append(f"{tid}: " + open(f"/proc/{self.proc.pid}/task/{tid}/stack").read())
            except OSError:
                pass
        return "\n".join(out)

    def kill(self, sig=signal.SIGKILL):
        """Kill it (a crash test or a hang) and remove its dead mount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if in_mountinfo(self.mountpoint):
            force_unmount(self.mountpoint)


class DaemonPool:
    """Every Daemon a test started, so that its teardown leaves none running or mounted."""

    def __init__(self, logdir):
        self.logdir = Path(logdir)
        self.started = []
        self.lock = threading.Lock()

    def new(self, name, args, mountpoint, asan_options=""):
        d = Daemon(name, args, mountpoint, self.logdir, asan_options)
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


def one_line_refusal(text, name, path):
    """The daemon's whole output is one line `NAME: what failed: why` that names path."""
    lines = [line for line in text.splitlines() if line.strip()]
    return (len(lines) == 1 and lines[0].startswith(f"{name}: ") and str(path) in lines[0]
            and lines[0].count(": ") >= 2)


# --------------------------------------------------------------------------- files

def sparse_copy(src, dst):
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def patch_file(path, patches):
    """Write (offset, bytes) pairs into a file."""
    with open(path, "r+b", buffering=0) as f:
        for off, data in patches:
            os.pwrite(f.fileno(), data, off)


# --------------------------------------------------------------------------- walking a mount

READ_CAP = 4 << 20  # bytes read of any one file: a corrupt size must not make a walk endless


class Walk:
    """What a bounded walk of a mounted tree saw: {relative path: entry} where an entry is
    ("dir", sorted names), ("file", bytes), ("link", target), ("other", st_mode) or
    ("error", op, errno), and `errors` [(path, op, errno)] for everything that failed."""

    def __init__(self):
        self.entries = {}
        self.errors = []

    def fail(self, rel, op, e):
        self.errors.append((rel, op, e.errno))
        self.entries.setdefault(rel, ("error", op, e.errno))


def walk_tree(root, max_entries=5000, xattrs=True, stop=None):
    """Visit everything under root (list, lstat, read up to READ_CAP, readlink, xattrs),
    recording errors instead of raising them. stop(): a callable that ends the walk early when
    true. A directory met again inside itself (a cycle) is not entered twice; one met under a
    second name elsewhere (a damaged entry pointing at it) is walked under both names: skipping
    it would hide the untouched original when the damaged alias happened to come first."""
    root = str(root)
    w = Walk()
    todo = [("", frozenset())]
    while todo and len(w.entries) < max_entries and not (stop and stop()):
        rel, ancestors = todo.pop()
        path = os.path.join(root, rel) if rel else root
        try:
            st = os.lstat(path)
        except OSError as e:
            w.fail(rel, "lstat", e)
            continue
        if xattrs and rel:
            try:
                for name in os.listxattr(path, follow_symlinks=False):
                    try:
                        os.getxattr(path, name, follow_symlinks=False)
                    except OSError as e:
                        w.errors.append((rel, f"getxattr {name}", e.errno))
            except OSError as e:
                w.errors.append((rel, "listxattr", e.errno))
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                continue
            try:
                names = sorted(os.listdir(path))
            except OSError as e:
                w.fail(rel, "listdir", e)
                continue
            w.entries[rel] = ("dir", names)
            inner = ancestors | {key}
            todo.extend((os.path.join(rel, n) if rel else n, inner) for n in names)
        elif stat.S_ISREG(st.st_mode):
            try:
                with open(path, "rb") as f:
                    w.entries[rel] = ("file", f.read(READ_CAP))
            except OSError as e:
                w.fail(rel, "read", e)
        elif stat.S_ISLNK(st.st_mode):
            try:
                w.entries[rel] = ("link", os.readlink(path))
            except OSError as e:
                w.fail(rel, "readlink", e)
        else:
            w.entries[rel] = ("other", stat.S_IFMT(st.st_mode))
    return w


def describe_source(src):
    """The same view of a source tree as walk_tree gives of a mount (no errors)."""
    return walk_tree(src, xattrs=False).entries


# --------------------------------------------------------------------------- resources of a daemon

def rss_kib(pid):
    """A process's resident memory, KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def forget_all():
    """Make the kernel drop its dentries and inodes, and so send FORGET for each to the FUSE
    daemons that had looked them up (echo 2 > drop_caches)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    time.sleep(0.3)  # FORGETs are sent as the kernel evicts: let them arrive


def lookups_per_round(pool, daemon, args, mnt, sample):
    """Two rounds of stat of every path in sample, a forget_all() after each, on a daemon run
    with -d (it logs every request): the LOOKUPs each round sent. A round after a forget sends
    them again only when the kernel did forget, and so sent the FORGETs."""
    d = pool.new(daemon, ["-d", *args], mnt)
    assert d.start(), d.output()
    sent = []
    for _ in range(2):
        before = d.output().count("opcode: LOOKUP ")
        for p in sample:
            os.stat(mnt / p)
        sent.append(d.output().count("opcode: LOOKUP ") - before)
        forget_all()
    assert d.stop() == 0, d.output()[-3000:]
    return sent


# --------------------------------------------------------------------------- ext2 images

def debugfs(img, commands):
    """Run debugfs commands on an image (read-only); returns each command's output."""
    script = "\n".join(commands) + "\n"
    r = subprocess.run(["debugfs", "-f", "-", str(img)], input=script, capture_output=True,
                       text=True, check=True)
    parts = r.stdout.split("debugfs: ")[1:]
    assert len(parts) == len(commands), r.stdout[-2000:]
    return [p.split("\n", 1)[1] if "\n" in p else "" for p in parts]


def dumpe2fs(img):
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True,
                         check=True).stdout
    fields = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    return fields


BLOCK_ITEM = re.compile(r"\(([^)]*)\):(\d+)(?:-(\d+))?")


class Ext2Map:
    """Which bytes of an ext2/3/4 image each path depends on, from debugfs and dumpe2fs on
    the pristine image: its inode (imap), its data, extent-tree and indirect blocks (stat), its
    attribute block; plus the bytes every path depends on (the superblock and the group
    descriptors). `deps(path)` includes the path's ancestors (their inodes and directory blocks:
    a lookup goes through them)."""

    def __init__(self, img, paths):
        self.img = Path(img)
        h = dumpe2fs(img)
        self.block_size = int(h["Block size"])
        self.inode_size = int(h["Inode size"])
        self.blocks = int(h["Block count"])
        self.features = h.get("Filesystem features", "").split()
        self.first_data_block = int(h.get("First block", "0"))
        desc_size = int(h.get("Group descriptor size", "32"))
        groups = -(-(self.blocks - self.first_data_block) // int(h["Blocks per group"]))
        gdt_blocks = -(-groups * desc_size // self.block_size)
        gdt_start = (self.first_data_block + 1) * self.block_size
        self.global_ranges = [(1024, 1024), (gdt_start, gdt_blocks * self.block_size)]
        self.gdt_offset = gdt_start
        self.desc_size = desc_size
        groups_text = subprocess.run(["dumpe2fs", str(img)], capture_output=True, text=True,
                                     check=True).stdout
        self.block_bitmaps = [int(b) for b in re.findall(r"Block bitmap at (\d+)", groups_text)]
        self.inode_bitmaps = [int(b) for b in re.findall(r"Inode bitmap at (\d+)", groups_text)]
        self.inode_tables = [(int(a), int(b)) for a, b in
                             re.findall(r"Inode table at (\d+)-(\d+)", groups_text)]
        paths = [""] + [p for p in paths if p]
        cmds = []
        for p in paths:
            cmds += [f"stat \"/{p}\"", f"imap \"/{p}\""]
        out = debugfs(img, cmds)
        self.own = {}
        self.acl_block = {}
        self.inode = {}
        self.inode_block_offset = {}
        self.block_list = {}
        for i, p in enumerate(paths):
            st, im = out[2 * i], out[2 * i + 1]
            m = re.search(r"located at block (\d+), offset 0x([0-9a-f]+)", im)
            assert m, (p, im)
            ioff = int(m[1]) * self.block_size + int(m[2], 16)
            ranges = [(ioff, self.inode_size)]
            self.inode[p] = int(re.search(r"Inode: (\d+)", st)[1])
            self.inode_block_offset[p] = ioff
            blocks = []
            section = re.split(r"\n(?:EXTENTS|BLOCKS):\n", st)
            if len(section) > 1:
                for kind, a, b in BLOCK_ITEM.findall(section[1].split("\nTOTAL")[0]):
                    a = int(a)
                    b = int(b) if b else a
                    blocks.append((kind, a, b))
                    ranges.append((a * self.block_size, (b - a + 1) * self.block_size))
            acl = int(re.search(r"File ACL: (\d+)", st)[1])
            if acl:
                ranges.append((acl * self.block_size, self.block_size))
            self.acl_block[p] = acl
            self.block_list[p] = blocks
            self.own[p] = ranges

    def deps(self, path):
        parts = [q for q in path.split("/") if q]
        out = list(self.global_ranges)
        for i in range(len(parts) + 1):
            out += self.own.get("/".join(parts[:i]), [])
        return out

    def touched(self, path, patches):
        """True when a patch [(offset, bytes)] overlaps anything path depends on."""
        for off, data in patches:
            for start, length in self.deps(path):
                if off < start + length and start < off + len(data):
                    return True
        return False


def e2fsck(img, fix=False, timeout=120):
    r = subprocess.run(["e2fsck", "-fy" if fix else "-fn", str(img)], capture_output=True,
                       text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def e2fsck_problems(report):
    """The problems an e2fsck -fn report names, as a set of lines: numbers replaced by N (they
    move as files come and go), details in parentheses dropped (e2fsck's words for what it
    found in a block can change when the block does: an attribute block that is really the
    superblock reads differently after every mount), its answers ("Fix? no"), banners, pass
    names and the summary line dropped. Counts and bitmap differences stay: they are problems
    too."""
    out = set()
    for line in report.splitlines():
        line = line.strip()
        if not line or line.startswith(("e2fsck ", "Pass ", "*****", "Running additional")) \
                or re.match(r"^\S+: \d+/\d+ files", line):
            continue
        line = re.sub(r"\s+[A-Z][^.?]*\? no$", "", line)
        line = re.sub(r"\s+(IGNORED|no)\.?$", "", line)
        line = re.sub(r"\s*\([^)]*\)", "", line)
        out.add(re.sub(r"\d+", "N", line))
    return out


def e2fsck_worse(before, after):
    """What e2fsck -fn reports after (a session) that it did not before: sorted lines."""
    return sorted(e2fsck_problems(after) - e2fsck_problems(before))


# --------------------------------------------------------------------------- ISO 9660 images

SECTOR = 2048


class IsoRecord:
    """One directory record of an image, as ECMA-119 and SUSP lay it out."""

    def __init__(self, data, off, susp_skip=0):
        self.offset = off
        self.length = data[off]
        self.xar = data[off + 1]
        self.extent = struct.unpack_from("<I", data, off + 2)[0] + self.xar
        self.size = struct.unpack_from("<I", data, off + 10)[0]
        self.flags = data[off + 25]
        nl = data[off + 32]
        self.raw_name = bytes(data[off + 33:off + 33 + nl])
        su = off + 33 + nl + (1 - nl % 2)
        self.su_offset = su + susp_skip
        self.entries = {}  # signature -> [(byte address, length)]
        self.ce_areas = []  # (byte address, length)
        self.nm = b""
        area, end = self.su_offset, off + self.length
        for _ in range(8):  # continuation areas: real images use one or two
            i, ce = area, None
            while i + 4 <= end:
                sig, elen = bytes(data[i:i + 2]), data[i + 2]
                if elen < 4 or i + elen > end:
                    break
                self.entries.setdefault(sig.decode("latin-1"), []).append((i, elen))
                if sig == b"NM" and not data[i + 4] & 6:
                    self.nm += bytes(data[i + 5:i + elen])
                elif sig == b"CE":
                    b, o, n = (struct.unpack_from("<I", data, i + 4 + 8 * k)[0] for k in range(3))
                    ce = (b * SECTOR + o, n)
                elif sig == b"ST":
                    break
                i += elen
            if not ce or ce[0] + ce[1] > len(data):
                break
            self.ce_areas.append(ce)
            area, end = ce[0], ce[0] + ce[1]

    @property
    def is_dir(self):
        return bool(self.flags & 2)

    def sig(self, name):
        return self.entries.get(name, [])

    def joliet_name(self):
        n = self.raw_name.decode("utf-16-be", "replace")
        if n.endswith(";1"):
            n = n[:-2]
        return n.rstrip(".")


def iso_records(data, extent, size, susp_skip=0):
    """The records of a directory extent (with "." and "..")."""
    out = []
    start = extent * SECTOR
    off = start
    while off < start + size and off < len(data):
        if data[off] == 0:
            off = (off // SECTOR + 1) * SECTOR
            continue
        out.append(IsoRecord(data, off, susp_skip))
        off += data[off]
    return out


class IsoMap:
    """Which bytes of an ISO image each path of its Rock Ridge (or Joliet) tree depends on,
    from an independent reading of the pristine image: the volume descriptors (every path),
    then for each path its directory record, its continuation areas, and its extent (the
    records of a directory, the data of a file). `deps(path)` adds the ancestors'."""

    def __init__(self, data, joliet=False):
        self.data = data
        self.vd = [s for s in range(16, min(len(data) // SECTOR, 200))
                   if bytes(data[s * SECTOR + 1:s * SECTOR + 6]) == b"CD001"]
        self.global_ranges = [(s * SECTOR, SECTOR) for s in self.vd]
        if joliet:
            svd = next(s for s in self.vd if data[s * SECTOR] == 2)
            root = IsoRecord(data, svd * SECTOR + 156)
        else:
            root = IsoRecord(data, 16 * SECTOR + 156)
        self.root = root
        first = iso_records(data, root.extent, root.size)[0]
        skip = 0
        if not joliet:
            sp = first.sig("SP")
            assert sp, "no Rock Ridge in the image"
            skip = data[sp[0][0] + 6]
        self.skip = skip
        self.records = {"": root}
        self.own = {"": [(root.extent * SECTOR, max(root.size, 1))] + first.ce_areas}
        self.dir_extent = {"": root.extent}
        todo = [("", root.extent, root.size)]
        while todo:
            path, extent, size = todo.pop()
            for r in iso_records(data, extent, size, skip)[2:]:
                if r.flags & 4 or r.sig("RE"):
                    continue  # associated files, and relocated directories (shown at CL)
                name = r.joliet_name() if joliet else r.nm.decode("utf-8", "replace")
                p = f"{path}/{name}" if path else name
                self.records[p] = r
                ranges = [(r.offset, r.length)] + r.ce_areas
                if r.sig("CL"):
                    (cl, _), = r.sig("CL")
                    target = struct.unpack_from("<I", data, cl + 4)[0]
                    dot = IsoRecord(data, target * SECTOR, skip)
                    ranges.append((target * SECTOR, max(dot.size, 1)))
                    self.dir_extent[p] = target
                    todo.append((p, target, dot.size))
                elif r.is_dir:
                    ranges.append((r.extent * SECTOR, max(r.size, 1)))
                    self.dir_extent[p] = r.extent
                    todo.append((p, r.extent, r.size))
                elif r.size:
                    ranges.append((r.extent * SECTOR, r.size))
                self.own[p] = ranges

    def deps(self, path):
        parts = [q for q in path.split("/") if q]
        out = list(self.global_ranges)
        for i in range(len(parts) + 1):
            out += self.own.get("/".join(parts[:i]), [])
        return out

    def touched(self, path, patches):
        for off, data in patches:
            for start, length in self.deps(path):
                if off < start + length and start < off + len(data):
                    return True
        return False
