"""`import-dvc` on projects real DVC made (tests/data/dvc/, see its README): after the import
`status` is up to date, `repro` runs nothing, and a param edit makes stale exactly what
`dvc status` said after the same edit. Stage commands are counted through a `python3` on PATH
that appends its arguments to a marker file before running the real one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.cli.conftest import run

DATA = Path(__file__).resolve().parent.parent / "data" / "dvc"


def _copy(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(DATA / name, root, symlinks=True)
    return root


@pytest.fixture
def counted(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `python3` records each run in the returned marker file."""
    real = shutil.which("python3")
    assert real, "the stage commands of the fixtures run python3"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "runs.txt"
    shim = bin_dir / "python3"
    shim.write_text(f'#!/bin/sh\necho "$*" >> "{marker}"\nexec "{real}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, marker


def _runs(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def _import(root: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = run(["import-dvc", "--json", *args], root, env)
    assert result.code == 0, result.err
    return json.loads(result.out)


def _stale(root: Path, env: dict[str, str] | None = None) -> dict[str, list[dict]]:
    result = run(["status", "--json"], root, env)
    assert result.code == 0, result.err
    return {s["name"]: s["reasons"] for s in json.loads(result.out)["stages"]
            if s["status"] == "stale"}


def test_after_import_status_is_up_to_date_and_repro_runs_nothing(tmp_path, counted):
    env, marker = counted
    root = _copy("basic", tmp_path)
    history = (root / "reports/history.log").read_bytes()
    doc = _import(root, env=env)
    assert doc["ok"] is True and doc["not_converted"] == [] and doc["failed"] == []
    assert len(doc["committed"]) == 12 and (root / ".pivotbuild/locks/prepare.json").is_file()
    assert doc["stale"] == [{"stage": "stamp", "reasons": ["always changed"]}]
    assert doc["renamed"] == {"train@small": "train-small", "train@large": "train-large"}
    # DVC's always_changed stage is the only stale one, as `dvc status` says of it
    assert _stale(root, env) == {"stamp": [{"kind": "always-changed"}]}
    result = run(["repro", "--json"], root, env)
    assert result.code == 0, result.err
    actions = {s["name"]: s["action"] for s in json.loads(result.out)["stages"]}
    assert {name for name, action in actions.items() if action != "skip"} == {"stamp"}
    assert _runs(marker) == []  # no python3 stage ran
    assert (root / "reports/history.log").read_bytes() == history  # report's cmd appends
    # the import wrote the lock the commit writer writes: committing again changes nothing
    before = {p.name: p.read_bytes() for p in (root / ".pivotbuild/locks").iterdir()}
    assert run(["commit", "prepare", "report"], root, env).code == 0
    assert {p.name: p.read_bytes() for p in (root / ".pivotbuild/locks").iterdir()} == before


def test_a_param_edit_makes_stale_exactly_what_dvc_status_listed(tmp_path, counted):
    env, marker = counted
    root = _copy("basic", tmp_path)
    header = (DATA / "expected_status_after_edit.txt").read_text().splitlines()[0]
    assert header == "# edit: in train.yaml, lr: 0.1 -> 0.2 (nothing else changed)"
    dvc_status = json.loads((DATA / "expected_status_after_edit.json").read_text())
    renamed = _import(root, env=env)["renamed"]
    train = root / "train.yaml"
    train.write_text(train.read_text().replace("lr: 0.1\n", "lr: 0.2\n"))
    stale = _stale(root, env)
    # DVC lists the stages whose own inputs changed; pivotbuild also marks their downstream
    # (upstream-stale), which DVC reruns too once they have run
    direct = {name for name, reasons in stale.items()
              if any(r["kind"] != "upstream-stale" for r in reasons)}
    assert direct == {renamed.get(name, name) for name in dvc_status}
    assert stale["train-small"] == [{"kind": "params-changed", "key": "train.yaml:lr"}]
    result = run(["repro", "--json"], root, env)
    assert result.code == 0, result.err
    ran = {s["name"] for s in json.loads(result.out)["stages"] if s["action"] == "run"}
    assert {"train-small", "train-large", "stamp"} <= ran
    assert any(line.startswith("scripts/train.py small") for line in _runs(marker))


def test_an_existing_pivot_toml_is_kept_unless_force(tmp_path):
    root = _copy("basic", tmp_path)
    (root / "pivot.toml").write_text("# mine\n")
    result = run(["import-dvc"], root)
    assert result.code == 2
    assert "pivot.toml" in result.err and "--force" in result.err
    assert (root / "pivot.toml").read_text() == "# mine\n"
    assert not (root / ".pivotbuild").exists()
    doc = _import(root, "--force")
    assert doc["ok"] and (root / "pivot.toml").read_text().startswith("# Converted from dvc")
    locks = {p.name: (p.read_bytes(), p.stat().st_ino)
             for p in (root / ".pivotbuild/locks").iterdir()}
    again = _import(root, "--force")  # an import over its own result rewrites no lock
    assert again["committed"] == doc["committed"]
    assert {p.name: (p.read_bytes(), p.stat().st_ino)
            for p in (root / ".pivotbuild/locks").iterdir()} == locks


def test_what_cannot_be_converted_is_listed_and_exits_1(tmp_path):
    root = _copy("unconvertible", tmp_path)
    result = run(["import-dvc"], root)
    assert result.code == 1
    for what in ("data/shared.csv.dvc", "data/external.txt.dvc", "artifacts.classifier",
                 "sub/dvc.yaml", "push", "remote"):
        assert what in result.err
    assert "dvc import" in result.err
    # everything else was still written and committed
    assert "[stages.use]" in (root / "pivot.toml").read_text()
    assert (root / ".pivotbuild/locks/args.json").is_file()
    assert "AKIA" not in result.out + result.err


def test_dvc_add_data_becomes_tracked_paths(tmp_path):
    root = _copy("basic", tmp_path)
    doc = _import(root)
    assert doc["tracked"] == ["data/images", "data/raw.csv"]
    raw = json.loads((root / "data/raw.csv.pvt").read_text())
    hashed = run(["hash", "data/raw.csv"], root)
    assert raw["path"] == "raw.csv" and hashed.out.split()[0] == raw["hash"]
    images = json.loads((root / "data/images.pvt").read_text())
    assert images["nfiles"] == 3 and images["hash"].endswith(".dir")
    assert "/raw.csv" in (root / "data/.gitignore").read_text().splitlines()


def test_data_that_differs_from_dvc_is_listed_not_committed(tmp_path):
    root = _copy("basic", tmp_path)
    (root / "data/raw.csv").write_text("changed\n")
    (root / "models/small/weights.txt").write_text("edited by hand\n")
    doc = _import(root)
    assert doc["ok"]  # stale stages and untracked data are listed, not errors
    assert doc["not_tracked"][0]["path"] == "data/raw.csv"
    assert "differs from what DVC recorded" in doc["not_tracked"][0]["reason"]
    assert not (root / "data/raw.csv.pvt").exists()
    stale = {s["stage"]: s["reasons"] for s in doc["stale"]}
    assert "prepare" in stale and any("data/raw.csv" in r for r in stale["prepare"])
    assert any("models/small" in r for r in stale["train-small"])
    assert "prepare" not in doc["committed"] and "train-small" not in doc["committed"]
    assert "train-large" in doc["committed"]  # its inputs and outputs still match
    result = run(["import-dvc", "--force"], root)
    assert result.code == 0
    assert "stale: prepare: data/raw.csv: content differs" in result.out


def test_dvc2_lock_with_dos2unix_md5s_is_proven(tmp_path):
    root = _copy("dvc2", tmp_path)
    doc = _import(root)
    assert doc["committed"] == ["copy"] and doc["stale"] == []
    assert sorted(doc["tracked"]) == ["data/crlf.csv", "data/dir"]
    assert _stale(root) == {}


def test_not_a_dvc_project_is_a_usage_error(tmp_path):
    result = run(["import-dvc"], tmp_path)
    assert result.code == 2
    assert "no DVC project" in result.err
    assert not (tmp_path / "pivot.toml").exists()


def test_bad_dvc_yaml_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: [unclosed\n")
    result = run(["import-dvc"], tmp_path)
    assert result.code == 2
    assert "dvc.yaml" in result.err and "invalid YAML" in result.err
    assert not (tmp_path / "pivot.toml").exists()


def test_the_first_repro_after_an_import_is_answered_by_the_fast_path(tmp_path):
    root = tmp_path / "hand"
    (root / ".dvc").mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("a\n")
    md5 = hashlib.md5(b"a\n").hexdigest()
    (root / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp a.txt b.txt\n"
                                   "    deps:\n    - a.txt\n    outs:\n    - b.txt\n")
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  copy:\n    cmd: cp a.txt b.txt\n    deps:\n"
        f"    - path: a.txt\n      hash: md5\n      md5: {md5}\n      size: 2\n"
        f"    outs:\n    - path: b.txt\n      hash: md5\n      md5: {md5}\n      size: 2\n")
    assert _import(root)["committed"] == ["copy"]
    result = run(["repro"], root, {"PIVOTBUILD_FASTPATH_TRACE": "1"})
    assert result.code == 0 and "fast path answered" in result.err


def test_a_pipeline_pivotbuild_refuses_writes_nothing(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: echo x > x.pvt\n"
                                       "    outs:\n    - x.pvt\n")
    result = run(["import-dvc"], tmp_path)
    assert result.code == 2
    assert "dvc.yaml" in result.err and "x.pvt" in result.err
    assert not (tmp_path / "pivot.toml").exists() and not (tmp_path / ".pivotbuild").exists()
    (tmp_path / "pivot.toml").write_text("# mine\n")
    assert run(["import-dvc", "--force"], tmp_path).code == 2
    assert (tmp_path / "pivot.toml").read_text() == "# mine\n"
