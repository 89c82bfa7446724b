"""store/runcache.py: the run cache's one format, one validator and one writer."""

# ruff: noqa: F811 - the fixtures imported from tests.storekit are parameters here

from __future__ import annotations

import os

import pytest

from pivotbuild.errors import OperationError
from pivotbuild.lock import LockedOut
from pivotbuild.names import InvalidHashError
from pivotbuild.store.runcache import (
    ENTRY_MAX_BYTES,
    RunCache,
    entry_bytes,
    entry_problem,
    parse_entry,
)
from tests.storekit import D, H, runs  # noqa: F401 - fixtures


def test_run_cache_round_trip(runs):
    outs = [
        {"path": "model", "hash": D + ".dir", "size": 10, "nfiles": 2, "cache": True,
         "persist": True},
        LockedOut("metrics.json", H, 5, cache=False),
    ]
    assert runs.put(H, outs) is True
    path = runs.path(H)
    before = path.stat()
    assert runs.put(H, list(reversed(outs))) is False  # same bytes: untouched
    assert path.stat().st_ino == before.st_ino
    got = runs.get(H)
    assert got == {
        "input_hash": H, "schema": 1,
        "outs": [
            {"cache": False, "hash": H, "path": "metrics.json", "size": 5},
            {"cache": True, "hash": D + ".dir", "nfiles": 2, "path": "model", "size": 10},
        ],
    }
    assert path.read_text().endswith("}\n")
    assert list(iter(runs)) == [H]
    assert runs.remove(H) is True and runs.get(H) is None
    assert runs.remove(H) is False


def test_put_run_refuses_bad_outs(runs):
    for bad in ({"path": "../x", "hash": H, "size": 1}, {"path": "a", "hash": None, "size": 1},
                {"path": "a", "hash": D + ".dir", "size": 1}):
        with pytest.raises(OperationError, match="refusing to record"):
            runs.put(H, [bad])
    assert runs.get(H) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"input_hash": "%s", "outs": [], "schema": 2}' % H.encode(),
     b'{"input_hash": "%s", "outs": [], "schema": 1}' % D.encode(),
     b'{"input_hash": "%s", "outs": [{"path": "/abs", "hash": "%s", "size": 1, "cache": true}],'
     b' "schema": 1}' % (H.encode(), H.encode()),
     b'{"input_hash": "%s", "outs": [{"path": "a", "hash": null, "size": 1, "cache": true}],'
     b' "schema": 1}' % H.encode(),
     b"\xff\xfe"],
)
def test_corrupt_run_entries_are_absent(runs, content):
    path = runs.path(H)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert runs.get(H) is None


def test_get_run_of_an_invalid_hash_is_none(runs):
    assert runs.get("../../etc/passwd") is None


def test_entry_layout(runs):
    assert runs.path(H) == runs.runs_dir / "01" / (H[2:] + ".json")
    with pytest.raises(InvalidHashError):
        runs.path(H + ".dir")  # a run is named by an input hash: never a directory hash


def test_iteration_skips_temps_and_stray_names(runs):
    assert runs.put(H, []) and runs.put(D, [])
    shard = runs.path(H).parent
    (shard / ".x.abc.tmp").write_bytes(b"partial")
    (shard / "stray.json").write_bytes(b"{}")
    (runs.runs_dir / "not-a-shard").mkdir()
    assert list(runs) == sorted([H, D])
    os.utime(shard / ".x.abc.tmp", (1, 1))
    assert runs.remove_stale_temps() == 1 and not (shard / ".x.abc.tmp").exists()


GOOD_OUT = {"path": "a", "hash": H, "size": 1, "cache": True}
GOOD_DEP = {"path": "a.h", "hash": D, "size": 2}


