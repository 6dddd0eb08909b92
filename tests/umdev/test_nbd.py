"""The NBD export of umdev-mbr and umdev-ramdisk (nbdkit with the project's plugin, run by the
daemon over the same store), checked with the real clients: nbdinfo, nbdcopy, qemu-img, nbdsh
and libnbd; the plugin on its own under nbdkit; and the block layer reading an export."""
import errno
import json
import os
import random
import socket

import nbd
import pytest

from conftest import mounted_at, run
from umdevlib import (MIB, make_image, nbdkit, nbdsh, part_path, partition_files, read_at,  # noqa: F401
                      sfdisk, start, table_parts, uri, wait_for)

MBR = "umdev-mbr"
RAM = "umdev-ramdisk"
EXTENDED = ("size=8MiB, type=83\nsize=8MiB, type=83\nsize=8MiB, type=83\n type=5\n"
            "size=6MiB, type=83\nsize=7MiB, type=83\n type=83\n")


def exports(sock):
    out = json.loads(run(["nbdinfo", "--list", "--json", uri(sock)]).stdout)
    return {e["export-name"]: e["export-size"] for e in out["exports"]}


def connect(sock, export=""):
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(str(sock))
    return h


def test_nbdinfo_lists_the_disk_and_each_partition(rtmp, mounts):
    img = make_image(rtmp / "disk.img", 64 * MIB)
    run(["sfdisk", "--quiet", img], input=EXTENDED)
    disk, sock = rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk, parts=range(1, 8))
    want = {"": 64 * MIB}
    for n, (_, size) in table_parts(disk).items():
        want[str(n)] = want[f"hda{n}"] = size
    assert exports(sock) == want
    info = json.loads(run(["nbdinfo", "--json", uri(sock, "hda5")]).stdout)
    exp = info["exports"][0]
    for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
        assert exp[cap] is True, cap
    assert exp["is_read_only"] is False


def test_export_list_follows_the_table_and_stale_connections_fail(rtmp, mounts):
    img, disk, sock = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk)
    assert exports(sock) == {"": 64 * MIB}
    sfdisk(disk, "size=8MiB\nsize=8MiB\n")
    assert set(exports(sock)) == {"", "1", "2", "hda1", "hda2"}
    h = connect(sock, "2")
    try:
        assert h.pread(512, 0) == b"\0" * 512
        run(["sfdisk", "--quiet", "--delete", disk, "2"])
        with pytest.raises(nbd.Error) as e:
            h.pread(512, 0)
        assert e.value.errnum == errno.EIO
    finally:
        h.shutdown()
    assert set(exports(sock)) == {"", "1", "hda1"}
    r = run(["nbdinfo", uri(sock, "2")], check=False)
    assert r.returncode != 0


def test_writes_are_coherent_between_nbd_and_the_device_files(rtmp, mounts):
    img, disk, sock = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk)
    sfdisk(disk, "size=16MiB\nsize=16MiB\n")
    start2 = table_parts(disk)[2][0]
    rnd = random.Random(3)
    a, b, c = rnd.randbytes(MIB), rnd.randbytes(MIB), rnd.randbytes(4096)
    with open(part_path(disk, 2), "r+b", buffering=0) as f:
        f.seek(3 * MIB)
        f.write(a)
    h = connect(sock, "2")
    try:
        assert h.pread(MIB, 3 * MIB) == a          # FUSE -> NBD, at once
        h.pwrite(b, 5 * MIB)
        assert read_at(part_path(disk, 2), 5 * MIB, MIB) == b  # NBD -> FUSE, at once
    finally:
        h.shutdown()
    whole = connect(sock, "")
    try:
        whole.pwrite(c, start2 + 7 * MIB)
    finally:
        whole.shutdown()
    assert read_at(part_path(disk, 2), 7 * MIB, 4096) == c
    assert read_at(img, start2 + 5 * MIB, MIB) == b


