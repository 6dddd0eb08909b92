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
freed (through the view), every one of those operations works.

The same full layer under -o mincow: what the user may change on the original (append to and
create in the user's own directory, unlink there) still goes to the original and succeeds; what
must go to the layer (an append to a root-owned file: a copy-up; a create, a mkdir, an unlink in
a root-owned directory: a file, a directory, a whiteout in the layer) fails with ENOSPC, and
leaves the object as it was. Nothing written before is lost, the original holds exactly the
changes the user made to it, and after space is freed the refused changes work."""
import hashlib
import json
import os
import subprocess
from pathlib import Path

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


MINCOW_SCRIPT = r"""
import errno, hashlib, json, os, sys
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
def append(rel, data):
    fd = os.open(P(rel), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
        os.fsync(fd)
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
    # files the layer must take (theirs/ is root's), then a filler up to the last block
    for i in range(4):
        write_new(f"theirs/kept{i}", bytes([65 + i]) * (4096 * (3 + i)))
    out["kept"] = {f"theirs/kept{i}": sha(f"theirs/kept{i}") for i in range(4)}
    fd = os.open(P("theirs/filler"), os.O_WRONLY | os.O_CREAT, 0o644)
    err = None
    try:
        while True:
            os.write(fd, b"f" * 65536)
    except OSError as x:
        err = errno.errorcode[x.errno]
    try:
        while True:
            os.write(fd, b"f")
    except OSError:
        pass
    os.close(fd)
    out["filler"] = err
    # to the original: the user's own directory and file
    out["mine_append"] = e(append, "mine/file", b"appended on a full layer\n")
    out["mine_create"] = e(write_new, "mine/new", b"created on a full layer\n")
    # to the layer: a copy-up of root's files
    out["theirs_append"] = e(append, "theirs/file", b"x" * 100)
    out["rootfile_append"] = e(append, "rootfile", b"x" * 100)
    out["sha"] = {n: sha(n) for n in ["theirs/file", "rootfile", "mine/file", "mine/new"]
                  + list(out["kept"])}
elif phase == "inodes":
    n, err = 0, None
    while n < 5000:
        try:
            os.close(os.open(P(f"theirs/empty{n}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as x:
            err = errno.errorcode[x.errno]
            break
        n += 1
    out["created"], out["create"] = n, err
    out["theirs_mkdir"] = e(os.mkdir, P("theirs/d"))
    out["theirs_unlink"] = e(os.unlink, P("theirs/file"))
    out["mine_mkdir"] = e(os.mkdir, P("mine/d"))
    out["mine_unlink"] = e(os.unlink, P("mine/gone"))
    out["ls_theirs"] = sorted(n for n in os.listdir(P("theirs")) if not n.startswith("empty"))
    out["ls_mine"] = sorted(os.listdir(P("mine")))
elif phase == "free":
    for name in os.listdir(P("theirs")):
        if name.startswith("empty") or name == "filler":
            os.unlink(P(f"theirs/{name}"))
    out["theirs_append"] = e(append, "theirs/file", b"x" * 100)
    out["rootfile_append"] = e(append, "rootfile", b"x" * 100)
    out["theirs_mkdir"] = e(os.mkdir, P("theirs/d"))
    out["theirs_unlink"] = e(os.unlink, P("theirs/other"))
    out["sha"] = {n: sha(n) for n in ("theirs/file", "rootfile")}
    out["ls_theirs"] = sorted(os.listdir(P("theirs")))
print(json.dumps(out))
"""


def test_full_layer_in_mincow_changes_on_the_original_go_on(utmp, user, mounts, small_layer):
    orig = utmp / "mnt"
    for d in ("mine", "theirs"):
        (orig / d).mkdir(parents=True)
    files = {"mine/file": b"mine\n", "mine/gone": b"to be removed\n", "theirs/file": b"root's\n",
             "theirs/other": b"root's too\n", "rootfile": b"root's at the top\n"}
    for rel, data in files.items():
        (orig / rel).write_bytes(data)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(orig / "mine"), str(orig)],
                   check=True)
    # root's: the user may read them, not change them (0755 / 0644)
    for rel in ("theirs", "theirs/file", "theirs/other", "rootfile"):
        os.chown(orig / rel, 0, 0)
    fd = os.open(orig, os.O_PATH)  # the original, while the view covers it
    real = Path(f"/proc/{os.getpid()}/fd/{fd}")
    before = tree_digest(real)
    try:
        mounts.start("viewfs", "-o", "mincow", small_layer, orig, mountpoint=orig, user=user)

        def act(phase):
            r = run(["/usr/bin/python3", "-c", MINCOW_SCRIPT, str(orig), phase], user=user)
            return json.loads(r.stdout)

        def work_area_empty(what):
            work = small_layer / ".-" / ".-"
            left = os.listdir(work) if work.exists() else []
            assert not left, f"{what}: viewfs left {left} in its work area"

        full = act("fill")
        assert full["filler"] == "ENOSPC", full
        # the original takes what the user may change there, full layer or not
        assert full["mine_append"] is None and full["mine_create"] is None, full
        assert (real / "mine/file").read_bytes() == b"mine\nappended on a full layer\n"
        assert (real / "mine/new").read_bytes() == b"created on a full layer\n"
        assert not (small_layer / "mine").exists(), "a change the user may make went to the layer"
        # a copy-up of root's files has no room: refused, nothing half done
        assert full["theirs_append"] == "ENOSPC" and full["rootfile_append"] == "ENOSPC", full
        assert full["sha"]["theirs/file"] == sha_bytes(b"root's\n")
        assert full["sha"]["rootfile"] == sha_bytes(b"root's at the top\n")
        assert not (small_layer / "theirs" / "file").exists()
        assert not (small_layer / "rootfile").exists()
        for name, digest in full["kept"].items():
            assert full["sha"][name] == digest, f"{name} lost on a full layer"
            assert sha_bytes((small_layer / name).read_bytes()) == digest
        work_area_empty("after the blocks ran out")

        ino = act("inodes")
        assert ino["create"] == "ENOSPC" and ino["created"] > 0, ino
        assert ino["theirs_mkdir"] == "ENOSPC" and ino["theirs_unlink"] == "ENOSPC", ino
        assert "file" in ino["ls_theirs"] and "d" not in ino["ls_theirs"], ino
        assert ino["mine_mkdir"] is None and ino["mine_unlink"] is None, ino
        assert (real / "mine/d").is_dir() and not (real / "mine/gone").exists()
        assert ino["ls_mine"] == ["d", "file", "new"], ino
        work_area_empty("after the inodes ran out")

        freed = act("free")
        for op in ("theirs_append", "rootfile_append", "theirs_mkdir", "theirs_unlink"):
            assert freed[op] is None, f"{op} after space was freed: {freed[op]}"
        assert freed["sha"]["theirs/file"] == sha_bytes(b"root's\n" + b"x" * 100)
        assert freed["sha"]["rootfile"] == sha_bytes(b"root's at the top\n" + b"x" * 100)
        assert "other" not in freed["ls_theirs"] and "d" in freed["ls_theirs"], freed
        work_area_empty("after space was freed")
    finally:
        mounts.cleanup()
    try:
        # the original holds the user's changes and nothing else: root's files as they were
        after = tree_digest(real)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert changed == ["mine/d", "mine/file", "mine/gone", "mine/new"], changed
        for rel in ("theirs/file", "theirs/other", "rootfile"):
            assert (real / rel).read_bytes() == files[rel]
    finally:
        os.close(fd)
