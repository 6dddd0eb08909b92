"""umfuse-ext2 as a daemon: the command line, one-line errors for bad input (exit status,
nothing mounted, image untouched), a journal that needs recovery, features that force a
read-only mount, the "not clean" mark while mounted, unmount and SIGTERM leaving a clean image,
mount(8) and fstab, View-OS's rw+/force, an unprivileged user, and NBD sources."""
import errno
import fcntl
import hashlib
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_fat, mounted_at, run, viewos_bin
from e2lib import DAEMON, assert_clean, dumpe2fs, ext2, fsck, make_image, uext2  # noqa: F401


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
    # norecovery is for looking (ro): a read-write mount would write over what the journal
    # still has to replay, so it is refused with or without it
    for opts in [[], ["-o", "ro"], ["-o", "rw+"], ["-o", "rw,norecovery"], ["-o", "norecovery"],
                 ["-o", "rw+,noload"]]:
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


@pytest.mark.parametrize("features, name, extra", [
    ("quota", "quota", ()),
    ("inline_data", "inline_data", ()),
    ("project,quota", "project", ()),
    ("encrypt", "encrypt", ()),
    ("casefold", "casefold", ()),
    ("verity", "verity", ()),
    ("bigalloc", "bigalloc", ("-C", "16384")),
    ("mmp", "mmp", ()),
    ("ea_inode", "ea_inode", ()),
])
def test_features_libext2fs_cannot_write_mount_read_only(ext2, features, name, extra):
    img = ext2.image("ext4-4k", extra=("-O", features, *extra))
    before = sha(img)
    m = ext2.mount(img)
    assert "ro" in mounted_at(m.path).split()[5].split(",")
    lines = [line for line in m.stderr().splitlines() if "mounting read-only" in line]
    assert len(lines) == 1 and name in lines[0] and str(img) in lines[0], m.stderr()
    with pytest.raises(OSError) as ei:
        (m.path / "x").write_text("no")
    assert ei.value.errno == errno.EROFS
    assert os.listdir(m.path) == ["lost+found"]
    m.unmount()
    assert sha(img) == before  # not even the mount count
    assert_clean(img)


def set_feature_bit(img, field, bit):
    """Adds a feature bit to the superblock through debugfs (which keeps its checksum right):
    one no version of e2fsprogs or Linux knows yet, as a newer mke2fs could set."""
    offset = {"feature_incompat": 1024 + 0x60, "feature_ro_compat": 1024 + 0x64}[field]
    with open(img, "rb") as f:
        f.seek(offset)
        value = struct.unpack("<I", f.read(4))[0]
    run(["debugfs", "-w", "-R", f"ssv {field} {value | bit:#x}", img])
    with open(img, "rb") as f:
        f.seek(offset)
        assert struct.unpack("<I", f.read(4))[0] == value | bit


def test_unknown_ro_compat_feature_mounts_read_only_with_its_name(ext2, rtmp):
    src = rtmp / "src"
    src.mkdir()
    (src / "kept").write_text("readable")
    img = ext2.image("ext4-4k", extra=("-d", str(src)))
    set_feature_bit(img, "feature_ro_compat", 1 << 31)
    before = sha(img)
    m = ext2.mount(img)  # read-write asked: libext2fs refuses to write, the daemon says why
    assert "ro" in mounted_at(m.path).split()[5].split(",")
    lines = [line for line in m.stderr().splitlines() if "mounting read-only" in line]
    assert len(lines) == 1 and "FEATURE_R31" in lines[0], m.stderr()
    assert (m.path / "kept").read_text() == "readable"
    with pytest.raises(OSError) as ei:
        (m.path / "x").write_text("no")
    assert ei.value.errno == errno.EROFS
    m.unmount()
    assert sha(img) == before


@pytest.mark.parametrize("opts", [[], ["-o", "ro"]])
def test_unknown_incompat_feature_is_refused_in_one_line(ext2, rtmp, opts):
    img = ext2.image("ext4-4k")
    set_feature_bit(img, "feature_incompat", 1 << 31)
    before = sha(img)
    mnt = rtmp / "mnt"
    mnt.mkdir()
    r = run([viewos_bin(DAEMON), *opts, img, mnt], check=False)
    one_line_error(r, 2, "unsupported file system features: FEATURE_I31", str(img))
    assert not mounted_at(mnt)
    assert sha(img) == before


def test_external_journal_device_is_refused_in_one_line(rtmp):
    jdev = rtmp / "journal.img"
    run(["truncate", "-s", "16M", jdev])
    run(["mke2fs", "-q", "-F", "-O", "journal_dev", "-b", "4096", jdev])
    before = sha(jdev)
    mnt = rtmp / "mnt"
    mnt.mkdir()
    for opts in [[], ["-o", "ro"]]:
        r = run([viewos_bin(DAEMON), *opts, jdev, mnt], check=False)
        one_line_error(r, 2, "external journal device, not a file system", str(jdev))
        assert not mounted_at(mnt)
    assert sha(jdev) == before


