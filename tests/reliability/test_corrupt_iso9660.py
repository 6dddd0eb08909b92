"""Corrupted ISO 9660 images through the real umfuse-iso9660: over 200 deterministic variants of
three images that xorriso made from a real tree: one with Rock Ridge (long names and symlinks in
continuation areas, a directory tree deep enough to be relocated with CL/PL/RE, devices, a FIFO),
Joliet and zisofs-compressed files; one with Joliet and plain names only; one of two sessions.
Every variant damages one structure: flipped bytes and zeroed sectors anywhere in the metadata,
truncated images, directory records (lengths, names, extents pointing outside the image, at
their own directory, at an ancestor, at the descriptors, flags), SUSP entries (lengths,
continuation areas outside the image, crossing a sector, pointing back at themselves), Rock
Ridge entries (NM, PX, SL, TF, PN), relocation (CL outside, up the tree, at a file, PL that does
not lead back, RE removed), zisofs headers and block pointer tables, volume descriptors and the
session chain.

Each variant is mounted and walked (list, stat, read, readlink) with a time bound.
umfuse-iso9660 must either refuse it (exit 2, one line `umfuse-iso9660: ...` naming the image,
nothing left mounted) — and not refuse an image whose volume descriptors and root directory
are intact — or serve it so that
  * every path whose bytes the damage did not reach (its directory record, continuation areas
    and extent, and those of its ancestors, as an independent reading of the pristine image
    finds them; the volume descriptors) reads back exactly as on the pristine image (which
    itself equals the source tree, for the Rock Ridge image);
  * everything else answers with data or EIO (a lookup may also meet ENOENT for a name the
    damage changed, and ELOOP for a directory that appears twice);
  * the daemon never crashes, hangs or reports to a sanitizer, and exits 0 at unmount;
  * the image is bit for bit unchanged.
For the session chain, where damage decides which session is shown, a walk without errors
must show one of the two sessions exactly.

Variants run four at a time, one daemon each; a walk that outlives its bound kills the daemon
and fails the variant as a hang."""
import errno
import os
import random
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import make_tree
from relb_util import (LONG, SECTOR, DaemonPool, Hang, IsoMap, bounded,
                       describe_source, file_sha, in_mountinfo, iso_records, one_line_refusal,
                       patch_file, walk_tree)

DAEMON = "umfuse-iso9660"
WORKERS = 4
WALK_TIMEOUT = 60
ALLOWED = {
    "lstat": {errno.EIO, errno.ENOENT, errno.ELOOP},
    "listdir": {errno.EIO},
    "read": {errno.EIO},
    "readlink": {errno.EIO},
    "listxattr": {errno.EIO, errno.EOPNOTSUPP},
    "getxattr": {errno.EIO, errno.ENODATA},
}


# --------------------------------------------------------------------------- base images

def rock_source(root):
    make_tree(root, nfiles=20, seed=9)
    deep = root / "deep"
    p = deep
    for i in range(10):
        p = p / f"level{i}"
    p.mkdir(parents=True)
    (p / "bottom").write_text("at the bottom\n")
    z = root / "zdir"
    z.mkdir()
    (z / "text").write_bytes(b"compressible text, line after line\n" * 12000)  # 13 blocks
    (z / "small").write_bytes(b"small compressible " * 300)
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(root / "fifo")
    return root


def xorriso(*args):
    subprocess.run(["xorriso", "-abort_on", "FAILURE", *[str(a) for a in args]], check=True,
                   capture_output=True)