BAD_DOCS = [
    ([], "not an object"),
    ({"input_hash": D, "outs": [], "schema": 1}, "its input_hash is not its name"),
    ({"input_hash": H, "outs": [], "schema": 3}, "unsupported schema 3"),
    ({"input_hash": H, "outs": [], "schema": 2}, "schema 2 needs discovered and earlier"),
    ({"input_hash": H, "outs": [], "schema": 1, "discovered": []},
     "schema 1 has no discovered or earlier"),
    ({"input_hash": H, "outs": [], "schema": 2, "discovered": [{**GOOD_DEP, "cache": True}],
      "earlier": []}, "discovered[0].cache"),
    ({"input_hash": H, "outs": [], "schema": 2, "discovered": [GOOD_DEP, GOOD_DEP],
      "earlier": []}, "discovered[1]: path 'a.h' repeated"),
    ({"input_hash": H, "outs": [], "schema": 2, "discovered": [GOOD_DEP],
      "earlier": [{"outs": [], "discovered": [GOOD_DEP]}]},
     "two variants have the same discovered list"),
    ({"input_hash": H, "outs": [], "schema": 2, "discovered": [],
      "earlier": [{"outs": []}]}, "earlier[0].discovered"),
    ({"input_hash": H, "outs": [], "schema": True}, "schema"),
    ({"input_hash": H, "outs": [], "schema": 1, "extra": 1}, "extra"),
    ({"input_hash": H, "outs": {}, "schema": 1}, "outs"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "hash": "zz"}], "schema": 1},
     "outs[0].hash: not a hash: 'zz'"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "hash": D + ".dir"}], "schema": 1},
     "outs[0]: nfiles must be a count, present exactly for a directory hash"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "nfiles": 2}], "schema": 1}, "nfiles"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "nfiles": None}], "schema": 1}, "nfiles"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "size": -1}], "schema": 1}, "outs[0].size"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "size": True}], "schema": 1}, "outs[0].size"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "cache": 1}], "schema": 1}, "outs[0].cache"),
    ({"input_hash": H, "outs": [{**GOOD_OUT, "persist": False}], "schema": 1}, "persist"),
    ({"input_hash": H, "outs": [{"path": "a", "hash": H, "size": 1}], "schema": 1},
     "outs[0].cache"),
    ({"input_hash": H, "outs": [GOOD_OUT, GOOD_OUT], "schema": 1}, "outs[1]: path 'a' repeated"),
] + [
    ({"input_hash": H, "outs": [{**GOOD_OUT, "path": p}], "schema": 1}, "unsafe path")
    for p in ("../x", "/abs", ".", "a/../b", "a//b", "a/./b", "", "a\0b")
]


@pytest.mark.parametrize(("doc", "problem"), BAD_DOCS)
def test_entry_problem_names_what_is_wrong(doc, problem):
    """The one validator, whoever reads an entry (the planner, push, a fetch): one line that
    says where the problem is."""
    found = entry_problem(doc, H)
    assert found is not None and problem in found and "\n" not in found


def test_entry_problem_accepts_what_the_writer_writes():
    data = entry_bytes(H, [{**GOOD_OUT, "persist": True},
                           {"path": "d", "hash": D + ".dir", "size": 3, "nfiles": 2}])
    doc = parse_entry(data, H)
    assert entry_problem(doc, H) is None
    assert [o["path"] for o in doc["outs"]] == ["a", "d"] and doc["outs"][1]["cache"] is True


@pytest.mark.parametrize(("data", "problem"), [
    (b"x" * (ENTRY_MAX_BYTES + 1), "too large"),
    (b"{", "not valid JSON"),
    (b"\xff", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"input_hash": "%s", "outs": [], "schema": 1}' % D.encode(), "not its name"),
])
def test_parse_entry_refuses_with_the_reason(data, problem):
    with pytest.raises(OperationError, match=problem):
        parse_entry(data, H)


def test_a_non_durable_run_cache_writes_the_same(tmp_path):
    fast = RunCache(tmp_path / "runs", durable=False)
    assert fast.put(H, [GOOD_OUT]) is True and fast.put(H, [GOOD_OUT]) is False
    assert fast.path(H).read_bytes() == entry_bytes(H, [GOOD_OUT])


# ---- schema 2: runs of a stage with discovered deps (SPEC §9) ---------------------------------

