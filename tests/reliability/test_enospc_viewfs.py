"""A full layer directory: viewfs -o cow,vstat with SOURCE on a small tmpfs (4 MiB of data,
300 inodes), run as the unprivileged user over an original tree on the ordinary disk.

When the layer's blocks are used up, a copy-up (append to a 3 MiB original file), a write that
needs a new block, a chmod and a vstat chown of an original file (both need a record) fail with
ENOSPC at the caller; when its inodes are used up, create, mkdir, mknod of a FIFO and an unlink of
an original file (a whiteout is a file) fail with ENOSPC. After each failure: nothing that was
written before is lost (every file written whole reads back), the failed object is as it was (no
half copy-up: the original file shows its original bytes, the old mode and owner; an unlink that
failed leaves the file visible), no file of viewfs's own is left (the work area SOURCE/.-/.- is
empty, nothing unexpected shows in the view), the original tree is unchanged. Once space is
freed (through the view), every one of those operations works."""
import hashlib
import json
import os
import subprocess

import pytest

from conftest import run, tree_digest

SCRIPT = r'''
import errno, hashlib, json, os, stat, sys
M, phase = sys.argv[1], sys.argv[2]
P = lambda rel: os.path.join(M, rel)
def e(fn, *a):
    try:
        fn(*a)
    except OSError as x:
        return errno.errorcode[x.errno]
    return None
def sha(rel):
    with open(P(rel), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
def st(rel):
    s = os.lstat(P(rel))
    return [stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, s.st_size]
def append(rel, data):
    fd = os.open(P(rel), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def write_new(rel, data):
    fd = os.open(P(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
out = {}
if phase == "fill":
    # files written whole, then a filler up to the last block
    done = {}
    for i in range(8):
        data = os.urandom(4096 * (5 + i))  # whole pages: no room left in a last page
        write_new(f"kept{i}", data)
        done[f"kept{i}"] = hashlib.sha256(data).hexdigest()
    out["kept"] = done
    fd = os.open(P("filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    err = None
    try:
        while True:
            os.write(fd, b"f" * 65536)
    except OSError as x:
        err = errno.errorcode[x.errno]
    try:
        while True:
            os.write(fd, b"f")
    except OSError as x:
        pass
    try:
        os.fsync(fd)
    except OSError:
        pass
    os.close(fd)
    out["filler"] = err
    # with no block left
    out["write_grow"] = e(append, "kept0", os.urandom(8192))
    out["chmod"] = e(os.chmod, P("small"), 0o600)
    out["chown"] = e(os.chown, P("small2"), 0, 0)
    # last: a copy-up that fails gives back the blocks its copy had taken
    out["copyup_append"] = e(append, "big", b"more")
    out["stat"] = {n: st(n) for n in ("big", "small", "small2", "kept0")}
    out["sha"] = {n: sha(n) for n in ["big", "small", "small2"] + list(done)}
    out["ls"] = sorted(os.listdir(M))
elif phase == "inodes":
    n, err = 0, None
    while n < 5000:
        try:
            os.close(os.open(P(f"empty{n}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as x:
            err = errno.errorcode[x.errno]
            break
        n += 1
    out["created"], out["create"] = n, err
    out["mkdir"] = e(os.mkdir, P("newdir"))
    out["mkfifo"] = e(os.mkfifo, P("newfifo"))
    out["unlink_orig"] = e(os.unlink, P("small3"))
    out["small3"] = sha("small3")
    out["ls"] = sorted(os.listdir(M))
elif phase == "free":
    for name in os.listdir(M):
        if name.startswith("empty"):
            os.unlink(P(name))
    os.unlink(P("filler"))
    out["copyup_append"] = e(append, "big", b"more")
    out["chmod"] = e(os.chmod, P("small"), 0o600)
    out["chown"] = e(os.chown, P("small2"), 0, 0)
    out["create"] = e(write_new, "after", b"after")
    out["mkdir"] = e(os.mkdir, P("newdir"))
    out["mkfifo"] = e(os.mkfifo, P("newfifo"))
    out["unlink_orig"] = e(os.unlink, P("small3"))
    out["stat"] = {n: st(n) for n in ("big", "small", "small2")}
    out["sha"] = {n: sha(n) for n in ("big", "after")}
    out["ls"] = sorted(os.listdir(M))
print(json.dumps(out))
'''


