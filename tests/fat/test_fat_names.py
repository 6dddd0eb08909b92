"""VFAT names through a real mount: 255-character UTF-8 long names, the characters FAT
forbids, case-preserving and case-insensitive lookups, names differing only in case, the 8.3
names made for them (checked with mtools: ~1..~9, ~10), the shortname= modes and the NT
lower-case flags, and code pages for short names."""
import errno
import os
import subprocess

import pytest

from conftest import make_fat, run
from fatlib import FAT, Image, assert_clean, fatvol, mtools  # noqa: F401


def short_names(img, path="::"):
    """{long name (or short name when there is none): short name} as mdir shows them."""
    out = mtools("mdir", "-i", img, path).stdout
    names = {}
    for line in out.splitlines()[3:]:
        if not line or line.startswith(" ") or line[:1] in ".":
            continue
        base, ext = line[0:8].rstrip(), line[9:12].rstrip()
        short = base + ("." + ext if ext else "")
        rest = line[13:]
        # the long name, when there is one, follows the date and time columns
        parts = rest.split()
        long = " ".join(parts[3:]) if len(parts) > 3 else None
        names[long or short] = short
    return names


def test_255_character_utf8_names(fatvol):
    v = fatvol(fat=32)
    name = ("é" * 100 + "日" * 100 + "x" * 55)  # 255 characters, 555 bytes of UTF-8
    assert len(name) == 255
    (v.path / name).write_bytes(b"long")
    assert os.listdir(v.path) == [name]
    assert (v.path / name.upper()).read_bytes() == b"long"
    with pytest.raises(OSError) as e:
        (v.path / (name + "y")).write_bytes(b"too long")
    assert e.value.errno == errno.ENAMETOOLONG
    emoji = "\U0001F600" * 127  # pairs of UTF-16 units: 254 units
    (v.path / emoji).mkdir()
    assert sorted(os.listdir(v.path)) == sorted([name, emoji])
    v.check()
    assert name in mtools("mdir", "-i", v.img, "::").stdout


# (ids without spaces or colons: the harness puts test names into ASAN_OPTIONS paths)
@pytest.mark.parametrize("bad", ['a*b', 'a?b', 'a<b', 'a>b', 'a|b', 'a"b', 'a:b', 'a\\b',
                                 'tab\there', 'trailing space '],
                         ids=["star", "question", "less", "greater", "bar", "quote", "colon",
                              "backslash", "tab", "trailing-space"])
def test_forbidden_names_are_einval(fatvol, bad):
    v = fatvol(fat=16, size="16M")
    (v.path / "ok.txt").write_bytes(b"stays")
    (v.path / "ok dir").mkdir()
    for make in (lambda p: p.write_bytes(b""), lambda p: p.mkdir(),
                 lambda p: os.rename(v.path / "ok.txt", p),     # a rename to it, as Linux vfat
                 lambda p: os.rename(v.path / "ok dir", p)):
        with pytest.raises(OSError) as e:
            make(v.path / bad)
        assert e.value.errno == errno.EINVAL
    assert sorted(os.listdir(v.path)) == ["ok dir", "ok.txt"]
    assert (v.path / "ok.txt").read_bytes() == b"stays"
    v.check()


@pytest.mark.parametrize("name", ["\U0001F600" * 128, "a" * 254 + "\U0001F600"],
                         ids=["128-emoji", "255-characters"])
def test_names_of_more_than_255_utf16_units_are_too_long(fatvol, name):
    """A long name holds 255 UTF-16 units: a character beyond the BMP takes two (a surrogate
    pair), so 255 characters can be too many. ENAMETOOLONG, as Linux vfat."""
    assert len(name.encode("utf-16-le")) // 2 == 256
    v = fatvol(fat=32)
    (v.path / "file").write_bytes(b"x")
    for make in (lambda p: p.write_bytes(b""), lambda p: p.mkdir(),
                 lambda p: os.rename(v.path / "file", p)):
        with pytest.raises(OSError) as e:
            make(v.path / name)
        assert e.value.errno == errno.ENAMETOOLONG
    fits = name[1:]  # one character less: 254 or 255 units, which fit
    os.rename(v.path / "file", v.path / fits)
    assert os.listdir(v.path) == [fits]
    v.check()


