"""Corrupted ext2/ext4 images through the real umfuse-ext2: over 200 deterministic variants
(about 470 with VIEWOS_LONG=1) of three images that mke2fs -d filled with a real tree (an ext2
with 1 KiB blocks and indirect blocks; an ext4 with 4 KiB blocks, extents, a journal and
metadata checksums; an ext4 with 1 KiB blocks and no checksums, so that damaged blocks are
taken at their word). Every variant damages one structure: flipped bytes and zeroed blocks
anywhere in the metadata, truncated images, and fields aimed at the superblock, the group
descriptors, inodes (sizes, modes, flags, link counts, attribute blocks), extent trees and
indirect blocks (pointing outside the file system, at metadata, at themselves), directory
blocks (inode numbers, record lengths, names), htree indexes and xattr blocks. Fields are
changed with `debugfs -w` where the image has checksums (so the damage gets past them, as a
hostile image's would), raw elsewhere.

Each variant is mounted read-only and walked (list, stat, read, readlink, xattrs) with a time
bound. umfuse-ext2 must either refuse it (exit 2, one line `umfuse-ext2: ...` naming the image,
nothing left mounted) — and it must not refuse an image whose superblock, descriptors and root
directory are intact — or serve it so that
  * every path whose bytes the damage did not reach (its inode, blocks, attribute block and those
    of its ancestors, as debugfs maps the pristine image; the superblock and descriptors) reads
    back exactly as it was made: content, listing, link target;
  * everything else answers with data or EIO (a lookup may also meet ENOENT for a damaged name
    and ELOOP for a directory that appears twice: what the kernel says of such trees);
  * the daemon never crashes, hangs or reports to a sanitizer, and exits 0 at unmount;
  * the image, with 64 KiB of random bytes after the file system, is bit for bit unchanged.

One variant in four is then mounted read-write and changed a little (create + fsync, mkdir,
rename, unlink, truncate, append, setxattr, symlink, rmdir). Errors are allowed; what is not:
  * a file whose write and fsync succeeded that does not read back;
  * a write outside the file system (the 64 KiB after it, the image's size);
  * e2fsck -fn finding problems the damage alone did not cause. "Worse" is defined on e2fsck's
    own words: its reports on the damaged image and on the image after the session are turned
    into sets of problem lines (relb_util.e2fsck_problems: numbers replaced by N, details in
    parentheses, answers and banners dropped); a line in the second set that is not in the
    first is a problem the session made. Counts and bitmap differences are problems too, so a
    session that leaves a wrong free count is caught.
  Not in the read-write set: damage to the block bitmap of an image without checksums. Nothing
  can tell such a bitmap is wrong short of reading every file's map, so any writer (the
  kernel's ext2 included) allocates blocks that are in use, and e2fsck finds blocks claimed
  twice. (A damaged inode bitmap is in the set: a new inode is checked on disk before use.
  With metadata_csum the daemon refuses a read-write mount over a bad bitmap.)

Variants run four at a time, one daemon each; a walk or session that outlives its bound
kills the daemon and fails the variant as a hang."""
import errno
import os
import random
import re
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import make_tree
from relb_util import (LONG, DaemonPool, Ext2Map, Hang, bounded, describe_source, e2fsck,
                       e2fsck_worse,
                       file_sha, in_mountinfo, one_line_refusal, patch_file, sparse_copy,
                       walk_tree)

DAEMON = "umfuse-ext2"
SENTINEL = 64 * 1024
WORKERS = 4
WALK_TIMEOUT = 60      # seconds for a whole walk or write session; one takes well under 2
BASES = {
    # name: (mkfs type, block size, image size, -O features)
    "ext2": ("ext2", 1024, 16 << 20, None),
    "ext4": ("ext4", 4096, 32 << 20, None),
    "ext4-nocsum": ("ext4", 1024, 16 << 20, "^metadata_csum,^has_journal"),
}
KINDS = ["flipped", "zeroed", "truncated", "superblock", "descriptors", "inodes", "blockmap",
         "directories", "htree", "xattrs"]
# errno values a walk of a damaged tree may meet, by operation
ALLOWED = {
    "lstat": {errno.EIO, errno.ENOENT, errno.ELOOP},
    "listdir": {errno.EIO},
    "read": {errno.EIO},
    "readlink": {errno.EIO},
    "listxattr": {errno.EIO},
    "getxattr": {errno.EIO},
}
ALLOWED_WRITE = {errno.EIO, errno.ENOSPC, errno.EROFS, errno.ENOENT, errno.EEXIST,
                 errno.ENOTDIR, errno.EISDIR, errno.ENOTEMPTY, errno.ELOOP, errno.EMLINK}


# --------------------------------------------------------------------------- the base images

