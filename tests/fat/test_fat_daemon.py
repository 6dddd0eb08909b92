"""umfuse-fat as a daemon: the command line, one-line errors for bad input with nothing mounted
and the image untouched, the dirty flag while mounted, clean images after unmount and SIGTERM,
read-only mounts that write nothing, mount(8), an unprivileged user, and NBD sources."""
import os
import signal
import subprocess
import time

import pytest

from conftest import make_fat, mounted_at, run, sanitizer_env, viewos_bin
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
    ("utf8=0", ["utf8", "UTF-8"]),
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


@pytest.mark.parametrize("fat", [16, 32])
def test_dirty_flag_set_while_mounted_and_cleared_by_unmount(fatvol, rtmp, fat):
    """Both marks of a volume in use: the boot sector's dirty flag (what Linux sets) and the
    clean-shutdown bit of FAT[1] in every FAT copy (FAT16/32, the specification's, which
    fsck.fat reads too), cleared while mounted read-write and set again by the unmount.
    A read-only mount touches neither."""
    img = make_fat(rtmp / "d.img", fat=fat, size="64M")
    im = Image(img)
    assert im.state() & 1 == 0 and im.clean_shutdown_bits() == [True, True]  # as mkfs.fat
    v = fatvol(img=img, opts=("ro",))
    assert im.state() & 1 == 0 and im.clean_shutdown_bits() == [True, True]
    v.unmount()
    v.start()
    (v.path / "data.bin").write_bytes(os.urandom(100_000))
    assert im.state() & 1 == 1 and im.clean_shutdown_bits() == [False, False]
    status, out = fsck(img)
    assert "Dirty bit is set" in out
    v.check()
    assert im.state() & 1 == 0 and im.clean_shutdown_bits() == [True, True]


@pytest.mark.parametrize("mark", ["boot-sector-flag", "fat1-clean-bit"])
def test_volume_dirty_before_mount_stays_dirty_for_fsck(fatvol, rtmp, mark):
    img = make_fat(rtmp / "dirty.img", fat=16, size="16M")
    im = Image(img)
    if mark == "boot-sector-flag":
        im.write(im.state_offset, bytes([im.state() | 1]))
    else:  # FAT[1] 0x7FFF in both copies: what a crash of Windows leaves
        for c in range(im.nfats):
            im.write(im.fat_entry_offset(1, c), b"\xff\x7f")
    status, before = fsck(img)
    assert "Dirty bit is set" in before
    v = fatvol(img=img)
    assert "not cleanly unmounted" in v.mount.stderr()
    (v.path / "x").write_bytes(b"x")
    v.unmount()
    # as Linux: neither mark is cleared, fsck must see it
    assert (im.state() & 1, im.clean_shutdown_bits()) == (
        (1, [True, True]) if mark == "boot-sector-flag" else (0, [False, False]))
    status, out = fsck(img)
    assert "Dirty bit" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_leaves_a_clean_image_with_everything_written(fatvol, sig):
    """TERM, INT and HUP end the daemon as an unmount does (libfuse's handlers: HUP is the
    terminal going away, not a request to reload): everything written back, flags cleared,
    the mount gone, exit 0."""
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


