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

/* Files at least this big take the large-file path (pb_hash_large: mapped
 * where the page cache allows it, else read in windows); smaller ones take one
 * read() into the worker's buffer. Measured with benchmarks/mmap_crossover.py
 * (benchmarks/README.md): below 2 MiB read() wins whatever the page cache
 * holds. */
static uint64_t pb_mmap_threshold = 2u << 20;
static int pb_map_mode = PB_MAP_AUTO;
static uint64_t pb_read_count;
static uint64_t pb_mapped_bytes;

void pb_set_mmap_threshold(uint64_t bytes)
{
    __atomic_store_n(&pb_mmap_threshold, bytes, __ATOMIC_RELAXED);
}

uint64_t pb_get_mmap_threshold(void)
{
    return __atomic_load_n(&pb_mmap_threshold, __ATOMIC_RELAXED);
}

int pb_set_map_mode(int mode)
{
    if (mode != PB_MAP_AUTO && mode != PB_MAP_ALWAYS)
        return -1;
    __atomic_store_n(&pb_map_mode, mode, __ATOMIC_RELAXED);
    return 0;
}

int pb_get_map_mode(void) { return __atomic_load_n(&pb_map_mode, __ATOMIC_RELAXED); }

uint64_t pb_files_read(void) { return __atomic_load_n(&pb_read_count, __ATOMIC_RELAXED); }

uint64_t pb_bytes_mapped(void) { return __atomic_load_n(&pb_mapped_bytes, __ATOMIC_RELAXED); }

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

/* ---- large files: mapped where the page cache allows, read elsewhere -----
 *
 * What hashing a large file costs depends on how the page cache holds it, and
 * the two ways to reach it are each cheap in one state only (measured here on
 * 4 x 256 MiB, CPU seconds per GiB, benchmarks/README.md):
 *
 *  - in PMD-size folios (2 MiB: a file written recently, or read back with a
 *    large readahead window, on a kernel and file system with large folios,
 *    e.g. ext4 from Linux 6.16, XFS) one page-table entry maps a whole folio,
 *    so hashing from a mapping copies nothing and costs almost no kernel time:
 *    0.062-0.072 s, against 0.100-0.105 s through read();
 *  - in small folios (every file on ext4 before 6.16 and on other file systems
 *    without large folios; a file read back in small or random pieces) a
 *    mapping costs a page-table entry, a reference and a reverse-map update per
 *    4 KiB page, on the way in and again at munmap: 0.18-0.23 s, while read()
 *    copies each page for 0.14-0.17 s.
 *
 * So a large file is mapped PB_MAP_SEGMENT at a time (one mmap and one munmap
 * each: a munmap in a process with two threads interrupts the other CPU to
 * flush its TLB) and hashed PB_MAP_WINDOW at a time: first the window is probed
 * (pb_window_is_pmd); a window held in PMD-size folios is hashed from the
 * mapping, any other is pread() into the worker's buffer, which stays in L2.
 * XXH3's streaming state takes the pieces in order, so the digest is the same
 * either way. PB_MAP_ALWAYS (pb_set_map_mode) maps every window instead. */
#define PB_MAP_SEGMENT (256u << 20)
#define PB_MAP_WINDOW (16u << 20)

/* The span one PMD entry maps: a page table's worth of pages (2 MiB with 4 KiB
 * pages, 512 MiB with 64 KiB ones). */
static size_t pb_pmd_span(size_t page) { return page / 8 * page; }

/* Whether the page cache maps the window [p, p + len) of our mapping with PMD
 * entries, judged by the window's first PMD-aligned block: touch the block's
 * first byte, then ask /proc/self/pagemap whether its last page is present.
 * The fault maps a PMD-size folio whole; a smaller folio brings in at most the
 * fault-around span (64 KiB by default), never the block's far end. *pagemap is
 * the pagemap's fd, opened here on first use (-1: not yet; -2: unavailable, so
 * no window is mapped). A window without a whole aligned block is never mapped:
 * it cannot be mapped with PMD entries. */
static int pb_window_is_pmd(const uint8_t *p, size_t len, volatile int *pagemap)
{
    long sc = sysconf(_SC_PAGESIZE);
    size_t page = sc > 0 ? (size_t)sc : 4096;
    size_t span = pb_pmd_span(page);
    uintptr_t block = ((uintptr_t)p + span - 1) & ~(uintptr_t)(span - 1);
    if (block < (uintptr_t)p || block - (uintptr_t)p + span > len)
        return 0;
    if (*pagemap == -1) {
        int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        *pagemap = fd >= 0 ? fd : -2;
    }
    if (*pagemap < 0)
        return 0;
    (void)*(const volatile uint8_t *)block;
    uint64_t entry = 0;
    off_t at = (off_t)((block + span - page) / page) * (off_t)sizeof entry;
    if (pread(*pagemap, &entry, sizeof entry, at) != (ssize_t)sizeof entry)
        return 0;
    return (int)(entry >> 63); /* bit 63: page present */
}

