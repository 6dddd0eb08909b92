"""umfuse-ext2 as a daemon: the command line, one-line errors for bad input (exit status,
nothing mounted, image untouched), a journal that needs recovery, features that force a
read-only mount, the "not clean" mark while mounted, unmount and SIGTERM leaving a clean image,
mount(8) and fstab, View-OS's rw+/force, an unprivileged user, and NBD sources."""
import fcntl
import hashlib
import os
import signal
import struct
import subprocess
import time

import pytest

from conftest import make_fat, mounted_at, run, viewos_bin
from e2lib import DAEMON, assert_clean, dumpe2fs, ext2, make_image, uext2  # noqa: F401


def ustat(user, path, fmt="%u %g %a"):
    """stat as the user (the mount is theirs: root may not look into it)."""
    return run(["stat", "-c", fmt, path], user=user).stdout.strip()


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def one_line_error(r, status, *words):
    assert r.returncode == status, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{DAEMON}: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_help_and_version():
    r = run([viewos_bin(DAEMON), "--help"])
    assert r.stdout.startswith(f"usage: {DAEMON} [options] SOURCE MOUNTPOINT")
    for opt in ["-o commit=SECONDS", "-o cache_size=SIZE", "-o norecovery", "-o acl",
                "-o writeback", "-o ro"]:
        assert opt in r.stdout, opt
    assert run([viewos_bin(DAEMON), "--version"]).stdout.startswith(f"{DAEMON} (viewos) ")


@pytest.mark.parametrize("opts, words", [
    ("bogus", ["unknown option 'bogus'"]),
    ("commit=abc", ["invalid value 'abc'", "commit"]),
    ("cache_size=lots", ["cache_size"]),
    ("acl=maybe", ["acl"]),
])
def test_bad_option(rtmp, opts, words):
    img = make_image(rtmp / "img")
    mnt = rtmp / "mnt"
    mnt.mkdir()
    before = sha(img)
    r = run([viewos_bin(DAEMON), "-o", opts, img, mnt], check=False)
    one_line_error(r, 1, *words)
    assert not mounted_at(mnt)
    assert sha(img) == before


def bad_sources(rtmp):
    yield "missing", rtmp / "no-such.img", ["cannot open", "No such file or directory"]
    zeros = rtmp / "zeros.img"
    zeros.write_bytes(b"\0" * (1 << 20))
    yield "zeros", zeros, ["not an ext2/ext3/ext4 file system"]
    yield "fat", make_fat(rtmp / "fat.img", fat=16, size="16M"), ["not an ext2/ext3/ext4"]
    empty = rtmp / "empty.img"
    empty.write_bytes(b"")
    yield "empty", empty, ["truncated"]
    half = make_image(rtmp / "half.img", "ext4-4k", size="64M")
    os.truncate(half, 32 << 20)
    yield "truncated", half, ["truncated"]
    yield "directory", rtmp, ["cannot open"]


@pytest.mark.parametrize("foreground", [False, True])
def test_bad_source_one_line_exit_2_nothing_mounted(rtmp, foreground):
    mnt = rtmp / "mnt"
    mnt.mkdir()
    for name, src, words in list(bad_sources(rtmp)):
        before = sha(src) if os.path.isfile(src) else None
        args = ["-f"] if foreground else []
        r = run([viewos_bin(DAEMON), *args, src, mnt], check=False, timeout=30)
        line = one_line_error(r, 2, *words)
        assert str(src) in line, (name, line)
        assert not mounted_at(mnt), name
        if before:
            assert sha(src) == before, name


def test_missing_mountpoint(rtmp):
    img = make_image(rtmp / "img")
    r = run([viewos_bin(DAEMON), img, rtmp / "nowhere"], check=False)
    one_line_error(r, 32, "cannot mount on", "nowhere")


