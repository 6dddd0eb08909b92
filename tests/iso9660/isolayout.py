"""Where things are in an ISO 9660 image, for the tests that damage one on purpose: the byte
offsets of directory records and of their System Use entries, found by a walk of the primary
tree. It reads just enough (ECMA-119 records, SUSP entry headers, Rock Ridge NM names) to aim
a corruption; it is not an oracle for anything the driver shows."""
import struct
from dataclasses import dataclass, field

SECTOR = 2048


@dataclass
class Record:
    offset: int            # byte address of the record in the image
    length: int
    extent: int            # first block
    size: int
    flags: int
    iso_name: bytes
    su_offset: int         # byte address of the System Use area
    su_length: int
    entries: dict = field(default_factory=dict)   # signature -> [byte address of the entry]
    name: str = ""         # the Rock Ridge name, else the ISO name lower-cased without ";1"

    @property
    def is_dir(self):
        return bool(self.flags & 2)


def parse_record(img, off):
    length = img[off]
    extent, size = struct.unpack_from("<I", img, off + 2)[0], struct.unpack_from("<I", img, off + 10)[0]
    nl = img[off + 32]
    name = bytes(img[off + 33:off + 33 + nl])
    su = off + 33 + nl + (1 - nl % 2)
    rec = Record(off, length, extent, size, img[off + 25], name, su, off + length - su)
    nm = b""
    area, end, hops = su, off + length, 0
    while area is not None and hops < 4:
        i, ce, hops = area, None, hops + 1
        while i + 4 <= end:
            sig, elen = bytes(img[i:i + 2]), img[i + 2]
            if elen < 4 or i + elen > end:
                break
            rec.entries.setdefault(sig.decode("latin-1"), []).append(i)
            if sig == b"NM":
                nm += bytes(img[i + 5:i + elen])
            elif sig == b"CE":
                block, offset, clen = struct.unpack_from("<I", img, i + 4)[0], \
                    struct.unpack_from("<I", img, i + 12)[0], struct.unpack_from("<I", img, i + 20)[0]
                ce = (block * SECTOR + offset, block * SECTOR + offset + clen)
            i += elen
        area, end = ce if ce and ce[1] <= len(img) else (None, None)
    if nm:
        rec.name = nm.decode("utf-8", "replace")
    else:
        n = name.decode("latin-1")
        rec.name = (n[:-2] if n.endswith(";1") else n).rstrip(".").lower()
    return rec


def read_dir(img, extent, size):
    out = []
    start = extent * SECTOR
    off = start
    while off < start + size:
        if img[off] == 0:
            off = (off // SECTOR + 1) * SECTOR
            continue
        out.append(parse_record(img, off))
        off += img[off]
    return out


def root(img):
    pvd = 16 * SECTOR
    assert bytes(img[pvd + 1:pvd + 6]) == b"CD001"
    return parse_record(img, pvd + 156)


def find(img, path):
    """The record of path ("dir/file") in the primary tree."""
    rec = root(img)
    for part in [p for p in path.split("/") if p]:
        entries = read_dir(img, rec.extent, rec.size)[2:]
        if "CL" in rec.entries:  # a relocated directory: go where it really is
            cl = rec.entries["CL"][0]
            rec = parse_record(img, struct.unpack_from("<I", img, cl + 4)[0] * SECTOR)
            entries = read_dir(img, rec.extent, rec.size)[2:]
        matches = [r for r in entries if r.name == part]
        assert matches, f"{part} not in {[r.name for r in entries]}"
        rec = matches[0]
    return rec


def listing(img, path):
    """The records of a directory, without "." and ".."."""
    rec = find(img, path) if path else root(img)
    return read_dir(img, rec.extent, rec.size)[2:]


def put32(img, off, value):
    """Both-endian 32-bit field at off."""
    struct.pack_into("<I", img, off, value)
    struct.pack_into(">I", img, off + 4, value)
