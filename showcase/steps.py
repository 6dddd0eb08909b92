"""The showcase's steps, in order: (number, title, function(show)). Each function narrates its
commands through show.sh()/show.mount() and checks its results with show.expect(); it raises
StepFailed on a wrong result. Files a later step needs (the disk image of step 2, the layer of
step 5) stay in the work directory; mounts are undone at the end of every step."""
import json
import time
from textwrap import dedent

# A small tree with what FAT, ext2 and ISO must all get right: long names, UTF-8, nesting,
# case differences, empty files.
MAKE_TREE = dedent("""\
    mkdir -p 'tree/A directory with a long name/Ünïcödé — 日本語' tree/docs tree/empty
    printf 'first line\\n' > 'tree/A file with a name far longer than eight-dot-three.txt'
    printf 'grüße\\n' > 'tree/A directory with a long name/Ünïcödé — 日本語/naïve café.txt'
    printf 'Upper\\n' > tree/README.TXT
    : > tree/empty-file
    head -c 300000 /dev/urandom > tree/random.bin
    cp /usr/share/common-licenses/GPL-2 /usr/share/common-licenses/Apache-2.0 tree/docs/
""")


def ramdisk_fat(show):
    show.sh(MAKE_TREE.replace("\n", " && ").rstrip(" &"), show=False)
    show.mount("umdev-ramdisk -o size=100M ramdisk", show.work / "ramdisk")
    show.sh("ls -l ramdisk")
    show.sh("mkfs.vfat -n VIEWOS ramdisk")
    show.sh("mkdir fat")
    show.mount("umfuse-fat ramdisk fat", show.work / "fat", source="ramdisk")
    show.sh("cp -r tree fat/ && ls fat/tree")
    show.unmount(show.work / "fat")
    status, out = show.sh("fsck.fat -n ramdisk", check=False)
    show.expect(status == 0 and "dirty" not in out.lower(), "fsck.fat finds the FAT clean")
    show.mount("umfuse-fat ramdisk fat", show.work / "fat", source="ramdisk")
    status, out = show.sh("diff -r tree fat/tree && echo identical", check=False)
    show.expect(status == 0 and out.strip().endswith("identical"),
                "after a remount the FAT holds exactly the tree (long and UTF-8 names too)")


def disk_partitions_ext2(show):
    show.sh("truncate -s 1G disk.img")
    show.mount("umdev-mbr disk.img hda", show.work / "hda", source="disk.img")
    show.sh("printf 'size=600MiB, type=83\\n type=83\\n' | sfdisk --quiet hda")
    show.sh("sfdisk --list hda | tail -n 3")
    _, out = show.sh("ls hda*")
    show.expect(set(out.split()) >= {"hda", "hda1", "hda2"},
                "the new partitions appear as hda1 and hda2 at once")
    show.sh("mkfs.ext2 -q -L viewos -E root_owner hda1")
    show.sh("mkdir -p mnt")
    show.mount("umfuse-ext2 hda1 mnt", show.work / "mnt", source="hda1")
    show.sh("cp -a tree/. mnt/ && echo 'nested hello' > mnt/hello && df -h mnt | tail -n 1")
    show.unmount(show.work / "mnt")
    status, out = show.sh("e2fsck -fn hda1", check=False)
    show.expect(status == 0, "e2fsck -fn finds the ext2 file system on hda1 clean")


def iso(show):
    show.sh("xorriso -as mkisofs -quiet -R -J -V VIEWOS -o cd.iso tree")
    show.sh("mkdir -p cdrom")
    show.mount("umfuse-iso9660 cd.iso cdrom", show.work / "cdrom")
    show.sh("ls -l cdrom")
    status, out = show.sh("diff -r tree cdrom && echo identical", check=False)
    show.expect(status == 0 and out.strip().endswith("identical"),
                "the ISO shows exactly the tree it was made from")


def busybox_cage(show):
    show.sh("mkdir -p cage/bin cage/etc && cp /bin/busybox cage/bin/ && "
            "echo 'caged' > cage/etc/motd")
    status, out = show.sh("viewfs -o move cage / -- /bin/busybox sh -c "
                          "'ls -lR /; /bin/busybox cat /etc/motd'", check=False)
    show.expect(status == 0, "the command ran with the cage as its root")
    dirs = [ln[:-1] for ln in out.splitlines() if ln.startswith("/") and ln.endswith(":")]
    block = out.split("/:\n", 1)[-1].split("\n\n")[0]  # the listing of / itself
    top = [ln for ln in block.splitlines() if not ln.startswith("total ")]
    show.expect(dirs == ["/", "/bin", "/etc"] and [ln.split()[-1] for ln in top] == ["bin", "etc"]
                and out.rstrip().endswith("caged"), "ls -lR / shows the cage and nothing else")