def test_legal_odd_names(fatvol):
    v = fatvol(fat=16, size="16M")
    names = ["a+b,c;d=e[f]", " leading space", ".hidden", "many.dots.in.name", "UPPER",
             "#$%&'()-@^_`{}~!", "наш файл", "été"]
    for n in names:
        (v.path / n).write_text(n)
    assert sorted(os.listdir(v.path)) == sorted(names)
    for n in names:
        assert (v.path / n).read_text() == n
    v.check()


def test_trailing_dots_are_dropped_as_linux_vfat(fatvol):
    v = fatvol(fat=16, size="16M")
    (v.path / "abc...").write_text("dots")
    assert os.listdir(v.path) == ["abc"]
    assert (v.path / "abc.").read_text() == "dots"
    v.check()


def test_case_preserved_and_lookups_ignore_case(fatvol):
    v = fatvol(fat=32)
    (v.path / "MixedCase.TXT").write_text("one")
    (v.path / "Dir").mkdir()
    (v.path / "DIR" / "Inner").write_text("two")
    assert os.listdir(v.path) == ["MixedCase.TXT", "Dir"] or \
        sorted(os.listdir(v.path)) == ["Dir", "MixedCase.TXT"]
    assert (v.path / "mixedcase.txt").read_text() == "one"
    assert (v.path / "MIXEDCASE.txt").read_text() == "one"
    assert (v.path / "dir" / "INNER").read_text() == "two"
    assert os.listdir(v.path / "dIr") == ["Inner"]
    st1, st2 = os.stat(v.path / "MixedCase.TXT"), os.stat(v.path / "mixedCASE.txt")
    assert st1.st_ino == st2.st_ino
    v.check()


def test_names_differing_only_in_case_are_one_file(fatvol, rtmp):
    v = fatvol(fat=32)
    (v.path / "Foo").write_text("first")
    with pytest.raises(FileExistsError):
        os.open(v.path / "foo", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with pytest.raises(FileExistsError):
        os.mkdir(v.path / "FOO")
    (v.path / "foo").write_text("second")  # O_CREAT|O_TRUNC opens the existing file
    assert os.listdir(v.path) == ["Foo"]
    assert (v.path / "Foo").read_text() == "second"
    # renaming to another case of the same name: the kernel sees one file (as Linux vfat)
    os.rename(v.path / "Foo", v.path / "FOO")
    assert os.listdir(v.path) == ["Foo"]
    # tar with both cases: one file survives, the file system stays sound
    src = rtmp / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "Readme").write_text("upper")
    (src / "d" / "readme").write_text("lower")
    run(["tar", "cf", rtmp / "t.tar", "-C", src, "d"])
    run(["tar", "xf", rtmp / "t.tar", "-C", v.path])
    assert len(os.listdir(v.path / "d")) == 1
    v.check()


def test_numeric_tails_go_past_nine(fatvol):
    v = fatvol(fat=32)
    for i in range(1, 12):
        (v.path / f"LongFileName{i}.txt").write_text(str(i))
    v.check()
    names = short_names(v.img)
    assert names["LongFileName1.txt"] == "LONGFI~1.TXT"
    assert names["LongFileName9.txt"] == "LONGFI~9.TXT"
    assert names["LongFileName10.txt"] == "LONGF~10.TXT"
    assert names["LongFileName11.txt"] == "LONGF~11.TXT"
    # the short name is a name too
    v.start()
    assert (v.path / "longf~10.txt").read_text() == "10"
    v.check()