class Base:
    """A pristine image, its bytes, its map and what a mount of it shows."""

    def __init__(self, workdir, name, pool):
        self.name = name
        self.path = workdir / f"{name}.iso"
        self.second = None
        if name == "rock":
            src = rock_source(workdir / "src-rock")
            xorriso("-outdev", self.path, "-joliet", "on", "-compliance", "deep_paths_off",
                    "-rr_reloc_dir", "rr_moved", "-map", src, "/", "-set_filter_r", "--zisofs",
                    "/zdir", "--", "-commit")
        elif name == "joliet":
            src = make_tree(workdir / "src-joliet", nfiles=30, seed=10, symlinks=False,
                            hardlinks=False)
            subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "--norock", "-J", "-joliet-long",
                            "-o", str(self.path), str(src)], check=True, capture_output=True)
        else:  # two sessions: the second adds, removes and replaces
            src = make_tree(workdir / "src-s1", nfiles=12, seed=11, symlinks=True,
                            hardlinks=False)
            xorriso("-outdev", self.path, "-map", src, "/", "-commit")
            extra = workdir / "extra"
            extra.mkdir()
            (extra / "added").write_text("added in session two\n")
            xorriso("-dev", self.path, "-map", extra / "added", "/added",
                    "-rm", "/MiXeD", "--", "-map", extra / "added", "/mixed-2", "-commit")
        self.data = self.path.read_bytes()
        self.map = IsoMap(self.data, joliet=name == "joliet")
        self.expected = self.pristine(workdir, pool)
        if name == "rock":
            assert self.expected == describe_source(src)
        if name == "sessions":
            self.first = self.pristine(workdir, pool, "session=0")  # counted from 0
            assert self.first != self.expected
        mapped = set(self.map.records)
        assert mapped == set(self.expected), mapped ^ set(self.expected)

    def pristine(self, workdir, pool, *opts):
        mnt = workdir / f"pristine-{self.name}-{len(opts)}"
        mnt.mkdir()
        args = ["-o", ",".join(opts)] if opts else []
        d = pool.new(DAEMON, [*args, self.path, mnt], mnt)
        assert d.start(), d.output()
        try:
            w = walk_tree(mnt, xattrs=False)
        finally:
            assert d.stop() == 0, d.output()
        assert not w.errors, w.errors
        return w.entries

    def rec(self, path):
        return self.map.records[path]

    def records_with(self, sig):
        return sorted((p for p, r in self.map.records.items() if r.sig(sig)), key=str)

    def files(self):
        return sorted(p for p, e in self.expected.items() if e[0] == "file" and
                      self.rec(p).size)

    def dirs(self):
        return sorted(p for p, e in self.expected.items() if e[0] == "dir" and p)


_bases = {}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    def get(name):
        if name not in _bases:
            work = tmp_path_factory.mktemp(f"iso-{name}")
            pool = DaemonPool(work)
            try:
                _bases[name] = Base(work, name, pool)
            finally:
                pool.cleanup()
        return _bases[name]
    yield get
    _bases.clear()


# --------------------------------------------------------------------------- variants

class Variant:
    def __init__(self, name, raw=(), truncate=None):
        self.name, self.raw, self.truncate = name, list(raw), truncate


def le32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def both32(v):
    return struct.pack("<I", v & 0xFFFFFFFF) + struct.pack(">I", v & 0xFFFFFFFF)


def flip(base, rnd, off, length, count):
    out = []
    for _ in range(count):
        at = off + rnd.randrange(length)
        out.append((at, bytes([base.data[at] ^ rnd.randrange(1, 256)])))
    return out


def metadata_regions(base):
    """(name, offset, length) of what the reader parses."""
    m = base.map
    out = [(f"volume descriptor at sector {s}", s * SECTOR, SECTOR) for s in m.vd]
    pvd = 16 * SECTOR
    lpt = struct.unpack_from("<I", base.data, pvd + 140)[0]
    out.append(("the L path table", lpt * SECTOR, SECTOR))
    out.append(("the root directory", m.root.extent * SECTOR, min(m.root.size, SECTOR)))
    for p in base.dirs()[:6]:
        r = m.dir_extent[p]
        out.append((f"the directory /{p}", r * SECTOR, SECTOR))
    for p in [p for p, r in m.records.items() if r.ce_areas][:3]:
        off, n = m.records[p].ce_areas[0]
        out.append((f"the continuation area of /{p}", off, n))
    for p in base.records_with("ZF")[:2]:
        r = m.records[p]
        out.append((f"the zisofs header and table of /{p}", r.extent * SECTOR,
                    min(r.size, SECTOR)))
    return out


def kind_flipped(base, rnd):
    regs = metadata_regions(base)
    out = []
    for i in range(max(len(regs), 24)):
        name, off, n = regs[i % len(regs)]
        count = rnd.choice([1, 2, 4, 8, 16])
        out.append(Variant(f"{count} byte(s) flipped in {name}", flip(base, rnd, off, n, count)))
    return out