def virtual_install(show):
    # A package with files under /usr, a setuid-root binary and a postinst that uses chown.
    show.sh(dedent("""\
        mkdir -p pkg/DEBIAN pkg/usr/bin pkg/usr/share/doc/viewos-hello && \
        printf '#!/bin/sh\\necho hello from a virtually installed package\\n' > pkg/usr/bin/viewos-hello && \
        cp /bin/true pkg/usr/bin/viewos-suid && chmod 4755 pkg/usr/bin/viewos-suid && \
        chmod 755 pkg/usr/bin/viewos-hello && echo doc > pkg/usr/share/doc/viewos-hello/README && \
        printf 'Package: viewos-hello\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: demo <demo@localhost>\\nDescription: showcase package\\n' > pkg/DEBIAN/control && \
        printf '#!/bin/sh\\nchown root:root /usr/bin/viewos-suid && chmod 4755 /usr/bin/viewos-suid\\n' > pkg/DEBIAN/postinst && \
        chmod 755 pkg/DEBIAN/postinst && dpkg-deb --root-owner-group -b pkg hello.deb >/dev/null"""),
        show=False)
    show.sh("mkdir -p layer")
    view = "viewfs -o mincow,except=/tmp,vstat layer / --"
    show.sh(f"{view} dpkg -i {show.work}/hello.deb")
    _, out = show.sh(f"{view} sh -c 'dpkg -s viewos-hello | head -n 2; "
                     "ls -l /usr/bin/viewos-suid; viewos-hello'")
    show.expect("Status: install ok installed" in out, "in the view dpkg says it is installed")
    show.expect("-rwsr-xr-x 1 root root" in out, "in the view the setuid binary is root's")
    show.expect("hello from a virtually installed package" in out, "the program runs")
    status, _ = show.sh("dpkg -s viewos-hello >/dev/null 2>&1", check=False, show=False)
    show.sh("ls /usr/bin/viewos-hello", check=False)
    import os
    show.expect(status != 0 and not os.path.exists("/usr/bin/viewos-hello"),
                "on the real system nothing is installed")
    _, out = show.sh("find layer/usr -type f | sort")
    show.expect("layer/usr/bin/viewos-hello" in out, "the layer holds the new files")


def nested(show):
    view = "viewfs -o mincow,except=/tmp,vstat layer / --"
    # The view mounts step 2's partition and holds it until the host has looked (the work
    # directory is under /tmp, which except= keeps real: the flag files cross the boundary).
    # The daemons finish a moment after their unmount: the view (whose files they run from)
    # must not end before they have let go of their images.
    released = lambda image: f"while fuser -s {show.work}/{image} 2>/dev/null; do sleep 0.05; done"
    w = show.work
    inner = (f"umdev-mbr {w}/disk.img {w}/hdb && mkdir -p {w}/nested && "
             f"umfuse-ext2 {w}/hdb1 {w}/nested && cat {w}/nested/hello && viewos-hello && "
             f"grep -c {w}/nested /proc/mounts && touch {w}/view-ready && "
             f"while [ ! -e {w}/host-looked ]; do sleep 0.05; done && "
             f"fusermount3 -u {w}/nested && {released('hdb1')} && "
             f"fusermount3 -u {w}/hdb && {released('disk.img')}")
    view_proc = show.spawn(f"{view} sh -c '{inner}'")
    try:
        for _ in range(1200):
            if (w / "view-ready").exists() or view_proc.poll() is not None:
                break
            time.sleep(0.05)
        show.expect((w / "view-ready").exists(), "the view has mounted the partition")
        _, out = show.sh(f"ls nested | wc -l; grep -c -e {w}/nested -e {w}/hdb /proc/mounts "
                         "|| true")
        show.expect(out.split() == ["0", "0"],
                    "meanwhile, on the host: nested/ is an empty directory and neither the "
                    "partition nor its file system is in the host's mount table")
    finally:
        (w / "host-looked").touch()
        status, out = show.finish(view_proc)
    show.expect(status == 0 and "nested hello" in out and "virtually installed" in out,
                "inside the view: the partition of step 2 mounted with umfuse-ext2, beside the "
                "virtually installed package")


def nbd(show):
    show.mount("umdev-mbr -o nbd=unix:nbd.sock disk.img hda", show.work / "hda",
               source="disk.img")
    show.sh("nbdinfo --list 'nbd+unix:///?socket=nbd.sock' | grep -E 'export=|export-size'")
    show.sh("nbdcopy 'nbd+unix:///1?socket=nbd.sock' part1.raw")
    status, _ = show.sh("dd if=hda1 bs=1M status=none | cmp - part1.raw && echo identical")
    show.expect(status == 0, "partition 1 read over NBD equals the partition file")
    _, out = show.sh("sfdisk --json disk.img", show=False)
    part = json.loads(out)["partitiontable"]["partitions"][0]
    status, _ = show.sh(f"dd if=disk.img bs=1M iflag=skip_bytes,count_bytes "
                        f"skip={part['start'] * 512} count={part['size'] * 512} status=none "
                        "| cmp - part1.raw && echo identical")
    show.expect(status == 0, "and the bytes of the image at partition 1's offset")
    show.sh("e2fsck -fn part1.raw >/dev/null && echo 'part1.raw: clean ext2'")


STEPS = [
    (1, "RAM disk -> FAT: umdev-ramdisk, mkfs.vfat, umfuse-fat", ramdisk_fat),
    (2, "disk image -> partitions -> ext2: umdev-mbr, sfdisk, mkfs.ext2, umfuse-ext2",
     disk_partitions_ext2),
    (3, "ISO: xorriso, umfuse-iso9660", iso),
    (4, "user-mode chroot: a busybox cage as /", busybox_cage),
    (5, "virtual installation of software: dpkg -i in a view", virtual_install),
    (6, "nested: step 2's ext2 mounted inside step 5's view", nested),
    (7, "NBD: the disk of step 2 exported, partition 1 read by nbdcopy", nbd),
]
