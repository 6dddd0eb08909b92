"""umdev-ramdisk and umdev-null: sizes as View-OS counted them, sparseness (memory is spent only
on written blocks and given back by discard), zeros where nothing was written, partitions on
a RAM disk, and a null device that swallows everything."""
import errno
import os
import re

import pytest

from conftest import mounted_at, run
from umdevlib import (BLKGETSIZE64, MIB, ioctl_u64, part_path, partition_files, sfdisk, start,
                      wait_for)

RAM = "umdev-ramdisk"
NULL = "umdev-null"


def daemon_rss_kib(m):
    status = open(f"/proc/{m.proc.pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def test_default_size_is_32_mib(rtmp, mounts):
    ram = rtmp / "ram"
    start(mounts, RAM, path=ram)
    assert ram.stat().st_size == 32 * MIB
    assert ioctl_u64(ram, BLKGETSIZE64) == 32 * MIB


def test_sizes_with_suffixes_and_bare_sectors(rtmp, mounts):
    for opt, size in (("size=10M", 10 * MIB), ("size=20480", 10 * MIB), ("size=3k", 3072),
                      ("size=1G", 1 << 30), ("size=1536K", 1536 * 1024), ("size=2T", 2 << 40)):
        ram = rtmp / f"ram-{size}"
        m = start(mounts, RAM, "-o", opt, path=ram)
        assert ram.stat().st_size == size, opt
        assert ioctl_u64(ram, BLKGETSIZE64) == size, opt
        m.unmount()


def test_read_only_ram_disk_reads_zeros_and_refuses_writes(rtmp, mounts):
    ram = rtmp / "ram"
    start(mounts, RAM, "-o", "ro,size=1M", path=ram)
    assert ram.read_bytes() == bytes(MIB)
    with pytest.raises(OSError) as e:
        with open(ram, "r+b") as f:
            f.write(b"x")
    assert e.value.errno == errno.EROFS
    assert "ro" in mounted_at(ram).split()[5].split(",")


def test_unwritten_blocks_read_as_zeros_and_cost_no_memory(rtmp, mounts):
    ram = rtmp / "ram"
    m = start(mounts, RAM, "-o", "size=100G", path=ram)
    assert ram.stat().st_size == 100 << 30
    rss_before = daemon_rss_kib(m)
    chunk = os.urandom(MIB)
    offsets = [0, 7 << 30, 50 << 30, (100 << 30) - MIB]
    fd = os.open(ram, os.O_RDWR)
    try:
        for off in offsets:
            assert os.pwrite(fd, chunk, off) == MIB
        for off in offsets:
            assert os.pread(fd, MIB, off) == chunk
        for off in (MIB, 20 << 30, (100 << 30) - 2 * MIB):
            assert os.pread(fd, MIB, off) == b"\0" * MIB
    finally:
        os.close(fd)
    # the device file's st_blocks is the memory the RAM disk holds: 4 MiB, not 100 GiB (at
    # most twice that where shmem uses 2 MiB huge pages)
    held = ram.stat().st_blocks * 512
    assert len(offsets) * MIB <= held <= 2 * len(offsets) * MIB, held
    # and the daemon did not grow by the RAM disk's size (or even by a lot of what it wrote)
    assert daemon_rss_kib(m) - rss_before < 64 * 1024


def test_discard_and_zeroing_free_memory(rtmp, mounts):
    ram = rtmp / "ram"
    start(mounts, RAM, "-o", "size=64M", path=ram)
    with open(ram, "r+b", buffering=0) as f:
        f.write(b"\xaa" * 16 * MIB)
    assert ram.stat().st_blocks * 512 == 16 * MIB
    run(["fallocate", "--punch-hole", "--offset", "0", "--length", str(8 * MIB), ram])
    assert ram.stat().st_blocks * 512 == 8 * MIB
    run(["fallocate", "--zero-range", "--offset", str(8 * MIB), "--length", str(4 * MIB), ram])
    assert ram.stat().st_blocks * 512 == 4 * MIB
    data = ram.read_bytes()
    assert data[:12 * MIB] == b"\0" * (12 * MIB)
    assert data[12 * MIB:16 * MIB] == b"\xaa" * (4 * MIB)
    assert data[16 * MIB:] == b"\0" * (48 * MIB)


def test_partitions_on_a_ram_disk(rtmp, mounts):
    ram = rtmp / "ram0"
    start(mounts, RAM, "-o", "size=64M", path=ram)
    sfdisk(ram, "size=20MiB, type=c\n type=83\n")
    assert sorted(partition_files(ram)) == [1, 2]
    assert part_path(ram, 1).name == "ram0p1"
    run(["mkfs.vfat", part_path(ram, 1)])
    run(["fsck.fat", "-n", part_path(ram, 1)])
    run(["mkfs.ext2", "-q", part_path(ram, 2)])
    run(["e2fsck", "-fn", part_path(ram, 2)])


def test_partscan_0_on_a_ram_disk(rtmp, mounts):
    ram = rtmp / "ram"
    start(mounts, RAM, "-o", "size=16M,partscan=0", path=ram)
    sfdisk(ram, "size=4MiB\n")
    assert partition_files(ram) == {}


def test_mkfs_on_the_ram_disk_itself(rtmp, mounts):
    ram = rtmp / "ram"
    start(mounts, RAM, "-o", "size=100M", path=ram)
    run(["mkfs.vfat", "-n", "VIEWOS", ram])
    run(["mcopy", "-i", ram, "/etc/os-release", "::os-release"])
    run(["fsck.fat", "-n", ram])
    assert run(["mtype", "-i", ram, "::os-release"]).stdout == open("/etc/os-release").read()


def test_mount_t_fuse_ramdisk_ignores_the_source(rtmp):
    from conftest import viewos_bin
    ram = rtmp / "ram"
    run(["mount", "-t", "fuse", "-o", f"subtype={RAM},size=8M",
         f"{viewos_bin(RAM)}#none", ram])
    try:
        assert ram.stat().st_size == 8 * MIB
    finally:
        run(["umount", ram])
    wait_for(lambda: not ram.exists(), what="the RAM disk file to go")


def test_null_device_reads_eof_and_swallows_writes(rtmp, mounts):
    null = rtmp / "null"
    start(mounts, NULL, path=null)
    assert null.stat().st_size == 0
    assert null.read_bytes() == b""
    run(["dd", "if=/dev/urandom", f"of={null}", "bs=1M", "count=4", "conv=notrunc",
         "status=none"])
    fd = os.open(null, os.O_RDWR)
    try:
        assert os.pwrite(fd, b"x" * 4096, 1 << 40) == 4096
        assert os.pread(fd, 10, 0) == b""
    finally:
        os.close(fd)


def test_null_device_with_a_size_reads_zeros(rtmp, mounts):
    null = rtmp / "null"
    start(mounts, NULL, "-o", "size=2048", path=null)  # 2048 sectors
    assert null.stat().st_size == MIB
    with open(null, "r+b", buffering=0) as f:
        f.write(b"\xff" * 8192)
        f.seek(0)
        assert f.read() == b"\0" * MIB
        f.seek(5 * MIB)
        assert f.write(b"beyond") == 6


def test_ram_disk_as_unprivileged_user(utmp, user, mounts):
    ram = utmp / "ram"
    m = start(mounts, RAM, "-o", "size=32M", path=ram, user=user)
    assert f"user_id={user.uid}" in mounted_at(ram)
    sfdisk(ram, "size=8MiB\n", user=user)
    run(["mkfs.ext2", "-q", part_path(ram, 1)], user=user)
    run(["e2fsck", "-fn", part_path(ram, 1)], user=user)
    m.unmount()
    assert list(utmp.iterdir()) == []


def test_a_device_file_named_ramdisk_is_not_taken_for_mounted(rtmp, mounts):
    """mkfs.vfat refuses a device whose name is a mounted source in /proc/mounts; the RAM
    disk's source column must never be a plain word a user may name a device file."""
    ram = rtmp / "ramdisk"
    start(mounts, RAM, "-o", "size=16M", path=ram)
    fields = mounted_at(ram).split()
    assert fields[fields.index("-") + 2] == f"mem:{16 * MIB}"  # the source column
    run(["mkfs.vfat", "-n", "RAM", ram], cwd=rtmp)
    run(["mkfs.vfat", "-n", "RAM", "ramdisk"], cwd=rtmp)
    run(["fsck.fat", "-n", ram])