def kind_zeroed(base, rnd):
    regs = metadata_regions(base)
    seen, out = set(), []
    for name, off, n in regs:
        sector = off // SECTOR * SECTOR
        if sector not in seen:
            seen.add(sector)
            out.append(Variant(f"zeroed the sector of {name}", [(sector, bytes(SECTOR))]))
    f = base.files()[0]
    out.append(Variant(f"zeroed the first data sector of /{f}",
                       [(base.rec(f).extent * SECTOR, bytes(SECTOR))]))
    out.append(Variant("zeroed the system area", [(0, bytes(16 * SECTOR))]))
    return out


def kind_truncated(base, rnd):
    size = len(base.data)
    root = base.map.root.extent * SECTOR
    f = base.files()[-1]
    cuts = [("to nothing", 0), ("inside the system area", 8 * SECTOR),
            ("before the primary descriptor", 16 * SECTOR),
            ("after the primary descriptor", 17 * SECTOR), ("inside the root directory", root + 100),
            ("in the middle", size // 2), ("inside the last file", base.rec(f).extent * SECTOR + 1),
            ("one sector short", size - SECTOR), ("one byte short", size - 1)]
    return [Variant(f"truncated {what}", truncate=at) for what, at in cuts]


def kind_records(base, rnd):
    m = base.map
    d = max(base.dirs(), key=lambda p: (len(base.expected[p][1]), p))
    recs = [r for r in iso_records(base.data, m.dir_extent[d], SECTOR, m.skip)[2:]]
    r, r2 = recs[0], recs[-1]
    sub = [p for p in base.dirs() if p.startswith(d + "/")] or [p for p in base.dirs() if p != d]
    s = base.rec(sub[0])
    f = base.rec(base.files()[0])
    sector_end = (r2.offset // SECTOR + 1) * SECTOR
    root_ext = m.root.extent
    out = []
    add = lambda what, patches: out.append(Variant(what, patches))  # noqa: E731
    add(f"/{d}: a record of length 0 (the rest of its sector is lost)", [(r.offset, b"\0")])
    add(f"/{d}: a record of length 1", [(r.offset, b"\x01")])
    add(f"/{d}: a record of length 33", [(r.offset, b"\x21")])
    add(f"/{d}: the last record overruns its sector",
        [(r2.offset, bytes([min(255, sector_end - r2.offset + 4)]))])
    add(f"/{d}: a record of length 255", [(r.offset, b"\xff")])
    add(f"/{d}: name length 0", [(r.offset + 32, b"\0")])
    add(f"/{d}: name length beyond the record", [(r.offset + 32, b"\xf0")])
    add(f"/{d}: extent beyond the image", [(r.offset + 2, both32(len(base.data) // SECTOR + 9))])
    add(f"/{d}: extent 0", [(r.offset + 2, both32(0))])
    add(f"/{d}: extent 0xffffffff", [(r.offset + 2, both32(0xFFFFFFFF))])
    add(f"/{d}: extent + XAR length overflows", [(r.offset + 2, both32(0xFFFFFFF0)),
                                                 (r.offset + 1, b"\x20")])
    add(f"/{d}: XAR length 200", [(r.offset + 1, b"\xc8")])
    add(f"/{d}: size 0x7fffffff", [(r.offset + 10, both32(0x7FFFFFFF))])
    add(f"/{d}: size reaching past the image", [(r.offset + 10, both32(len(base.data)))])
    add(f"/{d}: a file flagged as a directory", [(r.offset + 25, bytes([r.flags | 2]))])
    add(f"/{sub[0]}: a directory flagged as a file", [(s.offset + 25, bytes([s.flags & ~2]))])
    add(f"/{sub[0]}: a directory pointing at its own parent (a loop)",
        [(s.offset + 2, both32(m.dir_extent[sub[0].rsplit('/', 1)[0]] if '/' in sub[0] else root_ext))])
    add(f"/{sub[0]}: a directory pointing at the root (a loop)", [(s.offset + 2, both32(root_ext))])
    add(f"/{sub[0]}: a directory pointing at the descriptors", [(s.offset + 2, both32(16))])
    add(f"/{sub[0]}: a directory pointing at a file's data", [(s.offset + 2, both32(f.extent))])
    add(f"/{sub[0]}: a directory of size 0", [(s.offset + 10, both32(0))])
    add(f"/{sub[0]}: a directory of 64 MiB + 1", [(s.offset + 10, both32((64 << 20) + 1))])
    add(f"/{d}: multi-extent flag on the last record", [(r2.offset + 25, bytes([r2.flags | 0x80]))])
    add(f"/{d}: associated-file flag", [(r.offset + 25, bytes([r.flags | 4]))])
    add(f"/{d}: interleaved (unit size 4, gap 2)", [(r.offset + 26, b"\x04\x02")])
    add(f"/{d}: a date of 0xff bytes", [(r.offset + 18, b"\xff" * 7)])
    add(f"/{d}: two records with the same extent and name",
        [(r2.offset + 2, base.data[r.offset + 2:r.offset + 18])])
    return out


def kind_susp(base, rnd):
    m = base.map
    out = []
    add = lambda what, patches: out.append(Variant(what, patches))  # noqa: E731
    ce_path = next(p for p, r in m.records.items() if p and r.sig("CE"))
    r = m.records[ce_path]
    (ce, _), = r.sig("CE")
    area_off, area_len = r.ce_areas[0]
    f = next(p for p in base.files() if m.records[p].sig("PX") and m.records[p].sig("NM"))
    fr = m.records[f]
    (px, pxlen), = fr.sig("PX")
    (nm, nmlen), = fr.sig("NM")[:1]
    (tf, tflen), = fr.sig("TF")[:1]
    sector = r.offset // SECTOR
    add(f"/{f}: an entry of length 0", [(px + 2, b"\0")])
    add(f"/{f}: an entry of length 3", [(px + 2, b"\x03")])
    add(f"/{f}: an entry overrunning the record", [(px + 2, b"\xff")])
    add(f"/{f}: PX of length 20", [(px + 2, b"\x14")])
    add(f"/{f}: PX says directory", [(px + 4, le32(0o40755))])
    add(f"/{f}: PX says socket", [(px + 4, le32(0o140755))])
    add(f"/{f}: PX says nothing known", [(px + 4, le32(0o170755))])
    add(f"/{f}: NM with a '/'", [(nm + 6, b"/")])
    add(f"/{f}: NM with a NUL", [(nm + 6, b"\0")])
    add(f"/{f}: NM says '.'", [(nm + 4, b"\x02")])
    add(f"/{f}: NM continues forever", [(nm + 4, b"\x01")])
    add(f"/{f}: TF flags all set, entry short", [(tf + 4, b"\xff")])
    add(f"/{f}: TF of length 4", [(tf + 2, b"\x04")])
    add(f"/{ce_path}: CE outside the image", [(ce + 4, both32(len(base.data) // SECTOR + 5))])
    add(f"/{ce_path}: CE offset 4000", [(ce + 12, both32(4000))])
    add(f"/{ce_path}: CE length crossing the sector", [(ce + 20, both32(SECTOR))])
    add(f"/{ce_path}: CE of length 0xffffffff", [(ce + 20, both32(0xFFFFFFFF))])
    add(f"/{ce_path}: CE of the wrong length", [(ce + 2, b"\x10")])
    add(f"/{ce_path}: CE pointing back at its own record (a loop)",
        [(ce + 4, both32(sector)), (ce + 12, both32(r.su_offset - sector * SECTOR)),
         (ce + 20, both32(r.offset + r.length - r.su_offset))])
    add(f"/{ce_path}: the continuation area ends with a CE to itself",
        [(area_off + area_len - 28, b"CE\x1c\x01" + both32(area_off // SECTOR) +
          both32(area_off % SECTOR) + both32(area_len))])
    add(f"/{ce_path}: continuation area of 0xff bytes", [(area_off, b"\xff" * area_len)])
    root0 = iso_records(base.data, m.root.extent, SECTOR)[0]
    (sp, _), = root0.sig("SP")
    add("root: SP check bytes wrong (no Rock Ridge)", [(sp + 4, b"\0\0")])
    add("root: SP skip of 200", [(sp + 6, b"\xc8")])
    add("root: SP of length 255", [(sp + 2, b"\xff")])
    links = [p for p in base.expected if base.expected[p][0] == "link"]
    lr = m.records[links[0]]
    (sl, sllen), = lr.sig("SL")[:1]
    add(f"/{links[0]}: SL component overrunning the entry", [(sl + 6, b"\xff")])
    add(f"/{links[0]}: SL of length 5", [(sl + 2, b"\x05")])
    add(f"/{links[0]}: SL flags ROOT|CONTINUE garbage", [(sl + 5, b"\x09")])
    dev = [p for p in base.expected if base.expected[p][0] == "other" and m.records[p].sig("PN")]
    if dev:
        (pn, _), = m.records[dev[0]].sig("PN")
        add(f"/{dev[0]}: PN of length 12", [(pn + 2, b"\x0c")])
    return out


def kind_relocation(base, rnd):
    m = base.map
    cl_path = base.records_with("CL")[0]
    r = m.records[cl_path]
    (cl, _), = r.sig("CL")
    target = m.dir_extent[cl_path]
    dotdot = iso_records(base.data, target, SECTOR, m.skip)[1]
    (pl, _), = dotdot.sig("PL")
    parent = cl_path.rsplit("/", 1)[0]
    f = base.rec(base.files()[0])
    moved = [x for x in iso_records(base.data, m.root.extent, m.root.size, m.skip)[2:]
             if x.sig("RE")][0]
    inside = [x for x in iso_records(base.data, moved.extent, moved.size, m.skip)[2:]
              if x.sig("RE")][0]
    (re_, _), = inside.sig("RE")
    out = [Variant(f"/{cl_path}: CL outside the image", [(cl + 4, both32(len(base.data) // SECTOR + 3))]),
           Variant(f"/{cl_path}: CL at the root (a loop)", [(cl + 4, both32(m.root.extent))]),
           Variant(f"/{cl_path}: CL at its own parent (a loop)", [(cl + 4, both32(m.dir_extent[parent]))]),
           Variant(f"/{cl_path}: CL at a file's data", [(cl + 4, both32(f.extent))]),
           Variant(f"/{cl_path}: CL at another directory (no PL back)",
                   [(cl + 4, both32(m.dir_extent[base.dirs()[0]]))]),
           Variant(f"/{cl_path}: CL of the wrong length", [(cl + 2, b"\x08")]),
           Variant(f"/{cl_path}: PL leads elsewhere", [(pl + 4, both32(m.root.extent))]),
           Variant(f"/{cl_path}: PL removed (renamed)", [(pl, b"XX")]),
           Variant(f"/{cl_path}: RE removed from the relocated directory (shown twice)", [(re_, b"XX")]),
           Variant("rr_moved: RE removed (the relocation directory shown)",
                   [(moved.sig('RE')[0][0], b"XX")])]
    return out


def kind_zisofs(base, rnd):
    m = base.map
    out = []
    for p in base.records_with("ZF"):
        r = m.records[p]
        (zf, _), = r.sig("ZF")
        data = r.extent * SECTOR
        nblocks = -(-struct.unpack_from("<I", base.data, zf + 8)[0] // 32768)
        table = data + 16
        first = struct.unpack_from("<I", base.data, table)[0]
        add = lambda what, patches: out.append(Variant(f"/{p}: {what}", patches))  # noqa: E731
        add("header magic wrong", [(data, b"\0" * 8)])
        add("header size field wrong", [(data + 12, b"\x09")])
        add("block size 2^20 in the header", [(data + 13, b"\x14")])
        add("ZF algorithm 'xz'", [(zf + 4, b"xz")])
        add("ZF block size 2^12", [(zf + 7, b"\x0c")])
        add("ZF header size 0", [(zf + 6, b"\0")])
        add("ZF size 4 GiB - 1", [(zf + 8, both32(0xFFFFFFFF))])
        add("ZF entry of length 12", [(zf + 2, b"\x0c")])
        add("first block pointer 0", [(table, le32(0))])
        add("block pointer beyond the data", [(table + 4, le32(r.size + 100))])
        if nblocks > 1:
            add("block pointers going back", [(table + 8, le32(first))])
            add("a block of 1 MiB", [(table + 8, le32(first + (1 << 20)))])
        add("compressed bytes garbage", [(data + first, b"\xff" * 16)])
        add("two equal pointers (a block of zeros)",
            [(table + 4, base.data[table:table + 4])])
    return out


def kind_descriptors(base, rnd):
    pvd = 16 * SECTOR
    size = len(base.data) // SECTOR
    term = max(s for s in base.map.vd if base.data[s * SECTOR] == 255)
    svd = [s for s in base.map.vd if base.data[s * SECTOR] == 2]
    out = [Variant("PVD type 3", [(pvd, b"\x03")]),
           Variant("PVD 'CD002'", [(pvd + 1, b"CD002")]),
           Variant("PVD version 2", [(pvd + 6, b"\x02")]),
           Variant("PVD block size 1024", [(pvd + 128, b"\x00\x04\x04\x00")]),
           Variant("PVD block size 0", [(pvd + 128, b"\0\0\0\0")]),
           Variant("PVD volume space 0", [(pvd + 80, both32(0))]),
           Variant("PVD volume space 2^32-1", [(pvd + 80, both32(0xFFFFFFFF))]),
           Variant("PVD root record of length 0", [(pvd + 156, b"\0")]),
           Variant("PVD root record not a directory", [(pvd + 156 + 25, b"\0")]),
           Variant("PVD root extent beyond the image", [(pvd + 156 + 2, both32(size + 10))]),
           Variant("PVD root extent at the PVD", [(pvd + 156 + 2, both32(16))]),
           Variant("PVD root size 0", [(pvd + 156 + 10, both32(0))]),
           Variant("PVD root size 4 GiB - 1", [(pvd + 156 + 10, both32(0xFFFFFFFF))]),
           Variant("PVD path table pointers garbage (unused by readers of records)",
                   [(pvd + 140, b"\xff" * 16)]),
           Variant("terminator made a supplementary descriptor", [(term * SECTOR, b"\x02")]),
           Variant("terminator gone (zeros)", [(term * SECTOR, bytes(SECTOR))]),
           Variant("64 primary descriptors in a row",
                   [(s * SECTOR, base.data[pvd:pvd + SECTOR]) for s in range(17, 17 + 64)
                    if s * SECTOR < len(base.data)]),
           Variant("a High Sierra signature", [(pvd, b"\0" * 16 + b"\x01CDROM")])]
    for s in svd[:1]:
        out += [Variant("Joliet escape sequence garbage", [(s * SECTOR + 88, b"%/Z")]),
                Variant("Joliet root extent beyond the image",
                        [(s * SECTOR + 156 + 2, both32(size + 10))]),
                Variant("Joliet block size 512", [(s * SECTOR + 128, b"\x00\x02\x02\x00")])]
    return out


def kind_sessions(base, rnd):
    """The session chain (base "sessions"): xorriso keeps the newest descriptors at block 16
    and each session's own 16 blocks after its start (32, then the next 32-block boundary)."""
    out = []
    vds = base.map.vd
    for s in vds:
        what = f"the descriptor at sector {s}"
        out += [Variant(f"{what}: zeroed", [(s * SECTOR, bytes(SECTOR))]),
                Variant(f"{what}: type 0", [(s * SECTOR, b"\x00")]),
                Variant(f"{what}: volume space 0", [(s * SECTOR + 80, both32(0))]),
                Variant(f"{what}: volume space 2^31", [(s * SECTOR + 80, both32(1 << 31))]),
                Variant(f"{what}: root extent beyond the image",
                        [(s * SECTOR + 158, both32(len(base.data) // SECTOR + 1))])]
    out.append(Variant("truncated inside the second session",
                       truncate=(len(base.data) // SECTOR - 4) * SECTOR))
    return out


GENERATORS = {"flipped": kind_flipped, "zeroed": kind_zeroed, "truncated": kind_truncated,
              "records": kind_records, "susp": kind_susp, "relocation": kind_relocation,
              "zisofs": kind_zisofs, "descriptors": kind_descriptors, "sessions": kind_sessions}
PLAN = {  # base: kinds (and how many of each run in the normal suite; VIEWOS_LONG=1: all)
    "rock": dict(flipped=24, zeroed=12, truncated=9, records=27, susp=28, relocation=10,
                 zisofs=20, descriptors=21),
    "joliet": dict(flipped=16, zeroed=8, truncated=5, records=27, descriptors=12),
    "sessions": dict(sessions=20),
}


def variants(base, kind):
    out = GENERATORS[kind](base, random.Random(f"{base.name}-{kind}"))
    cap = PLAN[base.name][kind]
    if not LONG and cap < len(out):
        out = [out[i * len(out) // cap] for i in range(cap)]
    return out


# --------------------------------------------------------------------------- running one

def apply(base, v, img):
    data = bytearray(base.data)
    for off, b in v.raw:
        data[off:off + len(b)] = b
    if v.truncate is not None:
        del data[v.truncate:]
    img.write_bytes(data)
    if v.truncate is not None:
        return [(v.truncate, b"\0" * (len(base.data) - v.truncate))]
    return [(off, b) for off, b in v.raw]


def check_walk(base, v, w, changed, problems):
    for path, op, err in w.errors:
        if err not in ALLOWED.get(op.split()[0], set()):
            problems.append(f"{op} /{path}: {errno.errorcode.get(err, err)}")
    if base.name == "sessions":
        if not w.errors and w.entries not in (base.expected, base.first):
            problems.append("a walk without errors shows neither session")
        return
    for path, want in base.expected.items():
        if base.map.touched(path, changed):
            continue
        got = w.entries.get(path)
        if want[0] == "dir" and got and got[0] == "dir":
            # a name may live in its record's continuation area: a damaged child can show
            # under another name (its plain ISO 9660 one) or not at all, its siblings not
            touched = {n for n in want[1] if base.map.touched(f"{path}/{n}" if path else n, changed)}
            missing = set(want[1]) - set(got[1])
            extra = set(got[1]) - set(want[1])
            if missing <= touched and len(extra) <= len(touched):
                continue
        if got != want:
            shown = got if not got or got[0] != "file" else ("file", f"{len(got[1])} bytes")
            problems.append(f"/{path} untouched by the damage but reads as {shown!r:.200}")


def run_variant(base, v, workdir, pool):
    d = Path(workdir)
    d.mkdir()
    img, mnt = d / "img.iso", d / "mnt"
    mnt.mkdir()
    changed = apply(base, v, img)
    before = file_sha(img)
    problems = []
    daemon = pool.new(DAEMON, [img, mnt], mnt)
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
        if v.truncate is None and not base.map.touched("", changed) and base.name != "sessions":
            problems.append(f"refused an image whose descriptors and root are intact: "
                            f"{daemon.output().strip()!r}")
        outcome = "refused"
    else:
        try:
            w = bounded(lambda: walk_tree(mnt, xattrs=False), WALK_TIMEOUT, daemon.kill, "walk")
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
        problems.append("the image changed")
    shutil.rmtree(d, ignore_errors=True)
    return outcome, problems


CASES = [(b, k) for b, kinds in PLAN.items() for k in kinds]


def test_the_suite_damages_iso9660_in_at_least_200_ways(bases):
    """Issue 10 asks for at least 200 variants per format: count what the test below runs
    (the generators' output as variants() keeps it, on the real base images)."""
    runs = {(b, k): variants(bases(b), k) for b, k in CASES}
    total = sum(len(vs) for vs in runs.values())
    assert total >= 200, {key: len(vs) for key, vs in runs.items()}
    names = {(b, v.name) for (b, _), vs in runs.items() for v in vs}
    assert len(names) >= 150  # different damages, not one repeated


@pytest.mark.parametrize("base_name,kind", CASES, ids=[f"{b}-{k}" for b, k in CASES])
def test_corrupted_iso9660_images_give_eio_refusal_or_correct_data(bases, base_name, kind,
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
    for o, _ in results:
        outcomes[o] = outcomes.get(o, 0) + 1
    print(f"{base_name}/{kind}: {len(vs)} variants: {outcomes}")
    assert not failures, "\n".join(failures[:40])
