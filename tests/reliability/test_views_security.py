"""Security of views: run as the unprivileged test user, each test tries to get out of a view,
or to gain through one what the user does not have on the host, and must fail.

Views (`viewfs -o ... LAYER / -- COMMAND`, issue 4): a symlink in the layer that points at a
host file is resolved inside the view, for reads and for writes; `..` from the view's root
stays there; except=/tmp does not also expose /tmpx...; a root-owned 0600 host file stays
unreadable from the view's virtual root (vstat), also after a virtual chmod/chown and a
copy-up; setuid/setgid and ownership set through vstat never reach a real file, and a virtual
setuid-root program does not run as root; device nodes made through vstat never open a real
device; the view's mounts (viewfs and one made inside it) are not visible on the host or to
another user, and the view's files (its FUSE mount has allow_other, inside its own user
namespace) cannot be reached from outside that namespace (/proc/PID/root, cwd, fd; --enter by
another user). Plain viewfs mounts (issue 3): allow_other is off unless asked for, so another
user (root included) cannot enter the mount.

`nobody` plays the other user."""
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run, sanitizer_env, viewos_bin

OPTS = "mincow,except=/tmp,vstat"


def view(user, layer, script, opts=OPTS, check=True):
    argv = [viewos_bin("viewfs"), "-o", opts, str(layer), "/", "--", "/bin/sh", "-c", script]
    return run(argv, user=user, check=check, timeout=120)


