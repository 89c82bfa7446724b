/* pb_trace_exec.c -- the read tracer's exec wrappers: every program a traced one runs keeps the
 * tracer, and a static binary, which the preload cannot reach, runs under strace instead.
 *
 * LD_PRELOAD and the PIVOTBUILD_TRACE_* variables are put back when a program runs another with
 * an environment lacking them (env -i, env -u LD_PRELOAD, subprocess with env={}). A static
 * binary (an ELF without PT_INTERP), a program of the other word size (32-bit), or a script
 * whose #! interpreter is one of those cannot load the library: it runs under `strace -ff` when
 * PIVOTBUILD_TRACE_STRACE names one (an "S" line in the trace; the library is taken out of its
 * LD_PRELOAD), else untraced (a "U" line). Under that strace, argv[0] of the program is its
 * path. These wrappers run between vfork and exec too: no allocation (the new argv and envp
 * live on the stack, or in an mmap when large), no locks, no dlsym. See pb_trace.h. */
#include "pb_trace_internal.h"

extern char **environ;

/* ---- exec: keep the tracer in children; strace for static binaries ---- */

static ssize_t pread_all(int fd, void *buf, size_t len, off_t off) {
    return syscall(SYS_pread64, fd, buf, len, off);
}

/* 1 if path is an ELF the preload cannot reach: one the dynamic loader does not run (no
 * PT_INTERP), or one of the other word size (a 32-bit program: its loader would refuse this
 * library), or a #! script whose interpreter is one; 0 otherwise (a dynamic ELF of our class,
 * not an ELF, unreadable). */
static int is_static(const char *path, int depth) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    unsigned char head[256];
    ssize_t got = pread_all(fd, head, sizeof head, 0);
    int result = 0;
    if (got >= 2 && head[0] == '#' && head[1] == '!' && depth == 0) {
        char interp[sizeof head];
        size_t i = 2, n = 0;
        while (i < (size_t)got && (head[i] == ' ' || head[i] == '\t'))
            i++;
        while (i < (size_t)got && head[i] != ' ' && head[i] != '\t' && head[i] != '\n')
            interp[n++] = (char)head[i++];
        interp[n] = '\0';
        close(fd);
        return n > 0 && i < (size_t)got ? is_static(interp, 1) : 0;
    }
    if (got < (ssize_t)sizeof(Elf64_Ehdr) || memcmp(head, ELFMAG, SELFMAG) != 0) {
        close(fd);
        return 0;
    }
    uint64_t phoff;
    unsigned phnum, phentsize;
    int is64 = head[EI_CLASS] == ELFCLASS64;
    if (is64) {
        Elf64_Ehdr eh;
        memcpy(&eh, head, sizeof eh);
        phoff = eh.e_phoff, phnum = eh.e_phnum, phentsize = eh.e_phentsize;
        result = eh.e_type == ET_EXEC || eh.e_type == ET_DYN;
    } else if (head[EI_CLASS] == ELFCLASS32) {
        Elf32_Ehdr eh;
        memcpy(&eh, head, sizeof eh);
        phoff = eh.e_phoff, phnum = eh.e_phnum, phentsize = eh.e_phentsize;
        result = eh.e_type == ET_EXEC || eh.e_type == ET_DYN;
    } else {
        close(fd);
        return 0;
    }
    if (phentsize < (is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr)) || phentsize > 1024
        || phnum > 65535)
        result = 0;
    else if (result && is64 != (sizeof(void *) == 8)) {
        close(fd);
        return 1; /* the other word size */
    }
    unsigned char ph[1024];
    size_t per_chunk = sizeof ph / phentsize;
    for (unsigned i = 0; result && i < phnum; i += (unsigned)per_chunk) {
        size_t count = phnum - i < per_chunk ? phnum - i : per_chunk;
        size_t want = count * phentsize;
        if (pread_all(fd, ph, want, (off_t)(phoff + (uint64_t)i * phentsize)) != (ssize_t)want) {
            result = 0;
            break;
        }
        for (size_t j = 0; j < count; j++) {
            uint32_t type;
            memcpy(&type, ph + j * phentsize, sizeof type);
            if (type == PT_INTERP)
                result = 0;
        }
    }
    close(fd);
    return result;
}

