"""Each kind of block source of common/block*.c, seen through a real FUSE mount (vo-testfs
shows the source as MOUNTPOINT/data): image files, mem:SIZE, and NBD over a Unix socket and
over TCP against a real nbdkit."""
import os
import random
import socket
import subprocess
import time

import pytest

from conftest import run

TESTFS = "vo-testfs"


@pytest.fixture
def nbdkit(rtmp):
    """Start `nbdkit ARGS` on a Unix socket (yields its path), or with tcp=True on a TCP port of
    127.0.0.1 (yields the port); always stopped. The TCP socket is bound here, at a port the
    kernel picks, and handed to nbdkit by socket activation: no fixed port for concurrent runs
    to fight over. Request it before `mounts` so that daemons (its clients) are unmounted
    first."""
    procs = []

    def start(*args, tcp=False):
        sock = rtmp / f"nbd{len(procs)}.sock"
        pidfile = rtmp / f"nbd{len(procs)}.pid"
        cmd = ["nbdkit", "-f", "--exit-with-parent", "-P", str(pidfile)]
        pass_fds, listener, where = (), None, sock
        if tcp:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            where = listener.getsockname()[1]
            pass_fds = (listener.fileno(),)
            # nbdkit takes fd 3 when LISTEN_PID is its own pid: the shell's, which it becomes
            # (bash: dash cannot name an fd above 9)
            cmd = ["bash", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@" 3<&{listener.fileno()}',
                   "bash", *cmd]
        else:
            cmd += ["-U", str(sock)]
        p = subprocess.Popen([*cmd, *args], stderr=subprocess.PIPE, pass_fds=pass_fds)
        if listener is not None:
            listener.close()
        procs.append(p)
        for _ in range(1000):
            if pidfile.exists():
                return where
            if p.poll() is not None:
                break
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


def memfd_of(pid, spec):
    """The path under /proc of the memfd that holds the mem: source `spec` in process pid."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"/memfd:{spec} "):
                return f"/proc/{pid}/fd/{fd}"
        except FileNotFoundError:
            pass
    pytest.fail(f"no memfd of {spec} in process {pid}")


def test_mem_source_is_sparse(rtmp, mounts):
    mnt = rtmp / "mnt"
    mnt.mkdir()
    m = mounts.start(TESTFS, "mem:64G", mnt, mountpoint=mnt)
    roundtrip(mnt, 64 << 30)
    # 1 MiB written into 64 GiB (and the rest read): the store holds that MiB and no more.
    # (st_blocks of the memfd counts its pages; they are not mapped, so VmRSS would not.)
    held = os.stat(memfd_of(m.proc.pid, "mem:64G")).st_blocks * 512
    assert 1 << 20 <= held <= 2 << 20, held


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
    port = nbdkit("memory", "size=4M", tcp=True)
    mnt = rtmp / "mnt"
    mnt.mkdir()
    mounts.start(TESTFS, f"nbd://127.0.0.1:{port}", mnt, mountpoint=mnt)
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
