"""`track` and tracked paths (.pvt) through status, checkout, verify, push / pull and gc, as a
user runs them."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from .conftest import Result, run

FULL = {"PIVOTBUILD_NO_FASTPATH": "1"}
TRACE = {"PIVOTBUILD_FASTPATH_TRACE": "1"}

STAGE = """
[stages.count]
cmd = "echo run >> runs.log; wc -l < data/raw.csv > count.txt"
deps = ["data/raw.csv"]
outs = ["count.txt"]
"""


@pytest.fixture
def data(project: Path) -> Path:
    """A project with a file and a directory that no stage makes."""
    (project / "data" / "images").mkdir(parents=True)
    (project / "data" / "raw.csv").write_text("a,b\n1,2\n")
    (project / "data" / "images" / "a.png").write_bytes(b"\x89PNG a")
    (project / "data" / "images" / "sub").mkdir()
    (project / "data" / "images" / "sub" / "b.png").write_bytes(b"\x89PNG b")
    return project


def track(root: Path, *paths: str) -> Result:
    result = run(["track", *paths], root)
    assert result.code == 0, result.err
    return result


def status_json(root: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = run(["status", "--json", *args], root, env=env)
    assert result.code == 0, result.err
    return json.loads(result.out)


def tracked_status(root: Path) -> dict[str, str]:
    return {t["path"]: t["status"] for t in status_json(root, env=FULL)["tracked"]}


def rewrite(path: Path, text: str) -> None:
    """Edit a tracked file as an editor does (a new file renamed over it)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_track_writes_records_beside_the_data_and_gitignores_it(data: Path) -> None:
    result = track(data, "data/raw.csv", "data/images")
    raw = json.loads((data / "data" / "raw.csv.pvt").read_text())
    images = json.loads((data / "data" / "images.pvt").read_text())
    assert set(raw) == {"hash", "path", "size"} and raw["path"] == "raw.csv"
    assert raw["size"] == 8 and len(raw["hash"]) == 32
    assert images["path"] == "images" and images["nfiles"] == 2 and images["size"] == 12
    assert images["hash"].endswith(".dir")
    text = (data / "data" / "raw.csv.pvt").read_text()
    assert text == json.dumps(raw, indent=2, sort_keys=True) + "\n"
    assert (data / "data" / ".gitignore").read_text() == "/raw.csv\n/images\n"
    assert "git add data/.gitignore data/images.pvt data/raw.csv.pvt" in result.err
    # The hash is what `hash` prints for the same path.
    hashed = run(["hash", "data/raw.csv", "data/images"], data).out.split()
    assert hashed[0::2] == [raw["hash"], images["hash"]]


def test_track_from_a_subdirectory_and_again_after_an_edit(data: Path) -> None:
    track(data / "data", "raw.csv")
    before = (data / "data" / "raw.csv.pvt").read_text()
    again = track(data, "data/raw.csv")
    assert "unchanged" in again.out
    assert (data / "data" / "raw.csv.pvt").read_text() == before
    rewrite(data / "data" / "raw.csv", "a,b\n1,2\n3,4\n")
    assert tracked_status(data) == {"data/raw.csv": "tracked-changed"}
    track(data, "data/raw.csv")
    assert json.loads((data / "data" / "raw.csv.pvt").read_text())["size"] == 12
    assert tracked_status(data) == {"data/raw.csv": "up-to-date"}
    assert (data / "data" / ".gitignore").read_text() == "/raw.csv\n"


def test_status_lists_changed_and_missing_tracked_paths(data: Path) -> None:
    track(data, "data/raw.csv", "data/images")
    assert tracked_status(data) == {"data/images": "up-to-date", "data/raw.csv": "up-to-date"}
    human = run(["status"], data, env=FULL)
    assert human.out == "Everything is up to date.\n"
    assert run(["status", "-q"], data).code == 0
    rewrite(data / "data" / "images" / "sub" / "b.png", "other")
    (data / "data" / "raw.csv").unlink()
    assert tracked_status(data) == {"data/images": "tracked-changed", "data/raw.csv": "missing"}
    human = run(["status"], data)
    assert human.code == 0
    assert "data/images: tracked-changed (recorded in data/images.pvt)" in human.out
    assert "data/raw.csv: missing (recorded in data/raw.csv.pvt)" in human.out
    assert "Everything is up to date." not in human.out
    assert run(["status", "-q"], data).code == 1
    # A tracked path as a target selects it alone.
    assert status_json(data, "data/raw.csv")["tracked"] == [
        {"path": "data/raw.csv", "status": "missing"}]


