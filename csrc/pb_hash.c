/* pb_hash.c -- hashing buffers and files: instruction-set dispatch, the
 * read/mmap strategy (with the copy sink pb_copy_files writes through) and the
 * batch entry point. The thread pool they run on is pb_pool.c. */
#define _GNU_SOURCE
#include "pivothash.h"
#include "pb_internal.h"
#include "pb_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- instruction-set dispatch ------------------------------------------ */

static const pb_xxh_impl *pb_chosen;

/* AVX2 where the CPU has it. AVX-512 is not chosen by default: measured here
 * (Zen 4, benchmarks/README.md) it equals AVX2 on data in cache and trails it
 * by 9-20% on large files streamed from the page cache; pb_set_simd("avx512")
 * still selects it. */
static const pb_xxh_impl *pb_best_impl(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        return &pb_xxh_avx2;
#endif
    return &pb_xxh_sse2;
}

const pb_xxh_impl *pb_xxh(void)
{
    const pb_xxh_impl *impl = __atomic_load_n(&pb_chosen, __ATOMIC_ACQUIRE);
    if (!impl) {
        impl = pb_best_impl();
        __atomic_store_n(&pb_chosen, impl, __ATOMIC_RELEASE);
    }
    return impl;
}

int pb_set_simd(const char *name)
{
    const pb_xxh_impl *impl = NULL;
    if (strcmp(name, "auto") == 0)
        impl = pb_best_impl();
    else if (strcmp(name, "sse2") == 0)
        impl = &pb_xxh_sse2;
#if defined(__x86_64__) && defined(__GNUC__)
    else if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2"))
        impl = &pb_xxh_avx2;
    else if (strcmp(name, "avx512") == 0 && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw"))
        impl = &pb_xxh_avx512;
#endif
    if (!impl)
        return -1;
    __atomic_store_n(&pb_chosen, impl, __ATOMIC_RELEASE);
    return 0;
}

const char *pb_simd_name(void) { return pb_xxh()->name; }

void pb_hash_buffer(const void *data, size_t len, uint8_t *digest_out)
{
    pb_xxh()->oneshot(data, len, digest_out);
}

/* ---- tuning and counters ----------------------------------------------- */

/* Measured with benchmarks/mmap_crossover.py (table in benchmarks/README.md):
 * with a warm page cache, read() into the reused buffer wins up to 1 MiB
 * (mapping costs a page fault per 4 KiB), mmap wins from 2 MiB on (no copy),
 * by 1.6-2x at 4 MiB and above. */
static uint64_t pb_mmap_threshold = 2u << 20;
static uint64_t pb_read_count;

void pb_set_mmap_threshold(uint64_t bytes)
{
    __atomic_store_n(&pb_mmap_threshold, bytes, __ATOMIC_RELAXED);
}

uint64_t pb_get_mmap_threshold(void)
{
    return __atomic_load_n(&pb_mmap_threshold, __ATOMIC_RELAXED);
}

uint64_t pb_files_read(void) { return __atomic_load_n(&pb_read_count, __ATOMIC_RELAXED); }

/* ---- SIGBUS guard --------------------------------------------------------
 * A file truncated while it is mapped raises SIGBUS on the next access. So
 * that a shrinking file is an I/O error rather than a dead process, mmap
 * hashing runs under a thread-local jump buffer; a SIGBUS outside it goes to
 * whatever handler was installed before ours. */

static __thread sigjmp_buf *pb_bus_jump;
static struct sigaction pb_prev_bus;
static pthread_once_t pb_bus_once = PTHREAD_ONCE_INIT;

static void pb_on_sigbus(int sig, siginfo_t *info, void *uctx)
{
    if (pb_bus_jump)
        siglongjmp(*pb_bus_jump, 1);
    if (pb_prev_bus.sa_flags & SA_SIGINFO) {
        pb_prev_bus.sa_sigaction(sig, info, uctx);
    } else if (pb_prev_bus.sa_handler != SIG_DFL && pb_prev_bus.sa_handler != SIG_IGN) {
        pb_prev_bus.sa_handler(sig);
    } else {
        signal(SIGBUS, SIG_DFL);
        raise(SIGBUS);
    }
}

static void pb_install_bus_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = pb_on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &pb_prev_bus);
}