def test_a_table_written_over_nbd_updates_the_device_files(rtmp, mounts):
    scratch = make_image(rtmp / "scratch.img", 64 * MIB)
    run(["sfdisk", "--quiet", scratch], input="size=8MiB\nsize=8MiB\n")
    sector0 = read_at(scratch, 0, 512)
    img, disk, sock = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk)
    nbdsh(sock, "", f"h.pwrite({sector0!r}, 0); h.flush()")
    wait_for(lambda: mounted_at(part_path(disk, 2)), what="hda1 and hda2 after an NBD write")
    assert sorted(partition_files(disk)) == [1, 2]
    assert set(exports(sock)) == {"", "1", "2", "hda1", "hda2"}


def test_nbdcopy_in_and_out(rtmp, mounts):
    img, disk, sock = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk)
    sfdisk(disk, "size=8MiB\nsize=16MiB\n")
    src = rtmp / "src.raw"
    src.write_bytes(random.Random(9).randbytes(16 * MIB))
    run(["nbdcopy", src, uri(sock, "2")])
    assert part_path(disk, 2).read_bytes() == src.read_bytes()
    run(["nbdcopy", uri(sock, "hda2"), rtmp / "out.raw"])
    assert (rtmp / "out.raw").read_bytes() == src.read_bytes()


def test_qemu_img_converts_a_partition_to_qcow2_and_back(rtmp, mounts):
    img, disk, sock = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk)
    sfdisk(disk, "size=24MiB\nsize=24MiB\n")
    p1 = part_path(disk, 1)
    run(["mkfs.ext2", "-q", p1])
    run(["debugfs", "-w", "-R", "write /etc/services services", p1])
    info = json.loads(run(["qemu-img", "info", "--output=json", uri(sock, "1")]).stdout)
    assert info["virtual-size"] == 24 * MIB
    qcow = rtmp / "p1.qcow2"
    run(["qemu-img", "convert", "-O", "qcow2", uri(sock, "1"), qcow])
    original = p1.read_bytes()
    # back: into partition 2 over NBD, and into a raw file
    run(["qemu-img", "convert", "-n", "-O", "raw", qcow, uri(sock, "2")])
    assert part_path(disk, 2).read_bytes() == original
    run(["qemu-img", "convert", "-O", "raw", qcow, rtmp / "p1.raw"])
    assert (rtmp / "p1.raw").read_bytes() == original
    run(["e2fsck", "-fn", part_path(disk, 2)])


def test_nbdsh_zero_and_trim_on_a_ram_disk_free_memory(rtmp, mounts):
    ram, sock = rtmp / "ram", rtmp / "nbd.sock"
    start(mounts, RAM, "-o", f"size=64M,nbd=unix:{sock}", path=ram)
    with open(ram, "r+b", buffering=0) as f:
        f.write(b"\x5a" * 16 * MIB)
    assert ram.stat().st_blocks * 512 == 16 * MIB
    nbdsh(sock, "", f"h.zero({4 * MIB}, 0); h.trim({4 * MIB}, {4 * MIB}); h.flush()")
    data = ram.read_bytes()
    assert data[:8 * MIB] == b"\0" * (8 * MIB)
    assert data[8 * MIB:16 * MIB] == b"\x5a" * (8 * MIB)
    assert ram.stat().st_blocks * 512 == 8 * MIB
    # extents: nbdinfo --map sees the data and the holes of the sparse store
    out = run(["nbdinfo", "--map", "--json", uri(sock)]).stdout
    data_extents = [(e["offset"], e["length"]) for e in json.loads(out) if e["type"] == 0]
    assert data_extents == [(8 * MIB, 8 * MIB)]


def test_the_block_layer_opens_a_partition_export(rtmp, mounts):
    """umdev-mbr on nbd+unix:///1?socket=...: the project's block layer as an NBD client,
    nesting a partition table inside partition 1 of another daemon's disk."""
    img, disk, sock = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk)
    sfdisk(disk, "size=32MiB\n")
    inner = rtmp / "hdb"
    start(mounts, MBR, uri(sock, "1"), path=inner)
    assert inner.stat().st_size == 32 * MIB
    sfdisk(inner, "size=16MiB\n")
    run(["mkfs.ext2", "-q", part_path(inner, 1)])
    run(["e2fsck", "-fn", part_path(inner, 1)])
    outer_start = table_parts(disk)[1][0]
    inner_start, inner_size = table_parts(inner)[1]
    assert part_path(inner, 1).read_bytes() == read_at(img, outer_start + inner_start, inner_size)


