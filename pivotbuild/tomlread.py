"""Parses TOML 1.0: with tomli's compiled build if a 1.0 one is installed, else with tomllib.

tomllib is tomli, vendored into Python 3.11 as pure Python. tomli's wheels are compiled with
mypyc: the same parser, the same results and error messages, about 2.5 times faster. That
matters for a large pivot.toml (a 1,000-stage file of 140 KB took 160 ms with tomllib and
64 ms with tomli), which is parsed on the first command after every edit of it. tomli is a
dependency; tomllib remains the fallback so that a missing or broken install only costs time.

tomli 2.4 and later parse TOML 1.1 (trailing commas and newlines in inline tables, ``\\e``
and ``\\x`` escapes, times without seconds), which tomllib refuses: a pivot.toml would then
be valid or not depending on the install. So pyproject.toml asks for ``tomli<2.4``, and a
newer tomli found installed anyway is not used.
"""

from __future__ import annotations

try:
    import tomli as _tomli

    if tuple(int(part) for part in _tomli.__version__.split(".")[:2]) >= (2, 4):
        raise ImportError("tomli >= 2.4 parses TOML 1.1")
    from tomli import TOMLDecodeError, loads
except (ImportError, AttributeError, ValueError):
    from tomllib import TOMLDecodeError, loads  # type: ignore[assignment]

__all__ = ["TOMLDecodeError", "loads"]
