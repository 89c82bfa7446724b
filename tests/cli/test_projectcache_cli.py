"""The project cache end to end: a repro after a source edit (the full path, not the no-op
fast path) takes the expanded project from .pivotbuild/project-cache and loads neither
pydantic nor networkx; an edit of pivot.toml is seen at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ran, run

PIPELINE = """\
[vars]
greeting = "hello"

[stages.gen]
matrix = { n = [1, 2] }
cmd = "echo ${greeting} ${item.n} $(cat src.txt) > gen-${item.n}.txt && echo gen-${item.n} >> runs.log"
deps = ["src.txt"]
outs = ["gen-${item.n}.txt"]
params = ["scale"]

[stages.join]
cmd = "cat gen-1.txt gen-2.txt > all.txt && echo join >> runs.log"
deps = ["gen-1.txt", "gen-2.txt"]
outs = ["all.txt"]
"""


def _imported_with_importtime(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    """Run pivotbuild in a fresh interpreter with -X importtime: its exit code and the
    modules it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pivotbuild", *args],
                          cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    modules = {line.split("|")[-1].strip()
               for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc.returncode, modules


def test_a_source_edit_reruns_through_the_cache_without_pydantic_or_networkx(
        project: Path) -> None:
    (project / "pivot.toml").write_text(PIPELINE)
    (project / "params.toml").write_text("scale = 2\n")
    (project / "src.txt").write_text("one\n")
    assert run(["repro"], project).code == 0
    # The first command found no .pivotbuild/ to keep the cache in (a command that fails
    # on its pivot.toml leaves none behind); the next full-path one keeps it.
    assert not (project / ".pivotbuild" / "project-cache").exists()
    (project / "src.txt").write_text("two\n")
    assert run(["repro"], project).code == 0
    assert (project / ".pivotbuild" / "project-cache").is_file()
    assert sorted(ran(project)) == ["gen-1", "gen-1", "gen-2", "gen-2", "join", "join"]

    (project / "src.txt").write_text("three\n")
    code, modules = _imported_with_importtime(["repro"], project)
    assert code == 0
    assert sorted(ran(project)).count("join") == 3
    assert (project / "all.txt").read_text() == "hello 1 three\nhello 2 three\n"
    assert "pivotbuild.pipeline" in modules  # the full path ran, and its imports were read
    loaded = {m.split(".")[0] for m in modules} | modules
    # Neither validated (config, config_build) nor planned with networkx.
    assert not loaded & {"pydantic", "networkx", "pivotbuild.config", "pivotbuild.config_build",
                         "pivotbuild.config_schema"}, sorted(loaded)


def test_an_edit_of_pivot_toml_or_params_is_seen_by_the_next_command(project: Path) -> None:
    (project / "pivot.toml").write_text(PIPELINE)
    (project / "params.toml").write_text("scale = 2\n")
    (project / "src.txt").write_text("one\n")
    assert run(["repro"], project).code == 0
    (project / "pivot.toml").write_text(PIPELINE.replace('"hello"', '"bye"'))
    assert run(["repro"], project).code == 0
    assert (project / "all.txt").read_text() == "bye 1 one\nbye 2 one\n"
    (project / "params.toml").write_text("scale = 3\n")
    status = run(["status", "--json"], project)
    assert status.code == 0 and '"gen@1"' in status.out
    assert sorted(ran(project)).count("join") == 2
    # A broken pivot.toml is reported, though a valid one was cached a moment ago.
    (project / "pivot.toml").write_text(PIPELINE + "\n[stages.bad]\ncmd = 7\n")
    broken = run(["repro"], project)
    assert broken.code == 2 and "stages.bad.cmd" in broken.err
