"""Benchmark of umfuse-fat against its peers on the same FAT32 image (see benchlib.py):
  native dir   a directory on the machine's own file system (the reference)
  umfuse-fat   this project's driver
  fusefat      Debian's View-OS-era FUSE 2 driver, `fusefat -o rw+ IMG MNT`
  mtools       mcopy -s into the image (only for the copy_in workload: it has no mount)
Each FAT target gets a fresh 4 GiB sparse image made by mkfs.vfat -F 32 on the same disk as
the native directory.

fusefat needs minutes for the default 20k-file tree: measure it with a smaller --files, e.g.
  bench_fat.py --targets "native dir,umfuse-fat" --repeat 3
  bench_fat.py --targets "native dir,umfuse-fat,fusefat" --files 2000 --size-mib 256
  bench_fat.py --only copy_in --files 2000
  bench_fat.py --targets "native dir,umfuse-fat,umfuse-fat noxattr" --only untar
copy_in copies an unpacked tree (cp -r; mcopy -s for mtools) into the target. untar does not
check tar's exit status: on fusefat, chmod and chown fail (ENOSYS) and tar reports it.
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
from benchlib import NativeDir, Target, drop_caches, sh, viewos_bin  # noqa: E402

IMAGE_SIZE = "4G"


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class FatMount(Target):
    """A FAT32 image made by mkfs.vfat, mounted by a FUSE driver run in the foreground."""

    def __init__(self, name, argv):
        self.name, self.argv = name, argv
        self.proc = None

    def setup(self, workdir):
        self.img, self.mnt = workdir / "fat.img", workdir / "mnt"
        sh("truncate", "-s", IMAGE_SIZE, self.img)
        sh("mkfs.vfat", "-F", "32", self.img, stdout=subprocess.DEVNULL)
        self.mnt.mkdir()
        self.mount()
        return self.mnt

    def mount(self):
        argv = [a.format(img=self.img, mnt=self.mnt) for a in self.argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(1000):
            if mounted(self.mnt):
                return
            if self.proc.poll() is not None:
                sys.exit(f"bench: {self.name} exited with {self.proc.returncode}")
            time.sleep(0.01)
        sys.exit(f"bench: {self.name} did not mount")

    def unmount(self):
        sh("fusermount3", "-u", self.mnt)
        self.proc.wait(600)  # it writes back before it exits

    def remount(self):
        self.unmount()
        drop_caches()
        self.mount()

    def teardown(self):
        if self.proc and self.proc.poll() is None:
            self.unmount()


class Mtools(Target):
    """No mount: copy_in runs mcopy -s into the image; setup returns the image path."""
    name = "mtools"

    def setup(self, workdir):
        img = workdir / "fat.img"
        sh("truncate", "-s", IMAGE_SIZE, img)
        sh("mkfs.vfat", "-F", "32", img, stdout=subprocess.DEVNULL)
        return img


def source_tree(ctx):
    """The benchmark tree unpacked once on the native disk (the copy_in source)."""
    src = benchlib.CACHE / (Path(ctx["tarball"]).stem + ".unpacked")
    if not (src / "tree").is_dir():
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        with tarfile.open(ctx["tarball"]) as t:
            t.extractall(src)
    return src / "tree"


def w_untar(d, ctx):
    """benchlib's untar, except that tar's exit status is not checked: fusefat has no chmod
    and chown, so tar reports errors there (and goes on extracting: the same work)."""
    sh("tar", "xf", ctx["tarball"], "-C", d, check=False, stderr=subprocess.DEVNULL)
    sh("sync", "-f", d, check=False)


def w_copy_in(d, ctx):
    src = source_tree(ctx)
    if Path(d).is_file():  # mtools
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        sh("mcopy", "-s", "-i", d, src, "::", env=env)
    else:
        sh("cp", "-r", src, d)
        sh("sync", "-f", d, check=False)


def main():
    targets = [
        NativeDir(),
        FatMount("umfuse-fat", [viewos_bin("umfuse-fat"), "-f", "{img}", "{mnt}"]),
        FatMount("fusefat", ["fusefat", "-f", "-o", "rw+", "{img}", "{mnt}"]),
        Mtools(),
        # only when named in --targets: variants of umfuse-fat's own options
        FatMount("umfuse-fat noxattr",
                 [viewos_bin("umfuse-fat"), "-f", "-o", "noxattr", "{img}", "{mnt}"]),
        FatMount("umfuse-fat mt",
                 [viewos_bin("umfuse-fat"), "-f", "-o", "max_threads=10", "{img}", "{mnt}"]),
        FatMount("umfuse-fat -s", [viewos_bin("umfuse-fat"), "-f", "-s", "{img}", "{mnt}"]),
    ]
    argv = sys.argv[1:]
    if "--targets" not in argv:
        targets = [t for t in targets if not t.name.startswith("umfuse-fat ")]
    only = argv[argv.index("--only") + 1].split(",") if "--only" in argv else None
    if only != ["copy_in"]:
        targets = [t for t in targets if t.name != "mtools"]  # it can only copy in
    default = ["untar", "find_ls", "read_all", "seq_write", "seq_read", "rm_rf"]
    if only == ["copy_in"]:
        source_tree({"tarball": benchlib.tree_tarball(
            int(argv[argv.index("--files") + 1]) if "--files" in argv else 20000)})
    benchlib.main(targets, "umfuse-fat vs fusefat, mtools and a native directory",
                  reference="native dir",
                  extra_workloads={"copy_in": (w_copy_in, False), "untar": (w_untar, False)},
                  default_workloads=default, argv=argv)


if __name__ == "__main__":
    main()
