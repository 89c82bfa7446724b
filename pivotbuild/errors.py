"""The exception tree and the exit code each kind maps to.

Three kinds are kept apart:
- ``UsageError`` (exit 2): the user's mistake -- a bad pivot.toml, an unknown
  stage, a bad flag. Raised at the boundary with its location.
- ``OperationError`` (exit 1): something that could not be done -- a missing
  output, a missing cache object, an unreadable file. Names the path and, where
  there is one, what to do next.
- A stage whose command ran and failed is not an exception at all: it is a
  result value carrying its exit code (see execute.py).

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``;
no traceback ever reaches the user for these.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the no-op fast path imports this module

if TYPE_CHECKING:
    import re

    BARE_KEY_RE: re.Pattern[str]  # provided by __getattr__ below

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class PivotError(Exception):
    """Base of every error pivotbuild reports to the user."""

    exit_code = EXIT_FAILED


class UsageError(PivotError):
    """The user asked for something invalid (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A problem in pivot.toml or params.toml, located by file and key path.

    ``str()`` is ``"<file>: <key path>: <problem>"``, e.g.
    ``pivot.toml: stages.train.outs[1]: path escapes the project root: '../x'``.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(f"{where}{problem}")


# A key written bare in TOML; any other is quoted in a key path. Compiled on first use
# (``BARE_KEY_RE`` through the module's __getattr__): `re` costs the no-op fast path ~10 ms.
_BARE_KEY = r"[A-Za-z0-9_-]+"
_compiled: dict[str, re.Pattern[str]] = {}


def __getattr__(name: str) -> object:
    if name == "BARE_KEY_RE":
        return _bare_key_re()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bare_key_re() -> re.Pattern[str]:
    pattern = _compiled.get(_BARE_KEY)
    if pattern is None:
        import re

        pattern = _compiled[_BARE_KEY] = re.compile(_BARE_KEY)
    return pattern


def key_path(*parts: str | int) -> str:
    """Render a key path the way TOML spells it: ``stages.train.outs[1]``, ``stages."a.b".cmd``
    (the ``key`` of a ConfigError)."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _bare_key_re().fullmatch(part) else _quote_key(part)
        out = f"{out}.{text}" if out else text
    return out


def _quote_key(key: str) -> str:
    """A TOML basic string for key: control characters escaped, so an error stays one line."""
    body = []
    for char in key:
        if char in '"\\':
            body.append("\\" + char)
        elif char.isprintable():
            body.append(char)
        else:
            body.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
    return '"' + "".join(body) + '"'


class OperationError(PivotError):
    """Something could not be done (exit 1); the message names the path."""

    exit_code = EXIT_FAILED

