"""umdev benchmark: device files and NBD exports against their references, in one run.

Sets (--set, one table each; run them all with --set all):
  fuse-shm   fio (direct I/O) on an image file in /dev/shm (reference), a umdev-mbr partition
             file of that image, and a umdev-ramdisk: what FUSE and the daemon cost.
  fuse-disk  the same with the image on the machine's disk (/var/tmp): the reference then goes
             to the disk, the daemon through the image's page cache.
  nbd-file   nbdcopy in/out and fio's nbd engine against `nbdkit file IMAGE` (reference),
             `nbdkit nbdkit-umdev-plugin.so mbr IMAGE`, and the export of `umdev-mbr -o nbd=`.
  nbd-mem    the same against `nbdkit memory` (reference), the plugin's ramdisk, and the
             export of `umdev-ramdisk -o nbd=`.

Run as root from the repository root after building (VIEWOS_BUILD selects the build):
    /usr/bin/python3 tests/bench/bench_umdev.py --set all --repeat 3 --markdown docs/benchmarks.md
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import Target, drop_caches, sh, viewos_bin  # noqa: E402

MIB = 1 << 20
SHM = Path("/dev/shm/viewos-bench-umdev")
# fio's own figures (its start-up, ~0.3 s here, would swamp the wall time of short jobs):
# {workload: {target: [MiB/s or IOPS per round]}}, filled by fio() for the target being run
FIO_RESULTS = {}
CURRENT = {"target": None}


def wait_for(cond, timeout=20):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            sys.exit("bench: timed out")
        time.sleep(0.01)


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def image_size(ctx_size_mib):
    return (ctx_size_mib + 128) * MIB  # room for the table and alignment


# --------------------------------------------------------------------------- FUSE targets

class ImageFile(Target):
    """The image file itself, with direct I/O: the reference."""

    def __init__(self, where):
        self.where, self.name = where, f"image file ({where})"

    def setup(self, workdir):
        CURRENT["target"] = self.name
        base = SHM if self.where == "shm" else workdir
        base.mkdir(parents=True, exist_ok=True)
        self.img = base / "ref.img"
        sh("truncate", "-s", str(image_size(SIZE_MIB)), self.img)
        d = workdir / "t"
        d.mkdir()
        (d / "dev").symlink_to(self.img)
        return d

    def remount(self):
        drop_caches()

    def teardown(self):
        self.img.unlink(missing_ok=True)


class MbrPartition(Target):
    """Partition 1 of the image, through umdev-mbr (-o direct: O_DIRECT on the image too)."""

    def __init__(self, where, direct=False):
        self.where, self.direct = where, direct
        self.name = f"umdev-mbr{' -o direct' if direct else ''} partition ({where})"

    def setup(self, workdir):
        CURRENT["target"] = self.name
        base = SHM if self.where == "shm" else workdir
        base.mkdir(parents=True, exist_ok=True)
        self.img = base / "mbr.img"
        sh("truncate", "-s", str(image_size(SIZE_MIB)), self.img)
        sh("sfdisk", "--quiet", self.img, input=f"size={SIZE_MIB + 64}MiB\n", text=True)
        d = workdir / "t"
        d.mkdir()
        self.disk = d / "hda"
        sh(viewos_bin("umdev-mbr"), *(["-o", "direct"] if self.direct else []), self.img,
           self.disk)
        (d / "dev").symlink_to(d / "hda1")
        return d

    def remount(self):
        drop_caches()

    def teardown(self):
        sh("fusermount3", "-u", self.disk)
        wait_for(lambda: not self.disk.exists())
        self.img.unlink(missing_ok=True)


class Ramdisk(Target):
    name = "umdev-ramdisk"

    def setup(self, workdir):
        CURRENT["target"] = self.name
        d = workdir / "t"
        d.mkdir()
        self.dev = d / "dev"
        sh(viewos_bin("umdev-ramdisk"), "-o", f"size={SIZE_MIB + 64}M", self.dev)
        return d

    def remount(self):
        drop_caches()

    def teardown(self):
        sh("fusermount3", "-u", self.dev)
        wait_for(lambda: not self.dev.exists())


def fio(workload, metric, *args):
    """Run one fio job and record its own figure: "bw" (MiB/s) or "iops"."""
    out = SHM / "fio.json"
    SHM.mkdir(parents=True, exist_ok=True)
    sh("fio", "--output-format=json", f"--output={out}", "--randrepeat=1", "--norandommap",
       f"--name={workload}", *args)
    job = json.loads(out.read_text())["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] else job["read"]
    value = side["bw_bytes"] / MIB if metric == "bw" else side["iops"]
    FIO_RESULTS.setdefault(workload, {}).setdefault(CURRENT["target"], []).append(value)


def fio_dev(workload, metric, d, *args):
    fio(workload, metric, f"--filename={d}/dev", "--direct=1", "--fallocate=none", *args)


def w_seq_write(d, ctx):
    fio_dev("fio_seq_write_1M", "bw", d, "--rw=write", "--bs=1M", f"--size={ctx['size_mib']}M",
            "--ioengine=psync", "--end_fsync=1")


def w_seq_read(d, ctx):
    fio_dev("fio_seq_read_1M", "bw", d, "--rw=read", "--bs=1M", f"--size={ctx['size_mib']}M",
            "--ioengine=psync")


def w_randread(d, ctx):
    fio_dev("fio_randread_4k", "iops", d, "--rw=randread", "--bs=4k",
            f"--size={ctx['size_mib']}M", "--io_size=256M", "--ioengine=psync")


def w_randwrite(d, ctx):
    fio_dev("fio_randwrite_4k", "iops", d, "--rw=randwrite", "--bs=4k",
            f"--size={ctx['size_mib']}M", "--io_size=256M", "--ioengine=psync", "--end_fsync=1")


def w_randread_qd16(d, ctx):
    fio_dev("fio_randread_4k_qd16", "iops", d, "--rw=randread", "--bs=4k",
            f"--size={ctx['size_mib']}M", "--io_size=256M", "--ioengine=libaio",
            "--iodepth=16")


FUSE_WORKLOADS = {
    "fio_seq_write_1M": (w_seq_write, False),
    "fio_seq_read_1M": (w_seq_read, True),
    "fio_randread_4k": (w_randread, False),
    "fio_randwrite_4k": (w_randwrite, False),
    "fio_randread_4k_qd16": (w_randread_qd16, False),
}


# --------------------------------------------------------------------------- NBD targets

def source_file(size_mib):
    """1 GiB of random bytes in memory, the input of nbdcopy (made once)."""
    SHM.mkdir(parents=True, exist_ok=True)
    src = SHM / f"source-{size_mib}.raw"
    if not src.exists():
        sh("dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={size_mib}", "status=none")
    return src


def plugin_env():
    """A sanitized plugin needs the ASan runtime preloaded into nbdkit (not for benchmarks,
    but harmless to support)."""
    env = dict(os.environ)
    libs = subprocess.run(["ldd", viewos_bin("nbdkit-umdev-plugin.so")], capture_output=True,
                          text=True).stdout
    if "libasan" in libs:
        env["LD_PRELOAD"] = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                                           capture_output=True, text=True).stdout.strip()
    return env


class Nbdkit(Target):
    """nbdkit ARGS on a Unix socket; {img} in ARGS is an image file made for the run."""

    def __init__(self, name, *args, image=False):
        self.name, self.args, self.image = name, args, image

    def setup(self, workdir):
        CURRENT["target"] = self.name
        d = workdir / "t"
        d.mkdir()
        self.img = SHM / "nbd.img"
        if self.image:
            SHM.mkdir(parents=True, exist_ok=True)
            sh("truncate", "-s", str(image_size(SIZE_MIB)), self.img)
        sock, pidfile = d / "sock", d / "pid"
        args = [str(a).replace("{img}", str(self.img)).replace("{plugin}",
                                                               viewos_bin("nbdkit-umdev-plugin.so"))
                for a in self.args]
        self.proc = subprocess.Popen(["nbdkit", "-f", "-U", sock, "-P", pidfile, *args],
                                     env=plugin_env())
        wait_for(pidfile.exists)
        (d / "uri").write_text(f"nbd+unix:///?socket={sock}")
        return d

    def teardown(self):
        self.proc.terminate()
        self.proc.wait()
        self.img.unlink(missing_ok=True)


class DaemonExport(Target):
    """The NBD export of a umdev daemon run with -o nbd=unix:SOCKET."""

    def __init__(self, name, daemon):
        self.name, self.daemon = name, daemon

    def setup(self, workdir):
        CURRENT["target"] = self.name
        d = workdir / "t"
        d.mkdir()
        sock, self.dev = d / "sock", d / "dev"
        self.img = SHM / "daemon.img"
        if self.daemon == "umdev-mbr":
            SHM.mkdir(parents=True, exist_ok=True)
            sh("truncate", "-s", str(image_size(SIZE_MIB)), self.img)
            sh(viewos_bin("umdev-mbr"), "-o", f"nbd=unix:{sock}", self.img, self.dev)
        else:
            sh(viewos_bin("umdev-ramdisk"), "-o", f"size={SIZE_MIB + 128}M,nbd=unix:{sock}",
               self.dev)
        (d / "uri").write_text(f"nbd+unix:///?socket={sock}")
        return d

    def teardown(self):
        sh("fusermount3", "-u", self.dev)
        wait_for(lambda: not self.dev.exists())
        self.img.unlink(missing_ok=True)


def uri_of(d):
    return (d / "uri").read_text()


def w_nbdcopy_in(d, ctx):
    sh("nbdcopy", "--flush", source_file(ctx["size_mib"]), uri_of(d))


def w_nbdcopy_out(d, ctx):
    sh("nbdcopy", uri_of(d), "null:")


def w_nbd_randread(d, ctx):
    fio("fio_nbd_randread_4k", "iops", "--ioengine=nbd", f"--uri={uri_of(d)}",
        "--rw=randread", "--bs=4k", f"--size={ctx['size_mib']}M", "--io_size=64M",
        "--iodepth=1")


def w_nbd_randwrite(d, ctx):
    fio("fio_nbd_randwrite_4k", "iops", "--ioengine=nbd", f"--uri={uri_of(d)}",
        "--rw=randwrite", "--bs=4k", f"--size={ctx['size_mib']}M", "--io_size=64M",
        "--iodepth=1")


NBD_WORKLOADS = {
    "nbdcopy_in": (w_nbdcopy_in, False),
    "nbdcopy_out": (w_nbdcopy_out, False),
    "fio_nbd_randread_4k": (w_nbd_randread, False),
    "fio_nbd_randwrite_4k": (w_nbd_randwrite, False),
}

SIZE_MIB = 1024


def sets():
    return {
        "fuse-shm": ([ImageFile("shm"), MbrPartition("shm"), MbrPartition("shm", direct=True),
                      Ramdisk()], FUSE_WORKLOADS,
                     "umdev device files, image in /dev/shm (fio, direct I/O)"),
        "fuse-disk": ([ImageFile("disk"), MbrPartition("disk"),
                       MbrPartition("disk", direct=True)], FUSE_WORKLOADS,
                      "umdev device files, image on disk (fio, direct I/O)"),
        "nbd-file": ([Nbdkit("nbdkit file", "file", "{img}", image=True),
                      Nbdkit("umdev plugin mbr", "{plugin}", "mbr", "{img}", image=True),
                      DaemonExport("umdev-mbr -o nbd", "umdev-mbr")], NBD_WORKLOADS,
                     "NBD over a Unix socket, image in /dev/shm"),
        "nbd-mem": ([Nbdkit("nbdkit memory", "memory", f"{SIZE_MIB + 128}M"),
                     Nbdkit("umdev plugin ramdisk", "{plugin}", "ramdisk",
                            f"size={SIZE_MIB + 128}M"),
                     DaemonExport("umdev-ramdisk -o nbd", "umdev-ramdisk")], NBD_WORKLOADS,
                    "NBD over a Unix socket, RAM"),
    }


def main():
    global SIZE_MIB
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--set", default="all")
    ap.add_argument("--size-mib", type=int, default=1024)
    own, rest = ap.parse_known_args()
    SIZE_MIB = own.size_mib
    ap2 = argparse.ArgumentParser(add_help=False)
    ap2.add_argument("--markdown")
    md, _ = ap2.parse_known_args(rest)
    chosen = list(sets()) if own.set == "all" else own.set.split(",")
    for name in chosen:
        targets, workloads, title = sets()[name]
        benchlib.WORKLOADS.clear()
        FIO_RESULTS.clear()
        full_title = f"umdev {name}: {title}"
        # the wall-time table goes to the markdown only where nothing better measures (nbdcopy)
        argv = list(rest)
        if "--workdir" not in argv:  # not benchlib's shared default: other runners clean it
            argv += ["--workdir", "/var/tmp/viewos-bench/umdev-run"]
        if name.startswith("fuse") and md.markdown:
            i = argv.index("--markdown")
            del argv[i:i + 2]
        benchlib.main(targets, full_title, extra_workloads=workloads,
                      default_workloads=list(workloads),
                      argv=argv + ["--size-mib", str(SIZE_MIB), "--files", "10"])
        table = fio_table(targets, full_title)
        print(table)
        if md.markdown and table:
            with open(md.markdown, "a") as f:
                f.write("\n" + table)


def fio_table(targets, title):
    if not FIO_RESULTS:
        return ""
    ref = targets[0].name
    lines = [f"### {title} — fio's own figures, {time.strftime('%Y-%m-%d')}", "",
             f"Median of the rounds; MiB/s for 1M jobs, IOPS for 4k jobs (ratio to {ref}; "
             "higher is faster).", "",
             "| workload | " + " | ".join(t.name for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for w, per_target in FIO_RESULTS.items():
        base = statistics.median(per_target[ref])
        cells = []
        for t in targets:
            m = statistics.median(per_target[t.name])
            cells.append(f"{m:,.0f} ({m / base:.2f}×)")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
