"""The lock file: exact format, atomic same-bytes writes, corruption as a value, input hash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import xxhash

from pivotbuild import lockschema
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.lock import (
    MISSING_HASH,
    Lock,
    LockedDep,
    LockedOut,
    LockFormatError,
    LockProblem,
    _accept,
    input_form,
    input_hash,
    lock_path,
    parse_lock,
    read_lock,
    write_lock,
)
from pivotbuild.names import FILE_HASH_RE

H1 = "0123456789abcdef0123456789abcdef"
H2 = "fedcba9876543210fedcba9876543210"
H3 = "00000000000000000000000000000001"
DIRH = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.dir"


def sample(**changes) -> Lock:
    fields = {
        "stage": "train",
        "cmd": ["python train.py"],
        "deps": [LockedDep("train.py", H2, 10), LockedDep("data/clean.csv", H1, 1234)],
        "outs": [
            LockedOut("model", DIRH, 4567, nfiles=12),
            LockedOut("metrics.json", H3, 88, cache=False),
        ],
        "params": {"train.lr": 0.01},
        "input_hash": H1,
    }
    fields.update(changes)
    return Lock(**fields)


EXPECTED = f"""{{
  "cmd": [
    "python train.py"
  ],
  "deps": [
    {{
      "hash": "{H1}",
      "path": "data/clean.csv",
      "size": 1234
    }},
    {{
      "hash": "{H2}",
      "path": "train.py",
      "size": 10
    }}
  ],
  "input_hash": "{H1}",
  "outs": [
    {{
      "cache": false,
      "hash": "{H3}",
      "path": "metrics.json",
      "persist": false,
      "size": 88
    }},
    {{
      "cache": true,
      "hash": "{DIRH}",
      "nfiles": 12,
      "path": "model",
      "persist": false,
      "size": 4567
    }}
  ],
  "params": {{
    "train.lr": 0.01
  }},
  "schema": 1,
  "stage": "train"
}}
"""


# ---- format -------------------------------------------------------------------------------


def test_to_json_is_byte_exact():
    assert sample().to_json() == EXPECTED


def test_to_json_is_what_the_spec_says_json_dumps_writes():
    text = sample().to_json()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_order_of_deps_and_outs_does_not_change_the_bytes():
    a = sample()
    b = sample(deps=list(reversed(a.deps)), outs=list(reversed(a.outs)))
    assert a.to_json() == b.to_json()
    assert a == b
    assert [d.path for d in a.deps] == ["data/clean.csv", "train.py"]


def test_no_timestamp_no_absolute_path(tmp_path):
    path = lock_path(tmp_path, "train")
    write_lock(path, sample())
    text = path.read_text()
    assert str(tmp_path) not in text and '"/' not in text
    assert not {"time", "mtime", "timestamp", "date"} & set(json.loads(text))


def test_round_trip(tmp_path):
    path = lock_path(tmp_path, "train")
    assert write_lock(path, sample()) is True
    assert read_lock(path) == sample()
    assert path.read_text() == EXPECTED


def test_round_trip_unicode_and_undecodable_names(tmp_path):
    odd = os.fsdecode(b"caf\xc3\xa9/\xff raw")
    written = sample(deps=[LockedDep(odd, H1, 1)])
    path = lock_path(tmp_path, "train")
    write_lock(path, written)
    assert path.read_bytes().isascii()
    got = read_lock(path)
    assert isinstance(got, Lock) and got.deps[0].path == odd


# ---- writing ------------------------------------------------------------------------------


def test_same_bytes_are_not_rewritten(tmp_path):
    path = lock_path(tmp_path, "train")
    assert write_lock(path, sample())
    before = path.stat()
    assert write_lock(path, sample()) is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changed_lock_is_replaced_atomically(tmp_path):
    path = lock_path(tmp_path, "train")
    write_lock(path, sample())
    assert write_lock(path, sample(cmd=["python train.py --fast"])) is True
    assert json.loads(path.read_text())["cmd"] == ["python train.py --fast"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.json"]  # no temp left


def test_a_longer_existing_file_is_rewritten(tmp_path):
    path = lock_path(tmp_path, "train")
    path.parent.mkdir(parents=True)
    path.write_text(EXPECTED + "garbage")
    assert write_lock(path, sample()) is True
    assert path.read_text() == EXPECTED


def test_write_refuses_an_invalid_lock(tmp_path):
    path = lock_path(tmp_path, "train")
    with pytest.raises(OperationError, match="train.json: refusing to write an invalid lock"):
        write_lock(path, sample(deps=[LockedDep("a", None, 1)]))  # type: ignore[arg-type]
    with pytest.raises(OperationError, match="belongs to stage"):
        write_lock(lock_path(tmp_path, "other"), sample())
    assert not path.exists()


def test_write_error_is_an_operation_error(tmp_path):
    (tmp_path / "locks").write_text("a file where a directory should be")
    with pytest.raises(OperationError, match="cannot write the lock"):
        write_lock(lock_path(tmp_path, "train"), sample())


# ---- lock_path ----------------------------------------------------------------------------


def test_lock_path(tmp_path):
    assert lock_path(tmp_path, "compile@main-O2") == tmp_path / "locks" / "compile@main-O2.json"


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../x", "a\0b", "/abs"])
def test_lock_path_refuses_escaping_names(tmp_path, name):
    with pytest.raises(UsageError):
        lock_path(tmp_path, name)


def test_lock_path_refuses_a_name_too_long_for_a_file_name(tmp_path):
    assert lock_path(tmp_path, "a" * 250).name == "a" * 250 + ".json"  # 255 bytes: fits
    assert lock_path(tmp_path, "m@" + "é" * 124).name.endswith(".json")  # 250 bytes
    for name in ("a" * 251, "m@" + "é" * 125):  # 251 and 252 bytes
        with pytest.raises(UsageError, match="too long"):
            lock_path(tmp_path, name)


@pytest.mark.parametrize(("text", "reason"), [
    ('{"cmd": ["echo', "Unterminated string starting at line 1 column 10"),
    ('{"cmd": "a\tb"}', "Invalid control character at line 1 column 11"),
    ('{"cmd" 1}', "Expecting ':' delimiter at line 1 column 8"),
])
def test_json_problems_read_as_one_sentence(tmp_path, text, reason):
    path = lock_path(tmp_path, "train")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    message = str(read_lock(path, shown="train.json"))
    assert f"not valid JSON, truncated? {reason});" in message
    assert " at at " not in message


# ---- reading: absent and corrupted --------------------------------------------------------


def test_absent_lock_is_none(tmp_path):
    assert read_lock(lock_path(tmp_path, "train")) is None


def _doc() -> dict:
    return json.loads(EXPECTED)


def _with(mutate) -> str:
    doc = _doc()
    mutate(doc)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _set(where: str, value):
    def mutate(doc):
        target = doc
        keys = where.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[keys[-1]] = value
    return mutate


def _delete(where: str):
    def mutate(doc):
        target = doc
        keys = where.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[keys[-1]]
    return mutate


CORRUPTIONS = {
    "truncated": (EXPECTED[: len(EXPECTED) // 2], "not valid JSON"),
    "empty": ("", "the file is empty"),
    "garbage": ("{not json", "not valid JSON"),
    "not utf-8": (b"\xff\xfe{}", "not UTF-8"),
    "list at top": ("[]\n", "top level is a list"),
    "unknown schema": (_with(_set("schema", 2)), "unsupported schema 2"),
    "schema as string": (_with(_set("schema", "1")), "unsupported schema"),
    "schema as bool": (_with(_set("schema", True)), "unsupported schema true"),
    "no schema": (_with(_delete("schema")), "missing key 'schema'"),
    "missing key": (_with(_delete("outs")), "missing key 'outs'"),
    "unknown key": (_with(_set("extra", 1)), "unknown key 'extra'"),
    "stage mismatch": (_with(_set("stage", "other")), "belongs to stage 'other'"),
    "cmd is a string": (_with(_set("cmd", "python train.py")), "cmd is not a list"),
    "null dep hash": (_with(_set("deps.0.hash", None)), "deps[0].hash is not a hash"),
    "short hash": (_with(_set("deps.1.hash", "abc")), "deps[1].hash is not a hash"),
    "upper hash": (_with(_set("deps.0.hash", H1.upper())), "deps[0].hash is not a hash"),
    "bad dir hash": (_with(_set("outs.1.hash", H1 + ".DIR")), "outs[1].hash is not a hash"),
    "null out hash": (_with(_set("outs.0.hash", None)), "outs[0].hash is not a hash"),
    "null input hash": (_with(_set("input_hash", None)), "input_hash is not a hash"),
    "dir hash without nfiles": (_with(_delete("outs.1.nfiles")), "outs[1].nfiles"),
    "nfiles on a file": (_with(_set("deps.0.nfiles", 3)), "deps[0] has nfiles but a file hash"),
    "absolute path": (_with(_set("deps.0.path", "/etc/passwd")), "deps[0].path is not"),
    "dotdot path": (_with(_set("outs.0.path", "../x")), "outs[0].path is not"),
    "inner dotdot": (_with(_set("outs.0.path", "a/../../x")), "outs[0].path is not"),
    "unnormalised": (_with(_set("deps.0.path", "./a")), "deps[0].path is not"),
    "negative size": (_with(_set("deps.0.size", -1)), "deps[0].size is not a size"),
    "bool size": (_with(_set("deps.0.size", True)), "deps[0].size is not a size"),
    "string size": (_with(_set("deps.0.size", "12")), "deps[0].size is not a size"),
    "cache not bool": (_with(_set("outs.0.cache", 1)), "outs[0].cache is not true or false"),
    "missing persist": (_with(_delete("outs.0.persist")), "outs[0] has no 'persist'"),
    "entry unknown key": (_with(_set("outs.0.desc", "x")), "unknown key 'desc'"),
    "deps not list": (_with(_set("deps", {})), "deps is an object, not a list"),
    "dep not object": (_with(_set("deps", ["a"])), "deps[0] is a string, not an object"),
    "duplicate path": (
        _with(_set("deps.1.path", "data/clean.csv")), "lists 'data/clean.csv' twice"
    ),
    "params not object": (_with(_set("params", [])), "params is not an object"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_is_a_problem_value(tmp_path, monkeypatch, name):
    content, reason = CORRUPTIONS[name]
    monkeypatch.chdir(tmp_path)
    path = lock_path(Path(".pivotbuild"), "train")
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    problem = read_lock(path)
    assert isinstance(problem, LockProblem), problem
    assert problem.path == path
    message = str(problem)
    assert "\n" not in message
    assert message.startswith(".pivotbuild/locks/train.json: invalid lock (")
    assert message.endswith("); the stage is treated as stale")
    assert reason in message


@pytest.mark.parametrize(("mutations", "reason"), [
    # A newer pivotbuild's lock: its schema is named, not the keys this one does not know.
    ((_set("schema", 2), _set("checksum", "x"), _delete("params")), "unsupported schema 2"),
    # Missing keys (first by name) before unknown ones, before any field's content.
    ((_set("extra", 1), _delete("params"), _delete("cmd")), "missing key 'cmd'"),
    ((_set("extra", 1), _set("deps.0.hash", None)), "unknown key 'extra'"),
    # Field by field in the order documented, entry by entry.
    ((_set("stage", "other"), _set("cmd", 1)), "it belongs to stage 'other'"),
    ((_set("outs.0.size", -1), _set("deps.1.path", "/x")), "deps[1].path is not"),
    ((_set("deps.0.cache", 1), _set("deps.0.size", -1)), "deps[0] has an unknown key 'cache'"),
    ((_delete("outs.1.nfiles"), _set("outs.1.persist", 0)), "outs[1].nfiles is missing"),
])
def test_of_several_problems_the_first_in_format_order_is_named(tmp_path, mutations, reason):
    doc = _doc()
    for mutate in mutations:
        mutate(doc)
    path = lock_path(tmp_path, "train")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    problem = read_lock(path, shown="train.json")
    assert isinstance(problem, LockProblem)
    assert f"invalid lock ({reason}" in problem.message


def test_a_path_of_undecodable_bytes_round_trips(tmp_path):
    """A file name that is not UTF-8 (os.fsdecode gives it a lone surrogate) is a path like
    any other: written as a JSON escape, read back as the same string."""
    name = os.fsdecode(b"data/caf\xe9.csv")
    lock = sample(deps=[LockedDep(name, H1, 3)], outs=[LockedOut(os.fsdecode(b"out\xff"), H2, 1)])
    path = lock_path(tmp_path, "train")
    write_lock(path, lock)
    assert read_lock(path) == lock
    doc = json.loads(path.read_text())
    doc["deps"][0][os.fsdecode(b"\xff")] = 1  # an unknown key of undecodable bytes
    path.write_text(json.dumps(doc))
    assert "deps[0] has an unknown key '\\udcff'" in read_lock(path).message


def test_problem_message_matches_the_documented_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = lock_path(Path(".pivotbuild"), "train")
    path.parent.mkdir(parents=True)
    path.write_text(_with(_set("deps.0.hash", None)))
    assert read_lock(path).message == (
        ".pivotbuild/locks/train.json: invalid lock (deps[0].hash is not a hash); "
        "the stage is treated as stale"
    )


def test_problem_path_shown_as_given(tmp_path):
    path = lock_path(tmp_path, "train")
    path.parent.mkdir(parents=True)
    path.write_text("{")
    problem = read_lock(path, shown="locks/train.json")
    assert isinstance(problem, LockProblem)
    assert problem.message.startswith("locks/train.json: invalid lock (not valid JSON")


def test_unreadable_lock_is_a_problem(tmp_path):
    path = lock_path(tmp_path, "train")
    path.mkdir(parents=True)  # a directory where the file should be
    assert isinstance(read_lock(path), LockProblem)


def test_directory_dep_is_valid(tmp_path):
    path = lock_path(tmp_path, "train")
    written = sample(deps=[LockedDep("src", DIRH, 99, nfiles=3)])
    write_lock(path, written)
    assert read_lock(path) == written


# ---- input hash ---------------------------------------------------------------------------

BASE = {
    "cmd": ["python train.py", "echo done"],
    "params": {"train.lr": 0.01, "train.epochs": 3},
    "deps": [("train.py", H1), ("data/clean.csv", H2)],
    "outs": ["model", "metrics.json"],
    "wdir": ".",
}


def ih(**changes) -> str:
    args = dict(BASE)
    args.update(changes)
    return input_hash(**args)


def test_input_hash_is_xxh3_of_the_documented_form():
    expected_form = (
        '{"cmd":["python train.py","echo done"],'
        f'"deps":[["data/clean.csv","{H2}"],["train.py","{H1}"]],'
        '"outs":["metrics.json","model"],'
        '"params":{"train.epochs":3,"train.lr":0.01},"v":1,"wdir":"."}'
    ).encode()
    assert input_form(**BASE) == expected_form
    assert ih() == xxhash.xxh3_128_hexdigest(expected_form)
    assert FILE_HASH_RE.fullmatch(ih())


def test_input_hash_ignores_order():
    assert ih() == ih(
        deps=list(reversed(BASE["deps"])),
        outs=list(reversed(BASE["outs"])),
        params=dict(reversed(list(BASE["params"].items()))),
    )


@pytest.mark.parametrize(
    "change",
    [
        {"cmd": ["python train.py", "echo Done"]},
        {"cmd": ["echo done", "python train.py"]},  # the order of commands matters
        {"cmd": ["python train.py echo done"]},
        {"params": {"train.lr": 0.02, "train.epochs": 3}},
        {"params": {"train.lr": 0.01, "train.epochs": 3.0}},
        {"params": {"train.lr": 0.01}},
        {"deps": [("train.py", H3), ("data/clean.csv", H2)]},
        {"deps": [("train2.py", H1), ("data/clean.csv", H2)]},
        {"deps": [("train.py", H1)]},
        {"outs": ["model", "metrics2.json"]},
        {"outs": ["model"]},
        {"wdir": "sub"},
    ],
)
def test_input_hash_changes_with_each_input(change):
    assert ih(**change) != ih()


def test_input_hash_does_not_confuse_fields():
    # A dep path moved into the outs, or a string split differently, is another input.
    assert ih(deps=[], outs=["a", "b"]) != ih(deps=[("a", H1)], outs=["b"])
    assert ih(cmd=["a", "b"]) != ih(cmd=["a b"]) != ih(cmd=["ab"])


def test_input_hash_of_a_string_cmd_equals_its_list_form():
    assert ih(cmd="python train.py") == ih(cmd=["python train.py"])


# ---- discovered deps (SPEC §9: stages with a depfile or discover) ---------------------------


def test_discovered_is_written_sorted_only_when_present_and_round_trips(tmp_path):
    plain = sample()
    assert "discovered" not in plain.to_json()  # older locks: the same bytes as before
    found = sample(discovered=[LockedDep("include/z.h", H2, 7), LockedDep("include/a.h", H1, 3)])
    doc = json.loads(found.to_json())
    assert doc["discovered"] == [{"hash": H1, "path": "include/a.h", "size": 3},
                                 {"hash": H2, "path": "include/z.h", "size": 7}]
    path = tmp_path / "locks" / "train.json"
    write_lock(path, found)
    assert read_lock(path) == found
    empty = sample(discovered=[])  # a stage that discovered nothing still says so
    write_lock(path, empty)
    assert json.loads(path.read_text())["discovered"] == []
    assert read_lock(path).discovered == []
    write_lock(path, plain)
    assert read_lock(path).discovered is None


def test_a_missing_discovered_dep_is_written_with_a_null_hash_and_read_back(tmp_path):
    found = sample(discovered=[LockedDep("gen.h", MISSING_HASH, 0), LockedDep("a.h", H1, 3)])
    doc = json.loads(found.to_json())
    assert doc["discovered"] == [{"hash": H1, "path": "a.h", "size": 3},
                                 {"hash": None, "path": "gen.h", "size": 0}]
    path = tmp_path / "locks" / "train.json"
    write_lock(path, found)
    back = read_lock(path)
    assert back == found and [d.missing for d in back.discovered] == [False, True]
    doc["deps"] = [{"hash": None, "path": "gen.h", "size": 0}]  # only discovered may be null
    path.write_text(json.dumps(doc))
    assert isinstance(read_lock(path), LockProblem)


def test_a_lock_without_discovered_stays_valid(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(EXPECTED)
    assert read_lock(path) == sample()


@pytest.mark.parametrize(("value", "reason"), [
    (None, "discovered is null, not a list"),
    ({}, "discovered is an object, not a list"),
    ([{"path": "a.h", "size": 1}], "discovered[0] has no 'hash'"),
    ([{"hash": H1, "path": "../a.h", "size": 1}],
     "discovered[0].path is not a project-relative path: '../a.h'"),
    ([{"hash": H1, "path": "a.h", "size": 1}, {"hash": H2, "path": "a.h", "size": 1}],
     "discovered lists 'a.h' twice"),
    ([{"hash": H1, "path": "a.h", "size": 1, "cache": True}],
     "discovered[0] has an unknown key 'cache'"),
    ([{"hash": None, "path": "a.h", "size": 3}],
     "discovered[0].size is not 0 for a missing file (hash null)"),
    ([{"hash": None, "path": "a.h", "size": 0, "nfiles": 1}],
     "discovered[0] has nfiles but a file hash (or null)"),
    ([{"hash": "", "path": "a.h", "size": 0}], "discovered[0].hash is not a hash"),
])
def test_a_bad_discovered_list_is_a_problem_naming_it(tmp_path, value, reason):
    doc = json.loads(EXPECTED)
    doc["discovered"] = value
    path = tmp_path / "train.json"
    path.write_text(json.dumps(doc))
    found = read_lock(path, shown="locks/train.json")
    assert isinstance(found, LockProblem)
    assert found.message == (f"locks/train.json: invalid lock ({reason}); "
                             "the stage is treated as stale")


def test_discovered_deps_are_not_part_of_the_input_hash():
    form = input_form(["cc"], {}, [("a.c", H1)], ["a.o"], ".")
    assert b"discovered" not in form


# ---- the hand-written acceptor never accepts what the schema refuses ----------------------
# parse_lock accepts a sound lock without pydantic (lock._accept); anything else goes to the
# schema (lockschema.parse_checked: the parser as it was before the acceptor). Each case runs
# through both: the acceptor may only pass a lock to the schema, never accept one it refuses,
# and parse_lock's answer (Lock or reason) is the schema's.


def _outcome(parse, content, stage="train"):
    """What a parser makes of ``content``: ("lock", repr) or ("refused", reason).

    repr, not ==: a NaN param never equals itself, and -0.0 must stay -0.0."""
    try:
        return ("lock", repr(parse(content, stage)))
    except LockFormatError as exc:
        return ("refused", str(exc))


def _fast(content, stage="train"):
    """The acceptor's Lock for ``content``, or None (not valid JSON, or passed on)."""
    try:
        data = json.loads(content.decode("utf-8") if isinstance(content, bytes) else content)
    except Exception:  # noqa: BLE001 - as parse_lock does
        return None
    return _accept(data, stage)


