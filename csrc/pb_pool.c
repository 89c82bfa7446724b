/* pb_pool.c -- a fork/join pool per call: threads claim small chunks of the
 * index range from one atomic counter, so slow files do not stall the rest. */
#define _GNU_SOURCE
#include "pb_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* Read buffer per worker: large enough that most small files take one read(),
 * small enough to stay in L2 while it is hashed. */
#define PB_READ_BUF (256u * 1024u)
/* Items claimed at once: amortises the atomic without unbalancing the tail.
 * Small batches (a few large files) are claimed one at a time, so that every
 * thread gets work. */
#define PB_CHUNK_MAX 8

typedef struct {
    size_t n;
    size_t next;
    size_t chunk;
    pb_task_fn fn;
    void *ctx;
} pb_job;

static int pb_worker_init(pb_worker *w)
{
    w->dirfd = -1;
    w->dir_len = 0;
    w->cap = PB_READ_BUF;
    if (posix_memalign((void **)&w->buf, PB_DIRECT_ALIGN, w->cap) != 0) {
        w->buf = NULL;
        return -1;
    }
    return 0;
}

static void *pb_work(void *arg)
{
    pb_job *job = arg;
    pb_worker *w = NULL; /* the hash state inside needs 64-byte alignment */
    if (posix_memalign((void **)&w, 64, sizeof *w) != 0)
        w = NULL;
    if (!w || pb_worker_init(w) != 0) {
        free(w);
        return NULL; /* the other threads (at least the caller's) finish the work */
    }
    for (;;) {
        size_t start = __atomic_fetch_add(&job->next, job->chunk, __ATOMIC_RELAXED);
        if (start >= job->n)
            break;
        size_t end = start + job->chunk < job->n ? start + job->chunk : job->n;
        for (size_t i = start; i < end; i++)
            job->fn(job->ctx, i, w);
    }
    if (w->dirfd >= 0)
        close(w->dirfd);
    free(w->buf);
    free(w);
    return NULL;
}

void pb_parallel_for(size_t n, int nthreads, pb_task_fn fn, void *ctx)
{
    if (n == 0)
        return;
    if (nthreads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cpus > 0 ? (int)cpus : 1;
    }
    if ((size_t)nthreads > n)
        nthreads = (int)n;
    if (nthreads > 256)
        nthreads = 256;
    /* about four claims per thread at least, at most PB_CHUNK_MAX items each */
    size_t chunk = n / ((size_t)nthreads * 4);
    chunk = chunk < 1 ? 1 : chunk > PB_CHUNK_MAX ? PB_CHUNK_MAX : chunk;
    pb_job job = {n, 0, chunk, fn, ctx};
    pthread_t threads[256];
    int started = 0;
    for (int t = 1; t < nthreads; t++) {
        if (pthread_create(&threads[started], NULL, pb_work, &job) == 0)
            started++;
    }
    pb_work(&job); /* the calling thread works too */
    for (int t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
}
