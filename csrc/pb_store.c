/* pb_store.c -- moving files into and out of content-addressed stores in bulk,
 * with the GIL released and a thread pool: hardlinking workspace files into
 * the cache (two metadata operations per file instead of a copy), copying
 * objects to and from a local-directory remote with their content hashed on
 * the way, and naming verified copies (renaming temps, or linking unnamed
 * files) without replacing anything. */
#define _GNU_SOURCE
#include "pivothash.h"
#include "pb_internal.h"
#include "pb_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t pb_copy_count;
uint64_t pb_files_copied(void) { return __atomic_load_n(&pb_copy_count, __ATOMIC_RELAXED); }

/* Run fn for every item of a batch on the pool. Each item's status is first
 * set to an I/O error (ENOMEM), which is what an item the pool could not reach
 * keeps. Returns how many items failed: with any_failure, every status but
 * PB_OK counts; otherwise only PB_ERR_IO (other statuses are answers). */
static size_t pb_batch(void *items, size_t n, size_t item_size, size_t status_off,
                       size_t err_off, int nthreads, pb_task_fn fn, int any_failure)
{
    char *base = items;
    for (size_t i = 0; i < n; i++) {
        *(int32_t *)(base + i * item_size + status_off) = PB_ERR_IO;
        *(int32_t *)(base + i * item_size + err_off) = ENOMEM;
    }
    pb_parallel_for(n, nthreads, fn, items);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t status = *(int32_t *)(base + i * item_size + status_off);
        failed += any_failure ? status != PB_OK : status == PB_ERR_IO;
    }
    return failed;
}

static void pb_link_one(void *ctx, size_t i, pb_worker *w)
{
    (void)w;
    pb_link *item = (pb_link *)ctx + i;
    item->err = 0;
    if (link(item->src, item->dst) != 0) {
        if (errno == EEXIST) {
            item->status = PB_LINK_PRESENT;
            return;
        }
        item->status = PB_ERR_IO;
        item->err = errno;
        return;
    }
    if (chmod(item->dst, item->mode) != 0) {
        item->status = PB_ERR_IO;
        item->err = errno;
        unlink(item->dst); /* never leave a writable object behind */
        return;
    }
    item->status = PB_OK;
}

size_t pb_link_files(pb_link *items, size_t n, int nthreads)
{
    return pb_batch(items, n, sizeof *items, offsetof(pb_link, status), offsetof(pb_link, err),
                    nthreads, pb_link_one, 0);
}

/* ---- copying with the content hashed on the way ------------------------- */

/* Open what the copy is written to: a new temp by dst's name, or with
 * PB_COPY_UNNAMED an unnamed file in dst's directory. Created without any
 * permission for others to write, even for a moment; the final mode is set
 * once the content is whole. With direct, O_DIRECT is asked for, and cleared
 * in *direct if the file system refuses it. Returns the fd, or -1 with errno
 * set. */
