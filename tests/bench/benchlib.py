"""The viewos benchmark runner: the same workloads on several mount targets, in one run.

A component's runner (tests/bench/bench_<component>.py) describes its targets — viewos itself,
its peers, and a reference (the native file system or the kernel driver) — and calls main().
Targets are measured in alternation (A B C, A B C, ...) so that a machine that gets busier or
warmer during the run affects them all alike; the report gives the median of each workload per
target and its ratio to the reference target (>1 = slower than the reference).

Workloads (each gets a fresh, empty target from Target.setup()):
  untar      extract a tree of ~20k small files (generated once, deterministic) into the target
  find_ls    `find DIR -ls` over that tree, after dropping caches (remount)
  read_all   read every file of the tree (tar cf /dev/null, which does read), after a remount
  seq_write  write 1 GiB sequentially (dd, 1 MiB blocks, conv=fsync)
  seq_read   read that 1 GiB back after a remount
  rm_rf      `rm -rf` the tree
A component may add workloads of its own (a function target_dir -> None, timed as a whole).

Usage: /usr/bin/python3 tests/bench/bench_X.py [--repeat N] [--only w1,w2] [--size-mib N]
                                              [--files N] [--markdown FILE] [--targets t1,t2]
--targets picks some of the runner's targets; the reference must be among them.
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("VIEWOS_BENCH_CACHE", "/var/tmp/viewos-bench"))
REPO = Path(__file__).resolve().parent.parent.parent
BUILD = Path(os.environ.get("VIEWOS_BUILD", REPO / "build")).resolve()


def viewos_bin(name):
    for p in BUILD.rglob(name):
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    sys.exit(f"bench: {name} is not built in {BUILD}")


def sh(*cmd, check=True, **kw):
    return subprocess.run([str(c) for c in cmd], check=check, **kw)


def drop_caches():
    sh("sync")
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


class Target:
    """A place to run workloads. Subclasses mount something in setup() and return the directory
    to work in; remount() drops every cache of that mount (default: unmount + mount again via
    teardown/setup with keep=True); teardown() unmounts and removes what setup made."""
    name = "target"

    def setup(self, workdir: Path) -> Path:
        raise NotImplementedError

    def remount(self):
        pass

    def teardown(self):
        pass


class NativeDir(Target):
    """A plain directory on the machine's own file system: the usual reference."""
    def __init__(self, name="native dir"):
        self.name = name

    def setup(self, workdir):
        self.dir = workdir / "native"
        self.dir.mkdir()
        return self.dir

    def remount(self):
        drop_caches()