def _agree(content, stage="train"):
    """Assert the acceptor and the schema agree on ``content``; the schema's outcome."""
    schema = _outcome(lockschema.parse_checked, content, stage)
    assert _outcome(parse_lock, content, stage) == schema
    fast = _fast(content, stage)
    if fast is not None:
        assert schema == ("lock", repr(fast)), content
    try:
        data = json.loads(content)
    except Exception:  # noqa: BLE001
        return schema
    dict_schema = _outcome(lockschema.validate_dict, data, stage)
    assert _outcome(Lock.from_dict, data, stage) == dict_schema
    if _accept(data, stage) is not None:
        assert dict_schema[0] == "lock"
    return schema


def _replace(where: str, value):
    return _with(_set(where, value))


def _digits(n: int) -> str:
    return EXPECTED.replace('"size": 1234', f'"size": {"9" * n}')


REFUSED = {
    **{f"corruption: {name}": content for name, (content, _) in CORRUPTIONS.items()},
    "bool size false": _replace("deps.0.size", False),
    "float size": _replace("deps.0.size", 1234.0),
    "float size in text": EXPECTED.replace('"size": 1234', '"size": 1234.0'),
    "exponent size": EXPECTED.replace('"size": 1234', '"size": 1e3'),
    "size above i64": _replace("deps.0.size", -(2**64)),
    "huge negative size": _replace("deps.0.size", -(10**40)),
    "size of 5000 digits": _digits(5000),
    "null size": _replace("deps.0.size", None),
    "extra top key": _replace("checksum", "x"),
    "extra out key": _replace("outs.1.mode", 0o644),
    "dir hash without nfiles (dep)": _with(_set("deps", [{"hash": DIRH, "path": "s",
                                                          "size": 1}])),
    "nfiles null with a dir hash": _replace("outs.1.nfiles", None),
    "nfiles bool": _replace("outs.1.nfiles", True),
    "nfiles float": _replace("outs.1.nfiles", 12.0),
    "nfiles negative": _replace("outs.1.nfiles", -1),
    "nfiles with a file hash": _replace("outs.0.nfiles", 1),
    "nfiles null with a file hash": _replace("outs.0.nfiles", None),
    "null dep hash (only discovered may)": _replace("deps.0.hash", None),
    "dir input hash": _replace("input_hash", DIRH),
    "bad stage": _replace("stage", "other"),
    "empty stage": _replace("stage", ""),
    "stage a number": _replace("stage", 1),
    "schema 2": _replace("schema", 2),
    "schema 1.0": _replace("schema", 1.0),
    "schema 0": _replace("schema", 0),
    "schema null": _replace("schema", None),
    "cmd of numbers": _replace("cmd", [1]),
    "cmd null": _replace("cmd", None),
    "cache 0": _replace("outs.0.cache", 0),
    "persist null": _replace("outs.1.persist", None),
    "persist string": _replace("outs.1.persist", "false"),
    "duplicate out paths": _replace("outs.1.path", "metrics.json"),
    "duplicate discovered": _replace("discovered", [{"hash": H1, "path": "a", "size": 1}] * 2),
    "discovered null": _replace("discovered", None),
    "missing discovered with size": _replace("discovered", [{"hash": None, "path": "a",
                                                             "size": 1}]),
    "missing discovered with nfiles": _replace("discovered", [{"hash": None, "path": "a",
                                                               "size": 0, "nfiles": 0}]),
    "discovered with flags": _replace("discovered", [{"cache": True, "hash": H1, "path": "a",
                                                      "persist": False, "size": 1}]),
    "path empty": _replace("deps.0.path", ""),
    "path trailing slash": _replace("deps.0.path", "data/"),
    "path with nul": _replace("deps.0.path", "a\0b"),
    "path a number": _replace("deps.0.path", 7),
    "entry a list": _replace("outs", [["metrics.json"]]),
    "params a list": _replace("params", [1]),
    "not utf-8 inside a string": EXPECTED.encode().replace(b"data/clean", b"data/cl\xe9an"),
    "utf-16": EXPECTED.encode("utf-16"),
    "byte order mark": b"\xef\xbb\xbf" + EXPECTED.encode(),
    "trailing junk": EXPECTED + "x",
    "a JSON string": '"train"',
    "a JSON number": "1",
    "null": "null",
    "deeply nested": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_the_schema_refuses_the_acceptor_never_accepts(name):
    content = REFUSED[name]
    outcome = _agree(content)
    assert outcome[0] == "refused", outcome
    assert _fast(content) is None


def test_a_number_too_long_for_python_is_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(_digits(5000))
    problem = read_lock(path, shown="train.json")
    assert isinstance(problem, LockProblem)
    assert "(not valid JSON here (a number of more than 4300 digits))" in problem.message


ACCEPTED = {
    "the documented example": EXPECTED,
    "compact, keys unsorted": json.dumps(dict(reversed(list(_doc().items())))),
    "directory dep": _replace("deps", [{"hash": DIRH, "nfiles": 0, "path": "src", "size": 0}]),
    "root path": _replace("deps", [{"hash": DIRH, "nfiles": 2, "path": ".", "size": 5}]),
    "no deps, no outs, no cmd": _with(lambda d: d.update(deps=[], outs=[], cmd=[])),
    "discovered, one missing": _replace("discovered", [
        {"hash": H1, "path": "a.h", "size": 3}, {"hash": None, "path": "gen.h", "size": 0}]),
    "discovered empty": _replace("discovered", []),
    "undecodable path": _replace("deps.0.path", os.fsdecode(b"caf\xff")),
    "raw lone surrogate in a str": json.dumps(
        {**_doc(), "cmd": [os.fsdecode(b"\xff")]}, ensure_ascii=False),
    "params of every kind": _replace("params", {
        "a.f": 0.1, "b.neg0": -0.0, "c.big": 10**30, "d.tiny": 5e-324, "e.list": [1, "x"],
        "f.null": None, "g.bool": True, "h.obj": {"k": [{}]}, "i.str": "é\u2028"}),
    "NaN and infinite params": EXPECTED.replace('"train.lr": 0.01',
                                                '"a": NaN, "b": Infinity, "c": 1e400'),
    # What the acceptor passes to the schema, which accepts it: the same Lock either way.
    "deps unsorted": _with(lambda d: d["deps"].reverse()),
    "huge size": _replace("deps.0.size", 2**64),
    "huge nfiles": _replace("outs.1.nfiles", 10**30),
    "a key given twice, the last one valid": EXPECTED.replace(
        '"schema": 1', '"schema": 2, "schema": 1'),
    "an entry's key given twice": EXPECTED.replace('"size": 1234', '"size": -1, "size": 1234'),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_valid_locks_parse_to_the_same_lock_both_ways(name):
    outcome = _agree(ACCEPTED[name])
    assert outcome[0] == "lock", outcome


def test_the_acceptor_takes_the_locks_pivotbuild_writes():
    """Sorted, plain locks (what write_lock writes) never need the schema."""
    for name in ("the documented example", "directory dep", "discovered, one missing",
                 "params of every kind", "undecodable path", "compact, keys unsorted"):
        assert _fast(ACCEPTED[name]) is not None, name
    assert _fast(ACCEPTED["deps unsorted"]) is None  # only the schema judges these
    assert _fast(ACCEPTED["huge size"]) is None


# ---- generated locks, and mutations of them -------------------------------------------------

_PATHS = ["a", "b/c", "b/c/d", "data/clean.csv", "é/x", os.fsdecode(b"\xff"), "a b", ".",
          "x.c", "include/calc.h", "z"]
_ODD = [None, True, False, 0, 1, -1, 1.0, 0.5, 2**63, 2**64, -(2**63), "", "x", H1, DIRH,
        H1.upper(), [], {}, ["a"], {"a": 1}, "../x", "/abs", "a//b", "./a", "train", 1e308]


def _entry(rng, path, kind):
    digest = rng.choice([H1, H2, H3, DIRH, "0" * 32 + ".dir"])
    entry = {"hash": digest, "path": path, "size": rng.choice([0, 1, 1234, 2**40, 2**63 - 1])}
    if digest.endswith(".dir"):
        entry["nfiles"] = rng.choice([0, 3, 2**62])
    if kind == "outs":
        entry.update(cache=rng.random() < 0.7, persist=rng.random() < 0.2)
    if kind == "discovered" and rng.random() < 0.3:
        entry = {"hash": None, "path": path, "size": 0}
    return entry


def _value(rng, depth=0):
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -5, 7, 2**70, -(2**64)])
    if kind == "float":
        return rng.choice([0.1, -0.0, 1e-300, 3.14159, 1e21, rng.random()])
    if kind == "str":
        return rng.choice(["", "x", "é", "\u2028", os.fsdecode(b"\xfe")])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randrange(3))}


