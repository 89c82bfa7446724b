"""Reading DVC projects: conversion to pivot.toml (import-dvc) and DVC's hashes to check them.

Modules: convert.py (dvc.yaml stages → pivot.toml, lock checks), interp.py (DVC's ``${...}``),
files.py (data files, .dvc/config, ``.dvc`` files), hashes.py (DVC's md5 and ``.dir``
listings), model.py (what a conversion returns): they read, and write nothing.
importer.py is the ``import-dvc`` command's work: it writes pivot.toml and commits through
the pipeline's commit writer.
"""

from pivotbuild.dvc.convert import convert
from pivotbuild.dvc.hashes import (
    MD5,
    MD5_DOS2UNIX,
    DirListing,
    LockedPath,
    Md5Memo,
    check_path,
    dir_listing,
    file_md5,
    path_md5,
)
from pivotbuild.dvc.model import (
    Conversion,
    NotConverted,
    StageCheck,
    TrackedPath,
    check_stage,
    check_tracked,
)

__all__ = [
    "MD5", "MD5_DOS2UNIX", "Conversion", "DirListing", "LockedPath", "Md5Memo", "NotConverted",
    "StageCheck", "TrackedPath", "check_path", "check_stage", "check_tracked", "convert",
    "dir_listing", "file_md5", "path_md5",
]