def test_shortname_winnt_stores_lower_case_with_nt_flags(fatvol):
    v = fatvol(fat=16, size="16M", opts=("shortname=winnt",))
    (v.path / "readme.txt").write_text("nt")
    (v.path / "MAKEFILE.am").write_text("nt")
    (v.path / "MiXed.txt").write_text("needs a long name")
    v.check()
    out = mtools("mdir", "-i", v.img, "::").stdout
    # mtools shows NT-flagged names in their case and no long name column for them
    assert "readme   txt" in out and "readme.txt" not in out
    assert "MAKEFILE am " in out
    assert "MiXed.txt" in out
    # the default (mixed) writes a long name instead, as Linux does
    v.start()
    (v.path / "other.txt").write_text("mixed")
    v.check()
    out = mtools("mdir", "-i", v.img, "::").stdout
    assert "OTHER    TXT" in out and "other.txt" in out


def test_shortname_modes_change_how_short_names_show(fatvol, rtmp):
    img = make_fat(rtmp / "sn.img", fat=16, size="16M")
    mtools("mcopy", "-i", img, "/etc/hostname", "::UPPER.TXT")
    mtools("mcopy", "-i", img, "/etc/hostname", "::lower.txt")  # mtools: NT flags
    shown = {}
    for mode in ["mixed", "winnt", "lower", "win95"]:
        v = fatvol(img=img, opts=(f"shortname={mode}",))
        shown[mode] = sorted(os.listdir(v.path))
        v.unmount()
    assert shown["mixed"] == ["UPPER.TXT", "lower.txt"]
    assert shown["winnt"] == ["UPPER.TXT", "lower.txt"]
    assert shown["lower"] == ["lower.txt", "upper.txt"]
    assert shown["win95"] == ["LOWER.TXT", "UPPER.TXT"]


@pytest.mark.parametrize("codepage, short", [(850, b"\xb7       TXT"), (437, b"_~1     TXT")],
                         ids=["cp850", "cp437"])
def test_codepage_decides_short_names(fatvol, codepage, short):
    v = fatvol(fat=16, size="16M", opts=(f"codepage={codepage}",))
    (v.path / "À.txt").write_text("a grave")  # À is in code page 850, not in 437
    v.check()
    assert short in Image(v.img).read(*Image(v.img).root_dir())
    v.start((f"codepage={codepage}",))
    assert (v.path / "à.TXT").read_text() == "a grave"
    v.check()


def test_bad_lfn_checksum_shows_the_short_name(fatvol, rtmp):
    img = make_fat(rtmp / "lfn.img", fat=16, size="16M")
    mtools("mcopy", "-i", img, "/etc/hostname", "::A long name.txt")
    im = Image(img)
    off, size = im.root_dir()
    data = bytearray(im.read(off, size))
    lfns = [i for i in range(0, size, 32) if data[i] not in (0, 0xE5) and data[i + 11] == 0x0F]
    assert len(lfns) == 2  # 15 characters: two long-name entries
    for i in lfns:
        data[i + 13] ^= 0xFF  # their checksum no longer matches the short entry
    im.write(off, bytes(data))
    v = fatvol(img=img, opts=("ro",))
    assert os.listdir(v.path) == ["ALONGN~1.TXT"]
    assert (v.path / "ALONGN~1.TXT").read_bytes() == open("/etc/hostname", "rb").read()
    v.unmount()


@pytest.mark.parametrize("opt", ["iocharset=utf8", "utf8", "utf8=1"])
def test_utf8_charset_options_of_fstab_lines_are_accepted(fatvol, opt):
    """Linux vfat fstab lines often say iocharset=utf8 or utf8: names are UTF-8 here anyway."""
    v = fatvol(fat=16, size="16M", opts=(opt,))
    name = "été 日本 Ωμέγα.txt"
    (v.path / name).write_text("utf-8")
    assert os.listdir(v.path) == [name]
    v.check()
    assert name in mtools("mdir", "-i", v.img, "::").stdout