/* Large files are mapped one window at a time: a window's page tables stay
 * small and hot, and MAP_POPULATE fills them in one pass instead of faulting
 * page by page (measured: 16 MiB windows keep the 2-thread rate of 8-32 MiB
 * files, about twice that of mapping a 256 MiB file whole). */
#define PB_MAP_WINDOW (16u << 20)

/* Write all of buf to fd. Returns 0, or an errno value. */
static int pb_write_full(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Stop writing around the page cache for the rest of this file. (A sink's
 * fd has no other flag F_SETFL changes: O_APPEND, O_NONBLOCK, ...) */
static int pb_sink_buffered(pb_sink *sink)
{
    sink->direct = 0;
    return fcntl(sink->fd, F_SETFL, 0) == 0 ? 0 : errno;
}

int pb_sink_write(pb_sink *sink, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (sink->direct) {
        size_t whole = (uintptr_t)p % PB_DIRECT_ALIGN == 0 ? len - len % PB_DIRECT_ALIGN : 0;
        while (whole > 0) {
            ssize_t w = write(sink->fd, p, whole);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno != EINVAL)
                return errno;
            if (w < 0 || (size_t)w % PB_DIRECT_ALIGN != 0) {
                /* EINVAL: this file system wants other alignment, or no
                 * direct I/O at all; an odd short count: we are no longer
                 * aligned. Either way the rest goes through the page cache. */
                if (w > 0) {
                    p += w;
                    len -= (size_t)w;
                }
                break;
            }
            p += w;
            len -= (size_t)w;
            whole -= (size_t)w;
        }
        if (len > 0) {
            int rc = pb_sink_buffered(sink);
            if (rc)
                return rc;
        }
    }
    return pb_write_full(sink->fd, p, len);
}

/* Hash size bytes of fd through mappings, writing them to copy as well when
 * it is not NULL. Returns 0, or an errno value. */
static int pb_hash_mapped(int fd, uint64_t size, pb_xxh_state *state, uint8_t *out,
                          pb_sink *copy)
{
    pthread_once(&pb_bus_once, pb_install_bus_handler);
    const pb_xxh_impl *impl = pb_xxh();
    int one_shot = size <= PB_MAP_WINDOW;
    if (!one_shot)
        impl->reset(state);
    sigjmp_buf jump;
    void *volatile map = NULL;
    volatile size_t map_len = 0;
    int rc = 0;
    if (sigsetjmp(jump, 1) == 0) {
        pb_bus_jump = &jump;
        for (uint64_t off = 0; off < size; off += PB_MAP_WINDOW) {
            size_t len = size - off < PB_MAP_WINDOW ? (size_t)(size - off) : PB_MAP_WINDOW;
            void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, (off_t)off);
            if (m == MAP_FAILED) {
                rc = errno ? errno : EIO;
                break;
            }
            map = m;
            map_len = len;
            if (one_shot)
                impl->oneshot(m, len, out);
            else
                impl->update(state, m, len);
            int wrc = copy ? pb_sink_write(copy, m, len) : 0;
            munmap(m, len);
            map = NULL;
            if (wrc) {
                rc = wrc;
                break;
            }
        }
    } else {
        rc = EIO; /* the file shrank under us */
        if (map)
            munmap(map, map_len);
    }
    pb_bus_jump = NULL;
    if (rc == 0 && !one_shot)
        impl->digest(state, out);
    return rc;
}

