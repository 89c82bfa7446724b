"""The no-op fast path: `status`, `repro`, `verify` and `dag` answered from the snapshot.

entry.py tries this before loading click. A command line it fully understands,
in a project whose snapshot (snapshot.py) still matches pivot.toml, the params
files and the locks, is answered with one stat per dep and out (and the tree
memo's walk for directories), importing neither click, pydantic, networkx nor
rich. It prints exactly what the full path prints (`--json` byte for byte).

Anything else returns None before printing a byte, and the full path runs: a
flag it does not know, a target that is not a stage name, a changed config or
lock, any path whose stat or content differs from the snapshot, a missing
cache object for `verify`, a lock held by another writer. It never decides
that a stage is stale; it only recognises the case where nothing is.
"""

from __future__ import annotations

import os
import sys
import time

from pivotbuild.paths import LOCKS_DIR, STATE_DB_FILE, STATE_DIR

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing costs start-up time

if TYPE_CHECKING:
    from typing import Any

COMMANDS = ("status", "repro", "verify", "dag")
# Flags without a value that change nothing when every stage is up to date.
_FLAGS: dict[str, dict[str, str]] = {
    "status": {"--json": "json", "-q": "quiet"},
    "repro": {"--json": "json", "-n": "dry_run", "--dry-run": "dry_run",
              "-s": "single", "--single-item": "single", "--explain": "explain",
              "-k": "keep_going", "--keep-going": "keep_going", "--no-commit": "no_commit",
              "--no-run-cache": "no_run_cache"},
    "verify": {"--json": "json"},
    "dag": {"--json": "json", "--dot": "dot", "--mermaid": "mermaid"},
}


class Request:
    """One command line the fast path can answer."""

    __slots__ = ("command", "directory", "flags", "quiet", "targets", "verbose", "why")

    def __init__(self) -> None:
        self.directory: str | None = None
        self.quiet = False
        self.verbose = 0
        self.command = ""
        self.flags: set[str] = set()
        self.targets: list[str] = []
        self.why = ""  # why the full path must answer (PIVOTBUILD_FASTPATH_TRACE=1 shows it)


def parse(argv: list[str]) -> Request | None:
    """The request, or None for anything the full command line must handle."""
    req = Request()
    i = 0
    while i < len(argv) and argv[i] not in COMMANDS:
        arg = argv[i]
        if arg == "-C" and i + 1 < len(argv):
            req.directory = argv[i + 1]
            i += 1
        elif arg in ("-q", "--quiet"):
            req.quiet = True
        elif arg in ("-v", "--verbose"):
            req.verbose += 1
        else:
            return None
        i += 1
    if i >= len(argv):
        return None
    req.command = argv[i]
    known = _FLAGS[req.command]
    rest = argv[i + 1:]
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg in known:
            req.flags.add(known[arg])
        elif req.command == "repro" and arg in ("-j", "--jobs") and j + 1 < len(rest):
            if not rest[j + 1].isdigit() or int(rest[j + 1]) < 1:
                return None
            j += 1
        elif req.command == "repro" and arg.startswith("-j") and arg[2:].isdigit():
            if int(arg[2:]) < 1:
                return None
        elif arg.startswith("-") or not arg:
            return None  # --help, --force, a typo...: click decides
        else:
            req.targets.append(arg)
        j += 1
    if len({"json", "dot", "mermaid"} & req.flags) > 1:
        return None
    return req


def run(req: Request, started: float) -> int | None:
    """Answer the request and return the exit code, or None (with ``req.why``) to let the
    full path run. The working directory is as it was whenever None is returned."""
    cwd = os.getcwd()
    try:
        code = _run(req, started)
    finally:
        if req.why:
            os.chdir(cwd)
    return code


def _run(req: Request, started: float) -> int | None:
    from pivotbuild import snapshot
    from pivotbuild.paths import find_project_root_str

    def fallback(why: str) -> int | None:
        req.why = why
        return None  # the full path answers

    if req.directory is not None:
        try:
            os.chdir(req.directory)
        except OSError:
            return fallback("-C: no such directory")
    found = find_project_root_str(os.getcwd())
    if found is None:
        return fallback("no project")
    root = os.path.realpath(found)
    doc = snapshot.load(root)
    if doc is None:
        return fallback("no usable snapshot")
    if snapshot.config_key(root, [rel for rel, _ in doc["configs"]]) != doc["configs"]:
        return fallback("the configuration changed")
    if snapshot.dir_stamps(root, [d[0] for d in doc["glob_dirs"]]) != doc["glob_dirs"]:
        return fallback("a directory a glob walked changed")
    stages = doc["stages"]
    chosen = _select(doc, req.targets, "single" in req.flags)
    if chosen is None:
        return fallback("a target is not a stage name")
    if req.command == "dag":
        return _dag(req, doc, chosen)
    check = _Check(root, doc)
    if not check.locks():
        return fallback("the locks changed")
    if not all(check.stage(stages[i]) for i in chosen):
        return fallback("a dep or out changed")
    tracked = doc["tracked"]
    if req.command in ("status", "verify") and not check.tracked(tracked):
        return fallback("a tracked path or its record changed")
    selected = [stages[i] for i in chosen]
    if req.command == "verify" and not _objects_present(
            doc, [*selected, ("", "", "", None, [], [], tracked["outs"])]):
        return fallback("a cache object is missing")
    check.save_aged()
    if req.command == "status":
        # Tracked paths are listed for no TARGETS only (a stage target selects none of them).
        return _status(req, selected, [] if req.targets else tracked["paths"])
    if req.command == "verify":
        return _verify(req)
    return _repro(req, root, [stages[i] for i in chosen], started)


