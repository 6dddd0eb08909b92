"""Views: a command with its own root (`viewfs -o OPTS LAYER / -- COMMAND`), run as the
unprivileged test user: virtual root (and what a user without subordinate ids is told), real
/proc, /run and except= paths, host changes seen in a running view, copy-up of what the user
cannot read, the exit status and signals, cleanup (down to the view's mount namespace), --enter,
side-by-side and nested views, mounts made inside a view, bad input."""
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


def _view_in_a_throwaway_mount_namespace(user, utmp, setup, view_script, after):
    """Root makes a private mount namespace (the host's mounts stay as they are), runs setup
    there, then the test user's view running view_script, then after (still in that
    namespace). Returns the CompletedProcess; the view's output comes first."""
    layer = utmp / "layer"
    layer.mkdir()
    user.chown(layer)
    (utmp / "in-view.sh").write_text(view_script)
    viewfs = " ".join([*user.wrap([viewos_bin("viewfs")]), "-o", "mincow,except=/tmp,vstat",
                       str(layer), "/", "--", "/bin/sh", str(utmp / "in-view.sh")])
    (utmp / "ns.sh").write_text(f"set -e\n{setup}\n{viewfs}\n{after}\n")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh",
                           str(utmp / "ns.sh")], capture_output=True, text=True, timeout=120,
                          env=sanitizer_env(user.env()))


UNIX_SERVER = """import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)  # a watchdog: the view's client never came
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
s.listen()
s.accept()[0].sendall(b"served by the host")
"""
UNIX_CLIENT = """import socket
s = socket.socket(socket.AF_UNIX)
s.connect("/run/viewos.sock")
print(s.recv(64).decode())
"""


def test_run_is_the_real_one_when_it_is_a_mount_of_its_own(user, utmp):
    """/run as on a systemd host (a tmpfs of its own, here made in a throwaway namespace): the
    view binds the real one, so its files and the sockets of running services work."""
    (utmp / "server.py").write_text(UNIX_SERVER)
    (utmp / "client.py").write_text(UNIX_CLIENT)
    setup = ("mount -t tmpfs -o mode=1777 viewos-run /run\necho host > /run/viewos-marker\n"
             # (its output elsewhere: if the view fails, the server must not hold our pipes
             # open until its watchdog ends it)
             f"/usr/bin/python3 {utmp}/server.py /run/viewos.sock >{utmp}/server.log 2>&1 &\n"
             "until [ -S /run/viewos.sock ]; do sleep 0.05; done")
    view_script = ("findmnt -no FSTYPE,SOURCE --mountpoint /run\ncat /run/viewos-marker\n"
                   f"/usr/bin/python3 {utmp}/client.py\necho view > /run/viewos-from-view\n")
    r = _view_in_a_throwaway_mount_namespace(user, utmp, setup, view_script,
                                             "wait\ncat /run/viewos-from-view")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["tmpfs", "viewos-run", "host", "served", "by", "the", "host",
                                "view"]
    assert not (utmp / "layer" / "run").exists()


def test_run_on_the_root_file_system_is_part_of_the_view(user, utmp):
    """/run that is a plain directory of / (no mount of its own) is not bound: it is part of
    the root the view patches, so a write there goes into the layer, not to the host."""
    setup = "while mountpoint -q /run; do umount -l /run; done"
    view_script = ("findmnt -no FSTYPE --mountpoint /run || echo not-a-mount\n"
                   "findmnt -no FSTYPE -T /run\necho view > /run/viewos-from-view\n"
                   "cat /run/viewos-from-view\n")
    r = _view_in_a_throwaway_mount_namespace(user, utmp, setup, view_script,
                                             "ls /run/viewos-from-view 2>&1 || true")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["not-a-mount", "fuse.viewfs", "view"]
    assert "No such file or directory" in lines[3]
    assert (utmp / "layer" / "run" / "viewos-from-view").read_text() == "view\n"


def test_changes_land_in_the_layer_and_the_host_is_untouched(user, utmp):
    layer = utmp / "layer"
    sh(user, layer, "echo new > /etc/viewos-views-test && echo more >> /etc/hostname")
    assert not Path("/etc/viewos-views-test").exists()
    assert "more" not in Path("/etc/hostname").read_text()
    assert (layer / "etc" / "viewos-views-test").read_text() == "new\n"
    r = sh(user, layer, "cat /etc/viewos-views-test; tail -n1 /etc/hostname")
    assert r.stdout.split() == ["new", "more"]


