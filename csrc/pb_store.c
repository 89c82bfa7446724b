/* pb_store.c -- putting workspace files into the cache as hardlinks, in bulk:
 * two metadata operations per file (link, chmod) with the GIL released and a
 * thread pool, instead of a copy, a temp name and a rename. */
#define _GNU_SOURCE
#include "pivothash.h"
#include "pb_pool.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

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
    for (size_t i = 0; i < n; i++) { /* what the pool could not reach stays an error */
        items[i].status = PB_ERR_IO;
        items[i].err = ENOMEM;
    }
    pb_parallel_for(n, nthreads, pb_link_one, items);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += items[i].status == PB_ERR_IO;
    return failed;
}
