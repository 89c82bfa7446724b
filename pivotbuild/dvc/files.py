"""The files around a DVC pipeline: YAML/JSON/TOML data, .dvc/config remotes, ``.dvc`` files.

- Data files are read by extension (``.json``, ``.toml``, else YAML with PyYAML's C loader when
  it is built). PyYAML reads YAML 1.1, so an unquoted ``yes``/``on`` is a boolean here and a
  string for DVC's YAML 1.2 reader; such a value in a params file makes a stage look changed.
- ``.dvc/config`` (configobj syntax, read with configparser) gives remotes (``url``,
  ``endpointurl`` → ``endpoint_url``, ``region``, ``port`` written into the URL),
  ``core.remote`` → ``default_remote``, ``cache.type`` → ``checkout`` and DVC's ``parsing``
  options. A relative local remote path is
  relative to ``.dvc/`` in DVC and is made project-relative. Credentials are never copied: not
  from options, not from a URL's userinfo password or query. ``.dvc/config.local`` is per
  machine: only the names of its settings are reported, its values are never read into output.
- A ``.dvc`` file from ``dvc add`` becomes a tracked path; one from ``dvc import`` /
  ``dvc import-url`` (it has ``deps``) or a DVC 1 single-stage file (it has ``cmd``) is listed as
  not converted.
"""

from __future__ import annotations

import configparser
import json
import os
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from pivotbuild import tomlread
from pivotbuild.dvc.hashes import MD5, MD5_DOS2UNIX, LockedPath
from pivotbuild.dvc.model import Conversion, TrackedPath
from pivotbuild.errors import ConfigError

DVC_YAML = "dvc.yaml"
DVC_CONFIG = ".dvc/config"
DVC_LOCAL_CONFIG = ".dvc/config.local"

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # pivotbuild stage and remote names
# Option names that hold (or choose) credentials: never copied, only named in a note.
_CREDENTIAL = re.compile(r"password|secret|token|key|credential|passphrase|user|profile|"
                         r"connection_string|sas|account", re.IGNORECASE)
_REMOTE_FIELDS = {"url": "url", "endpointurl": "endpoint_url", "region": "region"}
_ANNOTATIONS = {"desc", "type", "labels", "meta"}


