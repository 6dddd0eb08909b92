"""Benchmark of umfuse-iso9660 against its peers on one ISO image (issue 8).

Targets, all reading the same tree:
  source dir      the directory the ISO was made from, on the machine's disk (the reference)
  umfuse-iso9660  this driver
  fuseiso         the classic FUSE ISO driver (Debian's fuseiso)
  archivemount    libarchive behind FUSE (reads the whole archive when it mounts)

The image: the runner's ~20k-file tree plus one large file (big.bin, --big-mib MiB of random
bytes), made once by xorriso (-R -J -iso-level 3) and cached in $VIEWOS_BENCH_CACHE.
Workloads, each after a remount and with the caches dropped:
  find_ls     find tree -ls
  read_all    read every file of the tree (tar | cat)
  random_4k   10 000 reads of 4 KiB at random 4 KiB-aligned offsets of big.bin

Run as root from the repository root after building:
    /usr/bin/python3 tests/bench/bench_iso9660.py --repeat 3 --markdown docs/benchmarks.md
Options: benchlib's (--repeat, --only, --targets, --files, --markdown, --workdir) and --big-mib N.
"""
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import CACHE, Target, drop_caches, sh, viewos_bin  # noqa: E402

RANDOM_READS = 10_000


def big_mib():
    return int(option(sys.argv, "--big-mib") or 512)


def source_tree(files, big):
    """CACHE/iso-src-FILES-BIG: the tree of the runner's tarball and big.bin, made once."""
    src = CACHE / f"iso-src-{files}-{big}"
    if (src / "done").exists():
        return src
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    with tarfile.open(benchlib.tree_tarball(files)) as t:
        t.extractall(src)
    rnd = random.Random(8)
    with open(src / "big.bin", "wb") as f:
        for _ in range(big):
            f.write(rnd.randbytes(1 << 20))
    (src / "done").write_text("")
    return src


def iso_image(src):
    iso = src.with_suffix(".iso")
    if not iso.exists():
        # big.bin's data goes last, after the tree's (sort weights: higher comes first)
        sh("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-iso-level", "3",
           "-m", "done", "--sort-weight", "-1", "/big.bin", "-o", str(iso) + ".tmp", src)
        os.rename(str(iso) + ".tmp", iso)
    return iso


def wait_mounted(path, timeout=600):
    deadline = time.monotonic() + timeout
    real = os.path.realpath(path)
    while time.monotonic() < deadline:
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[4] == real for line in f):
                return
        time.sleep(0.02)
    sys.exit(f"bench: {path} was not mounted within {timeout}s")


class SourceDir(Target):
    name = "source dir"

    def __init__(self, src):
        self.src = src

    def setup(self, workdir):
        return self.src

    def remount(self):
        drop_caches()


class IsoMount(Target):
    """A FUSE daemon that mounts the ISO: mount with `argv + [iso, mnt]`, unmount with
    fusermount3 -u."""

    def __init__(self, name, argv, iso):
        self.name, self.argv, self.iso = name, argv, iso
        self.mnt = None

    def mount(self):
        sh(*self.argv(self.iso, self.mnt))
        wait_mounted(self.mnt)

    def setup(self, workdir):
        self.mnt = workdir / "mnt"
        self.mnt.mkdir()
        self.mount()
        return self.mnt

    def remount(self):
        self.teardown(keep=True)
        drop_caches()
        self.mount()

    def teardown(self, keep=False):
        for _ in range(50):
            if sh("fusermount3", "-u", self.mnt, check=False,
                  stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        # wait for the daemon to let go of the image before the next mount
        time.sleep(0.2)


def w_random_4k(d, ctx):
    path = d / "big.bin"
    size = path.stat().st_size
    rnd = random.Random(11)
    offsets = [rnd.randrange(0, size // 4096) * 4096 for _ in range(RANDOM_READS)]
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for off in offsets:
            if len(os.pread(fd, 4096, off)) != 4096:
                sys.exit(f"bench: short read at {off} in {path}")
    finally:
        os.close(fd)


def archivemount_read_all(iso, workdir, limit):
    """archivemount reads every file by scanning the archive from its start: read_all grows with
    the square of the tree, so it is measured once, with a time limit, outside the tables."""
    mnt = Path(workdir) / "archivemount"
    mnt.mkdir(parents=True, exist_ok=True)
    sh("archivemount", "-o", "ro,readonly", iso, mnt)
    wait_mounted(mnt)
    try:
        drop_caches()
        t0 = time.perf_counter()
        try:
            sh("sh", "-c", f"tar cf - -C '{mnt}' tree | cat > /dev/null", timeout=limit)
            return f"{time.perf_counter() - t0:.1f} s"
        except subprocess.TimeoutExpired:
            return f"did not finish within {limit} s"
    finally:
        for _ in range(50):
            if sh("fusermount3", "-u", mnt, check=False, stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.2)


def main():
    argv = strip_option(sys.argv[1:], "--big-mib")  # ours; the rest goes to benchlib
    files = int(option(argv, "--files") or 20000)
    # a work directory of our own: benchlib empties it before every round
    workdir = option(argv, "--workdir")
    if not workdir:
        workdir = str(CACHE / "iso9660-run")
        argv += ["--workdir", workdir]
    src = source_tree(files, big_mib())
    iso = iso_image(src)
    daemon = viewos_bin("umfuse-iso9660")
    targets = [
        SourceDir(src),
        IsoMount("umfuse-iso9660", lambda i, m: [daemon, i, m], iso),
        IsoMount("fuseiso", lambda i, m: ["fuseiso", "-n", i, m], iso),
        IsoMount("archivemount", lambda i, m: ["archivemount", "-o", "ro,readonly", i, m], iso),
    ]
    title = f"umfuse-iso9660 (ISO 9660 image, read-only; big.bin {big_mib()} MiB)"
    extra = {"random_4k": (w_random_4k, True)}
    # --only and --targets choose among the tables below
    only = option(argv, "--only")
    wanted = only.split(",") if only else ["find_ls", "read_all", "random_4k"]
    names = option(argv, "--targets")
    chosen = [t for t in targets if not names or t.name in names.split(",")]
    if "source dir" not in [t.name for t in chosen]:
        chosen.insert(0, targets[0])
    argv = strip_option(strip_option(argv, "--only"), "--targets")
    tables = [
        (["find_ls"], chosen),
        # archivemount serves a read by scanning the archive from its start: read_all and
        # random reads grow without bound, so it sits those out (read_all is measured once
        # below, with a time limit)
        (["read_all", "random_4k"], [t for t in chosen if t.name != "archivemount"]),
    ]
    for workloads, tgts in tables:
        workloads = [w for w in workloads if w in wanted]
        if workloads and len(tgts) > 1:
            benchlib.main(tgts, title, reference="source dir", extra_workloads=extra,
                          default_workloads=workloads, argv=argv)
    if "read_all" in wanted and "archivemount" in [t.name for t in chosen]:
        line = (f"archivemount, read_all of the same tree, one run: "
                f"{archivemount_read_all(iso, workdir, 900)}\n")
        print(line)
        md = option(argv, "--markdown")
        if md:
            with open(md, "a") as f:
                f.write("\n" + line)


def option(argv, name):
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def strip_option(argv, name):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
