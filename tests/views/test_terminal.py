"""The terminal passes through a view: an interactive shell (the user's login shell, the default
command) on a pseudo-terminal, with Ctrl-C, job control (Ctrl-Z, bg jobs) and its exit status;
`viewfs --enter PID` without a command starts the user's shell in the view the same way."""
import fcntl
import os
import pwd
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import User, run, sanitizer_env, viewos_bin
from views_lib import layer_dir, popen_view, wait_for


class Pty:
    def __init__(self, argv, env):
        self.master, slave = os.openpty()

        def take_terminal():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     preexec_fn=take_terminal, close_fds=True)
        os.close(slave)
        self.seen = ""

    def send(self, text):
        os.write(self.master, text.encode())

    def expect(self, text, timeout=20):
        end = time.monotonic() + timeout
        while text not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail(f"{text!r} not seen on the terminal; got:\n{self.seen}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if not data:
                    pytest.fail(f"terminal closed before {text!r}; got:\n{self.seen}")
                self.seen += data.decode(errors="replace")
        # consume up to the match, so that the next expect looks at newer output
        self.seen = self.seen[self.seen.index(text) + len(text):]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self.master)


def wait_for_job(user, cmdline):
    """Until a process of the user runs exactly cmdline (the shell has started the job): a
    keystroke sent before would reach the shell, not the job. 30 s is a watchdog."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if subprocess.run(["pgrep", "-u", str(user.uid), "-x", "-f", cmdline],
                          stdout=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"the shell did not start {cmdline!r}")


def test_interactive_shell_with_ctrl_c_job_control_and_exit_status(user, utmp):
    layer = layer_dir(user, utmp / "layer")
    env = sanitizer_env(user.env())
    env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", TERM="dumb", PS1="vp$ ")
    argv = user.wrap([viewos_bin("viewfs"), "-o", "mincow,except=/tmp,vstat", str(layer), "/"])
    t = Pty(argv + [], env)
    try:
        # the default command is the user's login shell (bash), interactive, as the view's root
        t.send("echo I-AM $(id -u) ON $(findmnt -no FSTYPE --mountpoint /)\n")
        t.expect("I-AM 0 ON fuse.viewfs")
        # Ctrl-C reaches the foreground job, not the view
        t.send("sleep 30; echo NOT-INTERRUPTED\n")
        wait_for_job(user, "sleep 30")
        t.send("\x03")
        t.send("echo STATUS-$?\n")
        t.expect("STATUS-130")
        # Ctrl-Z stops the foreground job; the shell's job control knows it
        t.send("sleep 31\n")
        wait_for_job(user, "sleep 31")
        t.send("\x1a")
        t.expect("Stopped")
        t.send("jobs -l; kill -9 %1; echo KILLED\n")
        t.expect("KILLED")
        t.send("sleep 32 & echo BG-$!\n")
        t.expect("BG-")
        # until the job runs sleep: a forked child of the interactive shell ignores SIGTERM
        # until it has set up its signals, and a kill landing there was lost (the view then
        # waited out the sleep)
        wait_for_job(user, "sleep 32")
        t.send("jobs; kill %1\n")
        t.expect("Running")
        t.send("exit 5\n")
        assert t.proc.wait(timeout=30) == 5
    finally:
        t.close()


def test_the_default_command_is_the_users_login_shell(utmp):
    """A user whose login shell (pw_shell) is a script printing a marker: the view started
    without a command runs that script, in the view, as its root."""
    shell = Path("/var/tmp/viewos-views/vshell-login-shell")
    shell.parent.mkdir(mode=0o755, exist_ok=True)
    shell.write_text("#!/bin/sh\necho \"LOGIN-SHELL $0 uid=$(id -u) "
                     "root=$(findmnt -no FSTYPE --mountpoint /)\"\n")
    os.chmod(shell, 0o755)
    name = "viewos-vshell"
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        run(["useradd", "--system", "--no-create-home", "--shell", str(shell), name])
    assert pwd.getpwnam(name).pw_shell == str(shell)
    vshell = User(name)
    layer = utmp / "layer"
    layer.mkdir()
    vshell.chown(layer)
    env = sanitizer_env(vshell.env())
    t = Pty(vshell.wrap([viewos_bin("viewfs"), "-o", "mincow,except=/tmp,vstat", str(layer),
                         "/"]), env)
    try:
        t.expect(f"LOGIN-SHELL {shell} uid=0 root=fuse.viewfs")
        assert t.proc.wait(timeout=30) == 0
    finally:
        t.close()


def test_enter_without_a_command_runs_the_users_shell_in_the_view(user, utmp):
    layer = utmp / "layer"
    pidfile, done = utmp / "pid", utmp / "done"
    p = popen_view(user, layer, "/bin/sh", "-c",
                   f"echo only-in-view > /etc/viewos-enter-shell; echo $$ > {pidfile}.new; "
                   f"mv {pidfile}.new {pidfile}; while [ ! -e {done} ]; do sleep 0.05; done")
    try:
        wait_for(pidfile)
        env = sanitizer_env(user.env())
        env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", TERM="dumb", PS1="vp$ ")
        t = Pty(user.wrap([viewos_bin("viewfs"), "--enter", pidfile.read_text().strip()]), env)
        try:
            # typed on the terminal (echoed back as typed: only the shell's answer has the
            # file's content in it)
            t.send("echo ENTERED $(cat /etc/viewos-enter-shell) uid=$(id -u) "
                   "exe=$(readlink /proc/$$/exe)\n")
            shell = os.path.realpath(pwd.getpwnam(user.name).pw_shell)
            t.expect(f"ENTERED only-in-view uid=0 exe={shell}")
            t.send("exit 3\n")
            assert t.proc.wait(timeout=30) == 3
        finally:
            t.close()
        assert not Path("/etc/viewos-enter-shell").exists()
    finally:
        done.touch()
        p.communicate(timeout=30)
    assert p.returncode == 0
