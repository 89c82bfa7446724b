/* pb_trace.c -- pivotbuild's read tracer: an LD_PRELOAD library that appends the project paths
 * a program opens, stats or executes to a trace file (`repro --audit`). Contract: pb_trace.h.
 *
 * Built by setup.py as pivotbuild/_pbtrace.so (a plain shared object, not a Python module):
 *   cc -O2 -fPIC -shared -fvisibility=hidden -o _pbtrace.so pb_trace.c pb_trace_exec.c -ldl
 *
 * How it works. Each wrapper calls the real function (found with dlsym(RTLD_NEXT) when the
 * library is loaded), and only after a successful call records the path: made absolute against
 * the cwd (getcwd) or the directory fd (/proc/self/fd/N), normalised lexically, and kept only if
 * it lies below the root. Recording touches no allocator: one stack buffer of 2 * PATH_MAX + 2
 * bytes and raw system calls (the library never calls its own wrappers). A per-thread flag
 * makes it reentrancy-safe, errno is restored before returning to the caller, and a small
 * lock-free table of recent (kind, path) hashes spares repeated lines.
 *
 * The trace file stays open on a high descriptor (close-on-exec); before each write its device
 * and inode are checked, so a program that closed it (closefrom) and reused the number never
 * receives a trace line: the file is opened again instead.
 *
 * The exec wrappers (pb_trace_exec.c) keep the tracer in every child, and run a static binary,
 * which no preload reaches, under strace.
 *
 * Not seen (documented limits): system calls made directly (not through libc), calls inside
 * libc itself (opendir, realpath, execl* except through execve), fexecve and execveat, and
 * programs started with a cleared environment by a static binary.
 */
#include "pb_trace_internal.h"

#define HIGH_FD 900        /* where the trace descriptor is moved, away from the usual ones */
#define SEEN_SLOTS 4096    /* recent (kind, path) hashes, per process */
#define MAX_ESCAPES 60     /* a path with more backslashes and newlines is not recorded */

/* ---- state: shared ones in pb_trace_internal.h ---- */

int g_state;
int g_under_strace;
static char g_root[PATH_MAX];  /* the root as given, normalised */
static size_t g_root_len;
static char g_real[PATH_MAX];  /* the root with its symlinks resolved */
static size_t g_real_len;
char g_file[PATH_MAX];
char g_strace[PATH_MAX];
char g_env_preload[PATH_MAX + 16];
char g_env_root[PATH_MAX + 32];
char g_env_file[PATH_MAX + 32];
char g_env_strace[PATH_MAX + 32];
const char g_env_under[] = PB_TRACE_UNDER_STRACE_VAR "=1";
char g_self[PATH_MAX];

static int g_fd = -1;
static dev_t g_dev;
static ino_t g_ino;
static uint64_t g_seen[SEEN_SLOTS];
__thread int t_busy;

/* ---- the real functions ---- */

struct pb_real real;

static void *next_sym(const char *name) {
    void *sym = dlsym(RTLD_NEXT, name);
    /* __xstat and friends are compat-only symbols in some glibc builds */
    static const char *const versions[] = {"GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0", "GLIBC_2.2"};
    for (size_t i = 0; sym == NULL && name[0] == '_' && i < sizeof versions / sizeof *versions;
         i++)
        sym = dlvsym(RTLD_NEXT, name, versions[i]);
    return sym;
}

static void resolve_all(void) {
#define R(field, name) *(void **)&real.field = next_sym(name)
    R(open, "open"); R(open64, "open64"); R(openat, "openat"); R(openat64, "openat64");
    R(open_2, "__open_2"); R(open64_2, "__open64_2");
    R(openat_2, "__openat_2"); R(openat64_2, "__openat64_2");
    R(fopen, "fopen"); R(fopen64, "fopen64"); R(freopen, "freopen"); R(freopen64, "freopen64");
    R(stat, "stat"); R(lstat, "lstat"); R(stat64, "stat64"); R(lstat64, "lstat64");
    R(fstatat, "fstatat"); R(fstatat64, "fstatat64");
    R(xstat, "__xstat"); R(lxstat, "__lxstat"); R(xstat64, "__xstat64");
    R(lxstat64, "__lxstat64"); R(fxstatat, "__fxstatat"); R(fxstatat64, "__fxstatat64");
    R(statx, "statx"); R(access, "access"); R(eaccess, "eaccess");
    R(euidaccess, "euidaccess"); R(faccessat, "faccessat");
    R(execve, "execve"); R(execvpe, "execvpe"); R(execv, "execv"); R(execvp, "execvp");
    R(posix_spawn, "posix_spawn"); R(posix_spawnp, "posix_spawnp");
#undef R
}

