"""The remote tests' shared projects and helpers (tests/test_remote_*.py; their fixtures are
in tests/remote_fixtures.py).

A three-stage project (a file, a directory with an executable, a file made from part of the
directory), clones of it as git would give them, a remote directory, and helpers that run a
transfer in process the way the CLI does.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path

from pivotbuild import hashing
from pivotbuild import remote as remotes
from pivotbuild.execute import RunOptions
from pivotbuild.hashing import get_backend
from pivotbuild.pipeline import opened
from pivotbuild.remote import localdir
from pivotbuild.report import Reporter

STAGES = """
[stages.prepare]
cmd = "echo prepare >> runs.log; tr a-z A-Z < raw.txt > clean.txt"
deps = ["raw.txt"]
outs = ["clean.txt"]

[stages.train]
cmd = [
  "echo train >> runs.log; mkdir -p model/sub; tr A-Z a-z < clean.txt > model/w",
  "printf '#!/bin/sh\\n' > model/sub/tool; chmod +x model/sub/tool; echo 0.5 > model/sub/score",
]
deps = ["clean.txt"]
outs = ["model"]

[stages.report]
cmd = "echo report >> runs.log; cat model/sub/score model/sub/tool > report.txt"
deps = ["model/sub"]
outs = ["report.txt"]
"""

UNCACHED = """
[stages.measure]
cmd = "echo measure >> runs.log; wc -c < raw.txt > metrics.json; cp raw.txt kept.txt"
deps = ["raw.txt"]
outs = [{path = "metrics.json", cache = false}, "kept.txt"]
"""


def make_project(root: Path, url: str, stages: str = STAGES, local: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    head = f'[project]\ndefault_remote = "origin"\n\n[remotes.origin]\nurl = "{url}"\n'
    (root / "pivot.toml").write_text(head + stages)
    (root / "raw.txt").write_text("hello remote\n")
    if local:
        (root / ".pivotbuild").mkdir(exist_ok=True)
        (root / ".pivotbuild" / "config.local.toml").write_text(local)
    return root


def clone(src: Path, dst: Path, locks: bool = True) -> Path:
    """A fresh checkout of what git would hold: pivot.toml, sources, locks; no cache."""
    dst.mkdir(parents=True)
    for name in ("pivot.toml", "raw.txt"):
        shutil.copy(src / name, dst / name)
    local = src / ".pivotbuild" / "config.local.toml"
    if local.exists():
        (dst / ".pivotbuild").mkdir()
        shutil.copy(local, dst / ".pivotbuild" / "config.local.toml")
    if locks:
        shutil.copytree(src / ".pivotbuild" / "locks", dst / ".pivotbuild" / "locks")
    return dst


def repro(root: Path) -> None:
    with opened(root) as pipeline:
        _, results = pipeline.repro(pipeline.select([]), options=RunOptions(jobs=1),
                                    reporter=Reporter(quiet=True))
    assert all(r.status == "ok" for r in results), [r.to_dict() for r in results]


def ran(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


def do(verb: str, root: Path, **kwargs):
    with opened(root) as pipeline:
        remote = remotes.open_remote(pipeline.project, kwargs.pop("name", None))
        fn = getattr(remotes, verb)
        targets = kwargs.pop("targets", [])
        names = pipeline.select(targets, single_item=bool(targets))  # as the CLI does
        return fn(pipeline, names, remote, **kwargs)


class BrokenCopies:
    """The hashing backend with copy_files failing with EIO (leaving nothing behind, as the
    core does) for the items whose source path ``match`` accepts: a local-directory remote's
    transfers go through copy_files."""

    def __init__(self, match) -> None:
        self._real = get_backend()
        self._match = match

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def copy_files(self, items, jobs: int = 0):
        done = iter(self._real.copy_files([i for i in items if not self._match(i[0])], jobs))
        failed = hashing.CopyResult(hashing.ERR_IO, errno.EIO, None, 0, 0)
        return [failed if self._match(item[0]) else next(done) for item in items]


def break_copies(monkeypatch, match) -> None:
    broken = BrokenCopies(match)
    monkeypatch.setattr(localdir, "get_backend", lambda: broken)


def cache_objects(root: Path) -> set[str]:
    files = root / ".pivotbuild" / "cache" / "files"
    return {p.parent.name + p.name for p in files.glob("*/*")} if files.is_dir() else set()


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file below root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def outputs(root: Path) -> dict[str, bytes]:
    found = {"clean.txt": (root / "clean.txt").read_bytes(),
             "report.txt": (root / "report.txt").read_bytes()}
    found.update({f"model/{k}": v for k, v in tree(root / "model").items()})
    return found


def lock_doc(root: Path, stage: str) -> dict:
    return json.loads((root / ".pivotbuild" / "locks" / f"{stage}.json").read_text())


class NoUnnamedFiles:
    """The hashing backend on a file system without unnamed files (no O_TMPFILE): copies
    asked to be unnamed answer COPY_NO_UNNAMED, as the core does there."""

    def __init__(self) -> None:
        self._real = get_backend()
        self.unnamed: list[bool] = []  # per call: were its copies asked to be unnamed

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def copy_files(self, items, jobs: int = 0):
        self.unnamed.append(any(flags & hashing.COPY_UNNAMED for _, _, _, flags, _ in items))
        if self.unnamed[-1]:
            return [hashing.CopyResult(hashing.COPY_NO_UNNAMED, 0, None, 0, 0) for _ in items]
        return self._real.copy_files(items, jobs)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def s3_project(path: Path, endpoint: str, bucket: str) -> Path:
    local = f'[remotes.origin]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n'
    return make_project(path, f"s3://{bucket}/team/cache", local=local)


def memory_remote(built: Path, tmp_path: Path) -> tuple[str, object]:
    import fsspec

    root = f"/pivot-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.mkdir(root)
    text = (built / "pivot.toml").read_text()
    (built / "pivot.toml").write_text(text.replace(
        f'url = "{tmp_path / "remote"}"', f'url = "memory://{root}"'))
    return root, fs


def toggle_cache(root: Path, path: str, cached: bool) -> None:
    text = (root / "pivot.toml").read_text()
    plain, flagged = f'outs = ["{path}"]', f'outs = [{{path = "{path}", cache = false}}]'
    (root / "pivot.toml").write_text(text.replace(plain, flagged) if not cached
                                     else text.replace(flagged, plain))