def _select(doc: dict[str, Any], targets: list[str], single: bool) -> list[int] | None:
    """Indices of the selected stages in topological order (as dag.select chooses them):
    the targets (stage or matrix base names; anything else: None) and their upstream,
    without walking above a frozen stage."""
    stages = doc["stages"]
    if not targets:
        return list(range(len(stages)))
    by_name = {record[0]: i for i, record in enumerate(stages)}
    chosen: set[int] = set()
    for target in targets:
        if target in by_name:
            chosen.add(by_name[target])
            continue
        instances = [i for i, record in enumerate(stages) if record[1] == target]
        if not instances:
            return None  # an output path, or a mistake: the full path says which
        chosen.update(instances)
    if not single:
        ups: dict[int, list[int]] = {}
        for u, v in doc["edges"]:
            ups.setdefault(v, []).append(u)
        queue = list(chosen)
        while queue:
            index = queue.pop()
            if stages[index][2] == "frozen":
                continue
            for up in ups.get(index, ()):
                if up not in chosen:
                    chosen.add(up)
                    queue.append(up)
    return sorted(chosen)


class _Check:
    """Compares the workspace with the snapshot; every method answers "still the same?"."""

    def __init__(self, root: str, doc: dict[str, Any]) -> None:
        self.root = root
        self.doc = doc
        self.aged = False  # an untrusted entry was confirmed and has aged: worth saving
        # Stages share paths (each compile stage lists the same headers, each stage's out is
        # the next one's dep): every project path is stat'ed, and read, once per run.
        self._stats: dict[str, tuple[int, int, int]] = {}
        self._digests: dict[str, str | None] = {}

    def locks(self) -> bool:

        directory = os.path.join(self.root, STATE_DIR, LOCKS_DIR)
        recorded = self.doc["locks"]
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            names = []
        if names != [entry[0] for entry in recorded]:
            return False
        fresh = self._files(recorded, directory, lock_files=True)
        if fresh is None:
            return False
        self.doc["locks"] = fresh
        return True

    def stage(self, record: tuple[Any, ...]) -> bool:
        _name, _base, status, _input_hash, files, dirs, _outs = record
        if status == "frozen":
            return True
        fresh = self._files(files, self.root, lock_files=False)
        if fresh is None:
            return False
        files[:] = fresh
        return self._dirs(dirs)

    def tracked(self, part: dict[str, Any]) -> bool:
        """No record appeared or changed, and every tracked path is as recorded."""
        from pivotbuild import snapshot
        from pivotbuild.hashtypes import RACY_WINDOW_NS

        now = time.time_ns()
        for index, (rel, mtime_ns, trusted, listing) in enumerate(part["dirs"]):
            full = self.root if rel == "." else os.path.join(self.root, rel)
            try:
                moved = os.lstat(full).st_ctime_ns
            except OSError:
                return False
            if moved == mtime_ns and trusted:
                continue
            if snapshot.listing_key(full) != listing:
                return False
            if moved < now - RACY_WINDOW_NS:  # listed again well after its last change
                part["dirs"][index] = (rel, moved, True, listing)
                self.aged = True
        pvts = self._files(part["pvts"], self.root, lock_files=True)
        files = self._files(part["files"], self.root, lock_files=False)
        if pvts is None or files is None:
            return False
        part["pvts"], part["files"] = pvts, files
        return self._dirs(part["tree"])

    def _files(self, entries: list[Any], directory: str, lock_files: bool) -> list[Any] | None:
        """The entries (trusted where they have aged) if every file is as recorded."""
        recheck = []
        stats = {} if lock_files else self._stats
        for entry in entries:
            rel, size, mtime_ns, ino, _digest, trusted = entry
            signature = stats.get(rel)
            if signature is None:
                try:
                    st = os.lstat(os.path.join(directory, rel))
                except OSError:
                    return None
                changed_ns = st.st_ctime_ns if lock_files else st.st_mtime_ns
                signature = stats[rel] = (st.st_size, changed_ns, st.st_ino)
            if signature != (size, mtime_ns, ino):
                return None
            if not trusted:
                recheck.append(entry)
        if not recheck:
            return entries
        if lock_files:
            digests = self._content(directory, [e[0] for e in recheck], lock_files)
        else:
            todo = list(dict.fromkeys(e[0] for e in recheck if e[0] not in self._digests))
            fresh = self._content(directory, todo, lock_files) if todo else []
            if fresh is None:
                return None
            self._digests.update(zip(todo, fresh, strict=True))
            digests = [self._digests[e[0]] for e in recheck]
        if digests is None:
            return None
        from pivotbuild.hashtypes import RACY_WINDOW_NS

        now = time.time_ns()
        confirmed = {}
        for entry, digest in zip(recheck, digests, strict=True):
            if digest != entry[4]:
                return None
            if entry[2] < now - RACY_WINDOW_NS:  # read again, well after its last change
                confirmed[entry[0]] = (*entry[:5], True)
                self.aged = True
        return [confirmed.get(e[0], e) for e in entries]

    @staticmethod
    def _content(directory: str, rels: list[str], lock_files: bool) -> list[str | None] | None:
        if lock_files:
            from pivotbuild import snapshot

            out: list[str | None] = []
            for rel in rels:
                try:
                    with open(os.path.join(directory, rel), "rb") as handle:
                        out.append(snapshot.content_hash(handle.read()))
                except OSError:
                    return None
            return out
        from pivotbuild.hashing import get_backend

        results = get_backend().hash_files([os.path.join(directory, r) for r in rels])
        return [r.hash for r in results]

    def _dirs(self, dirs: list[tuple[Any, ...]]) -> bool:
        """Every directory still has its hash: by its memo and stamps where the snapshot has
        them (snapshot.py), else hashed through the tree memo as the full path does."""
        dirs = [d for d in dirs if len(d) < 3 or not self._tree_unchanged(d[0], d[2])]
        if not dirs:
            return True
        from pivotbuild.hasher import Hasher
        from pivotbuild.state import StateDB

        state = StateDB(os.path.join(self.root, STATE_DIR, STATE_DB_FILE))
        try:
            digests = Hasher(self.root, state).hash_paths(
                [os.path.join(self.root, d[0]) for d in dirs])
        finally:
            state.close()
        return all(d.hash == d_expected[1] for d, d_expected in zip(digests, dirs, strict=True))

    def _tree_unchanged(self, rel: str, tree: tuple[str, str, list[Any]] | None) -> bool:
        """Whether the directory is exactly as its memo describes it (then its hash is the
        one recorded): the memo is the one recorded, every file it lists has its stat, and
        every directory has its stamp or, listed again, the same names. False: not sure."""
        if tree is None:
            return False
        memo_file, memo_hash, stamps = tree
        from pivotbuild import snapshot

        try:
            with open(memo_file, "rb") as handle:
                memo = handle.read()
        except OSError:
            return False
        if snapshot.content_hash(memo) != memo_hash:
            return False
        from pivotbuild.hashing import OK, get_backend

        top = os.path.normpath(os.path.join(self.root, rel))
        answer = get_backend().check_tree(top, memo, [s[:3] for s in stamps])
        if answer is None or answer[0]:
            return False
        moved = [s[0] for s, status in zip(stamps, answer[1], strict=True)
                 if status != OK or not s[3]]
        skip = os.path.join(self.root, STATE_DIR)
        return not moved or _same_names(top, memo, stamps, moved, skip)

    def save_aged(self) -> None:
        if self.aged:
            from pivotbuild import snapshot

            snapshot.save(self.root, self.doc)