def test_image_in_use_is_refused(ext2, rtmp):
    img = ext2.image()
    ext2.mount(img)
    mnt = rtmp / "second"
    mnt.mkdir()
    r = run([viewos_bin(DAEMON), img, mnt], check=False)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert str(img) in r.stderr
    assert not mounted_at(mnt)


def journal_needing_recovery(img, kmnt):
    """A real ext4 journal with a committed, unreplayed transaction: the kernel writes, flushes
    its log and is shut down (EXT4_IOC_SHUTDOWN, LOGFLUSH) before checkpointing."""
    run(["mount", "-o", "loop", img, kmnt])
    try:
        (kmnt / "before").write_text("synced")
        os.sync()
        with open(kmnt / "in-journal", "w") as f:
            f.write("only in the journal")
            f.flush()
            os.fsync(f.fileno())  # committed to the journal, not yet checkpointed
        fd = os.open(kmnt, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, 0x8004587D, struct.pack("I", 1))
        finally:
            os.close(fd)
    finally:
        run(["umount", kmnt])
    assert "needs_recovery" in dumpe2fs(img)["Filesystem features"]


def test_journal_needing_recovery_is_never_ignored(ext2, rtmp):
    img = ext2.image("ext4-4k")
    kmnt = rtmp / "k"
    kmnt.mkdir()
    journal_needing_recovery(img, kmnt)
    before = sha(img)
    mnt = rtmp / "mnt"
    mnt.mkdir()
    for opts in [[], ["-o", "ro"], ["-o", "rw+"]]:
        r = run([viewos_bin(DAEMON), *opts, img, mnt], check=False)
        one_line_error(r, 2, "journal needs recovery", "e2fsck -E journal_only", str(img))
        assert not mounted_at(mnt)
    assert sha(img) == before
    # looking without the journal, read-only, on request
    m = ext2.mount(img, "ro", "norecovery")
    assert (m.path / "before").read_text() == "synced"
    assert "journal needs recovery" in m.stderr()
    m.unmount()
    assert sha(img) == before
    # after the recovery e2fsck offers, it mounts read-write with the journal's contents
    run(["e2fsck", "-E", "journal_only", "-y", img])
    m = ext2.mount(img)
    assert (m.path / "in-journal").read_text() == "only in the journal"
    (m.path / "new").write_text("x")
    m.unmount()
    assert_clean(img)


@pytest.mark.parametrize("features, name", [
    ("quota", "quota"),
    ("inline_data", "inline_data"),
    ("project,quota", "project"),
])
def test_features_libext2fs_cannot_write_mount_read_only(ext2, features, name):
    img = ext2.image("ext4-4k", extra=("-O", features))
    m = ext2.mount(img)
    assert "ro" in mounted_at(m.path).split()[5].split(",")
    text = m.stderr()
    assert "mounting read-only" in text and name in text
    with pytest.raises(OSError):
        (m.path / "x").write_text("no")
    assert os.listdir(m.path) == ["lost+found"]
    m.unmount()
    assert_clean(img)


def test_inline_data_files_read(ext2, rtmp):
    src = rtmp / "src"
    src.mkdir()
    (src / "tiny").write_text("inline!")
    (src / "small-dir").mkdir()
    (src / "small-dir" / "a").write_text("a" * 50)
    os.symlink("tiny", src / "link")
    (src / "big").write_bytes(os.urandom(10000))
    img = ext2.image("ext4-4k", extra=("-O", "inline_data", "-d", str(src)))
    m = ext2.mount(img)
    assert (m.path / "tiny").read_text() == "inline!"
    assert os.listdir(m.path / "small-dir") == ["a"]
    assert (m.path / "small-dir" / "a").read_text() == "a" * 50
    assert os.readlink(m.path / "link") == "tiny"
    assert (m.path / "big").read_bytes() == (src / "big").read_bytes()


