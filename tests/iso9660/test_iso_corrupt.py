"""Hostile and damaged images: each case damages one structure of a real xorriso image and
checks that exactly what depends on it answers EIO (or that the mount is refused with one
line), that its neighbours stay readable, and that the daemon neither crashes nor hangs (the
`mounts` fixture fails a test whose daemon dies, exits non-zero or reports to a sanitizer).
A last test throws seeded random damage at the metadata area and walks whatever mounts."""
import errno
import os
import random
import shutil
import subprocess
import time

import pytest

from conftest import mounted_at, run, sanitizer_env, viewos_bin
from isohelpers import DAEMON, daemon_alive, errno_of, mkisofs, mount_iso, xorriso
import isolayout as L

LONG = "a-name-long-enough-to-need-a-continuation-area-" * 4


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("corrupt")
    src = d / "src"
    (src / "d").mkdir(parents=True)
    for i in range(40):
        (src / "d" / f"entry-{i:02d}-with-a-longer-name.txt").write_text(f"entry {i}\n")
    (src / "d" / "MixedCase-name.dat").write_text("mixed\n")
    (src / "d2").mkdir()
    (src / "d2" / "x").write_text("x\n")
    (src / "sub" / "inner").mkdir(parents=True)
    (src / "sub" / "inner" / "deepest").write_text("deepest\n")
    (src / LONG).write_text("long name\n")
    (src / "sym").symlink_to("some/where/else")
    (src / "ok.txt").write_text("still fine\n")
    (src / "data.bin").write_bytes(os.urandom(100_000))
    iso = mkisofs(d / "base.iso", src, "-R")
    return src, iso


def damage(iso, tmp_path, fn):
    """A copy of iso changed by fn(bytearray)."""
    img = bytearray(iso.read_bytes())
    fn(img)
    out = tmp_path / "damaged.iso"
    out.write_bytes(img)
    return out


