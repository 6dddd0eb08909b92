"""The viewos test harness: real daemons, real mounts, real tools.

What it gives every suite (components keep their tests in tests/<component>/):
  * `viewos_bin(name)` finds a built program in the build directory ($VIEWOS_BUILD, default
    ./build); a missing binary fails the test (it is never skipped).
  * the `mounts` fixture starts a daemon and returns once its mount is in /proc/self/mountinfo;
    at the end of the test it unmounts whatever is still mounted, waits for the daemon to exit,
    kills it on timeout, and fails the test if the daemon crashed, exited non-zero or printed a
    sanitizer report.
  * an autouse check fails any test that leaves a FUSE mount behind (and cleans it up), and any
    test during which a viewos program wrote an AddressSanitizer/UBSan report.
  * the `user` fixture: a real unprivileged account (viewos-test) and /dev/fuse usable by it.
    /dev/fuse is mode 0600 on the CI machine (0666 on a normal Debian): the fixture chmods it
    to 0666 so that an ordinary user can mount, as on a stock system.
  * image makers that call the real tools: mkfs.ext2/3/4, mkfs.vfat, xorriso.
"""
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("VIEWOS_BUILD", REPO / "build")).resolve()
SANITIZER_LOGS = Path(os.environ.get("VIEWOS_SANITIZER_LOGS", "/tmp/viewos-sanitizer-logs"))

# Every program the tests start gets SIGHUP, SIGINT and SIGQUIT at their default dispositions.
# A suite started under nohup (SIGHUP ignored) or as a background job of a non-interactive
# shell (`cmd &`: SIGINT and SIGQUIT ignored) would hand the daemons ignored signals, which they
# rightly keep ignoring, as libfuse does: the tests that end a daemon with such a signal would
# then fail for the caller's setting, not the daemon's behaviour. SIGINT gets Python's own
# handler back (so ^C still stops pytest); a handler becomes the default in an exec'ed child.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
TEST_USER = "viewos-test"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer")


# --------------------------------------------------------------------------- programs

# Per-test state set by the autouse fixture: where this test's programs write sanitizer reports
# (a directory per test, so that suites running at the same time never see each other's).
_current = {"sanitizer_logs": SANITIZER_LOGS}

_bin_cache = {}


def viewos_bin(name):
    """Absolute path of a program built by meson (searched under the build directory)."""
    if name not in _bin_cache:
        found = None
        for path in BUILD.rglob(name):
            if path.is_file() and os.access(path, os.X_OK) and path.parent.name != "meson-private":
                found = path
                break
        if found is None:
            pytest.fail(f"{name} is not built in {BUILD} (run meson/ninja first)")
        _bin_cache[name] = str(found)
    return _bin_cache[name]


def sanitizer_env(env=None):
    """Environment for a viewos program: sanitizer reports go to files we check after each test
    (detached daemons have no stderr), and a report is fatal."""
    env = dict(os.environ if env is None else env)
    logs = _current["sanitizer_logs"]
    env["ASAN_OPTIONS"] = (f"log_path={logs}/asan:detect_leaks=1:abort_on_error=0:"
                           "allow_user_segv_handler=1")
    env["UBSAN_OPTIONS"] = f"log_path={logs}/ubsan:print_stacktrace=1:halt_on_error=1"
    env["LSAN_OPTIONS"] = "suppressions=" + str(REPO / "tests" / "lsan.supp")
    return env


def run(cmd, check=True, user=None, timeout=120, input=None, env=None, cwd=None, binary=False):
    """Run a command (as `user` when given), capture its output, and fail the test with the
    output on an unexpected status. Returns the CompletedProcess."""
    cmd = [str(c) for c in cmd]
    if user is not None:
        cmd = user.wrap(cmd)
        env = user.env(env)
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                          env=sanitizer_env(env), cwd=cwd, text=not binary)
    if check and proc.returncode != 0:
        pytest.fail(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                    f"stdout: {proc.stdout!r}\nstderr: {proc.stderr!r}")
    return proc


# --------------------------------------------------------------------------- users

class User:
    """A real account. `wrap` turns a command into one run with its ids (setpriv)."""

    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir

    def wrap(self, cmd):
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"] + cmd

    def env(self, env=None):
        env = dict(os.environ if env is None else env)
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name)
        return env

    def chown(self, path):
        os.chown(path, self.uid, self.gid)

    def __repr__(self):
        return f"User({self.name}, uid={self.uid})"


