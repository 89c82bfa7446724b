"""store/registry.py: which projects share a cache directory."""

from __future__ import annotations

import json
from pathlib import Path

from pivotbuild.store.registry import Registry


def make_project(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "pivot.toml").write_text("")
    return path


def test_register_is_idempotent_and_lists_live_projects(tmp_path: Path):
    registry = Registry(tmp_path / "cache" / "projects")
    assert registry.projects() == []  # no directory yet
    a, b = make_project(tmp_path / "a"), make_project(tmp_path / "b")
    registry.register(a)
    registry.register(tmp_path / "b" / ".." / "a")  # the same root, spelled otherwise
    registry.register(b)
    entries = sorted((tmp_path / "cache" / "projects").iterdir())
    assert len(entries) == 2 and all(e.suffix == ".json" for e in entries)
    assert {json.loads(e.read_text())["root"] for e in entries} == {str(a), str(b)}
    assert sorted(Registry(tmp_path / "cache" / "projects").projects()) == [a, b]


def test_a_project_that_is_gone_is_unregistered(tmp_path: Path):
    registry = Registry(tmp_path / "projects")
    a, b = make_project(tmp_path / "a"), make_project(tmp_path / "b")
    registry.register(a)
    registry.register(b)
    (b / "pivot.toml").unlink()
    assert registry.projects() == [a]
    assert len(list((tmp_path / "projects").iterdir())) == 1


def test_unreadable_entries_are_skipped(tmp_path: Path):
    registry = Registry(tmp_path / "projects")
    a = make_project(tmp_path / "a")
    registry.register(a)
    (tmp_path / "projects" / "junk.json").write_text("{not json")
    (tmp_path / "projects" / "other.json").write_text('{"no_root": 1}')
    assert registry.projects() == [a]
