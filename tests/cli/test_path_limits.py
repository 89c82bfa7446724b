"""Paths at the kernel's limits through `pivotbuild hash`: each entry that cannot be
reached is named with its error, the command exits 1, and nothing crashes (issue 11
hole 14: a directory whose path had 4,095 bytes made the core memcpy SIZE_MAX bytes)."""

from __future__ import annotations

import json
import os

import pytest
import xxhash

from tests.cli.conftest import run
from tests.test_tree import LONG_NAME, TOO_LONG, make_deep_dir

BACKENDS = [{}, {"PIVOTBUILD_PURE_PYTHON": "1"}]


@pytest.fixture
def project(tmp_path_factory):
    """A project outside tmp_path: the lock check every CLI test ends with globs tmp_path,
    and pathlib's glob cannot stat the paths past PATH_MAX these tests make."""
    root = tmp_path_factory.mktemp("limits") / "proj"
    root.mkdir()
    (root / "pivot.toml").write_text("")
    return root


@pytest.mark.parametrize("env", BACKENDS)
@pytest.mark.parametrize("length", [4094, 4095])
def test_hash_of_a_tree_reaching_path_max_names_each_entry_past_it(project, env, length):
    data = project / "data"
    data.mkdir()
    chain = make_deep_dir(data, length)  # holds d/x, f and a 255-byte name: none fits
    rel = os.fsdecode(os.fsencode(chain)[len(os.fsencode(project)) + 1:])
    result = run(["hash", "--json", "data"], project, env)
    assert result.code == 1, result.err
    doc = json.loads(result.out)
    assert doc["paths"] == []
    assert [(e["path"], e["error"]) for e in doc["errors"]] == [
        (f"{rel}/{name}", TOO_LONG) for name in ("d", "f", LONG_NAME)]
    plain = run(["hash", "data"], project, env)
    assert (plain.code, plain.out) == (1, "")
    assert plain.err.splitlines() == [f"pivotbuild: error: {rel}/{name}: {TOO_LONG}"
                                      for name in ("d", "f", LONG_NAME)]


@pytest.mark.parametrize("env", BACKENDS)
def test_hash_of_files_at_and_past_path_max(project, env):
    fits = f"{make_deep_dir(project, 4093)}/f"  # 4,095 bytes
    past = f"{make_deep_dir(project, 4094, 'b')}/f"  # 4,096 bytes
    result = run(["hash", fits, past], project, env)
    assert result.code == 1
    assert result.out == f"{xxhash.xxh3_128_hexdigest(b'x')}  {fits}\n"
    assert result.err == f"pivotbuild: error: {past}: {TOO_LONG}\n"