ROOT_USER = None  # run(..., user=None) means "as root"


@pytest.fixture(scope="session")
def user():
    """An unprivileged account that can use FUSE (see the module docstring about /dev/fuse)."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER], check=True)
    st = os.stat("/dev/fuse")
    if st.st_mode & 0o777 != 0o666:
        os.chmod("/dev/fuse", 0o666)
    return User(TEST_USER)


@pytest.fixture
def utmp(user, tmp_path_factory, request):
    """A fresh directory owned by the unprivileged user, on a path the user can reach."""
    base = Path("/tmp/viewos-tests")
    base.mkdir(mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    name = request.node.name.replace("/", "_")[:80]
    d = Path(subprocess.check_output(["mktemp", "-d", f"{base}/{name}.XXXXXX"], text=True).strip())
    os.chmod(d, 0o755)
    user.chown(d)
    yield d
    subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)


@pytest.fixture
def rtmp(tmp_path):
    """A fresh directory for root-only tests (pytest's tmp_path)."""
    return tmp_path


# --------------------------------------------------------------------------- mounts

def mounted_at(path):
    """The mountinfo line of the topmost mount at path, or None."""
    path = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].encode().decode("unicode_escape")
            if mp == path:
                found = line
    return found


def fuse_mounts():
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1].startswith("fuse"):
                out.add(fields[4])
    return out


def force_unmount(path):
    subprocess.run(["umount", "-l", path], capture_output=True)
    subprocess.run(["fusermount3", "-uz", path], capture_output=True)


class MountError(Exception):
    pass


class Mount:
    """A running daemon and its mount point."""

    def __init__(self, argv, mountpoint, user, proc, log):
        self.argv, self.mountpoint, self.user, self.proc, self.log = argv, str(mountpoint), user, proc, log
        self.unmounted = False

    @property
    def path(self):
        return Path(self.mountpoint)

    def stderr(self):
        return Path(self.log).read_text(errors="replace") if self.log else ""

    def unmount(self, timeout=30, expect_status=0):
        """fusermount3 -u (as the mounting user), then wait for the daemon to exit."""
        if self.unmounted:
            return
        self.unmounted = True
        cmd = ["fusermount3", "-u", self.mountpoint]
        r = run(cmd, check=False, user=self.user)
        if r.returncode != 0 and mounted_at(self.mountpoint):
            time.sleep(0.2)  # a process may still be leaving the mount
            r = run(cmd, check=False, user=self.user)
        if r.returncode != 0 and mounted_at(self.mountpoint):
            force_unmount(self.mountpoint)
            raise MountError(f"cannot unmount {self.mountpoint}: {r.stderr.strip()}")
        self.wait(timeout, expect_status)

    def wait(self, timeout=30, expect_status=0):
        if self.proc is None:
            return
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise MountError(f"{self.argv[0]} did not exit within {timeout}s after unmount\n"
                             + self.stderr())
        if expect_status is not None and status != expect_status:
            raise MountError(f"{' '.join(self.argv)} exited with {status}\n{self.stderr()}")

    def kill(self, sig=signal.SIGKILL):
        """Kill the daemon (crash tests); the mount is left for unmount() to clean up."""
        self.proc.send_signal(sig)
        self.proc.wait(30)


