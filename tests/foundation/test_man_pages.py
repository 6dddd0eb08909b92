"""The man pages (issue 9: one for every command, with every option, examples and exit codes).

For each of the eight pages in docs/man: groff formats it without a single warning (`groff -man
-ww -z`, the check `man --warnings` makes); it has an EXIT STATUS and an EXAMPLES section with
something in them; and every option the command accepts is in it. The options a daemon accepts
are read from the daemon itself and from its source: the `-o NAME` and dashed options its
`--help` prints (its own and the general ones every daemon takes), every name in its option
table (struct vo_opt, hidden compatibility aliases included: a user may meet them in an old
fstab), and `rw` for the daemons that write. For the nbdkit plugin, which has no --help of its
own without nbdkit, the keys its config callback accepts and the kinds it exports.

An option counts as documented when it appears as a word in the OPTIONS section, or in the
page's formatted parts elsewhere: a .TP tag, an argument of a font macro (.B, .BI, .BR, .I,
.IR ...), an .IP tag or inline \\fB/\\fI text; prose outside OPTIONS ("the mode of the file")
does not count."""
import re
import shutil
import subprocess

import pytest

from conftest import REPO, run, viewos_bin

MAN = REPO / "docs" / "man"
DAEMONS = {
    "viewfs": "viewfs/config.c",
    "umdev-mbr": "umdev/umdev-mbr.c",
    "umdev-ramdisk": "umdev/umdev-ramdisk.c",
    "umdev-null": "umdev/umdev-null.c",
    "umfuse-ext2": "fsmods/ext2/umfuse-ext2.c",
    "umfuse-fat": "fsmods/fat/umfuse-fat.c",
    "umfuse-iso9660": "fsmods/iso9660/umfuse-iso9660.c",
}
PLUGIN = ("nbdkit-umdev-plugin", "umdev/nbdkit-umdev-plugin.c")
WRITABLE = {"viewfs", "umdev-mbr", "umdev-ramdisk", "umfuse-ext2", "umfuse-fat"}
PAGES = sorted(DAEMONS) + [PLUGIN[0]]


def help_options(name):
    """The options `NAME --help` lists: -o names (without =VALUE) and dashed options."""
    text = run([viewos_bin(name), "--help"]).stdout
    found = set()
    for line in text.splitlines():
        if not line.startswith("    -"):
            continue
        column = re.split(r"\s{2,}", line.strip())[0]  # the option column
        found |= {m.split("=")[0] for m in re.findall(r"-o (\S+)", column)}
        found |= set(re.findall(r",\s+([a-z_]+)=", column))  # "-o fsname=NAME, subtype="
        found |= set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", column)) - {"-o"}
    # what the summary names as another way to call it (viewfs --enter PID)
    found |= set(re.findall(rf"{re.escape(name)} (--[a-z][\w-]*)", text))
    return found


def table_options(source):
    """Every name of the daemon's option table (struct vo_opt), hidden aliases included."""
    text = (REPO / source).read_text()
    return set(re.findall(r'\{\s*"([^"]+)",\s*VO_OPT_', text))


def plugin_options(source):
    """The keys nbdkit-umdev-plugin's config callback takes, and the kinds it exports."""
    text = (REPO / source).read_text()
    keys = set(re.findall(r'strcmp\(key, "([a-z_]+)"\) == 0', text)) - {"arg"}
    kinds = set(re.findall(r'strcmp\(value, "([a-z]+)"\) == 0', text))
    return keys | kinds


def accepted(page):
    if page == PLUGIN[0]:
        return plugin_options(PLUGIN[1])
    opts = help_options(page) | table_options(DAEMONS[page])
    if page in WRITABLE:
        opts.add("rw")
    return opts


def unescape(s):
    s = s.replace("\\-", "-").replace("\\(em", " ").replace("\\(en", " ").replace("\\e", "\\")
    s = re.sub(r"\\f(\[[^]]*\]|.)", " ", s)  # font changes
    s = re.sub(r"\\[&|^/,]", "", s)
    return s.replace('"', " ")


def formatted_parts(page_text):
    """The text of the page's tags, font-macro arguments and inline bold/italic spans."""
    parts = []
    lines = page_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith((".B", ".I", ".R")) and not line.startswith((".RS", ".RE")):
            parts.append(line.split(None, 1)[1] if " " in line else "")
        elif line.startswith(".IP ") or line.startswith(".TP") and i + 1 < len(lines):
            parts.append(line[4:] if line.startswith(".IP ") else lines[i + 1])
        parts += re.findall(r"\\f[BI](.*?)(?=\\f[RP]|\\f\[\]|$)", line)
    return unescape("\n".join(parts))


def documented(option, parts):
    return re.search(rf"(?<![A-Za-z0-9_-]){re.escape(option)}(?![A-Za-z0-9_])", parts) is not None


def sections(page_text):
    """{SECTION NAME: its source lines}"""
    out, current = {}, None
    for line in page_text.splitlines():
        m = re.match(r'\.SH\s+"?([^"]+)"?', line)
        if m:
            current = m[1].strip().upper()
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def lint(path):
    """groff's warnings for a page (all of them: -ww), formatted as man(1) would."""
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(path)],
                           capture_output=True, text=True)
    else:
        r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z",
                            str(path)], capture_output=True, text=True)
    return r.returncode, r.stderr


@pytest.mark.parametrize("page", PAGES)
def test_page_formats_without_warnings(page):
    rc, warnings = lint(MAN / f"{page}.1")
    assert rc == 0 and warnings == "", warnings


@pytest.mark.parametrize("page", PAGES)
def test_page_has_exit_status_and_examples(page):
    secs = sections((MAN / f"{page}.1").read_text())
    for name in ("EXIT STATUS", "EXAMPLES"):
        assert name in secs, f"{page}.1 has no {name} section (it has {sorted(secs)})"
        assert any(line.strip() and not line.startswith(".\\\"") for line in secs[name]), \
            f"{page}.1: {name} is empty"


@pytest.mark.parametrize("page", PAGES)
def test_page_documents_every_option_the_command_accepts(page):
    opts = accepted(page)
    assert len(opts) >= 5, f"found only {sorted(opts)}: the option parsers need fixing"
    text = (MAN / f"{page}.1").read_text()
    parts = formatted_parts(text) + "\n" + unescape("\n".join(sections(text).get("OPTIONS", [])))
    missing = sorted(o for o in opts if not documented(o, parts))
    assert not missing, f"{page}.1 does not document: {', '.join(missing)}"