def test_the_file_system_drivers_mount_partition_exports(rtmp, mounts):
    """The project's own drivers as NBD clients of a umdev export: umfuse-ext2 on partition 1
    by number, umfuse-fat on partition 2 by the partition file's name. What they write is on
    the partitions, read back with other tools, and the checkers find both clean."""
    img, disk, sock = make_image(rtmp / "disk.img", 64 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    run(["sfdisk", "--quiet", img], input="size=24MiB, type=83\nsize=24MiB, type=c\n")
    start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk, parts=[1, 2])
    run(["mkfs.ext2", "-q", part_path(disk, 1)])
    run(["mkfs.vfat", part_path(disk, 2)])
    rnd = random.Random(3)
    files = {f"file{i}.bin": rnd.randbytes(rnd.randrange(1, 300_000)) for i in range(6)}
    for name, export in (("umfuse-ext2", "1"), ("umfuse-fat", "hda2")):
        mnt = rtmp / f"mnt-{name}"
        mnt.mkdir()
        m = mounts.start(name, uri(sock, export), mnt, mountpoint=mnt)
        (mnt / "dir").mkdir()
        for f, data in files.items():
            (mnt / "dir" / f).write_bytes(data)
        m.unmount()
    run(["e2fsck", "-fn", part_path(disk, 1)])
    run(["fsck.fat", "-n", part_path(disk, 2)])
    for f, data in files.items():
        got = run(["debugfs", "-R", f"cat /dir/{f}", part_path(disk, 1)], binary=True).stdout
        assert got == data, f
        got = run(["mtype", "-i", part_path(disk, 2), f"::/dir/{f}"], binary=True).stdout
        assert got == data, f


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_nbd_over_tcp(rtmp, mounts):
    img, disk = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda"
    run(["sfdisk", "--quiet", img], input="size=8MiB\n")
    port = free_port()
    start(mounts, MBR, "-o", f"nbd=tcp:127.0.0.1:{port}", img, path=disk, parts=[1])
    out = run(["nbdinfo", "--size", f"nbd://127.0.0.1:{port}/1"]).stdout
    assert int(out) == 8 * MIB


def test_nbd_over_tcp_on_ipv6(rtmp, mounts):
    """tcp:[HOST]:PORT takes an IPv6 address in brackets."""
    s = socket.socket(socket.AF_INET6)
    try:
        s.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"network: no IPv6 loopback on this machine ({e})")
    port = s.getsockname()[1]
    s.close()
    ram = rtmp / "ram"
    start(mounts, RAM, "-o", f"size=8M,nbd=tcp:[::1]:{port}", path=ram)
    assert int(run(["nbdinfo", "--size", f"nbd://[::1]:{port}"]).stdout) == 8 * MIB
    nbdsh_uri = f"nbd://[::1]:{port}"
    env = dict(os.environ, PATH="/usr/bin:/bin:" + os.environ.get("PATH", ""))
    run(["nbdsh", "-u", nbdsh_uri, "-c", "h.pwrite(b'over v6', 4096)"], env=env)
    assert read_at(ram, 4096, 7) == b"over v6"


def test_read_only_export(rtmp, mounts):
    img, disk, sock = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    start(mounts, MBR, "-o", f"ro,nbd=unix:{sock}", img, path=disk)
    info = json.loads(run(["nbdinfo", "--json", uri(sock)]).stdout)
    assert info["exports"][0]["is_read_only"] is True
    r = nbdsh(sock, "", "h.pwrite(b'x' * 512, 0)", check=False)
    assert r.returncode != 0
    assert read_at(img, 0, 512) == b"\0" * 512


