#!/usr/bin/python3
"""Benchmark of views: the same work on the host (as root in a throwaway chroot), in a view
(`viewfs -o mincow,except=/tmp,vstat LAYER / -- ...` as an unprivileged user), and under proot
(`proot -0`, the user-mode chroot peer), alternating rounds, medians and ratios to the host.

The data set is a Debian minbase made once with debootstrap (cached in
$VIEWOS_BENCH_CACHE/views/chroot): `/` and `/usr` of the host are ~9 GB here, too big for a run
of a few minutes, so every command runs chrooted into that tree, in each environment:
  dpkg_i   dpkg -i of 20 packages built here (150 files each) into a fresh copy of the chroot
           (host, proot) or with a fresh layer (view: the chroot itself is root's, so mincow puts
           every change into the layer)
  find_ls  find / -xdev -ls > /dev/null, 10 times (warm cache; ~8 000 entries)
  tar_usr  tar cf - /usr | wc -c, 3 times        (warm cache; ~180 MB)
Each timing includes starting the environment (the view: namespaces, mount, pivot_root).
Run as root: /usr/bin/python3 tests/bench/bench_views.py [--repeat N] [--markdown FILE]
"""
import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
BUILD = Path(os.environ.get("VIEWOS_BUILD", REPO / "build-views")).resolve()
CACHE = Path(os.environ.get("VIEWOS_BENCH_CACHE", "/var/tmp/viewos-bench")) / "views"
USER = "viewos-test"
NDEBS, NFILES = 20, 150
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "HOME": "/root"}


def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def viewfs_bin():
    for p in BUILD.rglob("viewfs"):
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    sys.exit(f"bench: viewfs is not built in {BUILD}")


def prepare():
    chroot = CACHE / "chroot"
    if not (chroot / "usr/bin/dpkg").exists():
        print("bench: debootstrap --variant=minbase bookworm (once)", flush=True)
        shutil.rmtree(CACHE / "chroot.new", ignore_errors=True)
        sh("debootstrap", "--variant=minbase", "bookworm", CACHE / "chroot.new",
           "http://deb.debian.org/debian", stdout=subprocess.DEVNULL)
        os.rename(CACHE / "chroot.new", chroot)
    debs = chroot / "debs"
    if not (debs / f"bench{NDEBS - 1:02d}_1.0_all.deb").exists():
        debs.mkdir(exist_ok=True)
        work = CACHE / "debsrc"
        shutil.rmtree(work, ignore_errors=True)
        for i in range(NDEBS):
            root = work / f"bench{i:02d}"
            d = root / "usr/share" / f"bench{i:02d}"
            d.mkdir(parents=True)
            (root / "DEBIAN").mkdir()
            for j in range(NFILES):
                (d / f"f{j:03d}.txt").write_text(f"bench {i} file {j}\n" * (20 + j % 50))
            (root / "DEBIAN/control").write_text(
                f"Package: bench{i:02d}\nVersion: 1.0\nArchitecture: all\n"
                "Maintainer: viewos bench <bench@viewos.invalid>\nDescription: bench data\n x\n")
            sh("dpkg-deb", "--root-owner-group", "-Zgzip", "-b", root,
               debs / f"bench{i:02d}_1.0_all.deb", stdout=subprocess.DEVNULL)
        shutil.rmtree(work)
    return chroot


class Env:
    name = "?"

    def setup(self, workload):
        pass

    def argv(self, cmd):
        raise NotImplementedError

    def teardown(self):
        pass


class Host(Env):
    """root, chroot into the tree (a fresh copy for dpkg)."""
    name = "host (root, chroot)"

    def __init__(self, chroot, scratch):
        self.chroot, self.scratch, self.root = chroot, scratch, chroot

    def setup(self, workload):
        self.root = self.chroot
        if workload == "dpkg_i":
            self.root = self.scratch / "host-copy"
            sh("cp", "-a", self.chroot, self.root)

    def argv(self, cmd):
        return ["chroot", self.root, "/bin/sh", "-c", cmd]

    def teardown(self):
        if self.root != self.chroot:
            sh("rm", "-rf", self.root)