def debugfs_ino(img, path):
    out = run(["debugfs", "-R", f"stat {path}", img]).stdout
    return int(out.split("Inode:")[1].split()[0])


def test_orphan_inodes_refuse_a_read_write_mount_but_not_a_read_only_one(ext2, rtmp):
    """An image left with orphan inodes (files unlinked while open when the system stopped):
    releasing them is e2fsck's job. Made as the kernel leaves it: the inode has no link and no
    name, and heads the superblock's orphan list."""
    src = rtmp / "src"
    src.mkdir()
    (src / "held").write_bytes(b"h" * 20000)
    (src / "kept").write_text("kept")
    img = ext2.image("ext4-4k", extra=("-d", str(src)))
    ino = debugfs_ino(img, "/held")
    run(["debugfs", "-w", "-R", "unlink /held", img])
    run(["debugfs", "-w", "-R", f"sif <{ino}> links_count 0", img])
    run(["debugfs", "-w", "-R", f"ssv last_orphan {ino}", img])
    assert dumpe2fs(img)["First orphan inode"] == str(ino)
    before = sha(img)
    mnt = rtmp / "mnt"
    mnt.mkdir()
    for opts in [[], ["-o", "rw+"]]:
        r = run([viewos_bin(DAEMON), *opts, img, mnt], check=False)
        one_line_error(r, 2, "orphan inodes", f"e2fsck {img}")
        assert not mounted_at(mnt)
    assert sha(img) == before
    m = ext2.mount(img, "ro")
    assert sorted(os.listdir(m.path)) == ["kept", "lost+found"]
    m.unmount()
    assert sha(img) == before
    # what the message says to do, then it mounts read-write
    assert fsck(img, fix=True)[0] in (0, 1)
    m = ext2.mount(img)
    (m.path / "new").write_text("n")
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


def wait_released(img, watchdog=60):
    """Until no daemon has img open any more (it writes everything before it lets go). The
    bound only turns a daemon that never exits into a failure instead of a hang."""
    deadline = time.monotonic() + watchdog
    while subprocess.run(["fuser", "-s", img], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, f"a daemon still holds {img} {watchdog}s after umount"
        time.sleep(0.05)


@pytest.fixture
def daemon_on_path():
    """The build's daemon where mount.fuse3 looks for it. mount(8) drops PATH from the
    environment of its helpers, so mount.fuse3's shell searches its default PATH: the daemon
    goes into /usr/local/sbin (the first directory of it) for the test, as a symlink."""
    link = Path("/usr/local/sbin") / DAEMON
    target = viewos_bin(DAEMON)
    if os.path.lexists(link):
        assert os.path.realpath(link) == os.path.realpath(target), \
            f"{link} is in the way (not this build's {DAEMON})"
        yield link
        return
    link.symlink_to(target)
    try:
        yield link
    finally:
        link.unlink()


@pytest.mark.parametrize("form", ["fuse.umfuse-ext2", "legacy"])
def test_mount_t_fuse_and_fstab(rtmp, daemon_on_path, form):
    """mount(8) and fstab through mount.fuse3. The form the man page gives, type
    fuse.umfuse-ext2 and a plain SOURCE: mount.fuse3 runs the daemon by the type's name. And
    View-OS's older form, type fuse, SOURCE 'PROGRAM#IMAGE', subtype=."""
    img = make_image(rtmp / "img")
    mnt = rtmp / "mnt"
    mnt.mkdir()
    if form == "legacy":
        fstype, src, sub = "fuse", f"{viewos_bin(DAEMON)}#{img}", f"subtype={DAEMON},"
    else:
        fstype, src, sub = form, str(img), ""
    run(["mount", "-t", fstype, "-o", f"{sub}rw+,noatime", src, mnt])
    try:
        line = mounted_at(mnt)
        assert f" fuse.{DAEMON} {img} " in line and "noatime" in line.split()[5], line
        (mnt / "via-mount").write_text("m")
    finally:
        run(["umount", mnt])
    wait_released(img)
    assert_clean(img)
    fstab = rtmp / "fstab"
    fstab.write_text(f"{src} {mnt} {fstype} {sub}ro,nofail,defaults 0 0\n")
    run(["mount", "-T", fstab, mnt])
    try:
        assert (mnt / "via-mount").read_text() == "m"
        assert "ro" in mounted_at(mnt).split()[5].split(",")
    finally:
        run(["umount", mnt])
    wait_released(img)
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
        m = ext2.mount(f"nbd+unix:///?socket={sock}")  # nbdkit listens before it forks
        (m.path / "over-nbd").write_text("n" * 100000)
        (m.path / "dir").mkdir()
        m.unmount()
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
    wait_released(img)  # nbdkit has exited: everything it was sent is in the image
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
