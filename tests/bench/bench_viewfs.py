"""Benchmark of viewfs against the union file systems it replaces, on the same workloads in one
run (see benchlib.py). Run as root from the repository root after building:

    /usr/bin/python3 tests/bench/bench_viewfs.py --repeat 3 --markdown docs/benchmarks.md

Targets: the original directory itself (the limit), kernel overlayfs (the reference of the
ratios), fuse-overlayfs, unionfs-fuse (-o cow), mergerfs, viewfs -o cow and viewfs -o mincow.
Every target gets the same original content (below) and a fresh, empty layer; workloads write
into the union, so they land in the layer.

For mincow the original is a read-only bind mount: the daemon runs as root here (root may enter
every mount; a user's mount admits nobody else), and root may change anything, so this is how
"the user may not change the original" is staged: each create first tries the original, fails
with EROFS and goes to the layer, and a write to an original file copies it up, as for an
ordinary user on system files.

Workloads besides benchlib's (untar, find_ls, read_all, seq_write, seq_read, rm_rf):
  find_ls_orig   find -ls over a tree of the original (the common case of a view: reading the
                 system through the union), after a remount
  read_all_orig  read every file of that tree, after a remount
  copyup         append a line to 2000 original files (each is copied up first)

--variants adds viewfs -o cow,volatile and -o cow,writeback (select with --targets).
"""
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Target, drop_caches, sh, viewos_bin  # noqa: E402

COPYUP_FILES = 2000


def populate(lower, ctx):
    """The original content every target starts with: orig/ (2000 small files for copyup) and
    lowertree/ (the benchmark tree, for reading through the union)."""
    lower = Path(lower)
    orig = lower / "orig"
    orig.mkdir(parents=True)
    for i in range(COPYUP_FILES):
        d = orig / f"d{i % 40:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:04d}").write_bytes(b"original line of some text\n" * (1 + i % 20))
    (lower / "lowertree").mkdir()
    sh("tar", "xf", ctx["tarball"], "-C", lower / "lowertree")


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def umount(path):
    r = subprocess.run(["umount", path], capture_output=True)
    if r.returncode != 0 and mounted(path):
        time.sleep(0.5)
        subprocess.run(["umount", "-l", path], capture_output=True)


class Native(Target):
    """The original directory itself: the limit."""
    name = "original dir"

    def setup(self, workdir):
        self.dir = workdir / "native"
        self.dir.mkdir()
        populate(self.dir, CTX)
        return self.dir

    def remount(self):
        drop_caches()


class Union(Target):
    """lower/ (the original), upper/ (the layer), mnt/ (the union)."""

    def setup(self, workdir):
        self.base = workdir / self.name.replace(" ", "-")
        self.lower, self.upper, self.work, self.mnt = (self.base / n for n in
                                                       ("lower", "upper", "work", "mnt"))
        for d in (self.lower, self.upper, self.work, self.mnt):
            d.mkdir(parents=True)
        populate(self.lower, CTX)
        self.mount()
        return self.mnt

    def remount(self):
        self.unmount()
        drop_caches()
        self.mount()

    def teardown(self):
        self.unmount()

    def unmount(self):
        umount(self.mnt)


class KernelOverlay(Union):
    name = "kernel overlayfs"

    def mount(self):
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}", self.mnt)


class FuseOverlay(Union):
    name = "fuse-overlayfs"

    def mount(self):
        sh("fuse-overlayfs", "-o",
           f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}", self.mnt)


class UnionfsFuse(Union):
    name = "unionfs-fuse"

    def mount(self):
        sh("unionfs", "-o", "cow", f"{self.upper}=RW:{self.lower}=RO", self.mnt)


class Mergerfs(Union):
    name = "mergerfs"

    def mount(self):
        sh("mergerfs", f"{self.upper}=RW:{self.lower}=RO", self.mnt)


class Viewfs(Target):
    """viewfs: the original is the mount point's own content."""

    def __init__(self, mode, extra=""):
        self.mode, self.extra = mode, extra
        self.name = f"viewfs {mode}" + (f" {extra}" if extra else "")

    def setup(self, workdir):
        self.base = workdir / self.name.replace(" ", "-")
        self.mnt, self.layer = self.base / "mnt", self.base / "layer"
        self.mnt.mkdir(parents=True)
        self.layer.mkdir()
        populate(self.mnt, CTX)
        self.ro_bind = self.mode == "mincow"
        if self.ro_bind:
            sh("mount", "--bind", self.mnt, self.mnt)
            sh("mount", "-o", "remount,bind,ro", self.mnt)
        self.mount()
        return self.mnt

    def mount(self):
        opts = self.mode + (f",{self.extra}" if self.extra else "")
        sh(viewos_bin("viewfs"), "-o", opts, self.layer, self.mnt)

    def remount(self):
        sh("fusermount3", "-u", self.mnt)
        drop_caches()
        self.mount()

    def teardown(self):
        sh("fusermount3", "-u", self.mnt, check=False)
        if self.ro_bind:
            umount(self.mnt)


def w_find_ls_orig(d, ctx):
    sh("find", d / "lowertree", "-ls", stdout=subprocess.DEVNULL)


def w_read_all_orig(d, ctx):
    sh("sh", "-c", f"tar cf - -C '{d}' lowertree | cat > /dev/null")


def w_copyup(d, ctx):
    # one process appending to every file, as an editor or a package manager would
    sh(sys.executable, "-c",
       "import os, sys\n"
       "for r, ds, fs in os.walk(sys.argv[1]):\n"
       "    for f in fs:\n"
       "        with open(os.path.join(r, f), 'a') as fh:\n"
       "            fh.write('appended line\\n')\n", d / "orig")
    sh("sync", "-f", d, check=False)


CTX = {}
EXTRA = {
    "find_ls_orig": (w_find_ls_orig, True),
    "read_all_orig": (w_read_all_orig, True),
    "copyup": (w_copyup, False),
}
WORKLOADS = ["untar", "find_ls", "read_all", "seq_write", "seq_read", "rm_rf", "find_ls_orig",
             "read_all_orig", "copyup"]


def main():
    argv = sys.argv[1:]
    # --variants: also viewfs with its speed-for-safety options (-o volatile, -o writeback)
    variants = "--variants" in argv
    if variants:
        argv.remove("--variants")
    # the tarball is needed by populate() before benchlib makes its context
    files = 20000
    if "--files" in argv:
        files = int(argv[argv.index("--files") + 1])
    CTX["tarball"] = benchlib.tree_tarball(files)
    targets = [Native(), KernelOverlay(), FuseOverlay(), UnionfsFuse(), Mergerfs(),
               Viewfs("cow"), Viewfs("mincow")]
    if variants:
        targets += [Viewfs("cow", "volatile"), Viewfs("cow", "writeback")]
    benchlib.main(targets, "viewfs", reference="kernel overlayfs", extra_workloads=EXTRA,
                  default_workloads=WORKLOADS, argv=argv)


if __name__ == "__main__":
    main()