def load(root: Path, rel: str) -> Any:
    """A data file's content by extension; ConfigError naming ``rel`` when it is unreadable."""
    import yaml  # lazy: only import-dvc needs PyYAML

    try:
        text = (root / rel).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(rel, "", f"not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(rel, "", f"cannot read it: {exc.strerror or exc}") from None
    try:
        if rel.endswith(".json"):
            return json.loads(text)
        if rel.endswith(".toml"):
            return tomlread.loads(text)
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(rel, where, f"invalid YAML: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, ValueError) as exc:  # JSON and TOML errors are ValueErrors
        raise ConfigError(rel, "", f"cannot parse it: {str(exc).splitlines()[0]}") from None


def norm(wdir: str, path: Any) -> str | None:
    """``path`` (relative to ``wdir``) made project-relative; None if it leaves the project."""
    if not isinstance(path, str) or not path or "://" in path or posixpath.isabs(path):
        return None
    joined = posixpath.normpath(posixpath.join(wdir, path))
    if joined in (".", "..") or joined.startswith("../"):
        return None
    return joined


def scrub_url(url: str) -> str:
    """A URL fit to print: without its userinfo and query."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def locked_path(base: str, entry: Any) -> LockedPath | None:
    """A dvc.lock / ``.dvc`` out or dep entry, its path joined onto ``base``; None if unusable."""
    if not isinstance(entry, dict) or not isinstance(entry.get("md5"), str):
        return None
    path = norm(base, entry.get("path"))
    if path is None:
        return None
    # No `hash` key: written by DVC 2, whose md5 normalises CRLF in text files.
    hash_name = {"md5": MD5, None: MD5_DOS2UNIX}.get(entry.get("hash"), str(entry.get("hash")))
    return LockedPath(path=path, md5=entry["md5"], hash_name=hash_name, size=entry.get("size"),
                      nfiles=entry.get("nfiles"))


# ---------------------------------------------------------------------------------------------
# .dvc/config


class DvcConfig:
    """What .dvc/config (and the names in .dvc/config.local) say, as pivot.toml needs it."""

    def __init__(self, root: Path, report: Conversion) -> None:
        self.report = report
        self.remotes: dict[str, dict[str, str]] = {}
        self.project: dict[str, Any] = {}
        self.parsing: dict[str, str] = {}
        self.bad_remotes: set[str] = set()
        self.ports: dict[str, str] = {}
        for label in (DVC_CONFIG, DVC_LOCAL_CONFIG):
            if not (root / label).is_file():
                continue
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            try:
                parser.read_string((root / label).read_text(encoding="utf-8"), label)
            except (configparser.Error, UnicodeDecodeError, OSError) as exc:
                problem = str(exc).splitlines()[0]
                raise ConfigError(label, "", f"cannot parse it: {problem}") from None
            for section in parser.sections():
                self._section(label, section.strip().strip("'"), dict(parser[section]))

    def _section(self, label: str, section: str, options: dict[str, str]) -> None:
        remote = re.fullmatch(r'remote\s+"(.*)"', section)
        for k, v in options.items():
            v = v.strip().strip("'\"")
            spot = f"{label}: {section}.{k}"
            if label == DVC_LOCAL_CONFIG:
                self.report.note(f"{spot} is a per-machine setting and was not copied (set it "
                                 "in .pivotbuild/config.local.toml or the environment)")
            elif remote and k in _REMOTE_FIELDS:
                self._remote_field(remote.group(1), _REMOTE_FIELDS[k], v, spot)
            elif remote and k == "port" and v.isdigit():
                self.ports[remote.group(1)] = v  # goes into the URL (usable_remotes)
            elif remote and _CREDENTIAL.search(k):
                self.report.note(f"{spot}: credentials are never copied")
            elif remote:
                self.report.skip(spot, "pivotbuild remotes have no such setting")
            elif section == "parsing":
                self.parsing[k] = v
            elif section == "core" and k == "remote":
                self.project["default_remote"] = v
            elif section == "cache" and k == "type":
                kinds = [t.strip() for t in v.split(",")]
                kept = [t for t in kinds if t in ("reflink", "hardlink", "copy")]
                if kept:
                    self.project["checkout"] = kept
                if kept != kinds:
                    self.report.note(f"{spot}: pivotbuild checks out by reflink, hardlink or "
                                     "copy only")
            else:
                self.report.note(f"{spot} has no pivotbuild equivalent and was not copied")

    def _remote_field(self, name: str, key: str, value: str, spot: str) -> None:
        if not NAME_RE.fullmatch(name):
            self.report.skip(spot, f"remote name {name!r} is not a valid pivotbuild name")
            self.bad_remotes.add(name)
            return
        if key == "url":
            parts = urlsplit(value)
            if parts.scheme == "remote":
                self.report.skip(spot, "a remote inside another remote has no pivotbuild "
                                 "equivalent")
                self.bad_remotes.add(name)
                return
            if len(parts.scheme) <= 1:  # a local path (or a Windows drive letter)
                if not os.path.isabs(value):
                    value = posixpath.normpath(posixpath.join(".dvc", value))
            else:
                value = self._without_credentials(parts, spot)
        self.remotes.setdefault(name, {})[key] = value

    def _without_credentials(self, parts: SplitResult, spot: str) -> str:
        userinfo, _, host = parts.netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0]
            self.report.note(f"{spot}: the password in the URL was not copied")
        query = parse_qsl(parts.query, keep_blank_values=True)
        safe = [(k, v) for k, v in query if not _CREDENTIAL.search(k)
                and not k.lower().startswith(("x-amz-", "sig"))]
        if len(safe) != len(query):
            self.report.note(f"{spot}: credentials in the URL's query were not copied")
        netloc = f"{userinfo}@{host}" if userinfo else host
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(safe), parts.fragment))

    def _with_port(self, name: str, url: str, port: str) -> str:
        parts = urlsplit(url)
        if not parts.netloc or parts.port is not None:
            if parts.port is None or str(parts.port) != port:
                self.report.skip(f"{DVC_CONFIG}: remote \"{name}\".port", "cannot be "
                                 "written into its URL (no host, or another port there)")
            return url
        return urlunsplit((parts.scheme, f"{parts.netloc}:{port}", parts.path, parts.query,
                           parts.fragment))

    def usable_remotes(self) -> dict[str, dict[str, str]]:
        """The remotes pivot.toml gets (each with a url); others are reported."""
        usable = {}
        for name, fields in self.remotes.items():
            if "url" in fields and name in self.ports:
                fields["url"] = self._with_port(name, fields["url"], self.ports[name])
            if "url" in fields:
                usable[name] = fields
            elif name not in self.bad_remotes:
                self.report.skip(f"{DVC_CONFIG}: remote {name}", "has no url")
        return usable


# ---------------------------------------------------------------------------------------------
# .dvc files and pipelines below the root


def scan_side_files(root: Path, report: Conversion, skip_dirs: set[str]) -> None:
    """Report every ``.dvc`` file and every dvc.yaml below the root.

    Directories in ``skip_dirs`` (stage outputs) and directories a ``.dvc`` file tracks are not
    walked: their content is data, not pipeline.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        names = set(filenames)
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", ".dvc", ".pivotbuild")
                             and prefix + d not in skip_dirs and d + ".dvc" not in names)
        for name in sorted(filenames):
            rel = prefix + name
            if name == DVC_YAML and rel_dir != ".":
                report.skip(rel, "only the dvc.yaml at the root is converted (run import-dvc "
                            "in its directory for this pipeline)")
            elif name.endswith(".dvc"):
                _dvc_file(root, rel, prefix.rstrip("/") or ".", report)


def _dvc_file(root: Path, rel: str, base: str, report: Conversion) -> None:
    data = load(root, rel)
    if not isinstance(data, dict):
        report.skip(rel, "not a .dvc file DVC would read")
        return
    if data.get("cmd") is not None:
        report.skip(rel, "a single-stage .dvc file from DVC 1 (run 'dvc migrate' first)")
        return
    deps = data.get("deps") or []
    if deps:
        dep = deps[0] if isinstance(deps[0], dict) else {}
        repo = dep.get("repo")
        if isinstance(repo, dict):
            report.skip(rel, "data imported with 'dvc import' from another repository "
                        f"({scrub_url(str(repo.get('url')))}); pivotbuild cannot fetch it")
        else:
            report.skip(rel, "data imported with 'dvc import-url' "
                        f"({scrub_url(str(dep.get('path')))}); pivotbuild cannot fetch it")
        return
    for i, out in enumerate(data.get("outs") or []):
        entry = locked_path(base, out)
        if entry is None:
            report.skip(f"{rel}: outs[{i}]", "no md5 recorded, or a path outside the project")
            continue
        for k in out:
            if k in ("remote", "push", "cache"):
                report.skip(f"{rel}: outs[{i}].{k}", "has no pivotbuild equivalent")
            elif k in _ANNOTATIONS:
                report.note(f"{rel}: outs[{i}].{k} is not carried over")
        report.tracked.append(TrackedPath(path=entry.path, dvc_file=rel, entry=entry))
