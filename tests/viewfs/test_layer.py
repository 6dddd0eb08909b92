"""The layer directory (docs/viewfs-layer-format.md): a layer made by one run mounts again with
all its changes, also after being copied elsewhere; hard links share one record, replaced whole; a layer
written by hand the way VUOS's vufs writes it mounts; crash leftovers and corrupt records never
reach the view as half files; a copy-up is atomic even when the daemon is killed."""
import errno
import os
import random
import signal
import subprocess

import pytest

from viewfs_fixtures import make_view, record, strong_digest, view, whiteout  # noqa: F401

VIEW_DIGEST = ("import hashlib\n"
               "out = {}\n"
               "for r, ds, fs in os.walk(M):\n"
               "    for n in ds + fs:\n"
               "        p = os.path.join(r, n); s = os.lstat(p)\n"
               "        k = [s.st_mode, s.st_uid, s.st_gid, s.st_ino, s.st_nlink,"
               " os.major(s.st_rdev), os.minor(s.st_rdev)]\n"
               "        if stat.S_ISREG(s.st_mode): k += [hashlib.sha256(open(p, 'rb').read()).hexdigest(),"
               " s.st_mtime_ns]\n"
               "        if stat.S_ISLNK(s.st_mode): k.append(os.readlink(p))\n"
               "        out[os.path.relpath(p, M)] = k\n"
               "result = out\n")

WORK = ("append('etc/conf', 'changed'); os.unlink(P('etc/gone')); import shutil;"
        "shutil.rmtree(P('var/cache')); os.mkdir(P('var/cache')); write('var/cache/new', 'n');"
        "os.rename(P('usr/lib'), P('usr/lib2')); os.link(P('usr/bin/tool'), P('usr/bin/tool2'));"
        "os.chown(P('usr/bin/tool'), 0, 0); os.chmod(P('usr/bin/tool'), 0o4755);"
        "write('dev-null', ''); os.setxattr(P('dev-null'), 'user.viewfs.mknod', b'c 1 3');"
        "os.symlink('etc/conf', P('conflink')); os.mkfifo(P('fifo'))")

TREE = {"etc/conf": "conf\n", "etc/gone": "bye\n", "var/cache/a/b": "cached\n",
        "usr/lib/libx.so": "ELF\n", "usr/lib/sub/more": "more\n", "usr/bin/tool": "#!/bin/sh\n"}


def test_layer_mounts_again_with_all_changes(view):
    view.make(TREE)
    view.mount("cow,vstat")
    orig = view.orig_digest()
    view.py(WORK)
    before = view.py(VIEW_DIGEST)
    view.remount("cow,vstat")
    assert view.py(VIEW_DIGEST) == before
    assert view.orig_digest() == orig
    assert before["usr/bin/tool"][1] == 0 and before["dev-null"][0] & 0o170000 == 0o020000


def test_layer_copied_with_tar_mounts_elsewhere(make_view):  # noqa: F811
    a = make_view("a")
    a.make(TREE)
    a.mount("cow,vstat")
    a.py(WORK)
    before = a.py(VIEW_DIGEST)
    a.unmount()
    b = make_view("b")
    # the same original and the layer, both copied with tar (a backup and a restore)
    for src, dst in ((a.mnt, b.mnt), (a.layer, b.layer)):
        subprocess.run(f"tar -C '{src}' --xattrs -cf - . | tar -C '{dst}' --xattrs -xpf -",
                       shell=True, check=True)
    b.mount("cow,vstat")
    after = b.py(VIEW_DIGEST)
    # the same view, up to inode numbers (they come from the new copies' file systems)
    strip = {k: v[:3] + v[4:] for k, v in before.items()}
    assert {k: v[:3] + v[4:] for k, v in after.items()} == strip