def _same_names(top: str, memo: bytes, stamps: list[Any], moved: list[str], skip: str) -> bool:
    """Whether each directory of ``moved`` (relative to ``top``) holds the files the memo
    lists there and the subdirectories ``stamps`` list there, and nothing else. A symlink
    or anything else found in one means "not sure" (False)."""
    count = int.from_bytes(memo[8:16], sys.byteorder)
    wanted: dict[str, set[tuple[str, bool]]] = {rel: set() for rel in moved}
    raw_names = memo[24 + 48 * count:].split(b"\0")[:-1]
    for name, is_dir in [*((os.fsdecode(raw), False) for raw in raw_names),
                         *((s[0], True) for s in stamps if s[0])]:
        parent, _, leaf = name.rpartition("/")
        if parent in wanted:
            wanted[parent].add((leaf, is_dir))
    for rel, names in wanted.items():
        directory = os.path.join(top, rel) if rel else top
        found = set()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        return False
                    if entry.is_dir(follow_symlinks=False):
                        if entry.path != skip:  # the walk never enters .pivotbuild
                            found.add((entry.name, True))
                    elif entry.is_file(follow_symlinks=False):
                        found.add((entry.name, False))
                    else:
                        return False
        except OSError:
            return False
        if found != names:
            return False
    return True