def test_not_clean_while_mounted_and_clean_after(ext2):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    (m.path / "f").write_text("x")
    assert dumpe2fs(img)["Filesystem state"] == "not clean"
    m.unmount()
    assert dumpe2fs(img)["Filesystem state"] == "clean"
    assert int(dumpe2fs(img)["Mount count"]) == 1
    assert_clean(img)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_unmounts_and_leaves_a_clean_image(ext2, sig):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    for i in range(200):
        (m.path / f"f{i}").write_bytes(os.urandom(i * 10))
    os.unlink(m.path / "f7")
    m.proc.send_signal(sig)
    assert m.proc.wait(20) == 0
    m.unmounted = True
    assert not mounted_at(m.path)
    assert_clean(img)
    m = ext2.mount(img, "ro")
    assert len(os.listdir(m.path)) == 200  # 199 files and lost+found


def test_view_os_rw_plus_and_force_mean_read_write(ext2):
    img = ext2.image("ext4-4k")
    for opt in ["rw+", "force", "rw"]:
        m = ext2.mount(img, opt)
        (m.path / opt).write_text(opt)
        m.unmount()
    assert_clean(img)


def test_mount_t_fuse_and_fstab(rtmp):
    img = make_image(rtmp / "img")
    mnt = rtmp / "mnt"
    mnt.mkdir()
    src = f"{viewos_bin(DAEMON)}#{img}"
    run(["mount", "-t", "fuse", "-o", f"rw+,noatime,subtype={DAEMON}", src, mnt])
    try:
        line = mounted_at(mnt)
        assert f"fuse.{DAEMON}" in line and "noatime" in line
        (mnt / "via-mount").write_text("m")
    finally:
        run(["umount", mnt])
    time.sleep(0.2)
    fstab = rtmp / "fstab"
    fstab.write_text(f"{src} {mnt} fuse subtype={DAEMON},ro,nofail,defaults 0 0\n")
    run(["mount", "-T", fstab, mnt])
    try:
        assert (mnt / "via-mount").read_text() == "m"
        assert "ro" in mounted_at(mnt).split()[5].split(",")
    finally:
        run(["umount", mnt])
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", f"umfuse-ext2.*{img}"],
                         capture_output=True).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_clean(img)