def test_hard_links_share_one_record_replaced_whole(view):
    """Hard links are one file with one metadata: both names' records point at one shared record
    (link=KEY) in the index, which every change replaces by a rename (a new inode each time: it
    is never rewritten in place, so a crash cannot leave it half written)."""
    view.make({"f": "x"})
    view.mount("cow,vstat")
    view.py("os.link(P('f'), P('g')); os.chown(P('g'), 0, 0)")
    key = record(view.layer, "f")["link"]
    assert record(view.layer, "g") == {"link": key}
    shared = view.layer / ".-" / ".-" / "index" / (key + "\x7f")
    first = shared.stat().st_ino
    r = view.py("os.chmod(P('f'), 0o4711);"
                "result = [(st(n)['uid'], st(n)['perm']) for n in ('f', 'g')]")
    assert r == [[0, 0o4711], [0, 0o4711]]
    assert shared.stat().st_ino != first
    assert {"uid": "0", "mode": "04711"}.items() <= dict(
        ln.split("=", 1) for ln in shared.read_text().splitlines()).items()
    view.remount("cow,vstat")
    assert view.py("result = [(st(n)['uid'], st(n)['perm']) for n in ('f', 'g')]") == r


def test_layer_written_like_vufs_mounts(view):
    """Whiteouts and key=value records made by hand, as VUOS's vufs writes them."""
    view.make({"etc/passwd": "root:x:0:0\n", "etc/protocols": "ip 0 IP\n", "dev/null": ""})
    meta = view.layer / ".-"
    (meta / "etc").mkdir(parents=True)
    (meta / "etc" / "protocols").write_bytes(b"")
    (meta / "etc" / "passwd\x7f").write_text("mode=0600\nuid=1234\ngid=1234\n")
    (meta / "dev").mkdir()
    (meta / "dev" / "null\x7f").write_text("type=c\nmode=0666\nrdev=1,3\n")
    subprocess.run(["chown", "-R", f"{view.user.uid}:{view.user.gid}", view.layer], check=True)
    view.mount("cow,vstat")
    r = view.py("result = [ls('etc'), st('etc/passwd'), st('dev/null')]")
    assert r[0] == ["passwd"]
    assert (r[1]["perm"], r[1]["uid"], r[1]["gid"]) == (0o600, 1234, 1234)
    assert (r[2]["fmt"], r[2]["rdev"], r[2]["perm"]) == (0o020000, [1, 3], 0o666)


def test_crash_leftovers_never_show(view):
    view.make({"f": "orig\n"})
    work = view.layer / ".-" / ".-"
    work.mkdir(parents=True)
    (work / "tmp.1234.5").write_text("half a cop")
    (view.layer / ".-" / "f\x7f").write_text("ino=7\n")  # a record written before a crash
    subprocess.run(["chown", "-R", f"{view.user.uid}:{view.user.gid}", view.layer], check=True)
    view.mount("cow")
    assert view.py("result = [read('f'), ls()]") == ["orig\n", ["f"]]
    assert list(work.iterdir()) == []


def test_corrupt_record_gives_eio_for_that_entry_only(view):
    view.make({"good": "g\n", "bad": "b\n"})
    (view.layer / ".-").mkdir()
    (view.layer / ".-" / "bad\x7f").write_text("mode=banana\n")
    subprocess.run(["chown", "-R", f"{view.user.uid}:{view.user.gid}", view.layer], check=True)
    m = view.mount("cow")
    r = view.py("result = [read('good'), st('bad'), read('bad'), ls()]")
    assert r == ["g\n", "EIO", "EIO", ["bad", "good"]]
    assert (view.layer / ".-" / "bad\x7f").read_text() == "mode=banana\n"  # left alone
    view.unmount()
    lines = [ln for ln in m.stderr().splitlines() if "corrupt" in ln]
    assert lines and lines[0] == (f"viewfs: corrupt layer record {view.layer}/.-/bad\\x7f: "
                                  "line 1: bad mode")


