"""pivotbuild.dvc against projects real DVC made (tests/data/dvc, see its README).

No DVC is needed here: the fixtures hold dvc.yaml, dvc.lock, the .dvc files and a workspace that
matches the lock, as `dvc repro` left them. Tests that change anything work on a copy.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pivotbuild import tomlwrite
from pivotbuild.dvc import (
    MD5,
    MD5_DOS2UNIX,
    LockedPath,
    check_path,
    check_stage,
    check_tracked,
    convert,
    dir_listing,
    file_md5,
)
from pivotbuild.dvc.hashes import cached_listing
from pivotbuild.errors import ConfigError, UsageError
from pivotbuild.template import render

DATA = Path(__file__).parent / "data" / "dvc"
BASIC = DATA / "basic"
SECRETS = ("PW-IN-CONFIG-NOT-REAL", "AKIAFIXTURENOTREAL00", "SECRET-IN-LOCAL-NOT-REAL",
           "SSH-PW-NOT-REAL")


def _copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(DATA / name, dest, symlinks=True)
    return dest


def _problems(root: Path) -> dict[str, list[str]]:
    """DVC stage name → why its workspace does not match dvc.lock (empty: it matches)."""
    conversion = convert(root)
    return {c.dvc_stage: check_stage(root, c) for c in conversion.checks}


def _lock(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


@pytest.fixture(scope="module")
def basic():
    return convert(BASIC)


@pytest.fixture(scope="module")
def toml(basic):
    return tomllib.loads(basic.toml)


# ---------------------------------------------------------------------------------------------
# the converted pivot.toml


def test_every_stage_is_converted_and_the_toml_reads_back(basic, toml):
    assert basic.toml.startswith("# Converted from dvc.yaml")
    assert list(toml["stages"]) == ["prepare", "featurize", "train-small", "train-large",
                                    "evaluate", "report", "baseline", "stamp"]
    # Every DVC stage instance has one check, and they are exactly the stages of dvc.lock.
    assert sorted(c.dvc_stage for c in basic.checks) == sorted(_lock(BASIC))


def test_plain_stage_keeps_cmd_deps_outs_params_and_desc(toml):
    prepare = toml["stages"]["prepare"]
    assert prepare == {
        "cmd": "python3 scripts/prepare.py data/raw.csv ${work_dir}/prepared.csv "
               "${params.prepare.split} ${tag}",
        "desc": "keep the first rows of the raw data",
        "deps": ["scripts/prepare.py", "data/raw.csv"],
        "outs": ["${work_dir}/prepared.csv"],
        "params": ["prepare.split", "prepare.seed"],
    }


def test_list_foreach_and_matrix_keep_their_form(toml):
    featurize = toml["stages"]["featurize"]
    assert featurize["foreach"] == ["en", "fr"]
    assert featurize["outs"] == ["${work_dir}/features-${item}.csv"]  # DVC's ${key} too
    evaluate = toml["stages"]["evaluate"]
    assert evaluate["matrix"] == {"model": ["small", "large"], "split": ["val", "test"]}
    assert evaluate["deps"] == ["scripts/evaluate.py", "models/${item.model}"]
    assert evaluate["outs"] == [{"path": "eval/${item.model}-${item.split}.json",
                                 "cache": False, "metric": True}]
    # A whole-file params entry lists the file's keys, as DVC's lock records them.
    assert sorted(evaluate["params"]) == ["eval.yaml:mode", "eval.yaml:threshold"]


def test_dict_foreach_is_unrolled_and_said_so(basic, toml):
    small, large = toml["stages"]["train-small"], toml["stages"]["train-large"]
    assert small["cmd"] == "python3 scripts/train.py small 2 models/small"
    assert large["cmd"] == "python3 scripts/train.py large 4 models/large"
    assert small["outs"] == ["models/small"]
    assert small["params"] == ["train.yaml:lr", "train.yaml:epochs"]
    assert "data/images" in small["deps"]
    assert any("train-small, train-large" in n for n in basic.notes)
    assert {c.stage: c.dvc_stage for c in basic.checks}["train-small"] == "train@small"


def test_wdir_persist_cache_metrics_and_plots(toml):
    report = toml["stages"]["report"]
    assert report["wdir"] == "${report_dir}"
    assert report["cmd"] == ["python3 ../scripts/report.py ../eval summary loss.csv roc.csv",
                             "echo run >> history.log"]
    assert report["outs"] == [
        # top-level metrics:/plots: name files inside this directory output
        {"path": "summary", "metric": ["summary/metrics.json"], "plot": ["summary/curve.csv"]},
        {"path": "history.log", "persist": True},
        {"path": "loss.csv", "cache": False, "plot": {"x": "step", "y": ["loss"]}},
        # a stage plot without x/y that the top-level plots section describes
        {"path": "roc.csv", "cache": False, "plot": {"x": "fpr", "y": ["tpr"]}},
    ]


def test_frozen_and_always_changed(basic, toml):
    assert toml["stages"]["baseline"]["frozen"] is True
    assert "frozen" not in toml["stages"]["prepare"]
    stamp = toml["stages"]["stamp"]
    assert stamp["always_changed"] is True
    assert stamp["outs"] == [{"path": "stamp.txt", "cache": False}]
    flags = {c.dvc_stage: (c.frozen, c.always_changed) for c in basic.checks}
    assert flags["baseline"] == (True, False) and flags["stamp"] == (False, True)


def test_project_vars_and_remotes(basic, toml):
    assert toml["project"] == {"params_file": "params.yaml", "default_remote": "storage"}
    assert toml["vars"] == {"work_dir": "work", "report_dir": "reports", "tag": "v1",
                            "langs": ["en", "fr"]}
    assert any("config/paths.yaml" in n for n in basic.notes)  # vars file values were copied
    assert toml["remotes"] == {
        "storage": {"url": "../dvc-storage"},  # DVC's path is relative to .dvc/
        "s3store": {"url": "s3://example-bucket/dvc-cache",
                    "endpoint_url": "https://minio.example.invalid:9000",
                    "region": "eu-west-1"},
        "gcs": {"url": "gs://example-bucket/dvc"},
        "cluster": {"url": "ssh://deploy@ssh.example.invalid:2222/srv/dvc"},  # port = 2222
        "web": {"url": "https://dvc.example.invalid/store"},
    }
    assert basic.not_converted == []


def test_no_credential_reaches_any_output(basic):
    everything = "\n".join([basic.toml, *basic.notes, *map(str, basic.not_converted)])
    for secret in SECRETS:
        assert secret not in everything
    assert "reader" not in basic.toml  # the web remote's user name
    # ... but the user is told which settings were left out, by name.
    assert any("config.local" in n and "secret_access_key" in n for n in basic.notes)
    assert any('remote "web".password' in n for n in basic.notes)


def test_credentials_in_a_remote_url_are_dropped(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "['remote \"h\"']\n    url = https://bob:hunter2@host.example/p?token=tok3n&v=1\n")
    conversion = convert(tmp_path)
    remote = tomllib.loads(conversion.toml)["remotes"]["h"]
    assert remote == {"url": "https://bob@host.example/p?v=1"}
    everything = "\n".join([conversion.toml, *conversion.notes])
    assert "hunter2" not in everything and "tok3n" not in everything


def test_templates_render_to_the_commands_dvc_ran(toml):
    """Rendered with pivotbuild's own templating, each instance gives dvc.lock's cmd and paths."""
    params = yaml.safe_load((BASIC / "params.yaml").read_text())
    lock = _lock(BASIC)
    seen = set()
    for base, table in toml["stages"].items():
        if "foreach" in table:
            items = [(f"{base}@{v}", v) for v in table["foreach"]]
        elif "matrix" in table:
            axes = table["matrix"]
            items = [(f"{base}@" + "-".join(combo), dict(zip(axes, combo, strict=True)))
                     for combo in itertools.product(*axes.values())]
        else:
            items = [(base.replace("train-", "train@"), None)]
        for dvc_name, item in items:
            context = {**toml["vars"], "params": params, "item": item}
            cmd = table["cmd"]
            rendered = ([render(c, context) for c in cmd] if isinstance(cmd, list) else
                        render(cmd, context))
            assert rendered == lock[dvc_name]["cmd"], dvc_name
            wdir = render(table.get("wdir", "."), context)
            for section in ("deps", "outs"):
                paths = [p if isinstance(p, str) else p["path"] for p in table.get(section, [])]
                mine = {posixpath.normpath(posixpath.join(wdir, render(p, context)))
                        for p in paths}
                dvc = {posixpath.normpath(posixpath.join(wdir, e["path"]))
                       for e in lock[dvc_name].get(section, [])}
                assert mine == dvc, (dvc_name, section)
            seen.add(dvc_name)
    assert seen == set(lock)


# ---------------------------------------------------------------------------------------------
# checking the workspace against dvc.lock and the .dvc files


def test_fixture_workspace_matches_every_lock_entry(basic):
    for check in basic.checks:
        assert check.problems == ()
        assert check_stage(BASIC, check) == [], check.dvc_stage
    train = {c.dvc_stage: c for c in basic.checks}["train@small"]
    assert train.params == {"train.yaml:epochs": 2, "train.yaml:lr": 0.1}
    images = next(d for d in train.deps if d.path == "data/images")
    assert images == LockedPath("data/images", "64a4180642c45ab5de7af9b3b34c8754.dir", MD5,
                                size=37, nfiles=3)
    report = {c.dvc_stage: c for c in basic.checks}["report"]
    assert [o.path for o in report.outs] == ["reports/history.log", "reports/loss.csv",
                                             "reports/roc.csv", "reports/summary"]


def test_dvc_add_files_become_tracked_paths(basic):
    tracked = {t.path: t for t in basic.tracked}
    assert sorted(tracked) == ["data/images", "data/raw.csv"]
    assert tracked["data/raw.csv"].dvc_file == "data/raw.csv.dvc"
    assert tracked["data/raw.csv"].entry.md5 == "2a4800f3e283d8ada7bd8b7f80914c35"
    assert tracked["data/images"].entry.nfiles == 3
    for t in basic.tracked:
        assert check_tracked(BASIC, t) is None


def test_editing_an_output_or_a_file_in_a_directory_breaks_exactly_its_checks(tmp_path):
    root = _copy("basic", tmp_path)
    (root / "work" / "features-en.csv").write_text("edited\n")
    (root / "models" / "large" / "weights.txt").write_text("0.1\n")
    stale = {name for name, problems in _problems(root).items() if problems}
    assert stale == {"featurize@en", "train@small", "train@large",  # its out / its dep
                     "evaluate@large-val", "evaluate@large-test"}  # dep models/large
    problems = _problems(root)["train@large"]
    assert "work/features-en.csv: content differs from what DVC recorded" in problems
    assert "models/large: content differs from what DVC recorded" in problems


def test_tracked_path_edit_and_removal_are_seen(tmp_path):
    root = _copy("basic", tmp_path)
    (root / "data" / "images" / "sub" / "extra.txt").write_text("x\n")  # an untracked file
    (root / "data" / "raw.csv").unlink()
    checks = {t.path: check_tracked(root, t) for t in convert(root).tracked}
    assert checks == {"data/images": "data/images: content differs from what DVC recorded",
                      "data/raw.csv": "data/raw.csv: missing from the workspace"}


def test_a_param_edit_makes_stale_what_dvc_status_says(tmp_path):
    """expected_status_after_edit.json is what `dvc status` printed after the same edit."""
    header = (DATA / "expected_status_after_edit.txt").read_text().splitlines()[0]
    assert header == "# edit: in train.yaml, lr: 0.1 -> 0.2 (nothing else changed)"
    dvc_status = json.loads((DATA / "expected_status_after_edit.json").read_text())
    root = _copy("basic", tmp_path)
    train = root / "train.yaml"
    train.write_text(train.read_text().replace("lr: 0.1\n", "lr: 0.2\n"))
    conversion = convert(root)
    stale = {c.dvc_stage for c in conversion.checks if check_stage(root, c)}
    always = {c.dvc_stage for c in conversion.checks if c.always_changed}
    assert stale | always == set(dvc_status)
    assert always == {name for name, why in dvc_status.items() if "always changed" in why}
    assert _problems(root)["train@small"] == [
        "DVC stage 'train@small': param 'lr' in train.yaml differs from dvc.lock"]


def test_a_cmd_or_structure_change_is_a_problem_before_hashing(tmp_path):
    root = _copy("basic", tmp_path)
    text = (root / "dvc.yaml").read_text()
    text = text.replace("echo baseline > baseline.txt", "echo other > baseline.txt")
    text = text.replace("    - ../scripts/report.py\n", "")  # the dep, not the cmd
    (root / "dvc.yaml").write_text(text)
    checks = {c.dvc_stage: c for c in convert(root).checks}
    assert checks["baseline"].problems == ("cmd differs from dvc.lock",)
    assert checks["report"].problems == ("deps differ from dvc.lock",)
    assert checks["prepare"].problems == ()


# ---------------------------------------------------------------------------------------------
# what cannot be converted


def test_unconvertible_items_are_each_listed_with_a_reason():
    root = DATA / "unconvertible"
    conversion = convert(root)
    listed = {n.what: n.reason for n in conversion.not_converted}
    assert set(listed) == {
        "data/shared.csv.dvc", "data/external.txt.dvc", "sub/dvc.yaml",
        "dvc.yaml: artifacts.classifier", "dvc.yaml: stages.use.outs[0].push",
        "dvc.yaml: stages.use.outs[1].remote",
    }
    assert "dvc import" in listed["data/shared.csv.dvc"]
    assert "../source-repo" in listed["data/shared.csv.dvc"]
    assert "dvc import-url" in listed["data/external.txt.dvc"]
    assert conversion.tracked == []  # imports are not tracked paths
    # The stages themselves convert; DVC's table-to-arguments expansion is written out.
    stages = tomllib.loads(conversion.toml)["stages"]
    assert stages["args"]["cmd"] == _lock(root)["args"]["cmd"]
    assert stages["args"]["params"] == ["train"]
    assert any("${train}" in n for n in conversion.notes)
    assert all(check_stage(root, c) == [] for c in conversion.checks)


# ---------------------------------------------------------------------------------------------
# DVC's hashes


@pytest.mark.parametrize("path,hash_name", [
    ("basic/data/images", MD5), ("basic/models/small", MD5), ("basic/models/large", MD5),
    ("basic/reports/summary", MD5), ("dvc2/data/dir", MD5_DOS2UNIX),
    ("dvc2/outdir", MD5_DOS2UNIX),
])
def test_dir_listing_is_byte_identical_to_dvcs_cache_object(path, hash_name):
    listing = dir_listing(DATA / path, hash_name)
    assert listing.listing == (DATA / "dir_objects" / listing.md5).read_bytes()
    assert hashlib.md5(listing.listing).hexdigest() + ".dir" == listing.md5


def test_dvc2_lock_uses_dos2unix_md5():
    root = DATA / "dvc2"
    conversion = convert(root)
    crlf = next(t for t in conversion.tracked if t.path == "data/crlf.csv").entry
    assert crlf.hash_name == MD5_DOS2UNIX  # no `hash:` key in a DVC 2 .dvc file
    assert file_md5(root / "data/crlf.csv", MD5_DOS2UNIX) == crlf.md5
    assert file_md5(root / "data/crlf.csv", MD5) != crlf.md5  # raw bytes would not match
    assert all(check_tracked(root, t) is None for t in conversion.tracked)
    assert all(check_stage(root, c) == [] for c in conversion.checks)


def test_dvc3_hashes_raw_bytes_of_a_crlf_file():
    data = (BASIC / "data/raw.csv").read_bytes()
    assert b"\r\n" in data
    assert file_md5(BASIC / "data/raw.csv", MD5) == hashlib.md5(data).hexdigest()


def test_dos2unix_rules(tmp_path):
    text = tmp_path / "t.txt"
    text.write_bytes(b"a\r\n")
    assert file_md5(text, MD5_DOS2UNIX) == "60b725f10c9c85c70d97880dfe8191b3"  # DVC 2.58.2
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x00a\r\n")
    assert file_md5(binary, MD5_DOS2UNIX) == hashlib.md5(b"\x00a\r\n").hexdigest()
    # Chunks of 1 MiB are judged and normalised one by one: a CRLF split across two stays.
    split = tmp_path / "split.txt"
    body = b"a" * ((1 << 20) - 1) + b"\r\nb\r\n"
    split.write_bytes(body)
    expected = b"a" * ((1 << 20) - 1) + b"\r\nb\n"
    assert file_md5(split, MD5_DOS2UNIX) == hashlib.md5(expected).hexdigest()


def test_check_path_names_what_is_wrong(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    md5 = hashlib.md5(b"x").hexdigest()
    assert check_path(tmp_path, LockedPath("f", md5, MD5)) is None
    assert check_path(tmp_path, LockedPath("gone", md5, MD5)) == "gone: missing from the " \
                                                                  "workspace"
    assert "recorded as a file" in check_path(tmp_path, LockedPath("d", md5, MD5))
    assert "recorded as a directory" in check_path(tmp_path, LockedPath("f", md5 + ".dir", MD5))
    assert "unsupported DVC hash 'etag'" in check_path(tmp_path, LockedPath("f", md5, "etag"))


def test_listing_of_many_nested_files_is_sorted_by_relpath(tmp_path):
    top = tmp_path / "many"
    for i in range(100):
        (top / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (top / f"d{i % 7}" / f"f{i}.txt").write_text(f"line {i}\r\n")
    listing = dir_listing(top, MD5_DOS2UNIX)
    entries = json.loads(listing.listing)
    assert listing.nfiles == len(entries) == 100
    assert [e["relpath"] for e in entries] == sorted(e["relpath"] for e in entries)
    first = next(e for e in entries if e["relpath"] == "d0/f0.txt")
    assert first["md5"] == hashlib.md5(b"line 0\n").hexdigest()


# ---------------------------------------------------------------------------------------------
# ${...} corner cases and errors, on small hand-written projects


def _project(tmp_path: Path, dvc_yaml: str, **files: str) -> Path:
    (tmp_path / "dvc.yaml").write_text(dvc_yaml)
    for name, text in files.items():
        (tmp_path / name.replace("__", "/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name.replace("__", "/")).write_text(text)
    return tmp_path


def test_escapes_and_dollar_before_a_reference_render_as_dvc_resolves_them(tmp_path):
    root = _project(tmp_path, "vars:\n  - name: x\nstages:\n  s:\n"
                              "    cmd: echo \\${HOME} $${name} ${name}\n")
    stage = tomllib.loads(convert(root).toml)["stages"]["s"]
    assert render(stage["cmd"], {"name": "x"}) == "echo ${HOME} $x x"


def test_matrix_using_key_and_stage_vars_is_unrolled(tmp_path):
    root = _project(tmp_path, "stages:\n  m:\n    matrix:\n      a: [1, 2]\n"
                              "    vars:\n      - local: L\n"
                              "    cmd: run ${key} ${local} ${item.a}\n")
    conversion = convert(root)
    stages = tomllib.loads(conversion.toml)["stages"]
    assert stages == {"m-1": {"cmd": "run 1 L 1"}, "m-2": {"cmd": "run 2 L 2"}}
    assert [c.dvc_stage for c in conversion.checks] == ["m@1", "m@2"]
    assert all(c.problems == (f"DVC stage {c.dvc_stage!r}: not in dvc.lock (DVC never ran it)",)
               for c in conversion.checks)


def test_a_metric_no_stage_outputs_is_not_converted(tmp_path):
    root = _project(tmp_path, "stages:\n  s:\n    cmd: echo\n    outs: [o.txt]\n"
                              "metrics:\n  - committed.json\n")
    listed = [str(n) for n in convert(root).not_converted]
    assert listed == [("dvc.yaml: metrics[0]: 'committed.json' is not an output of any "
                       "stage (pivotbuild flags outputs only)")]


@pytest.mark.parametrize("text,where,problem", [
    ("stages:\n  s:\n    cmd: a: b\n  t: 1\n", "line 3", "invalid YAML: mapping values"),
    ("stages:\n  s:\n    cmd: echo ${nope}\n", "stages.s.cmd", "undefined variable '${nope}'"),
    ("stages:\n  s:\n    deps: [a]\n", "stages.s", "a stage needs a 'cmd'"),
    ("vars: [missing.yaml]\nstages: {}\n", "vars[0]", "no such file inside the project"),
    ("stages:\n  s:\n    wdir: ../up\n    cmd: x\n", "stages.s.wdir", "leaves the project"),
])
def test_bad_dvc_yaml_is_a_config_error_naming_the_key(tmp_path, text, where, problem):
    root = _project(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        convert(root)
    assert err.value.file == "dvc.yaml" and err.value.key == where
    assert problem in err.value.problem
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2


def test_not_a_dvc_project(tmp_path):
    with pytest.raises(ConfigError, match=r"dvc\.yaml: not found"):
        convert(tmp_path)


# ---------------------------------------------------------------------------------------------
# the TOML writer

_text = st.text(st.characters(blacklist_categories=("Cs",)))
_scalar = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text |
           st.floats(allow_nan=False))
_values = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=4) |
                       st.dictionaries(_text, inner, max_size=4), max_leaves=12)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(key=_text, value=_values)
def test_toml_values_and_keys_round_trip_through_tomllib(key, value):
    text = f"{tomlwrite.key(key)} = {tomlwrite.value(value)}\n"
    assert tomllib.loads(text) == {key: value}


def test_toml_writer_spellings():
    assert tomlwrite.string('a"b\\c\n\x7f\x01é') == '"a\\"b\\\\c\\n\\u007f\\u0001é"'
    assert tomlwrite.key("a.b") == '"a.b"' and tomlwrite.key("a-b_1") == "a-b_1"
    assert tomlwrite.value(1e20) == "1e+20" and tomlwrite.value(2.0) == "2.0"
    assert tomlwrite.dotted("stages", "a@b") == 'stages."a@b"'
    with pytest.raises(tomlwrite.TomlValueError):
        tomlwrite.value({"a": None})
    long = [f"item-{i:03}" for i in range(20)]
    assert tomllib.loads("x = " + tomlwrite.array(long))["x"] == long
    assert "\n" in tomlwrite.array(long)


def test_dvc_config_settings_map_or_are_reported(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "[core]\n    remote = nested\n    autostage = true\n"
        "[cache]\n    type = reflink,symlink,copy\n"
        "[parsing]\n    bool = boolean_optional\n"
        "['remote \"nested\"']\n    url = remote://other/sub\n"
        "['remote \"bad name\"']\n    url = /srv/x\n")
    root = _project(tmp_path, "stages:\n  s:\n    cmd: run ${opts}\n"
                              "vars:\n  - opts: {fast: false, n: 2}\n")
    conversion = convert(root)
    toml = tomllib.loads(conversion.toml)
    assert toml["project"] == {"checkout": ["reflink", "copy"]}  # no usable default remote
    assert "remotes" not in toml
    # parsing.bool = boolean_optional: DVC writes a false flag as --no-NAME
    assert toml["stages"]["s"]["cmd"] == "run --no-fast --n 2"
    assert {n.what for n in conversion.not_converted} == {
        '.dvc/config: remote "nested".url', '.dvc/config: remote "bad name".url'}
    assert any("core.autostage" in n for n in conversion.notes)
    assert any("cache.type" in n for n in conversion.notes)


def test_repeated_foreach_values_are_one_stage_as_in_dvc(tmp_path):
    root = _project(tmp_path, "stages:\n  f:\n    foreach: [a, b, a]\n    do:\n"
                              "      cmd: echo ${item}\n")
    conversion = convert(root)
    assert tomllib.loads(conversion.toml)["stages"]["f"]["foreach"] == ["a", "b"]
    assert [c.dvc_stage for c in conversion.checks] == ["f@a", "f@b"]


def test_a_dict_foreach_using_only_its_key_keeps_dvcs_names(tmp_path):
    root = _project(tmp_path, "stages:\n  t:\n    foreach:\n      small: {u: 1}\n"
                              "      large: {u: 2}\n    do:\n      cmd: run ${key} > o-${key}\n"
                              "      outs:\n      - o-${key}\n")
    conversion = convert(root)
    assert tomllib.loads(conversion.toml)["stages"] == {"t": {
        "foreach": ["small", "large"], "cmd": "run ${item} > o-${item}", "outs": ["o-${item}"]}}
    assert [(c.stage, c.dvc_stage) for c in conversion.checks] == [
        ("t@small", "t@small"), ("t@large", "t@large")]


def test_an_unrolled_instance_names_its_dvc_stage_in_a_comment(basic):
    assert "# dvc.yaml: train@small\n[stages.train-small]" in basic.toml


def test_a_port_that_cannot_go_into_the_url_is_not_converted(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "['remote \"a\"']\n    url = ssh://h:22/x\n    port = 2222\n"
        "['remote \"b\"']\n    url = ssh://h:2222/x\n    port = 2222\n")
    conversion = convert(_project(tmp_path, "stages: {}\n"))
    assert tomllib.loads(conversion.toml)["remotes"] == {
        "a": {"url": "ssh://h:22/x"}, "b": {"url": "ssh://h:2222/x"}}
    assert [n.what for n in conversion.not_converted] == ['.dvc/config: remote "a".port']


@pytest.mark.parametrize("cache", [".dvc/cache/files/md5", ".dvc/cache"])  # DVC 3, DVC 2
def test_a_directory_is_checked_against_dvcs_cached_listing_file_by_file(tmp_path, cache):
    root = _copy("basic", tmp_path)
    md5 = "64a4180642c45ab5de7af9b3b34c8754.dir"  # data/images, as dvc add recorded it
    entry = LockedPath("data/images", md5, MD5)
    shelf = root / cache / md5[:2]
    shelf.mkdir(parents=True)
    shutil.copy(DATA / "dir_objects" / md5, shelf / md5[2:])
    assert cached_listing(root, md5) == [
        (rel, hashlib.md5((root / "data/images" / rel).read_bytes()).hexdigest())
        for rel in ("a.txt", "b.bin", "sub/c.txt")]
    assert check_path(root, entry) is None
    (root / "data/images/sub/c.txt").write_text("changed\n")
    assert check_path(root, entry) == (
        "data/images: 1 file(s) differ from what DVC recorded (e.g. sub/c.txt)")
    (root / "data/images/new.txt").write_text("new\n")
    (root / "data/images/a.txt").unlink()
    assert check_path(root, entry) == (
        "data/images: 1 file(s) DVC did not record (e.g. new.txt); 1 recorded file(s) "
        "missing (e.g. a.txt)")


def test_a_cached_listing_that_is_not_what_its_name_says_is_not_used(tmp_path):
    root = _copy("basic", tmp_path)
    md5 = "64a4180642c45ab5de7af9b3b34c8754.dir"
    shelf = root / ".dvc/cache/files/md5" / md5[:2]
    shelf.mkdir(parents=True)
    (shelf / md5[2:]).write_text('[{"md5": "0", "relpath": "a.txt"}]')
    assert cached_listing(root, md5) is None
    assert check_path(root, LockedPath("data/images", md5, MD5)) is None  # listing rebuilt
