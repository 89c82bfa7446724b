"""datadiff: outputs and tracked paths added, deleted or modified between two sides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pivotbuild import datadiff, manifest
from pivotbuild.datadiff import Entry
from pivotbuild.errors import OperationError
from pivotbuild.gitrev import open_revision
from pivotbuild.hashing import get_backend
from pivotbuild.lock import parse_lock
from tests.cli.conftest import git

H = {name: get_backend().hash_bytes(name.encode()) for name in "abcdefgh"}


def dir_entry(path: str, files: dict[str, str], store: dict[str, bytes] | None = None,
              executable: frozenset[str] = frozenset()) -> Entry:
    """A directory record whose manifest lists ``files`` ({name: hash}); the manifest goes
    into ``store`` (a fake cache) when one is given."""
    body = manifest.build(manifest.ManifestEntry(n, h, 1, n in executable)
                          for n, h in files.items())
    digest = get_backend().hash_bytes(body) + ".dir"
    if store is not None:
        store[digest] = body
    return Entry(path, digest, len(files), len(files))


def test_files_added_deleted_modified_and_unchanged() -> None:
    old = {"a.csv": Entry("a.csv", H["a"]), "b.csv": Entry("b.csv", H["b"]),
           "same.csv": Entry("same.csv", H["c"])}
    new = {"a.csv": Entry("a.csv", H["d"]), "same.csv": Entry("same.csv", H["c"]),
           "z/new.csv": Entry("z/new.csv", H["e"])}
    doc = datadiff.diff(old, new)
    assert doc == {
        "added": [{"path": "z/new.csv", "hash": H["e"]}],
        "deleted": [{"path": "b.csv", "hash": H["b"]}],
        "modified": [{"path": "a.csv", "hash": {"old": H["a"], "new": H["d"]}}],
        "not_in_cache": [],
    }
    assert datadiff.counts(doc) == {"added": 1, "deleted": 1, "modified": 1}
    assert datadiff.diff(new, new) == {"added": [], "deleted": [], "modified": [],
                                       "not_in_cache": []}


def test_inside_a_modified_directory_per_file_when_both_manifests_are_there() -> None:
    store: dict[str, bytes] = {}
    old = {"model": dir_entry("model", {"w.txt": H["a"], "gone.txt": H["b"], "k.txt": H["c"],
                                        "run.sh": H["d"]}, store)}
    new = {"model": dir_entry("model", {"w.txt": H["e"], "new.txt": H["f"], "k.txt": H["c"],
                                        "run.sh": H["d"]}, store, frozenset({"run.sh"}))}
    doc = datadiff.diff(old, new, store.get)
    assert doc["added"] == [{"path": "model/new.txt", "hash": H["f"]}]
    assert doc["deleted"] == [{"path": "model/gone.txt", "hash": H["b"]}]
    assert [m["path"] for m in doc["modified"]] == ["model/", "model/run.sh", "model/w.txt"]
    assert doc["modified"][1]["hash"] == {"old": H["d"], "new": H["d"]}  # mode changed only
    assert doc["not_in_cache"] == []
    # The directory counts through its files.
    assert datadiff.counts(doc) == {"added": 1, "deleted": 1, "modified": 2}
    assert datadiff.render_text(doc) == (
        "Added:\n    model/new.txt\n\n"
        "Deleted:\n    model/gone.txt\n\n"
        "Modified:\n    model/\n    model/run.sh\n    model/w.txt\n\n"
        "files summary: 1 added, 1 deleted, 2 modified\n")


def test_a_directory_whose_manifest_is_missing_is_named_and_counted_once() -> None:
    store: dict[str, bytes] = {}
    old = {"model": dir_entry("model", {"w.txt": H["a"]}, store)}
    new = {"model": dir_entry("model", {"w.txt": H["b"]})}  # its manifest is not stored
    doc = datadiff.diff(old, new, store.get)
    assert doc["modified"] == [{"path": "model/", "hash": {"old": old["model"].hash,
                                                          "new": new["model"].hash}}]
    assert doc["not_in_cache"] == ["model/"]
    assert datadiff.counts(doc) == {"added": 0, "deleted": 0, "modified": 1}
    assert "Not compared file by file" in datadiff.render_text(doc)
    # Without any manifest reader, the same.
    assert datadiff.diff(old, new)["not_in_cache"] == ["model/"]


def test_an_added_or_deleted_directory_lists_its_files_from_its_one_manifest() -> None:
    store: dict[str, bytes] = {}
    new = {"out": dir_entry("out", {"a": H["a"], "sub/b": H["b"]}, store),
           "blind": dir_entry("blind", {"x": H["c"]})}
    doc = datadiff.diff({}, new, store.get)
    assert [a["path"] for a in doc["added"]] == ["blind/", "out/", "out/a", "out/sub/b"]
    assert doc["not_in_cache"] == ["blind/"]
    assert datadiff.counts(doc) == {"added": 3, "deleted": 0, "modified": 0}
    back = datadiff.diff(new, {}, store.get)
    assert [d["path"] for d in back["deleted"]] == ["blind/", "out/", "out/a", "out/sub/b"]


def test_a_corrupt_manifest_is_treated_as_missing() -> None:
    old = {"d": Entry("d", H["a"] + ".dir", 1, 1)}
    new = {"d": Entry("d", H["b"] + ".dir", 1, 1)}
    doc = datadiff.diff(old, new, lambda h: b"not a manifest")
    assert doc["not_in_cache"] == ["d/"]


def test_a_path_that_changed_kind_is_modified_under_its_plain_name() -> None:
    store: dict[str, bytes] = {}
    old = {"p": Entry("p", H["a"])}
    new = {"p": dir_entry("p", {"x": H["b"]}, store)}
    doc = datadiff.diff(old, new, store.get)
    assert doc["modified"] == [{"path": "p", "hash": {"old": H["a"], "new": new["p"].hash}}]
    assert datadiff.counts(doc)["modified"] == 1


def test_markdown() -> None:
    doc = datadiff.diff({"a|b": Entry("a|b", H["a"])}, {"c": Entry("c", H["b"])})
    assert datadiff.render_md(doc) == (
        "| Status | Path |\n|---|---|\n| added | c |\n| deleted | a\\|b |\n\n"
        "files summary: 1 added, 1 deleted, 0 modified\n")


def test_pvt_records_are_relative_to_their_directory() -> None:
    records = datadiff.records_from_pvt({
        "data/raw.csv.pvt": json.dumps({"hash": H["a"], "path": "raw.csv", "size": 3}).encode(),
        "images.pvt": json.dumps({"hash": H["b"] + ".dir", "nfiles": 2, "path": "images",
                                  "size": 9}).encode(),
    })
    assert records == {"data/raw.csv": Entry("data/raw.csv", H["a"], 3, None),
                       "images": Entry("images", H["b"] + ".dir", 9, 2)}


@pytest.mark.parametrize(("data", "problem"), [
    (b"{", "not a valid tracked-path record (not JSON)"),
    (b"[]", "not a valid tracked-path record (not an object)"),
    (json.dumps({"hash": "x", "path": "a", "size": 1}).encode(), "hash is not a hash"),
    (json.dumps({"hash": H["a"], "path": "../a", "size": 1}).encode(),
     "path is not a relative path: '../a'"),
    (json.dumps({"hash": H["a"], "path": "a", "size": "1"}).encode(),
     "size or nfiles is not a count"),
])
def test_an_invalid_pvt_record_names_the_file_and_revision(data: bytes, problem: str) -> None:
    with pytest.raises(OperationError) as info:
        datadiff.records_from_pvt({"d/x.pvt": data}, rev="HEAD (abc1234)")
    assert str(info.value) == f"d/x.pvt at HEAD (abc1234): {problem}"


def test_an_invalid_lock_names_the_file_and_revision() -> None:
    with pytest.raises(OperationError, match=r"^\.pivotbuild/locks/t\.json at v1: invalid "
                                             r"lock \(not valid JSON"):
        datadiff.records_from_locks({".pivotbuild/locks/t.json": b"{"}, rev="v1")


# ---- a real project in a real git repository -----------------------------------------------

PIVOT_TOML = """\
[stages.train]
cmd = "python3 train.py"
deps = ["train.py", "data/raw.txt"]
outs = ["model/", { path = "metrics.json", cache = false }, "report.txt"]
"""

TRAIN_PY = """\
import json, os, pathlib
raw = pathlib.Path("data/raw.txt").read_text()
os.makedirs("model", exist_ok=True)
pathlib.Path("model/weights.txt").write_text(raw.upper())
pathlib.Path("model/config.txt").write_text("fixed\\n")
if "extra" in raw:
    pathlib.Path("model/extra.txt").write_text("x\\n")
