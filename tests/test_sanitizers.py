"""The C core's own tests, built with AddressSanitizer and UndefinedBehaviorSanitizer:
they must pass with zero sanitizer reports. csrc/tests/test_core.c covers the whole C API,
including the PATH_MAX boundaries (4,093-4,096-byte paths, 255-byte names)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"


def _passes_sanitized(make_target: str, out_dir: Path) -> None:
    """Build and run one of csrc/Makefile's sanitizer targets: it passes, nothing reported."""
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "gcc")) is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs make and gcc to build the sanitizer test")
        pytest.skip("no make or gcc on this machine")
    result = subprocess.run(
        ["make", "-s", "-C", str(CSRC), make_target, f"OUT={out_dir}"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ok: 0 failure(s)" in output
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in output, output


@pytest.mark.slow
def test_core_under_asan_and_ubsan(tmp_path: Path) -> None:
    _passes_sanitized("sanitize", tmp_path)


@pytest.mark.slow
def test_md5_under_asan_and_ubsan(tmp_path: Path) -> None:
    """csrc/tests/test_md5.c: RFC 1321's suite and DVC 2's CRLF rule at read and chunk edges."""
    _passes_sanitized("sanitize-md5", tmp_path)