def test_a_stage_depending_on_a_tracked_path(data: Path) -> None:
    (data / "pivot.toml").write_text(STAGE)
    track(data, "data/raw.csv")
    assert run(["repro"], data).code == 0
    assert (data / "count.txt").read_text().strip() == "2"
    assert run(["repro"], data).code == 0
    assert (data / "runs.log").read_text() == "run\n"
    rewrite(data / "data" / "raw.csv", "a,b\n1,2\n3,4\n")
    doc = status_json(data, env=FULL)
    assert doc["stages"][0]["status"] == "stale"
    assert doc["stages"][0]["reasons"] == [{"kind": "dep-changed", "path": "data/raw.csv"}]
    assert doc["tracked"] == [{"path": "data/raw.csv", "status": "tracked-changed"}]
    assert run(["repro"], data).code == 0
    assert (data / "count.txt").read_text().strip() == "3"
    assert (data / "runs.log").read_text() == "run\nrun\n"


def test_checkout_restores_tracked_paths_and_never_clobbers(data: Path) -> None:
    track(data, "data/raw.csv", "data/images")
    shutil.rmtree(data / "data" / "images")
    (data / "data" / "raw.csv").unlink()
    result = run(["checkout"], data)
    assert result.code == 0, result.err
    assert (data / "data" / "raw.csv").read_text() == "a,b\n1,2\n"
    assert (data / "data" / "images" / "sub" / "b.png").read_bytes() == b"\x89PNG b"
    # Restored as copies: an edit in place cannot reach the cache object.
    assert os.stat(data / "data" / "raw.csv").st_nlink == 1
    rewrite(data / "data" / "raw.csv", "mine\n")
    refused = run(["checkout", "data/raw.csv"], data)
    assert refused.code == 1 and "data/raw.csv" in refused.err
    assert (data / "data" / "raw.csv").read_text() == "mine\n"
    forced = run(["checkout", "--force", "data/raw.csv"], data)
    assert forced.code == 0, forced.err
    assert (data / "data" / "raw.csv").read_text() == "a,b\n1,2\n"


def test_verify_checks_tracked_paths_and_their_objects(data: Path) -> None:
    track(data, "data/raw.csv", "data/images")
    assert run(["verify"], data, env=FULL).code == 0
    rewrite(data / "data" / "raw.csv", "changed\n")
    result = run(["verify", "--json"], data)
    assert result.code == 1
    problems = json.loads(result.out)["problems"]
    assert [(p["kind"], p["path"]) for p in problems] == [("tracked-changed", "data/raw.csv")]
    assert "stage" not in problems[0]
    track(data, "data/raw.csv")
    record = json.loads((data / "data" / "images.pvt").read_text())
    cache = data / ".pivotbuild" / "cache" / "files"
    (cache / record["hash"][:2] / record["hash"][2:]).unlink()
    result = run(["verify"], data)
    assert result.code == 1
    assert f"data/images: cache object {record['hash']} is missing" in result.err


def test_push_and_pull_carry_tracked_paths(data: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (data / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "origin"\n[remotes.origin]\nurl = "{remote}"\n')
    track(data, "data/raw.csv", "data/images")
    pushed = run(["push"], data)
    assert pushed.code == 0, pushed.err
    assert "4 object(s)" in pushed.err  # raw.csv, the .dir manifest and its two files
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(data / "pivot.toml", other)
    (other / "data").mkdir()
    for name in ("raw.csv.pvt", "images.pvt", ".gitignore"):
        shutil.copy(data / "data" / name, other / "data" / name)
    assert tracked_status(other) == {"data/images": "missing", "data/raw.csv": "missing"}
    remote_status = run(["status", "--remote", "--json"], other)
    assert remote_status.code == 0, remote_status.err
    assert sorted((o["stage"], o["path"], o["status"])
                  for o in json.loads(remote_status.out)["outputs"]) == [
        (None, "data/images", "only-on-remote"), (None, "data/raw.csv", "only-on-remote")]
    assert "  data/raw.csv: only on the remote" in run(["status", "--remote"], other).out
    fetched = run(["fetch", "data/raw.csv"], other)
    assert fetched.code == 0, fetched.err
    assert "1 object(s)" in fetched.err
    pulled = run(["pull"], other)
    assert pulled.code == 0, pulled.err
    assert (other / "data" / "raw.csv").read_text() == "a,b\n1,2\n"
    assert (other / "data" / "images" / "a.png").read_bytes() == b"\x89PNG a"
    assert tracked_status(other) == {"data/images": "up-to-date", "data/raw.csv": "up-to-date"}


def test_gc_keeps_what_records_reference(data: Path) -> None:
    track(data, "data/raw.csv", "data/images")
    result = run(["gc", "--grace", "0"], data)
    assert result.code == 0, result.err
    assert "deleted 0 objects" in result.err and "kept 4 referenced objects" in result.err
    (data / "data" / "raw.csv.pvt").unlink()
    result = run(["gc", "--grace", "0"], data)
    assert "deleted 1 object " in result.err
    (data / "data" / "raw.csv").unlink()
    assert run(["checkout"], data).code == 0
    assert not (data / "data" / "raw.csv").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["count.txt"], "count.txt: cannot be tracked: is an output of stage 'count'"),
    ([".pivotbuild"], ".pivotbuild: cannot be tracked: lies in .pivotbuild"),
    (["../outside.txt"], "../outside.txt: outside the project"),
    (["pivot.toml"], "pivot.toml: cannot be tracked: is the pipeline file pivot.toml"),
    (["nothing.csv"], "nothing.csv: no such file or directory"),
    (["data/raw.csv", "count.txt"], "count.txt: cannot be tracked"),
])
def test_what_cannot_be_tracked_exits_2_naming_it(data: Path, args: list[str],
                                                  message: str) -> None:
    (data / "pivot.toml").write_text(STAGE)
    (data / "count.txt").write_text("2\n")
    (data.parent / "outside.txt").write_text("x")
    (data / ".pivotbuild").mkdir(exist_ok=True)
    result = run(["track", *args], data)
    assert result.code == 2
    assert result.err.strip() == f"pivotbuild: error: {message}" or message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not list(data.rglob("*.pvt"))  # nothing written, not even for the good path


