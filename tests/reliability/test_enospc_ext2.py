"""Full file systems under umfuse-ext2: on an image (ext2 with 1 KiB blocks, ext4 with 4 KiB
blocks, ext4 with the kernel's writeback cache) and on a RAM disk of umdev-ramdisk. Four
writers fill the file system at once with files of mixed sizes, directories, symlinks and
attributes until each meets ENOSPC. What must hold:
  * the error reaches the caller (write, or with the writeback cache fsync/close) as ENOSPC:
    never EIO, never silence;
  * nothing already written is lost: every file whose writes (and fsync) succeeded reads back
    exactly, during the mount and after a remount; a file cut short by ENOSPC holds what was
    accepted of it (with the writeback cache, where the kernel chose what to send: each block
    is either what was written or zeros);
  * space comes back: after some deletions new files fit again;
  * the daemon exits 0 at unmount and e2fsck -fn finds the file system clean.
The writeback-cache case found a loss: the daemon answered a page flush that did not fit with
a short count, which the kernel's writeback takes for the whole; fsync said all was well and
the end of the file was gone after a remount. Now such a flush is ENOSPC (fsync reports it)."""
import errno
import hashlib
import os
import random
import subprocess
import threading

import pytest

from conftest import make_ext
from relb_util import DaemonPool, e2fsck

DAEMON = "umfuse-ext2"
SIZES = (0, 700, 4096, 9000, 70_000, 300_000, 1 << 20)


def writer(root, me, rnd, writeback, out, lock):
    """Fill root/w<me> until ENOSPC; records into out: ('whole', path, digest) for files
    that were accepted entirely, ('part', path, data, accepted) for the one cut short, and
    ('error', what, errno) for any error that is not ENOSPC."""
    d = os.path.join(root, f"w{me}")
    os.mkdir(d)
    i = 0
    while True:
        i += 1
        kind = rnd.random()
        try:
            if kind < 0.06:
                os.mkdir(os.path.join(d, f"dir{i}"))
                continue
            if kind < 0.10:
                os.symlink("t" * rnd.choice([10, 300]), os.path.join(d, f"link{i}"))
                continue
            if kind < 0.13 and i > 1:
                os.setxattr(d, f"user.a{i}", b"v" * rnd.choice([10, 1500]))
                continue
        except OSError as e:
            # ENOSPC here may just mean one attribute block is too small for them all
            if e.errno != errno.ENOSPC:
                with lock:
                    out.append(("error", f"metadata op {i}", e.errno))
            continue
        p = os.path.join(d, f"f{i}")
        data = rnd.randbytes(rnd.choice(SIZES))
        accepted = 0
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = None
        try:
            while accepted < len(data):
                accepted += os.write(fd, data[accepted:accepted + 256 * 1024])
            if writeback:
                os.fsync(fd)
        except OSError as e:
            err = e.errno
        try:
            os.close(fd)
        except OSError as e:
            err = err or e.errno
        with lock:
            if err is None:
                out.append(("whole", p, hashlib.sha256(data).hexdigest()))
            else:
                out.append(("part", p, data, accepted))
                if err != errno.ENOSPC:
                    out.append(("error", f"write {p}", err))
        if err is not None:
            return


