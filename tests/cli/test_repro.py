"""`repro`, `status`, `dag` and `history` through the CLI, in temporary projects.

Every test counts what ran with a marker file the stage's cmd appends to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import lock, ran, run

TWO_STAGES = """
[stages.prepare]
cmd = "echo prepare >> runs.log; tr a-z A-Z < raw.txt > clean.txt"
deps = ["raw.txt"]
outs = ["clean.txt"]

[stages.train]
cmd = "echo train >> runs.log; mkdir -p model; cp clean.txt model/w; wc -c < clean.txt > metrics.json"
deps = ["clean.txt"]
outs = ["model", {path = "metrics.json", cache = false}]
"""


@pytest.fixture
def pipe(tmp_path: Path) -> Path:
    (tmp_path / "pivot.toml").write_text(TWO_STAGES)
    (tmp_path / "raw.txt").write_text("hello\n")
    return tmp_path


def test_first_repro_runs_everything_in_order_then_nothing(pipe):
    result = run(["repro"], pipe)
    assert result.code == 0, result.err
    assert ran(pipe) == ["prepare", "train"]
    assert (pipe / "clean.txt").read_text() == "HELLO\n"
    train = lock(pipe, "train")
    assert [o["path"] for o in train["outs"]] == ["metrics.json", "model"]
    assert train["outs"][1]["hash"].endswith(".dir") and train["outs"][1]["nfiles"] == 1
    assert train["outs"][0]["cache"] is False and len(train["outs"][0]["hash"]) == 32
    assert run(["repro"], pipe).code == 0
    assert ran(pipe) == ["prepare", "train"]
    status = json.loads(run(["status", "--json"], pipe).out)
    assert [s["status"] for s in status["stages"]] == ["up-to-date", "up-to-date"]


def test_lock_is_byte_stable_and_holds_no_absolute_path(pipe, tmp_path_factory):
    assert run(["repro"], pipe).code == 0
    text = (pipe / ".pivotbuild" / "locks" / "train.json").read_text()
    assert str(pipe) not in text and text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    other = tmp_path_factory.mktemp("elsewhere")
    (other / "pivot.toml").write_text(TWO_STAGES)
    (other / "raw.txt").write_text("hello\n")
    assert run(["repro"], other).code == 0
    assert (other / ".pivotbuild" / "locks" / "train.json").read_text() == text


def test_touch_changes_nothing_but_content_does(pipe):
    run(["repro"], pipe)
    os.utime(pipe / "raw.txt")
    run(["repro"], pipe)
    assert ran(pipe) == ["prepare", "train"]
    (pipe / "raw.txt").write_text("world\n")
    status = json.loads(run(["status", "--json"], pipe).out)["stages"]
    assert status[0]["reasons"] == [{"kind": "dep-changed", "path": "raw.txt"}]
    assert {"kind": "upstream-stale", "stage": "prepare"} in status[1]["reasons"]
    run(["repro"], pipe)
    assert ran(pipe) == ["prepare", "train"] * 2


def test_downstream_skipped_when_upstream_output_comes_out_identical(pipe):
    run(["repro"], pipe)
    (pipe / "raw.txt").write_text("HELLO\n")  # different input, same upper-cased output
    result = run(["repro"], pipe)
    assert result.code == 0
    assert ran(pipe) == ["prepare", "train", "prepare"]


def test_reordering_and_flags_do_not_make_stale(pipe):
    (pipe / "params.toml").write_text("[a]\nx = 1\ny = 2\n")
    (pipe / "pivot.toml").write_text(
        '[stages.s]\ncmd = "echo s >> runs.log; cat a b > out1; cp a out2"\n'
        'deps = ["a", "b"]\nouts = ["out1", "out2"]\nparams = ["a.x", "a.y"]\n'
    )
    (pipe / "a").write_text("A")
    (pipe / "b").write_text("B")
    run(["repro"], pipe)
    (pipe / "pivot.toml").write_text(
        '[stages.s]\ncmd = "echo s >> runs.log; cat a b > out1; cp a out2"\n'
        'deps = ["./b", "a"]\nparams = ["a.y", "a.x"]\ndesc = "now described"\n'
        'outs = [{path = "out2", cache = false}, "out1"]\nfrozen = false\n'
    )
    assert json.loads(run(["status", "--json"], pipe).out)["stages"][0]["status"] == "up-to-date"
    run(["repro"], pipe)
    assert ran(pipe) == ["s"]
    (pipe / "params.toml").write_text("[a]\nx = 1\ny = 3\n")
    reasons = json.loads(run(["status", "--json"], pipe).out)["stages"][0]["reasons"]
    assert reasons == [{"kind": "params-changed", "key": "a.y"}]


def test_missing_output_is_restored_from_cache_without_running(pipe):
    run(["repro"], pipe)
    (pipe / "clean.txt").unlink()
    result = run(["repro"], pipe)
    assert result.code == 0
    assert ran(pipe) == ["prepare", "train"]
    assert (pipe / "clean.txt").read_text() == "HELLO\n"


def test_modified_output_is_restored(pipe):
    run(["repro"], pipe)
    os.chmod(pipe / "model" / "w", 0o644)
    (pipe / "model" / "w").unlink()
    (pipe / "model" / "w").write_text("tampered")
    reasons = json.loads(run(["status", "--json"], pipe).out)["stages"][1]["reasons"]
    assert reasons == [{"kind": "out-changed", "path": "model"}]
    run(["repro"], pipe)
    assert ran(pipe) == ["prepare", "train"]
    assert (pipe / "model" / "w").read_text() == "HELLO\n"


def test_missing_non_cached_output_means_a_run(pipe):
    run(["repro"], pipe)
    (pipe / "metrics.json").unlink()
    run(["repro"], pipe)
    assert ran(pipe) == ["prepare", "train", "train"]


def test_run_cache_restores_a_previous_result(pipe):
    run(["repro", "prepare"], pipe)
    (pipe / "raw.txt").write_text("world\n")
    run(["repro", "prepare"], pipe)
    (pipe / "raw.txt").write_text("hello\n")
    result = run(["repro", "prepare", "--json"], pipe)
    doc = json.loads(result.out)
    assert doc["stages"][0]["action"] == "run-cache"
    assert ran(pipe) == ["prepare", "prepare"]
    assert (pipe / "clean.txt").read_text() == "HELLO\n"
    assert lock(pipe, "prepare")["input_hash"] == doc["stages"][0]["input_hash"]
    (pipe / "raw.txt").write_text("world\n")
    run(["repro", "prepare", "--no-run-cache"], pipe)
    assert ran(pipe) == ["prepare", "prepare", "prepare"]


def test_frozen_never_runs_and_its_upstream_is_not_walked(pipe):
    run(["repro"], pipe)
    text = TWO_STAGES.replace('[stages.train]\n', '[stages.train]\nfrozen = true\n')
    (pipe / "pivot.toml").write_text(text)
    (pipe / "raw.txt").write_text("changed\n")
    result = run(["repro", "train"], pipe)
    assert result.code == 0
    assert ran(pipe) == ["prepare", "train"]
    stages = json.loads(run(["status", "--json", "train"], pipe).out)["stages"]
    assert stages == [{"name": "train", "status": "frozen", "reasons": []}]


def test_always_changed_runs_every_time(pipe):
    (pipe / "pivot.toml").write_text(
        '[stages.tick]\ncmd = "echo tick >> runs.log; date > now"\nouts = ["now"]\n'
        "always_changed = true\n"
    )
    run(["repro"], pipe)
    run(["repro"], pipe)
    assert ran(pipe) == ["tick", "tick"]
    reasons = json.loads(run(["status", "--json"], pipe).out)["stages"][0]["reasons"]
    assert reasons == [{"kind": "always-changed"}]


FAILING = """
[stages.bad]
cmd = "echo bad >> runs.log; exit 3"
outs = ["bad.out"]

