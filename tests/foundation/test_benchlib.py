"""tests/bench/benchlib.py, the benchmark runner, on the smallest workload that uses all of it:
20 files and a 1 MiB sequential file on one target (a plain directory), one round. Nothing is
timed or compared: this only keeps the runner from rotting between benchmark runs."""
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "bench"))
import benchlib  # noqa: E402

SMALL = ["--repeat", "1", "--files", "20", "--size-mib", "1"]


@pytest.fixture
def bench(rtmp, monkeypatch):
    monkeypatch.setattr(benchlib, "CACHE", rtmp / "cache")  # the tree of 20 files goes here
    return rtmp


def test_every_workload_runs_on_a_native_directory_and_is_reported(bench, capsys):
    md = bench / "table.md"
    results = benchlib.main([benchlib.NativeDir()], "smoke", argv=[
        *SMALL, "--workdir", str(bench / "work"), "--markdown", str(md)])
    workloads = ["untar", "find_ls", "read_all", "seq_write", "seq_read", "rm_rf"]
    assert list(results) == ["native dir"]
    assert {w: len(v) for w, v in results["native dir"].items()} == {w: 1 for w in workloads}
    assert all(v[0] > 0 for v in results["native dir"].values())
    out = capsys.readouterr()
    table = out.out.splitlines()
    assert table[0].startswith("### smoke — ") and "20 files, 1 MiB sequential" in table[0]
    assert "| workload | native dir |" in table
    for w in workloads:
        row = [line for line in table if line.startswith(f"| {w} | ")]
        assert len(row) == 1 and row[0].endswith("(1.00×) |"), row
    assert "round 1/1 native dir: untar " in out.err
    assert md.read_text().strip() == out.out.strip()
    # the tree really was made and untarred: 20 files in the cached tarball, nothing left over
    import tarfile
    with tarfile.open(bench / "cache" / "tree-20.tar") as t:
        assert sum(m.isfile() for m in t.getmembers()) == 20
    assert not (bench / "work").exists()


def test_targets_without_the_reference_is_a_clear_error(bench):
    targets = [benchlib.NativeDir("ref"), benchlib.NativeDir("other")]
    with pytest.raises(SystemExit) as e:
        benchlib.main(targets, "t", reference="ref", argv=[*SMALL, "--targets", "other"])
    assert e.value.code == ("bench: --targets must include the reference target 'ref' "
                            "(every ratio is to it)")
    with pytest.raises(SystemExit) as e:
        benchlib.main(targets, "t", argv=[*SMALL, "--targets", "ref,typo"])
    assert e.value.code == "bench: unknown target typo; known: ref, other"