/* Read until buf is full or EOF. Returns bytes read, or -1 with errno set. */
static ssize_t pb_read_full(int fd, uint8_t *buf, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Hash an open regular file, and with copy other than NULL write its bytes
 * there as they pass (pb_copy_files). Small files go through one read() into
 * the worker's buffer and the one-shot hash; large ones are mapped; anything
 * that outgrows the buffer is streamed. Returns 0 or an errno value. */
int pb_hash_fd(int fd, uint64_t st_size, pb_worker *w, uint8_t *out, uint64_t *hashed,
               pb_sink *copy)
{
    __atomic_fetch_add(&pb_read_count, 1, __ATOMIC_RELAXED);
    if (st_size >= pb_get_mmap_threshold() && st_size > 0) {
        int rc = pb_hash_mapped(fd, st_size, &w->state, out, copy);
        if (rc == 0) {
            *hashed = st_size;
            return 0;
        }
        if (rc != ENODEV && rc != EINVAL && rc != ENOMEM)
            return rc;
        /* mapping not possible on this file system: read it instead (from the
         * start, and the copy too) */
        if (lseek(fd, 0, SEEK_SET) < 0)
            return errno;
        if (copy && (ftruncate(copy->fd, 0) != 0 || lseek(copy->fd, 0, SEEK_SET) < 0))
            return errno;
    }
    const pb_xxh_impl *impl = pb_xxh();
    /* A file that fits is read with one read() of exactly its size: asking for
     * more would cost a second system call just to see EOF. (Bytes appended
     * after fstat are not hashed; the memo then sees a changed size.) A size
     * of 0 may be a lie (procfs), so such a file is read to EOF. */
    size_t want = st_size > 0 && st_size < w->cap ? (size_t)st_size : w->cap;
    ssize_t got = pb_read_full(fd, w->buf, want);
    if (got < 0)
        return errno;
    if ((size_t)got < w->cap && ((size_t)got < want || (uint64_t)got == st_size)) {
        impl->oneshot(w->buf, (size_t)got, out);
        *hashed = (uint64_t)got;
        return copy ? pb_sink_write(copy, w->buf, (size_t)got) : 0;
    }
    impl->reset(&w->state);
    uint64_t total = 0;
    while (got > 0) {
        impl->update(&w->state, w->buf, (size_t)got);
        if (copy) {
            int rc = pb_sink_write(copy, w->buf, (size_t)got);
            if (rc)
                return rc;
        }
        total += (uint64_t)got;
        got = pb_read_full(fd, w->buf, w->cap);
        if (got < 0)
            return errno;
    }
    impl->digest(&w->state, out);
    *hashed = total;
    return 0;
}

/* Open path (relative to dirfd, or AT_FDCWD) and hash it, filling the stat
 * fields. Returns a PB_* status and sets *err. O_NONBLOCK keeps a fifo that
 * replaced a file from blocking us. */
int pb_hash_path(int dirfd, const char *path, pb_worker *w, uint8_t *digest, uint64_t *size,
                 int64_t *mtime_ns, uint64_t *ino, uint32_t *mode, int *err)
{
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        *err = errno;
        return PB_ERR_IO;
    }
    struct stat st;
    int status = PB_OK;
    if (fstat(fd, &st) != 0) {
        *err = errno;
        status = PB_ERR_IO;
    } else if (!S_ISREG(st.st_mode)) {
        *err = 0;
        status = PB_ERR_NOT_REGULAR;
    } else {
        *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        *ino = (uint64_t)st.st_ino;
        *mode = (uint32_t)st.st_mode;
        int rc = pb_hash_fd(fd, (uint64_t)st.st_size, w, digest, size, NULL);
        if (rc != 0) {
            *err = rc;
            status = PB_ERR_IO;
        }
    }
    close(fd);
    return status;
}

/* ---- batch of files ------------------------------------------------------ */

static void pb_hash_one_file(void *ctx, size_t i, pb_worker *w)
{
    pb_file *f = (pb_file *)ctx + i;
    int err = 0;
    f->status = pb_hash_path(AT_FDCWD, f->path, w, f->digest, &f->size, &f->mtime_ns, &f->ino,
                             &f->mode, &err);
    f->err = err;
}

size_t pb_hash_files(pb_file *files, size_t n, int nthreads)
{
    for (size_t i = 0; i < n; i++) { /* what the pool could not reach stays an error */
        files[i].status = PB_ERR_IO;
        files[i].err = ENOMEM;
    }
    pb_parallel_for(n, nthreads, pb_hash_one_file, files);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += files[i].status != PB_OK;
    return failed;
}
