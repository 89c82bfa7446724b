"""setup.py exists only to hook in the native parts and to make each of them optional.

Two native artefacts are built, neither of which may fail the install:

- the cffi hashing core (``pivotbuild/_core*.so``). If it cannot be compiled (no gcc, no
  xxhash.h), pivotbuild hashes with the ``xxhash`` package and says how to get the fast core.
- the read tracer of ``repro --audit`` (``pivotbuild/_pbtrace.so``), a plain shared object
  loaded with LD_PRELOAD, compiled from ``csrc/trace/`` with the C compiler (``$CC``, else
  ``cc``). Without it (no compiler, not Linux/glibc), ``--audit`` traces with strace, or says
  that it cannot.

Both are built by ``build_ext``, so ``pip install .`` puts them in the wheel and
``pip install -e .`` next to the sources.
"""

import os
import shlex
import subprocess
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext

TRACE_SOURCES = ["csrc/trace/pb_trace.c", "csrc/trace/pb_trace_exec.c"]
TRACE_LIB = "_pbtrace.so"


class OptionalBuildExt(build_ext):
    """Build the compiled core and the read tracer if possible; warn instead of failing."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no core"
            self._warn(exc)
        self._build_tracer()

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(
            "WARNING: pivotbuild's compiled hashing core was not built "
            f"({exc}). Install gcc and libxxhash-dev (Debian) and reinstall for full speed; "
            "pivotbuild will use the slower pure-Python xxhash meanwhile.",
            file=sys.stderr,
        )

    def _build_tracer(self) -> None:
        """Compile csrc/trace/*.c into pivotbuild/_pbtrace.so (in the build directory, and
        beside the sources for an in-place or editable build)."""
        here = os.path.dirname(os.path.abspath(__file__))
        targets = [os.path.join(self.build_lib, "pivotbuild", TRACE_LIB)]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.insert(0, os.path.join(here, "pivotbuild", TRACE_LIB))
        compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        sources = [os.path.join(here, name) for name in TRACE_SOURCES]
        try:
            if not sys.platform.startswith("linux"):
                raise RuntimeError("LD_PRELOAD tracing is built on Linux only")
            for target in targets:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                subprocess.run(
                    [*compiler, "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-std=gnu11",
                     "-Wall", "-Wextra", "-o", target, *sources, "-ldl"],
                    check=True, capture_output=True, text=True,
                )
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            if isinstance(exc, subprocess.CalledProcessError):
                lines = (exc.stderr or "").strip().splitlines()
                detail = lines[-1] if lines else f"{compiler[0]} exited with {exc.returncode}"
            else:
                detail = str(exc)
            print(
                "WARNING: pivotbuild's read tracer (pivotbuild/_pbtrace.so, for repro --audit) "
                f"was not built ({detail}); --audit will trace with strace where it is "
                "installed.",
                file=sys.stderr,
            )


setup(
    cffi_modules=["pivotbuild/_core_build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
