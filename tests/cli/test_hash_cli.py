"""`pivotbuild hash`: xxhsum-compatible output, directory hashes, errors, memo, fallback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import run

BACKENDS = [{}, {"PIVOTBUILD_PURE_PYTHON": "1"}]


def _files(root: Path) -> list[str]:
    names = []
    for i, size in enumerate([0, 1, 17, 241, 4096, 70_000]):
        path = root / f"file {i}.bin"
        path.write_bytes(os.urandom(size))
        names.append(path.name)
    return names


@pytest.mark.parametrize("env", BACKENDS)
def test_output_is_exactly_xxhsum(project, env):
    names = _files(project)
    expected = subprocess.run(
        ["xxhsum", "-H2", *names], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    result = run(["hash", *names], project, env)
    assert result.code == 0
    assert result.out == expected
    assert result.err == ""


@pytest.mark.parametrize("env", BACKENDS)
def test_directory_and_files_in_given_order(project, env):
    (project / "data" / "sub").mkdir(parents=True)
    (project / "data" / "sub" / "a").write_bytes(b"a")
    (project / "top").write_bytes(b"t")
    result = run(["hash", "top", "data", "./data/sub/a"], project, env)
    lines = result.out.splitlines()
    assert [line.split("  ")[1] for line in lines] == ["top", "data", "./data/sub/a"]
    assert lines[1].split("  ")[0].endswith(".dir")
    assert len(lines[1].split("  ")[0]) == 36
    assert lines[2].split("  ")[0] == "a96faf705af16834e6c632b61e964e1f"


def test_both_backends_agree_and_forced_fallback_is_silent(project):
    _files(project)
    (project / "d").mkdir()
    (project / "d" / "x").write_bytes(b"xyz")
    core = run(["hash", "d", "file 3.bin"], project)
    python = run(["hash", "d", "file 3.bin"], project, {"PIVOTBUILD_PURE_PYTHON": "1"})
    assert core.out == python.out
    assert python.err == ""


def test_missing_core_warns_once_and_still_hashes(project, tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pivotbuild._core':\n"
        "            raise ImportError('simulated: core not built')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    _files(project)
    expected = run(["hash", "file 2.bin", "file 5.bin"], project).out
    result = run(["hash", "file 2.bin", "file 5.bin"], project, {"PYTHONPATH": str(blocker)})
    assert result.code == 0
    assert result.out == expected
    assert result.err.count("warning") == 1
    assert "libxxhash-dev" in result.err


def test_errors_name_the_path_and_exit_1_after_hashing_the_rest(project, tmp_path):
    (project / "good").write_bytes(b"a")
    (project / "data").mkdir()
    (project / "data" / "escape").symlink_to(tmp_path)
    (project / "link-out").symlink_to(tmp_path)
    result = run(["hash", "missing", "data", "link-out", "good"], project)
    assert result.code == 1
    assert result.out == "a96faf705af16834e6c632b61e964e1f  good\n"
    errors = result.err.splitlines()
    assert errors == [
        "pivotbuild: error: missing: No such file or directory",
        "pivotbuild: error: data/escape: symlink points outside the project",
        "pivotbuild: error: link-out: symlink points outside the project",
    ]


def test_permission_denied_is_named(project):
    (project / "closed").write_bytes(b"secret")
    (project / "closed").chmod(0o600)
    if os.geteuid() == 0:
        os.chown(project / "closed", 65534, 65534)  # root without DAC override can't read it
    (project / "open").write_bytes(b"a")
    result = run(["hash", "--no-state", "closed", "open"], project, obey_permissions=True)
    assert result.code == 1
    assert result.out == "a96faf705af16834e6c632b61e964e1f  open\n"
    assert result.err == "pivotbuild: error: closed: Permission denied\n"


@pytest.mark.parametrize("env", BACKENDS)
def test_unreadable_entries_inside_a_directory_are_named(project, env):
    data = project / "data"
    (data / "closed").mkdir(parents=True)
    (data / "closed" / "f").write_bytes(b"1")
    (data / "secret").write_bytes(b"2")
    (data / "ok").write_bytes(b"3")
    for path, mode in [(data / "closed", 0o700), (data / "secret", 0o600)]:
        path.chmod(mode)
        if os.geteuid() == 0:
            os.chown(path, 65534, 65534)
    result = run(["hash", "--no-state", "data"], project, env, obey_permissions=True)
    assert result.code == 1
    assert result.out == ""
    assert result.err.splitlines() == [
        "pivotbuild: error: data/closed: Permission denied",
        "pivotbuild: error: data/secret: Permission denied",
    ]


def test_json_document(project):
    (project / "d").mkdir()
    (project / "d" / "f").write_bytes(b"12345")
    (project / "g").write_bytes(b"a")
    result = run(["hash", "--json", "d", "g", "nope"], project)
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["paths"][0]["path"] == "d" and doc["paths"][0]["nfiles"] == 1
    assert doc["paths"][0]["size"] == 5 and doc["paths"][0]["hash"].endswith(".dir")
    assert doc["paths"][1] == {"path": "g", "hash": "a96faf705af16834e6c632b61e964e1f",
                               "size": 1}
    assert doc["errors"] == [{"path": "nope", "error": "No such file or directory"}]


def test_memo_is_kept_inside_a_project_only(project, tmp_path):
    (project / "d").mkdir()
    (project / "d" / "f").write_bytes(b"1")
    assert run(["hash", "--no-state", "d"], project).code == 0
    assert not (project / ".pivotbuild").exists()
    assert run(["hash", "d"], project).code == 0
    assert (project / ".pivotbuild" / ".gitignore").is_file()
    assert any((project / ".pivotbuild" / "memo").iterdir())
    outside = tmp_path / "outside"
    (outside / "d").mkdir(parents=True)
    (outside / "d" / "f").write_bytes(b"1")
    same = run(["hash", "d"], outside)
    assert same.code == 0 and not (outside / ".pivotbuild").exists()
    # -C changes directory first, as make -C.
    assert run(["-C", str(project), "hash", "d"], tmp_path).out.split()[0] == same.out.split()[0]


def test_state_directory_is_not_part_of_the_root_hash(project):
    (project / "f").write_bytes(b"1")
    first = run(["hash", "."], project)
    second = run(["hash", "."], project)  # state.db now exists and has changed
    assert first.code == second.code == 0
    assert first.out == second.out


def test_version_and_module_entry_point(project):
    result = run(["--version"], project)
    assert result.code == 0 and "pivotbuild" in result.out
    assert run(["hash"], project).code == 2  # usage error: PATH required


def test_fast_path_and_click_agree(project):
    """`hash` skips click when the command line is plain (entry.py); anything
    else goes through click, with the same results and errors."""
    (project / "d").mkdir()
    (project / "d" / "f").write_bytes(b"1")
    fast = run(["hash", "-j", "2", "d"], project)
    via_click = run(["-v", "--version"], project)
    assert via_click.code == 0
    slow = run(["hash", "--jobs=2", "d"], project)  # '--jobs=2' is click's to parse
    assert fast.code == slow.code == 0 and fast.out == slow.out
    assert "Print '<hash>  <path>'" in run(["hash", "--help"], project).out
    assert run(["hash", "-j", "0", "d"], project).code == 2
    assert run(["hash", "--bogus", "d"], project).code == 2
    missing_dir = run(["-C", str(project / "nope"), "hash", "d"], project)
    assert missing_dir.code == 2 and "nope" in missing_dir.err