[stages.after_bad]
cmd = "echo after_bad >> runs.log; cp bad.out after"
deps = ["bad.out"]
outs = ["after"]

[stages.good]
cmd = "echo good >> runs.log; echo ok > good.out"
deps = ["raw.txt"]
outs = ["good.out"]
"""


def test_keep_going_runs_what_is_not_downstream_of_a_failure(pipe):
    (pipe / "pivot.toml").write_text(FAILING)
    result = run(["repro", "-k", "-j", "1", "--json"], pipe)
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["ok"] is False
    by_name = {s["name"]: s for s in doc["stages"]}
    assert by_name["bad"]["status"] == "failed"
    assert by_name["after_bad"]["status"] == "not-run"
    assert by_name["good"]["status"] == "ok"
    assert sorted(ran(pipe)) == ["bad", "good"]
    assert not (pipe / ".pivotbuild" / "locks" / "bad.json").exists()


def test_without_keep_going_no_stage_starts_after_a_failure(pipe):
    (pipe / "pivot.toml").write_text(FAILING)
    result = run(["repro", "-j", "1"], pipe)
    assert result.code == 1
    assert ran(pipe) == ["bad"]
    assert "stage 'bad' failed: command exited with code 3" in result.err


def test_failed_stage_keeps_its_old_lock_and_leaves_outputs(pipe):
    run(["repro"], pipe)
    before = lock(pipe, "prepare")
    (pipe / "pivot.toml").write_text(TWO_STAGES.replace(
        "tr a-z A-Z < raw.txt > clean.txt", "echo partial > clean.txt; false"))
    assert run(["repro", "prepare"], pipe).code == 1
    assert lock(pipe, "prepare") == before
    assert (pipe / "clean.txt").read_text() == "partial\n"


def test_missing_declared_output_fails_the_stage(pipe):
    (pipe / "pivot.toml").write_text('[stages.s]\ncmd = "true"\nouts = ["never"]\n')
    result = run(["repro"], pipe)
    assert result.code == 1
    assert "declared output 'never' not produced" in result.err


def test_cmd_list_stops_at_first_failure_and_env_and_wdir(pipe):
    (pipe / "sub").mkdir()
    (pipe / "pivot.toml").write_text(
        '[stages.s]\nwdir = "sub"\n'
        'cmd = ["echo $PIVOTBUILD_STAGE $PIVOTBUILD_ROOT $(pwd) > env.txt", "false", '
        '"echo never > never.txt"]\nouts = ["env.txt"]\n'
    )
    assert run(["repro"], pipe).code == 1
    stage, root, cwd = (pipe / "sub" / "env.txt").read_text().split()
    assert stage == "s" and Path(root) == pipe.resolve() and Path(cwd) == pipe.resolve() / "sub"
    assert not (pipe / "sub" / "never.txt").exists()


def test_force_and_single_item(pipe):
    run(["repro"], pipe)
    run(["repro", "-f"], pipe)
    assert ran(pipe) == ["prepare", "train"] * 2
    run(["repro", "-f", "-s", "train"], pipe)
    assert ran(pipe) == ["prepare", "train"] * 2 + ["train"]


def test_dry_run_writes_nothing(pipe):
    result = run(["repro", "-n", "--json"], pipe)
    assert result.code == 0
    doc = json.loads(result.out)
    assert [(s["name"], s["action"]) for s in doc["stages"]] == [("prepare", "run"),
                                                                 ("train", "run")]
    assert ran(pipe) == []
    assert not (pipe / ".pivotbuild" / "locks").exists()
    assert not (pipe / ".pivotbuild" / "cache").exists()


def test_parallel_stages_run_at_the_same_time_with_prefixed_lines(pipe):
    # Each stage waits for the other's flag: this only finishes if both run at once.
    wait = "for i in $(seq 1 200); do [ -e {f} ] && break; sleep 0.05; done; [ -e {f} ]"
    (pipe / "pivot.toml").write_text(
        f'[stages.a]\ncmd = "touch a.flag; echo from-a; {wait.format(f="b.flag")}; '
        f'echo a > a.out"\nouts = ["a.out"]\n'
        f'[stages.b]\ncmd = "touch b.flag; echo from-b; {wait.format(f="a.flag")}; '
        f'echo b > b.out"\nouts = ["b.out"]\n'
    )
    result = run(["repro", "-j", "2"], pipe)
    assert result.code == 0, result.err
    assert "[a] from-a" in result.out.splitlines()
    assert "[b] from-b" in result.out.splitlines()


def test_config_error_exits_2_and_writes_nothing(pipe):
    (pipe / "pivot.toml").write_text('[stages.s]\ncmd = "true"\nouts = ["../x"]\n')
    result = run(["repro"], pipe)
    assert result.code == 2
    assert result.err.strip() == (
        "pivotbuild: error: pivot.toml: stages.s.outs[0]: path escapes the project root: '../x'"
    )
    assert not (pipe / ".pivotbuild").exists()
    assert run(["repro", "nosuchstage"], pipe).code == 2


def test_status_quiet_exit_code(pipe):
    assert run(["status", "-q"], pipe).code == 1
    run(["repro"], pipe)
    assert run(["status", "-q"], pipe).code == 0


def test_dag_formats(pipe):
    doc = json.loads(run(["dag", "--json"], pipe).out)
    assert doc == {"stages": ["prepare", "train"], "edges": [["prepare", "train"]]}
    assert run(["dag", "--dot"], pipe).out.startswith("digraph")
    assert "flowchart" in run(["dag", "--mermaid"], pipe).out


def test_history_records_runs(pipe):
    run(["repro"], pipe)
    runs = json.loads(run(["history", "--json"], pipe).out)["runs"]
    assert [r["stage"] for r in runs] == ["prepare", "train"]
    assert all(r["committed"] and r["status"] == "ok" and len(r["input_hash"]) == 32
               for r in runs)
    assert runs[1]["input_hash"] == lock(pipe, "train")["input_hash"]
    only = json.loads(run(["history", "train", "--json"], pipe).out)["runs"]
    assert [r["stage"] for r in only] == ["train"]


def test_ctrl_c_stops_commands_writes_no_lock_and_exits_130(pipe):
    (pipe / "pivot.toml").write_text(
        '[stages.slow]\ncmd = "echo $$ > pid; touch started; sleep 60; echo x > out"\n'
        'outs = ["out"]\n'
    )
    proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", "repro"], cwd=pipe,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(400):
        if (pipe / "started").exists():
            break
        time.sleep(0.025)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not (pipe / ".pivotbuild" / "locks" / "slow.json").exists()
    child = int((pipe / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    runs = json.loads(run(["history", "--json"], pipe).out)["runs"]
    assert runs[0]["status"] == "interrupted" and runs[0]["committed"] is False
