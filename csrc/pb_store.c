/* pb_store.c -- moving files into and out of content-addressed stores in bulk,
 * with the GIL released and a thread pool: hardlinking workspace files into
 * the cache (two metadata operations per file instead of a copy), copying
 * objects to and from a local-directory remote with their content hashed on
 * the way, and renaming verified temps into place without replacing anything. */
#define _GNU_SOURCE
#include "pivothash.h"
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

static void pb_copy_one(void *ctx, size_t i, pb_worker *w)
{
    pb_copy *item = (pb_copy *)ctx + i;
    item->err = 0;
    item->size = 0;
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
    /* Created without any permission for others to write, even for a moment;
     * the final mode is set once the content is whole. */
    int out = open(item->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        item->err = errno;
        close(in);
        return;
    }
    __atomic_fetch_add(&pb_copy_count, 1, __ATOMIC_RELAXED);
    int rc = pb_hash_fd(in, (uint64_t)st.st_size, w, item->digest, &item->size, out);
    close(in);
    uint32_t mode = item->mode;
    if ((item->flags & PB_COPY_KEEP_EXEC) && (st.st_mode & S_IXUSR))
        mode |= 0111;
    if (rc == 0 && fchmod(out, mode) != 0)
        rc = errno;
    /* Start writing the data back now, without waiting for it: the caller's
     * flush before the renames then finds most of it on disk already, and the
     * disk works while the copying goes on. */
    if (rc == 0 && (item->flags & PB_COPY_WRITEBACK))
        sync_file_range(out, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (close(out) != 0 && rc == 0)
        rc = errno;
    if (rc != 0) {
        item->err = rc;
        unlink(item->dst);
        return;
    }
    if ((item->flags & PB_COPY_CHECK) && memcmp(item->digest, item->expect, PB_DIGEST_LEN) != 0) {
        item->status = PB_COPY_MISMATCH;
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

/* ---- renaming into place, never over an existing object ----------------- */

static void pb_move_one(void *ctx, size_t i, pb_worker *w)
{
    (void)w;
    pb_link *item = (pb_link *)ctx + i;
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

size_t pb_move_files(pb_link *items, size_t n, int nthreads)
{
    return pb_batch(items, n, sizeof *items, offsetof(pb_link, status), offsetof(pb_link, err),
                    nthreads, pb_move_one, 0);
}