static int has_entry(char *const envp[], const char *name_eq, size_t len) {
    for (size_t i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], name_eq, len) == 0)
            return 1;
    return 0;
}

static const char *env_value(char *const envp[], const char *name_eq, size_t len) {
    for (size_t i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], name_eq, len) == 0)
            return envp[i] + len;
    return NULL;
}

/* 1 if the LD_PRELOAD value names this library among its entries (":" or " " separated). */
static int preload_has_self(const char *value) {
    size_t self = strlen(g_self);
    for (const char *p = value; p && *p;) {
        size_t n = strcspn(p, ": ");
        if (n == self && memcmp(p, g_self, n) == 0)
            return 1;
        p += n;
        p += strspn(p, ": ");
    }
    return 0;
}

/* "LD_PRELOAD=" and value's entries other than this library, ":" separated, into out (room
 * for strlen(value) + 12 bytes); 0 if none is left. */
static int without_self(char *out, const char *value) {
    size_t self = strlen(g_self), n = 11, kept = 0;
    memcpy(out, "LD_PRELOAD=", 11);
    for (const char *p = value; *p;) {
        size_t len = strcspn(p, ": ");
        if (len && !(len == self && memcmp(p, g_self, len) == 0)) {
            if (kept++)
                out[n++] = ':';
            memcpy(out + n, p, len);
            n += len;
        }
        p += len;
        p += strspn(p, ": ");
    }
    out[n] = '\0';
    return kept > 0;
}

struct plan {
    const char *path;    /* what to execute */
    char *const *argv;
    char *const *envp;
    int via_strace;
    char *mem;           /* mmap'd when the stack area was too small */
    size_t mem_len;
    char local[4096];
};

static void *take(struct plan *p, size_t *used, size_t n) {
    char *base = p->mem ? p->mem : p->local;
    size_t cap = p->mem ? p->mem_len : sizeof p->local;
    n = (n + 15) & ~(size_t)15;
    if (*used + n > cap)
        return NULL;
    void *out = base + *used;
    *used += n;
    return out;
}

static void plan_free(struct plan *p) {
    if (p->mem)
        munmap(p->mem, p->mem_len);
    p->mem = NULL;
}

/* The "S PID\0CWD\0PATH" or "U PATH" line for a static program about to run. */
static void note_static(const char *target, int via_strace, const char *cwd) {
    char line[2 * PATH_MAX + 32];
    size_t n = 0, clen = cwd ? strnlen(cwd, PATH_MAX - 1) : 0;
    size_t tlen = strnlen(target, PATH_MAX - 1);
    if (via_strace) {
        n = put_int(line, (long)syscall(SYS_getpid));
        line[n++] = '\0';
        memcpy(line + n, cwd, clen);
        n += clen;
        line[n++] = '\0';
    } else if (target[0] != '/' && cwd) {
        memcpy(line, cwd, clen);
        n = clen;
        line[n++] = '/';
    }
    memcpy(line + n, target, tlen);
    n += tlen;
    emit(via_strace ? 'S' : 'U', line, n);
}

/* Work out how to execute target (resolved path, or NULL if unknown) with argv/envp so that
 * the tracer follows. On any trouble the original call is planned unchanged. */
