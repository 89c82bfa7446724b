"""The C core's own test, built with AddressSanitizer and UndefinedBehaviorSanitizer:
it must pass with zero sanitizer reports. csrc/tests/test_core.c covers the whole C API,
including the PATH_MAX boundaries (4,093-4,096-byte paths, 255-byte names)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"


@pytest.mark.slow
def test_core_under_asan_and_ubsan(tmp_path):
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "gcc")) is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs make and gcc to build the sanitizer test")
        pytest.skip("no make or gcc on this machine")
    result = subprocess.run(
        ["make", "-s", "-C", str(CSRC), "sanitize", f"OUT={tmp_path}"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ok: 0 failure(s)" in output
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in output, output


@pytest.mark.slow
def test_md5_under_asan_and_ubsan(tmp_path):
    """csrc/tests/test_md5.c: RFC 1321's suite and DVC 2's CRLF rule at read and chunk edges."""
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "gcc")) is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs make and gcc to build the sanitizer test")
        pytest.skip("no make or gcc on this machine")
    result = subprocess.run(
        ["make", "-s", "-C", str(CSRC), "sanitize-md5", f"OUT={tmp_path}"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ok: 0 failure(s)" in output
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in output, output