def tree_tarball(nfiles=20000):
    """A tar of `nfiles` small files in ~400 directories (sizes like a source tree: most under
    8 KiB), made once and cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / f"tree-{nfiles}.tar"
    if tar.exists():
        return tar
    rnd = random.Random(42)
    src = CACHE / f"tree-{nfiles}.src"
    shutil.rmtree(src, ignore_errors=True)
    dirs = [src]
    for i in range(max(1, nfiles // 50)):
        d = rnd.choice(dirs) / f"d{i:04d}"
        d.mkdir(parents=True)
        dirs.append(d)
    sizes = [0, 100, 500, 1000, 2000, 4000, 8000, 16000, 64000]
    weights = [2, 10, 20, 20, 20, 15, 8, 4, 1]
    for i in range(nfiles):
        d = rnd.choice(dirs)
        size = rnd.choices(sizes, weights)[0]
        (d / f"f{i:05d}.c").write_bytes(rnd.randbytes(size))
    with tarfile.open(str(tar) + ".tmp", "w") as t:
        t.add(src, arcname="tree")
    os.rename(str(tar) + ".tmp", tar)
    shutil.rmtree(src)
    return tar


def w_untar(d, ctx):
    sh("tar", "xf", ctx["tarball"], "-C", d)
    sh("sync", "-f", d, check=False)


def w_find_ls(d, ctx):
    sh("find", d / "tree", "-ls", stdout=subprocess.DEVNULL)


def w_read_all(d, ctx):
    # GNU tar skips reading file data when the archive is /dev/null; pipe it to really read
    sh("sh", "-c", f"tar cf - -C '{d}' tree | cat > /dev/null")


def w_seq_write(d, ctx):
    sh("dd", "if=/dev/zero", f"of={d}/big", "bs=1M", f"count={ctx['size_mib']}", "conv=fsync",
       "status=none")


def w_seq_read(d, ctx):
    sh("dd", f"if={d}/big", "of=/dev/null", "bs=1M", "status=none")


def w_rm_rf(d, ctx):
    sh("rm", "-rf", d / "tree")
    sh("sync", "-f", d, check=False)


# name -> (function, remount before it?)
WORKLOADS = {
    "untar": (w_untar, False),
    "find_ls": (w_find_ls, True),
    "read_all": (w_read_all, True),
    "seq_write": (w_seq_write, False),
    "seq_read": (w_seq_read, True),
    "rm_rf": (w_rm_rf, False),
}


def run_round(target, workloads, ctx, workdir):
    """One pass of every workload on a fresh target; returns {workload: seconds}."""
    times = {}
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    d = Path(target.setup(workdir))
    try:
        for name in workloads:
            fn, remount = WORKLOADS[name]
            if remount:
                target.remount()
            drop_caches() if remount else sh("sync")
            t0 = time.perf_counter()
            fn(d, ctx)
            times[name] = time.perf_counter() - t0
    finally:
        target.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
    return times


def report(targets, workloads, results, reference, title):
    """Markdown table: median seconds per workload and target, and the ratio to reference."""
    lines = [f"### {title}", "",
             f"Median of {len(next(iter(results.values()))[workloads[0]])} runs, seconds "
             f"(ratio to {reference}; lower is faster).", ""]
    lines.append("| workload | " + " | ".join(t.name for t in targets) + " |")
    lines.append("|---|" + "---|" * len(targets))
    for w in workloads:
        ref = statistics.median(results[reference][w])
        cells = []
        for t in targets:
            m = statistics.median(results[t.name][w])
            cells.append(f"{m:.3f} ({m / ref:.2f}×)" if ref > 0 else f"{m:.3f}")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pick_targets(targets, wanted, reference):
    """The targets named in --targets, in the runner's order. Every ratio is to the reference,
    so it must be among them; an unknown name is a typo worth stopping for."""
    known = [t.name for t in targets]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        sys.exit(f"bench: unknown target {', '.join(unknown)}; known: {', '.join(known)}")
    if reference not in wanted:
        sys.exit(f"bench: --targets must include the reference target '{reference}' "
                 "(every ratio is to it)")
    return [t for t in targets if t.name in wanted]


def main(targets, title, reference=None, extra_workloads=None, default_workloads=None, argv=None):
    ap = argparse.ArgumentParser(description=title)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", help="comma-separated workloads")
    ap.add_argument("--targets", help="comma-separated target names (default: all)")
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the sequential file")
    ap.add_argument("--files", type=int, default=20000, help="files in the untar tree")
    ap.add_argument("--markdown", help="append the table to this file")
    ap.add_argument("--workdir", default="/var/tmp/viewos-bench/run")
    args = ap.parse_args(argv)

    if extra_workloads:
        WORKLOADS.update(extra_workloads)
    workloads = args.only.split(",") if args.only else list(default_workloads or WORKLOADS)
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"bench: unknown workload {w}; known: {', '.join(WORKLOADS)}")
    reference = reference or targets[0].name
    if args.targets:
        targets = pick_targets(targets, args.targets.split(","), reference)
    ctx = {"tarball": tree_tarball(args.files), "size_mib": args.size_mib}
    results = {t.name: {w: [] for w in workloads} for t in targets}
    workdir = Path(args.workdir)
    for i in range(args.repeat):
        for t in targets:
            times = run_round(t, workloads, ctx, workdir)
            for w, s in times.items():
                results[t.name][w].append(s)
            print(f"round {i + 1}/{args.repeat} {t.name}: " +
                  ", ".join(f"{w} {s:.3f}s" for w, s in times.items()), file=sys.stderr)
    table = report(targets, workloads, results, reference,
                   f"{title} — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
                   f"{args.files} files, {args.size_mib} MiB sequential")
    print(table)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + table)
    return results
