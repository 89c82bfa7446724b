"""Tests for pivotbuild.projectcache: the expanded project kept between commands, and every
change that must make the next command load pivot.toml again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pivotbuild import config, projectcache, snapshot
from pivotbuild.config_models import Project
from pivotbuild.errors import ConfigError
from pivotbuild.paths import CACHE_DIR_ENV, PROJECT_FILE, STATE_DIR

RICH = """
[project]
name = "demo"
jobs = 3
checkout = ["copy"]
default_remote = "shared"
params_file = "params.yaml"

[remotes.shared]
url = "s3://bucket/cache"
endpoint_url = "http://127.0.0.1:9000"

[pools]
link = 1

[executor]
env = ["FOO"]
retries = 2

[vars]
cc = "gcc"
flags = { opt = "-O2" }

[stages.cc]
foreach = { glob = "src/**/*.c" }
cmd = "${cc} ${flags.opt} -MMD -MF build/${item.key}.d -c ${item.path} -o build/${item.key}.o"
deps = ["${item.path}"]
outs = ["build/${item.key}.o"]
depfile = "build/${item.key}.d"

[stages.link]
cmd = ["${cc} -o bin/app ${stages.cc.outs}", "echo done"]
deps = ["${stages.cc.outs}"]
outs = ["bin/app", { path = "metrics.json", cache = false, metric = true },
        { path = "loss.csv", cache = false, plot = { x = "step", y = ["loss"] } }]
params = ["train.lr", "extra.toml:seed"]
pool = "link"
desc = "link ${cc}"

[stages.train]
matrix = { size = ["small", "large"] }
cmd = "python train.py ${item.size}"
deps = ["train.py"]
outs = [{ path = "models/${item.size}", persist = true }]
discover = ["python"]
always_changed = true
"""

FILES = {
    "src/main.c": "", "src/net/io.c": "", "train.py": "",
    "params.yaml": "train:\n  lr: 0.01\n  layers: [1, 2]\n",
    "extra.toml": "seed = 7\n",
}


@pytest.fixture(autouse=True)
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files here are written a moment before loading; a real command only keeps a cache
    of files older than the racy window, which would keep every test below from saving."""
    monkeypatch.setattr(snapshot, "RACY_WINDOW_NS", 0)


def make(root: Path, toml: str = RICH, files: dict[str, str] | None = None,
         state: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / PROJECT_FILE).write_text(toml)
    for name, text in (FILES if files is None else files).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if state:
        (root / STATE_DIR).mkdir(exist_ok=True)
    return root


def cache_file(root: Path) -> Path:
    return root / STATE_DIR / projectcache.CACHE_FILE


def from_cache(root: Path, overrides: dict[str, str] | None = None) -> Project | None:
    return projectcache._cached(os.path.realpath(root), sorted((overrides or {}).items()))


