"""umdev-mbr: a disk image as device files, partitioned with the real tools (sfdisk, fdisk),
formatted with mkfs and checked with fsck, and compared byte for byte with the image at each
partition's offset (no loop device involved)."""
import errno
import os
import random

import pytest

from conftest import mounted_at, run, viewos_bin
from umdevlib import (BLKBSZGET, BLKFLSBUF, BLKGETSIZE64, BLKRRPART, BLKSSZGET, MIB,
                      ioctl_none, ioctl_u64, make_image, part_path, partition_files, read_at,
                      sfdisk, start, table_parts, wait_for)

MBR = "umdev-mbr"

FOUR_PRIMARY = "size=10MiB, type=83\nsize=20MiB, type=c\nsize=5MiB, type=82\n type=83\n"
EXTENDED = ("size=8MiB, type=83\nsize=8MiB, type=83\nsize=8MiB, type=83\n type=5\n"
            "size=6MiB, type=83\nsize=7MiB, type=83\n type=83\n")


def gpt_script(n):
    return "label: gpt\n" + "".join("size=3MiB\n" for _ in range(n))


def assert_files_match_table(disk, expected_numbers):
    table = table_parts(disk)
    assert sorted(table) == sorted(expected_numbers)
    files = partition_files(disk)
    assert sorted(files) == sorted(expected_numbers)
    for n, (start, size) in table.items():
        assert files[n].stat().st_size == size, f"partition {n}"
        assert ioctl_u64(files[n], BLKGETSIZE64) == size
        assert mounted_at(files[n])
    return table