/* ---- paths ---- */

/* Normalise the absolute path buf[0..len) in place: "//", "/./" and "/x/../" removed. */
static size_t normalise(char *buf, size_t len) {
    size_t in = 0, out = 0;
    while (in < len) {
        while (in < len && buf[in] == '/')
            in++;
        size_t start = in;
        while (in < len && buf[in] != '/')
            in++;
        size_t n = in - start;
        if (n == 0 || (n == 1 && buf[start] == '.'))
            continue;
        if (n == 2 && buf[start] == '.' && buf[start + 1] == '.') {
            while (out > 0 && buf[out - 1] != '/')
                out--;
            if (out > 0)
                out--; /* the "/" before the dropped component */
            continue;
        }
        buf[out++] = '/';
        memmove(buf + out, buf + start, n);
        out += n;
    }
    if (out == 0)
        buf[out++] = '/';
    buf[out] = '\0';
    return out;
}

static int below(const char *path, size_t len, const char *root, size_t root_len) {
    if (root_len == 0)
        return 0;
    if (root_len == 1) /* the root is "/" */
        return len > 1;
    return len > root_len && path[root_len] == '/' && memcmp(path, root, root_len) == 0;
}

size_t put_int(char *out, long value) {
    char tmp[24];
    size_t n = 0, len = 0;
    unsigned long v = value < 0 ? (unsigned long)(-value) : (unsigned long)value;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (value < 0)
        out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}

/* The absolute, normalised form of (dirfd, path) in buf (2 * PATH_MAX + 2 bytes); its length,
 * or 0 when it cannot be known. */
static size_t absolute(int dirfd, const char *path, char *buf) {
    size_t n = 0;
    size_t plen = strnlen(path, PATH_MAX + 1);
    if (plen == 0 || plen > PATH_MAX)
        return 0;
    if (path[0] != '/') {
        long got;
        if (dirfd == AT_FDCWD) {
            got = syscall(SYS_getcwd, buf, PATH_MAX);
            if (got <= 0)
                return 0;
            n = strnlen(buf, PATH_MAX);
        } else {
            char proc[48] = "/proc/self/fd/";
            put_int(proc + 14, dirfd);
            got = syscall(SYS_readlinkat, AT_FDCWD, proc, buf, PATH_MAX);
            if (got <= 0 || got >= PATH_MAX)
                return 0;
            n = (size_t)got;
        }
        if (buf[0] != '/')
            return 0; /* "(unreachable)..." */
        buf[n++] = '/';
    }
    memcpy(buf + n, path, plen);
    return normalise(buf, n + plen);
}

/* ---- the trace file ---- */

static int trace_fd(void) {
    int fd = __atomic_load_n(&g_fd, __ATOMIC_ACQUIRE);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == __atomic_load_n(&g_ino, __ATOMIC_RELAXED)
        && st.st_dev == __atomic_load_n(&g_dev, __ATOMIC_RELAXED))
        return fd;
    int fresh = (int)syscall(SYS_openat, AT_FDCWD, g_file,
                             O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fresh < 0)
        return -1;
    int high = fcntl(fresh, F_DUPFD_CLOEXEC, HIGH_FD);
    if (high >= 0) {
        close(fresh);
        fresh = high;
    }
    if (fstat(fresh, &st) != 0) {
        close(fresh);
        return -1;
    }
    __atomic_store_n(&g_dev, st.st_dev, __ATOMIC_RELAXED);
    __atomic_store_n(&g_ino, st.st_ino, __ATOMIC_RELAXED);
    /* the old number, if any, is not ours any more: never close it */
    __atomic_store_n(&g_fd, fresh, __ATOMIC_RELEASE);
    return fresh;
}

