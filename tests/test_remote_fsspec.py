"""remote/fsspecstore.py: transfers through fsspec, to an in-memory file system and to an S3
server on loopback (moto)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pivotbuild import remote as remotes
from pivotbuild.errors import OperationError
from pivotbuild.pipeline import opened
from tests.remotekit import (
    cache_objects,
    clone,
    do,
    lock_doc,
    memory_remote,
    outputs,
    ran,
    repro,
    s3_project,
    tree,
)

if TYPE_CHECKING:
    from tests.s3server import S3Server

pytest_plugins = ["tests.s3server", "tests.remote_fixtures"]  # s3_server, s3_bucket; built


def test_an_fsspec_filesystem_remote_round_trip(built: Path, tmp_path: Path):
    """memory:// goes through the generic fsspec store (temp name, then mv)."""
    import fsspec

    root = f"/pivot-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.mkdir(root)
    text = (built / "pivot.toml").read_text()
    (built / "pivot.toml").write_text(text.replace(
        f'url = "{tmp_path / "remote"}"', f'url = "memory://{root}"'))
    first = do("push", built, run_cache=True)
    assert first.ok and first.objects == len(cache_objects(built)) and first.runs == 3
    assert not [p for p in fs.find(root) if p.endswith(".tmp")]
    assert do("push", built, run_cache=True).objects == 0
    b = clone(built, tmp_path / "b", locks=False)
    with opened(b) as pipeline:
        report = remotes.prefetch_for_repro(pipeline, pipeline.select([]),
                                            remotes.open_remote(pipeline.project, None))
    assert report.ok and report.objects == first.objects
    repro(b)
    assert ran(b) == [] and outputs(b) == outputs(built)
    fs.rm(root, recursive=True)


# ---- S3 through s3fs, against a real S3-protocol server on loopback ----------------------------


def test_s3_push_twice_then_fresh_clone_restores_by_run_cache(tmp_path: Path,
                                                               s3_server: S3Server,
                                                               s3_bucket: str):
    a = s3_project(tmp_path / "a", s3_server.endpoint, s3_bucket)
    repro(a)
    first = do("push", a, run_cache=True)
    assert first.ok, first.failed
    keys = s3_server.filesystem().find(f"{s3_bucket}/team/cache")
    local = {k: v for k, v in tree(a / ".pivotbuild" / "cache").items()
             if not k.startswith("projects/")}  # the per-machine project registry
    assert {k.split("/team/cache/", 1)[1] for k in keys} == set(local)
    fs = s3_server.filesystem()
    for key in keys:
        assert fs.cat_file(key) == local[key.split("/team/cache/", 1)[1]]
    second = do("push", a, run_cache=True)
    assert second.ok and second.objects == 0 and second.runs == 0
    b = clone(a, tmp_path / "b", locks=False)
    with opened(b) as pipeline:
        report = remotes.prefetch_for_repro(pipeline, pipeline.select([]),
                                            remotes.open_remote(pipeline.project, None))
    assert report.ok and report.objects == first.objects
    repro(b)
    assert ran(b) == [] and outputs(b) == outputs(a)


def test_s3_tampered_object_is_rejected(tmp_path: Path, s3_server: S3Server, s3_bucket: str):
    a = s3_project(tmp_path / "a", s3_server.endpoint, s3_bucket)
    repro(a)
    assert do("push", a).ok
    clean = lock_doc(a, "prepare")["outs"][0]["hash"]
    s3_server.filesystem().pipe_file(f"{s3_bucket}/team/cache/files/{clean[:2]}/{clean[2:]}",
                                     b"tampered\n")
    b = clone(a, tmp_path / "b")
    report, checkout = do("pull", b)
    assert [w for w, _ in report.failed] == ["clean.txt (prepare)"]
    assert clean not in cache_objects(b) and not (b / "clean.txt").exists()
    assert not checkout.ok and (b / "report.txt").exists()


def test_s3_missing_bucket_is_one_line(tmp_path: Path, s3_server: S3Server):
    a = s3_project(tmp_path / "a", s3_server.endpoint, "no-such-bucket")
    repro(a)
    with pytest.raises(OperationError) as info:
        do("push", a)
    assert str(info.value) == ("remote 'origin' (s3://no-such-bucket/team/cache): the bucket "
                               "'no-such-bucket' does not exist")


def test_s3_unreachable_endpoint_is_one_line_and_writes_nothing(tmp_path: Path,
                                                                s3_server: S3Server,
                                                                dead_s3_endpoint: str):
    a = s3_project(tmp_path / "a", dead_s3_endpoint, "bucket")
    repro(a)
    b = clone(a, tmp_path / "b")
    for verb, root in (("push", a), ("fetch", b)):
        with pytest.raises(OperationError) as info:
            do(verb, root)
        message = str(info.value)
        assert message.startswith("remote 'origin' (s3://bucket/team/cache): cannot connect")
        assert "\n" not in message
    assert not (b / ".pivotbuild" / "cache").exists()


def test_push_to_fsspec_never_uploads_a_corrupt_object_nor_its_run_entry(built: Path,
                                                                         tmp_path: Path):
    root, fs = memory_remote(built, tmp_path)
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    obj = built / ".pivotbuild" / "cache" / "files" / clean[:2] / clean[2:]
    obj.chmod(0o644)
    obj.write_text("HELLO, EDITED IN PLACE\n")
    report = do("push", built, run_cache=True)
    assert not report.ok
    failed = dict(report.failed)
    assert "clean.txt (prepare)" in failed and "corrupt" in failed["clean.txt (prepare)"]
    names = {p.rsplit("/", 2)[-2] + p.rsplit("/", 1)[-1] for p in fs.find(root)}
    assert clean not in names
    assert lock_doc(built, "prepare")["input_hash"] + ".json" not in names
    assert lock_doc(built, "report")["input_hash"] + ".json" in names  # the others went
    assert obj.exists()  # push reads the cache: it reports, it does not delete
    fs.rm(root, recursive=True)
