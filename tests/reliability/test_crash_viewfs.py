"""kill -9 of viewfs at random points of a workload on a cow,vstat mount, over and over on one
layer: 50 kills in the suite (500 with VIEWOS_LONG=1). Every completed operation must be whole
after the layer is mounted again; the original tree must never change.

The daemon and the workload run as the unprivileged test user (so chown and device nodes can
only be virtual: records in SOURCE/.-). The workload (this file run as a script: `work`) makes
random operations on the view — appends and writes into the middle of original files (copy-ups),
new files, renames of files (to free names, and over existing files whatever metadata either
has: those renames are journaled) and of whole original directories (to free names and over
empty directories), unlinks and rmdirs of original
entries (whiteouts), mkdir where an original directory was deleted (opaque directories),
symlinks, FIFOs, chmod, and vstat chown and device nodes (user.viewfs.mknod) — and logs each one
outside the mount, `B <op>` before it starts and `D` once it returned. The test keeps a model of
the whole view. After each kill (at a random moment 10-300 ms into the workload) it removes the
dead mount, checks the original tree against its digest and every record in the layer with a
parser of its own, mounts the layer again and compares the whole view (every path, type, mode,
owner, device number, size, content checksum, symlink target) with the model: every operation
logged done must be there (a write that returns a short count is not done); the one that was
under way when the daemon died must be either not done or done (a new file may also be there
empty: create and write are two operations for the caller too; a write may have cleared
setuid/setgid and reached the file up to a page boundary, as a write(2) cut by a fatal signal
does on any file system) — never half a copy-up, an entry at both names, a whiteout that does
not hide, or a name viewfs uses for its own files (the work area SOURCE/.-/.- must also be empty
again after the mount).

Rounds cycle through -o cow,vstat / cow,vstat,writeback / cow,vstat,volatile."""
import errno
import hashlib
import json
import os
import random
import stat
import sys
import time

PIECE_CACHE = {}


# --------------------------------------------------------------------------- the model

def piece(seed, n):
    key = (seed, n)
    if key not in PIECE_CACHE:
        if len(PIECE_CACHE) > 4096:
            PIECE_CACHE.clear()
        PIECE_CACHE[key] = random.Random(seed).randbytes(n)
    return PIECE_CACHE[key]


def content(spec):
    """The bytes a file holds after its history: ["b", seed, n] (written whole), ["a", seed, n]
    (appended), ["w", off, seed, n] (written at off); an "a" or "w" with one more number k had
    only its first k bytes written (a write cut short by the kill)."""
    buf = bytearray()
    for s in spec:
        if s[0] == "b":
            buf = bytearray(piece(s[1], s[2]))
        elif s[0] == "a":
            buf += piece(s[1], s[2])[:s[3] if len(s) > 3 else None]
        else:
            off, data = s[1], piece(s[2], s[3])[:s[4] if len(s) > 4 else None]
            if len(buf) < off:
                buf += bytes(off - len(buf))
            buf[off:off + len(data)] = data
    return bytes(buf)


def kill_privs(e):
    """What a write or a chown by an unprivileged caller does to setuid/setgid (as the kernel
    does it: setgid only goes when group execute is set)."""
    e["mode"] &= ~(0o6000 if e["mode"] & 0o010 else 0o4000)


def parent(p):
    return p.rsplit("/", 1)[0] if "/" in p else ""