def wait_for_release(img, timeout=60):
    """The kernel does not wait for a FUSE daemon at unmount: wait until no process holds the
    image (fuser -s fails), as the README says to. The bound is a hang guard only."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["fuser", "-s", str(img)], stderr=subprocess.DEVNULL).returncode == 0:
        assert time.monotonic() < deadline, f"the daemon still holds {img} after {timeout}s"
        time.sleep(0.05)


def test_mount_t_fuse_through_mount_fuse3(rtmp):
    """The legacy form: type fuse, the program and the source in one word."""
    img, mnt = make_fat(rtmp / "img", fat=16, size="16M"), rtmp / "mnt"
    mnt.mkdir()
    run(["mount", "-t", "fuse", "-o", "subtype=umfuse-fat,noatime",
         f"{viewos_bin(FAT)}#{img}", mnt], env=sanitizer_env())
    try:
        line = mounted_at(mnt)
        assert "fuse.umfuse-fat" in line
        (mnt / "via mount(8).txt").write_text("hello")
    finally:
        run(["umount", mnt])
    wait_for_release(img)
    assert_clean(img)
    assert "via mount(8).txt" in mtools("mdir", "-i", img, "::").stdout


def on_path():
    """The environment of a mount helper that finds the built umfuse-fat on PATH."""
    return sanitizer_env(dict(os.environ, PATH=f"{os.path.dirname(viewos_bin(FAT))}:"
                                             f"{os.environ['PATH']}"))


@pytest.mark.parametrize("opts", [None, "ro", "uid=1234,umask=077"])
def test_mount_fuse3_type_fuse_umfuse_fat_runs_the_daemon_from_path(rtmp, opts):
    """What `mount -t fuse.umfuse-fat SOURCE MOUNTPOINT -o OPTS` runs: mount.fuse3 with the
    type fuse.umfuse-fat finds umfuse-fat on PATH and gives it the source, the mount point and
    the options; the daemon detaches once mounted. (mount(8) itself clears PATH: the next test
    goes through it with the program where an installed one would be.)"""
    img, mnt = make_fat(rtmp / "img", fat=16, size="16M"), rtmp / "mnt"
    mnt.mkdir()
    mtools("mcopy", "-i", img, "/etc/hostname", "::hostname")
    before = sha(img)
    run(["mount.fuse3", img, mnt, "-t", "fuse.umfuse-fat"] + (["-o", opts] if opts else []),
        env=on_path())
    try:
        line = mounted_at(mnt)
        assert line and " - fuse.umfuse-fat " in line and str(img) in line
        assert (mnt / "hostname").read_bytes() == open("/etc/hostname", "rb").read()
        if opts == "ro":
            with pytest.raises(OSError) as e:
                (mnt / "new").write_text("x")
            assert e.value.errno == 30  # EROFS
        else:
            (mnt / "via mount(8).txt").write_text("hello")
        if opts and "uid" in opts:
            st = os.stat(mnt / "hostname")
            assert (st.st_uid, st.st_mode & 0o777) == (1234, 0o700)
    finally:
        run(["umount", mnt])
    wait_for_release(img)
    assert not mounted_at(mnt)
    if opts == "ro":
        assert sha(img) == before
    else:
        assert_clean(img)
        assert "via mount(8).txt" in mtools("mdir", "-i", img, "::").stdout


def test_mount_t_fuse_umfuse_fat_as_installed(rtmp):
    """`mount -t fuse.umfuse-fat SOURCE MOUNTPOINT` itself, in a private mount namespace in
    which the built program is where an installed one is found (/usr/local/sbin, on the
    default PATH that mount(8) leaves its helpers)."""
    img, mnt, out = make_fat(rtmp / "img", fat=16, size="16M"), rtmp / "mnt", rtmp / "out"
    mnt.mkdir()
    out.mkdir()
    bindir = rtmp / "sbin"
    bindir.mkdir()
    (bindir / FAT).symlink_to(viewos_bin(FAT))
    mtools("mcopy", "-i", img, "/etc/hostname", "::hostname")
    script = f"""
        set -e
        mount --bind '{bindir}' /usr/local/sbin
        trap 'umount "{mnt}" 2>/dev/null || fuser -sk "{img}" 2>/dev/null || true' EXIT
        mount -t fuse.umfuse-fat '{img}' '{mnt}' -o noatime
        grep " {mnt} " /proc/self/mountinfo > '{out}/mountinfo'
        cat '{mnt}/hostname' > '{out}/hostname'
        echo hello > '{mnt}/via mount(8).txt'
        umount '{mnt}'
        while fuser -s '{img}' 2>/dev/null; do sleep 0.05; done
    """
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env=sanitizer_env(), timeout=120)
    assert " - fuse.umfuse-fat " in (out / "mountinfo").read_text()
    assert (out / "hostname").read_bytes() == open("/etc/hostname", "rb").read()
    assert r.stderr == ""
    assert_clean(img)
    assert "via mount(8).txt" in mtools("mdir", "-i", img, "::").stdout


def test_bad_source_through_mount_fuse3_is_one_line(rtmp):
    mnt = rtmp / "mnt"
    mnt.mkdir()
    r = run(["mount.fuse3", rtmp / "nope.img", mnt, "-t", "fuse.umfuse-fat"], env=on_path(),
            check=False)
    assert r.returncode != 0
    assert r.stderr.splitlines() == [
        f"umfuse-fat: cannot open {rtmp}/nope.img: No such file or directory"]
    assert not mounted_at(mnt)


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


def test_changes_reach_the_image_without_fsync_when_commit_is_set(fatvol):
    """commit=1: the write-back thread puts a change on the image with no fsync and no
    unmount (commit=0 does not: see the fsync test). Only that it arrives is asserted; the
    wait is bounded by a hang guard far above the interval, not by the interval itself."""
    v = fatvol(fat=16, size="32M", opts=("commit=1",))
    (v.path / "Written without fsync.txt").write_text("soon on disk")
    deadline = time.monotonic() + 60
    while True:
        r = subprocess.run(["mtype", "-i", str(v.img), "::Written without fsync.txt"],
                           capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
        if r.stdout == b"soon on disk":
            break
        assert time.monotonic() < deadline, "the change never reached the image (a hang)"
        time.sleep(0.1)
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