class Mounts:
    """Starts daemons in the foreground (-f) under our control and cleans them all up."""

    def __init__(self, logdir):
        self.logdir = Path(logdir)
        self.active = []

    def start(self, name, *args, mountpoint, user=None, timeout=20, env=None, foreground=True):
        """Run `name args...` whose mount appears at mountpoint; return a Mount once it is
        mounted. Raises MountError (with the daemon's stderr) when it exits or times out."""
        argv = [viewos_bin(name), *[str(a) for a in args]]
        if foreground:
            argv.insert(1, "-f")
        log = self.logdir / f"{name}-{len(self.active)}.log"
        cmd = user.wrap(argv) if user else argv
        with open(log, "w") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                    env=sanitizer_env(user.env(env) if user else env),
                                    start_new_session=True)
        m = Mount(argv, mountpoint, user, proc, log)
        if not foreground:
            status = proc.wait(timeout)
            m.proc = None
            if status != 0:
                raise MountError(f"{' '.join(argv)} exited with {status}: {m.stderr()}")
        deadline = time.monotonic() + timeout
        while not mounted_at(mountpoint):
            if m.proc is not None and m.proc.poll() is not None:
                raise MountError(f"{' '.join(argv)} exited with {m.proc.returncode}: {m.stderr()}")
            if time.monotonic() > deadline:
                if m.proc is not None:
                    m.proc.kill()
                    m.proc.wait()
                raise MountError(f"{' '.join(argv)} did not mount {mountpoint} within {timeout}s:"
                                 f" {m.stderr()}")
            time.sleep(0.02)
        self.active.append(m)
        return m

    def cleanup(self):
        errors = []
        for m in reversed(self.active):
            try:
                m.unmount()
            except MountError as e:
                errors.append(str(e))
            if m.proc is not None and m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait()
            text = m.stderr()
            if any(marker in text for marker in SANITIZER_MARKERS):
                errors.append(f"sanitizer report from {m.argv[0]}:\n{text}")
        self.active.clear()
        return errors


@pytest.fixture
def mounts(tmp_path_factory):
    mgr = Mounts(tmp_path_factory.mktemp("daemon-logs"))
    yield mgr
    errors = mgr.cleanup()
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture(autouse=True)
def _no_leftovers(request, tmp_path_factory):
    """Fail a test that leaves a FUSE mount behind or makes a viewos program report a
    sanitizer error; clean up either way so the next test starts clean.

    Only what belongs to this test counts: mounts under this session's pytest directory or this
    test's utmp directories, and reports in this test's own log directory. So suites that run
    at the same time (pytest-xdist, or two engineers on one machine) never fail each other."""
    SANITIZER_LOGS.mkdir(mode=0o1777, exist_ok=True)
    os.chmod(SANITIZER_LOGS, 0o1777)
    logdir = Path(subprocess.check_output(
        # ASAN_OPTIONS splits on ':' (and the path must be a plain word): keep the name safe
        ["mktemp", "-d", f"{SANITIZER_LOGS}/{re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name)[:60]}.XXXXXX"],
        text=True).strip())
    os.chmod(logdir, 0o1777)
    _current["sanitizer_logs"] = logdir
    mine = (str(tmp_path_factory.getbasetemp()) + "/",
            f"/tmp/viewos-tests/{request.node.name.replace('/', '_')[:80]}.")
    before_mounts = fuse_mounts()
    yield
    _current["sanitizer_logs"] = SANITIZER_LOGS
    problems = []
    # Daemons started by the `mounts` fixture are cleaned by it first (it is torn down before
    # this fixture because it is requested later).
    left = {mp for mp in fuse_mounts() - before_mounts if mp.startswith(mine)}
    for mp in sorted(left, key=len, reverse=True):
        force_unmount(mp)
    if left:
        problems.append(f"FUSE mounts left behind: {sorted(left)}")
    for log in sorted(logdir.iterdir()):
        problems.append(f"sanitizer report {log}:\n{log.read_text(errors='replace')[:6000]}")
    if problems:
        pytest.fail("\n".join(problems))
    subprocess.run(["rm", "-rf", str(logdir)], check=False)


# --------------------------------------------------------------------------- images and trees

def make_ext(path, fstype="ext4", size="64M", blocksize=None, features=None, extra=(),
             owner=None):
    """A real ext2/3/4 image made by mke2fs. owner=User makes its root directory theirs."""
    path = str(path)
    subprocess.run(["truncate", "-s", str(size), path], check=True)
    cmd = [f"mkfs.{fstype}", "-F", "-q"]
    if blocksize:
        cmd += ["-b", str(blocksize)]
    if features:
        cmd += ["-O", features]
    if owner is not None:
        cmd += ["-E", f"root_owner={owner.uid}:{owner.gid}"]
    cmd += [*extra, path]
    subprocess.run(cmd, check=True, capture_output=True)
    if owner is not None:
        owner.chown(path)
    return path