def test_appending_to_a_file_the_user_cannot_read_starts_the_views_copy_empty(user, utmp):
    """A root-owned 0600 host file (the user cannot read it; the view's root may write it):
    an append in the view copies it up empty, by design (docs/views.md: what the user may not
    read stays secret). The view's file holds exactly the appended bytes, the host's is
    unchanged, and its content is nowhere in the layer."""
    d = scratch_outside_tmp(user, "unreadable")
    layer = utmp / "layer"
    try:
        secret = d / "secret"
        secret.write_text("HOST-SECRET\n")
        os.chown(secret, 0, 0)
        os.chmod(secret, 0o600)
        r = sh(user, layer, f"printf 'appended\\n' >> {secret} && cat {secret} && "
               f"stat -c '%u %a %s' {secret}")
        assert r.stdout.splitlines() == ["appended", "0 600 9"]
        copy = layer / str(d).lstrip("/") / "secret"
        assert copy.read_bytes() == b"appended\n"
        assert secret.read_text() == "HOST-SECRET\n"
        assert (secret.stat().st_uid, secret.stat().st_mode & 0o7777) == (0, 0o600)
        for f in layer.rglob("*"):
            if f.is_file() and not f.is_symlink():
                assert b"HOST-SECRET" not in f.read_bytes(), f
        # and the next view sees the same
        assert sh(user, layer, f"cat {secret}").stdout == "appended\n"
    finally:
        remove(d)


def _host_writes_seen_in_a_view(user, utmp, opts, poll):
    """The host changes a file (longer content, then a same-size overwrite in place: no size
    change for the cache to notice, only the mtime) and adds a file to its directory, while a
    view that has already read both runs. Returns what the view read after each change.

    poll: the view reads again until it sees the change, for at most 30 s (a watchdog against
    a cache that never lets go, not a measure of how fast it does); otherwise it reads once,
    right after the host's change."""
    d = scratch_outside_tmp(user, "hostwrite")
    try:
        f = d / "f"
        f.write_text("old\n")
        marks = {k: utmp / k for k in ("ready", "w1", "seen1", "w2")}

        def read_after(mark, want):
            wait = f"while [ ! -e {mark} ]; do sleep 0.05; done; "
            if not poll:
                return wait + f"cat {f}; ls {d}; "
            return (wait + f"n=0; until [ \"$(cat {f}; ls {d})\" = \"{want}\" ]; do "
                    "n=$((n+1)); [ $n -lt 600 ] || break; sleep 0.05; done; "
                    f"cat {f}; ls {d}; ")
        script = (f"cat {f}; ls {d}; ls {d}; touch {marks['ready']}; "
                  + read_after(marks["w1"], "new content, longer\nf\ng")
                  + f"touch {marks['seen1']}; "
                  + read_after(marks["w2"], "NEW CONTENT, LONGER\nf\ng"))
        p = popen_view(user, utmp / "layer", "/bin/sh", "-c", script, opts=opts)
        wait_for(marks["ready"])
        f.write_text("new content, longer\n")
        (d / "g").write_text("added by the host\n")
        marks["w1"].touch()
        wait_for(marks["seen1"])
        fd = os.open(f, os.O_WRONLY)  # in place: same size, new bytes, new mtime
        try:
            assert os.pwrite(fd, b"NEW CONTENT, LONGER\n", 0) == 20
        finally:
            os.close(fd)
        assert f.stat().st_size == 20
        marks["w2"].touch()
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        return out.splitlines()
    finally:
        remove(d)


def test_a_file_written_by_the_host_is_seen_in_the_running_view(user, utmp):
    """Default attribute timeout (1 s): the view sees the host's change once the cache expires
    (it reads until it does; a 30 s watchdog stands for "never")."""
    out = _host_writes_seen_in_a_view(user, utmp, "mincow,except=/tmp,vstat", poll=True)
    assert out == ["old", "f", "f", "new content, longer", "f", "g",
                   "NEW CONTENT, LONGER", "f", "g"]


