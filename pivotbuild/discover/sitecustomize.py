"""pivotbuild's start-up hook for `discover = ["python"]`: turns the import recorder on.

A stage that discovers Python imports runs with this directory first on PYTHONPATH, so every
Python that its commands start, at any depth and from any interpreter or venv, imports this
module while ``site`` starts up. It then:

1. turns on the recorder (``_pivotbuild_discover.py`` beside it) when the record file and the
   project root are named in the environment and the interpreter is 3.8 or newer;
2. takes this directory off ``sys.path`` again, so the program sees the path it would have had;
3. imports the next ``sitecustomize`` on ``sys.path`` (the venv's, the distribution's, the
   user's), which then stands in ``sys.modules`` as ``sitecustomize``, as if this one were
   not there. An error in that one is reported by ``site`` exactly as it would be without us.
   When there is none, this module ends by raising the ImportError that ``site`` silently
   ignores, so that ``sys.modules`` has no ``sitecustomize``, as without us.

This file is written in the syntax every Python still in use accepts (2.7 included), so an old
interpreter run by a stage only chains to its own ``sitecustomize``; it records nothing. It
imports nothing beyond ``os`` and ``sys`` and never raises an error of its own.
"""

import os
import sys


def _pivotbuild_start():
    # type: () -> None
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.version_info >= (3, 8) and os.environ.get("PIVOTBUILD_DISCOVER_FILE"):
        try:
            import _pivotbuild_discover

            _pivotbuild_discover.install(here)
        except Exception:  # noqa: BLE001, S110 - the recorder must never break the program
            pass
    try:
        real_here = os.path.realpath(here)
        sys.path[:] = [p for p in sys.path if p != here and not (
            os.path.basename(p.rstrip("/")) == "discover" and os.path.realpath(p) == real_here)]
    except Exception:  # noqa: BLE001, S110
        pass


def _pivotbuild_chain():
    # type: () -> bool
    """Import the next sitecustomize on sys.path (this directory is no longer on it); False if
    there is none."""
    sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the next one, now that we are off sys.path)
    except ImportError as exc:
        if getattr(exc, "name", "sitecustomize") != "sitecustomize" or (
                sys.version_info[0] < 3 and "sitecustomize" not in str(exc)):
            raise  # the user's sitecustomize failed: site reports it as it always would
        return False
    return True


_pivotbuild_start()
if not _pivotbuild_chain():
    # None further: leave no trace in sys.modules, as if there were no sitecustomize at all.
    # site ignores exactly this error ("No module named 'sitecustomize'").
    if sys.version_info[0] < 3:  # noqa: UP036 - this file is read by every Python
        raise ImportError("No module named sitecustomize")
    raise ImportError("No module named 'sitecustomize'", name="sitecustomize")
