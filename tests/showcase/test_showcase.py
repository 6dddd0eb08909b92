"""The showcase is the project's main job (issue 9): it runs here, whole, as CI runs it, so it
never rots. showcase/run plays every step as an unprivileged user and checks each result; this
test checks that it exits 0, that every step of the summary says ok, and that nothing it
mounted is left behind. The daemons run on the suite's (sanitizer) build; their sanitizer
reports land in this test's log directory and fail it."""
import re
import subprocess

import pytest

from conftest import BUILD, REPO, fuse_mounts, sanitizer_env

STEPS = 7


# longer than the run's own 900 s bound, so that bound (with its output) is what a hang meets,
# not the global 300 s of pytest.ini
@pytest.mark.timeout(1200)
def test_showcase_runs_every_step_and_checks_it():
    before = fuse_mounts()
    env = sanitizer_env()
    env["VIEWOS_BUILD"] = str(BUILD)
    p = subprocess.run([str(REPO / "showcase" / "run"), "--no-build"], env=env,
                       capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    summary = re.findall(r"^\| (\d+) \| .* \| (ok|FAILED.*) \| [\d.]+ s \|$", out, re.M)
    assert [n for n, _ in summary] == [str(n) for n in range(1, STEPS + 1)], out[-6000:]
    failed = [(n, r) for n, r in summary if r != "ok"]
    assert not failed, out[-8000:]
    assert p.returncode == 0, out[-4000:]
    # every step checks something and says so
    assert out.count("  ✓ ") >= 12, out
    left = {mp for mp in fuse_mounts() - before if mp.startswith("/tmp/viewos-showcase.")}
    assert not left, f"the showcase left mounts behind: {left}"