def test_with_timeout_0_the_host_change_is_seen_at_the_next_read(user, utmp):
    """-o timeout=0: nothing is cached beyond a request, so the first read after the host's
    change already sees it (size change, in-place same-size overwrite, a new name)."""
    out = _host_writes_seen_in_a_view(user, utmp, "mincow,except=/tmp,vstat,timeout=0",
                                      poll=False)
    assert out == ["old", "f", "f", "new content, longer", "f", "g",
                   "NEW CONTENT, LONGER", "f", "g"]


def _holders_of_namespace(ns):
    """Host processes (any task) that are in the namespace ns ("mnt:[INODE]") or hold an fd
    to it: what keeps a mount namespace, and the mounts in it, alive."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                if os.readlink(f"/proc/{pid}/task/{tid}/ns/mnt") == ns:
                    found.add(int(pid))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == ns:
                    found.add(int(pid))
        except OSError:
            continue  # the process ended meanwhile
    return found


def test_nothing_is_mounted_on_the_host_while_and_after_a_view_runs(user, utmp):
    """The host's mount table never shows the view; and since a mount in a private namespace
    is not in the host's table anyway, the namespace itself must be gone with the view: no
    process on the host is still in it or holds it open."""
    def ours():
        # a view's mount would show its layer as the source, or / or /tmp as the mount point
        # (other suites' mounts come and go meanwhile: only ours count)
        return [line for line in fuse_lines()
                if str(utmp) in line or line.split(" ")[1] in ("/", "/tmp")]
    ready, done, nsfile = utmp / "ready", utmp / "done", utmp / "ns"
    # a background job too: it must not keep the namespace once the command exits
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c",
                   f"sleep 300 & readlink /proc/self/ns/mnt > {nsfile}; touch {ready}; "
                   f"while [ ! -e {done} ]; do sleep 0.05; done")
    wait_for(ready)
    ns = nsfile.read_text().strip()
    assert ns.startswith("mnt:[") and ns != os.readlink("/proc/self/ns/mnt")
    assert ours() == []
    assert len(_holders_of_namespace(ns)) >= 2, "the scan does not see the running view"
    done.touch()
    p.communicate(timeout=30)
    assert p.returncode == 0
    assert ours() == []
    assert _holders_of_namespace(ns) == set(), f"the view's namespace {ns} outlived it"


def test_killed_command_ends_the_view_and_its_daemon(user, utmp):
    pidfile = utmp / "pid"
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 60")
    wait_for(pidfile)
    time.sleep(0.2)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_to_viewfs_reach_the_command(user, utmp, sig):
    name = signal.Signals(sig).name[3:]
    pidfile = utmp / "pid"
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c",
                   f"trap 'echo got-{name}; exit 9' {name}; echo $$ > {pidfile}; "
                   "while :; do sleep 0.05; done")
    wait_for(pidfile)  # the trap is set before the file is made
    p.send_signal(sig)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 9 and f"got-{name}" in out


def test_killed_viewfs_takes_the_command_with_it(user, utmp):
    pidfile = utmp / "pid"
    p = popen_view(user, utmp / "layer", "/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 60")
    wait_for(pidfile)
    time.sleep(0.2)
    cmd_pid = int(pidfile.read_text())
    p.kill()
    p.communicate(timeout=30)
    # PR_SET_PDEATHSIG kills it at once; 30 s is a watchdog, not a measure
    end = time.monotonic() + 30
    while Path(f"/proc/{cmd_pid}").exists() and time.monotonic() < end:
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
    ids fails (EINVAL: the id is not mapped). viewfs says so in one line on stderr; with
    -o user (the user's own single id is all that is asked for) it says nothing."""
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
        own = sh(nosub, layer, "id -u", opts="mincow,except=/tmp,vstat,user")
    finally:
        remove(d)
    lines = r.stdout.splitlines()
    assert lines[:3] == ["0", "root", "nobody"]
    assert lines[-1] == "refused" and "Invalid argument" in lines[-2]
    assert r.stderr == (f"viewfs: no subordinate ids for {name} in /etc/subuid: only the "
                        "view's root is mapped: other owners show as nobody, and "
                        "setuid()/setgroups() to other ids fail\n")
    assert (own.stdout, own.stderr) == (f"{nosub.uid}\n", "")


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
    assert r.stderr == ""  # no user namespace, no id map: nothing to warn about
    assert not Path("/usr/bin/viewos-root-view").exists()
    assert (layer / "usr/bin/viewos-root-view").read_text() == "x\n"