@pytest.fixture
def host_dir(user):
    """A directory of the user outside /tmp (so the view shows it through viewfs, not through
    the except=/tmp bind), removed afterwards."""
    base = Path("/var/tmp/viewos-reld-sec")
    base.mkdir(mode=0o755, exist_ok=True)
    d = Path(subprocess.check_output(["mktemp", "-d", f"{base}/t.XXXXXX"], text=True).strip())
    os.chmod(d, 0o755)
    user.chown(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def layer(utmp):
    d = utmp / "layer"
    d.mkdir()
    os.chown(d, *[os.stat(utmp).st_uid, os.stat(utmp).st_gid])
    return d


def test_symlink_in_the_layer_to_a_host_file_is_resolved_inside_the_view(user, layer, host_dir):
    target = host_dir / "target"
    target.write_text("host\n")
    rel = str(host_dir).lstrip("/")
    # the layer (the user's own directory: anything may be in it) holds its own version of the
    # path and a symlink to it by an absolute host path
    (layer / rel).mkdir(parents=True)
    (layer / rel / "target").write_text("view\n")
    os.symlink(str(target), layer / rel / "link")
    os.symlink("/etc/shadow", layer / rel / "shadow")
    subprocess.run(["chown", "-R", "-h", f"{user.uid}:{user.gid}", str(layer)], check=True)
    r = view(user, layer, f"cat {host_dir}/link; cat {host_dir}/shadow >/dev/null 2>&1 && "
                          "echo read-shadow || echo no-shadow", opts="cow,except=/tmp,vstat")
    assert r.stdout.split() == ["view", "no-shadow"], r.stdout
    assert target.read_text() == "host\n"


def test_writes_through_a_layer_symlink_to_a_host_path_land_in_the_view(user, layer, host_dir):
    """Layer symlinks by absolute host paths: to a host file of the user's, to a name that does
    not exist yet, to a root-owned host file. Writing through them is resolved in the view, so
    the data goes into the layer (cow); the daemon never follows a layer symlink to the host."""
    target = host_dir / "target"
    target.write_text("host\n")
    rel = str(host_dir).lstrip("/")
    (layer / rel).mkdir(parents=True)
    links = {"to-target": target, "to-new": host_dir / "created", "to-etc": "/etc/hostname"}
    for name, dest in links.items():
        os.symlink(str(dest), layer / rel / name)
    subprocess.run(["chown", "-R", "-h", f"{user.uid}:{user.gid}", str(layer)], check=True)
    hostname = Path("/etc/hostname").read_bytes()
    d = host_dir
    r = view(user, layer, f"echo via-link > {d}/to-target; echo made > {d}/to-new; "
                          f"echo appended >> {d}/to-etc; cat {d}/target {d}/created; "
                          "tail -n1 /etc/hostname", opts="cow,except=/tmp,vstat")
    assert r.stdout.split() == ["via-link", "made", "appended"], r.stdout + r.stderr
    # the host is untouched
    assert target.read_text() == "host\n"
    assert not (host_dir / "created").exists()
    assert Path("/etc/hostname").read_bytes() == hostname
    # the layer has the data, and its symlinks are still symlinks to the same paths
    assert (layer / rel / "target").read_text() == "via-link\n"
    assert (layer / rel / "created").read_text() == "made\n"
    assert (layer / "etc" / "hostname").read_bytes() == hostname + b"appended\n"
    for name, dest in links.items():
        assert os.readlink(layer / rel / name) == str(dest)


def test_dotdot_from_the_views_root_stays_at_the_root(user, layer):
    r = view(user, layer, "echo view-only > /viewos-reld-root-marker; "
                          "cat /../../viewos-reld-root-marker; cd /; cd ../../..; pwd; "
                          "stat -c %i / /.. /../..")
    out = r.stdout.split()
    assert out[:2] == ["view-only", "/"], out
    assert out[2] == out[3] == out[4], f"/.. is not / in the view: {out}"
    assert not Path("/viewos-reld-root-marker").exists()


def test_except_tmp_does_not_expose_tmpx(user, layer):
    tmpx = Path("/tmpxviewos-reld")  # shares "/tmp" as a string prefix, not as a directory
    tmpx.mkdir(exist_ok=True)
    os.chmod(tmpx, 0o777)
    try:
        marker = Path(f"/tmp/viewos-reld-except-{os.getpid()}")
        # cow: mincow would rightly write to /tmpx... itself (the user may)
        view(user, layer, f"echo in-view > {tmpx}/f; echo real > {marker}",
             opts="cow,except=/tmp,vstat")
        assert not (tmpx / "f").exists(), "a write to /tmpx... reached the host"
        assert (layer / tmpx.name / "f").read_text() == "in-view\n"
        assert marker.read_text() == "real\n", "except=/tmp itself is not the real /tmp"
        marker.unlink()
    finally:
        shutil.rmtree(tmpx, ignore_errors=True)


def test_a_root_only_host_file_stays_unreadable_from_the_virtual_root(user, layer, host_dir):
    secret = host_dir / "secret"
    secret.write_text("SECRET-CONTENT\n")
    os.chown(secret, 0, 0)
    os.chmod(secret, 0o600)
    r = view(user, layer, f"id -u; cat {secret}; "
                          f"chmod 0644 {secret}; chown {user.uid} {secret}; cat {secret}; "
                          f"cp {secret} /tmp/viewos-reld-copy-{os.getpid()}; "
                          f"echo x >> {secret}; cat {secret}; "
                          f"cat /tmp/viewos-reld-copy-{os.getpid()}", check=False)
    copy = Path(f"/tmp/viewos-reld-copy-{os.getpid()}")
    leaked = copy.read_text() if copy.exists() else ""
    copy.unlink(missing_ok=True)
    assert r.stdout.split()[0] == "0", "not the virtual root"
    assert "SECRET" not in r.stdout + r.stderr + leaked
    assert "SECRET" not in "".join(p.read_text(errors="replace") for p in layer.rglob("*")
                                   if p.is_file() and not p.is_symlink())
    assert secret.read_text() == "SECRET-CONTENT\n"
    assert (secret.stat().st_uid, stat.S_IMODE(secret.stat().st_mode)) == (0, 0o600)


def test_setuid_and_owners_set_through_vstat_never_reach_a_real_file(user, layer, host_dir):
    prog = host_dir / "myid"
    shutil.copy("/usr/bin/id", prog)
    user.chown(prog)
    r = view(user, layer, f"chown 0:0 {prog} && chmod 6755 {prog} && stat -c '%u %g %a' {prog}"
                          f" && cp /usr/bin/id {host_dir}/newid && chown 0:0 {host_dir}/newid"
                          f" && chmod 4755 {host_dir}/newid && stat -c '%u %a' {host_dir}/newid")
    assert r.stdout.split() == ["0", "0", "6755", "0", "4755"], r.stdout
    # on the host: the user's own files, no setuid/setgid bit (mincow: the user's own file is
    # the original; new files are in the original directory the user owns or in the layer)
    for p in [prog, host_dir / "newid", layer / str(host_dir).lstrip("/") / "newid"]:
        if p.exists():
            st = p.stat()
            assert st.st_uid == user.uid and not st.st_mode & (stat.S_ISUID | stat.S_ISGID), p
    # the virtual setuid-root program does not run as root, in a view with the user's own ids
    r = view(user, layer, f"{prog} -u; {host_dir}/newid -u", opts=OPTS + ",user")
    assert r.stdout.split() == [str(user.uid)] * 2, r.stdout


def test_device_nodes_made_through_vstat_never_open_a_real_device(user, layer, host_dir):
    r = view(user, layer, f"cd {host_dir} && mknod mem c 1 1 && mknod zero c 1 5 && "
                          "mknod sda b 8 0 && stat -c '%F %t %T' mem zero sda; "
                          "for d in mem zero sda; do "
                          "  head -c 16 $d 2>/dev/null | od -An -tx1 | tr -d ' \\n'; echo \" $d\";"
                          "done")
    lines = r.stdout.splitlines()
    assert lines[:3] == ["character special file 1 1", "character special file 1 5",
                         "block special file 8 0"], lines
    for line in lines[3:6]:
        data, name = line.rsplit(" ", 1)
        assert data == "", f"{name} opened a real device: read {data}"
    for name in ("mem", "zero", "sda"):
        for p in (host_dir / name, layer / str(host_dir).lstrip("/") / name):
            if p.exists():
                assert stat.S_ISREG(p.lstat().st_mode) and p.stat().st_size == 0, p


def _fuse_mounts():
    with open("/proc/mounts") as f:
        return [line for line in f if line.split()[2].startswith("fuse")]


def test_the_views_mounts_are_not_visible_on_the_host_or_to_another_user(user, layer, utmp):
    def ours(text):
        """Lines of a mount table that are this view's (its layer is the viewfs source; the
        tmpfs made inside it is named by its mount point). Other tests may mount meanwhile."""
        return [line for line in text.splitlines() if str(layer) in line or "viewos-reld" in line]

    ready, done = utmp / "ready", utmp / "done"
    p = subprocess.Popen(
        user.wrap([viewos_bin("viewfs"), "-o", OPTS, str(layer), "/", "--", "/bin/sh", "-c",
                   "mkdir -p /mnt/viewos-reld && mount -t tmpfs none /mnt/viewos-reld && "
                   f"grep -c viewos-reld /proc/mounts > {ready}.tmp; mv {ready}.tmp {ready}; "
                   f"for i in $(seq 600); do [ -e {done} ] && break; sleep 0.1; done"]),
        env=sanitizer_env(user.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the view did not start"
            time.sleep(0.05)
        assert ready.read_text().strip() == "1", "the view's own tmpfs mount is not there"
        for pid in ("self", "1"):
            with open(f"/proc/{pid}/mounts") as f:
                assert not ours(f.read()), "the view's mounts show on the host"
        other = run(["cat", "/proc/mounts", "/proc/1/mountinfo"], user=_nobody())
        assert not ours(other.stdout), "another user sees the view's mounts"
    finally:
        done.touch()
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
    assert p.returncode == 0, err
    with open("/proc/mounts") as f:
        assert not ours(f.read())


PROBE = """import os, sys
pid = sys.argv[1]
for what, path, listing in [("root", f"/proc/{pid}/root/etc/viewos-reld-secret", False),
                            ("root-dir", f"/proc/{pid}/root/etc", True),
                            ("cwd", f"/proc/{pid}/cwd", True),
                            ("fd", f"/proc/{pid}/fd/7", False),
                            ("tmp-below-root", f"/proc/{pid}/root/tmp", True)]:
    try:
        print(what, "listed" if listing and os.listdir(path) else open(path).read().strip())
    except OSError as e:
        print(what, e.strerror)
"""


def test_another_user_cannot_reach_the_views_files_through_proc(user, layer, utmp):
    """The view's FUSE mount has allow_other, but inside the view's own user namespace: the
    kernel lets only processes of that namespace in. Another host user (nobody) gets EACCES
    through /proc/PID/root, /proc/PID/cwd and /proc/PID/fd of the view's processes (so does
    the user outside the view: the way in is --enter), and cannot --enter. The same probe
    run inside the view reads everything (the paths are right)."""
    (utmp / "probe.py").write_text(PROBE)
    pidfile, done = utmp / "pid", utmp / "done"
    p = subprocess.Popen(
        user.wrap([viewos_bin("viewfs"), "-o", OPTS, str(layer), "/", "--", "/bin/sh", "-c",
                   "echo only-in-the-view > /etc/viewos-reld-secret; "
                   "exec 7</etc/viewos-reld-secret; cd /usr/share; "
                   f"echo $$ > {pidfile}.new; mv {pidfile}.new {pidfile}; "
                   f"for i in $(seq 600); do [ -e {done} ] && break; sleep 0.1; done"]),
        env=sanitizer_env(user.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the view did not start"
            time.sleep(0.05)
        pid = pidfile.read_text().strip()
        probe = ["/usr/bin/python3", str(utmp / "probe.py"), pid]
        denied = ["root Permission denied", "root-dir Permission denied",
                  "cwd Permission denied", "fd Permission denied",
                  "tmp-below-root Permission denied"]
        assert run(probe, user=_nobody()).stdout.splitlines() == denied
        assert run(probe, user=user).stdout.splitlines() == denied
        entered = run([viewos_bin("viewfs"), "--enter", pid, "--", *probe], user=user)
        assert entered.stdout.splitlines() == [
            "root only-in-the-view", "root-dir listed", "cwd listed", "fd only-in-the-view",
            "tmp-below-root listed"]
        other = run([viewos_bin("viewfs"), "--enter", pid, "--", "cat",
                     "/etc/viewos-reld-secret"], user=_nobody(), check=False)
        assert other.returncode != 0 and "only-in-the-view" not in other.stdout
        assert other.stderr.startswith(f"viewfs: cannot enter the view of {pid}") and \
            other.stderr.count("\n") == 1, other.stderr
    finally:
        done.touch()
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
    assert p.returncode == 0, err
    assert not Path("/etc/viewos-reld-secret").exists()


def _nobody():
    from conftest import User
    return User("nobody")


def test_allow_other_is_off_unless_asked_for(user, utmp, mounts):
    mnt, layer = utmp / "mnt", utmp / "layer"
    for d in (mnt, layer):
        d.mkdir()
        user.chown(d)
    (mnt / "f").write_text("mine\n")
    user.chown(mnt / "f")
    os.chmod(utmp, 0o755)
    mounts.start("viewfs", "-o", "cow", layer, mnt, mountpoint=mnt, user=user)
    line = [m for m in _fuse_mounts() if m.split()[1] == str(mnt)]
    assert line and "allow_other" not in line[0].split()[3].split(","), line
    assert run(["cat", str(mnt / "f")], user=user).stdout == "mine\n"
    other = run(["cat", str(mnt / "f")], user=_nobody(), check=False)
    assert other.returncode != 0 and "Permission denied" in other.stderr, other
    with pytest.raises(PermissionError):
        os.listdir(mnt)  # root too: the kernel lets only the mounting user in
    # asking for it: fusermount3 refuses an unprivileged user unless /etc/fuse.conf says
    # user_allow_other
    conf = Path("/etc/fuse.conf").read_text() if Path("/etc/fuse.conf").exists() else ""
    allowed = any(line.strip() == "user_allow_other" for line in conf.splitlines())
    mnt2 = utmp / "mnt2"
    mnt2.mkdir()
    user.chown(mnt2)
    r = run([viewos_bin("viewfs"), "-o", "cow,allow_other", str(layer), str(mnt2)], user=user,
            check=False)
    try:
        if allowed:
            assert r.returncode == 0
            assert run(["ls", str(mnt2)], user=_nobody(), check=False).returncode == 0
        else:
            assert r.returncode != 0, "allow_other was granted without user_allow_other"
            assert not [m for m in _fuse_mounts() if m.split()[1] == str(mnt2)]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt2)], capture_output=True)


def test_a_hand_edited_layer_cannot_reach_outside_the_original(user, utmp, mounts):
    """The layer is the user's to edit: a `redirect` record (a renamed directory's original)
    that climbs out with .., or goes through a symlink of the original, must not show anything
    outside MOUNTPOINT's original tree: EIO (a corrupt record), never /etc's entries."""
    mnt, layer = utmp / "mnt", utmp / "layer"
    (mnt / "inside").mkdir(parents=True)
    (mnt / "inside" / "f").write_text("inside\n")
    os.symlink("/etc", mnt / "sl")
    for name, redirect in [("up", "/../../../etc"), ("viasymlink", "/sl"),
                           ("viasymlink2", "/sl/ssh"), ("fine", "/inside")]:
        (layer / name).mkdir(parents=True)
        (layer / ".-").mkdir(exist_ok=True)
        (layer / ".-" / (name + "\x7f")).write_text(f"redirect={redirect}\n")
    subprocess.run(["chown", "-R", "-h", f"{user.uid}:{user.gid}", str(mnt), str(layer)],
                   check=True)
    mounts.start("viewfs", "-o", "cow", layer, mnt, mountpoint=mnt, user=user)
    r = run(["/usr/bin/python3", "-c", "import os, sys\n"
             "for n in ('up', 'viasymlink', 'viasymlink2', 'fine'):\n"
             "    try:\n"
             "        print(n, sorted(os.listdir(os.path.join(sys.argv[1], n))))\n"
             "    except OSError as e:\n"
             "        print(n, e.strerror)\n", str(mnt)], user=user)
    seen = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert seen["fine"] == "['f']", seen  # a proper redirect does work
    etc = set(os.listdir("/etc"))
    for name in ("up", "viasymlink", "viasymlink2"):
        shown = seen[name]
        assert not any(f"'{e}'" in shown for e in etc), f"{name} shows /etc: {shown}"
