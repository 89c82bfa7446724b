"""depfile.py: Make-syntax depfiles from gcc (real ones, generated here), clang and nvcc."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pivotbuild.depfile import DepfileError, discovered, parse, parse_rules, read
from tests.cli.conftest import CPROJECT, cproject_generator


def _tool(name: str) -> str:
    """gcc and make are part of the environment these tests run in: fail, never skip."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is required by tests/test_depfile.py")
    return path


GCC = _tool("gcc")
MAKE = _tool("make")


def gcc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([GCC, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


# ---------------------------------------------------------------------------------------------
# The grammar, on hand-written depfiles
# ---------------------------------------------------------------------------------------------


def test_gcc_style_wrapped_lines_and_escapes() -> None:
    text = (b"build/a.o: src/a.c include/common.h inc\\ dir/sp\\ ace.h \\\n"
            b" weird\\#$$x.h /usr/include/stdio.h\n")
    assert parse(text) == ["src/a.c", "include/common.h", "inc dir/sp ace.h", "weird#$x.h",
                           "/usr/include/stdio.h"]


def test_phony_targets_from_mp_add_no_prerequisites() -> None:
    text = b"a.o: a.c a.h b.h\na.h:\nb.h:\n\n"
    rules = parse_rules(text)
    assert [(r.targets, r.prereqs) for r in rules] == [
        (("a.o",), ("a.c", "a.h", "b.h")), (("a.h",), ()), (("b.h",), ())]
    assert parse(text) == ["a.c", "a.h", "b.h"]


def test_crlf_line_endings_and_continuations() -> None:
    text = b"a.o: a.c \\\r\n  x\\ y.h \\\r\n  z.h\r\nz.h:\r\n"
    assert parse(text) == ["a.c", "x y.h", "z.h"]


def test_several_rules_several_targets_first_seen_order_without_duplicates() -> None:
    # nvcc: several targets, a space before ':', 4-space continuation lines, and the same
    # prerequisites again in a second rule (host and device passes).
    text = (b"kernel.o kernel.o.d : kernel.cu \\\n"
            b"    /usr/local/cuda/bin/../targets/x86_64-linux/include/cuda_runtime.h \\\n"
            b"    include/kern.h\n"
            b"kernel.o : kernel.cu \\\n    include/kern.h include/dev.h\n")
    rules = parse_rules(text)
    assert rules[0].targets == ("kernel.o", "kernel.o.d")
    assert [r.line for r in rules] == [1, 4]
    assert parse(text) == [
        "kernel.cu", "/usr/local/cuda/bin/../targets/x86_64-linux/include/cuda_runtime.h",
        "include/kern.h", "include/dev.h"]


def test_clang_make_escapes() -> None:
    # What clang writes for #include "a\b\#c\ d.h", "    .h", "$$.h" and "##.h": it doubles a
    # backslash before '#' or a space, and escapes '#' with a backslash, '$' with '$'.
    text = b"t.o: t.c \\\n  a\\b\\\\#c\\\\\\ d.h \\ \\ \\ \\ .h $$$$.h \\#\\#.h\n"
    assert parse(text) == ["t.c", "a\\b\\#c\\ d.h", "    .h", "$$.h", "##.h"]


def test_clang_nmake_quoted_names() -> None:
    # clang -MV quotes names with spaces, '#' or '$' and escapes nothing inside the quotes.
    text = b't.o: t.c "    .h" "$$.h" "##.h" \\\n  normal.h\n'
    assert parse(text) == ["t.c", "    .h", "$$.h", "##.h", "normal.h"]


@pytest.mark.parametrize(("text", "names"), [
    (b"t: a\\ b", ["a b"]),            # 1 backslash: escaped space
    (b"t: a\\\\ b", ["a\\", "b"]),     # 2: one backslash, then the name ends
    (b"t: a\\\\\\ b", ["a\\ b"]),      # 3: one backslash and a space
    (b"t: a\\\tb", ["a\tb"]),          # an escaped TAB
    (b"t: a\\b\\c.h", ["a\\b\\c.h"]),  # other backslashes are ordinary
    (b"t: a\\:b", ["a:b"]),            # an escaped ':'
    (b"t: a\\\\\n", ["a\\"]),          # 2 before a newline: one backslash, a real newline
    (b"t: a\\\\\\\nb", ["a\\", "b"]),  # 3 before a newline: one backslash, a continuation
    (b"t: C:/x.h C:\\y.h\n", ["C:/x.h", "C:\\y.h"]),  # drive letters: ':' then no space
    (b"t: a\"b c", ['a"b', "c"]),      # a '"' inside a name is ordinary
    (b"t: \xff\xfe.h", [os.fsdecode(b"\xff\xfe.h")]),  # any bytes survive
])
def test_backslashes_colons_and_bytes(text: bytes, names: list[str]) -> None:
    assert parse(text) == names


def test_comments_blank_lines_and_empty_files() -> None:
    assert parse(b"") == []
    assert parse(b"\n  \n\t\n") == []
    text = b"# a comment \\\n still the comment: x.h\n\na.o: a.c # b.h\n c.h: d.h\n"
    assert parse(text) == ["a.c", "d.h"]


def test_non_utf8_names_round_trip_to_the_same_bytes() -> None:
    name = parse(b"t: caf\xe9.h")[0]
    assert os.fsencode(name) == b"caf\xe9.h"


@pytest.mark.parametrize(("text", "line", "problem"), [
    (b"a.o a.c\n", 1, "no ':' after 'a.o'"),
    (b"a.o: a.c\nb.o:b.c\n", 2, "no ':' after 'b.o:b.c'"),
    (b": a.c\n", 1, "a ':' with no target before it"),
    (b"a.o: \\\r\n b.h \\\r\n c: d\n", 3, "a second ':' in one rule"),
    (b"a.o: a.c | dir\n", 1, "order-only prerequisites ('|')"),
    (b"a.o: $(CC)\n", 1, "a single '$'"),
    (b"a.o: a$\n", 1, "a single '$'"),
    (b'a.o: "a b\n', 1, "no closing '\"'"),
    (b'a.o: ""\n', 1, "an empty name"),
    (b"a.o: a.c\nb.o: b\x00c\n", 2, "a NUL byte"),
    (b"a.o: a.c \\\n b.h \\", 2, "ends in a line continuation"),
    (b"a.o: a.c # note \\", 1, "ends in a line continuation"),
])
def test_malformed_input_names_the_problem_and_line(text: bytes, line: int, problem: str) -> None:
    with pytest.raises(DepfileError) as info:
        parse(text)
    assert info.value.line == line
    assert problem in str(info.value)
    assert str(info.value).startswith(f"line {line}: ")
    assert isinstance(info.value, ValueError)


def test_read_names_the_file_and_passes_oserror(tmp_path: Path) -> None:
    good = tmp_path / "good.d"
    good.write_bytes(b"a.o: a.c b.h\n")
    assert read(good) == ["a.c", "b.h"]
    bad = tmp_path / "bad.d"
    bad.write_bytes(b"a.o: a.c\nnonsense\n")
    with pytest.raises(DepfileError, match=r"bad\.d: line 2: no ':' after 'nonsense'"):
        read(bad)
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "missing.d")


# ---------------------------------------------------------------------------------------------
# discovered(): project-relative, inside the root, not declared
# ---------------------------------------------------------------------------------------------


def test_discovered_normalises_filters_and_sorts(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    r = str(root)
    prereqs = [
        "src/a.c",                          # declared
        f"{r}/include/z.h",                 # absolute, inside
        "/usr/include/stdio.h",             # outside
        f"{r}/include/../include/b.h",      # absolute with '..'
        "src/net/../util/strbuf.h",         # relative with '..'
        "./include/z.h",                    # the same file again
        "../outside.h",                     # relative, escapes the root
        f"{r}/.pivotbuild/tmp/x.h",         # pivotbuild's own directory
        f"{r}",                             # the root itself
        f"{r}/gen/config.h",                # below a declared directory
        f"{tmp_path}/proj-sibling/x.h",     # a sibling whose name starts like the root's
    ]
    assert discovered(prereqs, root, ".", ["src/a.c", "gen"]) == [
        "include/b.h", "include/z.h", "src/util/strbuf.h"]


def test_discovered_resolves_relative_paths_against_the_wdir(tmp_path: Path) -> None:
    prereqs = ["main.c", "../include/x.h", "inc/y.h", "../../escape.h"]
    assert discovered(prereqs, tmp_path, "sub", ["sub/main.c"]) == [
        "include/x.h", "sub/inc/y.h"]


def test_discovered_accepts_the_root_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "include").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    prereqs = [f"{real}/include/a.h", f"{link}/include/b.h"]
    assert discovered(prereqs, link, ".", []) == ["include/a.h", "include/b.h"]
    assert discovered(prereqs, real, ".", []) == ["include/a.h"]


# ---------------------------------------------------------------------------------------------
# Real depfiles from gcc
# ---------------------------------------------------------------------------------------------


def _small_project(root: Path) -> None:
    files = {
        "src/main.c": '#include "common.h"\n#include "third party/vendor.h"\n'
                      '#include "odd#$name.h"\n#include "../src/local.h"\n#include <stdio.h>\n'
                      "int main(void) { return V + L; }\n",
        "src/local.h": "#define L 2\n",
        "include/common.h": '#include "inner.h"\n',
        "include/inner.h": "#define V 1\n",
        "include/third party/vendor.h": "/* vendor */\n",
        "include/odd#$name.h": "/* odd */\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


SMALL_HEADERS = ["include/common.h", "include/inner.h", "include/odd#$name.h",
                 "include/third party/vendor.h", "src/local.h"]


def test_gcc_mmd_mp_depfile_with_spaces_hash_and_dollar(tmp_path: Path) -> None:
    _small_project(tmp_path)
    (tmp_path / "build").mkdir()
    gcc("-Iinclude", "-MMD", "-MP", "-MF", "build/main.d", "-c", "src/main.c", "-o", "main.o",
        cwd=tmp_path)
    text = (tmp_path / "build/main.d").read_bytes()
    assert b"third\\ party" in text and b"odd\\#$$name" in text  # gcc escaped them
    names = parse(text)
    assert all((tmp_path / n).is_file() for n in names), names
    rules = parse_rules(text)
    assert rules[0].targets == ("main.o",)
    assert sorted(r.targets[0] for r in rules[1:]) == sorted(
        n for n in names if n != "src/main.c")  # -MP: one phony rule per header
    assert all(r.prereqs == () for r in rules[1:])
    assert discovered(names, tmp_path, ".", ["src/main.c"]) == SMALL_HEADERS


def test_gcc_absolute_paths_and_system_headers(tmp_path: Path) -> None:
    _small_project(tmp_path)
    # -MD (not -MMD) lists system headers too; absolute -I and source give absolute names.
    gcc(f"-I{tmp_path}/include", "-MD", "-MF", "abs.d", "-c", f"{tmp_path}/src/main.c",
        "-o", "main.o", cwd=tmp_path)
    names = read(tmp_path / "abs.d")
    assert any(n.startswith("/usr/") for n in names)
    assert all(Path(n).is_file() for n in names)
    assert discovered(names, tmp_path, ".", ["src/main.c"]) == SMALL_HEADERS
    # Run from a subdirectory (the stage's wdir) with relative paths: same answer.
    gcc("-I../include", "-MMD", "-MF", "rel.d", "-c", "main.c", "-o", "main.o",
        cwd=tmp_path / "src")
    names = read(tmp_path / "src/rel.d")
    assert discovered(names, tmp_path, "src", ["src/main.c"]) == SMALL_HEADERS


def test_gcc_several_targets_and_quoted_target(tmp_path: Path) -> None:
    _small_project(tmp_path)
    out = gcc("-Iinclude", "-MM", "-MT", "a.o", "-MT", "a.d", "-MQ", "$(weird) t.o",
              "src/main.c", cwd=tmp_path).stdout.encode()
    rules = parse_rules(out)
    assert len(rules) == 1
    assert out.startswith(b"a.o a.d $$(weird)\\ t.o: ")  # -MQ escapes '$' and the space
    assert rules[0].targets == ("a.o", "a.d", "$(weird) t.o")
    assert discovered(parse(out), tmp_path, ".", []) == sorted(["src/main.c", *SMALL_HEADERS])


# ---------------------------------------------------------------------------------------------
# tests/data/cproject: generated, builds with make -j2, and its depfiles match gcc -M
# ---------------------------------------------------------------------------------------------


GEN = cproject_generator()
OLD, NEWER = 1_000_000_000, 1_000_000_100  # fixed past mtimes: no sleeping, no clock skew


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_cproject_is_what_make_project_writes(tmp_path: Path) -> None:
    GEN.write(tmp_path)
    committed = _tree(CPROJECT)
    committed.pop("make_project.py")
    for junk in [k for k in committed if k.startswith(("build/", "bin/"))]:
        committed.pop(junk)  # a local `make` run in the checkout, not part of the project
    assert _tree(tmp_path) == committed
    sources = [k for k in committed if k.endswith(".c")]
    assert 20 <= len(committed) + 1 <= 40 and len(sources) == len(GEN.SOURCES)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project built once with make -j2 (gcc -MMD -MP depfiles)."""
    root = tmp_path_factory.mktemp("cproject")
    GEN.write(root)
    proc = subprocess.run([MAKE, "-j2"], cwd=root, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return root


def _obj(source: str) -> str:
    return "build/obj/" + source.removeprefix("src/").removesuffix(".c") + ".o"


def test_cproject_builds_with_make_j2(built: Path) -> None:
    app = subprocess.run([str(built / "bin/app")], capture_output=True, text=True, check=True)
    assert app.stdout == GEN.expected_output()
    assert subprocess.run([MAKE, "-q"], cwd=built, check=False).returncode == 0  # up to date


def test_cproject_header_sharing_patterns() -> None:
    inc = GEN.includers()
    assert inc["include/common.h"] == set(GEN.SOURCES)
    assert len(inc["include/pair.h"]) == 2
    assert inc["include/inner.h"] == inc["include/outer.h"]  # only through outer.h
    assert all(("inner.h", "include/inner.h") not in includes
               for includes, _ in GEN.SOURCES.values())
    assert inc[GEN.GENERATED] and inc["include/third party/vendor.h"]
    assert all(inc.values())  # every header has an includer


def _gcc_h_headers(root: Path, source: str) -> set[str]:
    """The project headers gcc -H reports reading: a listing independent of depfile syntax."""
    proc = gcc("-Iinclude", "-Isrc", "-Ibuild/gen", "-H", "-fsyntax-only", source, cwd=root)
    found: set[str] = set()
    for line in proc.stderr.splitlines():
        dots, _, name = line.partition(" ")
        if dots and set(dots) == {"."} and not name.startswith("/"):
            found.add(os.path.normpath(name))
    return found


def test_cproject_depfiles_name_exactly_the_includers_gcc_lists(built: Path) -> None:
    by_depfile: dict[str, set[str]] = {}
    by_gcc_m: dict[str, set[str]] = {}
    by_gcc_h: dict[str, set[str]] = {}
    for source in GEN.SOURCES:
        depfile = built / _obj(source).replace(".o", ".d")
        for header in discovered(read(depfile), built, ".", [source]):
            by_depfile.setdefault(header, set()).add(source)
        listed = gcc("-Iinclude", "-Isrc", "-Ibuild/gen", "-M", source, cwd=built).stdout
        for header in discovered(parse(listed.encode()), built, ".", [source]):
            by_gcc_m.setdefault(header, set()).add(source)
        for header in _gcc_h_headers(built, source):
            by_gcc_h.setdefault(header, set()).add(source)
    assert by_depfile == by_gcc_m == by_gcc_h == GEN.includers()


@pytest.mark.parametrize("header", sorted(GEN.includers()))
def test_cproject_make_rebuilds_exactly_the_includers(built: Path, header: str) -> None:
    for path in built.rglob("*"):
        if path.is_file():
            os.utime(path, (OLD, OLD))
    for path in [*(built / "build/obj").rglob("*.o"), built / "bin/app"]:
        os.utime(path, (NEWER, NEWER))
    os.utime(built / header, (NEWER + 10, NEWER + 10))
    proc = subprocess.run([MAKE, "-n"], cwd=built, capture_output=True, text=True, check=True)
    compiled = {word for line in proc.stdout.splitlines() if " -c " in line
                for word in line.split() if word.startswith("src/") and word.endswith(".c")}
    assert compiled == GEN.includers()[header]
