/* pb_pool.h -- the core's thread pool: run fn(ctx, i, worker) for i in [0, n)
 * on up to nthreads threads, each with its own read buffer and hash state. */
#ifndef PB_POOL_H
#define PB_POOL_H

#include <stddef.h>
#include <stdint.h>
#include "pb_internal.h"

typedef struct {
    pb_xxh_state state;
    uint8_t *buf;
    size_t cap;
    char path[PB_PATH_MAX + PB_NAME_MAX + 1]; /* scratch for building paths */
    /* The directory of the last tree entry this worker opened, kept open: the
     * next entries (sorted, so mostly in the same directory) are opened
     * relative to it instead of walking the whole absolute path again. */
    int dirfd;
    size_t dir_len;
    char dir[PB_PATH_MAX];
} pb_worker;

typedef void (*pb_task_fn)(void *ctx, size_t i, pb_worker *w);

/* nthreads <= 0 means one per online CPU. Blocks until every item is done. */
void pb_parallel_for(size_t n, int nthreads, pb_task_fn fn, void *ctx);

/* Where pb_hash_fd writes the bytes it hashes (pb_copy_files). With direct,
 * fd was opened O_DIRECT: whole blocks from aligned memory go to the disk
 * around the page cache; the first write that cannot (the file's last,
 * partial block, or a file system that refuses) turns O_DIRECT off for the
 * rest of the file. */
typedef struct {
    int fd;
    int direct;
} pb_sink;

#define PB_DIRECT_ALIGN 4096u /* offsets, lengths and memory of direct writes */

/* Shared by the batch, tree and store code (pb_hash.c). */
int pb_hash_fd(int fd, uint64_t st_size, pb_worker *w, uint8_t *out, uint64_t *hashed,
               pb_sink *copy);
int pb_sink_write(pb_sink *sink, const void *buf, size_t len);
int pb_hash_path(int dirfd, const char *path, pb_worker *w, uint8_t *digest, uint64_t *size,
                 int64_t *mtime_ns, uint64_t *ino, uint32_t *mode, int *err);

#endif