def test_copy_up_is_atomic_when_the_daemon_is_killed(view):
    rnd = random.Random(7)
    view.make({f"f{i:03d}": rnd.randbytes(65536) for i in range(150)})
    originals = {f"f{i:03d}": (view.mnt / f"f{i:03d}").read_bytes() for i in range(150)}
    m = view.mount("cow")
    writer = subprocess.Popen(
        view.user.wrap(["/usr/bin/python3", "-c",
                        "import os, sys\n"
                        "for i in range(150):\n"
                        "    with open(os.path.join(sys.argv[1], f'f{i:03d}'), 'ab') as f:\n"
                        "        f.write(b'appended')\n", str(view.mnt)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not list(view.layer.glob("f*")) and writer.poll() is None:
        pass
    # the kill must land while the writer is at work: a writer that had finished would make
    # every file simply "appended", and the test would prove nothing
    assert writer.poll() is None, "the writer finished before the kill"
    m.kill(signal.SIGKILL)
    writer.wait(30)
    subprocess.run(["fusermount3", "-uz", view.mnt], check=False)
    m.unmounted = True
    view.m = None
    view.mount("cow")
    got = view.py("import base64\n"
                  "result = {n: base64.b64encode(open(P(n), 'rb').read()).decode()"
                  " for n in ls()}")
    import base64
    for name, data in got.items():
        data = base64.b64decode(data)
        assert data in (originals[name], originals[name] + b"appended"), name
    assert sorted(got) == sorted(originals)
    appended = sum(base64.b64decode(d).endswith(b"appended") for d in got.values())
    assert appended < len(originals), "every append was done before the kill"


def test_more_directories_than_file_descriptors(view):
    """Directories keep an fd each while the kernel knows them; past the fd limit the least
    recently used are closed and reopened on demand. With 256 fds and 1200 directories,
    everything still works and nothing is lost."""
    from conftest import run, viewos_bin
    view.make({f"a{i:02d}/b{j:02d}/f": f"{i}.{j}\n" for i in range(40) for j in range(30)})
    run(["prlimit", "--nofile=256:256", viewos_bin("viewfs"), "-o", "cow", view.layer, view.mnt],
        user=view.user)
    try:
        code = ("out = {}\n"
                "for r, ds, fs in os.walk(M):\n"
                "    for f in fs: out[os.path.relpath(os.path.join(r, f), M)] = read(os.path.relpath(os.path.join(r, f), M))\n")
        r = view.py(code + "result = out")
        assert len(r) == 1200 and r["a07/b11/f"] == "7.11\n"
        # changes all over the tree, then everything read again (directories reopened)
        r = view.py("for i in range(0, 40, 3):\n"
                    "    for j in range(0, 30, 7): append(f'a{i:02d}/b{j:02d}/f', 'x')\n"
                    "    os.rename(P(f'a{i:02d}/b29'), P(f'a{i:02d}/moved'))\n"
                    "    os.mkdir(P(f'a{i:02d}/b00/new'))\n" + code +
                    "result = [len(out), out['a03/b07/f'], out['a03/moved/f'], st('a03/b29')]")
        assert r == [1200, "3.7\nx", "3.29\n", "ENOENT"]
    finally:
        run(["fusermount3", "-u", view.mnt], user=view.user)
    view.mount("cow")
    assert view.py("result = [read('a39/b28/f'), read('a39/moved/f'), ls('a39/b00')]") == [
        "39.28\nx", "39.29\n", ["f", "new"]]


def test_full_layer_gives_enospc_and_no_half_copy(rtmp, mounts):
    """A copy-up that does not fit: ENOSPC, the original untouched, no half file in the view
    or the layer, and the view goes on working."""
    mnt, layer = rtmp / "mnt", rtmp / "layer"
    mnt.mkdir()
    layer.mkdir()
    (mnt / "big").write_bytes(os.urandom(3 << 20))
    (mnt / "small").write_text("small\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "layer", layer], check=True)
    try:
        mounts.start("viewfs", "-o", "cow", layer, mnt, mountpoint=mnt)
        with pytest.raises(OSError) as e:
            with open(mnt / "big", "ab") as f:
                f.write(b"x")
        assert e.value.errno == errno.ENOSPC
        assert (mnt / "big").stat().st_size == 3 << 20
        assert not (layer / "big").exists()
        assert list((layer / ".-" / ".-").iterdir()) == []
        with open(mnt / "small", "a") as f:
            f.write("more\n")
        assert (mnt / "small").read_text() == "small\nmore\n"
    finally:
        for m in mounts.active:
            m.unmount()
        mounts.active.clear()
        subprocess.run(["umount", layer], check=False)


@pytest.mark.parametrize("opts, synced", [("cow", True), ("cow,volatile", False)])
def test_copies_reach_the_disk_before_rename_unless_volatile(rtmp, opts, synced):
    """A copy-up waits for its data to be on disk before it replaces the original in the view
    (fdatasync, seen with strace); -o volatile skips that."""
    import time
    from conftest import mounted_at, viewos_bin
    mnt, layer, log = rtmp / "mnt", rtmp / "layer", rtmp / "strace.log"
    mnt.mkdir()
    layer.mkdir()
    (mnt / "f").write_text("data\n")
    p = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=fdatasync,renameat2", "-o", log,
                          viewos_bin("viewfs"), "-f", "-o", opts, layer, mnt])
    try:
        for _ in range(200):
            if mounted_at(mnt):
                break
            time.sleep(0.05)
        with open(mnt / "f", "a") as f:
            f.write("more\n")
    finally:
        subprocess.run(["fusermount3", "-u", mnt])
        p.wait(30)
    calls = [ln for ln in log.read_text().splitlines() if "fdatasync" in ln or "renameat2" in ln]
    names = [c.split("(")[0].split()[-1] for c in calls]
    if synced:
        assert names.index("fdatasync") < names.index("renameat2")
    else:
        assert "fdatasync" not in names and "renameat2" in names


def test_merge_vstat_mounts_a_read_only_layer_and_writes_nothing(view):
    """merge's SOURCE is read-only: with vstat too, a layer the user may not write (0555)
    mounts, shows its records, and is left exactly as it was (no SOURCE/.- made)."""
    view.make({"orig-only": "o\n", "both": "orig\n"})
    view.make({"both": "layer\n", "sub/layer-only": "l\n"}, "layer")
    os.chmod(view.layer, 0o555)
    before = view.layer_digest()
    view.mount("merge,vstat")
    r = view.py("result = [read('both'), read('orig-only'), read('sub/layer-only'),"
                " err(os.chown, P('orig-only'), 0, 0), append('orig-only', 'more\\n'),"
                " err(os.chmod, P('both'), 0o600), ls()]")
    assert r == ["layer\n", "o\n", "l\n", "EPERM", None, "EROFS", ["both", "orig-only", "sub"]]
    view.unmount()
    assert view.layer_digest() == before
    assert view.orig("orig-only").read_text() == "o\nmore\n"


def test_merge_vstat_mounts_a_layer_on_a_read_only_bind_mount(rtmp, mounts):
    """The same as root, with the layer on a read-only bind mount (EROFS for any write)."""
    orig, src, ro = rtmp / "mnt", rtmp / "layer-src", rtmp / "ro"
    layer = ro / "layer"
    for d in (orig, src / "layer", ro):
        d.mkdir(parents=True)
    (orig / "f").write_text("orig\n")
    (src / "layer" / "g").write_text("layer\n")
    subprocess.run(["mount", "--bind", src, ro], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True)
        before = strong_digest(layer)
        m = mounts.start("viewfs", "-o", "merge,vstat", layer, orig, mountpoint=orig)
        assert sorted(os.listdir(orig)) == ["f", "g"]
        os.chown(orig / "f", 1234, 1234)  # root: a real chown, in the original
        with open(orig / "f", "a") as f:
            f.write("more\n")
        m.unmount()
        assert strong_digest(layer) == before
        assert os.stat(orig / "f").st_uid == 1234 and (orig / "f").read_text() == "orig\nmore\n"
    finally:
        subprocess.run(["umount", ro], check=False)