def _objects_present(doc: dict[str, Any], records: list[tuple[Any, ...]]) -> bool:
    """Every cached output of these stages is in the cache (a directory: every file)."""
    from pivotbuild.names import is_dir_hash, object_name

    cache_files = os.path.join(doc["cache_dir"], "files")

    def present(digest: str) -> bool:
        try:
            return os.path.isfile(os.path.join(cache_files, object_name(digest)))
        except ValueError:  # not a hash (names.InvalidHashError)
            return False

    for record in records:
        for _path, digest, cached in record[6]:
            if not cached:
                continue
            if not present(digest):
                return False
            if is_dir_hash(digest):
                from pivotbuild import manifest

                try:
                    with open(os.path.join(cache_files, object_name(digest)), "rb") as fh:
                        entries = manifest.parse(fh.read())
                except (OSError, ValueError):
                    return False
                if not all(present(e.hash) for e in entries):
                    return False
    return True


# ---- output: exactly what cli/ prints for the same outcome --------------------------------


def _dumps(doc: object, indent: int) -> str:
    import json  # only for --json: it costs start-up time

    return json.dumps(doc, indent=indent)


def _emit(stream: Any, text: str) -> None:
    stream.write(text)
    stream.flush()


def _status(req: Request, records: list[tuple[Any, ...]], tracked: list[str]) -> int:
    if req.quiet or "quiet" in req.flags:
        return 0
    if "json" in req.flags:
        doc = {"stages": [{"name": r[0], "status": r[2], "reasons": []} for r in records],
               "tracked": [{"path": path, "status": "up-to-date"} for path in tracked]}
        _emit(sys.stdout, _dumps(doc, indent=2) + "\n")
        return 0
    lines = [f"{r[0]}: {r[2]}\n" for r in records]
    _emit(sys.stdout, "".join(lines) + "Everything is up to date.\n")
    return 0


def _verify(req: Request) -> int:
    if "json" in req.flags:
        _emit(sys.stdout, _dumps({"ok": True, "problems": []}, indent=2) + "\n")
    elif not req.quiet:
        _emit(sys.stdout, "verify: everything is up to date and cached\n")
    return 0


def _repro(req: Request, root: str, records: list[tuple[Any, ...]], started: float
           ) -> int | None:
    as_json = "json" in req.flags
    if "dry_run" in req.flags:
        if as_json:
            stages = [_result(r, "not-run") for r in records]
            _emit(sys.stdout, _dumps({"ok": True, "stages": stages}, indent=2) + "\n")
        elif not req.quiet:
            _emit(sys.stderr, "Everything is up to date.\n")
        return 0
    from pivotbuild.errors import OperationError
    from pivotbuild.paths import ensure_state_dir
    from pivotbuild.projectlock import project_lock

    try:
        with project_lock(ensure_state_dir(root)):
            pass
    except OperationError:
        req.why = "another writer holds the project lock"  # the full path says who
        return None
    quiet = req.quiet or as_json
    if req.verbose and not quiet:
        _emit(sys.stderr, "".join(f"Stage '{r[0]}' is up to date\n" for r in records))
    if not quiet:
        wall = time.monotonic() - started
        _emit(sys.stderr, f"pivotbuild: 0 ran, {len(records)} skipped, 0 failed in {wall:.2f}s\n")
    if as_json:
        stages = [_result(r, "ok") for r in records]
        _emit(sys.stdout, _dumps({"ok": True, "stages": stages}, indent=2) + "\n")
    return 0


def _result(record: tuple[Any, ...], status: str) -> dict[str, Any]:
    return {"name": record[0], "action": "skip", "status": status, "input_hash": record[3],
            "duration_s": 0.0, "reasons": []}


def _dag(req: Request, doc: dict[str, Any], chosen: list[int]) -> int:
    from pivotbuild import render_dag

    stages = doc["stages"]
    names = [stages[i][0] for i in chosen]
    edges = [(stages[u][0], stages[v][0]) for u, v in doc["edges"]]
    frozen = {stages[i][0] for i in chosen if stages[i][2] == "frozen"}
    fmt = next((f for f in ("json", "dot", "mermaid") if f in req.flags), None)
    _emit(sys.stdout, render_dag.render(fmt, names, edges, frozen))
    return 0
