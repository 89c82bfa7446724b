"""store/runcache.py's plain checks: a sound entry without pydantic, never one the model refuses.

entry_problem recognises a sound entry by hand (runcache._plainly_valid) and leaves every other
to the pydantic model (runcache._model_problem, the validator as it was before). Each case
here runs through both: the plain checks may pass an entry to the model, never accept one it
refuses, and entry_problem's answer is the model's.
"""

from __future__ import annotations

import json
import random

import pytest

from pivotbuild.store.runcache import (
    MAX_VARIANTS,
    _model_problem,
    _plainly_valid,
    entry_bytes,
    entry_problem,
    parse_entry,
)
from tests.storekit import D, H
from tests.test_store_runcache import BAD_DOCS, GOOD_DEP, GOOD_OUT

DIR = D + ".dir"


def _agree(doc, name=H):
    """Assert the plain checks and the model agree on ``doc``; the model's problem."""
    model = _model_problem(doc, name)
    assert entry_problem(doc, name) == model
    if _plainly_valid(doc, name):
        assert model is None, doc
    return model


def _entry(**changes):
    doc = {"input_hash": H, "outs": [GOOD_OUT], "schema": 2, "discovered": [GOOD_DEP],
           "earlier": [{"outs": [], "discovered": []}]}
    doc.update(changes)
    return doc


MORE_BAD = {
    "float size": _entry(outs=[{**GOOD_OUT, "size": 1.0}]),
    "negative huge size": _entry(outs=[{**GOOD_OUT, "size": -(2**64)}]),
    "bool nfiles": _entry(outs=[{**GOOD_OUT, "hash": DIR, "nfiles": True}]),
    "null nfiles with a dir hash": _entry(outs=[{**GOOD_OUT, "hash": DIR, "nfiles": None}]),
    "negative nfiles": _entry(discovered=[{**GOOD_DEP, "hash": DIR, "nfiles": -1}]),
    "nfiles with a file hash": _entry(discovered=[{**GOOD_DEP, "nfiles": 0}]),
    "null hash": _entry(discovered=[{**GOOD_DEP, "hash": None}]),
    "discovered null in schema 2": _entry(discovered=None),
    "earlier null in schema 2": _entry(earlier=None),
    "earlier an object": _entry(earlier={}),
    "a variant with an extra key": _entry(earlier=[{"outs": [], "discovered": [], "x": 1}]),
    "a variant without outs": _entry(earlier=[{"discovered": []}]),
    "a variant a list": _entry(earlier=[[]]),
    "a variant's paths twice": _entry(earlier=[{"outs": [GOOD_OUT, GOOD_OUT],
                                                "discovered": []}]),
    "two variants alike": _entry(earlier=[{"outs": [], "discovered": []}] * 2),
    "a variant like the newest": _entry(earlier=[{"outs": [], "discovered": [GOOD_DEP]}]),
    "input_hash a number": _entry(input_hash=1),
    "another input hash": _entry(input_hash=D),
    "schema 2.0": _entry(schema=2.0),
    "path a number": _entry(outs=[{**GOOD_OUT, "path": 1}]),
    "path with a trailing slash": _entry(outs=[{**GOOD_OUT, "path": "a/"}]),
    "cache null": _entry(outs=[{**GOOD_OUT, "cache": None}]),
    "an out without cache in a variant": _entry(earlier=[{"outs": [GOOD_DEP],
                                                          "discovered": []}]),
    "a string": "entry",
    "null": None,
}


@pytest.mark.parametrize("doc", [doc for doc, _ in BAD_DOCS] + list(MORE_BAD.values()),
                         ids=[f"bad_docs[{i}]" for i in range(len(BAD_DOCS))] + list(MORE_BAD))
def test_what_the_model_refuses_the_plain_checks_never_accept(doc):
    assert _agree(doc) is not None
    assert not _plainly_valid(doc, H)