static int pb_open_copy(const pb_copy *item, pb_worker *w, int *direct)
{
    if (!(item->flags & PB_COPY_UNNAMED)) {
        int fd = open(item->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        /* O_DIRECT set afterwards: an open with O_DIRECT that the file system
         * refuses may still have created the file */
        if (fd >= 0 && *direct)
            *direct = fcntl(fd, F_SETFL, O_DIRECT) == 0;
        return fd;
    }
    const char *slash = strrchr(item->dst, '/');
    size_t len = slash == NULL ? 1 : slash == item->dst ? 1 : (size_t)(slash - item->dst);
    if (len >= sizeof w->path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(w->path, slash == NULL ? "." : item->dst, len);
    w->path[len] = '\0';
    int flags = O_WRONLY | O_TMPFILE | O_CLOEXEC;
    int fd = open(w->path, flags | (*direct ? O_DIRECT : 0), 0600);
    if (fd < 0 && *direct && errno == EINVAL) { /* nothing was created: try without */
        *direct = 0;
        fd = open(w->path, flags, 0600);
    }
    return fd;
}

/* Give up a copy: an unnamed one vanishes when closed, a temp is removed. */
static void pb_drop_copy(const pb_copy *item, int fd)
{
    close(fd);
    if (!(item->flags & PB_COPY_UNNAMED))
        unlink(item->dst);
}

static void pb_copy_one(void *ctx, size_t i, pb_worker *w)
{
    pb_copy *item = (pb_copy *)ctx + i;
    item->err = 0;
    item->size = 0;
    item->fd = -1;
    item->status = PB_ERR_IO;
    int in = open(item->src, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (in < 0) {
        item->err = errno;
        return;
    }
    struct stat st;
    if (fstat(in, &st) != 0) {
        item->err = errno;
        close(in);
        return;
    }
    item->src_mode = (uint32_t)st.st_mode;
    if (!S_ISREG(st.st_mode)) {
        item->status = PB_ERR_NOT_REGULAR;
        close(in);
        return;
    }
    /* a file under one block has nothing to write around the page cache */
    pb_sink out = {.direct = (item->flags & PB_COPY_DIRECT) &&
                                 (uint64_t)st.st_size >= PB_DIRECT_ALIGN};
    out.fd = pb_open_copy(item, w, &out.direct);
    if (out.fd < 0) {
        int e = errno;
        close(in);
        /* EISDIR: a kernel without O_TMPFILE; EOPNOTSUPP: a file system without */
        if ((item->flags & PB_COPY_UNNAMED) && (e == EOPNOTSUPP || e == EISDIR || e == EINVAL))
            item->status = PB_COPY_NO_UNNAMED;
        else
            item->err = e;
        return;
    }
    __atomic_fetch_add(&pb_copy_count, 1, __ATOMIC_RELAXED);
    int rc = pb_hash_fd(in, (uint64_t)st.st_size, w, item->digest, &item->size, &out);
    close(in);
    uint32_t mode = item->mode;
    if ((item->flags & PB_COPY_KEEP_EXEC) && (st.st_mode & S_IXUSR))
        mode |= 0111;
    if (rc == 0 && fchmod(out.fd, mode) != 0)
        rc = errno;
    /* Start writing the data back now, without waiting for it: the caller's
     * flush before the renames then finds most of it on disk already, and the
     * disk works while the copying goes on. */
    if (rc == 0 && (item->flags & PB_COPY_WRITEBACK))
        sync_file_range(out.fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (rc != 0) {
        item->err = rc;
        pb_drop_copy(item, out.fd);
        return;
    }
    if ((item->flags & PB_COPY_CHECK) && memcmp(item->digest, item->expect, PB_DIGEST_LEN) != 0) {
        item->status = PB_COPY_MISMATCH;
        pb_drop_copy(item, out.fd);
        return;
    }
    if (item->flags & PB_COPY_UNNAMED) {
        item->fd = out.fd; /* named later, by pb_publish_files */
    } else if (close(out.fd) != 0) {
        item->err = errno;
        unlink(item->dst);
        return;
    }
    item->status = PB_OK;
}

size_t pb_copy_files(pb_copy *items, size_t n, int nthreads)
{
    return pb_batch(items, n, sizeof *items, offsetof(pb_copy, status), offsetof(pb_copy, err),
                    nthreads, pb_copy_one, 1);
}

/* ---- naming unnamed copies ---------------------------------------------- */

static void pb_publish_one(void *ctx, size_t i, pb_worker *w)
{
    pb_publish *item = (pb_publish *)ctx + i;
    item->err = 0;
    int rc = linkat(item->fd, "", AT_FDCWD, item->dst, AT_EMPTY_PATH);
    if (rc != 0 && errno != EEXIST) {
        /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH on most kernels; linking
         * the fd's /proc entry needs nothing more than owning the fd. */
        snprintf(w->path, sizeof w->path, "/proc/self/fd/%d", (int)item->fd);
        rc = linkat(AT_FDCWD, w->path, AT_FDCWD, item->dst, AT_SYMLINK_FOLLOW);
    }
    if (rc == 0)
        item->status = PB_OK;
    else if (errno == EEXIST)
        item->status = PB_LINK_PRESENT;
    else {
        item->status = PB_ERR_IO;
        item->err = errno;
    }
    /* A late write error reported by close: the name must not stand. */
    if (close(item->fd) != 0 && item->status == PB_OK) {
        item->status = PB_ERR_IO;
        item->err = errno;
        unlink(item->dst);
    }
}

size_t pb_publish_files(pb_publish *items, size_t n, int nthreads)
{
    return pb_batch(items, n, sizeof *items, offsetof(pb_publish, status),
                    offsetof(pb_publish, err), nthreads, pb_publish_one, 0);
}

/* ---- renaming into place, never over an existing object ----------------- */

static void pb_move_one(void *ctx, size_t i, pb_worker *w)
{
    (void)w;
    pb_move *item = (pb_move *)ctx + i;
    item->err = 0;
#ifdef RENAME_NOREPLACE
    if (renameat2(AT_FDCWD, item->src, AT_FDCWD, item->dst, RENAME_NOREPLACE) == 0) {
        item->status = PB_OK;
        return;
    }
    if (errno != EINVAL && errno != ENOSYS) {
        item->status = errno == EEXIST ? PB_LINK_PRESENT : PB_ERR_IO;
        item->err = errno == EEXIST ? 0 : errno;
        if (item->status == PB_LINK_PRESENT)
            unlink(item->src);
        return;
    }
#endif
    /* No RENAME_NOREPLACE on this file system: link + unlink refuses to
     * replace just the same. */
    if (link(item->src, item->dst) != 0) {
        item->status = errno == EEXIST ? PB_LINK_PRESENT : PB_ERR_IO;
        item->err = errno == EEXIST ? 0 : errno;
        if (item->status == PB_LINK_PRESENT)
            unlink(item->src);
        return;
    }
    unlink(item->src);
    item->status = PB_OK;
}

size_t pb_move_files(pb_move *items, size_t n, int nthreads)
{
    return pb_batch(items, n, sizeof *items, offsetof(pb_move, status), offsetof(pb_move, err),
                    nthreads, pb_move_one, 0);
}