/* One line "K PATH\n" with one writev; "\\" and newlines escaped. */
void emit(char kind, const char *path, size_t len) {
    static const char esc_nl[2] = {'\\', 'n'}, esc_bs[2] = {'\\', '\\'};
    char head[2] = {kind, ' '};
    struct iovec iov[2 * MAX_ESCAPES + 4];
    int k = 0;
    iov[k++] = (struct iovec){head, 2};
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (path[i] != '\n' && path[i] != '\\')
            continue;
        if (k >= 2 * MAX_ESCAPES)
            return;
        if (i > start)
            iov[k++] = (struct iovec){(void *)(path + start), i - start};
        iov[k++] = (struct iovec){(void *)(path[i] == '\n' ? esc_nl : esc_bs), 2};
        start = i + 1;
    }
    if (len > start)
        iov[k++] = (struct iovec){(void *)(path + start), len - start};
    iov[k++] = (struct iovec){"\n", 1};
    int fd = trace_fd();
    if (fd >= 0)
        syscall(SYS_writev, fd, iov, k);
}

/* True (and remembered) if (kind, path) was recorded recently by this process. */
static int seen(char kind, const char *path, size_t len) {
    uint64_t h = 1469598103934665603ULL ^ (unsigned char)kind;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)path[i]) * 1099511628211ULL;
    if (h == 0)
        h = 1;
    uint64_t *slot = &g_seen[h % SEEN_SLOTS];
    if (__atomic_load_n(slot, __ATOMIC_RELAXED) == h)
        return 1;
    __atomic_store_n(slot, h, __ATOMIC_RELAXED);
    return 0;
}


/* Record (dirfd, path) as kind if it lies below the root. Keeps errno. */
void record(char kind, int dirfd, const char *path) {
    if (t_busy || path == NULL)
        return;
    if (__atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == 0)
        pb_init();
    if (g_state != 1)
        return;
    t_busy = 1;
    int saved = errno;
    char buf[2 * PATH_MAX + 2];
    size_t len = absolute(dirfd, path, buf);
    if (len && (below(buf, len, g_root, g_root_len) || below(buf, len, g_real, g_real_len))
        && !seen(kind, buf, len))
        emit(kind, buf, len);
    errno = saved;
    t_busy = 0;
}

/* ---- start-up ---- */

static int copy_env(char *dst, size_t size, const char *name, const char *value) {
    size_t a = strlen(name), b = strlen(value);
    if (a + b + 2 > size)
        return -1;
    memcpy(dst, name, a);
    dst[a] = '=';
    memcpy(dst + a + 1, value, b + 1);
    return 0;
}

void pb_init(void) {
    int busy = t_busy;
    t_busy = 1;
    int saved = errno;
    int state = 2;
    const char *root = getenv(PB_TRACE_ROOT_VAR);
    const char *file = getenv(PB_TRACE_FILE_VAR);
    const char *strace = getenv(PB_TRACE_STRACE_VAR);
    Dl_info info;
    if (real.open == NULL)
        resolve_all();
    if (dladdr((void *)&pb_init, &info) && info.dli_fname && info.dli_fname[0] == '/'
        && strlen(info.dli_fname) < sizeof g_self)
        strcpy(g_self, info.dli_fname);
    g_under_strace = getenv(PB_TRACE_UNDER_STRACE_VAR) != NULL;
    if (root && file && root[0] == '/' && file[0] == '/' && strlen(root) < PATH_MAX
        && strlen(file) < PATH_MAX && g_self[0]) {
        strcpy(g_root, root);
        g_root_len = normalise(g_root, strlen(g_root));
        if (realpath(g_root, g_real) != NULL)
            g_real_len = strlen(g_real);
        strcpy(g_file, file);
        copy_env(g_env_root, sizeof g_env_root, PB_TRACE_ROOT_VAR, root);
        copy_env(g_env_file, sizeof g_env_file, PB_TRACE_FILE_VAR, file);
        copy_env(g_env_preload, sizeof g_env_preload, "LD_PRELOAD", g_self);
        if (strace && strace[0] == '/' && strlen(strace) < sizeof g_strace) {
            strcpy(g_strace, strace);
            copy_env(g_env_strace, sizeof g_env_strace, PB_TRACE_STRACE_VAR, strace);
        }
        state = g_under_strace ? 2 : 1; /* below strace, strace records everything */
        if (g_under_strace)
            g_strace[0] = '\0'; /* and no second strace */
    }
    __atomic_store_n(&g_state, state, __ATOMIC_RELEASE);
    errno = saved;
    t_busy = busy;
}

__attribute__((constructor)) static void pb_constructor(void) {
    if (__atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == 0)
        pb_init();
}

/* ---- open ---- */

static int needs_mode(int flags) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

