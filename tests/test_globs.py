"""globs.py: SPEC §9 glob instances on real directory trees, and their stat signatures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pivotbuild.globs import (
    DirStamp,
    GlobError,
    GlobMatch,
    Pattern,
    expand,
    signature,
    unchanged,
    walk,
)

CPROJECT = Path(__file__).parent / "data" / "cproject"
OLD = 1_000_000_000  # a fixed past mtime (seconds), far outside the racy margin


def make(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def paths(root: Path, pattern: str, exclude: list[str] | None = None) -> list[str]:
    return [m.path for m in expand(root, pattern, exclude or [])]


def age_dirs(root: Path) -> None:
    """Set every directory's mtime to OLD, so that its stamp is not racy."""
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (OLD, OLD))


def test_spec_example_fields(tmp_path: Path) -> None:
    make(tmp_path, "src/net/io.c", "src/main.c", "src/net/io.h", "main.c")
    assert expand(tmp_path, "src/**/*.c") == [
        GlobMatch(path="src/main.c", name="main.c", stem="main", dir="src", key="main"),
        GlobMatch(path="src/net/io.c", name="io.c", stem="io", dir="src/net", key="net.io"),
    ]
    # No literal prefix: the key is the whole path. A root file's dir is ".".
    assert [(m.key, m.dir) for m in expand(tmp_path, "**/*.c")] == [
        ("main", "."), ("src.main", "src"), ("src.net.io", "src/net")]
    # A pattern with no wildcard at all matches that one file; its prefix is its directory.
    assert [(m.path, m.key) for m in expand(tmp_path, "src/net/io.c")] == [
        ("src/net/io.c", "io")]


def test_stems_and_keys_drop_only_the_last_extension(tmp_path: Path) -> None:
    make(tmp_path, "d/a.tar.gz", "d/.bashrc", "d/noext", "d/trail.")
    got = {m.name: (m.stem, m.key) for m in expand(tmp_path, "d/.*")}
    got.update({m.name: (m.stem, m.key) for m in expand(tmp_path, "d/*")})
    assert got == {"a.tar.gz": ("a.tar", "a.tar"), ".bashrc": (".bashrc", ".bashrc"),
                   "noext": ("noext", "noext"), "trail.": ("trail.", "trail.")}


def test_globstar_at_any_depth(tmp_path: Path) -> None:
    make(tmp_path, "a.c", "x/a.c", "x/y/a.c", "x/y/z/w/a.c", "x/y/z/w/b.h", "q/y/a.c")
    assert paths(tmp_path, "**/*.c") == ["a.c", "q/y/a.c", "x/a.c", "x/y/a.c", "x/y/z/w/a.c"]
    assert paths(tmp_path, "x/**/a.c") == ["x/a.c", "x/y/a.c", "x/y/z/w/a.c"]
    assert paths(tmp_path, "**/y/**/a.c") == ["q/y/a.c", "x/y/a.c", "x/y/z/w/a.c"]  # no dups
    assert paths(tmp_path, "**/**/y/*.c") == ["q/y/a.c", "x/y/a.c"]
    assert paths(tmp_path, "x/y/**") == ["x/y/a.c", "x/y/z/w/a.c", "x/y/z/w/b.h"]
    assert paths(tmp_path, "*/*/a.c") == ["q/y/a.c", "x/y/a.c"]
    assert paths(tmp_path, "nowhere/**/*.c") == []


def test_files_only(tmp_path: Path) -> None:
    make(tmp_path, "src/real.c")
    (tmp_path / "src/dir.c").mkdir()
    os.mkfifo(tmp_path / "src/fifo.c")
    assert paths(tmp_path, "src/*.c") == ["src/real.c"]
    assert paths(tmp_path, "src/**") == ["src/real.c"]
    assert paths(tmp_path, "src/dir.c") == []


