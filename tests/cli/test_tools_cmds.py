"""`schema`, `completion` and `list`: the schema accepts every example's pivot.toml and
rejects typos; the completion script's callback (click's COMPLETE protocol) offers stage
names; `list` shows every stage with its desc."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.cli.conftest import run

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*/pivot.toml"))
DVC_BASIC = ROOT / "tests" / "data" / "dvc" / "basic"

MATRIX_TOML = """\
[stages.prep]
cmd = "echo p > p.txt"
outs = ["p.txt"]
desc = "prepare the data"

[stages.train]
matrix = { model = ["cnn", "mlp"], lr = [1, 2] }
cmd = "echo ${item.model} > m-${item.model}-${item.lr}.txt"
deps = ["p.txt"]
outs = ["m-${item.model}-${item.lr}.txt"]
desc = "train one model"

[stages.report]
foreach = ["a", "b"]
cmd = "echo ${item} > r-${item}.txt"
outs = ["r-${item}.txt"]
"""


def _schema(tmp_path: Path) -> dict:
    result = run(["schema"], tmp_path)
    assert result.code == 0, result.err
    return json.loads(result.out)


def _errors(schema: dict, doc: dict) -> list[str] | None:
    """jsonschema's messages for doc, or None when jsonschema is not installed."""
    try:
        import jsonschema
    except ImportError:
        return None
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]


def test_schema_accepts_every_example_and_an_imported_dvc_project(tmp_path):
    schema = _schema(tmp_path)
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["properties"]) >= {"project", "remotes", "vars", "stages", "pools"}
    assert schema["additionalProperties"] is False
    stage = schema["$defs"]["RawStage"]
    assert stage["additionalProperties"] is False
    assert {"cmd", "deps", "outs", "params", "matrix", "foreach"} <= set(stage["properties"])
    root = tmp_path / "dvc"
    shutil.copytree(DVC_BASIC, root)
    assert run(["import-dvc"], root).code == 0
    docs = [tomllib.loads(p.read_text()) for p in [*EXAMPLES, root / "pivot.toml"]]
    assert len(docs) >= 3
    for doc in docs:
        assert _errors(schema, doc) in (None, [])


def test_schema_rejects_typos_and_wrong_types(tmp_path):
    schema = _schema(tmp_path)
    if _errors(schema, {}) is None:  # without jsonschema: the structure that forbids them
        assert schema["$defs"]["RawOut"]["additionalProperties"] is False
        assert schema["$defs"]["RawStage"]["properties"]["frozen"]["type"] == "boolean"
        return
    assert _errors(schema, {"stages": {"a": {"cmd": "x", "outs": ["o", {"path": "m",
                                                                       "metric": True}]}}}) == []
    assert _errors(schema, {"stages": {"a": {"cmdd": "x"}}})
    assert _errors(schema, {"stages": {"a": {"cmd": "x", "frozen": "yes"}}})
    assert _errors(schema, {"stages": {"a": {"cmd": "x", "outs": [{"path": "o", "cach": 1}]}}})
    assert _errors(schema, {"projekt": {}})


def test_schema_line_for_editors_is_documented(tmp_path):
    result = run(["schema", "--help"], tmp_path)
    assert "#:schema ./pivot.schema.json" in result.out


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F"),
                                           ("zsh", "#compdef pivotbuild"),
                                           ("fish", "complete --no-files --command pivotbuild")])
def test_completion_prints_each_shells_script(tmp_path, shell, marker):
    result = run(["completion", shell], tmp_path)
    assert result.code == 0, result.err
    assert marker in result.out and "_PIVOTBUILD_COMPLETE" in result.out


def test_completion_of_an_unknown_shell_is_a_usage_error(tmp_path):
    assert run(["completion", "tcsh"], tmp_path).code == 2


def _complete(cwd: Path, words: str, shell: str = "bash") -> list[str]:
    """What the completion script gets back for the command line ``words`` (cursor at the
    end), driven as click's script drives it."""
    parts = words.split(" ")
    env = {"_PIVOTBUILD_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(parts) - 1)}
    result = run([], cwd, env)
    assert result.code == 0, result.err
    if shell == "bash":
        return [line.split(",", 1)[1] for line in result.out.splitlines() if line]
    return result.out.splitlines()


@pytest.fixture
def matrix_project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pivot.toml").write_text(MATRIX_TOML)
    return root


def test_stage_names_complete(matrix_project):
    names = _complete(matrix_project, "pivotbuild repro ")
    assert names == ["prep", "train", "train@cnn-1", "train@cnn-2", "train@mlp-1",
                     "train@mlp-2", "report", "report@a", "report@b"]
    assert _complete(matrix_project, "pivotbuild status train@m") == ["train@mlp-1",
                                                                       "train@mlp-2"]
    assert _complete(matrix_project, "pivotbuild commit re") == ["report", "report@a",
                                                                  "report@b"]
    zsh = _complete(matrix_project, "pivotbuild checkout pr", "zsh")
    assert "prep" in zsh


def test_completion_follows_dash_c_and_completes_commands(matrix_project):
    outside = matrix_project.parent
    assert _complete(outside, "pivotbuild -C proj dag tr")[0] == "train"
    assert "status" in _complete(outside, "pivotbuild st")
    assert "import-dvc" in _complete(outside, "pivotbuild im")


def test_paths_complete_as_files_when_no_stage_matches(matrix_project):
    env = {"_PIVOTBUILD_COMPLETE": "bash_complete", "COMP_WORDS": "pivotbuild repro data/",
           "COMP_CWORD": "2"}
    result = run([], matrix_project, env)
    assert result.out.splitlines() == ["file,data/"]  # the shell completes the path itself


def test_list_shows_stages_with_desc(matrix_project):
    result = run(["list"], matrix_project)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split(None, 1) == ["prep", "prepare the data"]
    assert lines[1].split(None, 1) == ["train@cnn-1", "train one model"]
    assert lines[-1] == "report@b"
    doc = json.loads(run(["list", "--json"], matrix_project).out)
    assert doc["stages"][0] == {"name": "prep", "desc": "prepare the data"}
    assert [s["name"] for s in doc["stages"]][-2:] == ["report@a", "report@b"]
    assert doc["stages"][-1]["desc"] is None


def test_list_outside_a_project_exits_2(tmp_path):
    result = run(["list"], tmp_path)
    assert result.code == 2 and "pivot.toml" in result.err
