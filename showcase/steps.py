"""The showcase's steps, in order: (number, title, function(show)). Each function narrates its
commands through show.sh()/show.mount() and checks its results with show.expect(); it raises
StepFailed on a wrong result. Steps are added as the layers land (see issue 9)."""


def block_sources(show):
    """The common block layer, through the foundation's test daemon: a sparse RAM disk and an
    NBD export served by nbdkit, each seen as a file on a FUSE mount."""
    show.sh("mkdir -p ram nbd")
    show.mount("vo-testfs mem:1G ram", show.work / "ram")
    show.sh("ls -l ram")
    show.sh("echo 'hello from a RAM disk' | dd of=ram/data conv=notrunc status=none")
    _, out = show.sh("head -c 21 ram/data; echo")
    show.expect(out.strip() == "hello from a RAM disk", "the RAM disk keeps what was written")
    show.unmount(show.work / "ram")

    show.sh("nbdkit -U nbd.sock -P nbd.pid memory size=64M >/dev/null 2>&1")
    try:
        show.mount("vo-testfs 'nbd+unix:///?socket=nbd.sock' nbd", show.work / "nbd")
        show.sh("echo 'written over FUSE' | dd of=nbd/data conv=notrunc status=none")
        show.unmount(show.work / "nbd")
        _, out = show.sh("nbdcopy 'nbd+unix:///?socket=nbd.sock' - | head -c 16; echo")
        show.expect(out.strip() == "written over FUSE"[:16],
                    "nbdcopy reads from the NBD server what was written through FUSE")
    finally:
        show.sh("kill $(cat nbd.pid)", check=False, show=False)


STEPS = [
    (0, "block sources: RAM disk and NBD seen through FUSE", block_sources),
]
