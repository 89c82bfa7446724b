"""The C project's pipeline for pivotbuild and DVC: pivot.toml and dvc.yaml for cproject_real/.

benchmarks/cproject_real/ holds Brotli's C sources with a Makefile and a build.ninja
(see its README). This module writes the same build for the other two tools, so that
compare_pipeline.py can time their no-ops side by side:

- one ``foreach`` table per source directory (``cc_common``, ``cc_dec``, ``cc_enc``,
  ``cc_tools``) whose list is that directory's translation units (stems, in ``LC_ALL=C``
  order); instance ``cc_enc@encode`` runs
  ``cc -Ic/include -O2 -Wall -c c/enc/encode.c -o build/enc/encode.o`` (the Makefile's
  command without its depfile flags);
- a ``link`` stage: ``cc -O2 -Wall -o bin/brotli <the 36 objects> -lm``, as the Makefile
  links, its deps the 36 objects.

Headers. Make and Ninja learn each unit's headers from the depfiles gcc writes. pivot.toml
cannot say "read this depfile" yet, and a ``foreach`` table has one deps list for all its
instances, so each table's deps are its unit's source plus the union of the project
headers its units include, found once with ``cc -MM`` when the file is generated. That is
a superset of each unit's real headers (a header edit recompiles a few units more than
Make would); for a no-op it means more paths to stat than Make and Ninja stat (counted by
``header_counts``). DVC's ``foreach ... do`` gets exactly the same lists.

    python benchmarks/cproject_gen.py DIR     # writes DIR/pivot.toml and DIR/dvc.yaml
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "cproject_real"
DIRS = ("common", "dec", "enc", "tools")
CC = "cc"
CFLAGS = "-O2 -Wall"
CPPFLAGS = "-Ic/include"
LDLIBS = "-lm"
PROGRAM = "bin/brotli"


@dataclass
class Table:
    """One directory's compile stages: its units' stems and the headers they include."""

    dir: str
    stems: list[str]
    headers: list[str]

    @property
    def name(self) -> str:
        return f"cc_{self.dir}"


def units(root: Path) -> list[tuple[str, str]]:
    """(directory, stem) of every translation unit under root/c, in LC_ALL=C path order
    (the order of the Makefile's ``$(sort ...)`` and of build.ninja's lines)."""
    found = []
    for d in DIRS:
        for entry in os.listdir(root / "c" / d):
            if entry.endswith(".c"):
                found.append((d, entry[:-2]))
    return sorted(found, key=lambda u: f"c/{u[0]}/{u[1]}.c".encode())


def included_headers(root: Path, rel: str, cc: str = CC) -> list[str]:
    """The project-relative headers that ``cc -MM`` lists for the unit ``rel`` (system
    headers are not listed by -MM; anything outside root is dropped)."""
    r = subprocess.run([cc, "-MM", *CPPFLAGS.split(), rel], cwd=root, capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"`{cc} -MM {rel}` in {root} failed: {r.stderr.strip()[-300:]}")
    words = r.stdout.replace("\\\n", " ").split()
    out = set()
    for word in words[1:]:  # words[0] is the target ("name.o:")
        norm = os.path.normpath(word)
        if norm.endswith(".h") and not os.path.isabs(norm) and not norm.startswith(".."):
            out.add(norm)
    return sorted(out)


def tables(root: Path, cc: str = CC) -> tuple[list[Table], dict[str, int]]:
    """The four foreach tables, and for every unit how many headers it really includes."""
    per_unit: dict[str, int] = {}
    result = []
    all_units = units(root)
    for d in DIRS:
        stems = [s for dd, s in all_units if dd == d]
        union: set[str] = set()
        for stem in stems:
            found = included_headers(root, f"c/{d}/{stem}.c", cc)
            per_unit[f"c/{d}/{stem}.c"] = len(found)
            union.update(found)
        result.append(Table(d, stems, sorted(union, key=str.encode)))
    return result, per_unit


def header_counts(ts: list[Table], per_unit: dict[str, int]) -> tuple[int, int]:
    """(header deps over all compile stages in the generated files, header prerequisites
    over all units as gcc's depfiles list them for Make and Ninja)."""
    return sum(len(t.stems) * len(t.headers) for t in ts), sum(per_unit.values())


def objects(ts: list[Table]) -> list[str]:
    return [f"build/{t.dir}/{s}.o" for t in ts for s in t.stems]


def compile_cmd(d: str, item: str) -> str:
    return (f"mkdir -p build/{d} && {CC} {CPPFLAGS} {CFLAGS} -c c/{d}/{item}.c "
            f"-o build/{d}/{item}.o")


def link_cmd(ts: list[Table]) -> str:
    return f"mkdir -p bin && {CC} {CFLAGS} -o {PROGRAM} {' '.join(objects(ts))} {LDLIBS}"


def _q(s: str) -> str:
    return json.dumps(s)  # printable ASCII: a TOML basic string and a YAML double-quoted one


def _array(items: list[str], indent: str) -> str:
    body = "".join(f"{indent}  {_q(i)},\n" for i in items)
    return f"[\n{body}{indent}]"


def pivot_toml(ts: list[Table]) -> str:
    parts = [("# Generated by benchmarks/cproject_gen.py: Brotli's C sources, as the Makefile\n"
              "# beside them builds them (compile each unit, link bin/brotli).\n")]
    for t in ts:
        parts.append(f"[stages.{t.name}]\n"
                     f"foreach = {_array(t.stems, '')}\n"
                     f"cmd = {_q(compile_cmd(t.dir, '${item}'))}\n"
                     f"deps = {_array([f'c/{t.dir}/${{item}}.c', *t.headers], '')}\n"
                     f"outs = [{_q(f'build/{t.dir}/${{item}}.o')}]\n")
    parts.append(f"[stages.link]\ncmd = {_q(link_cmd(ts))}\n"
                 f"deps = {_array(objects(ts), '')}\nouts = [{_q(PROGRAM)}]\n")
    return "\n".join(parts)


def dvc_yaml(ts: list[Table]) -> str:
    lines = ["# Generated by benchmarks/cproject_gen.py (the same build as pivot.toml).",
             "stages:"]
    for t in ts:
        lines += [f"  {t.name}:", f"    foreach: [{', '.join(map(_q, t.stems))}]", "    do:",
                  f"      cmd: {_q(compile_cmd(t.dir, '${item}'))}",
                  f"      deps: [{', '.join(map(_q, [f'c/{t.dir}/${{item}}.c', *t.headers]))}]",
                  f"      outs: [{_q(f'build/{t.dir}/${{item}}.o')}]"]
    lines += ["  link:", f"    cmd: {_q(link_cmd(ts))}",
              f"    deps: [{', '.join(map(_q, objects(ts)))}]", f"    outs: [{_q(PROGRAM)}]"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/cproject_gen.py DIR  (DIR holds a copy of "
              "cproject_real's c/)", file=sys.stderr)
        return 2
    root = Path(argv[0])
    if not (root / "c" / "include").is_dir():
        print(f"cproject_gen: {root}/c/include: not found (copy cproject_real/c there first)",
              file=sys.stderr)
        return 2
    try:
        ts, per_unit = tables(root)
    except (OSError, RuntimeError) as exc:
        print(f"cproject_gen: {exc}", file=sys.stderr)
        return 1
    (root / "pivot.toml").write_text(pivot_toml(ts))
    (root / "dvc.yaml").write_text(dvc_yaml(ts))
    ours, gcc = header_counts(ts, per_unit)
    print(f"{root}/pivot.toml, {root}/dvc.yaml: {sum(len(t.stems) for t in ts)} units + link; "
          f"{ours} header deps (gcc's depfiles list {gcc})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
