"""Each kind of block source of common/block*.c, seen through a real FUSE mount (vo-testfs
shows the source as MOUNTPOINT/data): image files, mem:SIZE, and NBD over a Unix socket and
over TCP against a real nbdkit."""
import os
import random
import subprocess
import time

import pytest

from conftest import run

TESTFS = "vo-testfs"


@pytest.fixture
def nbdkit(rtmp):
    """Start `nbdkit ARGS` on a Unix socket; yields the socket path; always stopped.
    Request it before `mounts` so that daemons (its clients) are unmounted first."""
    procs = []

    def start(*args, tcp_port=None):
        sock = rtmp / f"nbd{len(procs)}.sock"
        pidfile = rtmp / f"nbd{len(procs)}.pid"
        where = ["-i", "127.0.0.1", "-p", str(tcp_port)] if tcp_port else ["-U", str(sock)]
        p = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-P", str(pidfile), *where,
                              *args], stderr=subprocess.PIPE)
        procs.append(p)
        for _ in range(500):
            if pidfile.exists():
                return sock
            time.sleep(0.01)
        pytest.fail("nbdkit did not start: " + p.stderr.read().decode())

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def roundtrip(mnt, size):
    data = random.Random(7).randbytes(1 << 20)
    with open(mnt / "data", "r+b", buffering=0) as f:
        assert os.fstat(f.fileno()).st_size == size
        f.seek(size - len(data))
        f.write(data)
        os.fsync(f.fileno())
        f.seek(size - len(data))
        assert f.read() == data
        # writing past the end of a device fails and changes nothing
        f.seek(size)
        with pytest.raises(OSError) as e:
            f.write(b"x")
        assert e.value.errno == 28  # ENOSPC
    return data


def test_image_file(rtmp, mounts):
    img, mnt = rtmp / "img", rtmp / "mnt"
    run(["truncate", "-s", "8M", img])
    mnt.mkdir()
    mounts.start(TESTFS, img, mnt, mountpoint=mnt)
    data = roundtrip(mnt, 8 << 20)
    assert img.read_bytes()[-len(data):] == data


def test_image_not_a_multiple_of_the_sector_size(rtmp, mounts):
    img, mnt = rtmp / "img", rtmp / "mnt"
    run(["truncate", "-s", str((3 << 20) + 77), img])
    mnt.mkdir()
    mounts.start(TESTFS, img, mnt, mountpoint=mnt)
    roundtrip(mnt, (3 << 20) + 77)


def test_mem_source_is_sparse(rtmp, mounts):
    mnt = rtmp / "mnt"
    mnt.mkdir()
    m = mounts.start(TESTFS, "mem:64G", mnt, mountpoint=mnt)
    roundtrip(mnt, 64 << 30)
    # 1 MiB written into 64 GiB: the daemon's memory stays small (the memfd is shmem)
    shmem = [l for l in open("/proc/meminfo") if l.startswith("Shmem:")]
    assert shmem
    status = open(f"/proc/{m.proc.pid}/status").read()
    rss_kb = int([l for l in status.splitlines() if l.startswith("VmRSS")][0].split()[1])
    assert rss_kb < 200 * 1024


def test_nbd_unix_socket(rtmp, nbdkit, mounts):
    sock = nbdkit("memory", "size=16M")
    mnt = rtmp / "mnt"
    mnt.mkdir()
    mounts.start(TESTFS, f"nbd+unix:///?socket={sock}", mnt, mountpoint=mnt)
    data = roundtrip(mnt, 16 << 20)
    # the bytes are in the NBD server: read them back with libnbd's own nbdcopy
    out = rtmp / "copy"
    run(["nbdcopy", f"nbd+unix:///?socket={sock}", out])
    assert out.read_bytes()[-len(data):] == data


def test_nbd_tcp(rtmp, nbdkit, mounts):
    nbdkit("memory", "size=4M", tcp_port=10901)
    mnt = rtmp / "mnt"
    mnt.mkdir()
    mounts.start(TESTFS, "nbd://127.0.0.1:10901", mnt, mountpoint=mnt)
    roundtrip(mnt, 4 << 20)


def test_nbd_server_gone_is_a_clear_error(rtmp):
    from conftest import mounted_at, viewos_bin
    mnt = rtmp / "mnt"
    mnt.mkdir()
    r = run([viewos_bin(TESTFS), f"nbd+unix:///?socket={rtmp}/none.sock", mnt], check=False)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vo-testfs: cannot connect to nbd+unix://")
    assert not mounted_at(mnt)