static void note_open(int dirfd, const char *path, int flags) {
    if ((flags & O_ACCMODE) == O_WRONLY || (flags & O_TRUNC) || (flags & O_TMPFILE) == O_TMPFILE)
        record('w', dirfd, path);
    else
        record('r', dirfd, path);
}

static int open_any(open_fn fn, int dirfd, openat_fn atfn, const char *path, int flags,
                    mode_t mode) {
    int fd;
    if (fn)
        fd = fn(path, flags, mode);
    else if (atfn)
        fd = atfn(dirfd, path, flags, mode);
    else
        fd = (int)syscall(SYS_openat, dirfd, path, flags, mode);
    if (fd >= 0)
        note_open(dirfd, path, flags);
    return fd;
}

#define MODE_ARG(flags, mode)                   \
    mode_t mode = 0;                            \
    if (needs_mode(flags)) {                    \
        va_list ap;                             \
        va_start(ap, flags);                    \
        mode = (mode_t)va_arg(ap, int);         \
        va_end(ap);                             \
    }

PB_EXPORT int open(const char *path, int flags, ...) {
    ready();
    MODE_ARG(flags, mode)
    return open_any(real.open, AT_FDCWD, NULL, path, flags, mode);
}

PB_EXPORT int open64(const char *path, int flags, ...) {
    ready();
    MODE_ARG(flags, mode)
    return open_any(real.open64 ? real.open64 : real.open, AT_FDCWD, NULL, path, flags, mode);
}

PB_EXPORT int openat(int dirfd, const char *path, int flags, ...) {
    ready();
    MODE_ARG(flags, mode)
    return open_any(NULL, dirfd, real.openat, path, flags, mode);
}

PB_EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
    ready();
    MODE_ARG(flags, mode)
    return open_any(NULL, dirfd, real.openat64 ? real.openat64 : real.openat, path, flags, mode);
}

PB_EXPORT int __open_2(const char *path, int flags) {
    ready();
    int fd = real.open_2 ? real.open_2(path, flags) : open_any(real.open, AT_FDCWD, NULL, path,
                                                                 flags, 0);
    if (fd >= 0 && real.open_2)
        note_open(AT_FDCWD, path, flags);
    return fd;
}

PB_EXPORT int __open64_2(const char *path, int flags) {
    ready();
    int fd = real.open64_2 ? real.open64_2(path, flags) : open_any(real.open, AT_FDCWD, NULL,
                                                                     path, flags, 0);
    if (fd >= 0 && real.open64_2)
        note_open(AT_FDCWD, path, flags);
    return fd;
}

PB_EXPORT int __openat_2(int dirfd, const char *path, int flags) {
    ready();
    int fd = real.openat_2 ? real.openat_2(dirfd, path, flags)
                           : open_any(NULL, dirfd, real.openat, path, flags, 0);
    if (fd >= 0 && real.openat_2)
        note_open(dirfd, path, flags);
    return fd;
}

PB_EXPORT int __openat64_2(int dirfd, const char *path, int flags) {
    ready();
    int fd = real.openat64_2 ? real.openat64_2(dirfd, path, flags)
                             : open_any(NULL, dirfd, real.openat, path, flags, 0);
    if (fd >= 0 && real.openat64_2)
        note_open(dirfd, path, flags);
    return fd;
}

/* ---- fopen ---- */

static void note_fopen(const char *path, const char *mode) {
    if (mode && (mode[0] == 'r' || (mode[0] == 'a' && strchr(mode, '+'))))
        record('r', AT_FDCWD, path);
    else if (mode)
        record('w', AT_FDCWD, path);
}

PB_EXPORT FILE *fopen(const char *path, const char *mode) {
    ready();
    FILE *f = real.fopen ? real.fopen(path, mode) : NULL;
    if (f)
        note_fopen(path, mode);
    return f;
}

PB_EXPORT FILE *fopen64(const char *path, const char *mode) {
    ready();
    fopen_fn fn = real.fopen64 ? real.fopen64 : real.fopen;
    FILE *f = fn ? fn(path, mode) : NULL;
    if (f)
        note_fopen(path, mode);
    return f;
}

PB_EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream) {
    ready();
    FILE *f = real.freopen ? real.freopen(path, mode, stream) : NULL;
    if (f && path)
        note_fopen(path, mode);
    return f;
}