def make_fat(path, fat=32, size="64M", cluster_sectors=None, label=None, extra=(), owner=None):
    """A real FAT12/16/32 image made by mkfs.vfat (size "1440K" makes a floppy)."""
    path = str(path)
    if os.path.exists(path):
        os.unlink(path)
    subprocess.run(["truncate", "-s", str(size), path], check=True)
    cmd = ["mkfs.vfat", "-F", str(fat)]
    if cluster_sectors:
        cmd += ["-s", str(cluster_sectors)]
    if label:
        cmd += ["-n", label]
    cmd += [*extra, path]
    subprocess.run(cmd, check=True, capture_output=True)
    if owner is not None:
        owner.chown(path)
    return path


def make_iso(path, srcdir, args=("-R", "-J"), owner=None):
    """An ISO 9660 image of srcdir made by xorriso -as mkisofs with the given options."""
    path = str(path)
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", *args, "-o", path, str(srcdir)],
                   check=True, capture_output=True)
    if owner is not None:
        owner.chown(path)
    return path


def make_tree(root, nfiles=200, seed=1, symlinks=True, hardlinks=True, unicode=True):
    """A deterministic sample tree: nested directories, small and medium files, long names
    (up to 255 bytes), UTF-8 names, names that differ only in case, symlinks and hard links.
    Returns root."""
    import random
    rnd = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root]
    for i in range(max(3, nfiles // 20)):
        d = rnd.choice(dirs) / f"dir{i:03d}"
        d.mkdir(exist_ok=True)
        dirs.append(d)
    names = []
    for i in range(nfiles):
        d = rnd.choice(dirs)
        kind = rnd.random()
        if kind < 0.05:
            name = ("long-" + "x" * 250)[:251] + f"{i:04d}"  # 255 bytes
        elif kind < 0.10 and unicode:
            name = f"été-наш-日本-{i}.txt"
        elif kind < 0.13:
            name = f"Case{i}.TXT"
        else:
            name = f"file{i:04d}.dat"
        p = d / name
        size = rnd.choice([0, 1, 100, 511, 512, 4095, 4096, 4097, 65536, 200_000])
        p.write_bytes(rnd.randbytes(size))
        names.append(p)
    if unicode:
        (root / "MiXeD").write_bytes(b"upper")
        (root / "mixed-2").write_bytes(b"lower")
    if symlinks:
        (root / "link-rel").symlink_to(names[0].relative_to(root))
        (root / "link-dangling").symlink_to("does/not/exist")
        (root / "link-long").symlink_to("a" * 200 + "/" + "b" * 200)
    if hardlinks:
        os.link(names[1], root / "hardlink-of-1")
    return root


def tree_digest(root, owners=True, times=True):
    """{relative path: (type, mode, [uid, gid], [mtime], size, content-or-target)} of a tree,
    for comparing two trees or a tree before and after a test."""
    import hashlib
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            key = [oct(st.st_mode)]
            if owners:
                key += [st.st_uid, st.st_gid]
            if times and not p.is_dir():
                key += [st.st_mtime_ns]
            if p.is_symlink():
                key += [os.readlink(p)]
            elif p.is_file():
                key += [st.st_size, hashlib.sha256(p.read_bytes()).hexdigest()]
            out[rel] = tuple(key)
    return out


def diff_r(a, b):
    """`diff -r --no-dereference` between two trees; returns its output ('' if equal)."""
    r = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True,
                       text=True)
    return r.stdout + r.stderr


# --------------------------------------------------------------------------- skips in CI

# In CI (CI=true) a skipped test fails the run: a skip is a behaviour left unchecked, and pytest
# would otherwise exit 0 with it. The one exception is a test that needs what CI may lack
# through no fault of the project (the network): its skip reason starts with this prefix, e.g.
# pytest.skip("network: deb.debian.org:80 is not reachable from this machine").
ALLOWED_SKIP_PREFIX = "network:"
_ci_skips = []


def _skip_reason(report):
    lr = report.longrepr
    reason = lr[2] if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return reason.removeprefix("Skipped: ")


def _note_skip(report):
    if os.environ.get("CI") != "true" or not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        _ci_skips.append((report.nodeid, f"xfail: {report.wasxfail}"))
        return
    reason = _skip_reason(report)
    if not reason.startswith(ALLOWED_SKIP_PREFIX):
        _ci_skips.append((report.nodeid, reason))


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if _ci_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _ci_skips:
        terminalreporter.section("skipped tests fail the run in CI (CI=true)", red=True)
        for nodeid, reason in _ci_skips:
            terminalreporter.line(f"{nodeid}: {reason}")