def test_a_loaded_project_is_kept_and_read_back_equal(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    fresh = projectcache.load_project(root)
    assert cache_file(root).is_file()
    cached = from_cache(root)
    assert cached == fresh == config.load_project(root)
    assert list(cached.stages) == list(fresh.stages)  # definition order kept
    assert cached.stages["link"].outs[2].plot == {"x": "step", "y": ["loss"]}
    assert cached.stages["link"].param_values == {"train.lr": 0.01, "extra.toml:seed": 7}
    assert cached.sources == fresh.sources and "extra.toml" in cached.sources
    assert cached.glob_dirs == fresh.glob_dirs == ("src", "src/net")
    assert cached.cache_dir == root.resolve() / STATE_DIR / "cache"


def test_a_cached_load_imports_no_pydantic(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    projectcache.load_project(root)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from pivotbuild import projectcache
        project = projectcache.load_project(Path({str(root)!r}))
        assert len(project.stages) == 5, project.stages
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "networkx")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("change", [
    "pivot.toml", "params file", "FILE:key file", "new glob match", "removed glob match",
    "config.local.toml", "cache dir env", "overrides",
])
def test_every_input_of_the_expansion_invalidates_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    root = make(tmp_path / "p")
    projectcache.load_project(root)
    assert from_cache(root) is not None
    overrides: dict[str, str] = {}
    if change == "pivot.toml":
        (root / PROJECT_FILE).write_text(RICH.replace('cc = "gcc"', 'cc = "clang"'))
    elif change == "params file":
        (root / "params.yaml").write_text("train:\n  lr: 0.02\n")
    elif change == "FILE:key file":
        (root / "extra.toml").write_text("seed = 8\n")
    elif change == "new glob match":
        (root / "src/net/tcp.c").write_text("")
    elif change == "removed glob match":
        (root / "src/net/io.c").unlink()
    elif change == "config.local.toml":
        (root / STATE_DIR / "config.local.toml").write_text("[project]\njobs = 1\n")
    elif change == "cache dir env":
        monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "elsewhere"))
    elif change == "overrides":
        overrides = {"cc": "clang"}
    assert from_cache(root, overrides) is None
    again = projectcache.load_project(root, overrides)
    assert again == config.load_project(root, overrides)
    assert from_cache(root, overrides) == again  # and kept again


def test_an_out_that_became_a_git_repository_is_refused_as_the_full_load_does(
        tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    projectcache.load_project(root)
    (root / "models" / "small" / ".git").mkdir(parents=True)
    with pytest.raises(ConfigError, match="git repository"):
        projectcache.load_project(root)


def test_a_broken_pivot_toml_is_reported_every_time(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    projectcache.load_project(root)
    (root / PROJECT_FILE).write_text(RICH + "\n[stages.bad]\ncmd = 3\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="bad"):
            projectcache.load_project(root)


def test_nothing_is_written_without_a_state_directory(tmp_path: Path) -> None:
    root = make(tmp_path / "p", state=False)
    projectcache.load_project(root)
    assert not (root / STATE_DIR).exists()


def test_a_damaged_or_foreign_cache_is_ignored_and_replaced(tmp_path: Path) -> None:
    root = make(tmp_path / "p")
    expected = projectcache.load_project(root)
    for junk in (b"", b"\x00garbage", b"\xe9" * 100):
        cache_file(root).write_bytes(junk)
        assert from_cache(root) is None
        assert projectcache.load_project(root) == expected
        assert from_cache(root) == expected
    other = make(tmp_path / "q")
    projectcache.load_project(other)
    cache_file(root).write_bytes(cache_file(other).read_bytes())  # another root's cache
    assert from_cache(root) is None
    assert projectcache.load_project(root) == expected


def test_values_marshal_cannot_hold_mean_no_cache(tmp_path: Path) -> None:
    root = make(tmp_path / "p", "[vars]\nwhen = 2026-12-01\n\n[stages.a]\ncmd = 'echo ${when}'\n",
                files={})
    project = projectcache.load_project(root)
    assert project.stages["a"].cmd == ["echo 2026-12-01"]
    assert not cache_file(root).exists()


def test_a_file_changed_inside_the_racy_window_is_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "RACY_WINDOW_NS", 60 * 10**9)
    root = make(tmp_path / "p")  # src/ and extra.toml were just written
    projectcache.load_project(root)
    assert not cache_file(root).exists()


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("example", ["examples/datapipe", "examples/cbuild",
                                     "benchmarks/cproject_real"])
def test_the_shipped_projects_come_back_from_the_cache_unchanged(
        tmp_path: Path, example: str) -> None:
    root = tmp_path / "p"
    shutil.copytree(REPO / example, root, ignore=shutil.ignore_patterns(".pivotbuild"))
    (root / STATE_DIR).mkdir()
    fresh = projectcache.load_project(root)
    assert fresh.stages and cache_file(root).is_file()
    assert from_cache(root) == fresh