def apply(model, op):
    """The model after op (a new dict); also the intermediate states a kill may leave."""
    m = {k: dict(v) for k, v in model.items()}
    kind = op["op"]
    between = []
    if kind in ("append", "write"):
        e = m[op["path"]]
        start = op["off"] if kind == "write" else len(content(e["spec"]))
        step = ["a", op["seed"], op["n"]] if kind == "append" else \
            ["w", op["off"], op["seed"], op["n"]]
        # The kernel clears setuid/setgid (a setattr) before the data goes: a kill between
        # leaves the bits cleared and the data not written.
        cleared = {k: dict(v) for k, v in model.items()}
        kill_privs(cleared[op["path"]])
        if cleared[op["path"]]["mode"] != e["mode"]:
            between.append(cleared)
        # A write(2) that the kill cuts short keeps what reached the file, up to a page boundary
        # (a file system's write stops between pages for a fatal signal; FUSE sends pages).
        for edge in range((start // 4096 + 1) * 4096, start + op["n"], 4096):
            part = {k: dict(v) for k, v in model.items()}
            part[op["path"]]["spec"] = e["spec"] + [step + [edge - start]]
            kill_privs(part[op["path"]])
            between.append(part)
        e["spec"] = e["spec"] + [step]
        kill_privs(e)
    elif kind == "create":
        m[op["path"]] = {"t": "f", "spec": [["b", op["seed"], op["n"]]], "mode": 0o644,
                         "uid": op["uid"], "gid": op["gid"]}
        empty = {k: dict(v) for k, v in model.items()}
        empty[op["path"]] = dict(m[op["path"]], spec=[])
        between.append(empty)
    elif kind == "rename":
        src, dst = op["path"], op["to"]
        moved = {k: v for k, v in m.items() if k == src or k.startswith(src + "/")}
        for k in moved:
            del m[k]
        for k in [k for k in m if k == dst or k.startswith(dst + "/")]:
            del m[k]
        for k, v in moved.items():
            m[dst + k[len(src):]] = v
    elif kind in ("unlink", "rmdir"):
        del m[op["path"]]
    elif kind == "mkdir":
        m[op["path"]] = {"t": "d", "mode": 0o755, "uid": op["uid"], "gid": op["gid"]}
    elif kind == "symlink":
        m[op["path"]] = {"t": "l", "target": op["target"], "mode": 0o777, "uid": op["uid"],
                         "gid": op["gid"]}
    elif kind == "mkfifo":
        m[op["path"]] = {"t": "p", "mode": 0o644, "uid": op["uid"], "gid": op["gid"]}
    elif kind == "mknod":
        plain = {"t": "f", "spec": [], "mode": 0o644, "uid": op["uid"], "gid": op["gid"]}
        first = {k: dict(v) for k, v in model.items()}
        first[op["path"]] = plain
        between.append(first)
        m[op["path"]] = dict(plain, t=op["type"], rdev=op["rdev"], frozen=True)
    elif kind == "chmod":
        m[op["path"]]["mode"] = op["mode"]
    elif kind == "chown":
        e = m[op["path"]]
        e["uid"], e["gid"], e["frozen"] = op["uid"], op["gid"], True
        if e["t"] == "f":
            kill_privs(e)
    else:
        raise ValueError(kind)
    return m, between


# --------------------------------------------------------------------------- the workload

def choose(rnd, model, n, uid, gid):
    """A random operation that the model says is possible."""
    files = [p for p, e in model.items() if e["t"] == "f" and not e.get("frozen")]
    small = [p for p in files if len(content(model[p]["spec"])) < (3 << 20)]
    nondirs = [p for p, e in model.items() if e["t"] != "d"]
    dirs = [p for p, e in model.items() if e["t"] == "d"]
    subdirs = [p for p in dirs if p]
    empty = [d for d in subdirs if not any(parent(k) == d for k in model)]
    gone = [p for p in model.get("", {}).get("gone", []) if parent(p) in model
            and model[parent(p)]["t"] == "d" and p not in model]

    shallow = [d for d in dirs if len(d) < 1000]  # paths stay well within PATH_MAX

    def new_name(kind):
        d = rnd.choice(shallow)
        name = f"{kind}-{n}" + rnd.choice(["", " with spaces", "-" + "x" * 200])
        return f"{d}/{name}" if d else name

    seed = rnd.randrange(1 << 30)
    while True:
        r = rnd.randrange(100)
        if r < 16 and small:
            return {"op": "append", "path": rnd.choice(small), "seed": seed,
                    "n": rnd.choice([1, 100, 3000, 4096, 20000])}
        if r < 28 and small:
            p = rnd.choice(small)
            size = len(content(model[p]["spec"]))
            return {"op": "write", "path": p, "off": rnd.randrange(size + 1), "seed": seed,
                    "n": rnd.choice([1, 512, 4096, 10000])}
        if r < 38:
            return {"op": "create", "path": new_name("new"), "seed": seed, "uid": uid, "gid": gid,
                    "n": rnd.choice([0, 10, 4096, 70000])}
        if r < 48 and nondirs:
            src = rnd.choice(nondirs)
            # over an existing file too, with or without virtual metadata on either side
            others = [p for p in nondirs if p != src]
            dst = rnd.choice(others) if others and rnd.random() < 0.3 else new_name("moved")
            return {"op": "rename", "path": src, "to": dst}
        if r < 54 and subdirs:
            src = rnd.choice(subdirs)
            over = [d for d in empty if d != src and not d.startswith(src + "/")]
            if over and rnd.random() < 0.3:
                return {"op": "rename", "path": src, "to": rnd.choice(over)}
            targets = [d for d in shallow if d != src and not d.startswith(src + "/")]
            d = rnd.choice(targets)
            name = f"dir-moved-{n}"
            return {"op": "rename", "path": src, "to": f"{d}/{name}" if d else name}
        if r < 64 and nondirs:
            return {"op": "unlink", "path": rnd.choice(nondirs)}
        if r < 69 and empty:
            return {"op": "rmdir", "path": rnd.choice(empty)}
        if r < 74:
            p = rnd.choice(gone) if gone and rnd.random() < 0.6 else new_name("dir")
            return {"op": "mkdir", "path": p, "uid": uid, "gid": gid}
        if r < 77:
            return {"op": "symlink", "path": new_name("link"), "uid": uid, "gid": gid,
                    "target": rnd.choice(["/etc/passwd", "../a", "nowhere", "x" * 300])}
        if r < 80:
            return {"op": "mkfifo", "path": new_name("fifo"), "uid": uid, "gid": gid}
        if r < 85:
            kind = rnd.choice("cb")
            return {"op": "mknod", "path": new_name("dev"), "type": kind, "uid": uid,
                    "gid": gid, "rdev": [rnd.choice([1, 8, 4]), rnd.randrange(256)]}
        if r < 93 and files:
            return {"op": "chmod", "path": rnd.choice(files),
                    "mode": rnd.choice([0o644, 0o600, 0o755, 0o4755, 0o2755, 0o6711])}
        if files:
            return {"op": "chown", "path": rnd.choice(files),
                    "uid": rnd.choice([0, 1234]), "gid": rnd.choice([0, 5678])}


def full(written, wanted):
    """A write that returns a short count is not done (the kill cut it: it is the operation under
    way, whose partial states the model allows), never an operation done."""
    if written != wanted:
        raise OSError(errno.EIO, f"short write: {written} of {wanted} bytes")


def perform(mnt, op):
    P = lambda rel: os.path.join(mnt, rel)  # noqa: E731
    kind, path = op["op"], P(op["path"])
    if kind == "append":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            full(os.write(fd, piece(op["seed"], op["n"])), op["n"])
        finally:
            os.close(fd)
    elif kind == "write":
        fd = os.open(path, os.O_WRONLY)
        try:
            full(os.pwrite(fd, piece(op["seed"], op["n"]), op["off"]), op["n"])
        finally:
            os.close(fd)
    elif kind == "create":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, piece(op["seed"], op["n"]))
        finally:
            os.close(fd)
    elif kind == "rename":
        os.rename(path, P(op["to"]))
    elif kind == "unlink":
        os.unlink(path)
    elif kind == "rmdir":
        os.rmdir(path)
    elif kind == "mkdir":
        os.mkdir(path, 0o755)
    elif kind == "symlink":
        os.symlink(op["target"], path)
    elif kind == "mkfifo":
        os.mkfifo(path, 0o644)
    elif kind == "mknod":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.setxattr(path, "user.viewfs.mknod", f"{op['type']} {op['rdev'][0]} {op['rdev'][1]}"
                    .encode())
    elif kind == "chmod":
        os.chmod(path, op["mode"])
    elif kind == "chown":
        os.chown(path, op["uid"], op["gid"])


def workload(mnt, state_path, log_path, seed, max_ops=None):
    """Random operations until the daemon dies (or max_ops were made); every one logged before
    and after."""
    os.umask(0o022)
    with open(state_path) as f:
        model = json.load(f)
    rnd = random.Random(seed)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.write("started\n")
    sys.stdout.flush()
    n = 0
    while max_ops is None or n < max_ops:
        n += 1
        op = choose(rnd, model, f"{seed}-{n}", os.getuid(), os.getgid())
        os.write(log, ("B " + json.dumps(op) + "\n").encode())
        try:
            perform(mnt, op)
        except OSError as e:
            os.write(log, f"E {errno.errorcode.get(e.errno, e.errno)} {time.monotonic()}\n"
                     .encode())
            return
        os.write(log, b"D\n")
        model, _ = apply(model, op)
        if op["op"] in ("unlink", "rmdir", "rename"):
            model[""]["gone"] = (model[""].get("gone", []) + [op["path"]])[-50:]


def scan(mnt, probes):
    """The whole view as the model describes it, and the result of lstat of each probe."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(mnt):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, mnt)
            out[rel] = describe(full)
    out[""] = describe(mnt)
    gone = {}
    for p in probes:
        try:
            os.lstat(os.path.join(mnt, p))
            gone[p] = "exists"
        except OSError as e:
            gone[p] = errno.errorcode.get(e.errno, e.errno)
    return {"tree": out, "probes": gone}


def describe(full):
    st = os.lstat(full)
    fmt = stat.S_IFMT(st.st_mode)
    d = {"t": {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFIFO: "p",
               stat.S_IFCHR: "c", stat.S_IFBLK: "b"}.get(fmt, "?"),
         "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if d["t"] == "f":
        with open(full, "rb") as f:
            data = f.read()
        d["size"], d["sha"] = len(data), hashlib.sha256(data).hexdigest()
        d["stsize"] = st.st_size
    elif d["t"] == "l":
        d["target"] = os.readlink(full)
    elif d["t"] in "cb":
        d["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    return d


def expected_view(model):
    """What scan() must find for a model."""
    out = {}
    for p, e in model.items():
        d = {"t": e["t"], "mode": e["mode"], "uid": e["uid"], "gid": e["gid"]}
        if e["t"] == "f":
            data = content(e["spec"])
            d["size"], d["sha"] = len(data), hashlib.sha256(data).hexdigest()
            d["stsize"] = len(data)
        elif e["t"] == "l":
            d["target"] = e["target"]
        elif e["t"] in "cb":
            d["rdev"] = e["rdev"]
        out[p] = d
    return out


if __name__ == "__main__":
    if sys.argv[1] == "work":
        try:
            workload(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                     int(sys.argv[6]) if len(sys.argv) > 6 else None)
        except OSError:
            pass
        sys.exit(0)
    print(json.dumps(scan(sys.argv[2], json.loads(sys.argv[3]))))
    sys.exit(0)


# --------------------------------------------------------------------------- the test

import subprocess  # noqa: E402

import pytest  # noqa: E402

from conftest import tree_digest  # noqa: E402
from conftest import force_unmount, sanitizer_env  # noqa: E402
from rellib import LONG, Daemon, DaemonPool, Hang, in_mountinfo  # noqa: E402

KILLS = 500 if LONG else 50
OPTIONS = ["cow,vstat", "cow,vstat,writeback", "cow,vstat,volatile"]
KNOWN_KEYS = {"type", "mode", "uid", "gid", "rdev", "ctime", "ino", "opaque", "redirect", "dev"}


class UserDaemon(Daemon):
    """viewfs as the test user. Its mount is the user's alone (no allow_other): even root
    gets EACCES from it, so being mounted is read from /proc/self/mountinfo."""

    def __init__(self, user, args, mountpoint, logdir):
        super().__init__("viewfs", args, mountpoint, logdir, env=user.env())
        self.argv = user.wrap(self.argv)

    def start(self, timeout=30):
        with open(self.log, "w") as logf:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                         env=sanitizer_env(self.env), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not in_mountinfo(self.mountpoint):
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise Hang(f"{' '.join(self.argv)} did not mount within {timeout}s:\n"
                           + self.stderr())
            time.sleep(0.005)
        return True


def user_daemon(pool, user, args, mountpoint):
    d = UserDaemon(user, args, mountpoint, pool.logdir)
    with pool.lock:
        pool.started.append(d)
    return d


def build_original(root, uid, gid):
    """The original tree (the mount point's content) and its model."""
    model = {"": {"t": "d", "mode": 0o755, "uid": uid, "gid": gid}}
    rnd = random.Random(3)
    for d in ["a", "b", "c", "a/sub", "b/sub/deeper", "empty"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in ["a", "b", "c", "a/sub", "b/sub", "b/sub/deeper", "empty"]:
        model[d] = {"t": "d", "mode": 0o755, "uid": uid, "gid": gid}
    sizes = [0, 1, 100, 4095, 4096, 4097, 65536, 200_000]
    for d in ["", "a", "b", "c", "a/sub", "b/sub/deeper"]:
        for i in range(6):
            rel = f"{d}/f{i}" if d else f"f{i}"
            seed, n = rnd.randrange(1 << 30), rnd.choice(sizes)
            (root / rel).write_bytes(piece(seed, n))
            model[rel] = {"t": "f", "spec": [["b", seed, n]], "mode": 0o644, "uid": uid,
                          "gid": gid}
    (root / "big").write_bytes(piece(99, 2 << 20))
    model["big"] = {"t": "f", "spec": [["b", 99, 2 << 20]], "mode": 0o644, "uid": uid, "gid": gid}
    for rel, target in [("a/link", "f1"), ("c/abs", "/etc/hostname")]:
        os.symlink(target, root / rel)
        model[rel] = {"t": "l", "target": target, "mode": 0o777, "uid": uid, "gid": gid}
    subprocess.run(["chown", "-R", "-h", f"{uid}:{gid}", str(root)], check=True)
    for p in ["", "a", "b", "c", "a/sub", "b/sub", "b/sub/deeper", "empty"]:
        os.chmod(root / p if p else root, 0o755)
    return model


def parse_record(data):
    """Our own reading of a record (docs/viewfs-layer-format.md): None if it is well formed,
    else what is wrong."""
    if len(data) > 65536:
        return "larger than 64 KiB"
    if data and not data.endswith(b"\n"):
        return "last line not ended"
    for line in data.decode("latin-1").splitlines():
        key, eq, value = line.partition("=")
        if not eq:
            return f"line without '=': {line!r}"
        if key not in KNOWN_KEYS:
            continue
        ok = {"type": lambda v: v in ("f", "-", "c", "b", "p", "s"),
              "mode": lambda v: v.isdigit() and set(v) <= set("01234567") and int(v, 8) <= 0o7777,
              "uid": str.isdigit, "gid": str.isdigit, "ino": str.isdigit,
              "rdev": lambda v: len(v.split(",")) == 2 and all(x.isdigit() for x in v.split(",")),
              "dev": lambda v: len(v.split(",")) == 2 and all(x.isdigit() for x in v.split(",")),
              "ctime": lambda v: len(v.split(",")) == 2 and all(x.isdigit() for x in v.split(",")),
              "opaque": lambda v: v == "1",
              "redirect": lambda v: v.startswith("/")}[key]
        if not ok(value):
            return f"bad {key}: {value!r}"
    return None


def check_records(layer):
    bad, count = [], 0
    meta = layer / ".-"
    for dirpath, dirnames, filenames in os.walk(meta):
        for name in filenames:
            if name.endswith("\x7f"):
                count += 1
                p = os.path.join(dirpath, name)
                with open(p, "rb") as f:
                    why = parse_record(f.read())
                if why:
                    bad.append((p, why))
    return bad, count


def as_user(user, argv, **kw):
    return subprocess.run(user.wrap(argv), env=user.env(), capture_output=True, text=True, **kw)


def diff(got, want):
    out = []
    for p in sorted(set(got) | set(want)):
        if got.get(p) != want.get(p):
            out.append(f"{p!r}: view {got.get(p)} model {want.get(p)}")
    return out


@pytest.mark.timeout(3600 if LONG else 300)
def test_kill_9_at_random_points_every_completed_operation_is_whole(utmp, user):
    orig = utmp / "mnt"
    layer = utmp / "layer"
    orig.mkdir()
    layer.mkdir()
    user.chown(layer)
    model = build_original(orig, user.uid, user.gid)
    user.chown(orig)
    digest = tree_digest(orig)
    state, log = utmp / "state.json", utmp / "ops.log"
    pool = DaemonPool(utmp)
    rnd = random.Random(2026)
    me = os.path.abspath(__file__)
    done_ops = inflight_done = inflight_undone = inflight_between = 0
    kinds = {}
    history = []
    killed_at = 0.0
    try:
        for k in range(KILLS + 1):
            d = user_daemon(pool, user, ["-o", OPTIONS[k % len(OPTIONS)], layer, orig], orig)
            assert d.start(), f"round {k}: the layer was refused:\n{d.stderr()}"
            work_area = layer / ".-" / ".-"
            leftovers = os.listdir(work_area) if work_area.exists() else []
            assert not leftovers, f"round {k}: the work area kept {leftovers}"
            # the view against the model (and the operation under way at the kill)
            entries = log.read_text().splitlines() if log.exists() else []
            history += [f"--- round {k - 1} (-o {OPTIONS[(k - 1) % len(OPTIONS)]})"] + entries
            recent = "\n".join(line[:300] for line in history[-40:])
            candidates = [model]
            last_begin = None
            for line in entries:
                if line.startswith("B "):
                    last_begin = json.loads(line[2:])
                    candidates = [model] + list(reversed(apply(model, last_begin)[1])) + \
                        [apply(model, last_begin)[0]]
                elif line == "D":
                    model = candidates[-1]
                    done_ops += 1
                    kinds[last_begin["op"]] = kinds.get(last_begin["op"], 0) + 1
                    if last_begin["op"] in ("unlink", "rmdir", "rename"):
                        model[""]["gone"] = (model[""].get("gone", []) + [last_begin["path"]])[-50:]
                    candidates, last_begin = [model], None
                elif line.startswith("E "):
                    # the kill's errors: requests under way are aborted, later ones find no
                    # daemon (some kernel paths say EIO for an aborted request). Any error
                    # before the kill is a failure of viewfs.
                    name, when = line[2:].split()
                    assert name in ("ENOTCONN", "ECONNABORTED", "EIO") and \
                        float(when) >= killed_at, \
                        f"round {k - 1}: {last_begin} failed with {name} " \
                        f"{killed_at - float(when):.3f}s before the kill; " \
                        f"the operations before:\n{recent}"
            probes = [p for p in model[""].get("gone", []) if p not in model]
            r = as_user(user, ["/usr/bin/python3", me, "scan", str(orig), json.dumps(probes)],
                        timeout=120)
            assert r.returncode == 0, f"round {k}: scanning the view failed:\n{r.stderr}"
            seen = json.loads(r.stdout)
            # (the candidates differ from the first in the path under way only: the others'
            # views reuse its entries)
            views = [expected_view(candidates[0])]
            for c in candidates[1:]:
                v = dict(views[0])
                changed = {p: e for p, e in c.items() if candidates[0].get(p) != e}
                for p in candidates[0]:
                    if p not in c:
                        v.pop(p, None)
                v.update(expected_view(changed))
                views.append(v)
            match = [i for i, v in enumerate(views) if v == seen["tree"]]
            if not match:  # the differences from the state it comes closest to, and the log
                near = min(range(len(views)), key=lambda i: len(diff(seen["tree"], views[i])))
                which = "not done" if near == 0 else "done" if near == len(views) - 1 \
                    else f"between, step {near}"
            assert match, (f"round {k}: the view is no state the operations allow "
                           f"(under way at the kill: {last_begin}); closest: {which}:\n"
                           + "\n".join(diff(seen["tree"], views[near])[:20])
                           + f"\nthe operations before:\n{recent}"
                           + f"\nthe daemon's output:\n{d.stderr()[-2000:]}")
            if last_begin is not None:
                if match[0] == 0:
                    inflight_undone += 1
                elif match[0] == len(views) - 1:
                    inflight_done += 1
                else:
                    inflight_between += 1
                gone = model[""].get("gone", [])
                model = candidates[match[0]]
                if match[0] == len(views) - 1 and last_begin["op"] in ("unlink", "rmdir", "rename"):
                    gone = (gone + [last_begin["path"]])[-50:]
                model[""]["gone"] = gone
            answer = {p: v for p, v in seen["probes"].items() if p not in model and v != "ENOENT"}
            assert not answer, f"round {k}: deleted names still answer: {answer}"
            log.write_text("")
            user.chown(log)
            if k == KILLS:
                assert d.stop() == 0, d.stderr()
                break
            state.write_text(json.dumps(model))
            user.chown(state)
            w = subprocess.Popen(user.wrap(["/usr/bin/python3", me, "work", str(orig), str(state),
                                            str(log), str(k)]),
                                 env=user.env(), stdout=subprocess.PIPE, text=True)
            assert w.stdout.readline() == "started\n"
            time.sleep(rnd.uniform(0.01, 0.3))
            # the dead mount stays until the workload has gone (ENOTCONN): removed at once, it
            # would let the workload go on in the original directory underneath
            killed_at = time.monotonic()
            d.kill(unmount=False)
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                raise AssertionError(f"round {k}: the workload hangs on the dead mount")
            finally:
                force_unmount(orig)
            report = d.sanitizer_report()
            assert report is None, report
            assert tree_digest(orig) == digest, f"round {k}: the original tree changed"
            bad, records = check_records(layer)
            assert not bad, f"round {k}: records that do not parse: {bad}"
    finally:
        pool.cleanup()
    print(f"{KILLS} kills of viewfs: {done_ops} operations completed and found whole "
          f"({dict(sorted(kinds.items()))}); the operation under way at the kill was found "
          f"not done {inflight_undone}, done {inflight_done}, between (a new file still empty, "
          f"a write cut at a page boundary, a device still a plain file) {inflight_between} "
          f"times; {records} records parse; "
          f"original unchanged")
    assert done_ops >= 5 * KILLS, "the workload did too little to prove anything"
