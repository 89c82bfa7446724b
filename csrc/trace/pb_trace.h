/* pb_trace.h -- the contract of pivotbuild's read tracer (pb_trace.c, loaded with LD_PRELOAD).
 *
 * Environment (set by pivotbuild/audit.py for one stage run; the tracer keeps a copy taken at
 * start-up and puts the variables back into the environment of every program it executes):
 *
 *   PIVOTBUILD_TRACE_ROOT    absolute project root; only paths below it are recorded (compared
 *                            lexically, as given and with its symlinks resolved)
 *   PIVOTBUILD_TRACE_FILE    absolute path of the trace file, appended to
 *   PIVOTBUILD_TRACE_STRACE  absolute path of a usable strace, or unset: used for a program
 *                            the preload cannot reach (a static binary)
 *   PIVOTBUILD_TRACE_UNDER_STRACE  set in the environment of such an strace: everything below
 *                            it is traced by strace, so the library records nothing there
 *
 * Trace file: one line per event, "K PATH\n", written with one O_APPEND write each, so that
 * processes and threads never mix their lines. PATH is absolute, normalised lexically ("." and
 * ".." removed), with "\\" written as "\\\\" and a newline as "\\n". K is:
 *
 *   r  a successful open for reading (open*, openat*, fopen*, freopen*): O_WRONLY, O_TRUNC
 *      and O_TMPFILE opens, and fopen modes "w", "a", "w+", are writes (w)
 *   w  a successful open for writing (the opens and fopen modes that r leaves out)
 *   s  a successful stat, lstat, fstatat, statx, access or faccessat of PATH
 *   x  PATH executed (execve and friends, posix_spawn*): recorded before the exec
 *   S  PATH cannot load the library (a static binary, or of the other word size): it runs
 *      under strace instead; the line is "S PID\0CWD\0PATH", and strace writes
 *      PIVOTBUILD_TRACE_FILE.strace.PID.TID
 *   U  PATH could not load the library and ran untraced (no strace): its reads are missed
 *
 * r, w, s and x are recorded only for paths below the root; S and U for any path.
 */
#ifndef PB_TRACE_H
#define PB_TRACE_H

#define PB_TRACE_ROOT_VAR "PIVOTBUILD_TRACE_ROOT"
#define PB_TRACE_FILE_VAR "PIVOTBUILD_TRACE_FILE"
#define PB_TRACE_STRACE_VAR "PIVOTBUILD_TRACE_STRACE"
#define PB_TRACE_UNDER_STRACE_VAR "PIVOTBUILD_TRACE_UNDER_STRACE"

/* What strace records, as its -e trace= argument (a regex, so names this kernel lacks are
 * fine), and its other options: -ff one file per process, -qq no attach/exit lines, -z only
 * successful calls, -xx every string in hex, -y paths of file descriptors (and of AT_FDCWD). */
#define PB_TRACE_STRACE_CALLS                                                              \
    "trace=/^(open|openat|openat2|stat|lstat|newfstatat|fstatat64|stat64|lstat64|statx|"  \
    "access|faccessat|faccessat2|execve|execveat)$"

#endif