def _generated(rng):
    doc = {
        "cmd": rng.sample(["cc -c a.c", "echo", "", "é"], rng.randrange(3)),
        "input_hash": rng.choice([H1, H2, H3]),
        "params": {f"p.{i}": _value(rng) for i in range(rng.randrange(4))},
        "schema": 1, "stage": "train",
    }
    for kind in ("deps", "outs", "discovered"):
        if kind == "discovered" and rng.random() < 0.5:
            continue
        paths = sorted(rng.sample(_PATHS, rng.randrange(5)))
        doc[kind] = [_entry(rng, path, kind) for path in paths]
    return doc


def _mutate(rng, doc):
    """One random change somewhere in ``doc`` (often making it invalid)."""
    lists = [doc[k] for k in ("deps", "outs", "discovered")
             if isinstance(doc.get(k), list) and doc[k]]
    target = rng.choice([doc] + [e for entries in lists for e in entries if isinstance(e, dict)])
    action = rng.randrange(6)
    if action == 0 and target:
        del target[rng.choice(sorted(target))]
    elif action == 1:
        target[rng.choice(["extra", "nfiles", "cache", "persist", "discovered", "hash"])] = \
            rng.choice(_ODD)
    elif action == 2 and target:
        target[rng.choice(sorted(target))] = rng.choice(_ODD)
    elif action == 3 and lists:
        rng.shuffle(rng.choice(lists))
    elif action == 4 and lists:
        entries = rng.choice(lists)
        entries.append(dict(rng.choice(entries)))
    else:
        doc["schema"] = rng.choice([1, 2, True, 1.0])


def _texts(rng, doc):
    yield json.dumps(doc, indent=2, sort_keys=True) + "\n"
    text = json.dumps(doc)
    if rng.random() < 0.1:
        text = text[: rng.randrange(len(text))]  # truncated
    yield text


def test_generated_locks_and_their_mutations_agree_both_ways():
    import random

    rng = random.Random(20261201)
    counts = {"fast": 0, "lock": 0, "refused": 0}
    for _ in range(800):
        doc = _generated(rng)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            _mutate(rng, doc)
        for text in _texts(rng, doc):
            counts[_agree(text)[0]] += 1
            counts["fast"] += _fast(text) is not None
    # Both kinds were exercised, and most valid locks took the fast path.
    assert counts["refused"] > 300 and counts["lock"] > 300
    assert counts["fast"] > counts["lock"] // 2
