"""umfuse-fat as a daemon: the command line, one-line errors for bad input with nothing mounted
and the image untouched, the dirty flag while mounted, clean images after unmount and SIGTERM,
read-only mounts that write nothing, mount(8), an unprivileged user, and NBD sources."""
import os
import signal
import subprocess
import time

import pytest

from conftest import make_fat, mounted_at, run, viewos_bin
from fatlib import FAT, Image, assert_clean, fatvol, fsck, mtools, sha  # noqa: F401


def test_help_lists_the_fat_options_and_version():
    r = run([viewos_bin(FAT), "--help"])
    assert r.stdout.startswith("usage: umfuse-fat [options] SOURCE MOUNTPOINT")
    for opt in ["uid=N", "gid=N", "umask=OCTAL", "dmask=OCTAL", "fmask=OCTAL", "codepage=N",
                "shortname=MODE"]:
        assert f"-o {opt}" in r.stdout
    r = run([viewos_bin(FAT), "--version"])
    assert r.stdout.startswith("umfuse-fat (viewos) ")


@pytest.mark.parametrize("opt, words", [
    ("bogus", ["unknown option 'bogus'"]),
    ("codepage=999", ["'999'", "codepage", "unknown code page 999"]),
    ("codepage=932", ["double-byte"]),
    ("shortname=dos", ["'dos'", "shortname"]),
    ("uid=abc", ["'abc'", "uid"]),
    ("umask=999", ["umask"]),
    ("iocharset=iso8859-1", ["iocharset", "UTF-8"]),
    ("tz=CET", ["tz", "UTC"]),
    ("commit=7200", ["commit", "3600"]),
])
def test_bad_option_one_line_exit_1_nothing_mounted(rtmp, opt, words):
    img, mnt = make_fat(rtmp / "img", fat=16, size="16M"), rtmp / "mnt"
    mnt.mkdir()
    before = sha(img)
    r = run([viewos_bin(FAT), "-o", opt, img, mnt], check=False)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("umfuse-fat: "), r.stderr
    for w in words:
        assert w in lines[0]
    assert not mounted_at(mnt)
    assert sha(img) == before


def test_missing_image_one_line_exit_2(rtmp):
    mnt = rtmp / "mnt"
    mnt.mkdir()
    r = run([viewos_bin(FAT), rtmp / "nope.img", mnt], check=False)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"umfuse-fat: cannot open {rtmp}/nope.img: No such file or directory"]
    assert not mounted_at(mnt)


def damage_bpb(img, what):
    im = Image(img)
    if what == "bytes_per_sector":
        im.write(11, (1000).to_bytes(2, "little"))
    elif what == "sectors_per_cluster":
        im.write(13, bytes([3]))
    elif what == "no_fats":
        im.write(16, bytes([0]))
    elif what == "fat_too_small":
        im.write(22, (1).to_bytes(2, "little"))
    elif what == "root_cluster":
        im.write(44, (0x0FFFFFF0).to_bytes(4, "little"))
    elif what == "truncated":
        os.truncate(img, os.path.getsize(img) // 2)
    elif what == "zeros":
        im.write(0, bytes(512))


@pytest.mark.parametrize("fat, what, reason", [
    (16, "bytes_per_sector", "bytes per sector is 1000"),
    (16, "sectors_per_cluster", "sectors per cluster is 3"),
    (16, "no_fats", "0 copies of the FAT"),
    (16, "fat_too_small", "cannot map"),
    (32, "root_cluster", "root cluster"),
    (16, "truncated", "smaller than the file system"),
    (16, "zeros", "no boot sector signature"),
], ids=lambda v: v if isinstance(v, str) and " " not in v else  # (no spaces: the harness
         "" if isinstance(v, str) else str(v))                    # puts ids in ASAN_OPTIONS)
def test_bad_boot_sector_refused_cleanly(rtmp, fat, what, reason):
    img, mnt = make_fat(rtmp / "img", fat=fat, size="40M"), rtmp / "mnt"
    mnt.mkdir()
    damage_bpb(img, what)
    before = sha(img)
    r = run([viewos_bin(FAT), img, mnt], check=False)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"umfuse-fat: cannot mount {img}: not a FAT file system (")
    assert reason in lines[0]
    assert not mounted_at(mnt)
    assert sha(img) == before


