"""metrics show/diff, params diff, plots show/diff and diff (SPEC §11) on examples/datapipe in a
git repository of two commits: the first with transform.threshold = 0.25, the second with 0.5
and a tracked file. Revisions are read from git objects, never checked out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import git, run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "datapipe"
def flat(doc: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare") / "datapipe"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".pivotbuild", "data"))
    # Outputs are not git's, except metrics.json (cache = false): curve.csv, a cached plot,
    # is read through the commit's lock and the cache.
    (root / ".gitignore").write_text("/data/\n/report.md\n/curve.csv\n/labels.csv\n")
    git(root, "init", "-q")
    assert run(["repro"], root).code == 0
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "threshold 0.25")
    params = root / "params.toml"
    params.write_text(params.read_text().replace("threshold = 0.25", "threshold = 0.5"))
    assert run(["repro"], root).code == 0
    (root / "labels.csv").write_text("id,label\n1,x\n")
    assert run(["track", "labels.csv"], root).code == 0
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "threshold 0.5, labels tracked")
    return root


@pytest.fixture
def clone(history: Path, tmp_path: Path) -> Path:
    """A copy of the repository (cache included) a test may change."""
    root = tmp_path / "datapipe"
    shutil.copytree(history, root, symlinks=True)
    return root


def test_metrics_show_json_text_and_md(history: Path) -> None:
    shown = run(["metrics", "show", "--json"], history)
    assert shown.code == 0, shown.err
    on_disk = flat(json.loads((history / "metrics.json").read_text()))
    assert json.loads(shown.out) == {"metrics.json": on_disk}
    assert on_disk["total.rows"] > 0 and "a.mean" in on_disk
    text = run(["metrics", "show"], history).out.splitlines()
    assert text[0] == "metrics.json"
    assert text[1].split() == ["a.mean", str(on_disk["a.mean"])]
    md = run(["metrics", "show", "--md"], history).out.splitlines()
    assert md[:2] == ["| Path | Metric | Value |", "|---|---|---|"]
    assert f"| metrics.json | total.rows | {on_disk['total.rows']} |" in md


def test_metrics_diff_reads_the_older_commit_from_git(history: Path) -> None:
    status_before = git(history, "status", "--porcelain")
    old = flat(json.loads(git(history, "show", "HEAD~1:metrics.json")))
    new = flat(json.loads((history / "metrics.json").read_text()))
    assert old["total.rows"] > new["total.rows"]  # a higher threshold keeps fewer rows
    result = run(["metrics", "diff", "HEAD~1", "--json"], history)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert list(doc) == ["metrics.json"]
    assert doc["metrics.json"]["total.rows"] == {
        "old": old["total.rows"], "new": new["total.rows"],
        "diff": new["total.rows"] - old["total.rows"]}
    for key, entry in doc["metrics.json"].items():
        assert entry["old"] == old[key] and entry["new"] == new[key]
        assert entry["diff"] == pytest.approx(new[key] - old[key])
    assert set(doc["metrics.json"]) == {k for k in new if new[k] != old[k]}
    # Nothing was checked out: HEAD, the index and the workspace are as they were.
    assert git(history, "status", "--porcelain") == status_before
    assert flat(json.loads((history / "metrics.json").read_text())) == new

    # The default revision is HEAD, which the workspace equals.
    assert json.loads(run(["metrics", "diff", "--json"], history).out) == {}
    same = run(["metrics", "diff"], history)
    assert same.code == 0 and "no metric changed between HEAD and workspace" in same.out
    text = run(["metrics", "diff", "HEAD~1"], history).out.splitlines()
    assert text[0].split() == ["Path", "Metric", "HEAD~1", "workspace", "Change"]
    row = next(line.split() for line in text if " total.rows " in line)
    assert row == ["metrics.json", "total.rows", str(old["total.rows"]),
                   str(new["total.rows"]), str(new["total.rows"] - old["total.rows"])]
    md = run(["metrics", "diff", "HEAD~1", "--md"], history).out.splitlines()
    assert md[0] == "| Path | Metric | HEAD~1 | workspace | Change |"
    # --all lists unchanged keys too, with a diff of 0.
    every = json.loads(run(["metrics", "diff", "--all", "--json"], history).out)
    assert set(every["metrics.json"]) == set(new)
    assert all(e["diff"] == 0 for e in every["metrics.json"].values())


def test_params_diff_json_text_and_md(history: Path) -> None:
    result = run(["params", "diff", "HEAD~1", "--json"], history)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "params.toml": {"transform.threshold": {"old": 0.25, "new": 0.5, "diff": 0.25}}}
    assert json.loads(run(["params", "diff", "--json"], history).out) == {}
    text = run(["params", "diff", "HEAD~1"], history).out.splitlines()
    assert text[0].split() == ["Path", "Param", "HEAD~1", "workspace", "Change"]
    assert text[1].split() == ["params.toml", "transform.threshold", "0.25", "0.5", "+0.25"]
    md = run(["params", "diff", "HEAD~1", "--md"], history).out.splitlines()
    assert md[2] == "| params.toml | transform.threshold | 0.25 | 0.5 | +0.25 |"
    every = json.loads(run(["params", "diff", "--all", "--json"], history).out)
    assert set(every["params.toml"]) == {"generate.seed", "generate.rows",
                                         "transform.threshold", "transform.scale"}


def test_params_diff_a_yaml_params_file_and_a_removed_stage(clone: Path) -> None:
    # A stage using other.yaml:lr (YAML 1.2: 1e-3 is a number) is added in the workspace; a
    # stage of HEAD~1 is gone: its params (from HEAD~1's lock) are still compared.
    (clone / "other.yaml").write_text("lr: 1e-3\n")
    toml = (clone / "pivot.toml").read_text()
    toml = toml.replace('params = ["generate.seed", "generate.rows"]', 'params = ["generate.rows"]')
    toml += ('\n[stages.extra]\ncmd = "echo extra > extra.txt"\nparams = ["other.yaml:lr"]\n'
             'outs = ["extra.txt"]\n')
    (clone / "pivot.toml").write_text(toml)
    params = (clone / "params.toml").read_text()
    (clone / "params.toml").write_text(params.replace("seed = 42", "seed = 7"))
    expected = {
        "params.toml": {"generate.seed": {"old": 42, "new": 7, "diff": -35},
                        "transform.threshold": {"old": 0.25, "new": 0.5, "diff": 0.25}},
        "other.yaml": {"lr": {"old": None, "new": 0.001}}}
    # The second time, the params HEAD~1's locks use come from the memo (by git's id of its
    # locks directory), generate.seed among them: the same answer.
    for _ in range(2):
        assert json.loads(run(["params", "diff", "HEAD~1", "--json"], clone).out) == expected
    # A commit whose locks differ (a new tree id) is read afresh: HEAD's locks have the
    # extra stage's other.yaml:lr, which the workspace's pivot.toml no longer names.
    assert run(["repro"], clone).code == 0
    git(clone, "add", ".")
    git(clone, "commit", "-q", "-m", "extra stage")
    (clone / "pivot.toml").write_text(toml[:toml.index("\n[stages.extra]")] + "\n")
    every = json.loads(run(["params", "diff", "--all", "--json"], clone).out)
    assert every["other.yaml"] == {"lr": {"old": 0.001, "new": 0.001, "diff": 0.0}}


def test_diff_lists_outputs_files_inside_directories_and_tracked_paths(clone: Path) -> None:
    result = run(["diff", "HEAD~1", "--json"], clone)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    modified = [item["path"] for item in doc["modified"]]
    groups = sorted(p.name for p in (clone / "data" / "clean").iterdir())
    assert modified == sorted(["curve.csv", "data/clean/", "metrics.json", "report.md",
                               *(f"data/clean/{g}" for g in groups)])
    assert [item["path"] for item in doc["added"]] == ["labels.csv"]
    assert doc["deleted"] == [] and doc["not_in_cache"] == []
    entry = next(item for item in doc["modified"] if item["path"] == "data/clean/")
    assert entry["hash"]["old"].endswith(".dir") and entry["hash"]["new"].endswith(".dir")
    assert entry["hash"]["old"] != entry["hash"]["new"]
    text = run(["diff", "HEAD~1"], clone).out.splitlines()
    assert text[0] == "Added:" and "    labels.csv" in text
    assert text[-1] == (f"files summary: 1 added, 0 deleted, {3 + len(groups)} modified")

    # Against HEAD nothing changed; then the tracked file is edited, an output deleted.
    same = json.loads(run(["diff", "--json"], clone).out)
    assert same == {"added": [], "deleted": [], "modified": [], "not_in_cache": []}
    (clone / "labels.csv").write_text("id,label\n1,y\n")
    (clone / "report.md").unlink()
    doc = json.loads(run(["diff", "--json"], clone).out)
    assert [item["path"] for item in doc["modified"]] == ["labels.csv"]
    assert [item["path"] for item in doc["deleted"]] == ["report.md"]
    assert run(["diff"], clone).out.splitlines()[-1] == (
        "files summary: 0 added, 1 deleted, 1 modified")


def test_diff_without_the_older_manifest_names_the_directory(clone: Path) -> None:
    old_dir = json.loads(run(["diff", "HEAD~1", "--json"], clone).out)
    digest = next(i["hash"]["old"] for i in old_dir["modified"] if i["path"] == "data/clean/")
    manifest = clone / ".pivotbuild" / "cache" / "files" / digest[:2] / digest[2:]
    assert manifest.is_file()
    manifest.unlink()
    doc = json.loads(run(["diff", "HEAD~1", "--json"], clone).out)
    assert doc["not_in_cache"] == ["data/clean/"]
    assert not any(i["path"].startswith("data/clean/group") for i in doc["modified"])
    text = run(["diff", "HEAD~1"], clone).out
    assert "Not compared file by file" in text and "files summary: 1 added, 0 deleted, 4 " \
        "modified" in text


def test_plots_show_and_diff_write_one_offline_page(clone: Path) -> None:
    shown = run(["plots", "show", "-o", "page.html"], clone)
    assert shown.code == 0, shown.err
    assert shown.out.strip() == "page.html: 1 chart"
    page = (clone / "page.html").read_text()
    assert page.count("<svg") == 1 and "Running mean: error" in page
    assert "<script" not in page and "http://" not in page.replace(
        "http://www.w3.org/", "")  # SVG's namespaces are names, not fetched
    # The older curve.csv is not in git: it comes through HEAD~1's lock and the cache.
    assert git(clone, "ls-tree", "HEAD~1", "curve.csv") == ""
    result = run(["plots", "diff", "HEAD~1", "-o", "diff.html"], clone)
    assert result.code == 0, result.err
    diff_page = (clone / "diff.html").read_text()
    assert diff_page.count("<svg") == 1
    assert "revisions: HEAD~1, workspace" in diff_page
    assert "HEAD~1" in diff_page.split("<svg", 1)[1]  # the legend names both revisions
    # Two revisions, no workspace.
    both = run(["plots", "diff", "HEAD~1", "HEAD", "-o", "both.html"], clone)
    assert both.code == 0, both.err
    assert "revisions: HEAD~1, HEAD" in (clone / "both.html").read_text()


def test_a_cached_file_missing_from_the_cache_comes_with_pull(clone: Path, tmp_path: Path
                                                              ) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    toml = clone / "pivot.toml"
    toml.write_text(f'[remotes.store]\nurl = "{remote}"\n\n' + toml.read_text().replace(
        '[project]\nname = "datapipe"', '[project]\nname = "datapipe"\ndefault_remote = "store"'))
    assert run(["push"], clone).code == 0
    shutil.rmtree(clone / ".pivotbuild" / "cache")
    missing = run(["plots", "diff", "HEAD", "-o", "p.html"], clone)
    assert missing.code == 1
    assert "curve.csv: recorded at HEAD" in missing.err and "--pull" in missing.err
    assert len(missing.err.strip().splitlines()) == 1
    pulled = run(["plots", "diff", "HEAD", "--pull", "-o", "p.html"], clone)
    assert pulled.code == 0, pulled.err
    assert (clone / "p.html").read_text().count("<svg") == 1
    # The object is in the local cache now: no remote needed.
    again = run(["plots", "diff", "HEAD", "-o", "p.html"], clone)
    assert again.code == 0, again.err


def test_errors_are_one_line_with_the_documented_exit_code(clone: Path, tmp_path: Path
                                                           ) -> None:
    def one_line(result, code: int, *words: str) -> None:
        assert result.code == code, (result.out, result.err)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pivotbuild: error: "), result.err
        for word in words:
            assert word in lines[0], result.err

    for command in (["metrics", "diff", "nosuchrev"], ["params", "diff", "nosuchrev"],
                    ["diff", "nosuchrev"], ["plots", "diff", "nosuchrev"]):
        one_line(run(command, clone), 2, "unknown revision 'nosuchrev'")
    one_line(run(["metrics", "show", "--json", "--md"], clone), 2, "--json and --md")
    one_line(run(["metrics", "diff", "--pull", "-r", "nowhere"], clone), 2, "nowhere")
    # Outside a git repository.
    plain = tmp_path / "plain"
    shutil.copytree(clone, plain, ignore=shutil.ignore_patterns(".git"))
    one_line(run(["metrics", "diff"], plain), 2, "not inside a git repository")
    # A metrics file the workspace lacks.
    (clone / "metrics.json").unlink()
    one_line(run(["metrics", "show"], clone), 1, "metrics.json", "not found in the workspace")
    # Without the plots extra: vl_convert cannot be imported.
    stub = tmp_path / "stub" / "vl_convert"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no vl_convert here')\n")
    env = {"PYTHONPATH": str(stub.parent)}
    one_line(run(["plots", "show"], clone, env=env), 1, "pip install 'pivotbuild[plots]'")
    one_line(run(["plots", "diff"], clone, env=env), 1, "pip install 'pivotbuild[plots]'")
    # A broken pivot.toml and an unknown revision: pivot.toml's problem is the one reported
    # (params diff reads the revision's locks while it loads pivot.toml).
    (clone / "pivot.toml").write_text((clone / "pivot.toml").read_text() + "\n[stages.x]\n")
    for command in (["params", "diff", "nosuchrev"], ["metrics", "diff", "nosuchrev"]):
        one_line(run(command, clone), 2, "pivot.toml", "stages.x")


def test_what_pivot_toml_marks_is_remembered_until_a_file_it_was_read_from_changes(
        clone: Path) -> None:
    first = run(["params", "diff", "HEAD~1", "--json"], clone)
    assert first.code == 0, first.err
    assert (clone / ".pivotbuild" / "compare-targets").is_file()
    assert json.loads(run(["params", "diff", "HEAD~1", "--json"], clone).out) == json.loads(
        first.out)
    # A params value edited: the workspace side is the new one.
    params = clone / "params.toml"
    params.write_text(params.read_text().replace("threshold = 0.5", "threshold = 0.75"))
    doc = json.loads(run(["params", "diff", "HEAD~1", "--json"], clone).out)
    assert doc["params.toml"]["transform.threshold"] == {"old": 0.25, "new": 0.75, "diff": 0.5}
    # metrics.json no longer flagged: no metrics; flagged again: back.
    toml = clone / "pivot.toml"
    flagged = toml.read_text()
    toml.write_text(flagged.replace("cache = false, metric = true", "cache = false"))
    assert json.loads(run(["metrics", "show", "--json"], clone).out) == {}
    toml.write_text(flagged)
    assert list(json.loads(run(["metrics", "show", "--json"], clone).out)) == ["metrics.json"]


def test_a_params_value_that_names_a_metrics_file_is_read_again_when_it_changes(
        clone: Path) -> None:
    toml = clone / "pivot.toml"
    toml.write_text(toml.read_text() + '\n[stages.named]\ncmd = "echo \'{\\"n\\": 1}\' > '
                    'm-${params.generate.seed}.json"\nouts = [{ path = '
                    '"m-${params.generate.seed}.json", cache = false, metric = true }]\n')
    assert run(["repro", "named"], clone).code == 0
    shown = json.loads(run(["metrics", "show", "--json"], clone).out)
    assert shown["m-42.json"] == {"n": 1}
    params = clone / "params.toml"
    params.write_text(params.read_text().replace("seed = 42", "seed = 43"))
    assert run(["repro", "named"], clone).code == 0
    shown = json.loads(run(["metrics", "show", "--json"], clone).out)
    assert "m-42.json" not in shown and shown["m-43.json"] == {"n": 1}