@pytest.fixture
def small_layer(utmp, user):
    fs = utmp / "layerfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M,nr_inodes=300,mode=0755",
                    "viewos-reld", str(fs)], check=True)
    try:
        user.chown(fs)
        yield fs
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def sha_bytes(data):
    return hashlib.sha256(data).hexdigest()


def test_full_layer_gives_enospc_loses_nothing_and_recovers(utmp, user, mounts, small_layer):
    orig = utmp / "mnt"
    orig.mkdir()
    big = os.urandom(3 << 20)
    (orig / "big").write_bytes(big)
    for n in ("small", "small2", "small3"):
        (orig / n).write_bytes(n.encode() * 100)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(orig)], check=True)
    before = tree_digest(orig)
    fd = os.open(orig, os.O_PATH)  # the original, while the view covers it
    orig_now = f"/proc/{os.getpid()}/fd/{fd}"
    try:
        mounts.start("viewfs", "-o", "cow,vstat", small_layer, orig, mountpoint=orig, user=user)

        def act(phase):
            r = run(["/usr/bin/python3", "-c", SCRIPT, str(orig), phase], user=user)
            return json.loads(r.stdout)

        def no_leftovers(what):
            work = small_layer / ".-" / ".-"
            left = os.listdir(work) if work.exists() else []
            assert not left, f"{what}: viewfs left {left} in its work area"
            assert tree_digest(orig_now) == before, f"{what}: the original tree changed"

        full = act("fill")
        assert full["filler"] == "ENOSPC", full
        assert full["copyup_append"] == "ENOSPC", full
        assert full["write_grow"] == "ENOSPC", full
        assert full["chmod"] == "ENOSPC", full
        assert full["chown"] == "ENOSPC", full
        # nothing lost, nothing half: the failed copy-up left the original showing
        assert full["sha"]["big"] == sha_bytes(big)
        assert not (small_layer / "big").exists(), "a half copy-up is in the layer"
        assert full["stat"]["big"][3] == len(big)
        assert full["stat"]["small"][0] == 0o644 and full["stat"]["small2"][1:3] == \
            [user.uid, user.gid], full["stat"]
        assert full["stat"]["kept0"][3] == 20480, "a failed write changed the file's size"
        for name, digest in full["kept"].items():
            assert full["sha"][name] == digest, f"{name} lost on a full layer"
        assert full["ls"] == sorted(["big", "small", "small2", "small3", "filler"]
                                    + list(full["kept"])), full["ls"]
        no_leftovers("after the blocks ran out")

        ino = act("inodes")
        assert ino["create"] == "ENOSPC" and ino["created"] > 0, ino
        assert ino["mkdir"] == "ENOSPC", ino
        assert ino["mkfifo"] == "ENOSPC", ino
        assert ino["unlink_orig"] == "ENOSPC", ino
        assert ino["small3"] == sha_bytes(b"small3" * 100)
        assert "small3" in ino["ls"] and "newdir" not in ino["ls"] and "newfifo" not in ino["ls"]
        no_leftovers("after the inodes ran out")

        freed = act("free")
        for op in ("copyup_append", "chmod", "chown", "create", "mkdir", "mkfifo", "unlink_orig"):
            assert freed[op] is None, f"{op} after space was freed: {freed[op]}"
        assert freed["sha"]["big"] == sha_bytes(big + b"more")
        assert freed["stat"]["small"][0] == 0o600
        assert freed["stat"]["small2"][1:3] == [0, 0]
        assert "small3" not in freed["ls"]
        assert freed["sha"]["after"] == sha_bytes(b"after")
        no_leftovers("after space was freed")
        for name, digest in full["kept"].items():
            assert hashlib.sha256((small_layer / name).read_bytes()).hexdigest() == digest
    finally:
        mounts.cleanup()
        os.close(fd)
    # the layer mounts again with all of it
    mounts.start("viewfs", "-o", "cow,vstat", small_layer, orig, mountpoint=orig, user=user)
    r = run(["/usr/bin/python3", "-c", "import os,sys,stat; M=sys.argv[1]; "
             "print(oct(stat.S_IMODE(os.stat(M+'/small').st_mode)), os.stat(M+'/small2').st_uid,"
             " os.path.exists(M+'/small3'), os.path.getsize(M+'/big'))", str(orig)], user=user)
    assert r.stdout.split() == ["0o600", "0", "False", str(len(big) + 4)]
