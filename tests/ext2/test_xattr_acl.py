"""Extended attributes (user., trusted., security.) and POSIX ACLs through umfuse-ext2, driven
with setfattr/getfattr and setfacl/getfacl: values round-trip and survive a remount, the
kernel's ext4 reads the same; ACLs are enforced for another user; default ACLs are inherited
and chmod updates the mask exactly as the kernel's ext4 does on the same operations."""
import errno
import os
import subprocess

import pytest

from conftest import run
from e2lib import Ext2, assert_clean, ext2  # noqa: F401


def getfattr(path):
    r = run(["getfattr", "--absolute-names", "-d", "-m", "-", "-e", "hex", path])
    return [line for line in r.stdout.splitlines() if line and not line.startswith("#")]


def test_xattrs_round_trip_and_kernel_agrees(ext2, rtmp):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    f = m.path / "f"
    f.write_text("x")
    run(["setfattr", "-n", "user.small", "-v", "hello", f])
    run(["setfattr", "-n", "user.big", "-v", "0x" + "ab" * 3000, f])  # needs the xattr block
    run(["setfattr", "-n", "trusted.t", "-v", "root-only", f])
    run(["setfattr", "-n", "security.s", "-v", "sec", f])
    os.setxattr(f, "user.flags", b"1", os.XATTR_CREATE)
    with pytest.raises(OSError) as ei:
        os.setxattr(f, "user.flags", b"2", os.XATTR_CREATE)
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(OSError) as ei:
        os.setxattr(f, "user.none", b"2", os.XATTR_REPLACE)
    assert ei.value.errno == errno.ENODATA
    os.setxattr(f, "user.flags", b"22", os.XATTR_REPLACE)
    with pytest.raises(OSError) as ei:
        os.getxattr(f, "user.missing")
    assert ei.value.errno == errno.ENODATA
    with pytest.raises(OSError) as ei:
        os.setxattr(f, "nonsense.name", b"v")
    assert ei.value.errno == errno.EOPNOTSUPP
    d = m.path / "d"
    d.mkdir()
    os.setxattr(d, "user.on-a-dir", b"yes")
    os.removexattr(f, "user.small")
    with pytest.raises(OSError):
        os.getxattr(f, "user.small")
    ours = getfattr(f), getfattr(d)
    assert sorted(os.listxattr(f)) == ["security.s", "trusted.t", "user.big", "user.flags"]
    assert os.getxattr(f, "user.big") == bytes.fromhex("ab" * 3000)
    m.unmount()
    assert_clean(img)
    m = ext2.mount(img, "ro")
    assert (getfattr(m.path / "f"), getfattr(m.path / "d")) == ours
    m.unmount()
    kmnt = rtmp / "k"
    kmnt.mkdir()
    run(["mount", "-o", "loop,ro", img, kmnt])
    try:
        assert (getfattr(kmnt / "f"), getfattr(kmnt / "d")) == ours
    finally:
        run(["umount", kmnt])


def acl_script(root):
    """The same ACL operations on any mount; returns what getfacl and stat show."""
    root = str(root)
    sh = f"""
set -e
cd {root}
umask 022
mkdir shared
setfacl -m u:1234:rwx,g:4321:r-x shared
setfacl -d -m u::rwx,u:1234:rwx,g::r-x,o::---,m::rwx shared
touch shared/file
mkdir shared/subdir
mkfifo shared/fifo
touch plain
chmod 640 shared/file
setfacl -m u:1234:rw plain
chmod 604 plain
for p in shared shared/file shared/subdir shared/fifo plain; do
  stat -c '%n %A' $p
  getfacl -cpn $p
done
"""
    return run(["sh", "-c", sh]).stdout


