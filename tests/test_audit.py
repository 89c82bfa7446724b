"""The read tracer of `repro --audit` (csrc/trace, pivotbuild/audit.py) on real processes: what
cat, Python, shells and static binaries read is recorded; nothing outside the project ever is;
the traced programs behave as they do untraced."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pivotbuild import audit
from pivotbuild.errors import OperationError

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    """gcc (with a static libc) and strace are part of the environment these tests run in."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is required by tests/test_audit.py")
    return path


GCC = _tool("gcc")
STRACE = audit.find_strace()
if STRACE is None:
    raise RuntimeError("strace 5.2 or newer is required by tests/test_audit.py")


@pytest.fixture(scope="module")
def library() -> Path:
    if not audit.LIBRARY.is_file():
        pytest.fail("pivotbuild/_pbtrace.so was not built (pip install -e . builds it)")
    return audit.LIBRARY


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "extra.csv").write_text("a,b\n1,2\n")
    (root / "data" / "declared.csv").write_text("x\n")
    (tmp_path / "proj2").mkdir()  # shares the root's name as a prefix
    (tmp_path / "proj2" / "outside.txt").write_text("outside\n")
    return root


def traced(root: Path, command: str, tmp_path: Path, *, cwd: Path | None = None,
           env: dict[str, str] | None = None, **how: object
           ) -> tuple[subprocess.CompletedProcess[str], audit.Trace, audit.Tracer]:
    """Run ``command`` as a stage command runs (/bin/sh -c, in cwd) under the tracer."""
    where = cwd or root
    trace_file = tmp_path / "trace" / "stage.trace"
    tracer = audit.tracer(root, trace_file, cwd=where, **how)  # type: ignore[arg-type]
    proc = subprocess.run(["/bin/sh", "-c", tracer.command(command)], cwd=where,
                          env=tracer.environ({**os.environ, **(env or {})}),
                          capture_output=True, text=True, timeout=300, check=False)
    return proc, audit.read_trace(tracer.trace_file, root), tracer


def plain(root: Path, command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd or root, capture_output=True,
                          text=True, timeout=300, check=False)


def raw_lines(tracer: audit.Tracer) -> list[tuple[str, str]]:
    from pivotbuild.discovered import parse, read_bytes

    return list(parse(read_bytes(tracer.trace_file)))