def test_unprivileged_user_mounts_an_image_they_own(uext2, user):
    img = uext2.image("ext4-4k", owner=user)
    m = uext2.mount(img, user=user)
    assert f"user_id={user.uid}" in mounted_at(m.path)
    run(["sh", "-c", f"echo mine > {m.path}/mine && mkdir {m.path}/d && ln -s mine {m.path}/l"],
        user=user)
    assert ustat(user, m.path / "mine") == f"{user.uid} {user.gid} 644"
    # root's lost+found keeps its real owner, and the kernel enforces its mode
    assert ustat(user, m.path / "lost+found") == "0 0 700"
    r = run(["ls", m.path / "lost+found"], user=user, check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = run(["chown", "0", m.path / "mine"], user=user, check=False)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    m.unmount()
    assert_clean(img)


def test_files_owned_by_others_show_real_ids_to_the_user(uext2, user, rtmp):
    src = rtmp / "src"
    src.mkdir()
    (src / "roots").write_text("r")
    os.chmod(src / "roots", 0o600)
    (src / "shared").write_text("s")
    os.chown(src / "shared", 4242, 4343)
    os.chmod(src / "shared", 0o664)
    img = uext2.image("ext4-4k", owner=user, extra=("-d", str(src)))
    m = uext2.mount(img, user=user)
    assert ustat(user, m.path / "roots") == "0 0 600"
    assert ustat(user, m.path / "shared") == "4242 4343 664"
    assert run(["cat", m.path / "shared"], user=user).stdout == "s"
    r = run(["cat", m.path / "roots"], user=user, check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = run(["sh", "-c", f"echo x >> {m.path}/shared"], user=user, check=False)
    assert r.returncode != 0
    m.unmount()
    assert_clean(img)


@pytest.mark.parametrize("opts", [(), ("writeback",)])
def test_setuid_cleared_on_write_and_chown(uext2, user, opts):
    img = uext2.image("ext4-4k", owner=user)
    m = uext2.mount(img, *opts, user=user)
    p = m.path / "prog"
    run(["sh", "-c", f"echo '#!/bin/sh' > {p} && chmod 6775 {p}"], user=user)
    assert ustat(user, p, "%a") == "6775"
    run(["sh", "-c", f"echo more >> {p}"], user=user)
    assert ustat(user, p, "%a") == "775"
    run(["chmod", "4755", p], user=user)
    run(["chgrp", str(user.gid), p], user=user)
    assert ustat(user, p, "%a") == "755"
    m.unmount()
    assert_clean(img)


def test_nbd_source(ext2, rtmp):
    img = ext2.image("ext4-4k")
    sock = rtmp / "nbd.sock"
    pidfile = rtmp / "nbdkit.pid"
    run(["nbdkit", "--unix", sock, "--pidfile", pidfile, "file", img])
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        m = ext2.mount(f"nbd+unix:///?socket={sock}")
        (m.path / "over-nbd").write_text("n" * 100000)
        (m.path / "dir").mkdir()
        m.unmount()
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        time.sleep(0.3)
    assert_clean(img)
    m = ext2.mount(img, "ro")
    assert (m.path / "over-nbd").read_text() == "n" * 100000


def test_block_device_source(ext2):
    """A device file as SOURCE (here a loop device over an image)."""
    img = ext2.image("ext4-4k")
    dev = run(["losetup", "--find", "--show", img]).stdout.strip()
    try:
        m = ext2.mount(dev)
        (m.path / "on-a-device").write_bytes(b"d" * 70000)
        m.unmount()
    finally:
        run(["losetup", "-d", dev])
    assert_clean(img)
    m = ext2.mount(img, "ro")
    assert (m.path / "on-a-device").read_bytes() == b"d" * 70000


def test_write_protected_image_mounts_read_only(uext2, user):
    img = uext2.image("ext4-4k", owner=user)
    os.chmod(img, 0o444)
    before = sha(img)
    m = uext2.mount(img, user=user)
    assert "write-protected, mounting read-only" in m.stderr()
    assert "ro" in mounted_at(m.path).split()[5].split(",")
    r = run(["touch", m.path / "x"], user=user, check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    m.unmount()
    assert sha(img) == before


def test_umdev_device_file_source(ext2, rtmp):
    """Nesting: an ext4 made on a umdev RAM disk's device file, mounted from that file. Needs
    umdev in the same build (CI builds everything; a build of ext2 alone skips this)."""
    from conftest import BUILD
    if not any(p.is_file() for p in BUILD.rglob("umdev-ramdisk")):
        pytest.skip(f"umdev-ramdisk is not built in {BUILD}")
    dev = rtmp / "disk"
    dev.touch()
    ramdisk = ext2.mounts.start("umdev-ramdisk", "-o", "size=64M", dev, mountpoint=dev)
    run(["mkfs.ext4", "-q", "-F", dev])
    m = ext2.mount(dev)
    (m.path / "nested").write_bytes(b"n" * 100000)
    m.unmount()
    assert_clean(dev)
    m = ext2.mount(dev, "ro")
    assert (m.path / "nested").read_bytes() == b"n" * 100000
    m.unmount()
    ramdisk.unmount()


def test_failed_mount_leaves_the_image_untouched(uext2, user, utmp):
    img = uext2.image("ext4-4k", owner=user)
    before = sha(img)
    mnt = utmp / "not-yours"
    mnt.mkdir()
    os.chown(mnt, 0, 0)
    os.chmod(mnt, 0o755)  # fusermount3 refuses a mount point the user cannot write
    r = run([viewos_bin(DAEMON), img, mnt], user=user, check=False)
    assert r.returncode == 32, r.stderr
    assert not mounted_at(mnt)
    assert sha(img) == before