def test_four_primary_partitions_appear_with_the_sizes_sfdisk_reports(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    assert partition_files(disk) == {}
    sfdisk(disk, FOUR_PRIMARY)
    table = assert_files_match_table(disk, [1, 2, 3, 4])
    assert table[1] == (MIB, 10 * MIB)


def test_extended_partition_with_logicals_numbered_from_5(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    sfdisk(disk, EXTENDED)
    table = assert_files_match_table(disk, [1, 2, 3, 4, 5, 6, 7])
    # the extended partition's file spans the whole container, as sfdisk --json reports it
    assert table[4][0] < table[5][0] and table[7][0] + table[7][1] <= sum(table[4])


def test_gpt_with_ten_partitions_and_the_128th_entry(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    sfdisk(disk, gpt_script(10))
    assert_files_match_table(disk, range(1, 11))
    # the last of GPT's 128 entries: sfdisk's dump format names the slot
    sfdisk(disk, f"label: gpt\n{disk}1 : start=2048, size=4096\n"
                 f"{disk}128 : start=8192, size=4096\n")
    assert_files_match_table(disk, [1, 128])


def test_existing_table_is_read_at_start(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 64 * MIB)
    run(["sfdisk", "--quiet", img], input=EXTENDED)
    disk = rtmp / "sdb"
    start(mounts, MBR, img, path=disk, parts=[1, 2, 3, 4, 5, 6, 7])
    assert_files_match_table(disk, [1, 2, 3, 4, 5, 6, 7])


def test_deleting_a_partition_removes_its_file(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    sfdisk(disk, EXTENDED)
    run(["sfdisk", "--quiet", "--delete", disk, "2"])
    assert not (rtmp / "hda2").exists()
    assert not mounted_at(rtmp / "hda2")
    assert_files_match_table(disk, [1, 3, 4, 5, 6, 7])
    run(["sfdisk", "--quiet", "--delete", disk])
    assert partition_files(disk) == {}


def test_fdisk_then_mkfs_in_one_script(rtmp, mounts):
    """The kernel re-reads after fdisk's BLKRRPART; for a device file the re-read happens when
    fdisk closes it, so the next command of the same script finds the partition."""
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    script = (f"printf 'o\\nn\\np\\n1\\n\\n+20M\\nn\\np\\n2\\n\\n\\nw\\n' | fdisk {disk} >/dev/null"
              f" && mkfs.ext2 -q {disk}1 && e2fsck -fn {disk}1 && mkfs.vfat {disk}2 >/dev/null"
              f" && fsck.fat -n {disk}2")
    run(["sh", "-c", script])
    assert_files_match_table(disk, [1, 2])


@pytest.mark.parametrize("threads", [[], ["-s"]], ids=["multi-threaded", "single-threaded"])
def test_sfdisk_then_mkfs_in_one_script(rtmp, mounts, threads):
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    start(mounts, MBR, *threads, img, path=disk)
    run(["sh", "-c", f"printf 'size=20MiB\\n\\n' | sfdisk --quiet {disk} && "
                     f"mkfs.ext2 -q {disk}1 && e2fsck -fn {disk}1"])


def test_filesystems_on_partitions_are_clean_and_equal_the_image(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 96 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    sfdisk(disk, "size=40MiB, type=83\nsize=40MiB, type=c\n")
    p1, p2 = part_path(disk, 1), part_path(disk, 2)
    run(["mkfs.ext2", "-q", p1])
    run(["mkfs.vfat", "-n", "UMDEV", p2])
    # write files into both through the device files with the real tools
    payload = rtmp / "payload.bin"
    payload.write_bytes(random.Random(5).randbytes(3 * MIB + 123))
    run(["debugfs", "-w", "-R", f"write {payload} payload.bin", p1])
    run(["mcopy", "-i", p2, payload, "::payload.bin"])
    run(["e2fsck", "-fn", p1])
    run(["fsck.fat", "-n", p2])
    assert run(["debugfs", "-R", "cat payload.bin", p1], binary=True).stdout == payload.read_bytes()
    assert run(["mtype", "-i", p2, "::payload.bin"], binary=True).stdout == payload.read_bytes()
    for n, (start_b, size) in table_parts(disk).items():
        assert part_path(disk, n).read_bytes() == read_at(img, start_b, size), f"partition {n}"


def test_write_at_the_last_byte_and_past_the_end(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    sfdisk(disk, "size=4MiB\nsize=4MiB\n")
    (s1, n1), (s2, _) = table_parts(disk)[1], table_parts(disk)[2]
    before = read_at(img, s2, 4096)
    fd = os.open(part_path(disk, 1), os.O_RDWR)
    try:
        assert os.pwrite(fd, b"L", n1 - 1) == 1
        assert read_at(img, s1 + n1 - 1, 1) == b"L"
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"X" * 512, n1)
        assert e.value.errno in (errno.ENOSPC, errno.EIO)
        # a write that straddles the end writes only what fits
        assert os.pwrite(fd, b"AB", n1 - 1) == 1
        assert os.pread(fd, 100, n1) == b""
        assert os.pread(fd, 100, n1 - 1) == b"A"
    finally:
        os.close(fd)
    assert read_at(img, s2, 4096) == before
    assert os.stat(part_path(disk, 1)).st_size == n1


def test_open_partition_fails_with_eio_once_removed_or_moved(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    sfdisk(disk, "size=4MiB\nsize=4MiB\nsize=4MiB\n")
    table = table_parts(disk)
    p1 = os.open(part_path(disk, 1), os.O_RDWR)
    p2 = os.open(part_path(disk, 2), os.O_RDWR)
    p3 = os.open(part_path(disk, 3), os.O_RDWR)
    try:
        os.pwrite(p2, b"two", 0)
        run(["sfdisk", "--quiet", "--delete", disk, "2"])
        # partition 1 grows into the space of 2: its open file must not see the new extent
        run(["sfdisk", "--quiet", "-N", "1", disk], input=f"{table[1][0] // 512},8MiB\n")
        for fd in (p1, p2):
            with pytest.raises(OSError) as e:
                os.pread(fd, 512, 0)
            assert e.value.errno == errno.EIO
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x", 0)
            assert e.value.errno == errno.EIO
        assert os.pread(p3, 3, 0) == b"\0\0\0"  # untouched partitions keep working
        assert not part_path(disk, 2).exists()
        assert part_path(disk, 1).stat().st_size == 8 * MIB
        with open(part_path(disk, 1), "rb") as f:  # a new open sees the new extent
            f.seek(table[2][0] - table[1][0])
            assert f.read(3) == b"two"
    finally:
        for fd in (p1, p2, p3):
            os.close(fd)


def test_block_ioctls_that_fuse_delivers(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    assert ioctl_u64(disk, BLKGETSIZE64) == 32 * MIB
    assert run(["blockdev", "--getsize64", disk]).stdout.strip() == str(32 * MIB)
    assert ioctl_u64(disk, BLKBSZGET) & 0xffffffff == 4096
    assert ioctl_none(disk, BLKFLSBUF) == 0
    # these carry no size in their numbers: FUSE cannot move their data, so ENOTTY (what tools
    # get from a regular file, and fall back from)
    for name, number in (("BLKSSZGET", BLKSSZGET), ("BLKGETSIZE", 0x1260), ("BLKROGET", 0x125E),
                         ("BLKROSET", 0x125D), ("BLKDISCARD", 0x1277), ("BLKZEROOUT", 0x127F),
                         ("HDIO_GETGEO", 0x0301)):
        with pytest.raises(OSError) as e:
            ioctl_none(disk, number, os.O_RDWR)
        assert e.value.errno == errno.ENOTTY, name
    # a table written behind the daemon's back (into the image itself) appears on BLKRRPART
    run(["sfdisk", "--quiet", img], input="size=4MiB\nsize=4MiB\n")
    assert partition_files(disk) == {}
    run(["blockdev", "--rereadpt", disk])
    assert sorted(partition_files(disk)) == [1, 2]
    with pytest.raises(OSError) as e:
        ioctl_none(part_path(disk, 1), BLKRRPART)
    assert e.value.errno == errno.EINVAL
    # fallocate (which FUSE does deliver) is how tools discard and zero a device file
    part_path(disk, 1).write_bytes(b"\xff" * 4 * MIB)
    run(["fallocate", "--punch-hole", "--offset", "0", "--length", str(MIB), part_path(disk, 1)])
    run(["fallocate", "--zero-range", "--offset", str(MIB), "--length", str(MIB),
         part_path(disk, 1)])
    data = part_path(disk, 1).read_bytes()
    assert data[:2 * MIB] == b"\0" * (2 * MIB) and data[2 * MIB:] == b"\xff" * (2 * MIB)


def test_partscan_0_shows_the_disk_only(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input="size=4MiB\nsize=4MiB\n")
    disk = rtmp / "hda"
    start(mounts, MBR, "-o", "partscan=0", img, path=disk)
    sfdisk(disk, "size=4MiB\nsize=4MiB\nsize=4MiB\n")
    assert partition_files(disk) == {}


def test_read_only(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input="size=4MiB\n")
    before = img.read_bytes()
    disk = rtmp / "hda"
    start(mounts, MBR, "-o", "ro", img, path=disk, parts=[1])
    for f in (disk, part_path(disk, 1)):
        with pytest.raises(OSError) as e:
            with open(f, "r+b") as fh:
                fh.write(b"x")
        assert e.value.errno == errno.EROFS
    assert part_path(disk, 1).read_bytes() == read_at(img, MIB, 4 * MIB)
    assert img.read_bytes() == before


def test_owner_group_and_mode_of_the_device_files(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input="size=4MiB\n")
    disk = rtmp / "hda"
    start(mounts, MBR, "-o", "uid=1234,gid=5678,mode=0640", img, path=disk, parts=[1])
    for f in (disk, part_path(disk, 1)):
        st = f.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
        assert st.st_mode & 0o170000 == 0o100000  # a regular file
    os.chmod(part_path(disk, 1), 0o600)
    os.chown(part_path(disk, 1), 0, 0)
    st = part_path(disk, 1).stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600)


STRANGER = 4242  # a uid and gid no file here belongs to (no account needed for setpriv)


def as_ids(uid, gid, cmd):
    return run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *cmd],
               check=False)


def allowed(r):
    """True when the command worked, False when it was refused with EACCES; fail otherwise."""
    if r.returncode == 0:
        return True
    if "Permission denied" not in r.stderr:
        pytest.fail(f"failed for another reason: {r.stderr}")
    return False


def can_read(path, uid, gid):
    return allowed(as_ids(uid, gid, ["dd", f"if={path}", "of=/dev/null", "bs=4096", "count=1",
                                     "status=none"]))


def can_write(path, uid, gid):
    return allowed(as_ids(uid, gid, ["dd", "if=/dev/zero", f"of={path}", "bs=512", "count=1",
                                     "conv=notrunc", "status=none"]))


def test_owner_group_and_mode_decide_who_may_open_the_device_files(utmp, user, mounts):
    """uid=, gid= and mode= are enforced by the kernel (default_permissions), as for a device
    node: the owner may use the files, the group and others only as the mode says, and a
    chmod by the owner changes that. (allow_other lets other accounts reach root's mount.)"""
    img = make_image(utmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input="size=4MiB\n")
    disk = utmp / "hda"
    start(mounts, MBR, "-o", f"allow_other,uid={user.uid},gid={user.gid},mode=0640", img,
          path=disk, parts=[1])
    p1 = part_path(disk, 1)
    owner, group, other = (user.uid, user.gid), (STRANGER, user.gid), (STRANGER, STRANGER)
    assert can_read(p1, *owner) and can_write(p1, *owner)
    assert can_read(p1, *group) and not can_write(p1, *group)
    assert not can_read(p1, *other) and not can_write(p1, *other)
    run(["chmod", "0606", p1], user=user)
    assert can_read(p1, *other) and can_write(p1, *other)
    assert not can_read(p1, *group) and not can_write(p1, *group)  # the group bits rule it
    # what the stranger may write lands on the partition; the disk file kept its mode
    r = as_ids(*other, ["sh", "-c", f'printf stranger | dd of="{p1}" conv=notrunc status=none'])
    assert r.returncode == 0, r.stderr
    assert read_at(img, MIB, 8) == b"stranger"
    assert not can_write(disk, *other)


def test_mode_0666_lets_every_account_use_the_device_files(utmp, mounts):
    img = make_image(utmp / "disk.img", 32 * MIB)
    disk = utmp / "hda"
    start(mounts, MBR, "-o", "allow_other,mode=0666", img, path=disk)
    assert can_read(disk, STRANGER, STRANGER) and can_write(disk, STRANGER, STRANGER)


def test_path_ending_in_a_digit_names_partitions_with_p(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "nvme0n1"
    start(mounts, MBR, img, path=disk)
    sfdisk(disk, "size=4MiB\nsize=4MiB\n")
    assert sorted(p.name for p in rtmp.iterdir() if p.name.startswith("nvme")) == [
        "nvme0n1", "nvme0n1p1", "nvme0n1p2"]


def test_files_created_by_the_daemon_are_removed_at_exit(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input="size=4MiB\nsize=4MiB\n")
    disk = rtmp / "hda"
    (rtmp / "hda2").write_bytes(b"mine")  # a file that was there before stays
    m = start(mounts, MBR, img, path=disk, parts=[1, 2])
    m.unmount()
    assert sorted(p.name for p in rtmp.iterdir()) == ["disk.img", "hda2"]
    assert (rtmp / "hda2").read_bytes() == b"mine"


def test_sigterm_unmounts_everything_and_flushes(rtmp, mounts):
    import signal
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input="size=4MiB\nsize=4MiB\n")
    disk = rtmp / "hda"
    m = start(mounts, MBR, img, path=disk, parts=[1, 2])
    with open(part_path(disk, 2), "r+b", buffering=0) as f:
        f.write(b"durable")
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(20) == 0
    m.unmounted = True
    assert not any(mounted_at(p) for p in (disk, part_path(disk, 1), part_path(disk, 2)))
    assert sorted(p.name for p in rtmp.iterdir()) == ["disk.img"]
    assert read_at(img, 5 * MIB, 7) == b"durable"


def test_damaged_gpt_is_reported_and_the_backup_used(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input=gpt_script(3))
    with open(img, "r+b") as f:  # break the primary header's checksum
        f.seek(512 + 40)
        f.write(b"\xff")
    disk = rtmp / "hda"
    m = start(mounts, MBR, img, path=disk, parts=[1, 2, 3])
    assert "primary GPT header is damaged" in m.stderr()
    assert sorted(partition_files(disk)) == [1, 2, 3]


def test_gpt_without_any_valid_header_leaves_the_whole_disk(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input=gpt_script(3))
    with open(img, "r+b") as f:
        f.seek(512)
        f.write(b"XXXXXXXX")
        f.seek(32 * MIB - 512)
        f.write(b"XXXXXXXX")
    disk = rtmp / "hda"
    m = start(mounts, MBR, img, path=disk)
    wait_for(lambda: "damaged GPT" in m.stderr(), what="the damaged-GPT message")
    assert partition_files(disk) == {}
    assert ioctl_u64(disk, BLKGETSIZE64) == 32 * MIB
    with open(disk, "r+b", buffering=0) as f:  # the whole disk stays usable
        f.seek(MIB)
        f.write(b"still here")
    assert read_at(img, MIB, 10) == b"still here"


def test_hybrid_mbr_is_reported(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input=gpt_script(2))
    with open(img, "r+b") as f:  # a second MBR entry beside the protective one
        f.seek(446 + 16 + 4)
        f.write(bytes([0x0c, 0, 0, 0]) + (2048).to_bytes(4, "little") + (2048).to_bytes(4, "little"))
    disk = rtmp / "hda"
    m = start(mounts, MBR, img, path=disk, parts=[1, 2])
    assert "hybrid MBR" in m.stderr()
    assert sorted(partition_files(disk)) == [1, 2]


def test_fsync_reaches_the_backing_device(rtmp, mounts):
    """Nesting: umdev-mbr on a umdev-ramdisk device file. An fsync on the upper device file must
    reach the lower one (whose -d trace shows the FSYNC) before it returns."""
    ram = rtmp / "ram"
    lower = mounts.start("umdev-ramdisk", "-d", "-o", "size=16M", ram, mountpoint=ram)
    disk = rtmp / "hda"
    start(mounts, MBR, ram, path=disk)
    sfdisk(disk, "size=4MiB\n")
    before = lower.stderr().count("opcode: FSYNC")
    fd = os.open(part_path(disk, 1), os.O_RDWR)
    try:
        os.pwrite(fd, b"synced", 0)
        os.fsync(fd)
        assert lower.stderr().count("opcode: FSYNC") > before
    finally:
        os.close(fd)
    assert read_at(ram, MIB, 6) == b"synced"


def test_close_and_blkflsbuf_reach_the_backing_device(rtmp, mounts):
    """The same nesting: a close() after writes, with no fsync, and BLKFLSBUF each make the
    upper daemon sync the lower device file (its -d trace shows an FSYNC) before they return."""
    ram = rtmp / "ram"
    lower = mounts.start("umdev-ramdisk", "-d", "-o", "size=16M", ram, mountpoint=ram)
    disk = rtmp / "hda"
    start(mounts, MBR, ram, path=disk)
    sfdisk(disk, "size=4MiB\n")

    def fsyncs():
        return lower.stderr().count("opcode: FSYNC")

    before = fsyncs()
    fd = os.open(part_path(disk, 1), os.O_RDWR)
    os.pwrite(fd, b"closed", 0)
    os.close(fd)
    assert fsyncs() > before, "close() after a write did not sync the backing device"
    assert read_at(ram, MIB, 6) == b"closed"
    before = fsyncs()
    assert ioctl_none(part_path(disk, 1), BLKFLSBUF) == 0
    assert fsyncs() > before, "BLKFLSBUF did not sync the backing device"


def test_mount_t_fuse(rtmp):
    img, disk = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda"
    run(["sfdisk", "--quiet", img], input="size=4MiB\n")
    disk.touch()
    from conftest import viewos_bin
    run(["mount", "-t", "fuse", "-o", f"subtype={MBR},mode=0644",
         f"{viewos_bin(MBR)}#{img}", disk])
    try:
        assert "fuse.umdev-mbr" in mounted_at(disk)
        assert mounted_at(part_path(disk, 1))
        assert disk.stat().st_mode & 0o777 == 0o644
    finally:
        run(["umount", disk])
    # the daemon ends with its disk: partition 1 is unmounted and its file removed
    wait_for(lambda: not mounted_at(part_path(disk, 1)) and not part_path(disk, 1).exists(),
             what="the partition file to go")


def test_unprivileged_user(utmp, user, mounts):
    img, disk = make_image(utmp / "disk.img", 64 * MIB, user=user), utmp / "hda"
    m = start(mounts, MBR, img, path=disk, user=user)
    assert f"user_id={user.uid}" in mounted_at(disk)
    sfdisk(disk, EXTENDED, user=user)
    assert sorted(partition_files(disk)) == [1, 2, 3, 4, 5, 6, 7]
    run(["mkfs.ext2", "-q", part_path(disk, 5)], user=user)
    run(["e2fsck", "-fn", part_path(disk, 5)], user=user)
    # deleting logical 6 renumbers 7 to 6, as Linux does: the last file goes
    run(["sfdisk", "--quiet", "--delete", disk, "6"], user=user)
    assert sorted(partition_files(disk)) == [1, 2, 3, 4, 5, 6]
    assert not mounted_at(part_path(disk, 7))
    m.unmount()
    assert sorted(p.name for p in utmp.iterdir()) == ["disk.img"]


def cached_bytes(path):
    return int(run(["fincore", "-b", "-n", "-o", "RES", path]).stdout.strip())


@pytest.mark.parametrize("direct", [False, True], ids=["page-cache", "direct"])
def test_direct_option_bypasses_the_image_page_cache(rtmp, mounts, direct):
    """-o direct: aligned I/O on the device files reaches the image with O_DIRECT (none of it
    stays in the image's page cache); unaligned I/O still works, and every view agrees."""
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    run(["sfdisk", "--quiet", img], input="size=32MiB\n")
    opts = ["-o", "direct"] if direct else []
    start(mounts, MBR, *opts, img, path=disk, parts=[1])
    p1 = part_path(disk, 1)
    data = random.Random(11).randbytes(16 * MIB)
    run(["dd", f"of={p1}", "bs=1M", "oflag=direct", "conv=notrunc", "status=none"],
        input=data, binary=True)
    if direct:  # (without it the data would be cached, unless someone drops the caches)
        cached = cached_bytes(img)
        assert cached < 4 * MIB, cached  # the table, read through the page cache
    fd = os.open(p1, os.O_RDWR)
    try:
        assert os.pwrite(fd, b"unaligned", 12345) == 9  # the buffered path
        assert os.pread(fd, 9, 12345) == b"unaligned"
    finally:
        os.close(fd)
    expect = data[:12345] + b"unaligned" + data[12345 + 9:]
    assert read_at(p1, 0, 16 * MIB) == expect
    assert read_at(img, MIB, 16 * MIB) == expect
    run(["mkfs.ext2", "-q", p1])
    run(["e2fsck", "-fn", p1])


def test_direct_option_needs_a_file(rtmp, mounts):
    ram = rtmp / "ram"
    start(mounts, "umdev-ramdisk", "-o", "size=8M,nbd=unix:" + str(rtmp / "s"), path=ram)
    r = run([viewos_bin(MBR), "-f", "-o", "direct", f"nbd+unix:///?socket={rtmp}/s",
             rtmp / "hda"], check=False)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"umdev-mbr: nbd+unix:///?socket={rtmp}/s: cannot use direct I/O (-o direct): "
        "not an image file or a device"]


def test_device_files_bypass_the_page_cache(rtmp, mounts):
    """The device files are direct I/O: a read on a file kept open sees what was written since
    through another view of the disk (the disk file and a partition file here; an NBD client is
    the same case), both ways. The files stay open throughout: the page cache of a FUSE file is
    dropped at each open anyway, so only a file kept open can show a stale cache (and fincore,
    which opens the file, would always find it empty)."""
    img, disk = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda"
    run(["sfdisk", "--quiet", img], input="size=32MiB\n")
    start(mounts, MBR, img, path=disk, parts=[1])
    pfd = os.open(part_path(disk, 1), os.O_RDWR)
    dfd = os.open(disk, os.O_RDWR)
    try:
        for off in range(0, 4 * MIB, MIB):  # into the cache, if there were one
            assert os.pread(pfd, MIB, off) == bytes(MIB)
            assert os.pread(dfd, MIB, MIB + off) == bytes(MIB)
        one, two = b"one!" * 1024, b"two!" * 1024
        assert os.pwrite(dfd, one, MIB + 8192) == len(one)
        assert os.pread(pfd, len(one), 8192) == one
        assert os.pwrite(pfd, two, 3 * MIB) == len(two)
        assert os.pread(dfd, len(two), 4 * MIB) == two
    finally:
        os.close(pfd)
        os.close(dfd)
    assert read_at(img, MIB + 8192, len(one)) == one
    assert read_at(img, 4 * MIB, len(two)) == two
