"""Virtual installation of software: `viewfs -o mincow,except=/tmp,vstat LAYER / -- ...` run by
the unprivileged test user. dpkg -i of a package built here (files in /usr/bin, /usr/share,
/etc, a setuid-root binary, a conffile, maintainer scripts doing chown, chmod 4755, mknod and
useradd), apt-get install from Debian's archive, and ./configure && make && make install.
The host must not change; the layer keeps the installation for the next view."""
import hashlib
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import run
from views_lib import sh

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PKG = "viewos-vinst"


def env(user):
    e = user.env()
    e["PATH"] = PATH
    e.pop("LD_PRELOAD", None)
    return e


# What an installation in a view would touch on the host if it leaked. Every entry below these
# is compared by its lstat (type, mode, owner, size, links, inode, mtime and ctime: the kernel
# changes ctime on every write, chmod, chown, link or xattr change, and no user can set it back,
# so a changed file cannot hide); under CONTENT the bytes are compared too. LISTED: only the
# names and types of the entries (services of the host write inside them). Not
# /usr/local/sbin: tests/ext2/test_mount.py puts a symlink there for its own run.
CONTENT = ("/etc", "/var/lib/dpkg")
METADATA = ("/usr/bin", "/usr/sbin", "/usr/games", "/usr/share/doc", "/usr/share/man",
            "/usr/local/bin", "/usr/local/share", "/var/lib/apt",
            "/var/cache/apt", "/var/log/apt", "/var/log/dpkg.log", "/var/log/alternatives.log")
LISTED = ("/usr", "/usr/share", "/usr/local", "/var/lib", "/var/log")


def _entry(path, content):
    st = os.lstat(path)
    rec = (f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} size={st.st_size} "
           f"nlink={st.st_nlink} ino={st.st_ino} mtime={st.st_mtime_ns} ctime={st.st_ctime_ns}")
    if stat.S_ISLNK(st.st_mode):
        rec += " -> " + os.readlink(path)
    elif content and stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            rec += " sha256=" + hashlib.file_digest(f, "sha256").hexdigest()
    return rec


def host_state():
    """path -> record of everything above (about a second)."""
    state = {}
    for top in CONTENT + METADATA:
        if not os.path.lexists(top):
            state[top] = "absent"
            continue
        state[top] = _entry(top, top in CONTENT)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                p = os.path.join(root, name)
                state[p] = _entry(p, top in CONTENT)
    for d in LISTED:
        for e in os.scandir(d):
            mode = e.stat(follow_symlinks=False).st_mode
            state.setdefault(e.path, "listed " + stat.filemode(mode))
    return state


def assert_host_unchanged(before):
    after = host_state()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, "the host changed:\n" + "\n".join(
        f"{p}: {before.get(p)} -> {after.get(p)}" for p in changed[:20])


SUID_C = r'''#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d uid=%d\n", (int)geteuid(), (int)getuid()); return 0; }
'''

POSTINST = f'''#!/bin/sh
set -e
if [ "$1" = configure ]; then
    chown root:root /usr/bin/{PKG}-suid
    chmod 4755 /usr/bin/{PKG}-suid
    mkdir -p /var/lib/{PKG}
    [ -e /var/lib/{PKG}/null ] || mknod /var/lib/{PKG}/null c 1 3
    getent passwd {PKG} >/dev/null || useradd --system --no-create-home \\
        --home-dir /nonexistent --shell /usr/sbin/nologin {PKG}
    chown {PKG} /var/lib/{PKG}
fi
'''

POSTRM = f'''#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    rm -rf /var/lib/{PKG}
    userdel {PKG} 2>/dev/null || true
fi
'''


def build_deb(where, name=PKG, version="1.0", nfiles=0, scripts=True):
    """A .deb made with dpkg-deb --root-owner-group; readable by everyone."""
    root = where / f"{name}-root"
    for d in ("DEBIAN", "usr/bin", f"usr/share/doc/{name}", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if scripts:
        (where / "suid.c").write_text(SUID_C)
        run(["gcc", "-O2", "-o", root / "usr/bin" / f"{name}-suid", where / "suid.c"])
        (root / "DEBIAN/postinst").write_text(POSTINST)
        (root / "DEBIAN/postrm").write_text(POSTRM)
        os.chmod(root / "DEBIAN/postinst", 0o755)
        os.chmod(root / "DEBIAN/postrm", 0o755)
    tool = root / "usr/bin" / name
    tool.write_text(f"#!/bin/sh\necho {name} works\n")
    os.chmod(tool, 0o755)
    (root / f"usr/share/doc/{name}/README").write_text(f"{name}\n")
    for i in range(nfiles):
        (root / f"usr/share/doc/{name}" / f"file{i:04d}.txt").write_text(f"{name} {i}\n" * 20)
    (root / "etc" / f"{name}.conf").write_text("setting=1\n")
    (root / "DEBIAN/conffiles").write_text(f"/etc/{name}.conf\n")
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: viewos tests <tests@viewos.invalid>\n"
        "Description: virtual installation test package\n built by the viewos views tests\n")
    deb = where / f"{name}_{version}_amd64.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", root, deb])
    os.chmod(deb, 0o644)
    return deb


