"""Helpers for the umdev suites: starting the daemons, sfdisk scripts, reading the image at a
partition's offset, and running nbdkit with the project's plugin.

(A module of our own rather than a second conftest.py, so `from conftest import ...` keeps
meaning the harness in tests/conftest.py.)"""
import fcntl
import json
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import mounted_at, run, sanitizer_env, viewos_bin

BLKGETSIZE64 = 0x80081272
BLKRRPART = 0x125F
BLKFLSBUF = 0x1261
BLKSSZGET = 0x1268
BLKBSZGET = 0x80081270
MIB = 1 << 20


def wait_for(cond, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def part_path(disk, n):
    """The device file of partition n, named as the daemons name it."""
    disk = str(disk)
    return Path(f"{disk}p{n}" if disk[-1].isdigit() else f"{disk}{n}")


def start(mounts, name, *args, path, parts=(), user=None, env=None):
    """Start a umdev daemon in the foreground and wait for the disk file and the given
    partition files to be mounted (a foreground daemon has no 'ready' to wait for)."""
    m = mounts.start(name, *args, path, mountpoint=path, user=user, env=env)
    for n in parts:
        wait_for(lambda: mounted_at(part_path(path, n)), what=f"{part_path(path, n)} mounted")
    return m


def make_image(path, size, user=None):
    run(["truncate", "-s", str(size), path], user=user)
    return Path(path)


def sfdisk(dev, script, *extra, user=None):
    """Write a table with sfdisk through a device file (returns once sfdisk has closed it)."""
    return run(["sfdisk", "--quiet", *extra, dev],
               input=script, user=user)


def sfdisk_json(dev, user=None):
    out = run(["sfdisk", "--json", dev], user=user).stdout
    return json.loads(out)["partitiontable"]


def table_parts(dev, user=None):
    """{number: (start_bytes, size_bytes)} of the table as sfdisk reads it."""
    t = sfdisk_json(dev, user=user)
    ss = t.get("sectorsize", 512)
    out = {}
    for p in t.get("partitions", []):
        node = p["node"]
        n = int(node[len(str(dev)):].lstrip("p"))
        out[n] = (p["start"] * ss, p["size"] * ss)
    return out


def partition_files(disk):
    """The partition files next to the disk file, by number."""
    disk = Path(disk)
    out = {}
    for f in disk.parent.iterdir():
        rest = f.name[len(disk.name):]
        if f.name.startswith(disk.name) and rest:
            rest = rest[1:] if rest[0] == "p" and disk.name[-1].isdigit() else rest
            if rest.isdigit():
                out[int(rest)] = f
    return out


def read_at(path, offset, length):
    with open(path, "rb", buffering=0) as f:
        return os.pread(f.fileno(), length, offset)


def ioctl_u64(path, request, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        return struct.unpack("Q", fcntl.ioctl(fd, request, b"\0" * 8))[0]
    finally:
        os.close(fd)


def ioctl_none(path, request, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        return fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)


def plugin_path():
    return viewos_bin("nbdkit-umdev-plugin.so")


def nbdkit_env():
    """nbdkit is not sanitized: a sanitized plugin needs the ASan runtime preloaded (the
    daemons do the same when they run nbdkit; see nbdkit-umdev-plugin(1))."""
    env = dict(os.environ)
    libs = subprocess.run(["ldd", plugin_path()], capture_output=True, text=True).stdout
    if "libasan" in libs:
        asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                              text=True).stdout.strip()
        env["LD_PRELOAD"] = asan
    return sanitizer_env(env)


class Nbdkit:
    """`nbdkit PLUGIN ARGS` on a Unix socket, always stopped."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.procs = []

    def start(self, *args):
        n = len(self.procs)
        sock, pidfile = self.workdir / f"nbdkit{n}.sock", self.workdir / f"nbdkit{n}.pid"
        log = open(self.workdir / f"nbdkit{n}.log", "w+")
        p = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-P", str(pidfile), "-U",
                              str(sock), plugin_path(), *[str(a) for a in args]],
                             stdout=log, stderr=subprocess.STDOUT, env=nbdkit_env())
        self.procs.append((p, log))
        wait_for(lambda: pidfile.exists() or p.poll() is not None, what="nbdkit to start")
        if p.poll() is not None:
            log.seek(0)
            pytest.fail(f"nbdkit exited with {p.returncode}: {log.read()}")
        return sock

    def stop(self):
        """Stop every nbdkit. The tests' clients have exited by now; a moment lets nbdkit finish
        closing their connections, so that its leak check (on: see nbdkit_env) sees the
        plugin's own clean-up and not a connection cut short by the quit."""
        texts = []
        if self.procs:
            time.sleep(0.3)
        for p, log in self.procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.seek(0)
            texts.append(log.read())
            log.close()
        self.procs.clear()
        return texts


@pytest.fixture
def nbdkit(rtmp):
    n = Nbdkit(rtmp)
    yield n
    n.stop()


def uri(sock, export=""):
    return f"nbd+unix:///{export}?socket={sock}"


def nbdsh(sock, export, code, check=True):
    """Run Python code in nbdsh connected to an export (the handle is `h`). nbdsh runs the
    `python3` of PATH, which must be Debian's (the one with the libnbd module)."""
    env = dict(os.environ, PATH="/usr/bin:/bin:" + os.environ.get("PATH", ""))
    return run(["nbdsh", "-u", uri(sock, export), "-c", code], check=check, env=env)