def test_acls_behave_as_on_kernel_ext4(ext2, rtmp):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    ours = acl_script(m.path)
    m.unmount()
    assert_clean(img)
    img2 = ext2.image("ext4-4k")
    kmnt = rtmp / "k"
    kmnt.mkdir()
    run(["mount", "-o", "loop", img2, kmnt])
    try:
        theirs = acl_script(kmnt)
    finally:
        run(["umount", kmnt])
    assert ours.splitlines() == theirs.splitlines()
    assert "user:1234:rwx" in ours and "default:user:1234:rwx" in ours

    # what umfuse-ext2 stored is what the kernel reads (listing order aside)
    def all_acls(root):
        out = run(["getfacl", "-Rpn", "."], cwd=root).stdout
        return sorted(block for block in out.split("\n\n") if block.strip())

    run(["mount", "-o", "loop,ro", img, kmnt])
    try:
        stored = all_acls(kmnt)
    finally:
        run(["umount", kmnt])
    m = ext2.mount(img, "ro")
    assert all_acls(m.path) == stored


def test_acl_grants_and_denies_another_user(mounts, utmp, user):
    ext2 = Ext2(mounts, utmp)  # a place the user can reach, mounted by root
    img = ext2.image("ext4-4k")
    m = ext2.mount(img, "allow_other")
    os.chmod(m.path, 0o755)
    secret = m.path / "secret"
    secret.write_text("for the user only")
    os.chmod(secret, 0o600)
    r = run(["cat", secret], user=user, check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    run(["setfacl", "-m", f"u:{user.uid}:r", secret])
    assert run(["cat", secret], user=user).stdout == "for the user only"
    r = run(["sh", "-c", f"echo more >> {secret}"], user=user, check=False)
    assert r.returncode != 0
    run(["setfacl", "-x", f"u:{user.uid}", secret])
    r = run(["cat", secret], user=user, check=False)
    assert r.returncode != 0
    m.unmount()
    assert_clean(img)


def test_umask_applies_without_a_default_acl(ext2):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img)
    run(["sh", "-c", f"umask 027 && touch {m.path}/f && mkdir {m.path}/d && "
                     f"mknod {m.path}/p p"])
    assert oct(os.stat(m.path / "f").st_mode & 0o777) == oct(0o640)
    assert oct(os.stat(m.path / "d").st_mode & 0o777) == oct(0o750)
    assert oct(os.stat(m.path / "p").st_mode & 0o777) == oct(0o640)
    m.unmount()
    assert_clean(img)


def test_noacl_option_turns_acls_off(ext2):
    img = ext2.image("ext4-4k")
    m = ext2.mount(img, "noacl")
    (m.path / "f").write_text("x")
    r = subprocess.run(["setfacl", "-m", "u:1234:r", str(m.path / "f")], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "Operation not supported" in r.stderr
    run(["sh", "-c", f"umask 077 && touch {m.path}/g"])
    assert os.stat(m.path / "g").st_mode & 0o777 == 0o600
    m.unmount()
    assert_clean(img)


def test_xattr_blocks_shared_by_the_kernel_are_copied_on_write(ext2, rtmp):
    """The kernel shares one attribute block among inodes with identical attributes; changing
    one inode's attributes must not change the others'."""
    img = ext2.image("ext4-4k")
    kmnt = rtmp / "k"
    kmnt.mkdir()
    big = b"a" * 800  # too big for the inode: goes to a (shared) block
    run(["mount", "-o", "loop", img, kmnt])
    try:
        for i in range(3):
            (kmnt / f"f{i}").write_text(str(i))
            os.setxattr(kmnt / f"f{i}", "user.big", big)
    finally:
        run(["umount", kmnt])
    blocks = {subprocess.run(["debugfs", "-R", f"stat /f{i}", str(img)], capture_output=True,
                             text=True).stdout.split("File ACL:")[1].split()[0] for i in range(3)}
    assert len(blocks) == 1 and blocks != {"0"}, "the kernel did not share the block"
    m = ext2.mount(img)
    os.setxattr(m.path / "f1", "user.big", b"changed")
    os.setxattr(m.path / "f2", "user.other", b"x")
    os.unlink(m.path / "f0")
    assert os.getxattr(m.path / "f1", "user.big") == b"changed"
    assert os.getxattr(m.path / "f2", "user.big") == big
    m.unmount()
    assert_clean(img)
    m = ext2.mount(img, "ro")
    assert os.getxattr(m.path / "f2", "user.big") == big
    assert os.getxattr(m.path / "f2", "user.other") == b"x"