def test_dpkg_install_in_a_view_leaves_the_host_untouched(user, utmp):
    deb = build_deb(utmp)
    layer = utmp / "newroot"
    before = host_state()
    r = sh(user, layer, f"dpkg -i {deb}", env=env(user), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = sh(user, layer,
           f"dpkg -s {PKG} | grep '^Status'; stat -c '%A %u %g' /usr/bin/{PKG}-suid; {PKG}; "
           f"{PKG}-suid; setpriv --reuid=_apt --regid=nogroup --clear-groups {PKG}-suid; "
           f"stat -c '%F %t:%T' /var/lib/{PKG}/null; getent passwd {PKG} | cut -d: -f1,6,7; "
           f"stat -c %U /var/lib/{PKG}; cat /etc/{PKG}.conf; cat /usr/share/doc/{PKG}/README",
           env=env(user))
    apt_uid = subprocess.check_output(["id", "-u", "_apt"], text=True).strip()
    assert r.stdout.splitlines() == [
        "Status: install ok installed",
        "-rwsr-xr-x 0 0",
        f"{PKG} works",
        "euid=0 uid=0",
        f"euid=0 uid={apt_uid}",  # setuid root works for another user of the view
        "character special file 1:3",
        f"{PKG}:/nonexistent:/usr/sbin/nologin",
        PKG,
        "setting=1",
        PKG,
    ]
    # the host is as it was; the layer holds the installation
    assert_host_unchanged(before)
    assert not Path(f"/usr/bin/{PKG}").exists()
    assert (layer / f"usr/bin/{PKG}").is_file()
    assert f"Package: {PKG}\n" in (layer / "var/lib/dpkg/status").read_text()
    assert PKG in (layer / "etc/passwd").read_text()
    # the real copy in the layer is the user's and not setuid: only the record says 4755 root
    st = os.stat(layer / f"usr/bin/{PKG}-suid")
    assert st.st_uid == user.uid and not st.st_mode & 0o6000

    # a second view on the same layer: still installed; dpkg -r removes it
    r = sh(user, layer, f"dpkg -s {PKG} | grep '^Status'; dpkg -r {PKG} >/dev/null; "
           f"dpkg -s {PKG} | grep '^Status'; ls /usr/bin/{PKG} 2>&1; getent passwd {PKG}; "
           f"cat /etc/{PKG}.conf", env=env(user), check=False)
    assert r.stdout.splitlines() == [
        "Status: install ok installed",
        "Status: deinstall ok config-files",
        f"ls: cannot access '/usr/bin/{PKG}': No such file or directory",
        "setting=1",  # dpkg -r keeps conffiles
    ]
    assert_host_unchanged(before)


def archive_reachable():
    try:
        with socket.create_connection(("deb.debian.org", 80), timeout=5):
            return True
    except OSError:
        return False


def test_apt_get_install_from_debians_archive_in_a_view(user, utmp):
    if not archive_reachable():
        pytest.skip("network: deb.debian.org:80 is not reachable from this machine")
    layer = utmp / "newroot"
    before = host_state()
    lists = any(p.name.endswith("_Packages") or "_Packages." in p.name
                for p in Path("/var/lib/apt/lists").iterdir())
    update = "" if lists else "apt-get update -q >/dev/null && "
    r = sh(user, layer, f"{update}apt-get install -y -q sl >/dev/null 2>{utmp}/apt.err; "
           f"echo rc=$?; dpkg -s sl | grep '^Status'; ls /usr/games/sl",
           env=env(user), timeout=300)
    assert r.stdout.splitlines() == ["rc=0", "Status: install ok installed", "/usr/games/sl"], \
        (utmp / "apt.err").read_text()
    assert not Path("/usr/games/sl").exists()
    assert (layer / "usr/games/sl").is_file()
    assert_host_unchanged(before)


CONFIGURE_AC = '''AC_INIT([vhello], [1.0])
AM_INIT_AUTOMAKE([foreign])
AC_PROG_CC
AC_CONFIG_FILES([Makefile])
AC_OUTPUT
'''
MAKEFILE_AM = '''bin_PROGRAMS = vhello
vhello_SOURCES = vhello.c
dist_pkgdata_DATA = vhello.txt
'''
VHELLO_C = '''#include <stdio.h>
int main(void) { puts("built in a view"); return 0; }
'''


def test_configure_make_install_lands_in_the_layer(user, utmp):
    src = utmp / "vhello"
    src.mkdir()
    (src / "configure.ac").write_text(CONFIGURE_AC)
    (src / "Makefile.am").write_text(MAKEFILE_AM)
    (src / "vhello.c").write_text(VHELLO_C)
    (src / "vhello.txt").write_text("data\n")
    run(["chown", "-R", f"{user.uid}:{user.gid}", src])
    layer = utmp / "newroot"
    before = host_state()
    r = sh(user, layer, f"cd {src} && autoreconf -i >/dev/null 2>&1 && ./configure -q && "
           "make -s >/dev/null && make -s install >/dev/null && vhello && "
           "cat /usr/local/share/vhello/vhello.txt && stat -c '%U' /usr/local/bin/vhello",
           env=env(user), timeout=300)
    assert r.stdout.splitlines() == ["built in a view", "data", "root"]
    assert not Path("/usr/local/bin/vhello").exists()
    assert (layer / "usr/local/bin/vhello").is_file()
    assert (layer / "usr/local/share/vhello/vhello.txt").read_text() == "data\n"
    assert_host_unchanged(before)