def fill(root, writeback, seed):
    out, lock = [], threading.Lock()
    threads = [threading.Thread(target=writer, args=(root, w, random.Random(seed * 10 + w),
                                                     writeback, out, lock)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        assert not t.is_alive(), "a writer hangs on the full file system"
    return out


def check(results, writeback):
    """Problems with what the writers left."""
    bad = []
    for r in results:
        if r[0] == "whole":
            try:
                with open(r[1], "rb") as f:
                    got = hashlib.sha256(f.read()).hexdigest()
            except OSError as e:
                bad.append(f"{r[1]}: {os.strerror(e.errno)}")
                continue
            if got != r[2]:
                bad.append(f"{r[1]}: content differs")
        elif r[0] == "part":
            _, p, data, accepted = r
            try:
                with open(p, "rb") as f:
                    got = f.read()
            except OSError as e:
                bad.append(f"{p}: {os.strerror(e.errno)}")
                continue
            if not writeback:
                if got != data[:accepted]:
                    bad.append(f"{p}: {len(got)} bytes, not the {accepted} accepted")
            else:
                if len(got) > len(data):
                    bad.append(f"{p}: longer than written")
                for off in range(0, len(got), 4096):
                    block = got[off:off + 4096]
                    if block != data[off:off + len(block)] and block.strip(b"\0"):
                        bad.append(f"{p}: block at {off} neither written data nor zeros")
                        break
    return bad


def remap(results, old_root, new_root):
    out = []
    for r in results:
        if r[0] in ("whole", "part"):
            r = (r[0], r[1].replace(str(old_root), str(new_root), 1), *r[2:])
        out.append(r)
    return out


def full_file_system(pool, source, tmp, writeback, seed):
    mnt = tmp / "mnt"
    mnt.mkdir()
    opts = ["-o", "writeback"] if writeback else []
    d = pool.new(DAEMON, [*opts, source, mnt], mnt)
    assert d.start(), d.output()
    results = fill(str(mnt), writeback, seed)
    errors = [r for r in results if r[0] == "error"]
    assert not errors, f"errors other than ENOSPC: {errors}"
    wholes = [r for r in results if r[0] == "whole"]
    parts = [r for r in results if r[0] == "part"]
    assert len(parts) >= 4, "every writer must have met ENOSPC"
    assert len(wholes) > 10
    assert os.statvfs(mnt).f_bavail < 64 * 1024 // os.statvfs(mnt).f_bsize + 64
    assert check(results, writeback) == []
    # space comes back
    freed = [r for r in wholes if os.path.getsize(r[1]) >= 70_000][:3]
    for r in freed:
        os.unlink(r[1])
    results = [r for r in results if r not in freed]
    again = os.urandom(50_000)
    (mnt / "after-deletions").write_bytes(again)
    results.append(("whole", str(mnt / "after-deletions"), hashlib.sha256(again).hexdigest()))
    assert d.stop() == 0, d.output()
    assert not d.sanitizer_report()
    status, out = e2fsck(source)
    assert status == 0, out
    mnt2 = tmp / "mnt2"
    mnt2.mkdir()
    d = pool.new(DAEMON, ["-o", "ro", source, mnt2], mnt2)
    assert d.start(), d.output()
    assert check(remap(results, mnt, mnt2), writeback) == []
    assert not any(os.path.exists(r[1].replace(str(mnt), str(mnt2), 1)) for r in freed)
    assert d.stop() == 0


@pytest.mark.parametrize("kind", ["ext2-1k", "ext4-4k", "ext4-4k-writeback"])
def test_full_image_gives_enospc_and_loses_nothing(tmp_path, kind):
    fstype, bs = ("ext2", 1024) if kind.startswith("ext2") else ("ext4", 4096)
    img = make_ext(tmp_path / "img", fstype=fstype, size="24M", blocksize=bs)
    pool = DaemonPool(tmp_path)
    try:
        full_file_system(pool, img, tmp_path, kind.endswith("writeback"), seed=len(kind))
    finally:
        pool.cleanup()


def test_full_ext2_on_a_ram_disk_gives_enospc_and_loses_nothing(tmp_path):
    ram = tmp_path / "ram"
    pool = DaemonPool(tmp_path)
    try:
        r = pool.new("umdev-ramdisk", ["-o", "size=20M", ram], ram)
        assert r.start(), r.output()
        subprocess.run(["mkfs.ext2", "-q", "-b", "1024", str(ram)], check=True,
                       capture_output=True, timeout=60)
        full_file_system(pool, ram, tmp_path, False, seed=7)
        assert r.alive()
        assert r.stop() == 0 and not r.sanitizer_report()
    finally:
        pool.cleanup()
