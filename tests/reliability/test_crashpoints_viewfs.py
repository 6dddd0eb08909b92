"""kill -9 of viewfs at EVERY point where an operation changes the layer: the random kills of
test_crash_viewfs.py rarely land inside the daemon's few microseconds of work, so here strace
(the real tool) kills the daemon exactly at the entry of each renameat, renameat2, linkat and
unlinkat it makes for one operation (`strace -e inject=SYSCALL:signal=SIGKILL:when=N`), one run
per call. The layer is then mounted again and the names the operation touches must show either
the state before the operation or the state after it, whole: data, owner, mode, type and device
number (records), presence (whiteouts), at one name.

Each scenario runs as the unprivileged user on a -o cow,vstat view: rename of a file with a
record (vstat chown) to a free name, rename of a virtual device node,
append to an original file (copy-up) that has a record, chmod of an original (record), unlink of
an original (whiteout), mkdir where an original directory was deleted (opaque).

Not covered, because the layer format leaves a window there that viewfs cannot close by ordering
(docs/reliability.md, "viewfs"): a rename over an existing file moves the records after the
data (the target's own record, or its lack of one, has to stay until the target is replaced;
every copied-up original has a record, for its inode number); a rename of a
directory moves its data, then its children's metadata (SOURCE/.-/DIR), then writes the
whiteout of the old name; rmdir of an original directory removes SOURCE/.-/DIR before the
whiteout of the same name can be made."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import force_unmount, run
from rellib import in_mountinfo

SYSCALLS = ["renameat", "renameat2", "linkat", "unlinkat"]
CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+)?(\w+)\(")

OBSERVE = r'''
import hashlib, json, os, stat, sys
M = sys.argv[1]
out = {}
for rel in json.loads(sys.argv[2]):
    p = os.path.join(M, rel)
    try:
        s = os.lstat(p)
    except OSError as e:
        out[rel] = e.strerror
        continue
    d = [stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid,
         [os.major(s.st_rdev), os.minor(s.st_rdev)] if stat.S_ISCHR(s.st_mode) else None]
    if stat.S_ISREG(s.st_mode):
        d.append(hashlib.sha256(open(p, "rb").read()).hexdigest())
    elif stat.S_ISDIR(s.st_mode):
        d.append(sorted(os.listdir(p)))
    out[rel] = d
print(json.dumps(out))
'''

# name: (original tree, preparation in the view, the operation, the names to look at)
SCENARIOS = {
    "rename_file_with_record": (
        {"x": "data of x"},
        "chown 0:0 x && chmod 4755 x",
        "mv x y", ["x", "y"]),
    "rename_device_node": (
        {},
        "touch dev && python3 -c \"import os; os.setxattr('dev', 'user.viewfs.mknod', b'c 1 1')\"",
        "mv dev dev2", ["dev", "dev2"]),
    "append_copies_up": (
        {"x": "original data " * 1000},
        "chmod 0600 x",
        "echo appended >> x", ["x"]),
    "chmod_original": (
        {"x": "data"},
        "true",
        "chmod 4711 x", ["x"]),
    "unlink_original_with_record": (
        {"x": "data"},
        "chown 0:0 x",
        "rm x", ["x"]),
    "mkdir_over_deleted_dir": (
        {"d/f": "f"},
        "rm -r d",
        "mkdir d", ["d", "d/f"]),
}


class View:
    def __init__(self, base, user, tree):
        self.base, self.user = base, user
        self.mnt, self.layer = base / "mnt", base / "layer"
        shutil.rmtree(base, ignore_errors=True)
        self.mnt.mkdir(parents=True)
        self.layer.mkdir()
        for rel, content in tree.items():
            (self.mnt / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.mnt / rel).write_text(content)
        subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(base)], check=True)
        self.proc = None

    def mount(self):
        from conftest import sanitizer_env, viewos_bin
        self.log = open(self.base.parent / f"{self.base.name}.log", "a")
        self.proc = subprocess.Popen(
            self.user.wrap([viewos_bin("viewfs"), "-f", "-o", "cow,vstat", str(self.layer),
                            str(self.mnt)]),
            env=sanitizer_env(self.user.env()), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not in_mountinfo(self.mnt):
            assert self.proc.poll() is None, "viewfs refused the layer"
            assert time.monotonic() < deadline, "viewfs did not mount"
            time.sleep(0.005)

    def sh(self, script, check=True):
        return run(["sh", "-c", f"cd '{self.mnt}' && {script}"], user=self.user, check=check)

    def observe(self, names):
        r = run(["/usr/bin/python3", "-c", OBSERVE, str(self.mnt), json.dumps(names)],
                user=self.user)
        return json.loads(r.stdout)

    def unmount(self):
        if self.proc.poll() is None:
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=True)
            assert self.proc.wait(30) == 0
        force_unmount(self.mnt)
        self.log.close()

    def dead(self):
        force_unmount(self.mnt)
        self.log.close()


def traced(pid, syscall, nth):
    """strace attached to every thread of pid, killing it at the nth call of syscall (nth 0:
    only counting). Returns once every thread is traced."""
    args = ["strace", "-f", "-qq", "-p", str(pid), "-e", "trace=" + ",".join(SYSCALLS)]
    if nth:
        args += ["-e", f"inject={syscall}:signal=SIGKILL:when={nth}"]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    tids = os.listdir(f"/proc/{pid}/task")
    while True:
        traced_all = True
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    if "TracerPid:\t0\n" in f.read():
                        traced_all = False
            except FileNotFoundError:
                pass
        if traced_all:
            return p
        assert time.monotonic() < deadline, "strace did not attach"
        time.sleep(0.01)


def untrace(p):
    p.send_signal(signal.SIGINT)  # strace detaches and leaves the daemon running
    _, err = p.communicate(timeout=30)
    return err


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_kill_at_each_layer_change_leaves_old_or_new(utmp, user, name):
    if not shutil.which("strace"):
        pytest.fail("strace is needed (packaging/install-deps installs it)")
    tree, prep, op, names = SCENARIOS[name]
    base = utmp / name

    def fresh():
        v = View(base, user, tree)
        v.mount()
        v.sh(prep)
        return v

    # a run without a kill: the state before and after, and the calls the operation makes
    v = fresh()
    before = v.observe(names)
    st = traced(v.proc.pid, None, 0)
    v.sh(op)
    calls = [m.group(1) for m in map(CALL.match, untrace(st).splitlines())
             if m and m.group(1) in SYSCALLS]
    after = v.observe(names)
    v.unmount()
    assert before != after
    assert calls, f"{op} changed nothing in the layer?"
    outcomes = []
    for i, syscall in enumerate(calls):
        nth = calls[:i + 1].count(syscall)
        v = fresh()
        st = traced(v.proc.pid, syscall, nth)
        r = v.sh(op, check=False)
        v.proc.wait(30)
        untrace(st) if st.poll() is None else st.communicate(timeout=30)
        assert v.proc.returncode == -signal.SIGKILL, \
            f"the kill at {syscall} #{nth} did not happen ({r.stderr})"
        v.dead()
        v.mount()
        seen = v.observe(names)
        v.unmount()
        assert seen in (before, after), (
            f"killed at {syscall} #{nth} of `{op}`: neither the state before nor after:\n"
            f"seen   {seen}\nbefore {before}\nafter  {after}")
        outcomes.append(f"{syscall}#{nth}:{'old' if seen == before else 'new'}")
    print(f"{name}: {len(calls)} kill points: {' '.join(outcomes)}")