ACCEPTED = {
    "schema 1": {"input_hash": H, "outs": [GOOD_OUT], "schema": 1},
    "schema 1, no outs": {"input_hash": H, "outs": [], "schema": 1},
    "schema 2": _entry(),
    "a directory out and dep": _entry(outs=[{**GOOD_OUT, "hash": DIR, "nfiles": 0}],
                                      discovered=[{**GOOD_DEP, "hash": DIR, "nfiles": 5}]),
    # What the plain checks pass on and the model accepts: entry_problem is None either way.
    "schema 1 with discovered null": {"input_hash": H, "outs": [], "schema": 1,
                                      "discovered": None},
    "outs unsorted": _entry(outs=[{**GOOD_OUT, "path": "b"}, GOOD_OUT]),
    "a huge size": _entry(outs=[{**GOOD_OUT, "size": 2**64}]),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_sound_entries_are_accepted_both_ways(name):
    assert _agree(ACCEPTED[name]) is None


def test_what_the_writer_writes_needs_no_model():
    previous = None
    for i in range(MAX_VARIANTS + 2):
        found = [{"path": f"inc/{i}.h", "hash": H, "size": i}, {**GOOD_DEP, "hash": DIR,
                                                                "nfiles": i}]
        data = entry_bytes(H, [{**GOOD_OUT, "persist": True}, {**GOOD_OUT, "path": "z"}],
                           found, previous)
        previous = parse_entry(data, H)
        assert _plainly_valid(previous, H)
    assert len(previous["earlier"]) == MAX_VARIANTS - 1
    assert _plainly_valid(parse_entry(entry_bytes(H, [GOOD_OUT]), H), H)


_ODD = [None, True, False, 0, 1, -1, 1.0, 2**63, "", "x", H, D, DIR, [], {}, ["a"], "../x",
        "/abs", "a//b", "."]
_PATHS = ["a", "a/b", "b", "é", "inc/x.h", "z z"]


def _items(rng, out):
    items = []
    for path in sorted(rng.sample(_PATHS, rng.randrange(4))):
        digest = rng.choice([H, D, DIR])
        item = {"path": path, "hash": digest, "size": rng.choice([0, 7, 2**62])}
        if digest == DIR:
            item["nfiles"] = rng.choice([0, 2])
        if out:
            item["cache"] = rng.random() < 0.7
        items.append(item)
    return items


def _generated(rng):
    doc = {"input_hash": H, "outs": _items(rng, True), "schema": 1}
    if rng.random() < 0.6:
        doc.update(schema=2, discovered=_items(rng, False), earlier=[
            {"outs": _items(rng, True), "discovered": _items(rng, False)}
            for _ in range(rng.randrange(3))])
    return doc


def _mutate(rng, doc):
    containers = [doc]
    for variant in [doc] + [v for v in doc.get("earlier") or () if isinstance(v, dict)]:
        for key in ("outs", "discovered"):
            if isinstance(variant.get(key), list):
                containers += [e for e in variant[key] if isinstance(e, dict)]
    target = rng.choice(containers)
    action = rng.randrange(4)
    if action == 0 and target:
        del target[rng.choice(sorted(target))]
    elif action == 1:
        target[rng.choice(["x", "nfiles", "cache", "discovered", "earlier", "hash"])] = \
            rng.choice(_ODD)
    elif action == 2 and target:
        target[rng.choice(sorted(target))] = rng.choice(_ODD)
    else:
        doc["schema"] = rng.choice([1, 2, True, 2.0, 3])


def test_generated_entries_and_their_mutations_agree_both_ways():
    rng = random.Random(20261201)
    counts = {"plain": 0, "valid": 0, "refused": 0}
    for _ in range(800):
        doc = _generated(rng)
        for _ in range(rng.choice([0, 0, 1, 2])):
            _mutate(rng, doc)
        doc = json.loads(json.dumps(doc))  # as a reader sees it
        counts["valid" if _agree(doc) is None else "refused"] += 1
        counts["plain"] += _plainly_valid(doc, H)
    assert counts["refused"] > 200 and counts["valid"] > 200
    assert counts["plain"] > counts["valid"] // 2