def test_image_used_by_another_mount_is_refused(fatvol, rtmp):
    v = fatvol(fat=16, size="16M")
    (v.path / "f").write_bytes(b"mine")
    other = rtmp / "other"
    other.mkdir()
    r = run([viewos_bin(FAT), v.img, other], check=False)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "in use" in r.stderr, r.stderr
    assert not mounted_at(other)
    assert (v.path / "f").read_bytes() == b"mine"
    v.check()


def test_missing_mountpoint_exit_32(rtmp):
    img = make_fat(rtmp / "img", fat=16, size="16M")
    r = run([viewos_bin(FAT), img, rtmp / "nowhere"], check=False)
    assert r.returncode == 32
    assert r.stderr.splitlines() == [
        f"umfuse-fat: cannot mount on {rtmp}/nowhere: No such file or directory"]


def test_dirty_flag_set_while_mounted_and_cleared_by_unmount(fatvol):
    v = fatvol(fat=32, size="64M")
    (v.path / "data.bin").write_bytes(os.urandom(100_000))
    assert Image(v.img).state() & 1 == 1
    status, out = fsck(v.img)
    assert "Dirty bit is set" in out
    v.check()
    assert Image(v.img).state() & 1 == 0


def test_volume_dirty_before_mount_stays_dirty_for_fsck(fatvol, rtmp):
    img = make_fat(rtmp / "dirty.img", fat=16, size="16M")
    im = Image(img)
    im.write(im.state_offset, bytes([im.state() | 1]))
    v = fatvol(img=img)
    assert "not cleanly unmounted" in v.mount.stderr()
    (v.path / "x").write_bytes(b"x")
    v.unmount()
    assert Image(img).state() & 1 == 1  # as Linux: fsck must see it
    status, out = fsck(img)
    assert "Dirty bit" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_a_clean_image_with_everything_written(fatvol, sig):
    v = fatvol(fat=32, size="64M")
    data = os.urandom(300_000)
    (v.path / "Some Dir").mkdir()
    (v.path / "Some Dir" / "a file with a long name.bin").write_bytes(data)
    v.mount.proc.send_signal(sig)
    assert v.mount.proc.wait(20) == 0
    v.mount.unmounted = True
    assert not mounted_at(v.path)
    assert_clean(v.img)
    r = subprocess.run(["mtype", "-i", str(v.img), "::Some Dir/a file with a long name.bin"],
                       capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    assert r.stdout == data


def test_read_only_mount_writes_nothing(fatvol, rtmp):
    img = make_fat(rtmp / "ro.img", fat=32, size="64M")
    mtools("mcopy", "-i", img, "/etc/hostname", "::hostname")
    before = sha(img)
    v = fatvol(img=img, opts=("ro",))
    assert (v.path / "hostname").read_bytes() == open("/etc/hostname", "rb").read()
    for action in [lambda: (v.path / "new").write_bytes(b"x"),
                   lambda: (v.path / "d").mkdir(),
                   lambda: (v.path / "hostname").unlink(),
                   lambda: os.truncate(v.path / "hostname", 0)]:
        with pytest.raises(OSError) as e:
            action()
        assert e.value.errno == 30  # EROFS
    v.unmount()
    assert sha(img) == before


def test_view_os_mode_options_are_accepted(fatvol, rtmp):
    """fusefat wanted rw+ (or rw,force): the same command lines work here."""
    img = make_fat(rtmp / "v.img", fat=12, size="1440K")
    for opts in [("rw+",), ("rw", "force"), ("rw",)]:
        v = fatvol(img=img, opts=opts)
        (v.path / ("-".join(opts).replace("+", "p") + ".txt")).write_text("x")
        v.check()
    assert {l.split()[-1] for l in mtools("mdir", "-b", "-i", img, "::").stdout.split()} >= {
        "::/rwp.txt", "::/rw-force.txt", "::/rw.txt"}


def test_mount_t_fuse_through_mount_fuse3(rtmp):
    img, mnt = make_fat(rtmp / "img", fat=16, size="16M"), rtmp / "mnt"
    mnt.mkdir()
    run(["mount", "-t", "fuse", "-o", "subtype=umfuse-fat,noatime",
         f"{viewos_bin(FAT)}#{img}", mnt])
    try:
        line = mounted_at(mnt)
        assert "fuse.umfuse-fat" in line
        (mnt / "via mount(8).txt").write_text("hello")
    finally:
        run(["umount", mnt])
    for _ in range(100):  # the daemon finishes writing back after the unmount
        if Image(img).state() & 1 == 0:
            break
        time.sleep(0.05)
    assert_clean(img)
    assert "via mount(8).txt" in mtools("mdir", "-i", img, "::").stdout


def test_unprivileged_user_mounts_own_image(utmp, user, mounts):
    from fatlib import Vol
    img = make_fat(utmp / "u.img", fat=32, size="64M", owner=user)
    mnt = utmp / "mnt"
    run(["mkdir", mnt], user=user)
    v = Vol(mounts, img, mnt, user=user)
    # (without allow_other only the user may enter the mount: every check runs as the user)
    r = run(["stat", "-c", "%u %g", mnt], user=user)
    assert r.stdout.split() == [str(user.uid), str(user.gid)]
    run(["sh", "-c", f"echo 'written by a user' > '{mnt}/Notes of a user.txt'"], user=user)
    r = run(["stat", "-c", "%u", f"{mnt}/Notes of a user.txt"], user=user)
    assert r.stdout.strip() == str(user.uid)
    r = run(["cat", f"{mnt}/notes OF A USER.txt"], user=user)
    assert r.stdout == "written by a user\n"
    v.check()


@pytest.fixture
def nbdkit(rtmp):
    procs = []

    def start(*args):
        sock = rtmp / f"nbd{len(procs)}.sock"
        pidfile = rtmp / f"nbd{len(procs)}.pid"
        p = subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-P", str(pidfile), "-U",
                              str(sock), *args], stderr=subprocess.PIPE)
        procs.append(p)
        for _ in range(500):
            if pidfile.exists():
                return sock
            time.sleep(0.01)
        pytest.fail("nbdkit did not start: " + p.stderr.read().decode())

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_nbd_source(nbdkit, rtmp, mounts):
    from fatlib import Vol
    img = make_fat(rtmp / "n.img", fat=16, size="32M")
    sock = nbdkit("file", str(img))
    mnt = rtmp / "mnt"
    mnt.mkdir()
    v = Vol(mounts, f"nbd+unix:///?socket={sock}", mnt)
    (v.path / "over nbd.txt").write_text("through the socket")
    v.unmount()
    assert_clean(img)
    r = mtools("mtype", "-i", img, "::over nbd.txt")
    assert r.stdout == "through the socket"


def test_changes_reach_the_image_within_the_commit_interval(fatvol):
    v = fatvol(fat=16, size="32M", opts=("commit=1",))
    (v.path / "Written without fsync.txt").write_text("soon on disk")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = subprocess.run(["mtype", "-i", str(v.img), "::Written without fsync.txt"],
                           capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
        if r.stdout == b"soon on disk":
            break
        time.sleep(0.1)
    assert r.stdout == b"soon on disk"
    v.check()


def test_fsync_puts_data_fat_and_entry_in_the_image(fatvol):
    v = fatvol(fat=16, size="32M", opts=("commit=0",))  # only fsync writes metadata back
    data = os.urandom(70_000)
    fd = os.open(v.path / "synced.bin", os.O_CREAT | os.O_WRONLY)
    os.write(fd, data)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    before = subprocess.run(["mtype", "-i", str(v.img), "::synced.bin"], capture_output=True,
                            env=env)
    assert before.stdout != data  # the entry is not on disk yet: the next step must do it
    os.fsync(fd)
    # read the image itself while still mounted: mtools follows the FAT and the entry
    r = subprocess.run(["mtype", "-i", str(v.img), "::synced.bin"], capture_output=True,
                       env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    os.close(fd)
    assert r.stdout == data
    v.check()