A_H, B_H, C_H = ("1" * 32, "2" * 32, "3" * 32)


def header(content_hash: str, path: str = "include/calc.h") -> dict:
    return {"path": path, "hash": content_hash, "size": 4}


def out_of(content_hash: str) -> list[dict]:
    return [{"path": "calc.o", "hash": content_hash, "size": 8, "cache": True}]


def test_a_stage_without_discovered_deps_still_writes_schema_1(runs):
    runs.put(H, out_of(A_H))
    doc = runs.get(H)
    assert doc["schema"] == 1 and "discovered" not in doc and "earlier" not in doc


def test_runs_with_different_headers_coexist_newest_first(runs):
    from pivotbuild.store.runcache import variants

    runs.put(H, out_of(A_H), [header(A_H)])
    runs.put(H, out_of(B_H), [header(B_H), header(C_H, "include/b.h")])
    doc = runs.get(H)
    assert doc["schema"] == 2
    assert [v["outs"][0]["hash"] for v in variants(doc)] == [B_H, A_H]
    assert [[d["path"] for d in v["discovered"]] for v in variants(doc)] == [
        ["include/b.h", "include/calc.h"], ["include/calc.h"]]  # sorted by path
    # the same headers again: that run becomes the newest, never listed twice
    runs.put(H, out_of(A_H), [header(A_H)])
    assert [v["outs"][0]["hash"] for v in variants(runs.get(H))] == [A_H, B_H]
    # the raw file keeps the newest run's outs at the top, for readers of outs only
    assert parse_entry(runs.path(H).read_bytes(), H)["outs"] == out_of(A_H)


def test_at_most_max_variants_are_kept_the_oldest_dropped(runs):
    from pivotbuild.store.runcache import MAX_VARIANTS, variants

    contents = [f"{i:032x}" for i in range(1, MAX_VARIANTS + 3)]
    for content in contents:
        runs.put(H, out_of(content), [header(content)])
    kept = [v["discovered"][0]["hash"] for v in variants(runs.get(H))]
    assert kept == list(reversed(contents))[:MAX_VARIANTS]


def test_an_oversized_entry_drops_its_oldest_variants(runs):
    from pivotbuild.store.runcache import variants

    many = [header(A_H, f"include/h{i:05d}_{'x' * 80}.h") for i in range(3000)]
    runs.put(H, out_of(A_H), many)
    changed = [dict(d, hash=B_H) for d in many]
    runs.put(H, out_of(B_H), changed)
    assert runs.path(H).stat().st_size <= ENTRY_MAX_BYTES
    assert [v["outs"][0]["hash"] for v in variants(runs.get(H))] == [B_H]


def test_a_plain_run_replaces_variants_and_a_discovering_run_drops_a_plain_entry(runs):
    from pivotbuild.store.runcache import variants

    runs.put(H, out_of(A_H), [header(A_H)])
    runs.put(H, out_of(B_H))
    assert variants(runs.get(H)) == [{"outs": out_of(B_H), "discovered": None}]
    runs.put(H, out_of(C_H), [])
    assert variants(runs.get(H)) == [{"outs": out_of(C_H), "discovered": []}]


def test_put_entry_merges_a_fetched_entry_its_newest_run_first(runs, tmp_path):
    from pivotbuild.store.runcache import variants

    elsewhere = RunCache(tmp_path / "remote-runs", durable=False)
    elsewhere.put(H, out_of(A_H), [header(A_H)])
    elsewhere.put(H, out_of(B_H), [header(B_H)])
    runs.put(H, out_of(C_H), [header(C_H)])
    assert runs.put_entry(H, elsewhere.get(H)) is True
    assert [v["outs"][0]["hash"] for v in variants(runs.get(H))] == [B_H, A_H, C_H]
    assert runs.put_entry(H, elsewhere.get(H)) is False  # nothing new: left alone
    plain = RunCache(tmp_path / "plain", durable=False)
    plain.put(H, out_of(A_H))
    runs.put_entry(H, plain.get(H))
    assert runs.get(H)["schema"] == 1