/* Hash len bytes of fd from off through the worker's buffer, writing them to
 * copy as well when it is not NULL. A file that ends early shrank under us.
 * Returns 0, or an errno value. */
static int pb_hash_read_window(int fd, uint64_t off, uint64_t len, pb_worker *w,
                               const pb_xxh_impl *impl, pb_sink *copy)
{
    while (len > 0) {
        size_t want = len < w->cap ? (size_t)len : w->cap;
        ssize_t got = pread(fd, w->buf, want, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return errno;
        if (got == 0)
            return EIO;
        impl->update(&w->state, w->buf, (size_t)got);
        if (copy) {
            int rc = pb_sink_write(copy, w->buf, (size_t)got);
            if (rc)
                return rc;
        }
        off += (uint64_t)got;
        len -= (uint64_t)got;
    }
    return 0;
}

/* Hash size bytes of fd (a regular file) as described above, writing them to
 * copy as well when it is not NULL. A file system that cannot map (ENODEV,
 * EINVAL) is read instead, as is a segment the address space has no room for
 * (ENOMEM). Returns 0, or an errno value. */
static int pb_hash_large(int fd, uint64_t size, pb_worker *w, uint8_t *out, pb_sink *copy)
{
    pthread_once(&pb_bus_once, pb_install_bus_handler);
    /* what is set here and read after a SIGBUS is volatile: siglongjmp restores
     * the registers of the sigsetjmp */
    const pb_xxh_impl *volatile impl = pb_xxh();
    const int always = pb_get_map_mode() == PB_MAP_ALWAYS;
    impl->reset(&w->state);
    void *volatile map = NULL;
    volatile size_t map_len = 0;
    volatile int pagemap = -1;
    volatile uint64_t mapped = 0;
    volatile int rc = 0;
    sigjmp_buf jump;
    if (sigsetjmp(jump, 1) == 0) {
        pb_bus_jump = &jump;
        for (uint64_t seg = 0; seg < size && rc == 0; seg += PB_MAP_SEGMENT) {
            size_t seg_len = size - seg < PB_MAP_SEGMENT ? (size_t)(size - seg) : PB_MAP_SEGMENT;
            uint8_t *m = mmap(NULL, seg_len, PROT_READ, MAP_PRIVATE, fd, (off_t)seg);
            if (m == MAP_FAILED) {
                if (errno != ENODEV && errno != EINVAL && errno != ENOMEM) {
                    rc = errno ? errno : EIO;
                    break;
                }
                m = NULL;
            }
            map = m;
            map_len = seg_len;
            for (size_t win = 0; win < seg_len && rc == 0; win += PB_MAP_WINDOW) {
                size_t len = seg_len - win < PB_MAP_WINDOW ? seg_len - win : PB_MAP_WINDOW;
                if (m && (always || pb_window_is_pmd(m + win, len, &pagemap))) {
                    impl->update(&w->state, m + win, len);
                    mapped += len;
                    rc = copy ? pb_sink_write(copy, m + win, len) : 0;
                } else {
                    rc = pb_hash_read_window(fd, seg + win, len, w, impl, copy);
                }
            }
            if (m)
                munmap(m, seg_len);
            map = NULL;
        }
    } else {
        rc = EIO; /* the file shrank under us */
        if (map)
            munmap(map, map_len);
    }
    pb_bus_jump = NULL;
    if (pagemap >= 0)
        close(pagemap);
    __atomic_fetch_add(&pb_mapped_bytes, (uint64_t)mapped, __ATOMIC_RELAXED);
    if (rc == 0)
        impl->digest(&w->state, out);
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
 * the worker's buffer and the one-shot hash; large ones take pb_hash_large;
 * anything that outgrows the buffer is streamed. Returns 0 or an errno value. */
int pb_hash_fd(int fd, uint64_t st_size, pb_worker *w, uint8_t *out, uint64_t *hashed,
               pb_sink *copy)
{
    __atomic_fetch_add(&pb_read_count, 1, __ATOMIC_RELAXED);
    if (st_size >= pb_get_mmap_threshold() && st_size > 0) {
        int rc = pb_hash_large(fd, st_size, w, out, copy);
        if (rc == 0)
            *hashed = st_size;
        return rc;
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
