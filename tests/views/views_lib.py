"""Helpers of the views suite (a module the tests import, not a conftest.py: a second conftest
would shadow tests/conftest.py).

`view(user, layer, *cmd, opts=..., mountpoint="/")` runs `viewfs -o OPTS LAYER / -- CMD...` as
the unprivileged test user and returns the CompletedProcess. Views live in their own mount
namespaces: the host never sees their mounts, which the suite checks after each test."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run, sanitizer_env, viewos_bin


def layer_dir(user, layer):
    """The layer directory, made (owned by the user) when missing."""
    layer = Path(layer)
    if not layer.exists():
        layer.mkdir(parents=True)
        user.chown(layer)
    return layer


def view(user, layer, *cmd, opts="mincow,except=/tmp,vstat", mountpoint="/", check=True,
         timeout=120, input=None, env=None, make_layer=True):
    if make_layer:
        layer_dir(user, layer)
    argv = [viewos_bin("viewfs")]
    if opts:
        argv += ["-o", opts]
    argv += [str(layer), mountpoint, "--", *[str(c) for c in cmd]]
    return run(argv, user=user, check=check, timeout=timeout, input=input, env=env)


def sh(user, layer, script, **kw):
    return view(user, layer, "/bin/sh", "-c", script, **kw)


def popen_view(user, layer, *cmd, opts="mincow,except=/tmp,vstat", **kw):
    layer_dir(user, layer)
    argv = user.wrap([viewos_bin("viewfs"), "-o", opts, str(layer), "/", "--",
                      *[str(c) for c in cmd]])
    return subprocess.Popen(argv, env=sanitizer_env(user.env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for(path, timeout=30):
    end = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > end:
            pytest.fail(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


def fuse_lines():
    with open("/proc/mounts") as f:
        return [line for line in f if " fuse" in line.split(" ")[2][:4] or "fuse." in line]


def scratch_outside_tmp(user, name):
    """A directory the user owns outside /tmp (so that it is seen through viewfs, not through
    the except=/tmp bind)."""
    base = Path("/var/tmp/viewos-views")
    base.mkdir(mode=0o755, exist_ok=True)
    d = Path(subprocess.check_output(["mktemp", "-d", f"{base}/{name[:60]}.XXXXXX"],
                                     text=True).strip())
    os.chmod(d, 0o755)
    user.chown(d)
    return d


def remove(path):
    shutil.rmtree(path, ignore_errors=True)
