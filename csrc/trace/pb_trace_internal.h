/* pb_trace_internal.h -- what the tracer's two source files share (pb_trace.c: state,
 * recording, open/stat wrappers; pb_trace_exec.c: the exec wrappers). Not an API: every
 * symbol here is hidden; the library exports only its wrappers. */
#ifndef PB_TRACE_INTERNAL_H
#define PB_TRACE_INTERNAL_H

#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE 1
#define _LARGEFILE64_SOURCE 1

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pb_trace.h"

#include "pb_trace.h"

#define PB_EXPORT __attribute__((visibility("default")))
#define PB_HIDDEN __attribute__((visibility("hidden")))

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef FILE *(*freopen_fn)(const char *, const char *, FILE *);
typedef int (*stat_fn)(const char *, struct stat *);
typedef int (*stat64_fn)(const char *, struct stat64 *);
typedef int (*fstatat_fn)(int, const char *, struct stat *, int);
typedef int (*fstatat64_fn)(int, const char *, struct stat64 *, int);
typedef int (*xstat_fn)(int, const char *, struct stat *);
typedef int (*xstat64_fn)(int, const char *, struct stat64 *);
typedef int (*fxstatat_fn)(int, int, const char *, struct stat *, int);
typedef int (*fxstatat64_fn)(int, int, const char *, struct stat64 *, int);
typedef int (*statx_fn)(int, const char *, int, unsigned int, struct statx *);
typedef int (*access_fn)(const char *, int);
typedef int (*faccessat_fn)(int, const char *, int, int);
typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*execv_fn)(const char *, char *const[]);
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                        const posix_spawnattr_t *, char *const[], char *const[]);

struct pb_real {
    open_fn open, open64;
    openat_fn openat, openat64;
    open2_fn open_2, open64_2;
    openat2_fn openat_2, openat64_2;
    fopen_fn fopen, fopen64;
    freopen_fn freopen, freopen64;
    stat_fn stat, lstat;
    stat64_fn stat64, lstat64;
    fstatat_fn fstatat;
    fstatat64_fn fstatat64;
    xstat_fn xstat, lxstat;
    xstat64_fn xstat64, lxstat64;
    fxstatat_fn fxstatat;
    fxstatat64_fn fxstatat64;
    statx_fn statx;
    access_fn access, eaccess, euidaccess;
    faccessat_fn faccessat;
    execve_fn execve, execvpe;
    execv_fn execv, execvp;
    spawn_fn posix_spawn, posix_spawnp;
};

/* set once by pb_init (the constructor, or the first wrapper that runs) */
extern PB_HIDDEN struct pb_real real;
extern PB_HIDDEN int g_state;          /* 0 not yet, 1 recording, 2 off */
extern PB_HIDDEN int g_under_strace;   /* this process runs below strace: record nothing */
extern PB_HIDDEN char g_file[PATH_MAX];
extern PB_HIDDEN char g_strace[PATH_MAX];
/* "NAME=value" strings for the exec wrappers to put back; g_env_file is "" when off */
extern PB_HIDDEN char g_env_preload[PATH_MAX + 16];
extern PB_HIDDEN char g_env_root[PATH_MAX + 32];
extern PB_HIDDEN char g_env_file[PATH_MAX + 32];
extern PB_HIDDEN char g_env_strace[PATH_MAX + 32];
extern PB_HIDDEN const char g_env_under[];
extern PB_HIDDEN char g_self[PATH_MAX];
extern PB_HIDDEN __thread int t_busy __attribute__((tls_model("initial-exec")));

PB_HIDDEN void pb_init(void);
/* record (dirfd, path) as kind if it lies below the root; keeps errno */
PB_HIDDEN void record(char kind, int dirfd, const char *path);
/* one line "K PATH\n", whatever PATH is */
PB_HIDDEN void emit(char kind, const char *path, size_t len);
PB_HIDDEN size_t put_int(char *out, long value);

/* Resolve the real functions before a wrapper's first call (a library's constructor may run
 * before ours); not from inside pb_init itself. */
static inline void ready(void) {
    if (__builtin_expect(__atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == 0, 0) && !t_busy)
        pb_init();
}

#endif