def walk(mnt, timeout=30):
    """Visit everything (stat, list, read, readlink) in a child with a deadline: a hang fails
    the test instead of the run. Errors on the way are expected and ignored."""
    r = subprocess.run(["timeout", str(timeout), "find", mnt, "-exec", "cat", "{}", "+"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert r.returncode != 124, "walking the damaged tree hung"
    return r


def assert_neighbours_fine(m):
    assert (m.path / "ok.txt").read_text() == "still fine\n"
    assert (m.path / "sub" / "inner" / "deepest").read_text() == "deepest\n"


def last_record_of_first_sector(img, dir_rec):
    recs = [r for r in L.read_dir(img, dir_rec.extent, dir_rec.size)
            if r.offset < dir_rec.extent * L.SECTOR + L.SECTOR]
    return recs[-1]


def test_record_overrunning_its_sector_makes_that_directory_eio(base, tmp_path, mounts):
    src, iso = base

    def fn(img):
        d = L.find(img, "d")
        last = last_record_of_first_sector(img, d)
        room = (last.offset // L.SECTOR + 1) * L.SECTOR - last.offset
        assert room + 2 <= 255
        img[last.offset] = room + 2  # now it reaches 2 bytes into the next sector

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    assert errno_of(os.listdir, m.path / "d") == errno.EIO
    assert errno_of(os.stat, m.path / "d" / "entry-00-with-a-longer-name.txt") == errno.EIO
    assert os.path.isdir(m.path / "d")  # the directory itself still has its attributes
    assert_neighbours_fine(m)
    walk(m.path)
    assert daemon_alive(m)


def test_record_shorter_than_its_name_makes_that_directory_eio(base, tmp_path, mounts):
    src, iso = base

    def fn(img):
        r = L.find(img, "d2/x")
        img[r.offset] = 34  # the name and System Use area no longer fit

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    assert errno_of(os.listdir, m.path / "d2") == errno.EIO
    assert_neighbours_fine(m)


def test_file_extent_outside_the_image_reads_eio(base, tmp_path, mounts):
    src, iso = base
    m = mount_iso(mounts, damage(iso, tmp_path,
                                 lambda img: L.put32(img, L.find(img, "data.bin").offset + 2,
                                                     0x7fffff00)), tmp_path / "mnt")
    st = os.stat(m.path / "data.bin")
    assert st.st_size == 100_000
    assert errno_of(lambda: (m.path / "data.bin").read_bytes()) == errno.EIO
    assert_neighbours_fine(m)


def test_directory_extent_outside_the_image_lists_eio(base, tmp_path, mounts):
    src, iso = base
    m = mount_iso(mounts, damage(iso, tmp_path,
                                 lambda img: L.put32(img, L.find(img, "d2").offset + 2,
                                                     0x7fffff00)), tmp_path / "mnt")
    assert errno_of(os.listdir, m.path / "d2") == errno.EIO
    assert_neighbours_fine(m)


def test_huge_directory_size_is_refused_with_eio(base, tmp_path, mounts):
    src, iso = base
    m = mount_iso(mounts, damage(iso, tmp_path,
                                 lambda img: L.put32(img, L.find(img, "d").offset + 10,
                                                     0xfffff800)), tmp_path / "mnt")
    assert errno_of(os.listdir, m.path / "d") == errno.EIO
    assert_neighbours_fine(m)


def test_file_length_beyond_the_image_reads_eio(base, tmp_path, mounts):
    """A truncated image: the descriptors and directories are there, the data is not."""
    src, iso = base
    img = iso.read_bytes()
    data = L.find(img, "data.bin")
    cut = tmp_path / "cut.iso"
    cut.write_bytes(img[:data.extent * L.SECTOR + 4096])
    m = mount_iso(mounts, cut, tmp_path / "mnt")
    with open(m.path / "data.bin", "rb") as f:
        assert f.read(4096) == (src / "data.bin").read_bytes()[:4096]
        f.seek(50_000)
        assert errno_of(f.read, 4096) == errno.EIO


@pytest.mark.parametrize("how", ["length-below-4", "overrun", "px-wrong-length",
                                 "sl-component-overrun"])
def test_bad_susp_lengths_make_that_entry_eio(base, tmp_path, mounts, how):
    src, iso = base
    target = {"sl-component-overrun": "sym"}.get(how, "d/MixedCase-name.dat")

    def fn(img):
        r = L.find(img, target)
        if how == "length-below-4":
            img[r.entries["NM"][0] + 2] = 2
        elif how == "overrun":
            img[r.entries["NM"][0] + 2] = 250
        elif how == "px-wrong-length":
            img[r.entries["PX"][0] + 2] = 30
        else:
            sl = r.entries["SL"][0]
            img[sl + 6] = 200  # the first component's length

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    if target == "sym":
        assert "sym" in os.listdir(m.path)   # the ISO name happens to be the same
        assert errno_of(os.lstat, m.path / "sym") == errno.EIO
    else:
        names = os.listdir(m.path / "d")
        # the Rock Ridge name is lost with its area: the entry shows by its ISO name and
        # answers EIO; its 40 siblings are intact
        assert "mixedcas.dat" in names and len(names) == 41
        assert errno_of(os.stat, m.path / "d" / "mixedcas.dat") == errno.EIO
        assert (m.path / "d" / "entry-07-with-a-longer-name.txt").read_text() == "entry 7\n"
    assert_neighbours_fine(m)
    walk(m.path)


@pytest.mark.parametrize("how", ["outside", "loop", "crosses-block"])
def test_bad_continuation_areas_make_that_entry_eio(base, tmp_path, mounts, how):
    src, iso = base

    def fn(img):
        r = L.find(img, LONG)
        ce = r.entries["CE"][0]
        if how == "outside":
            L.put32(img, ce + 4, 0x7fffff00)
        elif how == "loop":
            # the continuation area is the record's own System Use area, CE included
            L.put32(img, ce + 4, r.su_offset // L.SECTOR)
            L.put32(img, ce + 12, r.su_offset % L.SECTOR)
            L.put32(img, ce + 20, r.su_length)
        else:
            L.put32(img, ce + 12, 2000)
            L.put32(img, ce + 20, 200)

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    names = os.listdir(m.path)
    assert LONG not in names
    shown = [n for n in names if n not in ("d", "d2", "sub", "sym", "ok.txt", "data.bin")]
    assert len(shown) == 1
    assert errno_of(os.stat, m.path / shown[0]) == errno.EIO
    assert_neighbours_fine(m)
    walk(m.path)


def test_directory_record_pointing_at_an_ancestor_is_eio_not_a_loop(base, tmp_path, mounts):
    src, iso = base

    def fn(img):
        L.put32(img, L.find(img, "sub/inner").offset + 2, L.root(img).extent)

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    assert os.listdir(m.path / "sub") == ["inner"]
    assert errno_of(os.stat, m.path / "sub" / "inner") == errno.EIO
    assert (m.path / "ok.txt").read_text() == "still fine\n"
    walk(m.path)


DEEP = "deep/l0/l1/l2/l3/l4/l5"  # 8 levels with the root: l6 must be relocated


@pytest.fixture(scope="module")
def relocated(tmp_path_factory):
    d = tmp_path_factory.mktemp("reloc")
    src = d / "src"
    (src / DEEP / "l6" / "l7").mkdir(parents=True)
    (src / DEEP / "l6" / "l7" / "f").write_text("deep\n")
    (src / "ok.txt").write_text("still fine\n")
    iso = mkisofs(d / "reloc.iso", src, "-R", "-rr_reloc_dir", "rr_moved")
    img = iso.read_bytes()
    assert "CL" in L.find(img, DEEP + "/l6").entries
    return src, iso


@pytest.mark.parametrize("how", ["cl-to-root", "cl-to-itself", "cl-to-a-file", "pl-elsewhere"])
def test_bad_relocation_links_make_that_directory_eio(relocated, tmp_path, mounts, how):
    src, iso = relocated

    def fn(img):
        stub = L.find(img, DEEP + "/l6")
        cl = stub.entries["CL"][0] + 4
        if how == "cl-to-root":
            L.put32(img, cl, L.root(img).extent)
        elif how == "cl-to-itself":
            L.put32(img, cl, L.find(img, DEEP).extent)
        elif how == "cl-to-a-file":
            L.put32(img, cl, L.find(img, "ok.txt").extent)
        else:
            target = int.from_bytes(img[cl:cl + 4], "little")
            dotdot = L.read_dir(img, target, L.SECTOR)[1]
            L.put32(img, dotdot.entries["PL"][0] + 4, L.root(img).extent)

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    assert os.listdir(m.path / DEEP) == ["l6"]
    assert errno_of(os.stat, m.path / DEEP / "l6") == errno.EIO
    assert (m.path / "ok.txt").read_text() == "still fine\n"
    walk(m.path)


@pytest.fixture(scope="module")
def zisofs(tmp_path_factory):
    d = tmp_path_factory.mktemp("zcorrupt")
    src = d / "src"
    src.mkdir()
    text = b"".join(f"line {i} of a compressible text\n".encode() for i in range(20000))
    (src / "text.txt").write_bytes(text)
    (src / "ok.txt").write_text("still fine\n")
    iso = d / "z.iso"
    xorriso("-outdev", iso, "-map", src, "/", "-set_filter_r", "--zisofs", "/", "--", "-commit")
    return src, iso


def test_damaged_zisofs_block_reads_eio_and_others_still_read(zisofs, tmp_path, mounts):
    src, iso = zisofs
    text = (src / "text.txt").read_bytes()

    def fn(img):
        r = L.find(img, "text.txt")
        start = r.extent * L.SECTOR
        ptr = [int.from_bytes(img[start + 16 + 4 * i:start + 20 + 4 * i], "little")
               for i in range(4)]
        # garbage in the middle of the third block's zlib stream
        mid = start + (ptr[2] + ptr[3]) // 2
        img[mid:mid + 16] = b"\xff" * 16

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    with open(m.path / "text.txt", "rb") as f:
        assert f.read(65536) == text[:65536]          # blocks 0 and 1
        assert errno_of(os.pread, f.fileno(), 4096, 2 * 32768 + 100) == errno.EIO
        assert os.pread(f.fileno(), 4096, 5 * 32768) == text[5 * 32768:5 * 32768 + 4096]
    assert (m.path / "ok.txt").read_text() == "still fine\n"


def test_damaged_zisofs_pointer_table_reads_eio(zisofs, tmp_path, mounts):
    src, iso = zisofs

    def fn(img):
        start = L.find(img, "text.txt").extent * L.SECTOR
        img[start + 16 + 8:start + 16 + 12] = (0xffffff).to_bytes(4, "little")

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    assert os.stat(m.path / "text.txt").st_size == len((src / "text.txt").read_bytes())
    assert errno_of(lambda: (m.path / "text.txt").read_bytes()) == errno.EIO
    assert (m.path / "ok.txt").read_text() == "still fine\n"


def mount_foreground(path, mnt, log, timeout=30):
    """umfuse-iso9660 -f, its output to the file log (a pipe could fill and stall it): (the
    running daemon, None) once mounted, or (None, its exit status and output) when it gave up
    first. The bound is a hang guard, far above a mount's time."""
    with open(log, "w") as out:
        proc = subprocess.Popen([viewos_bin(DAEMON), "-f", path, mnt], stdout=out,
                                stderr=subprocess.STDOUT, env=sanitizer_env(),
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while not mounted_at(mnt):
        if proc.poll() is not None:
            return None, (proc.returncode, log.read_text(errors="replace"))
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"{path}: the daemon neither mounted nor gave up within {timeout}s")
        time.sleep(0.01)
    return proc, None


def test_seeded_random_damage_never_crashes_or_hangs(base, tmp_path):
    """Damage random bytes of the descriptors, directories and System Use areas of 25 images;
    each either mounts (and is walked: stat, list, read, readlink everything; the daemon then
    exits 0 at the unmount) or is refused with exactly one line and exit status 2."""
    src, iso = base
    img0 = iso.read_bytes()
    root = L.root(img0)
    meta_end = max(r.offset + r.length for r in L.read_dir(img0, root.extent, root.size))
    meta_end = max(meta_end, L.find(img0, "d").extent * L.SECTOR + 3 * L.SECTOR)
    mounted = refused = 0
    for seed in range(25):
        rnd = random.Random(seed)
        img = bytearray(img0)
        for _ in range(rnd.choice([1, 4, 16, 64])):
            img[rnd.randrange(16 * L.SECTOR, meta_end)] = rnd.randrange(256)
        path = tmp_path / f"rnd{seed}.iso"
        path.write_bytes(img)
        mnt = tmp_path / f"mnt{seed}"
        mnt.mkdir()
        log = tmp_path / f"rnd{seed}.log"
        proc, refusal = mount_foreground(path, mnt, log)
        if proc:
            mounted += 1
            try:
                walk(mnt)
                assert proc.poll() is None, f"seed {seed}: the daemon died: {log.read_text()}"
            finally:
                run(["fusermount3", "-u", mnt], check=False)
                try:
                    status = proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    pytest.fail(f"seed {seed}: the daemon did not exit after the unmount")
            assert status == 0, f"seed {seed}: exit status {status}: {log.read_text()}"
        else:
            refused += 1
            status, out = refusal
            assert status == 2, (seed, status, out)
            lines = out.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"{DAEMON}: cannot mount {path}: "), \
                (seed, out)
            assert not mounted_at(mnt)
        path.unlink()
        shutil.rmtree(mnt, ignore_errors=True)
    assert mounted > 10


def test_multi_extent_flag_without_a_following_section_is_harmless(base, tmp_path, mounts):
    """A record flagged "more extents follow" followed by a different file, or by nothing:
    each file keeps its own data."""
    src, iso = base

    def fn(img):
        for path in ("d2/x", "d/entry-03-with-a-longer-name.txt"):
            img[L.find(img, path).offset + 25] |= 0x80

    m = mount_iso(mounts, damage(iso, tmp_path, fn), tmp_path / "mnt")
    assert (m.path / "d2" / "x").read_text() == "x\n"
    for i in (3, 4):
        name = f"entry-{i:02d}-with-a-longer-name.txt"
        assert (m.path / "d" / name).read_text() == f"entry {i}\n"
    assert len(os.listdir(m.path / "d")) == 41
