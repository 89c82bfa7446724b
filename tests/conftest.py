"""Shared fixtures: every hashing test runs over both backends."""

from __future__ import annotations

import os

import pytest

from pivotbuild import hashing


def _core_or_none():
    try:
        return hashing.CoreBackend()
    except ImportError:
        return None


@pytest.fixture(params=["core", "python"])
def backend(request):
    """The compiled core and the pure-Python fallback, one after the other."""
    if request.param == "python":
        return hashing.PythonBackend()
    core = _core_or_none()
    if core is None:
        if os.environ.get("CI"):
            pytest.fail("the compiled core was not built in CI (is libxxhash-dev installed?)")
        pytest.skip("compiled core not built on this machine")
    return core


@pytest.fixture
def core():
    core = _core_or_none()
    if core is None:
        if os.environ.get("CI"):
            pytest.fail("the compiled core was not built in CI (is libxxhash-dev installed?)")
        pytest.skip("compiled core not built on this machine")
    return core
