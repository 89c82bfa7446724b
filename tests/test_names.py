"""names.py: hash patterns, the .dir rule, object and run-entry names."""

from __future__ import annotations

import pytest
import xxhash

from pivotbuild import manifest, names
from pivotbuild.errors import OperationError
from pivotbuild.names import InvalidHashError, check_hash

H = "0123456789abcdef0123456789abcdef"
BAD = ["", "0" * 31, "0" * 33, H.upper(), H + ".DIR", H + ".dirx", "../../etc/passwd",
       H[:2] + "/" + H[3:], " " + H[1:], H + "\n", None, 12, b"0" * 32]


def test_check_hash_accepts_file_and_dir_hashes() -> None:
    assert check_hash(H) == H
    assert check_hash(H + ".dir") == H + ".dir"
    assert check_hash(H, directory=False) == H
    assert check_hash(H + ".dir", directory=True) == H + ".dir"


@pytest.mark.parametrize("value", BAD)
def test_check_hash_refuses_what_is_not_a_hash(value: object) -> None:
    with pytest.raises(InvalidHashError) as info:
        check_hash(value)
    assert isinstance(info.value, OperationError) and info.value.exit_code == 1
    assert repr(value) in str(info.value)
    assert not names.is_hash(value)


def test_check_hash_kind() -> None:
    with pytest.raises(InvalidHashError, match="is not a file hash"):
        check_hash(H + ".dir", directory=False)
    with pytest.raises(InvalidHashError, match="is not a directory hash"):
        check_hash(H, directory=True)
    assert names.is_hash(H, directory=False) and not names.is_hash(H, directory=True)
    assert names.is_hash(H + ".dir", directory=True)
    assert not names.is_hash(H + ".dir", directory=False)


def test_object_and_run_entry_names() -> None:
    assert names.object_name(H) == "01/23456789abcdef0123456789abcdef"
    assert names.object_name(H + ".dir") == "01/23456789abcdef0123456789abcdef.dir"
    assert names.run_entry_name(H) == "01/23456789abcdef0123456789abcdef.json"
    for value in BAD:
        with pytest.raises(InvalidHashError):
            names.object_name(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidHashError):
        names.run_entry_name(H + ".dir")  # a run is named by an input hash: never .dir


def test_hash_from_name_reverses_the_names() -> None:
    shard, name = names.object_name(H + ".dir").split("/")
    assert names.hash_from_name(shard, name) == H + ".dir"
    shard, name = names.run_entry_name(H).split("/")
    assert names.hash_from_name(shard, name, names.RUN_SUFFIX) == H
    # temp files, stray names, a shard of the wrong length, a .dir run entry: not hashes
    assert names.hash_from_name("01", ".23456789abcdef0123456789abcdef.x1y2.tmp") is None
    assert names.hash_from_name("012", H[3:]) is None
    assert names.hash_from_name("01", H[2:] + ".json") is None
    assert names.hash_from_name("01", H[2:] + ".dir.json", names.RUN_SUFFIX) is None
    assert names.hash_from_name("01", H[2:], names.RUN_SUFFIX) is None


def test_dir_hash_is_xxh3_of_the_manifest_plus_dir() -> None:
    body = manifest.build([manifest.ManifestEntry("a.txt", H, 3, False)])
    expected = xxhash.xxh3_128_hexdigest(body) + ".dir"
    assert names.dir_hash(body) == expected
    assert names.dir_hash(body, xxhash.xxh3_128_hexdigest) == expected
    assert names.is_dir_hash(expected) and not names.is_dir_hash(H)