pathlib.Path("metrics.json").write_text(json.dumps({"acc": len(raw) / 100}))
pathlib.Path("report.txt").write_text(f"{len(raw)} bytes\\n")
"""


def _repro(root: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pivotbuild", "repro"], cwd=root,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def _workspace_records(root: Path) -> dict[str, Entry]:
    locks = {str(p.relative_to(root)): p.read_bytes()
             for p in (root / ".pivotbuild" / "locks").glob("*.json")}
    records = datadiff.records_from_locks(locks)
    pvts = {str(p.relative_to(root)): p.read_bytes() for p in root.glob("**/*.pvt")}
    records.update(datadiff.records_from_pvt(pvts))
    return records


def _cache_object(root: Path, digest: str) -> bytes | None:
    path = root / ".pivotbuild" / "cache" / "files" / digest[:2] / digest[2:]
    return path.read_bytes() if path.is_file() else None


def test_diff_of_a_project_between_a_commit_and_the_workspace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "pivot.toml").write_text(PIVOT_TOML)
    (root / "train.py").write_text(TRAIN_PY)
    (root / "data" / "raw.txt").write_text("first\n")
    (root / ".gitignore").write_text("/model/\n/report.txt\n/labels.txt\n")
    (root / "labels.txt").write_text("cat\n")
    label_hash = get_backend().hash_bytes(b"cat\n")
    (root / "labels.txt.pvt").write_text(json.dumps(
        {"hash": label_hash, "path": "labels.txt", "size": 4}))
    _repro(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")

    (root / "data" / "raw.txt").write_text("second, extra\n")
    (root / "labels.txt.pvt").unlink()
    _repro(root)

    rev = open_revision(root, "HEAD")
    old = datadiff.revision_records(rev)
    assert set(old) == {"model", "metrics.json", "report.txt", "labels.txt"}
    doc = datadiff.diff(old, _workspace_records(root), lambda h: _cache_object(root, h))
    assert doc["added"] == [{"path": "model/extra.txt",
                             "hash": get_backend().hash_bytes(b"x\n")}]
    assert doc["deleted"] == [{"path": "labels.txt", "hash": label_hash}]
    assert [m["path"] for m in doc["modified"]] == ["metrics.json", "model/",
                                                    "model/weights.txt", "report.txt"]
    assert datadiff.counts(doc) == {"added": 1, "deleted": 1, "modified": 3}

    # Output contents at the revision: metrics.json straight from git (cache = false),
    # report.txt (cached, ignored by git) through the lock and the cache.
    found = datadiff.read_revision_outputs(rev, ["metrics.json", "report.txt", "nope.txt"],
                                           old, lambda h: _cache_object(root, h))
    assert found == {"metrics.json": b'{"acc": 0.06}', "report.txt": b"6 bytes\n",
                     "nope.txt": None}
    current = parse_lock((root / ".pivotbuild/locks/train.json").read_bytes(), "train")
    assert {o.path for o in current.outs} == {"model", "metrics.json", "report.txt"}