def test_a_broken_record_is_a_config_error(data: Path) -> None:
    (data / "data" / "raw.csv.pvt").write_text('{"hash": "nope", "path": "raw.csv", "size": 1}')
    result = run(["status"], data)
    assert result.code == 2
    assert "data/raw.csv.pvt: hash: not a hash: 'nope'" in result.err


def test_an_output_declared_over_a_tracked_path_is_a_config_error(data: Path) -> None:
    track(data, "data/raw.csv")
    (data / "pivot.toml").write_text(
        '[stages.make]\ncmd = "echo x > data/raw.csv"\nouts = ["data/raw.csv"]\n')
    result = run(["status"], data)
    assert result.code == 2
    assert ("data/raw.csv.pvt: path: data/raw.csv is tracked, but data/raw.csv is an output "
            "of stage 'make'") in result.err


def test_the_fast_path_sees_tracked_paths(data: Path) -> None:
    track(data, "data/raw.csv")
    time.sleep(2.1)  # past the racy window: the snapshot trusts what it records
    full = status_json(data, env=FULL)
    quick = run(["status", "--json"], data, env=TRACE)
    assert "fast path answered" in quick.err
    assert json.loads(quick.out) == full
    assert full["tracked"] == [{"path": "data/raw.csv", "status": "up-to-date"}]
    rewrite(data / "data" / "raw.csv", "x\n")
    assert tracked_status(data)["data/raw.csv"] == "tracked-changed"
    assert run(["status", "-q"], data).code == 1
    # A record that appears (git pull, say) is seen too.
    track(data, "data/raw.csv")
    time.sleep(2.1)
    status_json(data, env=FULL)
    (data / "new").mkdir()
    (data / "new" / "f.txt").write_text("f")
    (data / "new" / "f.txt.pvt").write_text(json.dumps(
        {"hash": "0" * 32, "path": "f.txt", "size": 1}))
    result = run(["status", "--json"], data, env=TRACE)
    assert "fast path answered" not in result.err
    assert {"path": "new/f.txt", "status": "tracked-changed"} in json.loads(result.out)["tracked"]


def test_the_fast_path_verify_checks_tracked_objects(data: Path) -> None:
    track(data, "data/images")
    time.sleep(2.1)
    assert run(["verify"], data, env=FULL).code == 0
    quick = run(["verify"], data, env=TRACE)
    assert quick.code == 0 and "fast path answered" in quick.err
    record = json.loads((data / "data" / "images.pvt").read_text())
    manifest = data / ".pivotbuild" / "cache" / "files" / record["hash"][:2] / record["hash"][2:]
    from pivotbuild import manifest as manifests

    inner = manifests.parse(manifest.read_bytes())[0].hash
    (manifest.parent.parent / inner[:2] / inner[2:]).unlink()  # a file the .dir object lists
    result = run(["verify"], data, env=TRACE)
    assert "fast path answered" not in result.err
    assert result.code == 1 and "data/images/" in result.err and "is missing" in result.err