def test_sorted_by_path_bytes(tmp_path: Path) -> None:
    make(tmp_path, "s/b.c", "s/B.c", "s/a/z.c", "s/a.c", "s/_.c", "s/\N{GRINNING FACE}.c")
    (tmp_path / os.fsdecode(b"s/\xff.c")).write_text("x")  # not UTF-8: a surrogate escape
    got = paths(tmp_path, "s/**/*.c")
    assert [os.fsencode(p) for p in got] == sorted(os.fsencode(p) for p in got)
    # Code point order would put the undecodable byte (U+DCFF) before the emoji (U+1F600).
    assert got == ["s/B.c", "s/_.c", "s/a.c", "s/a/z.c", "s/b.c", "s/\N{GRINNING FACE}.c",
                   os.fsdecode(b"s/\xff.c")]


def test_character_sets_and_single_characters(tmp_path: Path) -> None:
    make(tmp_path, *(f"c/{n}.c" for n in ["a", "b", "c", "d", "]", "*", "ab"]))
    assert paths(tmp_path, "c/[ab].c") == ["c/a.c", "c/b.c"]
    assert paths(tmp_path, "c/[a-c].c") == ["c/a.c", "c/b.c", "c/c.c"]
    assert paths(tmp_path, "c/[!a-c].c") == ["c/*.c", "c/].c", "c/d.c"]
    assert paths(tmp_path, "c/[^a-c].c") == ["c/*.c", "c/].c", "c/d.c"]
    assert paths(tmp_path, "c/[]].c") == ["c/].c"]
    assert paths(tmp_path, "c/[*].c") == ["c/*.c"]
    assert paths(tmp_path, "c/?.c") == ["c/*.c", "c/].c", "c/a.c", "c/b.c", "c/c.c", "c/d.c"]
    assert paths(tmp_path, "c/a*") == ["c/a.c", "c/ab.c"]


def test_excludes_by_name_and_by_path(tmp_path: Path) -> None:
    make(tmp_path, "src/a.c", "src/amalgam.c", "src/t/test_a.c", "src/vendor/v.c",
         "src/vendor/deep/w.c", "src/t/amalgam.c")
    assert paths(tmp_path, "src/**/*.c", ["amalgam.c", "test_*.c"]) == [
        "src/a.c", "src/vendor/deep/w.c", "src/vendor/v.c"]
    assert paths(tmp_path, "src/**/*.c", ["src/amalgam.c", "src/vendor/**"]) == [
        "src/a.c", "src/t/amalgam.c", "src/t/test_a.c"]
    assert paths(tmp_path, "src/**/*.c", ["src/*/*.c"]) == [
        "src/a.c", "src/amalgam.c", "src/vendor/deep/w.c"]


def test_dotfiles_need_a_literal_dot(tmp_path: Path) -> None:
    make(tmp_path, "s/a.c", "s/.hidden.c", "s/.h/in.c", "s/v/.x/deep.c", ".cfg/x.c",
         ".git/x.c", ".pivotbuild/x.c", "s/.git/y.c")
    assert paths(tmp_path, "s/*.c") == ["s/a.c"]
    assert paths(tmp_path, "s/?hidden.c") == []
    assert paths(tmp_path, "s/[.]hidden.c") == []
    assert paths(tmp_path, "s/**/*.c") == ["s/a.c"]  # ** never enters .h nor .x
    assert paths(tmp_path, "**") == ["s/a.c"]
    assert paths(tmp_path, "s/.*.c") == ["s/.hidden.c"]
    assert paths(tmp_path, "s/.h/*.c") == ["s/.h/in.c"]
    assert paths(tmp_path, "s/**/.x/*.c") == ["s/v/.x/deep.c"]
    # .git and .pivotbuild are never entered, even by a component that matches dot names.
    assert paths(tmp_path, ".*/*.c") == [".cfg/x.c"]
    assert paths(tmp_path, "s/.*/*.c") == ["s/.h/in.c"]


