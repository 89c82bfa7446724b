"""setup.py exists only to hook in the cffi core and to make it optional.

If the C core cannot be compiled (no gcc, no xxhash.h), the install still
succeeds; pivotbuild then hashes with the ``xxhash`` package and says how to
get the fast core.
"""

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the compiled core if possible; warn instead of failing if not."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no core"
            self._warn(exc)

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


setup(
    cffi_modules=["pivotbuild/_core_build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