PB_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream) {
    ready();
    freopen_fn fn = real.freopen64 ? real.freopen64 : real.freopen;
    FILE *f = fn ? fn(path, mode, stream) : NULL;
    if (f && path)
        note_fopen(path, mode);
    return f;
}

/* ---- stat, access ---- */

static int missing(void) {
    errno = ENOSYS;
    return -1;
}

static int stat_done(int rc, int dirfd, const char *path) {
    if (rc == 0)
        record('s', dirfd, path);
    return rc;
}

PB_EXPORT int stat(const char *path, struct stat *buf) {
    ready();
    return stat_done(real.stat ? real.stat(path, buf)
                     : real.fstatat ? real.fstatat(AT_FDCWD, path, buf, 0) : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int lstat(const char *path, struct stat *buf) {
    ready();
    return stat_done(real.lstat ? real.lstat(path, buf)
                     : real.fstatat ? real.fstatat(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW)
                                    : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int stat64(const char *path, struct stat64 *buf) {
    ready();
    return stat_done(real.stat64 ? real.stat64(path, buf)
                     : real.fstatat64 ? real.fstatat64(AT_FDCWD, path, buf, 0) : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int lstat64(const char *path, struct stat64 *buf) {
    ready();
    return stat_done(real.lstat64 ? real.lstat64(path, buf)
                     : real.fstatat64 ? real.fstatat64(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW)
                                      : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int fstatat(int dirfd, const char *path, struct stat *buf, int flags) {
    ready();
    return stat_done(real.fstatat ? real.fstatat(dirfd, path, buf, flags) : missing(), dirfd,
                     path);
}

PB_EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags) {
    ready();
    return stat_done(real.fstatat64 ? real.fstatat64(dirfd, path, buf, flags) : missing(), dirfd,
                     path);
}

/* glibc before 2.33 compiled stat() into calls of these */
PB_EXPORT int __xstat(int ver, const char *path, struct stat *buf) {
    ready();
    return stat_done(real.xstat ? real.xstat(ver, path, buf)
                     : real.stat ? real.stat(path, buf) : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int __lxstat(int ver, const char *path, struct stat *buf) {
    ready();
    return stat_done(real.lxstat ? real.lxstat(ver, path, buf)
                     : real.lstat ? real.lstat(path, buf) : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int __xstat64(int ver, const char *path, struct stat64 *buf) {
    ready();
    return stat_done(real.xstat64 ? real.xstat64(ver, path, buf)
                     : real.stat64 ? real.stat64(path, buf) : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int __lxstat64(int ver, const char *path, struct stat64 *buf) {
    ready();
    return stat_done(real.lxstat64 ? real.lxstat64(ver, path, buf)
                     : real.lstat64 ? real.lstat64(path, buf) : missing(),
                     AT_FDCWD, path);
}

PB_EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *buf, int flags) {
    ready();
    return stat_done(real.fxstatat ? real.fxstatat(ver, dirfd, path, buf, flags)
                     : real.fstatat ? real.fstatat(dirfd, path, buf, flags) : missing(),
                     dirfd, path);
}

PB_EXPORT int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *buf, int flags) {
    ready();
    return stat_done(real.fxstatat64 ? real.fxstatat64(ver, dirfd, path, buf, flags)
                     : real.fstatat64 ? real.fstatat64(dirfd, path, buf, flags) : missing(),
                     dirfd, path);
}

PB_EXPORT int statx(int dirfd, const char *path, int flags, unsigned int mask,
                    struct statx *buf) {
    ready();
    return stat_done(real.statx ? real.statx(dirfd, path, flags, mask, buf) : missing(), dirfd,
                     path);
}

PB_EXPORT int access(const char *path, int mode) {
    ready();
    return stat_done(real.access ? real.access(path, mode) : missing(), AT_FDCWD, path);
}

PB_EXPORT int eaccess(const char *path, int mode) {
    ready();
    return stat_done(real.eaccess ? real.eaccess(path, mode) : missing(), AT_FDCWD, path);
}

PB_EXPORT int euidaccess(const char *path, int mode) {
    ready();
    return stat_done(real.euidaccess ? real.euidaccess(path, mode) : missing(), AT_FDCWD, path);
}

PB_EXPORT int faccessat(int dirfd, const char *path, int mode, int flags) {
    ready();
    return stat_done(real.faccessat ? real.faccessat(dirfd, path, mode, flags) : missing(),
                     dirfd, path);
}

