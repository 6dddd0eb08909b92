"""packaging/install-deps: idempotent and quick when everything is there (it then asks dpkg
only, and neither prints nor touches apt)."""
from conftest import REPO, run


def test_second_run_installs_nothing_and_says_nothing():
    run([REPO / "packaging" / "install-deps"], timeout=1800)  # whatever was missing is now in
    r = run([REPO / "packaging" / "install-deps"], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                         "APT_CONFIG": "/nonexistent"})
    # APT_CONFIG pointing nowhere would make any apt-get call fail: none happened
    assert r.stdout == "" and r.stderr == ""


def test_every_listed_package_exists_in_the_archive():
    """A typo in the package list would only show on a fresh machine; ask apt-cache now."""
    text = (REPO / "packaging" / "install-deps").read_text()
    lists = text.split('missing=""')[0]
    names = []
    for block in lists.split('"')[1::2]:
        names += block.split()
    assert len(names) > 30
    r = run(["apt-cache", "show", "--no-all-versions", *names], check=False)
    assert r.returncode == 0, r.stderr
