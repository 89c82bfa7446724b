"""remote/transfer.py in process: push / fetch / pull against a local-directory remote, and
what fetcher.py refuses (tampered objects, malicious manifests, bad run-cache entries)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pivotbuild import manifest, names
from pivotbuild import remote as remotes
from pivotbuild.hashing import get_backend
from pivotbuild.pipeline import opened
from pivotbuild.remote import localdir
from pivotbuild.store import runcache
from tests.remotekit import (
    UNCACHED,
    break_copies,
    cache_objects,
    clone,
    do,
    lock_doc,
    make_project,
    memory_remote,
    outputs,
    ran,
    repro,
    toggle_cache,
    tree,
)

pytest_plugins = ["tests.remote_fixtures"]  # the remote_dir and built fixtures


def test_file_url_is_a_local_directory(tmp_path: Path, remote_dir: Path):
    root = make_project(tmp_path / "p", f"file://{remote_dir}")
    repro(root)
    report = do("push", root)
    assert report.ok and report.objects > 0
    assert (remote_dir / "files").is_dir()


# ---- push -----------------------------------------------------------------------------------


def test_push_mirrors_the_cache_layout_and_second_push_sends_nothing(built: Path,
                                                                     remote_dir: Path):
    first = do("push", built, run_cache=True)
    assert first.ok, first.failed
    local = {name: data for name, data in tree(built / ".pivotbuild" / "cache").items()
             if not name.startswith("projects/")}  # the per-machine project registry
    pushed = tree(remote_dir)
    assert pushed == local  # same names, same bytes: objects and run-cache entries
    assert first.objects == len([k for k in local if k.startswith("files/")])
    assert first.runs == 3
    assert first.bytes == sum(len(v) for k, v in local.items() if k.startswith("files/"))
    second = do("push", built, run_cache=True)
    assert second.ok and second.objects == 0 and second.runs == 0 and second.bytes == 0
    assert second.skipped == first.objects + first.runs
    assert "0 object(s) (0 B) sent" in second.summary()


def test_push_without_run_cache_sends_no_run_entries(built: Path, remote_dir: Path):
    assert do("push", built).ok
    assert not (remote_dir / "runs").exists()


def test_push_lists_in_batches_not_one_request_per_object(built: Path, monkeypatch):
    calls = []
    original = localdir.LocalStore.list_names

    def counting(self, top, shards):
        calls.append((top, shards))
        return original(self, top, shards)

    monkeypatch.setattr(localdir.LocalStore, "list_names", counting)
    do("push", built, run_cache=True)
    assert [top for top, _ in calls] == ["files", "runs"]


def test_push_targets_only_those_stages(built: Path, remote_dir: Path):
    report = do("push", built, targets=["prepare"])
    assert report.ok and report.objects == 1
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    assert tree(remote_dir) == {f"files/{clean[:2]}/{clean[2:]}": b"HELLO REMOTE\n"}


def test_cache_false_outputs_are_never_pushed_or_pulled(tmp_path: Path, remote_dir: Path):
    root = make_project(tmp_path / "a", str(remote_dir), UNCACHED)
    repro(root)
    metrics = next(o for o in lock_doc(root, "measure")["outs"] if o["path"] == "metrics.json")
    assert metrics["cache"] is False
    assert do("push", root, run_cache=True).ok
    names = {p.parent.name + p.name for p in (remote_dir / "files").glob("*/*")}
    assert metrics["hash"] not in names and len(names) == 1  # kept.txt only
    b = clone(root, tmp_path / "b")
    report, checkout = do("pull", b)
    assert report.ok and checkout.ok
    assert (b / "kept.txt").exists() and not (b / "metrics.json").exists()


def test_dir_manifest_is_not_pushed_when_one_of_its_files_fails(built: Path, remote_dir: Path,
                                                                monkeypatch):
    model = next(o for o in lock_doc(built, "train")["outs"])["hash"]
    with opened(built) as pipeline:
        entries = pipeline.cache.objects.read_manifest(model)
    victim = next(e for e in entries if e.path == "sub/tool").hash
    break_copies(monkeypatch, lambda src: src.endswith(f"{victim[:2]}/{victim[2:]}"))
    report = do("push", built, run_cache=True)
    assert not report.ok
    text = " ".join(f"{w}: {e}" for w, e in report.failed)
    assert victim in text and "model/sub/tool (train)" in text and "Input/output error" in text
    assert f"manifest {model} not sent" in text
    assert not (remote_dir / "files" / model[:2] / model[2:]).exists()
    train_run = lock_doc(built, "train")["input_hash"]
    assert not (remote_dir / "runs" / train_run[:2] / f"{train_run[2:]}.json").exists()
    monkeypatch.undo()
    again = do("push", built, run_cache=True)
    assert again.ok and (remote_dir / "files" / model[:2] / model[2:]).is_file()


def test_push_reports_an_object_missing_from_the_local_cache(built: Path):
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    obj = built / ".pivotbuild" / "cache" / "files" / clean[:2] / clean[2:]
    os.chmod(obj.parent, 0o755)
    obj.unlink()
    report = do("push", built, targets=["prepare"])
    assert not report.ok
    assert report.failed[0][0] == "clean.txt (prepare)"
    assert "not in the local cache" in report.failed[0][1]


def test_push_never_sends_a_corrupted_cache_object(built: Path, remote_dir: Path):
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    obj = built / ".pivotbuild" / "cache" / "files" / clean[:2] / clean[2:]
    obj.chmod(0o644)
    obj.write_text("HELLO, EDITED IN PLACE THROUGH A HARDLINK\n")
    report = do("push", built, targets=["prepare"])
    assert not report.ok
    assert report.failed[0][0] == "clean.txt (prepare)"
    assert f"object {clean} not sent: the cached copy is corrupt" in report.failed[0][1]
    assert not (remote_dir / "files" / clean[:2] / clean[2:]).exists()
    assert [p for p in remote_dir.rglob("*") if p.is_file()] == []


def test_push_skips_a_manifest_missing_locally_that_the_remote_has(built: Path,
                                                                   remote_dir: Path):
    assert do("push", built).ok
    model = lock_doc(built, "train")["outs"][0]["hash"]
    obj = built / ".pivotbuild" / "cache" / "files" / model[:2] / model[2:]
    obj.unlink()
    report = do("push", built)
    assert report.ok and report.objects == 0
    (remote_dir / "files" / model[:2] / model[2:]).unlink()
    report = do("push", built)
    assert not report.ok and report.failed[0][0] == "model (train)"
    assert "cannot be sent" in report.failed[0][1]


def test_pivot_toml_not_the_lock_decides_what_is_transferred(built: Path, remote_dir: Path,
                                                             tmp_path: Path):
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    toggle_cache(built, "clean.txt", cached=False)
    assert lock_doc(built, "prepare")["outs"][0]["cache"] is True  # the lock still says so
    pushed = do("push", built, run_cache=True)
    assert pushed.ok, pushed.failed
    assert not (remote_dir / "files" / clean[:2] / clean[2:]).exists()
    assert (remote_dir / "runs").is_dir()  # the other stages' entries went
    with opened(built) as pipeline:
        outs = {o.path for o in remotes.status_remote(
            pipeline, pipeline.select([]), remotes.open_remote(pipeline.project, None)).outputs}
    assert "clean.txt" not in outs and "report.txt" in outs
    # A clone with the same pivot.toml neither fetches nor places it.
    toggle_cache(built, "clean.txt", cached=True)
    assert do("push", built).ok
    toggle_cache(built, "clean.txt", cached=False)
    b = clone(built, tmp_path / "b")
    fetched, checked = do("pull", b)
    assert fetched.ok and checked.ok
    assert clean not in cache_objects(b) and not (b / "clean.txt").exists()
    assert (b / "report.txt").read_bytes() == (built / "report.txt").read_bytes()


# ---- fetch and pull --------------------------------------------------------------------------


def test_pull_into_a_fresh_clone_restores_every_output(built: Path, tmp_path: Path):
    assert do("push", built).ok
    b = clone(built, tmp_path / "b")
    report, checkout = do("pull", b)
    assert report.ok and checkout.ok, (report.failed, checkout)
    assert outputs(b) == outputs(built)
    assert os.access(b / "model" / "sub" / "tool", os.X_OK)
    assert cache_objects(b) == cache_objects(built)
    repro(b)
    assert ran(b) == []
    again = do("fetch", b)
    assert again.ok and again.objects == 0 and again.skipped > 0


def test_fetch_with_run_cache_brings_the_entries(built: Path, tmp_path: Path):
    assert do("push", built, run_cache=True).ok
    b = clone(built, tmp_path / "b")
    report = do("fetch", b, run_cache=True)
    assert report.ok and report.runs == 3
    runs = built / ".pivotbuild" / "cache" / "runs"
    assert tree(b / ".pivotbuild" / "cache" / "runs") == tree(runs)


def test_a_tampered_object_is_rejected_named_and_never_placed(built: Path, tmp_path: Path,
                                                              remote_dir: Path):
    assert do("push", built).ok
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    obj = remote_dir / "files" / clean[:2] / clean[2:]
    os.chmod(obj, 0o644)
    obj.write_bytes(b"HELLO EVIL\n")
    b = clone(built, tmp_path / "b")
    report, checkout = do("pull", b)
    assert not report.ok and not checkout.ok
    assert len(report.failed) == 1
    what, why = report.failed[0]
    assert what == "clean.txt (prepare)" and clean in why and "rejected" in why
    assert clean not in cache_objects(b)
    assert not (b / "clean.txt").exists()  # never in the workspace
    assert (b / "model" / "w").read_bytes() == b"hello remote\n"  # the rest still came
    leftovers = [p for p in (b / ".pivotbuild").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_corrupted_file_inside_a_directory_keeps_the_manifest_out(built: Path,
                                                                    tmp_path: Path,
                                                                    remote_dir: Path):
    assert do("push", built).ok
    model = lock_doc(built, "train")["outs"][0]["hash"]
    with opened(built) as pipeline:
        entries = pipeline.cache.objects.read_manifest(model)
    score = next(e for e in entries if e.path == "sub/score")
    obj = remote_dir / "files" / score.hash[:2] / score.hash[2:]
    os.chmod(obj, 0o644)
    obj.write_bytes(b"0.9\n")
    b = clone(built, tmp_path / "b")
    report = do("fetch", b)
    whats = [w for w, _ in report.failed]
    assert "model/sub/score (train)" in whats and "model (train)" in whats
    assert score.hash not in cache_objects(b) and model not in cache_objects(b)


@pytest.mark.parametrize("bad_path", ["../evil", "/abs/evil", "a//evil", "a/./evil", "a/.."])
def test_a_malicious_dir_manifest_is_rejected(built: Path, tmp_path: Path, remote_dir: Path,
                                              bad_path: str):
    assert do("push", built).ok
    payload = get_backend().hash_bytes(b"pwned\n")
    data = manifest.HEADER + f"{payload} - 6 {bad_path}\n".encode()
    evil = names.dir_hash(data)
    for digest, content in ((evil, data), (payload, b"pwned\n")):
        (remote_dir / "files" / digest[:2]).mkdir(exist_ok=True)
        (remote_dir / "files" / digest[:2] / digest[2:]).write_bytes(content)
    b = clone(built, tmp_path / "b")
    lock_path = b / ".pivotbuild" / "locks" / "train.json"
    doc = json.loads(lock_path.read_text())
    doc["outs"][0].update(hash=evil, nfiles=1, size=6)
    lock_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    report, checkout = do("pull", b)
    assert not report.ok and not checkout.ok
    messages = [f"{w}: {e}" for w, e in report.failed]
    assert any(evil in m and "unsafe path" in m and "model (train)" in m for m in messages)
    assert evil not in cache_objects(b) and payload not in cache_objects(b)
    assert not (tmp_path / "evil").exists() and not (b / "evil").exists()


def test_a_tampered_run_cache_entry_is_rejected(built: Path, tmp_path: Path, remote_dir: Path):
    assert do("push", built, run_cache=True).ok
    prepare = lock_doc(built, "prepare")["input_hash"]
    entry = remote_dir / "runs" / prepare[:2] / f"{prepare[2:]}.json"
    doc = json.loads(entry.read_text())
    doc["outs"][0]["path"] = "../../etc/evil"
    os.chmod(entry, 0o644)
    entry.write_text(json.dumps(doc))
    c = clone(built, tmp_path / "c", locks=False)
    with opened(c) as pipeline:
        report = remotes.prefetch_for_repro(pipeline, pipeline.select([]),
                                            remotes.open_remote(pipeline.project, None))
    assert not report.ok
    assert any(prepare in w and "unsafe path" in e for w, e in report.failed)
    assert not (c / ".pivotbuild" / "cache" / "runs" / prepare[:2]).exists()
    repro(c)
    assert ran(c) == ["prepare", "train", "report"]  # nothing to restore from: it all ran


@pytest.mark.parametrize("doc", [
    {"input_hash": "x", "outs": [], "schema": 1},
    {"input_hash": None, "outs": [{"path": "a", "hash": "zz", "size": 1, "cache": True}],
     "schema": 1},
    {"input_hash": None, "outs": [{"path": "a", "hash": "0" * 32 + ".dir", "size": 1,
                                   "cache": True}], "schema": 1},
    {"input_hash": None, "outs": [{"path": "a", "hash": "0" * 32, "size": -1, "cache": True}],
     "schema": 1},
    {"input_hash": None, "outs": [], "schema": 2},
    {"input_hash": None, "outs": [], "schema": 1, "extra": 1},
    [],
])
def test_run_entry_problem_refuses_malformed_entries(doc):
    input_hash = "ab" * 16
    if isinstance(doc, dict) and doc.get("input_hash") is None:
        doc = {**doc, "input_hash": input_hash}
    assert runcache.entry_problem(doc, input_hash)


def test_pull_places_what_it_fetched_without_reading_it_again(built: Path, tmp_path: Path,
                                                              monkeypatch):
    """Fetched objects were hashed on their way in: the checkout that follows trusts them
    (a pull of 100,000 files must not read them all twice)."""
    assert do("push", built).ok
    b = clone(built, tmp_path / "b")
    backend = get_backend()
    real = backend.hash_files
    read_objects: list[str] = []

    def counting(paths, jobs=0):
        read_objects.extend(p for p in paths if "/cache/files/" in p and ".tmp" not in p)
        return real(paths, jobs)

    monkeypatch.setattr(backend, "hash_files", counting)
    fetched, checked = do("pull", b)
    assert fetched.ok and checked.ok and outputs(b) == outputs(built)
    assert read_objects == []


# ---- push_objects: objects by hash (for an executor) ------------------------------------------


@pytest.mark.parametrize("kind", ["localdir", "memory"])
def test_push_objects_sends_what_the_remote_lacks_after_one_listing(built: Path, tmp_path: Path,
                                                                    kind: str, monkeypatch):
    if kind == "memory":
        memory_remote(built, tmp_path)
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    model = lock_doc(built, "train")["outs"][0]["hash"]
    listings: list[str] = []
    with opened(built) as pipeline:
        remote = remotes.open_remote(pipeline.project, None)
        real = remote.store.list_names

        def counting(top, shards):
            listings.append(top)
            return real(top, shards)

        monkeypatch.setattr(remote.store, "list_names", counting)
        objects = pipeline.cache.objects
        members = {e.hash for e in objects.read_manifest(model)}
        first = remotes.push_objects(remote, objects, [clean, model, clean])
        assert first.ok, first.failed
        assert listings == ["files"]
        assert first.objects == 2 + len(members) and first.runs == 0
        second = remotes.push_objects(remote, objects, [model, clean])
        assert second.ok and second.objects == 0 and second.skipped == 2 + len(members)
        assert listings == ["files", "files"]
        wanted = {clean, model, *members}
        assert remote.present("files", [*wanted, *cache_objects(built)]) == wanted


def test_push_objects_names_what_the_local_cache_lacks_and_sends_the_rest(built: Path,
                                                                          remote_dir: Path):
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    absent = "0" * 32
    with opened(built) as pipeline:
        remote = remotes.open_remote(pipeline.project, None)
        report = remotes.push_objects(remote, pipeline.cache.objects, [absent, clean],
                                      shown={absent: "data/raw.bin"})
    assert report.failed == [("data/raw.bin",
                              f"object {absent} not sent: it is not in the local cache")]
    assert report.objects == 1
    assert tree(remote_dir) == {f"files/{clean[:2]}/{clean[2:]}": b"HELLO REMOTE\n"}