static void plan_exec(struct plan *p, const char *target, char *const argv[],
                      char *const envp[]) {
    p->path = target;
    p->argv = argv;
    p->envp = envp;
    p->via_strace = 0;
    p->mem = NULL;
    if (__atomic_load_n(&g_state, __ATOMIC_ACQUIRE) == 0)
        pb_init();
    if (g_env_file[0] == '\0' || t_busy)
        return; /* tracing was never on in this process */
    t_busy = 1;
    int saved = errno;
    size_t envc = 0, argc = 0;
    while (envp && envp[envc])
        envc++;
    while (argv && argv[argc])
        argc++;
    const char *preload = env_value(envp, "LD_PRELOAD=", 11);
    int add_preload = preload == NULL || !preload_has_self(preload);
    int add_root = !has_entry(envp, PB_TRACE_ROOT_VAR "=", sizeof PB_TRACE_ROOT_VAR);
    int add_file = !has_entry(envp, PB_TRACE_FILE_VAR "=", sizeof PB_TRACE_FILE_VAR);
    int add_strace = g_env_strace[0]
                     && !has_entry(envp, PB_TRACE_STRACE_VAR "=", sizeof PB_TRACE_STRACE_VAR);
    char cwd[PATH_MAX];
    int stat_bin = target && !g_under_strace && is_static(target, 0);
    int have_cwd = stat_bin && syscall(SYS_getcwd, cwd, sizeof cwd) > 0 && cwd[0] == '/';
    int use_strace = stat_bin && g_strace[0] && have_cwd;
    const char *where = have_cwd ? cwd : NULL;
    if (!(add_preload || add_root || add_file || add_strace || use_strace)) {
        if (stat_bin)
            note_static(target, 0, where);
        errno = saved;
        t_busy = 0;
        return;
    }
    size_t plen = preload ? strlen(preload) : 0;
    size_t need = (envc + 8) * sizeof(char *) + 64; /* 64: the areas' alignment */
    if (use_strace)
        need += (argc + 16) * sizeof(char *) + strlen(g_file) + 48 + plen + 12;
    else if (add_preload && plen)
        need += strlen(g_env_preload) + plen + 2;
    if (need > sizeof p->local) {
        void *m = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            if (stat_bin)
                note_static(target, 0, where);
            errno = saved;
            t_busy = 0;
            return;
        }
        p->mem = m;
        p->mem_len = need;
    }
    size_t used = 0;
    char **env = take(p, &used, (envc + 8) * sizeof(char *));
    if (env == NULL) { /* cannot happen: need counts every area */
        plan_free(p);
        errno = saved;
        t_busy = 0;
        return;
    }
    size_t e = 0;
    int new_preload = use_strace || add_preload;
    for (size_t i = 0; i < envc; i++) {
        if (new_preload && strncmp(envp[i], "LD_PRELOAD=", 11) == 0)
            continue; /* replaced below */
        env[e++] = envp[i];
    }
    if (use_strace) {
        /* below strace, the library is not wanted: a 32-bit program's loader would complain
         * about it, and strace -f sees every descendant anyway */
        char *rest = plen ? take(p, &used, plen + 12) : NULL;
        if (rest && without_self(rest, preload))
            env[e++] = rest;
    } else if (add_preload) {
        if (preload && preload[0]) {
            size_t len = strlen(g_env_preload) + 1 + strlen(preload) + 1;
            char *joined = take(p, &used, len);
            if (joined) {
                strcpy(joined, g_env_preload);
                strcat(joined, ":");
                strcat(joined, preload);
                env[e++] = joined;
            } else {
                env[e++] = g_env_preload;
            }
        } else {
            env[e++] = g_env_preload;
        }
    }
    if (add_root)
        env[e++] = g_env_root;
    if (add_file)
        env[e++] = g_env_file;
    if (add_strace)
        env[e++] = g_env_strace;
    if (use_strace)
        env[e++] = (char *)g_env_under;
    env[e] = NULL;
    p->envp = env;
    if (use_strace) {
        char **args = take(p, &used, (argc + 16) * sizeof(char *));
        char *prefix = take(p, &used, strlen(g_file) + 48);
        if (args && prefix) {
            size_t k = 0, n = strlen(g_file);
            memcpy(prefix, g_file, n);
            memcpy(prefix + n, ".strace.", 8);
            put_int(prefix + n + 8, (long)syscall(SYS_getpid));
            args[k++] = g_strace;
            args[k++] = "-ff";
            args[k++] = "-qq";
            args[k++] = "-z";
            args[k++] = "-xx";
            args[k++] = "-y";
            args[k++] = "-e";
            args[k++] = PB_TRACE_STRACE_CALLS;
            args[k++] = "-o";
            args[k++] = prefix;
            args[k++] = "--";
            args[k++] = (char *)target;
            for (size_t i = 1; i < argc; i++)
                args[k++] = argv[i];
            args[k] = NULL;
            p->path = g_strace;
            p->argv = args;
            p->via_strace = 1;
        }
    }
    if (stat_bin)
        note_static(target, p->via_strace, where);
    errno = saved;
    t_busy = 0;
}

