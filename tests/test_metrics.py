"""metrics: loading, flattening, show/diff documents and their text and Markdown tables."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pivotbuild import metrics
from pivotbuild.errors import EXIT_FAILED
from pivotbuild.gitrev import open_revision
from pivotbuild.metrics import MetricsError

NESTED_JSON = b'{"acc": 0.9, "nested": {"loss": 0.5, "per_class": [0.1, 0.2]}, "ok": true}'


def test_json_yaml_and_toml_flatten_to_the_same_keys() -> None:
    files = {
        "m.json": NESTED_JSON,
        "m.yaml": b"acc: 0.9\nnested:\n  loss: 0.5\n  per_class: [0.1, 0.2]\nok: true\n",
        "m.yml": b"acc: 0.9\nnested: {loss: 0.5, per_class: [0.1, 0.2]}\nok: yes\n",
        "m.toml": b"acc = 0.9\nok = true\n[nested]\nloss = 0.5\nper_class = [0.1, 0.2]\n",
    }
    doc = metrics.show(files)
    expected = {"acc": 0.9, "nested.loss": 0.5, "nested.per_class.0": 0.1,
                "nested.per_class.1": 0.2, "ok": True}
    for name in files:
        assert doc[name] == expected, name
    assert list(doc) == list(files)  # files in the order given


def test_other_extensions_are_read_as_yaml_which_reads_json_too() -> None:
    assert metrics.show({"scores.txt": b'{"a": 1}', "s.metrics": b"a: 2\n"}) == {
        "scores.txt": {"a": 1}, "s.metrics": {"a": 2}}


def test_strings_nulls_dates_and_non_finite_values_are_kept_as_json_safe_values() -> None:
    doc = metrics.show({
        "m.json": b'{"name": "resnet", "none": null, "nan": NaN, "inf": -Infinity, "e": {}}',
        "m.toml": b"when = 2026-12-01\nbig = 123456789012345678901234567890\n",
    })
    assert doc["m.json"] == {"name": "resnet", "none": None, "nan": "nan", "inf": "-inf"}
    assert doc["m.toml"] == {"when": "2026-12-01", "big": 123456789012345678901234567890}
    json.dumps(doc, allow_nan=False)  # a valid JSON document


def test_a_top_level_list_is_flattened_by_index() -> None:
    assert metrics.show({"m.json": b'[{"a": 1}, 2]'}) == {"m.json": {"0.a": 1, "1": 2}}


def test_deep_nesting_does_not_exhaust_the_stack() -> None:
    deep = "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 400)) + "  " * 400 + "c: 1\n"
    (key, value), = metrics.show({"m.yaml": deep.encode()})["m.yaml"].items()
    assert key == "a" + ".b" * 399 + ".c" and value == 1


@pytest.mark.parametrize(("name", "data", "message"), [
    ("m.json", b'{"acc": 0.9,}',
     ("m.json at HEAD (abc1234): not valid JSON: Expecting property name enclosed in double "
     "quotes at line 1 column 13")),
    ("m.yaml", b"acc: [0.9\n",
     ("m.yaml at HEAD (abc1234): not valid YAML: did not find expected ',' or ']' at line 2 "
     "column 1")),
    ("m.toml", b"acc = \n", ("m.toml at HEAD (abc1234): not valid TOML: Invalid value (at "
     "line 1, column 7)")),
    ("m.json", b"\xff\xfe{", "m.json at HEAD (abc1234): not UTF-8 text"),
    ("m.json", b"0.9", ("m.json at HEAD (abc1234): expected an object of metrics, the file is "
     "a single float value")),
    ("m.yaml", b"", ("m.yaml at HEAD (abc1234): expected an object of metrics, the file is "
     "empty")),
])
def test_an_invalid_file_is_one_line_naming_the_file_and_revision(
        name: str, data: bytes, message: str) -> None:
    with pytest.raises(MetricsError) as info:
        metrics.show({name: data}, rev="HEAD (abc1234)")
    assert str(info.value) == message
    assert info.value.exit_code == EXIT_FAILED


def test_a_missing_file_in_show_is_named() -> None:
    with pytest.raises(MetricsError, match=r"^eval/m.json: metrics file not found in the "
                                           r"workspace \(has its stage run\?\)$"):
        metrics.show({"eval/m.json": None})


def test_diff_lists_changed_and_one_sided_keys_with_null_on_the_other_side() -> None:
    old = metrics.show({"m.json": b'{"acc": 0.8, "same": 1, "gone": 3, "name": "a", "ok": true}',
                        "old.json": b'{"x": 1}'})
    new = metrics.show({"m.json": b'{"acc": 0.9, "same": 1.0, "new": 7, "name": "b", "ok": 1}',
                        "fresh.json": b'{"y": 2.5}'})
    assert metrics.diff(old, new) == {
        "m.json": {"acc": {"old": 0.8, "new": 0.9, "diff": 0.1},
                   "new": {"old": None, "new": 7},
                   "name": {"old": "a", "new": "b"},
                   "ok": {"old": True, "new": 1},
                   "gone": {"old": 3, "new": None}},
        "fresh.json": {"y": {"old": None, "new": 2.5}},
        "old.json": {"x": {"old": 1, "new": None}},
    }


def test_diff_all_keeps_unchanged_keys_with_a_zero_diff() -> None:
    doc = {"m.json": {"acc": 0.5, "tag": "x"}}
    assert metrics.diff(doc, doc, all=True) == {
        "m.json": {"acc": {"old": 0.5, "new": 0.5, "diff": 0.0},
                   "tag": {"old": "x", "new": "x"}}}
    assert metrics.diff(doc, doc) == {}


@pytest.mark.parametrize(("old", "new", "expected"), [
    (0.8, 0.9, 0.1), (0.9, 0.8, -0.1), (0.1, 0.3, 0.2), (1, 3, 2), (3, 1, -2),
    (1, 1.5, 0.5), (0.123456789, 0.123456799, 1e-08), (1e-20, 2e-20, 1e-20),
    (10**20, 10**20 + 1, 1), (1e300, -1e300, -2e300),
])
def test_diff_is_the_difference_of_the_printed_numbers(old: float, new: float,
                                                       expected: float) -> None:
    entry = metrics.diff({"m": {"k": old}}, {"m": {"k": new}})["m"]["k"]
    assert entry["diff"] == expected
    assert type(entry["diff"]) is type(expected)


def test_diff_of_overflowing_numbers_is_left_out() -> None:
    entry = metrics.diff({"m": {"k": -1.7e308}}, {"m": {"k": 1.7e308}})["m"]["k"]
    assert entry == {"old": -1.7e308, "new": 1.7e308}


def test_text_and_markdown_tables() -> None:
    old = {"metrics.json": {"acc": 0.8, "loss": 0.5, "model": "a|b"}}
    new = {"metrics.json": {"acc": 0.9, "loss": 0.5, "model": "c", "f1": 0.7}}
    doc = metrics.diff(old, new)
    assert metrics.render_diff_text(doc, "HEAD~1", "workspace") == (
        "Path          Metric  HEAD~1  workspace  Change\n"
        "metrics.json  acc     0.8     0.9        +0.1\n"
        "metrics.json  model   a|b     c\n"
        "metrics.json  f1      -       0.7\n")
    assert metrics.render_diff_md(doc, "main", "workspace") == (
        "| Path | Metric | main | workspace | Change |\n"
        "|---|---|---|---|---|\n"
        "| metrics.json | acc | 0.8 | 0.9 | +0.1 |\n"
        "| metrics.json | model | a\\|b | c |   |\n"
        "| metrics.json | f1 | - | 0.7 |   |\n")
    assert metrics.render_diff_text({}, "HEAD", "workspace") == (
        "no metric changed between HEAD and workspace\n")
    assert metrics.render_show_text(new) == (
        "metrics.json\n  acc    0.9\n  loss   0.5\n  model  c\n  f1     0.7\n")
    assert metrics.render_show_md(new).splitlines()[:3] == [
        "| Path | Metric | Value |", "|---|---|---|", "| metrics.json | acc | 0.9 |"]
    assert metrics.render_show_text({"m.json": {"k": 1 / 3}}, precision=3) == (
        "m.json\n  k  0.333\n")


def test_params_load_only_the_used_keys_whole_values_kept() -> None:
    toml = b'[train]\nlr = 0.1\nlayers = [64, 32]\n[train.opt]\nname = "adam"\n[prep]\nseed = 1\n'
    assert metrics.load_params("params.toml", toml, ["train.lr", "train.layers", "train.opt",
                                                     "train.absent"]) == {
        "train.lr": 0.1, "train.layers": [64, 32], "train.opt": {"name": "adam"}}
    assert metrics.load_params("params.yaml", b"a: {b: 2}\n") == {"a.b": 2}
    with pytest.raises(MetricsError, match=r"^p.json at v1: expected a table of params"):
        metrics.load_params("p.json", b"[1]", rev="v1")


def test_param_keys_from_locks_split_the_file_prefix() -> None:
    keys = metrics.param_keys_from_locks(
        [{"train.lr": 0.1, "conf/extra.yaml:model.depth": 3}, {"prep.seed": 1}], "params.toml")
    assert keys == {"params.toml": {"train.lr", "prep.seed"},
                    "conf/extra.yaml": {"model.depth"}}


def test_params_diff_shape() -> None:
    old = {"params.toml": {"train.lr": 0.1, "train.layers": [64], "prep.seed": 1}}
    new = {"params.toml": {"train.lr": 0.2, "train.layers": [64, 32], "prep.seed": 1}}
    doc = metrics.params_diff(old, new)
    assert doc == {"params.toml": {"train.lr": {"old": 0.1, "new": 0.2, "diff": 0.1},
                                   "train.layers": {"old": [64], "new": [64, 32]}}}
    assert metrics.render_diff_text(doc, "HEAD", "workspace", kind="Param") == (
        "Path         Param         HEAD  workspace  Change\n"
        "params.toml  train.lr      0.1   0.2        +0.1\n"
        "params.toml  train.layers  [64]  [64, 32]\n")


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CEILING_DIRECTORIES": str(cwd.parent)}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_metrics_and_params_diff_between_a_commit_and_the_workspace(tmp_path: Path) -> None:
    """The flow the CLI runs: old side from git objects, new side from disk."""
    root = tmp_path / "proj"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "metrics.json").write_text('{"acc": 0.8, "loss": {"val": 0.3}}')
    (root / "params.toml").write_text("[train]\nlr = 0.1\nepochs = 10\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    (root / "metrics.json").write_text('{"acc": 0.9, "loss": {"val": 0.25}}')
    (root / "params.toml").write_text("[train]\nlr = 0.2\nepochs = 10\n")

    rev = open_revision(root, "HEAD")
    old_files = rev.read_files(["metrics.json", "params.toml"])
    old = metrics.show({"metrics.json": old_files["metrics.json"]}, rev.label)
    new = metrics.show({"metrics.json": (root / "metrics.json").read_bytes()})
    assert metrics.diff(old, new) == {"metrics.json": {
        "acc": {"old": 0.8, "new": 0.9, "diff": 0.1},
        "loss.val": {"old": 0.3, "new": 0.25, "diff": -0.05}}}
    keys = ["train.lr", "train.epochs"]
    old_params = {"params.toml": metrics.load_params("params.toml", old_files["params.toml"] or b"",
                                                     keys, rev.label)}
    new_params = {"params.toml": metrics.load_params(
        "params.toml", (root / "params.toml").read_bytes(), keys)}
    assert metrics.params_diff(old_params, new_params) == {
        "params.toml": {"train.lr": {"old": 0.1, "new": 0.2, "diff": 0.1}}}


def test_param_keys_straight_from_lock_files_skip_unreadable_ones() -> None:
    files = {"a.json": json.dumps({"params": {"train.lr": 0.1, "x.yaml:k": 1}}).encode(),
             "b.json": b"{not json", "c.json": b'{"params": []}', "d.json": None}
    assert metrics.param_keys_from_lock_files(files, "params.toml") == {
        "params.toml": {"train.lr"}, "x.yaml": {"k"}}


def test_select_params_from_an_already_parsed_file() -> None:
    assert metrics.select_params({"a": {"b": 1, "c": [1, 2]}}, ["a.b", "a.c", "a.z", "q"]) == {
        "a.b": 1, "a.c": [1, 2]}


def test_yaml_reads_1e_minus_3_as_a_number_as_the_config_does(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML's default) reads 1e-3 as a string; the config and metrics agree on
    # one loader, so a params value compared across revisions is the one the stage got.
    from pivotbuild.config_schema import read_params

    data = b"lr: 1e-3\nsteps: 10\nname: run\n"
    (tmp_path / "p.yaml").write_bytes(data)
    assert read_params(tmp_path, "p.yaml", "p.yaml") == {"lr": 0.001, "steps": 10, "name": "run"}
    assert metrics.load_params("p.yaml", data, ["lr", "steps"]) == {"lr": 0.001, "steps": 10}
    assert metrics.load("m.yml", b"loss: 2.5E+2\n") == {"loss": 250.0}
