"""Helpers of the umfuse-fat suites: images made by mkfs.vfat and mounted by umfuse-fat,
fsck.fat -n as the judge after every write, and a small reader of the on-disk structures for
tests that must look at (or damage) bytes directly."""
import os
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import make_fat, mounted_at, run

FAT = "umfuse-fat"


def fsck(img):
    """fsck.fat -n IMG: (exit status, output)."""
    r = subprocess.run(["fsck.fat", "-n", str(img)], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def assert_clean(img):
    """fsck.fat -n finds nothing at all: no dirty flag, no lost clusters, no wrong counts."""
    status, out = fsck(img)
    findings = [line for line in out.splitlines()
                if line and not line.startswith("fsck.fat ") and not line.startswith(f"{img}:")]
    assert status == 0 and not findings, out


def mtools(*args, check=True):
    """An mtools command (mdir, mcopy, mmd, mtype, mattrib) on an image."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", LC_ALL="C.UTF-8")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                          check=check)


class Vol:
    """An image and where it is mounted."""

    def __init__(self, mounts, img, mnt, opts=(), user=None):
        # a source may be a URI (nbd+unix:///...): a Path would fold its slashes
        self.img = Path(img) if "://" not in str(img) else str(img)
        self.mounts, self.path, self.user = mounts, Path(mnt), user
        self.mount = None
        self.start(opts)

    def start(self, opts=()):
        args = ["-o", ",".join(opts)] if opts else []
        self.mount = self.mounts.start(FAT, *args, self.img, self.path, mountpoint=self.path,
                                       user=self.user)
        return self

    def unmount(self):
        self.mount.unmount()

    def check(self):
        """Unmount cleanly (the daemon must exit 0), then fsck.fat -n must find nothing."""
        self.unmount()
        assert not mounted_at(self.path)
        assert_clean(self.img)

    def remount(self, opts=()):
        self.unmount()
        return self.start(opts)


@pytest.fixture
def fatvol(rtmp, mounts):
    """fatvol(fat=32, size="64M", opts=(), cluster_sectors=None, extra=()) -> a mounted Vol."""
    count = [0]

    def make(fat=32, size="64M", opts=(), cluster_sectors=None, extra=(), img=None):
        count[0] += 1
        mnt = rtmp / f"mnt{count[0]}"
        mnt.mkdir()
        if img is None:
            img = rtmp / f"fat{count[0]}.img"
            make_fat(img, fat=fat, size=size, cluster_sectors=cluster_sectors, extra=extra)
        return Vol(mounts, img, mnt, opts)

    return make


class Image:
    """Read-only view of a FAT image's layout, enough to find and damage entries in tests."""

    def __init__(self, path):
        self.path = Path(path)
        b = self.path.read_bytes()[:512]
        self.bps, self.spc = struct.unpack_from("<HB", b, 11)
        self.reserved, self.nfats, self.root_entries = struct.unpack_from("<HBH", b, 14)
        total16, = struct.unpack_from("<H", b, 19)
        fat16, = struct.unpack_from("<H", b, 22)
        total32, fat32 = struct.unpack_from("<II", b, 32)
        self.total = total16 or total32
        self.fatsz = fat16 or fat32
        self.root_cluster, = struct.unpack_from("<I", b, 44)
        root_sectors = (self.root_entries * 32 + self.bps - 1) // self.bps
        self.fat_offset = self.reserved * self.bps
        self.root_offset = self.fat_offset + self.nfats * self.fatsz * self.bps
        self.data_offset = self.root_offset + root_sectors * self.bps
        self.cluster_size = self.bps * self.spc
        self.clusters = (self.total - self.data_offset // self.bps) // self.spc
        self.type = 32 if fat16 == 0 else 12 if self.clusters < 4085 else 16
        self.state_offset = 65 if self.type == 32 else 37

    def read(self, off, n):
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n)

    def write(self, off, data):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def fat_entry_offset(self, cluster, copy=0):
        base = self.fat_offset + copy * self.fatsz * self.bps
        return base + (cluster * 3 // 2 if self.type == 12 else cluster * self.type // 8)

    def get_fat(self, cluster):
        raw = self.read(self.fat_entry_offset(cluster), 4)
        if self.type == 12:
            v = struct.unpack_from("<H", raw)[0]
            return v >> 4 if cluster & 1 else v & 0xFFF
        return struct.unpack_from("<H" if self.type == 16 else "<I", raw)[0]

    def set_fat(self, cluster, value):
        """Write one FAT entry in every copy (FAT16/32 only)."""
        assert self.type != 12
        for copy in range(self.nfats):
            fmt = "<H" if self.type == 16 else "<I"
            self.write(self.fat_entry_offset(cluster, copy), struct.pack(fmt, value))

    def cluster_offset(self, c):
        return self.data_offset + (c - 2) * self.cluster_size

    def root_dir(self):
        """(offset, bytes) of the root directory (its first cluster on FAT32)."""
        if self.type == 32:
            return self.cluster_offset(self.root_cluster), self.cluster_size
        return self.root_offset, self.root_entries * 32

    def find_short(self, sfn):
        """Byte offset of the root entry whose 11-byte short name is sfn."""
        off, size = self.root_dir()
        data = self.read(off, size)
        for i in range(0, size, 32):
            if data[i:i + 11] == sfn:
                return off + i
        raise KeyError(sfn)

    def entry_cluster(self, entry_off):
        e = self.read(entry_off, 32)
        hi, = struct.unpack_from("<H", e, 20)
        lo, = struct.unpack_from("<H", e, 26)
        return (hi << 16 if self.type == 32 else 0) | lo

    def state(self):
        return self.read(self.state_offset, 1)[0]

    def clean_shutdown_bits(self):
        """The clean-shutdown bit of FAT[1] (FAT16 0x8000, FAT32 0x08000000) in each FAT copy:
        set means cleanly unmounted, as the specification and fsck.fat read it."""
        bit, fmt = (0x8000, "<H") if self.type == 16 else (0x08000000, "<I")
        return [bool(struct.unpack(fmt, self.read(self.fat_entry_offset(1, c), 2 if self.type == 16
                                                  else 4))[0] & bit) for c in range(self.nfats)]

    def chain(self, first):
        """The clusters of the chain that starts at first (FAT16/32)."""
        out, c = [], first
        while 2 <= c < self.clusters + 2 and c not in out:
            out.append(c)
            c = self.get_fat(c) & 0x0FFFFFFF
        return out

    def fsinfo(self):
        """FAT32: (free count, next-free hint) of the FSInfo sector."""
        sector = struct.unpack_from("<H", self.read(48, 2))[0]
        return struct.unpack_from("<II", self.read(sector * self.bps + 488, 8))

    def set_fsinfo(self, free=None, hint=None):
        sector = struct.unpack_from("<H", self.read(48, 2))[0]
        if free is not None:
            self.write(sector * self.bps + 488, struct.pack("<I", free))
        if hint is not None:
            self.write(sector * self.bps + 492, struct.pack("<I", hint))

    def free_clusters(self):
        """Free entries of the first FAT (FAT16/32)."""
        raw = self.read(self.fat_offset, self.fatsz * self.bps)
        width = self.type // 8
        n = self.clusters + 2
        values = struct.unpack_from(f"<{n}{'H' if width == 2 else 'I'}", raw)
        return sum(1 for v in values[2:] if v & 0x0FFFFFFF == 0)


def sha(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
