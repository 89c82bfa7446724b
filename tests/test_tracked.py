"""tracked.py: the .pvt format, finding records, the rules of what may be tracked, track()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pivotbuild import snapshot, tracked
from pivotbuild.config import load_project
from pivotbuild.errors import ConfigError, OperationError, UsageError
from pivotbuild.hasher import Hasher
from pivotbuild.store import Cache

H = "0123456789abcdef0123456789abcdef"


def doc(**fields: object) -> bytes:
    base: dict[str, object] = {"hash": H, "path": "raw.csv", "size": 3}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_parse_joins_the_path_onto_the_records_directory() -> None:
    record = tracked.parse_record(doc(), "data/raw.csv.pvt")
    assert (record.path, record.hash, record.size, record.nfiles) == ("data/raw.csv", H, 3, None)
    top = tracked.parse_record(doc(), "raw.csv.pvt")
    assert top.path == "raw.csv"


def test_render_is_sorted_indented_and_relative_to_the_record() -> None:
    record = tracked.Record("data/img.pvt", "data/img", H + ".dir", 10, 2)
    text = record.render().decode()
    assert text == json.dumps({"hash": H + ".dir", "nfiles": 2, "path": "img", "size": 10},
                              indent=2, sort_keys=True) + "\n"
    assert tracked.parse_record(text, "data/img.pvt") == record


@pytest.mark.parametrize(("data", "key"), [
    (b"{not json", ""),
    (b"[]", ""),
    (doc(extra=1), "extra"),
    (doc(hash="xyz"), "hash"),
    (doc(hash=None), "hash"),
    (doc(path="../up"), "path"),
    (doc(path="/abs"), "path"),
    (doc(path="a//b"), "path"),
    (doc(size=-1), "size"),
    (doc(size="3"), "size"),
    (doc(nfiles=2), "nfiles"),  # a file hash with a count
    (doc(hash=H + ".dir"), "nfiles"),  # a directory without one
])
def test_a_bad_record_is_a_config_error_naming_the_file_and_key(data: bytes, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        tracked.parse_record(data, "data/raw.csv.pvt")
    assert info.value.file == "data/raw.csv.pvt"
    assert info.value.key == key
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_read_record_of_a_missing_file_is_an_operation_error(tmp_path: Path) -> None:
    with pytest.raises(OperationError, match="x.pvt: no such tracked-path record"):
        tracked.read_record(tmp_path, "x.pvt")


def test_find_records_skips_state_git_outputs_tracked_dirs_and_venvs(tmp_path: Path) -> None:
    for rel in ["a.pvt", "sub/b.pvt", ".git/c.pvt", ".pivotbuild/d.pvt", "out/e.pvt",
                "img.pvt", "img/f.pvt", "venv/g.pvt", "deep/x/h.pvt", ".pvt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"{}")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "sub")
    walked: list[str] = []
    listings: dict[str, tuple[str, ...]] = {}
    found = tracked.find_records(tmp_path, skip=["out"], walked=walked, listings=listings)
    assert found == ["a.pvt", "deep/x/h.pvt", "img.pvt", "sub/b.pvt"]
    assert "out" not in walked and "img" not in walked and "." in walked
    assert "venv" in walked and "venv/g.pvt" not in found  # listed, not entered
    # The no-op snapshot checks directories with the same listing key.
    for rel in walked:
        assert snapshot.listing_key(str(tmp_path / rel)) == listings[rel]
    assert listings["."] == (".git/", ".pivotbuild/", ".pvt", "a.pvt", "deep/", "img.pvt",
                             "img/", "out/", "sub/", "venv/")


def test_two_records_of_overlapping_paths_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.pvt").write_bytes(doc(path="x"))
    (tmp_path / "a.pvt").write_bytes(doc(path="sub/x"))
    with pytest.raises(ConfigError, match="x.pvt: path: tracks the same path 'sub/x', which "
                                          "a.pvt tracks"):
        tracked.read_records(tmp_path)
    (tmp_path / "a.pvt").write_bytes(doc(path="sub", hash=H + ".dir", nfiles=1))
    with pytest.raises(ConfigError, match="tracks a path inside 'sub'"):
        tracked.read_records(tmp_path)


def test_add_to_gitignore_once_keeping_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".gitignore").write_text("*.tmp")  # no final newline
    assert tracked.add_to_gitignore(tmp_path, "data/raw.csv")
    assert not tracked.add_to_gitignore(tmp_path, "data/raw.csv")
    assert (tmp_path / "data" / ".gitignore").read_text() == "*.tmp\n/raw.csv\n"
    assert tracked.add_to_gitignore(tmp_path, "we*ird[1].csv")
    assert (tmp_path / ".gitignore").read_text() == "/we\\*ird\\[1].csv\n"


def _project(tmp_path: Path, toml: str = "") -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pivot.toml").write_text(toml)
    return root


def _track(root: Path, *paths: str) -> list[tracked.Tracked]:
    project = load_project(root)
    cache = Cache(project.cache_dir, durable=False)
    return tracked.track(project, list(paths), Hasher(root, None), cache)


def test_track_stores_writes_the_record_and_the_gitignore(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "data" / "img").mkdir(parents=True)
    (root / "data" / "img" / "a.png").write_bytes(b"aa")
    (root / "data" / "img" / "b.png").write_bytes(b"bbb")
    (root / "data" / "raw.csv").write_bytes(b"x,y\n")
    done = _track(root, "data/raw.csv", "./data/img/")
    assert [d.record.path for d in done] == ["data/raw.csv", "data/img"]
    assert all(d.previous is None and d.changed for d in done)
    img = json.loads((root / "data" / "img.pvt").read_text())
    assert img["path"] == "img" and img["nfiles"] == 2 and img["size"] == 5
    assert img["hash"].endswith(".dir")
    cache = Cache(load_project(root).cache_dir)
    assert cache.objects.has(img["hash"])
    assert {e.path for e in cache.objects.read_manifest(img["hash"])} == {"a.png", "b.png"}
    raw = tracked.read_record(root, "data/raw.csv.pvt")
    assert cache.objects.object_path(raw.hash).read_bytes() == b"x,y\n"
    assert (root / "data" / ".gitignore").read_text() == "/raw.csv\n/img\n"
    # Again, unchanged: same record bytes, nothing new in the .gitignore.
    again = _track(root, "data/raw.csv")
    assert again[0].previous == raw and not again[0].changed
    assert (root / "data" / ".gitignore").read_text() == "/raw.csv\n/img\n"


TOML = """
[stages.make]
cmd = "echo"
outs = ["out", "model.bin"]
"""


@pytest.mark.parametrize(("path", "why"), [
    (".", "project root"),
    ("pivot.toml", "pipeline file"),
    (".pivotbuild/x", ".pivotbuild"),
    (".git/config", ".git"),
    ("model.bin", "an output of stage 'make'"),
    ("out/x", "inside out"),
    ("raw.pvt", "record"),
    ("../escape", "escapes the project"),
    ("absent.csv", "no such file"),
])
def test_what_cannot_be_tracked_is_a_usage_error_naming_it(tmp_path: Path, path: str,
                                                           why: str) -> None:
    root = _project(tmp_path, TOML)
    (root / "out").mkdir()
    (root / "out" / "x").write_text("x")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("")
    (root / "raw.pvt").write_bytes(doc(path="raw"))
    with pytest.raises(UsageError) as info:
        _track(root, path)
    assert why in str(info.value)
    assert info.value.exit_code == 2
    assert sorted(p.name for p in root.rglob("*.pvt")) == ["raw.pvt"]


def test_a_path_leading_outside_through_a_symlink_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("f")
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="link/f: cannot be tracked: it leads outside"):
        _track(root, "link/f")


def test_a_path_inside_a_tracked_directory_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "d").mkdir()
    (root / "d" / "f").write_text("f")
    _track(root, "d")
    with pytest.raises(UsageError, match="d/f: cannot be tracked: lies inside d, which is "
                                         "tracked already"):
        _track(root, "d/f")


def test_a_directory_holding_a_tracked_path_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f").write_text("f")
    _track(root, "d/e/f")
    with pytest.raises(UsageError, match="d: cannot be tracked: holds d/e/f, which is "
                                         "tracked already"):
        _track(root, "d")


def test_project_path_refuses_outside(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert tracked.project_path(root, "a/../b", cwd=str(root)) == "b"
    assert tracked.project_path(root, str(root / "x"), cwd="/") == "x"
    with pytest.raises(UsageError, match="outside the project"):
        tracked.project_path(root, "../other", cwd=str(root))


def test_select_splits_targets(tmp_path: Path) -> None:
    records = [tracked.Record("data/raw.csv.pvt", "data/raw.csv", H, 1),
               tracked.Record("img.pvt", "img", H + ".dir", 1, 1)]
    chosen, rest = tracked.select(records, ["data", "img/a.png", "model", "img.pvt"])
    assert [r.path for r in chosen] == ["data/raw.csv", "img"]
    assert rest == ["model"]