def test_symlinks_never_lead_out_of_the_project(tmp_path: Path) -> None:
    root, outside = tmp_path / "proj", tmp_path / "outside"
    make(root, "src/a.c", "lib/real.c")
    make(outside, "o.c", "dir/p.c")
    (root / "src/in.c").symlink_to(root / "lib/real.c")          # file inside: matched
    (root / "src/out.c").symlink_to(outside / "o.c")             # file outside: skipped
    (root / "src/dangling.c").symlink_to(root / "nope.c")        # dangling: skipped
    (root / "src/linkdir").symlink_to(root / "lib")              # dir inside: not entered
    (root / "src/outdir").symlink_to(outside / "dir")            # dir outside: not entered
    (root / "src/loop").symlink_to(root / "src")                 # a cycle: not entered
    assert paths(root, "src/**/*.c") == ["src/a.c", "src/in.c"]
    assert paths(root, "src/*/*.c") == []
    assert paths(root, "src/outdir/p.c") == []
    assert paths(root, "src/out.c") == []
    # The root itself may be reached through a symlink.
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    assert paths(alias, "src/**/*.c") == ["src/a.c", "src/in.c"]


def test_colliding_keys_are_an_error(tmp_path: Path) -> None:
    make(tmp_path, "src/a.c", "src/a.cc", "src/net/io.c", "src/net.io.c")
    with pytest.raises(GlobError, match=r"'src/a.c' and 'src/a.cc' both give the key 'a'"):
        expand(tmp_path, "src/a.c*")
    with pytest.raises(GlobError, match=r"'src/net.io.c' and 'src/net/io.c' both give the key "
                                        r"'net.io'"):
        expand(tmp_path, "src/**/*.c")
    assert [m.key for m in expand(tmp_path, "src/**/*.c*", ["a.cc", "net.io.c"])] == [
        "a", "net.io"]


@pytest.mark.parametrize(("pattern", "problem"), [
    ("", "empty"),
    ("/src/*.c", "absolute"),
    ("../x/*.c", "escapes the project root"),
    ("src/../../x.c", "escapes the project root"),
    ("src/", "ends in '/'"),
    ("src/a**.c", "'**' must be a whole path component"),
    ("src/**x/a.c", "'**' must be a whole path component"),
    ("src/[ab.c", "'[' without a closing ']'"),
    ("src/[]", "'[' without a closing ']'"),
    ("src/[z-a].c", "bad character set '[z-a]'"),
    ("src\\*.c", "backslashes are not allowed"),
    ("src/\0.c", "NUL"),
    (".git/*", "reaches into '.git'"),
    ("a/.pivotbuild/**", "reaches into '.pivotbuild'"),
    ("./.", "names the project root"),
])
def test_bad_patterns(tmp_path: Path, pattern: str, problem: str) -> None:
    with pytest.raises(GlobError, match=None) as info:
        expand(tmp_path, pattern)
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(GlobError):
        expand(tmp_path, "*.c", [pattern])  # the same rules for excludes


def test_dot_components_and_slashes_are_ignored(tmp_path: Path) -> None:
    make(tmp_path, "src/a.c")
    assert expand(tmp_path, "./src//./*.c") == expand(tmp_path, "src/*.c")
    assert Pattern("./src//./*.c").prefix == "src"


def test_pattern_match_agrees_with_the_walk(tmp_path: Path) -> None:
    shutil.copytree(CPROJECT, tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("build", "bin", "__pycache__"))
    make(tmp_path, ".hidden.c", "src/.x/y.c", "src/net/.io.c", "a.b/c.d", "src/net/io.c.in")
    every = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    for pattern in ["src/**/*.c", "**/*.h", "**", "*/*", "src/*/*.[ch]", "include/**",
                    "**/net/*", "src/**/deep/**/*.c", "*", "**/.*", "src/.*/*", "*.?/*",
                    "**/*.c*", "src/*/[!i]*.c", "**/net/**/*"]:
        compiled = Pattern(pattern)
        from_match = sorted((p for p in every if compiled.match(p)), key=os.fsencode)
        walked = [m.path for m in walk(tmp_path, pattern, check_keys=False).matches]
        assert walked == from_match, pattern
        assert walked, pattern


def test_cproject_sources_and_keys() -> None:
    got = {m.key: m.path for m in expand(CPROJECT, "src/**/*.c")}
    assert len(got) == 13
    assert got["main"] == "src/main.c"
    assert got["util.deep.nested.leaf"] == "src/util/deep/nested/leaf.c"
    assert got["net.io"] == "src/net/io.c"
    assert [m.path for m in expand(CPROJECT, "include/**/*.h", ["inner.h"])] == [
        "include/common.h", "include/outer.h", "include/pair.h",
        "include/third party/vendor.h"]