def compile_c(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(textwrap.dedent(source))
    out = tmp_path / name
    proc = subprocess.run([GCC, "-O1", *flags, "-o", str(out), str(src)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


READER_C = """\
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <sys/stat.h>
    #include <unistd.h>
    int main(int argc, char **argv) {
        char buf[256];
        struct stat st;
        for (int i = 1; i < argc; i++) {
            int fd = open(argv[i], O_RDONLY);
            if (fd < 0) { perror(argv[i]); return 2; }
            ssize_t n = read(fd, buf, sizeof buf);
            if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
            close(fd);
            stat(argv[i], &st);
        }
        return 5;
    }
"""


def test_cat_reads_are_recorded(project: Path, tmp_path: Path, library: Path) -> None:
    proc, trace, tracer = traced(project, "cat data/extra.csv", tmp_path)
    assert tracer.method == audit.PRELOAD
    assert (proc.returncode, proc.stdout) == (0, "a,b\n1,2\n")
    assert trace.paths == ["data/extra.csv"]
    assert trace.notices() == []


def test_python_open_is_recorded(project: Path, tmp_path: Path, library: Path) -> None:
    code = "open('data/extra.csv').read(); import os; os.stat('data/declared.csv')"
    proc, trace, _ = traced(project, f"{sys.executable} -c \"{code}\"", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert trace.paths == ["data/declared.csv", "data/extra.csv"]


def test_a_path_outside_the_root_is_never_recorded(project: Path, tmp_path: Path,
                                                   library: Path) -> None:
    (project / "sub").mkdir()
    command = ("cat /etc/hostname ../proj2/outside.txt " + str(tmp_path / "proj2/outside.txt")
               + " data/../../proj2/outside.txt >/dev/null; cd sub && cat ../data/extra.csv"
               + f" && {sys.executable} -c \"import json; open('../../proj2/outside.txt')\"")
    proc, trace, tracer = traced(project, command, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert trace.paths == ["data/extra.csv", "sub"]  # sub: stat by cd and by Python's start
    prefix = str(project) + "/"
    recorded = [path for kind, path in raw_lines(tracer) if kind in "rsx"]
    assert recorded and all(path.startswith(prefix) for path in recorded)


def test_a_failing_command_keeps_its_exit_code_and_output(project: Path, tmp_path: Path,
                                                          library: Path) -> None:
    command = "cat data/extra.csv; cat data/missing.csv; echo done >&2; exit 3"
    proc, trace, _ = traced(project, command, tmp_path)
    want = plain(project, command)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, want.stdout, want.stderr)
    assert trace.paths == ["data/extra.csv"]


def test_children_keep_the_tracer_when_the_environment_is_cleared(
        project: Path, tmp_path: Path, library: Path) -> None:
    (project / "data" / "c.csv").write_text("c\n")
    (project / "data" / "d.csv").write_text("d\n")
    command = ("env -i /bin/cat data/extra.csv >/dev/null; "
               "env -u LD_PRELOAD -u PIVOTBUILD_TRACE_FILE cat data/declared.csv >/dev/null; "
               f"{sys.executable} -c \"import subprocess; "
               "subprocess.run(['/bin/cat', 'data/c.csv'], env={}, check=True); "
               "subprocess.run(['cat', 'data/d.csv'], env={'PATH': '/usr/bin:/bin'})\"")
    proc, trace, _ = traced(project, command, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert trace.paths == ["data/c.csv", "data/d.csv", "data/declared.csv", "data/extra.csv"]


def test_opens_relative_to_a_directory_descriptor(project: Path, tmp_path: Path,
                                                  library: Path) -> None:
    code = ("import os; d = os.open('data', os.O_RDONLY); "
            "os.close(os.open('extra.csv', os.O_RDONLY, dir_fd=d)); "
            "os.stat('declared.csv', dir_fd=d)")
    proc, trace, _ = traced(project, f"{sys.executable} -c \"{code}\"", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert trace.paths == ["data", "data/declared.csv", "data/extra.csv"]


def test_writes_are_not_reads(project: Path, tmp_path: Path, library: Path) -> None:
    (project / "data" / "appended.csv").write_text("")
    (project / "data" / "updated.csv").write_text("u\n")
    code = ("open('out2.txt', 'w').write('x'); open('data/appended.csv', 'a').write('y'); "
            "open('data/updated.csv', 'r+').read()")
    command = f"echo hi > out.txt; {sys.executable} -c \"{code}\""
    proc, trace, _ = traced(project, command, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (project / "out.txt").read_text() == "hi\n"
    assert trace.paths == ["data/updated.csv"]


def test_files_written_before_they_are_read_are_told_apart(project: Path, tmp_path: Path,
                                                          library: Path) -> None:
    """An intermediate file the commands wrote and then read is in ``written``; a file read
    first and rewritten afterwards is not (it was an input)."""
    (project / "data" / "updated.csv").write_text("u\n")
    command = ("echo hi > tmp.txt; cat tmp.txt data/extra.csv > /dev/null; "
               f"{sys.executable} -c \"open('tmp2.txt', 'w').write('t'); "
               "open('tmp2.txt').read()\"; "
               "cat data/updated.csv > /dev/null; echo v > data/updated.csv")
    proc, trace, _ = traced(project, command, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert trace.paths == ["data/extra.csv", "data/updated.csv", "tmp.txt", "tmp2.txt"]
    assert trace.written == ["tmp.txt", "tmp2.txt"]
    # Under strace the order is known within one process only: a write anywhere counts.
    proc, trace, _ = traced(project, command, tmp_path, library=None)
    assert proc.returncode == 0, proc.stderr
    assert "tmp.txt" in trace.written and "tmp2.txt" in trace.written
    assert "data/extra.csv" in trace.paths and "data/extra.csv" not in trace.written


def test_directories_are_returned_and_vanished_paths_dropped(project: Path, tmp_path: Path,
                                                              library: Path) -> None:
    (project / "data" / "temp.csv").write_text("t\n")
    command = "test -d data && cat data/temp.csv >/dev/null && rm data/temp.csv"
    proc, trace, _ = traced(project, command, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert trace.paths == ["data"]


def test_odd_file_names(project: Path, tmp_path: Path, library: Path) -> None:
    names = ["new\nline.csv", "back\\slash.csv", "sp ace.csv", "tab\t.csv"]
    for name in names:
        (project / "data" / name).write_text("z\n")
    code = "import os; [open(os.path.join('data', n)).read() for n in sorted(os.listdir('data'))]"
    proc, trace, _ = traced(project, f"{sys.executable} -c \"{code}\"", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert trace.paths == sorted(["data/declared.csv", "data/extra.csv",
                                  *[f"data/{n}" for n in names]])


def test_threads_and_forks_write_whole_lines(project: Path, tmp_path: Path,
                                             library: Path) -> None:
    many = project / "many"
    many.mkdir()
    for i in range(400):
        (many / f"f{i:03d}_{'y' * 150}.txt").write_text(str(i))
    code = textwrap.dedent("""\
        import os, threading
        names = sorted(os.listdir('many'))
        def read(part):
            for n in part:
                open(os.path.join('many', n)).read()
        if os.fork() == 0:
            read(names[300:]); os._exit(0)
        threads = [threading.Thread(target=read, args=(names[i:300:4],)) for i in range(4)]
        [t.start() for t in threads]; [t.join() for t in threads]
        os.wait()
        """)
    (project / "threads.py").write_text(code)
    proc, trace, tracer = traced(project, f"{sys.executable} threads.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    # (listdir's opendir happens inside libc: "many" itself is not seen)
    assert trace.paths == [*[f"many/{n}" for n in sorted(os.listdir(many))], "threads.py"]
    assert tracer.trace_file.read_bytes().endswith(b"\n")
    assert all(re.fullmatch(r"[rsx] /.*", line)
               for line in tracer.trace_file.read_text().splitlines())


def test_a_program_that_closes_every_descriptor_never_gets_a_trace_line(
        project: Path, tmp_path: Path, library: Path) -> None:
    code = textwrap.dedent("""\
        import os
        open('data/declared.csv').read()          # the tracer opens its trace file now
        os.closerange(3, 4096)                     # ... and the program closes it
        out = os.open('result.txt', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        for fd in range(3, 1100):                  # the program's file on every number
            if fd != out:
                os.dup2(out, fd)
        open('data/extra.csv').read()              # must not land in result.txt
        os.write(out, b'payload')
        """)
    (project / "closer.py").write_text(code)
    proc, trace, _ = traced(project, f"{sys.executable} closer.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (project / "result.txt").read_bytes() == b"payload"
    assert trace.paths == ["closer.py", "data/declared.csv", "data/extra.csv"]


def test_errno_is_the_program_s_own(project: Path, tmp_path: Path, library: Path) -> None:
    prog = compile_c(tmp_path, "errnos", """\
        #include <errno.h>
        #include <fcntl.h>
        #include <stdio.h>
        #include <sys/stat.h>
        #include <unistd.h>
        int main(void) {
            struct stat st;
            int rc[4], err[4];
            errno = 1234;
            rc[0] = open("data/extra.csv", O_RDONLY) >= 0;
            err[0] = errno;
            errno = 4321;
            rc[1] = stat("data/extra.csv", &st);
            err[1] = errno;
            rc[2] = open("data/none.csv", O_RDONLY);
            err[2] = errno;
            rc[3] = access("data/none.csv", R_OK);
            err[3] = errno;
            for (int i = 0; i < 4; i++)
                printf("%d %d\\n", rc[i], err[i]);
            return 0;
        }
        """)
    proc, trace, _ = traced(project, str(prog), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain(project, str(prog)).stdout == "1 1234\n0 4321\n-1 2\n-1 2\n"
    assert trace.paths == ["data/extra.csv"]


def test_a_path_near_path_max(project: Path, tmp_path: Path, library: Path) -> None:
    deep = project
    while len(str(deep)) < 3800:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    (deep / "f.txt").write_text("deep\n")
    rel = os.path.relpath(deep / "f.txt", project)
    proc, trace, _ = traced(project, f"cat {rel}; cd {rel[:-6]} && cat f.txt", tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "deep\ndeep\n"), proc.stderr
    assert trace.paths == [rel]


WRAPPERS_C = """\
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <stdio.h>
    #include <sys/stat.h>
    #include <unistd.h>
    int __xstat(int, const char *, struct stat *);
    int __lxstat(int, const char *, struct stat *);
    int __fxstatat(int, int, const char *, struct stat *, int);
    int __xstat64(int, const char *, struct stat64 *);
    int __open_2(const char *, int);
    int __openat_2(int, const char *, int);
    int main(void) {
        struct stat st;
        struct stat64 st64;
        struct statx stx;
        int d = open("w", O_RDONLY | O_DIRECTORY);
        int ok = d >= 0;
        ok &= close(open("w/open", O_RDONLY)) == 0;
        ok &= close(open64("w/open64", O_RDONLY)) == 0;
        ok &= close(openat(d, "openat", O_RDONLY)) == 0;
        ok &= close(openat64(AT_FDCWD, "w/openat64", O_RDONLY)) == 0;
        ok &= close(__open_2("w/__open_2", O_RDONLY)) == 0;
        ok &= close(__openat_2(d, "__openat_2", O_RDONLY)) == 0;
        ok &= fclose(fopen("w/fopen", "r")) == 0;
        ok &= fclose(fopen64("w/fopen64", "rb")) == 0;
        ok &= fclose(freopen("w/freopen", "r", fopen("w/fopen", "r"))) == 0;
        ok &= stat("w/stat", &st) == 0;
        ok &= lstat("w/lstat", &st) == 0;
        ok &= stat64("w/stat64", &st64) == 0;
        ok &= fstatat(d, "fstatat", &st, 0) == 0;
        ok &= __xstat(1, "w/__xstat", &st) == 0;
        ok &= __lxstat(1, "w/__lxstat", &st) == 0;
        ok &= __fxstatat(1, d, "__fxstatat", &st, 0) == 0;
        ok &= __xstat64(1, "w/__xstat64", &st64) == 0;
        ok &= statx(AT_FDCWD, "w/statx", 0, STATX_SIZE, &stx) == 0;
        ok &= access("w/access", R_OK) == 0;
        ok &= faccessat(d, "faccessat", R_OK, 0) == 0;
        ok &= euidaccess("w/euidaccess", R_OK) == 0;
        ok &= fclose(fopen("w/written", "w")) == 0;   /* a write: not a read */
        printf("%d\\n", ok);
        return 0;
    }
"""

WRAPPED = ["open", "open64", "openat", "openat64", "__open_2", "__openat_2", "fopen", "fopen64",
           "freopen", "stat", "lstat", "stat64", "fstatat", "__xstat", "__lxstat", "__fxstatat",
           "__xstat64", "statx", "access", "faccessat", "euidaccess"]


def test_every_wrapped_entry_point_records(project: Path, tmp_path: Path,
                                           library: Path) -> None:
    """Each function on its own file, older glibc's __xstat family and fortify's __open_2
    included (called directly, as programs built against those headers do)."""
    (project / "w").mkdir()
    for name in WRAPPED:
        (project / "w" / name).write_text(name)
    prog = compile_c(tmp_path, "wrappers", WRAPPERS_C)
    proc, trace, _ = traced(project, str(prog), tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "1\n"), proc.stderr
    assert trace.paths == sorted(["w", *[f"w/{name}" for name in WRAPPED]])


SPAWNER_C = """\
    #include <spawn.h>
    #include <stdio.h>
    #include <sys/wait.h>
    #include <unistd.h>
    int main(void) {
        pid_t pid;
        int status;
        char *cat[] = {"cat", "data/extra.csv", NULL};
        char *empty[] = {NULL};
        if (posix_spawn(&pid, "/bin/cat", NULL, NULL, cat, empty) != 0) return 10;
        waitpid(pid, &status, 0);
        char *sread[] = {"sread", "data/declared.csv", NULL};
        if (posix_spawnp(&pid, "sread", NULL, NULL, sread, empty) != 0) return 11;
        waitpid(pid, &status, 0);
        if (WEXITSTATUS(status) != 5) return 12;
        fflush(stdout);
        execvp("sread", sread);
        return 13;
    }
"""


def test_spawned_and_path_searched_children(project: Path, tmp_path: Path, library: Path,
                                            static_reader: Path) -> None:
    """posix_spawn with an empty environment keeps the tracer; posix_spawnp and execvp find a
    static binary on PATH and run it under strace."""
    prog = compile_c(tmp_path, "spawner", SPAWNER_C)
    env = {"PATH": f"{static_reader.parent}:{os.environ['PATH']}"}
    proc, trace, _ = traced(project, str(prog), tmp_path, env=env)
    assert (proc.returncode, proc.stdout) == (5, "a,b\n1,2\nx\nx\n"), proc.stderr
    assert trace.paths == ["data/declared.csv", "data/extra.csv"]
    assert trace.via_strace == [str(static_reader)]


# ---- static binaries: strace, or said to be untraced ----

@pytest.fixture(scope="module")
def static_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("static"), "sread", READER_C, "-static")


def test_a_static_binary_is_traced_with_strace(project: Path, tmp_path: Path, library: Path,
                                               static_reader: Path) -> None:
    shutil.copy(static_reader, project / "sread")
    assert audit.needs_strace(project / "sread")
    proc, trace, _ = traced(project, "./sread data/extra.csv; cat data/declared.csv", tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "a,b\n1,2\nx\n")
    assert trace.paths == ["data/declared.csv", "data/extra.csv", "sread"]
    assert trace.via_strace == [str(project / "sread")]
    assert trace.notices() == [(f"audit: {project / 'sread'} cannot load the read tracer (a "
                                "static or 32-bit binary); traced it with strace")]


def test_below_strace_the_library_leaves_ld_preload(project: Path, tmp_path: Path,
                                                    library: Path) -> None:
    """The static program (and everything below strace) gets the user's LD_PRELOAD without
    the library; the variables are kept."""
    prog = compile_c(tmp_path, "showenv", """\
        #include <stdio.h>
        #include <stdlib.h>
        int main(void) {
            const char *v = getenv("LD_PRELOAD");
            printf("%s %s\\n", v ? v : "-", getenv("PIVOTBUILD_TRACE_UNDER_STRACE"));
            return 0;
        }
        """, "-static")
    other = "libm.so.6"  # a harmless library of every glibc system
    proc, trace, _ = traced(project, str(prog), tmp_path, env={"LD_PRELOAD": other})
    assert (proc.returncode, proc.stdout) == (0, f"{other} 1\n"), proc.stderr
    assert trace.via_strace == [str(prog)]


def test_a_static_binary_without_strace_is_named_untraced(
        project: Path, tmp_path: Path, library: Path, static_reader: Path) -> None:
    command = f"{static_reader} data/extra.csv; echo rc=$?"
    proc, trace, _ = traced(project, command, tmp_path, strace=None)
    assert (proc.returncode, proc.stdout) == (0, "a,b\n1,2\nrc=5\n")
    assert trace.paths == []
    assert trace.untraced == [str(static_reader)]
    assert "incomplete" in trace.notices()[0] and str(static_reader) in trace.notices()[0]


def test_without_the_library_the_whole_command_runs_under_strace(
        project: Path, tmp_path: Path, static_reader: Path) -> None:
    command = (f"cat data/extra.csv >/dev/null; {static_reader} data/declared.csv; "
               f"cd data && {sys.executable} -c \"open('extra.csv')\"; exit 4")
    proc, trace, tracer = traced(project, command, tmp_path, library=None)
    assert tracer.method == audit.STRACE
    assert tracer.notices == (("audit: pivotbuild's read tracer (pivotbuild/_pbtrace.so) is not "
                               "built; tracing reads with strace"),)
    assert (proc.returncode, proc.stdout) == (4, "x\n")
    assert "data/declared.csv" in trace.paths and "data/extra.csv" in trace.paths
    assert all(not p.startswith("..") for p in trace.paths)


def test_with_neither_the_command_still_runs_and_the_audit_says_so(
        project: Path, tmp_path: Path) -> None:
    proc, trace, tracer = traced(project, "cat data/extra.csv; exit 6", tmp_path,
                                 library=None, strace=None)
    assert tracer.method == audit.NONE
    assert "incomplete" in tracer.notices[0]
    assert (proc.returncode, proc.stdout) == (6, "a,b\n1,2\n")
    assert trace.paths == []


def test_strace_output_parsing() -> None:
    def hx(text: str) -> str:
        return "".join(f"\\x{b:02x}" for b in text.encode())

    lines = [
        f'openat(AT_FDCWD<{hx("/p")}>, "{hx("a.csv")}", O_RDONLY) = 3<{hx("/p/a.csv")}>',
        f'openat(AT_FDCWD<{hx("/p")}>, "{hx("o.csv")}", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3',
        f'newfstatat(AT_FDCWD<{hx("/p/sub")}>, "{hx("../b.csv")}", {{st_mode=S_IFREG}}, 0) = 0',
        f'newfstatat(3<{hx("/p/a.csv")}>, "", {{st_mode=S_IFREG|0644}}, AT_EMPTY_PATH) = 0',
        f'stat("{hx("rel.csv")}", {{st_mode=S_IFREG, st_rdev=makedev(0x1, 0x3)}}) = 0',
        f'access("{hx("/p/c.csv")}", R_OK) = 0',
        f'execve("{hx("./tool")}", ["{hx("tool")}"], 0x7ffd /* 3 vars */) = 0',
        "--- SIGCHLD {si_signo=SIGCHLD} ---",
        f'statx(7, "{hx("x")}", 0, STATX_ALL, {{}}) = 0',
    ]
    assert list(audit.strace_paths("\n".join(lines).encode(), "/start")) == [
        "/p/a.csv", "/p/sub/../b.csv", "/start/rel.csv", "/p/c.csv", "/start/./tool"]
    assert [kind for kind, _ in audit.strace_events("\n".join(lines).encode(), "/start")] == [
        "r", "w", "s", "s", "s", "x"]


def elf32_with_interp(path: Path) -> Path:
    """A 32-bit i386 ELF header with one PT_INTERP program header (it cannot run here; the
    tracer must still see that a 64-bit library cannot be preloaded into it)."""
    import struct

    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    path.write_bytes(header + struct.pack("<8I", 3, 0, 0, 0, 0, 0, 4, 1))
    path.chmod(0o755)
    return path


def test_a_32_bit_program_is_not_given_the_library(project: Path, tmp_path: Path,
                                                   library: Path) -> None:
    prog = elf32_with_interp(project / "old32")
    proc, trace, _ = traced(project, "./old32; echo rc=$?", tmp_path, strace=None)
    assert proc.stdout.startswith("rc=") and "ERROR: ld.so" not in proc.stderr
    assert trace.untraced == [str(prog)]
    assert audit.needs_strace(prog)


def test_needs_strace(tmp_path: Path, static_reader: Path) -> None:
    script = tmp_path / "script"
    script.write_text(f"#!{static_reader} -x\n")
    text = tmp_path / "text"
    text.write_text("hello\n")
    assert audit.needs_strace(static_reader)
    assert audit.needs_strace(script)
    assert not audit.needs_strace("/bin/sh")
    assert not audit.needs_strace(sys.executable)
    assert not audit.needs_strace(text)
    assert not audit.needs_strace(tmp_path / "missing")


def test_the_strace_calls_match_the_c_header() -> None:
    header = (REPO / "csrc" / "trace" / "pb_trace.h").read_text()
    block = re.search(r"#define PB_TRACE_STRACE_CALLS\s*\\\n((?:.*\\\n)*.*\n)", header)
    assert block is not None
    assert "".join(re.findall(r'"([^"]*)"', block.group(1))) == audit.STRACE_CALLS


def test_a_trace_file_that_cannot_be_prepared_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the trace directory should be")
    with pytest.raises(OperationError, match=r"blocker/t: cannot prepare the trace file"):
        audit.tracer(tmp_path, tmp_path / "blocker" / "t", cwd=tmp_path)
    (tmp_path / "dir.trace").mkdir()
    with pytest.raises(OperationError, match=r"dir.trace: cannot remove the trace file"):
        audit.tracer(tmp_path, tmp_path / "dir.trace", cwd=tmp_path)


def test_notices_are_said_once() -> None:
    notices = audit.Notices()
    assert notices.new(["a", "b", "a"]) == ["a", "b"]
    assert notices.new(["b", "c"]) == ["c"]


def test_the_trace_is_emptied_first_and_removed_after(project: Path, tmp_path: Path,
                                                      library: Path,
                                                      static_reader: Path) -> None:
    _, first, tracer = traced(project, f"{static_reader} data/extra.csv", tmp_path)
    assert first.paths == ["data/extra.csv"]
    assert list(tracer.trace_file.parent.glob("stage.trace.strace.*"))
    _, second, _ = traced(project, "cat data/declared.csv", tmp_path)
    assert second.paths == ["data/declared.csv"] and second.via_strace == []
    audit.remove_trace(tracer.trace_file)
    assert list(tracer.trace_file.parent.iterdir()) == []


def test_environ_keeps_an_existing_preload(tmp_path: Path, library: Path) -> None:
    tracer = audit.tracer(tmp_path, tmp_path / "t", cwd=tmp_path)
    env = tracer.environ({"LD_PRELOAD": "/x/libother.so", "KEEP": "1"})
    assert env["LD_PRELOAD"] == f"{library}:/x/libother.so"
    assert env["KEEP"] == "1"
    assert env[audit.ROOT_VAR] == str(tmp_path) and env[audit.STRACE_VAR] == STRACE