/* The executable execvp would run for file: file itself if it has a "/", else the first
 * executable PATH entry; NULL if none (the real call then fails as it would). */
static const char *search_path(const char *file, char *buf) {
    if (file == NULL || file[0] == '\0')
        return NULL;
    if (strchr(file, '/'))
        return file;
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/bin:/usr/bin";
    size_t flen = strnlen(file, NAME_MAX + 1);
    if (flen > NAME_MAX)
        return NULL;
    for (const char *p = path;;) {
        size_t n = strcspn(p, ":");
        if (n + flen + 2 <= PATH_MAX) {
            size_t k = 0;
            if (n == 0)
                buf[k++] = '.';
            memcpy(buf + k, p, n);
            k += n;
            buf[k++] = '/';
            memcpy(buf + k, file, flen + 1);
            if (syscall(SYS_faccessat, AT_FDCWD, buf, X_OK, 0) == 0)
                return buf;
        }
        if (p[n] == '\0')
            return NULL;
        p += n + 1;
    }
}

static int raw_execve(const char *path, char *const argv[], char *const envp[]) {
    if (real.execve)
        return real.execve(path, argv, envp);
    return (int)syscall(SYS_execve, path, argv, envp);
}

static int exec_with(const char *file, int search, char *const argv[], char *const envp[]) {
    char found[PATH_MAX];
    int saved = errno;
    const char *target = search ? search_path(file, found) : file;
    errno = saved;
    if (target)
        record('x', AT_FDCWD, target);
    struct plan p;
    plan_exec(&p, target, argv, envp);
    int rc;
    if (p.via_strace)
        rc = raw_execve(p.path, p.argv, p.envp);
    else if (search && real.execvpe)
        rc = real.execvpe(file, p.argv, p.envp);
    else if (search)
        rc = raw_execve(target ? target : file, p.argv, p.envp);
    else
        rc = raw_execve(file, p.argv, p.envp);
    int err = errno;
    plan_free(&p);
    errno = err;
    return rc;
}

PB_EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
    ready();
    return exec_with(path, 0, argv, envp);
}

PB_EXPORT int execv(const char *path, char *const argv[]) {
    ready();
    return exec_with(path, 0, argv, environ);
}

PB_EXPORT int execvp(const char *file, char *const argv[]) {
    ready();
    return exec_with(file, 1, argv, environ);
}

PB_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
    ready();
    return exec_with(file, 1, argv, envp);
}

static int spawn_with(pid_t *pid, const char *file, int search,
                      const posix_spawn_file_actions_t *actions, const posix_spawnattr_t *attr,
                      char *const argv[], char *const envp[]) {
    char found[PATH_MAX];
    int saved = errno;
    const char *target = search ? search_path(file, found) : file;
    errno = saved;
    if (target)
        record('x', AT_FDCWD, target);
    struct plan p;
    plan_exec(&p, target, argv, envp);
    int rc;
    if (p.via_strace || !search)
        rc = real.posix_spawn ? real.posix_spawn(pid, p.path ? p.path : file, actions, attr,
                                                 p.argv, p.envp)
                              : ENOSYS;
    else
        rc = real.posix_spawnp ? real.posix_spawnp(pid, file, actions, attr, p.argv, p.envp)
                               : ENOSYS;
    plan_free(&p);
    return rc;
}

PB_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                          const posix_spawnattr_t *attr, char *const argv[],
                          char *const envp[]) {
    ready();
    return spawn_with(pid, path, 0, actions, attr, argv, envp);
}

PB_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                           const posix_spawnattr_t *attr, char *const argv[],
                           char *const envp[]) {
    ready();
    return spawn_with(pid, file, 1, actions, attr, argv, envp);
}