class View(Env):
    """the unprivileged user in a view of / with a fresh layer, chrooted into the tree."""
    name = "view (viewfs mincow,vstat)"

    def __init__(self, chroot, scratch, pw):
        self.chroot, self.scratch, self.pw = chroot, scratch, pw
        self.viewfs = viewfs_bin()

    def setup(self, workload):
        self.layer = self.scratch / "layer"
        self.layer.mkdir()
        os.chown(self.layer, self.pw.pw_uid, self.pw.pw_gid)

    def argv(self, cmd):
        return ["setpriv", f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}",
                "--init-groups", "--", self.viewfs, "-o", "mincow,except=/tmp,vstat", self.layer,
                "/", "--", "/bin/sh", "-c",
                # the tree's own /dev nodes cannot be opened through a mount made in a user
                # namespace (nodev): the view's real /dev and /proc go in, as proot's -b does
                f"mount --rbind /dev {self.chroot}/dev && mount --rbind /proc {self.chroot}/proc"
                f" && exec /usr/sbin/chroot {self.chroot} /bin/sh -c '{cmd}'"]

    def teardown(self):
        sh("rm", "-rf", self.layer)


class Proot(Env):
    """the unprivileged user under proot -0 (a user-owned copy for dpkg: proot writes for
    real)."""
    name = "proot -0"

    def __init__(self, chroot, scratch, pw):
        self.chroot, self.scratch, self.pw = chroot, scratch, pw
        self.root = chroot

    def setup(self, workload):
        self.root = self.chroot
        if workload == "dpkg_i":
            self.root = self.scratch / "proot-copy"
            sh("cp", "-a", self.chroot, self.root)
            sh("chown", "-R", f"{self.pw.pw_uid}:{self.pw.pw_gid}", self.root)

    def argv(self, cmd):
        return ["setpriv", f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}",
                "--init-groups", "--", "proot", "-0", "-r", self.root, "-b", "/proc", "-b",
                "/dev", "-b", "/sys", "/bin/sh", "-c", cmd]

    def teardown(self):
        if self.root != self.chroot:
            sh("rm", "-rf", self.root)


WORKLOADS = {
    "dpkg_i": "dpkg -i /debs/*.deb > /dev/null",
    # (2>/dev/null; true: the user cannot read root's 0700 directories of the tree (/root):
    # proot reports them, the view shows them empty, the host reads them; a few files)
    "find_ls": "for i in 1 2 3 4 5 6 7 8 9 10; do find / -xdev -ls > /dev/null 2>&1; done; true",
    "tar_usr": "for i in 1 2 3; do tar cf - /usr 2>/dev/null | wc -c > /dev/null; done",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--markdown")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the host reference chroots)")
    chroot = prepare()
    pw = pwd.getpwnam(USER)
    scratch = Path("/tmp/viewos-bench-views")  # under except=/tmp: the layer may live here
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    os.chmod(scratch, 0o755)
    envs = [Host(chroot, scratch), View(chroot, scratch, pw), Proot(chroot, scratch, pw)]
    workloads = [w for w in args.only.split(",") if w]
    times = {(e.name, w): [] for e in envs for w in workloads}
    # warm the page cache once for the read workloads
    for w in ("find_ls", "tar_usr"):
        if w in workloads:
            subprocess.run(Host(chroot, scratch).argv(WORKLOADS[w]), env=ENV, check=True,
                           cwd="/")
    for r in range(args.repeat):
        for w in workloads:
            # a different environment goes first in each round (the first one of a round
            # meets the disk right after the previous one's clean-up)
            for e in envs[r % len(envs):] + envs[:r % len(envs)]:
                e.setup(w)
                sh("sync")  # the set-up's copies must not be flushed inside the timing
                try:
                    t0 = time.monotonic()
                    p = subprocess.run([str(a) for a in e.argv(WORKLOADS[w])], env=ENV,
                                       capture_output=True, text=True, cwd="/")
                    dt = time.monotonic() - t0
                    if p.returncode != 0:
                        sys.exit(f"bench: {w} failed in {e.name}: {p.stderr.strip()}")
                finally:
                    e.teardown()
                times[(e.name, w)].append(dt)
                print(f"round {r + 1} {w:8s} {e.name:28s} {dt:7.2f}s", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    head = "| workload | " + " | ".join(e.name for e in envs) + " |"
    lines = [head, "|" + "---|" * (len(envs) + 1)]
    for w in workloads:
        ref = statistics.median(times[(envs[0].name, w)])
        cells = []
        for e in envs:
            m = statistics.median(times[(e.name, w)])
            cells.append(f"{m:.2f} s" + ("" if e is envs[0] else f" ({m / ref:.2f}x)"))
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"\nviews benchmark: medians of {args.repeat} rounds, ratio to the host\n{table}")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