def build_source(root, seed):
    """make_tree's sample (long and UTF-8 names, symlinks fast and slow, a hard link) plus what
    an ext4 has to carry: a directory big enough for an htree index, a file in many extents
    (an extent tree with an index block; indirect blocks on ext2), a file with an attribute too
    big for the inode (an xattr block), in-inode attributes, ACLs, devices, a FIFO, depth."""
    make_tree(root, nfiles=24, seed=seed)
    big = root / "big"
    big.mkdir()
    for i in range(160):
        (big / f"entry-with-a-longer-name-{i:04d}").write_text(f"{i}\n")
    with open(root / "islands", "wb") as f:
        for i in range(12):
            f.seek(i * 65536)
            f.write(bytes([65 + i]) * 4096)
    rnd = random.Random(seed)
    (root / "plain").write_bytes(rnd.randbytes(300_000))
    os.setxattr(root / "plain", "user.big", b"v" * 700)
    (root / "noted").write_text("small file with a note\n")
    os.setxattr(root / "noted", "user.note", b"hello")
    (root / "acl-dir").mkdir()
    (root / "acl-dir" / "inside").write_text("inherits nothing: made before the ACL\n")
    subprocess.run(["setfacl", "-m", "u:1234:rwx,g:5678:r-x", str(root / "acl-dir")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rw-", str(root / "acl-dir")], check=True)
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(root / "fifo")
    deep = root / "deep"
    p = deep
    for i in range(9):
        p = p / f"level{i}"
    p.mkdir(parents=True)
    (p / "bottom").write_text("at the bottom\n")
    return root


class Base:
    """A damaged image's starting point: made by mke2fs -d, indexed by e2fsck -D, clean, with
    SENTINEL random bytes after the file system; its bytes, its tree and its map."""

    def __init__(self, workdir, name):
        fstype, bs, size, features = BASES[name]
        self.name, self.bs, self.size = name, bs, size
        self.src = build_source(workdir / f"src-{name}", seed=len(name))
        self.path = workdir / f"{name}.img"
        with open(self.path, "wb") as f:
            f.truncate(size)
        cmd = [f"mkfs.{fstype}", "-q", "-F", "-b", str(bs), "-I", "256", "-N", "1024"]
        if features:
            cmd += ["-O", features]
        subprocess.run(cmd + ["-d", str(self.src), str(self.path)], check=True,
                       capture_output=True)
        subprocess.run(["e2fsck", "-fyD", str(self.path)], capture_output=True)
        status, out = e2fsck(self.path)
        assert status == 0, out
        with open(self.path, "ab") as f:
            f.write(random.Random(name).randbytes(SENTINEL))
        self.data = self.path.read_bytes()
        self.expected = describe_source(self.src)
        self.expected[""] = ("dir", sorted(self.expected[""][1] + ["lost+found"]))
        self.expected["lost+found"] = ("dir", [])
        self.map = Ext2Map(self.path, list(self.expected))
        m = self.map
        self.csum = "metadata_csum" in m.features
        self.extents = "extent" in m.features
        self.files = sorted(p for p, e in self.expected.items() if e[0] == "file" and
                            m.block_list[p])
        self.dirs = sorted(p for p, e in self.expected.items() if e[0] == "dir" and p)
        self.links = sorted(p for p, e in self.expected.items() if e[0] == "link")
        self.inodes_count = struct.unpack_from("<I", self.data, 1024)[0]

    def u32(self, off):
        return struct.unpack_from("<I", self.data, off)[0]

    def u16(self, off):
        return struct.unpack_from("<H", self.data, off)[0]

    def blocks_of(self, path, kind=None):
        """Physical blocks of path, optionally only those of one kind (IND, DIND, ETB0 ...,
        or None for data)."""
        out = []
        for k, a, b in self.map.block_list[path]:
            data_block = not k or k[0].isdigit()
            if (kind is None and data_block) or k == kind:
                out += range(a, b + 1)
        return out

    def inode_off(self, path):
        return self.map.inode_block_offset[path]

    def dir_entries(self, path):
        """(offset, inode, rec_len, name_len, name) of every record of a directory."""
        out = []
        for blk in self.blocks_of(path):
            base = blk * self.bs
            off = 0
            while off + 8 <= self.bs:
                ino, rec_len, nl = struct.unpack_from("<IHB", self.data, base + off)
                if rec_len < 8:
                    break
                out.append((base + off, ino, rec_len, nl,
                            self.data[base + off + 8:base + off + 8 + nl]))
                off += rec_len
        return out


_bases = {}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    def get(name):
        if name not in _bases:
            _bases[name] = Base(tmp_path_factory.mktemp(f"base-{name}"), name)
        return _bases[name]
    yield get
    _bases.clear()


# --------------------------------------------------------------------------- variants

class Variant:
    def __init__(self, name, raw=(), debugfs=(), truncate=None):
        self.name, self.raw, self.debugfs, self.truncate = name, list(raw), list(debugfs), truncate
        self.rw = False
        # e2fsck lines that may change after a read-write session without any damage by it
        self.rw_noise = ()


def flip_bytes(base, rnd, region, count):
    off, length = region
    out = []
    for _ in range(count):
        at = off + rnd.randrange(length)
        out.append((at, bytes([base.data[at] ^ rnd.randrange(1, 256)])))
    return out


def regions(base):
    """Named metadata regions of the base image: (name, offset, length)."""
    m, bs = base.map, base.bs
    out = [("the superblock", 1024, 1024), ("the group descriptors", *m.global_ranges[1])]
    for p in ["", "big", "plain", "islands", base.dirs[0], base.files[0], base.links[-1],
              "noted", "acl-dir"]:
        out.append((f"the inode of /{p}", base.inode_off(p), m.inode_size))
    a, _ = m.inode_tables[0]
    out.append(("the first inode table block", a * bs, bs))
    for p in ["", "big", base.dirs[-1], "deep/level0"]:
        for i, blk in enumerate(base.blocks_of(p)[:2]):
            out.append((f"directory block {i} of /{p}", blk * bs, bs))
    for kind in ["ETB0", "IND", "DIND"]:
        for p in ["islands", "plain"]:
            for blk in base.blocks_of(p, kind)[:1]:
                out.append((f"the {kind} block of /{p}", blk * bs, bs))
    if m.acl_block["plain"]:
        out.append(("the xattr block of /plain", m.acl_block["plain"] * bs, bs))
    if m.acl_block["acl-dir"]:
        out.append(("the xattr block of /acl-dir", m.acl_block["acl-dir"] * bs, bs))
    out.append(("the block bitmap", m.block_bitmaps[0] * bs, bs))
    out.append(("the inode bitmap", m.inode_bitmaps[0] * bs, bs))
    return out


def kind_flipped(base, rnd):
    out = []
    regs = regions(base)
    for i in range(24 if base.csum else 20):
        name, off, length = regs[i % len(regs)] if i < len(regs) else rnd.choice(regs)
        count = rnd.choice([1, 2, 4, 8, 16])
        out.append(Variant(f"{count} byte(s) flipped in {name}",
                           flip_bytes(base, rnd, (off, length), count)))
    return out


def kind_zeroed(base, rnd):
    m, bs = base.map, base.bs
    places = [("the block holding the superblock", 1024 // bs * bs)]
    places.append(("the first descriptor block", m.global_ranges[1][0]))
    root_itable = base.inode_off("") // bs * bs
    places.append(("the inode table block of the root", root_itable))
    places.append(("the inode table block of /plain", base.inode_off("plain") // bs * bs))
    places.append(("directory block 0 of /big (the htree root)", base.blocks_of("big")[0] * bs))
    places.append(("the last directory block of /big", base.blocks_of("big")[-1] * bs))
    places.append(("the first directory block of /deep/level0",
                   base.blocks_of("deep/level0")[0] * bs))
    meta = base.blocks_of("islands", "ETB0") or base.blocks_of("plain", "IND")
    places.append(("the first extent/indirect block of a file", meta[0] * bs))
    if m.acl_block["plain"]:
        places.append(("the xattr block of /plain", m.acl_block["plain"] * bs))
    places.append(("the first data block of /plain", base.blocks_of("plain")[0] * bs))
    places.append(("the block bitmap", m.block_bitmaps[0] * bs))
    places.append(("the inode bitmap", m.inode_bitmaps[0] * bs))
    places.append(("the last block of the file system", base.size - bs))
    places.append(("a random block", rnd.randrange(base.size // bs) * bs))
    return [Variant(f"zeroed {what}", [(off, bytes(bs))]) for what, off in places]


def kind_truncated(base, rnd):
    bs = base.bs
    cuts = [("to nothing", 0), ("inside the superblock", 1500),
            ("after the superblock", 2048), ("after the descriptors", sum(base.map.global_ranges[1])),
            ("in the middle", base.size // 2), ("one block short", base.size - bs),
            ("one byte short", base.size - 1),
            ("at the end of the file system (the bytes after it gone)", base.size),
            ("inside the bytes after the file system", base.size + 4096)]
    return [Variant(f"truncated {what}", truncate=size) for what, size in cuts]


def kind_superblock(base, rnd):
    big = 1 << 31
    sets = [("inodes_count", 0), ("inodes_count", big), ("blocks_count", big),
            ("blocks_count", base.size // base.bs // 2), ("log_block_size", 7),
            ("blocks_per_group", 0), ("blocks_per_group", 1 << 20), ("inodes_per_group", 0),
            ("inodes_per_group", big), ("first_data_block", 7),
            ("rev_level", 9), ("first_ino", 1), ("first_ino", big), ("inode_size", 100),
            ("inode_size", 4096), ("feature_incompat", 0x10000 | 0x2), ("feature_ro_compat", 0x8000),
            ("state", 2), ("log_groups_per_flex", 40), ("desc_size", 0x400)]
    if base.csum:
        sets.append(("checksum_type", 7))
    out = [Variant(f"superblock {field} = {value:#x}", debugfs=[f"ssv {field} {value}"])
           for field, value in sets]
    # raw, without fixing the checksum: the checksum itself is what must catch it
    out.append(Variant("superblock s_inodes_count changed raw", [(1024, b"\x07\x00\x00\x00")]))
    out.append(Variant("superblock magic changed raw", [(1024 + 56, b"\x34\x12")]))
    return out


def kind_descriptors(base, rnd):
    far = base.size // base.bs + 100
    sets = [(0, "inode_table", 0), (0, "inode_table", far), (0, "inode_table", 1),
            (0, "inode_table", base.map.block_bitmaps[0]), (0, "block_bitmap", far),
            (0, "inode_bitmap", far), (0, "flags", 1), (0, "itable_unused", 0xFFFF),
            (0, "free_inodes_count", 0xFFFF)]
    if len(base.map.inode_tables) > 1:
        sets.append((1, "inode_table", 0))
    return [Variant(f"group {g} {field} = {value:#x}", debugfs=[f"set_bg {g} {field} {value}"])
            for g, field, value in sets]


def kind_inodes(base, rnd):
    f, d, fast, slow = base.files[0], "deep/level0", base.links[0], None
    for p in base.links:
        if not base.map.block_list[p] and len(base.expected[p][1]) < 50:
            fast = p
        if base.map.block_list[p]:
            slow = p
    far = base.size // base.bs + 100
    itable_blk = base.inode_off(f) // base.bs
    sets = [(f, "size", 1 << 45), (f, "size_hi", 0xFFFFFFFF), (f, "size", 0),
            (f, "mode", 0), (f, "mode", 0o40755), (d, "mode", 0o100644), (f, "mode", 0o120777),
            (f, "links_count", 0), (d, "links_count", 0), (f, "flags", 0x1000),
            (f, "flags", 0x10000000), (f, "file_acl", far), (f, "file_acl", itable_blk),
            (f, "file_acl", 1), (f, "extra_isize", 0xFFFF), (f, "extra_isize", 3),
            (fast, "size", 200), (fast, "size", 50000), (f, "blocks", 0),
            ("", "mode", 0o100644), ("", "links_count", 0), ("", "flags", 0x10000000),
            ("big", "flags", 0), ("plain", "file_acl", base.map.acl_block["acl-dir"] or base.blocks_of("big")[0])]
    if slow:
        sets.append((slow, "size", 1 << 20))
    sets.append((f, "flags", 0 if base.extents else 0x80000))  # extents off / on
    out = [Variant(f"inode of /{p}: {field} = {value:#o}" if field == "mode" else
                   f"inode of /{p}: {field} = {value:#x}",
                   debugfs=[f"sif \"/{p}\" {field} {value}"]) for p, field, value in sets]
    for v, (p, field, value) in zip(out, sets):
        if field == "file_acl" and value == 1:
            # Block 1 is the superblock (1 KiB blocks) or the group descriptors: every
            # read-write mount rewrites them (mount count, times, free counts), so what e2fsck
            # says of them read as an attribute block changes with no harm done.
            v.rw_noise = ("xtended attribute",)
    return out


def kind_blockmap(base, rnd):
    """Extent trees (ext4) or indirect blocks (ext2) pointing outside, at metadata, at
    themselves. Inode fields through debugfs (checksums fixed); tree blocks raw."""
    bs, far = base.bs, base.size // base.bs + 100
    f, isl = base.files[-1], "islands"
    out = []
    sif = lambda p, i, v, what: out.append(  # noqa: E731
        Variant(f"/{p}: {what}", debugfs=[f"sif \"/{p}\" block[{i}] {v}"]))
    if base.extents:
        itable = base.inode_off(f) // bs
        # i_block[3..5] hold the first extent of a shallow tree: (lblk, len | start_hi << 16,
        # start_lo); i_block[0..1] the header: (magic | entries << 16, max | depth << 16)
        sif(f, 5, far, "first extent starts outside the file system")
        sif(f, 5, 0, "first extent starts at block 0")
        sif(f, 5, itable, "first extent starts at its own inode table block")
        sif(f, 5, 1024 // bs, "first extent starts at the superblock")
        sif(f, 4, 0x7FFF, "first extent 32767 blocks long")
        sif(f, 4, 0x8000 | base.u16(base.inode_off(f) + 40 + 16), "first extent unwritten")
        sif(f, 4, 0xFFFF0000 | base.u16(base.inode_off(f) + 40 + 16), "extent start high bits set")
        sif(f, 3, 0xFFFFFF00, "first extent at a huge logical block")
        sif(f, 0, 0xF30A | (9 << 16), "more extents than the header allows")
        sif(f, 1, 4 | (5 << 16), "tree depth 5")
        sif(f, 0, 0x1234 | (1 << 16), "bad extent magic")
        etb = base.blocks_of(isl, "ETB0")
        sif(isl, 4, far, "index points outside the file system")
        sif(isl, 4, base.inode_off(isl) // bs, "index points at the inode table")
        sif(isl, 1, 4 | (0 << 16), "index node read as a leaf (depth 0)")
        if not base.csum:
            e = etb[0] * bs
            nent = base.u16(e + 2)
            out.append(Variant("leaf block's extent points outside", [(e + 12 + 8, struct.pack("<I", far))]))
            out.append(Variant("leaf block says depth 1 and points at itself",
                               [(e + 6, struct.pack("<H", 1)), (e + 12 + 4, struct.pack("<I", etb[0])),
                                (e + 12 + 8, b"\0\0\0\0")]))
            out.append(Variant("leaf block with entries > max", [(e + 2, struct.pack("<H", 500))]))
            out.append(Variant("leaf block extents out of order",
                               [(e + 12, base.data[e + 24:e + 36]), (e + 24, base.data[e + 12:e + 24])]))
            out.append(Variant("leaf block extents overlap",
                               [(e + 12 + 12 * (nent - 1), struct.pack("<I", 0))]))
        else:
            e = etb[0] * bs
            out.append(Variant("leaf block changed raw (checksum no longer matches)",
                               [(e + 12 + 8, struct.pack("<I", far))]))
    else:
        ind = base.blocks_of("plain", "IND")
        dind = base.blocks_of("plain", "DIND")
        sif("plain", 0, far, "block 0 outside the file system")
        sif("plain", 0, 1, "block 0 is the superblock")
        sif("plain", 0, base.inode_off("plain") // bs, "block 0 is its own inode table block")
        sif("plain", "IND", far, "indirect block outside the file system")
        sif("plain", "IND", base.map.inode_tables[0][0], "indirect block is an inode table block")
        sif("plain", "DIND", base.blocks_of("islands", "IND")[0], "double indirect is another file's indirect")
        sif("plain", "TIND", far, "triple indirect outside")
        i = ind[0] * bs
        out.append(Variant("indirect block points at itself", [(i, struct.pack("<I", ind[0]))]))
        out.append(Variant("indirect block points outside", [(i + 8, struct.pack("<I", far))]))
        out.append(Variant("indirect block full of 0xff", [(i, b"\xff" * bs)]))
        d = dind[0] * bs
        out.append(Variant("double indirect points at itself", [(d, struct.pack("<I", dind[0]))]))
        out.append(Variant("double indirect points at the inode table",
                           [(d, struct.pack("<I", base.map.inode_tables[0][0]))]))
    return out


def kind_directories(base, rnd):
    """Records of directory blocks: raw (on the checksummed image: the checksum catches it)."""
    d = max((p for p in base.dirs if p != "big" and not p.startswith("deep")),
            key=lambda p: (len(base.expected[p][1]), p))
    ents = base.dir_entries(d)
    named = [e for e in ents if e[1] and e[4] not in (b".", b"..")]
    first, second = named[0], named[1] if len(named) > 1 else named[0]
    off = first[0]
    parent_ino = base.map.inode[d]
    out = []
    raw = lambda what, patches: out.append(Variant(f"/{d}: {what}", patches))  # noqa: E731
    raw("entry's inode 0 (a deleted entry)", [(off, struct.pack("<I", 0))])
    raw("entry's inode past the last inode", [(off, struct.pack("<I", base.inodes_count + 1))])
    raw("entry's inode 0xffffffff", [(off, struct.pack("<I", 0xFFFFFFFF))])
    raw("entry's inode 1 (the bad blocks inode)", [(off, struct.pack("<I", 1))])
    raw("entry's inode 7 (the resize inode)", [(off, struct.pack("<I", 7))])
    raw("entry pointing at the root (a loop)", [(off, struct.pack("<I", 2)), (off + 7, b"\x02")])
    raw("entry pointing at its own directory", [(off, struct.pack("<I", parent_ino)),
                                                 (off + 7, b"\x02")])
    raw("entry pointing at an unused inode", [(off, struct.pack("<I", base.inodes_count - 3))])
    raw("rec_len 0", [(off + 4, b"\0\0")])
    raw("rec_len 4", [(off + 4, struct.pack("<H", 4))])
    raw("rec_len past the block", [(off + 4, struct.pack("<H", base.bs))])
    raw("rec_len not a multiple of 4", [(off + 4, struct.pack("<H", first[2] + 1))])
    raw("name_len 0", [(off + 6, b"\0")])
    raw("name_len beyond rec_len", [(off + 6, b"\xff")])
    raw("file type symlink for a file", [(off + 7, b"\x07")])
    raw("file type 0x55", [(off + 7, b"\x55")])
    raw("a '/' in a name", [(off + 9, b"/")])
    raw("a NUL in a name", [(off + 9, b"\0")])
    raw("two entries with the same name", [(second[0] + 6, bytes([first[3]])),
                                           (second[0] + 8, first[4])])
    dot = [e for e in ents if e[4] == b".."][0]
    raw("'..' pointing at inode 0", [(dot[0], b"\0\0\0\0")])
    raw("'..' pointing at a file", [(dot[0], struct.pack("<I", base.map.inode[base.files[0]]))])
    raw("whole block of 0xff", [(ents[0][0], b"\xff" * base.bs)])
    # An entry of /big's second block made a second name for /acl-dir: /acl-dir itself is
    # untouched and must still read whole, whichever of its two names a walk meets first.
    alias = [e for e in base.dir_entries("big")
             if e[1] and e[0] // base.bs == base.blocks_of("big")[1]][0]
    out.append(Variant("/big: an entry of block 1 pointing at /acl-dir (a second name for a "
                       "directory)", [(alias[0], struct.pack("<I", base.map.inode["acl-dir"])),
                                      (alias[0] + 7, b"\x02")]))
    rootents = base.dir_entries("")
    r = [e for e in rootents if e[4] not in (b".", b"..") and e[1]][0]
    raw("root: first entry's rec_len 0", [(r[0] + 4, b"\0\0")])
    return out


def kind_htree(base, rnd):
    """The htree root of /big (block 0: '.', '..', then dx_root_info and the index)."""
    blk = base.blocks_of("big")[0] * base.bs
    info = blk + 24  # after '.' (12 bytes) and '..' (header + "..\0\0")
    nblocks = len(base.blocks_of("big"))
    raw = [("indirect levels 7", [(info + 6, b"\x07")]),
           ("hash version 9", [(info + 4, b"\x09")]),
           ("count beyond limit", [(info + 8 + 2, struct.pack("<H", 0x7FFF))]),
           ("limit 0", [(info + 8, b"\0\0")]),
           ("first index block past the directory", [(info + 8 + 4, struct.pack("<I", nblocks + 50))]),
           ("first index block is the root itself", [(info + 8 + 4, b"\0\0\0\0")]),
           ("a hash entry pointing far outside", [(info + 8 + 8 + 4, struct.pack("<I", 0xFFFFFFF0))]),
           ("info length 0", [(info + 5, b"\0")])]
    return [Variant(f"htree of /big: {what}", p) for what, p in raw]


def kind_xattrs(base, rnd):
    out = []
    bs = base.bs
    blk = base.map.acl_block["plain"]
    if blk:
        x = blk * bs
        raw = [("magic 0", [(x, b"\0\0\0\0")]),
               ("h_blocks 2", [(x + 8, struct.pack("<I", 2))]),
               ("refcount 0", [(x + 4, b"\0\0\0\0")]),
               ("value offset past the block", [(x + 32 + 2, struct.pack("<H", bs + 100))]),
               ("value size 0xffffffff", [(x + 32 + 8, b"\xff\xff\xff\xff")]),
               ("value in an inode (ea_inode 12)", [(x + 32 + 4, struct.pack("<I", 12))]),
               ("name length 255", [(x + 32, b"\xff")]),
               ("name index 99", [(x + 32 + 1, b"\x63")]),
               ("entries never end", [(x + 32, b"\x04\x01" + b"\xff" * 14) ])]
        out += [Variant(f"xattr block of /plain: {what}", p) for what, p in raw]
    # the in-inode area of /noted: header magic after i_extra_isize, then the entries
    i = base.inode_off("noted")
    extra = base.u16(i + 128)
    a = i + 128 + extra
    raw = [("in-inode magic 0", [(a, b"\0\0\0\0")]),
           ("in-inode value offset past the inode", [(a + 4 + 2, struct.pack("<H", 900))]),
           ("in-inode value size huge", [(a + 4 + 8, b"\xff\xff\x00\x00")]),
           ("in-inode name length 200", [(a + 4, b"\xc8")])]
    out += [Variant(f"in-inode xattrs of /noted: {what}", p) for what, p in raw]
    return out


GENERATORS = {"flipped": kind_flipped, "zeroed": kind_zeroed, "truncated": kind_truncated,
              "superblock": kind_superblock, "descriptors": kind_descriptors,
              "inodes": kind_inodes, "blockmap": kind_blockmap,
              "directories": kind_directories, "htree": kind_htree, "xattrs": kind_xattrs}


# How many variants of each kind run in the normal suite (spread evenly over what the generator
# makes); VIEWOS_LONG=1 runs them all. The checksummed image meets raw damage to directory,
# htree and xattr blocks with its checksums, so a few of those suffice there.
CAPS = {
    "ext2": dict(flipped=10, zeroed=8, truncated=5, superblock=12, descriptors=6, inodes=14,
                 blockmap=12, directories=12, htree=4, xattrs=6),
    "ext4": dict(flipped=12, zeroed=8, truncated=4, superblock=12, descriptors=6, inodes=14,
                 blockmap=12, directories=3, htree=2, xattrs=3),
    "ext4-nocsum": dict(flipped=6, zeroed=4, truncated=2, superblock=4, descriptors=4, inodes=8,
                        blockmap=19, directories=12, htree=4, xattrs=6),
}


def variants(base, kind):
    out = GENERATORS[kind](base, random.Random(f"{base.name}-{kind}"))
    cap = CAPS[base.name][kind]
    if not LONG and cap < len(out):
        out = [out[i * len(out) // cap] for i in range(cap)]
    for i, v in enumerate(out):
        v.rw = i % 4 == 0
    return out


# --------------------------------------------------------------------------- running one

def apply(base, v, img):
    """Make the damaged copy; returns the changed byte ranges [(offset, bytes)]."""
    sparse_copy(base.path, img)
    if v.raw:
        patch_file(img, v.raw)
    if v.debugfs:
        r = subprocess.run(["debugfs", "-w", "-f", "-", str(img)], capture_output=True,
                           text=True, input="\n".join(v.debugfs) + "\n")
        assert r.returncode == 0 and "debugfs: " in r.stdout, r.stdout + r.stderr
        bad = [line for line in r.stderr.splitlines()
               if line.strip() and not line.startswith("debugfs ")]
        assert not bad, f"{v.name}: {r.stderr}"
    data = img.read_bytes()
    if v.truncate is not None:
        with open(img, "r+b") as f:
            f.truncate(v.truncate)
        return [(v.truncate, b"\0" * (len(data) - v.truncate))]
    changed = []
    a, b, bs = memoryview(base.data), memoryview(data), 1024
    for off in range(0, len(a), bs):
        if a[off:off + bs] != b[off:off + bs]:
            changed.append((off, bytes(b[off:off + bs])))
    return changed


def must_mount(base, v, changed):
    """An image whose superblock, descriptors and root are untouched must be served."""
    return v.truncate is None or v.truncate >= base.size


def check_walk(base, v, w, changed, problems):
    for path, op, err in w.errors:
        kind = op.split()[0]
        if err not in ALLOWED.get(kind, set()):
            problems.append(f"{op} /{path}: {errno.errorcode.get(err, err)}")
    for path, want in base.expected.items():
        if base.map.touched(path, changed):
            continue
        got = w.entries.get(path)
        if got != want:
            shown = got if not got or got[0] != "file" else ("file", f"{len(got[1])} bytes")
            problems.append(f"/{path} untouched by the damage but reads as {shown!r:.200}")


def write_session(mnt, base, report):
    """A few changes of every kind; errors from ALLOWED_WRITE are recorded, not raised.
    Returns the data of the new file when its write and fsync succeeded."""
    def attempt(what, fn):
        try:
            return fn()
        except OSError as e:
            if e.errno not in ALLOWED_WRITE:
                report.append(f"{what}: {errno.errorcode.get(e.errno, e.errno)}")
            return None
    data = random.Random(base.name).randbytes(100_000)

    def create():
        with open(mnt / "rw-new", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return data
    synced = attempt("create+fsync", create)
    attempt("mkdir", lambda: (mnt / "rw-dir").mkdir())
    attempt("write in the new directory", lambda: (mnt / "rw-dir" / "f").write_bytes(b"f" * 5000))
    renamed = attempt("rename", lambda: os.rename(mnt / "rw-new", mnt / "rw-dir" / "moved") or True)
    attempt("unlink", lambda: os.unlink(mnt / base.files[0]))
    attempt("truncate", lambda: os.truncate(mnt / base.files[1], 1000))
    attempt("append", lambda: open(mnt / "deep/level0/level1/level2/level3/level4/level5/level6/"
                                   "level7/level8/bottom", "ab").write(b"more\n"))
    attempt("setxattr", lambda: os.setxattr(mnt / "acl-dir", "user.session", b"x" * 300))
    attempt("symlink", lambda: os.symlink("target", mnt / "big" / "new-link"))
    attempt("rmdir", lambda: os.rmdir(mnt / "acl-dir"))
    if synced is not None:
        where = mnt / "rw-dir" / "moved" if renamed else mnt / "rw-new"
        try:
            back = where.read_bytes()
        except OSError as e:
            back = f"an error ({errno.errorcode.get(e.errno)})"
        if back != data:
            report.append("the file written and fsync'ed does not read back")


def rw_check(base, v, img, mnt, pool, problems):
    status, before = e2fsck(img)
    size = os.path.getsize(img)
    with open(img, "rb") as f:
        tail = os.pread(f.fileno(), SENTINEL, base.size) if size > base.size else b""
    d = pool.new(DAEMON, [img, mnt], mnt)
    if not d.start():
        if d.proc.returncode != 2 or not one_line_refusal(d.output(), DAEMON, img):
            problems.append(f"rw: exit {d.proc.returncode} without a one-line refusal: "
                            f"{d.output()[-500:]!r}")
        return
    report = []
    try:
        bounded(lambda: write_session(mnt, base, report), WALK_TIMEOUT, d.kill, "write session")
    except Hang as e:
        problems.append(f"rw: {e}")
    problems += [f"rw: {r}" for r in report]
    try:
        st = d.stop()
        if st != 0:
            problems.append(f"rw: exited {st} at unmount: {d.output()[-800:]}")
    except Hang as e:
        problems.append(f"rw: {e}")
    if d.sanitizer_report():
        problems.append("rw: sanitizer: " + d.sanitizer_report()[-3000:])
    if os.path.getsize(img) != size:
        problems.append(f"rw: the image's size changed ({size} -> {os.path.getsize(img)})")
    elif tail:
        with open(img, "rb") as f:
            if os.pread(f.fileno(), SENTINEL, base.size) != tail:
                problems.append("rw: the bytes after the file system were written")
    status2, after = e2fsck(img)
    new = [ln for ln in e2fsck_worse(before, after) if not any(n in ln for n in v.rw_noise)]
    if new:
        problems.append(f"rw: e2fsck -fn finds what the damage alone did not: {new[:6]}")


def run_variant(base, v, workdir, pool):
    d = Path(workdir)
    d.mkdir()
    img, mnt = d / "img", d / "mnt"
    mnt.mkdir()
    changed = apply(base, v, img)
    before = file_sha(img)
    problems = []
    daemon = pool.new(DAEMON, ["-o", "ro", img, mnt], mnt)
    try:
        mounted = daemon.start()
    except Hang as e:
        return "hang", [str(e)]
    if not mounted:
        if daemon.proc.returncode != 2 or not one_line_refusal(daemon.output(), DAEMON, img):
            problems.append(f"exit {daemon.proc.returncode} without a one-line refusal: "
                            f"{daemon.output()[-800:]!r}")
        if in_mountinfo(mnt):
            problems.append("refused but left mounted")
        if not any(base.map.touched("", [c]) for c in changed) and must_mount(base, v, changed):
            problems.append(f"refused an image whose superblock, descriptors and root are "
                            f"intact: {daemon.output().strip()!r}")
        outcome = "refused"
    else:
        try:
            w = bounded(lambda: walk_tree(mnt), WALK_TIMEOUT, daemon.kill, "walk")
            check_walk(base, v, w, changed, problems)
            outcome = "EIO" if w.errors else "served"
        except Hang as e:
            problems.append(str(e))
            outcome = "hang"
        try:
            status = daemon.stop()
            if status != 0:
                problems.append(f"exited {status} at unmount: {daemon.output()[-800:]}")
        except Hang as e:
            problems.append(str(e))
    if daemon.sanitizer_report():
        problems.append("sanitizer: " + daemon.sanitizer_report()[-3000:])
    if file_sha(img) != before:
        problems.append("a read-only mount changed the image")
    bitmap_damage = not base.csum and any(c[0] // base.bs in base.map.block_bitmaps
                                          for c in changed)
    if v.rw and not problems and not bitmap_damage:
        rw_check(base, v, img, mnt, pool, problems)
        outcome += "+rw"
    shutil.rmtree(d, ignore_errors=True)
    return outcome, problems


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("base_name", list(BASES))
def test_corrupted_ext2_images_give_eio_refusal_or_correct_data(bases, base_name, kind,
                                                                 tmp_path):
    base = bases(base_name)
    vs = variants(base, kind)
    assert vs, f"no {kind} variants for {base_name}"
    pool = DaemonPool(tmp_path)
    try:
        with ThreadPoolExecutor(WORKERS) as ex:
            results = list(ex.map(lambda iv: run_variant(base, iv[1], tmp_path / f"v{iv[0]}", pool),
                                  enumerate(vs)))
    finally:
        pool.cleanup()
    failures = [f"{v.name}: {p}" for v, (_, probs) in zip(vs, results) for p in probs]
    outcomes = {}
    for _, (o, _) in zip(vs, results):
        outcomes[o] = outcomes.get(o, 0) + 1
    print(f"{base_name}/{kind}: {len(vs)} variants: {outcomes}")
    assert not failures, "\n".join(failures[:40])