# ---------------------------------------------------------------------------------------------
# Stat signatures: what a glob depends on
# ---------------------------------------------------------------------------------------------


def test_stamps_are_the_directories_walked(tmp_path: Path) -> None:
    make(tmp_path, "src/a.c", "src/net/io.c", "docs/x.md", "src/.hid/h.c")
    result = walk(tmp_path, "src/**/*.c")
    assert [s.path for s in result.stamps] == ["src", "src/net"]  # not the root, docs, .hid
    assert all(s.mtime_ns > 0 and s.ino > 0 for s in result.stamps)
    assert signature(tmp_path, [s.path for s in result.stamps]) == result.stamps
    assert [s.path for s in walk(tmp_path, "*.c").stamps] == ["."]
    # A literal component after a wildcard: each candidate is stamped, missing or not.
    stamps = walk(tmp_path, "*/net/*.c").stamps
    assert [s.path for s in stamps] == [".", "docs", "docs/net", "src", "src/net"]
    assert stamps[2] == DirStamp("docs/net", -1, 0)


def test_a_new_deleted_or_renamed_file_changes_the_signature(tmp_path: Path) -> None:
    make(tmp_path, "src/a.c", "src/net/io.c", "docs/x.md")
    age_dirs(tmp_path)
    result = walk(tmp_path, "src/**/*.c")
    dirs = [s.path for s in result.stamps]
    assert unchanged(tmp_path, result.stamps, result.started_ns)

    make(tmp_path, "docs/y.md")  # not a walked directory: still unchanged
    assert unchanged(tmp_path, result.stamps, result.started_ns)

    make(tmp_path, "src/net/new.c")
    assert signature(tmp_path, dirs) != result.stamps
    assert not unchanged(tmp_path, result.stamps, result.started_ns)
    assert "src/net/new.c" in paths(tmp_path, "src/**/*.c")

    age_dirs(tmp_path)
    result = walk(tmp_path, "src/**/*.c")
    (tmp_path / "src/a.c").unlink()
    assert not unchanged(tmp_path, result.stamps, result.started_ns)

    age_dirs(tmp_path)
    result = walk(tmp_path, "src/**/*.c")
    (tmp_path / "src/net").rename(tmp_path / "src/net2")
    assert not unchanged(tmp_path, result.stamps, result.started_ns)
    assert "src/net2/io.c" in paths(tmp_path, "src/**/*.c")


def test_a_missing_directory_is_stamped_and_its_creation_noticed(tmp_path: Path) -> None:
    result = walk(tmp_path, "gen/sub/*.c")
    assert result.matches == []
    assert result.stamps == (DirStamp("gen/sub", -1, 0),)
    assert unchanged(tmp_path, result.stamps, result.started_ns)
    make(tmp_path, "gen/sub/a.c")
    assert not unchanged(tmp_path, result.stamps, result.started_ns)
    # A directory replaced by a symlink to one is "not a directory" for globs.
    make(tmp_path, "real/b.c")
    age_dirs(tmp_path)
    result = walk(tmp_path, "gen/sub/*.c")
    (tmp_path / "gen/sub/a.c").unlink()
    (tmp_path / "gen/sub").rmdir()
    (tmp_path / "gen/sub").symlink_to(tmp_path / "real")
    assert signature(tmp_path, ["gen/sub"]) == (DirStamp("gen/sub", -1, 0),)
    assert not unchanged(tmp_path, result.stamps, result.started_ns)
    assert paths(tmp_path, "gen/sub/*.c") == []


def test_a_recently_changed_directory_is_not_trusted(tmp_path: Path) -> None:
    make(tmp_path, "src/a.c")  # just created: its mtime is within the racy margin
    result = walk(tmp_path, "src/*.c")
    assert signature(tmp_path, ["src"]) == result.stamps
    assert not unchanged(tmp_path, result.stamps, result.started_ns)
    age_dirs(tmp_path)
    result = walk(tmp_path, "src/*.c")
    assert unchanged(tmp_path, result.stamps, result.started_ns)
