"""Benchmark of umfuse-ext2 against its peers on the same ext4 image geometry (issue 6).

Targets, each on a fresh image made the same way (mkfs.ext4 defaults, 4 KiB blocks, journal,
metadata_csum; --image-gib GiB, default 4) in the bench work directory:
  kernel ext4   the kernel's driver on a loop device (the limit; the reference)
  fuse2fs       e2fsprogs' FUSE driver, the peer (Debian's fuse2fs, run as root)
  umfuse-ext2   this driver

Workloads: the runner's own (untar ~20k files, find -ls, read all, 1 GiB sequential write and
read, rm -rf). After every round the image is unmounted and checked with e2fsck -fn; the
results are printed (and appended to --markdown) with the table.

Run as root from the repository root after building (a release build: VIEWOS_BUILD=build-ext2):
    /usr/bin/python3 tests/bench/bench_ext2.py --repeat 3 --markdown docs/benchmarks.md
"""
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Target, drop_caches, sh, viewos_bin  # noqa: E402

FSCK = {}  # target name -> list of e2fsck -fn exit statuses, one per round


def image_gib(argv):
    for i, a in enumerate(argv):
        if a == "--image-gib":
            return int(argv[i + 1]), argv[:i] + argv[i + 2:]
        if a.startswith("--image-gib="):
            return int(a.split("=", 1)[1]), argv[:i] + argv[i + 1:]
    return 4, argv


def wait_mounted(path, timeout=60):
    real = os.path.realpath(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[4] == real for line in f):
                return
        time.sleep(0.02)
    sys.exit(f"bench: {path} was not mounted within {timeout}s")


def wait_released(img, timeout=120):
    """Until no FUSE daemon has the image open (it flushes before it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = subprocess.run(["fuser", "-s", str(img)], stderr=subprocess.DEVNULL).returncode == 0
        if not busy:
            return
        time.sleep(0.05)
    sys.exit(f"bench: {img} still in use {timeout}s after unmount")


class Ext4Target(Target):
    def __init__(self, name, gib):
        self.name, self.gib = name, gib
        self.img = self.mnt = None
        FSCK[name] = []

    def setup(self, workdir):
        self.img = workdir / "ext4.img"
        sh("truncate", "-s", f"{self.gib}G", self.img)
        sh("mkfs.ext4", "-q", "-F", "-b", "4096", self.img)
        self.mnt = workdir / "mnt"
        self.mnt.mkdir()
        self.mount()
        return self.mnt

    def remount(self):
        self.unmount()
        drop_caches()
        self.mount()

    def teardown(self):
        self.unmount()
        r = subprocess.run(["e2fsck", "-fn", str(self.img)], capture_output=True, text=True)
        FSCK[self.name].append(r.returncode)
        if r.returncode:
            print(f"bench: e2fsck -fn after {self.name}:\n{r.stdout[-3000:]}", file=sys.stderr)


class KernelExt4(Ext4Target):
    def mount(self):
        sh("mount", "-t", "ext4", "-o", "loop", self.img, self.mnt)

    def unmount(self):
        sh("umount", self.mnt)


class FuseExt2(Ext4Target):
    def __init__(self, name, gib, argv):
        super().__init__(name, gib)
        self.argv = argv

    def mount(self):
        sh(*self.argv(self.img, self.mnt))
        wait_mounted(self.mnt)

    def unmount(self):
        for _ in range(100):
            if sh("fusermount3", "-u", self.mnt, check=False,
                  stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        wait_released(self.img)


def main():
    gib, argv = image_gib(sys.argv[1:])
    if not any(a.startswith("--workdir") for a in argv):
        # not the runner's default: other components' benchmarks may be using that one
        argv += ["--workdir", "/var/tmp/viewos-bench/ext2-run"]
    daemon = viewos_bin("umfuse-ext2")
    targets = [
        KernelExt4("kernel ext4", gib),
        FuseExt2("fuse2fs", gib, lambda i, m: ["fuse2fs", i, m]),
        FuseExt2("umfuse-ext2", gib, lambda i, m: [daemon, i, m]),
    ]
    load_before = open("/proc/loadavg").read().split()[:3]
    results = benchlib.main(targets, "umfuse-ext2 (ext4 image, read-write)",
                            reference="kernel ext4", argv=argv)
    load_after = open("/proc/loadavg").read().split()[:3]
    lines = ["", "e2fsck -fn after each round (exit status; 0 = clean): " +
             ", ".join(f"{t.name} {FSCK[t.name]}" for t in targets if FSCK[t.name]) + ".",
             f"Load average (1, 5, 15 min) before: {' '.join(load_before)}, after: "
             f"{' '.join(load_after)} (the machine is shared; FUSE round trips suffer most "
             "from a busy CPU)."]
    print("\n".join(lines))
    for i, a in enumerate(argv):
        md = argv[i + 1] if a == "--markdown" else a.split("=", 1)[1] \
            if a.startswith("--markdown=") else None
        if md:
            with open(md, "a") as f:
                f.write("\n".join(lines) + "\n")
    return results


if __name__ == "__main__":
    main()