def test_read_only_export_of_an_image_the_user_cannot_write(utmp, user, mounts):
    """-o ro is what a user asks for on an image they may only read: nbdkit and the plugin
    must both open it read-only (reopening /proc/self/fd/N read-write needs write
    permission, which the user lacks here)."""
    img, disk, sock = make_image(utmp / "disk.img", 32 * MIB, user=user), utmp / "hda", utmp / "s"
    run(["sfdisk", "--quiet", img], input="size=8MiB\n", user=user)
    pattern = bytes(range(256)) * 16
    with open(img, "r+b") as f:
        f.seek(MIB + 4096)
        f.write(pattern)
    os.chmod(img, 0o444)
    start(mounts, MBR, "-o", f"ro,nbd=unix:{sock}", img, path=disk, parts=[1], user=user)
    info = json.loads(run(["nbdinfo", "--json", uri(sock, "1")], user=user).stdout)
    assert info["exports"][0]["is_read_only"] is True
    got = nbdsh(sock, "1", "import sys; sys.stdout.write(h.pread(4096, 4096).hex())").stdout
    assert bytes.fromhex(got) == pattern
    dd = run(["dd", f"if={part_path(disk, 1)}", "bs=4096", "skip=1", "count=1", "status=none"],
             user=user, binary=True)
    assert dd.stdout == pattern
    r = nbdsh(sock, "1", "h.pwrite(b'x' * 512, 0)", check=False)
    assert r.returncode != 0
    assert read_at(img, MIB, 512) == b"\0" * 512


def test_the_plugin_on_its_own(rtmp, nbdkit):
    img = make_image(rtmp / "disk.img", 32 * MIB)
    run(["sfdisk", "--quiet", img], input="size=8MiB\nsize=4MiB\n")
    sock = nbdkit.start("mbr", img, "name=sda")
    assert exports(sock) == {"": 32 * MIB, "1": 8 * MIB, "sda1": 8 * MIB, "2": 4 * MIB,
                             "sda2": 4 * MIB}
    nbdsh(sock, "sda2", "h.pwrite(b'plugin', 100); h.flush()")
    assert read_at(img, 9 * MIB + 100, 6) == b"plugin"
    # a new table written over NBD: new connections see the new list
    scratch = make_image(rtmp / "scratch.img", 32 * MIB)
    run(["sfdisk", "--quiet", scratch], input="size=2MiB\nsize=2MiB\nsize=2MiB\n")
    nbdsh(sock, "", f"h.pwrite({read_at(scratch, 0, 512)!r}, 0); h.flush()")
    assert set(exports(sock)) == {"", "1", "2", "3", "sda1", "sda2", "sda3"}

    ram = nbdkit.start("ramdisk", "size=1G")
    assert exports(ram) == {"": 1 << 30}
    nbdsh(ram, "", "h.pwrite(b'ram' * 100, 1 << 29); assert h.pread(300, 1 << 29) == b'ram' * 100")
    null = nbdkit.start("null", "size=2048")  # sectors, as the daemons count them
    assert exports(null) == {"": MIB}
    nbdsh(null, "", "h.pwrite(b'x' * 4096, 0); assert h.pread(4096, 0) == bytes(4096)")


def test_the_plugin_refuses_an_image_a_daemon_holds(rtmp, mounts, nbdkit):
    img, disk = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda"
    start(mounts, MBR, img, path=disk)
    with pytest.raises(pytest.fail.Exception) as e:
        nbdkit.start("mbr", img)
    assert "in use by another program" in str(e.value)


def test_nbd_as_an_unprivileged_user(utmp, user, mounts):
    img, disk, sock = make_image(utmp / "disk.img", 32 * MIB, user=user), utmp / "hda", utmp / "s"
    m = start(mounts, MBR, "-o", f"nbd=unix:{sock}", img, path=disk, user=user)
    sfdisk(disk, "size=8MiB\n", user=user)
    assert set(exports(sock)) == {"", "1", "hda1"}
    m.unmount()
    assert sorted(p.name for p in utmp.iterdir()) == ["disk.img"]


def test_detached_daemon_with_nbd_lets_the_caller_go(rtmp):
    """Started as a command (detaching), with its output captured: the command returns at once
    and its output ends, although nbdkit (its child) keeps running."""
    from conftest import viewos_bin
    img, disk, sock = make_image(rtmp / "disk.img", 32 * MIB), rtmp / "hda", rtmp / "nbd.sock"
    r = run([viewos_bin(MBR), "-o", f"nbd=unix:{sock}", img, disk], timeout=30)
    try:
        assert r.stdout == "" and r.stderr == ""
        assert exports(sock) == {"": 32 * MIB}
    finally:
        run(["fusermount3", "-u", disk], check=False)
        wait_for(lambda: not disk.exists() and not sock.exists(), what="the daemon to end")
