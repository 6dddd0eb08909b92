"""Views: a command with its own root (`viewfs -o OPTS LAYER / -- COMMAND`), run as the
unprivileged test user: virtual root, real /proc and except= paths, the exit status, cleanup,
--enter, side-by-side and nested views, mounts made inside a view, bad input."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_ext, run, sanitizer_env, viewos_bin
from views_lib import fuse_lines, popen_view, remove, scratch_outside_tmp, sh, view, wait_for


def test_exit_status_of_the_command_is_viewfs_status(user, utmp):
    assert sh(user, utmp / "layer", "exit 7", check=False).returncode == 7
    for _ in range(5):  # and says nothing (the connection's end is not an error)
        r = view(user, utmp / "layer", "true")
        assert (r.returncode, r.stderr) == (0, "")


def test_signal_death_of_the_command_is_128_plus_n(user, utmp):
    r = sh(user, utmp / "layer", "kill -TERM $$", check=False)
    assert r.returncode == 128 + signal.SIGTERM


def test_virtual_root_is_uid_0_and_host_root_files_show_as_root(user, utmp):
    r = sh(user, utmp / "layer", "id -u; id -g; stat -c '%u:%g' /usr/bin/env /etc/passwd")
    assert r.stdout.split() == ["0", "0", "0:0", "0:0"]


def test_files_of_other_users_show_their_real_owners(user, utmp):
    d = scratch_outside_tmp(user, "owners")
    try:
        f = d / "theirs"
        f.write_text("x")
        os.chown(f, 1234, 4321)
        mine = d / "mine"
        mine.write_text("y")
        user.chown(mine)
        r = sh(user, utmp / "layer", f"stat -c '%u:%g' {f} {mine}")
        assert r.stdout.split() == ["1234:4321", f"{user.uid}:{user.gid}"]
    finally:
        remove(d)


def test_chown_in_the_view_shows_the_new_ids_and_stays_in_the_layer(user, utmp):
    layer = utmp / "layer"
    r = sh(user, layer, "set -e; mkdir -p /usr/local/share/v; cd /usr/local/share/v; "
           "touch a b; chown 1234:1234 a; chown _apt:nogroup b; stat -c '%n %u:%g %U' a b")
    apt_uid = int(subprocess.check_output(["id", "-u", "_apt"]))
    assert r.stdout.split("\n")[:2] == ["a 1234:1234 UNKNOWN", f"b {apt_uid}:65534 _apt"]
    assert not Path("/usr/local/share/v").exists()
    # the layer holds them, and a second view shows the same owners
    r = sh(user, layer, "stat -c '%n %u:%g' /usr/local/share/v/a /usr/local/share/v/b")
    assert r.stdout.split("\n")[:2] == ["/usr/local/share/v/a 1234:1234",
                                        f"/usr/local/share/v/b {apt_uid}:65534"]


def test_setuid_and_setgroups_work_with_subordinate_ids(user, utmp):
    # apt drops to _apt this way: a real setuid()/setgroups() in the view
    r = sh(user, utmp / "layer", "setpriv --reuid=_apt --regid=nogroup --clear-groups "
           "sh -c 'id -un; id -u; touch /tmp/_apt_was_here 2>&1 || true'")
    apt_uid = subprocess.check_output(["id", "-u", "_apt"], text=True).strip()
    assert r.stdout.split()[:2] == ["_apt", apt_uid]


def test_option_user_keeps_the_users_own_ids(user, utmp):
    r = sh(user, utmp / "layer", "id -u; id -g", opts="mincow,except=/tmp,vstat,user")
    assert r.stdout.split() == [str(user.uid), str(user.gid)]


def test_except_tmp_is_the_real_tmp_as_a_bind_mount(user, utmp):
    r = sh(user, utmp / "layer", f"echo hello > {utmp}/from-view; "
           "findmnt -no FSTYPE --mountpoint /tmp; findmnt -no FSTYPE --mountpoint /")
    assert (utmp / "from-view").read_text() == "hello\n"
    fstype_tmp, fstype_root = r.stdout.split()[:2]
    assert fstype_root == "fuse.viewfs"
    assert not fstype_tmp.startswith("fuse"), "except=/tmp must be a real bind, not FUSE"


def test_proc_sys_dev_are_the_real_ones(user, utmp):
    r = sh(user, utmp / "layer", "findmnt -rno TARGET,FSTYPE")
    seen = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert seen["/proc"] == "proc" and seen["/sys"] == "sysfs" and seen["/dev"] == "devtmpfs"


def test_changes_land_in_the_layer_and_the_host_is_untouched(user, utmp):
    layer = utmp / "layer"
    sh(user, layer, "echo new > /etc/viewos-views-test && echo more >> /etc/hostname")
    assert not Path("/etc/viewos-views-test").exists()
    assert "more" not in Path("/etc/hostname").read_text()
    assert (layer / "etc" / "viewos-views-test").read_text() == "new\n"
    r = sh(user, layer, "cat /etc/viewos-views-test; tail -n1 /etc/hostname")
    assert r.stdout.split() == ["new", "more"]


def test_a_file_written_by_the_host_is_seen_in_the_running_view(user, utmp):
    d = scratch_outside_tmp(user, "hostwrite")
    try:
        f = d / "f"
        f.write_text("old\n")
        ready, written = utmp / "ready", utmp / "written"
        p = popen_view(user, utmp / "layer", "/bin/sh", "-c",
                       f"cat {f}; ls {d}; ls {d}; touch {ready}; "
                       f"while [ ! -e {written} ]; do sleep 0.05; done; "
                       f"sleep 1.3; cat {f}; ls {d}")
        wait_for(ready)
        f.write_text("new content, longer\n")
        (d / "g").write_text("added by the host\n")
        written.touch()
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        # the listing too (the kernel may cache it: the directory's new mtime drops it)
        assert out.splitlines() == ["old", "f", "f", "new content, longer", "f", "g"]
    finally:
        remove(d)


def test_nothing_is_mounted_on_the_host_while_and_after_a_view_runs(user, utmp):
    def ours():
        # a view's mount would show its layer as the source, or / or /tmp as the mount point
        # (other suites' mounts come and go meanwhile: only ours count)
        return [line for line in fuse_lines()
                if str(utmp) in line or line.split(" ")[1] in ("/", "/tmp")]
    ready, done = utmp / "ready", utmp / "done"
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c",
                   f"touch {ready}; while [ ! -e {done} ]; do sleep 0.05; done")
    wait_for(ready)
    assert ours() == []
    done.touch()
    p.communicate(timeout=30)
    assert p.returncode == 0
    assert ours() == []


def test_killed_command_ends_the_view_and_its_daemon(user, utmp):
    pidfile = utmp / "pid"
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 60")
    wait_for(pidfile)
    time.sleep(0.2)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGKILL


def test_sigterm_to_viewfs_reaches_the_command(user, utmp):
    pidfile = utmp / "pid"
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c",
                   f"trap 'echo got-term; exit 9' TERM; echo $$ > {pidfile}; "
                   "while :; do sleep 0.05; done")
    wait_for(pidfile)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 9 and "got-term" in out


def test_killed_viewfs_takes_the_command_with_it(user, utmp):
    pidfile = utmp / "pid"
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 60")
    wait_for(pidfile)
    time.sleep(0.2)
    cmd_pid = int(pidfile.read_text())
    p.kill()
    p.communicate(timeout=30)
    for _ in range(100):
        if not Path(f"/proc/{cmd_pid}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{cmd_pid}").exists(), "the command outlived its view"


def test_enter_joins_a_running_view(user, utmp):
    layer = utmp / "layer"
    pidfile, done = utmp / "pid", utmp / "done"
    p = popen_view(user, layer, "/bin/sh", "-c",
                   f"echo only-in-view > /etc/viewos-enter; cd /usr/share; echo $$ > {pidfile}; "
                   f"while [ ! -e {done} ]; do sleep 0.05; done")
    try:
        wait_for(pidfile)
        time.sleep(0.1)
        r = run([viewos_bin("viewfs"), "--enter", pidfile.read_text().strip(), "--", "/bin/sh",
                 "-c", "cat /etc/viewos-enter; pwd; id -u"], user=user)
        assert r.stdout.split() == ["only-in-view", "/usr/share", "0"]
        assert not Path("/etc/viewos-enter").exists()
    finally:
        done.touch()
        p.communicate(timeout=30)
    assert p.returncode == 0


def test_enter_bad_pid_is_a_one_line_error(user):
    r = run([viewos_bin("viewfs"), "--enter", "999999999", "--", "true"], user=user, check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("viewfs: cannot enter the view of 999999999") and \
        r.stderr.count("\n") == 1


def test_views_side_by_side_see_only_their_own_changes(user, utmp):
    a_ready, b_ready, go = utmp / "a", utmp / "b", utmp / "go"
    procs = []
    for name, ready in (("A", a_ready), ("B", b_ready)):
        procs.append(popen_view(user, utmp / f"layer{name}", "/bin/sh", "-c",
                                f"echo {name} > /etc/viewos-side; touch {ready}; "
                                f"while [ ! -e {go} ]; do sleep 0.05; done; cat /etc/viewos-side"))
    wait_for(a_ready)
    wait_for(b_ready)
    go.touch()
    outs = [p.communicate(timeout=30)[0] for p in procs]
    assert outs == ["A\n", "B\n"]


def test_a_view_inside_a_view(user, utmp):
    outer, inner = utmp / "outer", utmp / "inner"
    inner.mkdir()
    user.chown(inner)
    vfs = viewos_bin("viewfs")
    r = sh(user, outer, f"echo outer > /etc/viewos-nest; "
           f"{vfs} -o cow,except=/tmp {inner} / -- /bin/sh -c "
           "'cat /etc/viewos-nest; echo inner > /etc/viewos-nest; id -u; "
           "findmnt -no FSTYPE --mountpoint /; findmnt -rno TARGET | grep -c ^/\\$'; "
           "cat /etc/viewos-nest")
    # the inner view's root is a viewfs mount over the outer one's (two stacked roots seen
    # from inside: only the inner is in its namespace)
    assert r.stdout.split() == ["outer", "0", "fuse.viewfs", "1", "outer"]
    assert (inner / "etc" / "viewos-nest").read_text() == "inner\n"
    assert (outer / "etc" / "viewos-nest").read_text() == "outer\n"


def test_an_ext2_mount_made_in_a_view_is_seen_only_there(user, utmp):
    img = utmp / "disk.img"
    make_ext(img, fstype="ext2", size="8M", owner=user) if "owner" in make_ext.__code__.co_varnames \
        else make_ext(img, fstype="ext2", size="8M")
    user.chown(img)
    ready, done = utmp / "ready", utmp / "done"
    ext2 = viewos_bin("umfuse-ext2")
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c",
                   f"set -e; mkdir -p /mnt/disk; {ext2} -f {img} /mnt/disk & e=$!; "
                   "until findmnt /mnt/disk >/dev/null; do sleep 0.05; done; "
                   "echo data > /mnt/disk/f; findmnt -no FSTYPE --mountpoint /mnt/disk "
                   f"> {utmp}/seen; touch {ready}; "
                   f"while [ ! -e {done} ]; do sleep 0.05; done; cat /mnt/disk/f; "
                   "fusermount3 -u /mnt/disk; wait $e")
    try:
        wait_for(ready)
        assert (utmp / "seen").read_text().strip() == "fuse.umfuse-ext2"
        assert not any("/mnt/disk" in line for line in open("/proc/mounts"))
    finally:
        done.touch()
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out == "data\n"
    run(["e2fsck", "-fn", img])
    assert "data" in run(["debugfs", "-R", "cat /f", img]).stdout


def test_umdev_partition_with_ext2_mounted_in_a_view(user, utmp):
    """Showcase step 6: a partitioned disk image, its partition seen through umdev-mbr and
    mounted with umfuse-ext2, all inside the view and invisible outside."""
    img = utmp / "disk.img"
    run(["truncate", "-s", "64M", img])
    run(["sfdisk", "-q", img], input="size=40MiB, type=83\n")
    user.chown(img)
    mbr, ext2 = viewos_bin("umdev-mbr"), viewos_bin("umfuse-ext2")
    r = sh(user, utmp / "layer",
           f"set -e; {mbr} -f {img} {utmp}/hd & m=$!; "
           f"until [ -e {utmp}/hd1 ]; do sleep 0.05; done; mkfs.ext2 -q {utmp}/hd1; "
           f"mkdir -p /mnt/p1; {ext2} -f {utmp}/hd1 /mnt/p1 & e=$!; "
           "until findmnt /mnt/p1 >/dev/null; do sleep 0.05; done; "
           "echo part > /mnt/p1/f; cat /mnt/p1/f; "
           "findmnt -no FSTYPE --mountpoint /mnt/p1; fusermount3 -u /mnt/p1; wait $e; "
           f"fusermount3 -u {utmp}/hd; wait $m", timeout=120)
    assert r.stdout.split() == ["part", "fuse.umfuse-ext2"]
    assert not (Path("/mnt/p1")).exists()


def test_no_command_and_no_terminal_is_an_error(user, utmp):
    (utmp / "layer").mkdir()
    r = run([viewos_bin("viewfs"), "-o", "mincow,except=/tmp,vstat", utmp / "layer", "/"],
            user=user, check=False, input="")
    assert r.returncode == 1
    assert r.stderr == ("viewfs: no command given and stdin is not a terminal: give -- COMMAND "
                        "[ARGS...]\n")


def test_nonexistent_command_exits_127_with_a_message(user, utmp):
    r = view(user, utmp / "layer", "/no/such/command", check=False)
    assert r.returncode == 127
    assert r.stderr == "viewfs: cannot run /no/such/command: No such file or directory\n"


def test_missing_layer_is_a_one_line_error(user, utmp):
    r = view(user, utmp / "nonexistent", "true", opts="move", check=False, make_layer=False)
    assert r.returncode == 2
    assert r.stderr.startswith(f"viewfs: cannot open layer {utmp}/nonexistent: ")
    assert r.stderr.count("\n") == 1


def test_layer_inside_the_view_without_except_is_refused_in_union_modes(user, utmp):
    r = view(user, utmp / "layer", "true", opts="cow", check=False)
    assert r.returncode == 2 and "inside the mount point" in r.stderr


def test_no_user_namespaces_is_a_clear_message(user, utmp):
    """In a throwaway user namespace made by root, where max_user_namespaces is set to 0 (its
    own limit: the host's stays), the test user cannot make one: viewfs says so."""
    (utmp / "layer").mkdir()
    user.chown(utmp / "layer")
    go = utmp / "go"
    inner = (f"echo 0 > /proc/sys/user/max_user_namespaces && "
             f"exec setpriv --reuid={user.uid} --regid={user.gid} --clear-groups "
             f"{viewos_bin('viewfs')} -o mincow,except=/tmp,vstat {utmp}/layer / -- true")
    # the maps are written from outside; the second exec gives the shell its capabilities in
    # the namespace (the first one ran before the maps existed)
    script = f"while [ ! -e {go} ]; do sleep 0.02; done; exec sh -c '{inner}'"
    p = subprocess.Popen(["unshare", "--user", "sh", "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=sanitizer_env(user.env()))
    try:
        time.sleep(0.2)
        maps = f"0 0 1\n{user.uid} {user.uid} 1\n"
        Path(f"/proc/{p.pid}/uid_map").write_text(maps)
        Path(f"/proc/{p.pid}/gid_map").write_text(f"0 0 1\n{user.gid} {user.gid} 1\n")
    finally:
        go.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 32, err
    assert err == ("viewfs: cannot create a user namespace: No space left on device (are user "
                   "namespaces available? see /proc/sys/user/max_user_namespaces)\n")


def test_move_cage_shows_only_the_cage(user, utmp):
    """User-mode chroot: a busybox-static cage entered with -o move."""
    cage = utmp / "cage"
    (cage / "bin").mkdir(parents=True)
    (cage / "etc").mkdir()
    (cage / "etc" / "motd").write_text("caged\n")
    run(["cp", "/bin/busybox", cage / "bin" / "busybox"])
    run(["chown", "-R", f"{user.uid}:{user.gid}", cage])
    r = view(user, cage, "/bin/busybox", "sh", "-c", "ls -lR /; /bin/busybox cat /etc/motd",
             opts="move")
    names = sorted(line.split()[-1] for line in r.stdout.splitlines()
                   if line and line[0] in "-dl")
    assert names == ["bin", "busybox", "etc", "motd"]
    assert r.stdout.endswith("caged\n")


def test_without_subordinate_ids_one_id_is_mapped(utmp):
    """A user with no /etc/subuid range (a system account gets none): the view still runs as
    its root, host root still shows as root, every other owner shows as nobody, and a change of
    ids fails (EINVAL: the id is not mapped)."""
    name = "viewos-nosubid"
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", name])
    for f in ("/etc/subuid", "/etc/subgid"):
        assert not any(line.startswith(name + ":") for line in open(f)), f"{name} in {f}"
    from conftest import User
    nosub = User(name)
    layer = utmp / "layer"
    layer.mkdir()
    nosub.chown(layer)
    d = scratch_outside_tmp(nosub, "nosubid")  # seen through viewfs, not the /tmp bind
    try:
        mine = d / "mine"
        mine.write_text("x")
        nosub.chown(mine)
        r = sh(nosub, layer, f"id -u; stat -c '%U' /usr/bin/env {mine}; "
               "setpriv --reuid=_apt true 2>&1 || echo refused")
    finally:
        remove(d)
    lines = r.stdout.splitlines()
    assert lines[:3] == ["0", "root", "nobody"]
    assert lines[-1] == "refused" and "Invalid argument" in lines[-2]


def test_what_the_command_leaves_running_ends_with_the_view(user, utmp):
    pidfile = utmp / "pids"
    r = sh(user, utmp / "layer", f"sleep 100 & echo $! > {pidfile}; "
           f"(setsid sleep 101 & echo $! >> {pidfile}); exit 4", check=False)
    assert r.returncode == 4
    for pid in pidfile.read_text().split():
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} outlived its view"


def test_a_file_system_left_mounted_in_the_view_is_flushed_and_ended(user, utmp):
    """umfuse-ext2 started (detached) in the view and never unmounted: when the command exits
    the daemon gets SIGTERM while the view is still served, flushes, and the image is clean."""
    img = utmp / "disk.img"
    make_ext(img, fstype="ext2", size="8M")
    user.chown(img)
    ext2 = viewos_bin("umfuse-ext2")
    r = sh(user, utmp / "layer", f"mkdir -p /mnt/left && {ext2} {img} /mnt/left && "
           "head -c 300000 /dev/urandom > /mnt/left/data && sha256sum < /mnt/left/data")
    digest = r.stdout.split()[0]
    assert not any("/mnt/left" in line for line in open("/proc/mounts"))
    run(["e2fsck", "-fn", img])
    dumped = utmp / "dumped"
    run(["debugfs", "-R", f"dump /data {dumped}", img])
    import hashlib
    assert hashlib.sha256(dumped.read_bytes()).hexdigest() == digest


def test_any_mountpoint_followed_by_a_command(user, utmp):
    """viewfs -o cow LAYER DIR -- COMMAND: DIR is the view for COMMAND only; the rest of the
    system is the real one, and the user keeps their ids (no vstat)."""
    d, layer = utmp / "project", utmp / "layer"
    d.mkdir()
    (d / "Makefile").write_text("all:\n")
    run(["chown", "-R", f"{user.uid}:{user.gid}", d])
    r = view(user, layer, "/bin/sh", "-c",
             f"echo changed >> {d}/Makefile; echo new > {d}/new; cat {d}/Makefile {d}/new; "
             f"id -u; findmnt -no FSTYPE --mountpoint {d}; findmnt -no FSTYPE --mountpoint /",
             opts="cow", mountpoint=str(d))
    assert r.stdout.split() == ["all:", "changed", "new", str(user.uid), "fuse.viewfs", "ext4"]
    assert (d / "Makefile").read_text() == "all:\n" and not (d / "new").exists()
    assert (layer / "new").read_text() == "new\n"


def test_root_gets_a_view_without_a_user_namespace(utmp):
    """Run by root: only a mount namespace (the user namespace stays the host's), the same
    view."""
    layer = utmp / "layer"
    layer.mkdir()
    r = run([viewos_bin("viewfs"), "-o", "cow,except=/tmp", layer, "/", "--", "/bin/sh", "-c",
             "id -u; readlink /proc/self/ns/user; echo x > /usr/bin/viewos-root-view; "
             "stat -c %U /usr/bin/viewos-root-view; findmnt -no FSTYPE --mountpoint /"])
    uid, ns, owner, fstype = r.stdout.split()
    assert (uid, ns, owner, fstype) == ("0", os.readlink("/proc/self/ns/user"), "root",
                                        "fuse.viewfs")
    assert not Path("/usr/bin/viewos-root-view").exists()
    assert (layer / "usr/bin/viewos-root-view").read_text() == "x\n"
