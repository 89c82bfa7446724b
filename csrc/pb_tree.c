/* pb_tree.c -- directories: the walk, hashing a walked tree against a memo
 * snapshot, the manifest, and the snapshot format.
 *
 * The manifest's byte format is owned and documented by
 * pivotbuild/manifest.py; this file builds exactly those bytes.
 *
 * Memo snapshot format (per machine, native byte order; a snapshot that does
 * not parse is ignored, which only costs a re-hash):
 *   "PBSNAP01" | u64 count | u64 names_len
 *   count records of 48 bytes: u64 size, i64 mtime_ns, u64 ino, u32 mode,
 *                              u32 path_len, u8 digest[16]
 *   names_len bytes: the relative paths, each followed by a NUL, in record
 *   order (sorted like the walk). */
#define _GNU_SOURCE
#include "pivothash.h"
#include "pb_internal.h"
#include "pb_pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Deep enough for any walk a path of PB_PATH_MAX can hold (each level adds at
 * least two bytes: '/' and a name), so a deep tree is never taken for a loop. */
#define PB_MAX_DEPTH (PB_PATH_MAX / 2)
#define PB_SNAP_MAGIC "PBSNAP01"
#define PB_SNAP_HEADER 24
#define PB_SNAP_RECORD 48

/* A status no caller sees: an entry pb_tree_hash has yet to reach. */
#define PB_PENDING (-1)

/* ---- the tree and its private part ----------------------------------------- */

/* What pb_tree_walk allocates: the public tree, and the capacities of the
 * arrays it grows, which are the core's business alone. */
typedef struct {
    pb_tree pub;
    size_t entries_cap;
    size_t names_cap;
    size_t dirs_cap;
    size_t dir_names_cap;
} pb_tree_priv;

static pb_tree_priv *pb_priv(pb_tree *t)
{
    return (pb_tree_priv *)((char *)t - offsetof(pb_tree_priv, pub));
}

/* Append an entry whose relative path is dir, '/', name (dir_len 0: name
 * alone; name_len 0: dir alone). */
static int pb_tree_add(pb_tree_priv *p, const char *dir, size_t dir_len, const char *name,
                       size_t name_len, int status, int err)
{
    pb_tree *t = &p->pub;
    size_t rel_len = dir_len + (dir_len && name_len ? 1 : 0) + name_len;
    if (t->names_len + rel_len + 1 > UINT32_MAX) {
        errno = EOVERFLOW;
        return -1;
    }
    if (t->n == p->entries_cap) {
        size_t cap = p->entries_cap ? p->entries_cap * 2 : 1024;
        pb_entry *e = realloc(t->entries, cap * sizeof *e);
        if (!e)
            return -1;
        t->entries = e;
        p->entries_cap = cap;
    }
    if (t->names_len + rel_len + 1 > p->names_cap) {
        size_t cap = p->names_cap ? p->names_cap * 2 : 65536;
        while (cap < t->names_len + rel_len + 1)
            cap *= 2;
        char *names = realloc(t->names, cap);
        if (!names)
            return -1;
        t->names = names;
        p->names_cap = cap;
    }
    pb_entry *e = &t->entries[t->n++];
    memset(e, 0, sizeof *e);
    e->path_off = (uint32_t)t->names_len;
    e->path_len = (uint32_t)rel_len;
    e->status = status;
    e->err = err;
    if (status != PB_OK)
        t->nerrors++;
    char *out = t->names + t->names_len;
    memcpy(out, dir, dir_len);
    if (dir_len && name_len)
        out[dir_len] = '/';
    memcpy(out + rel_len - name_len, name, name_len);
    out[rel_len] = '\0';
    t->names_len += rel_len + 1;
    return 0;
}

/* Append the stamp of a directory the walk is about to read (rel_len 0: the root). */
static int pb_tree_add_dir(pb_tree_priv *p, const char *rel, size_t rel_len,
                           const struct stat *st)
{
    pb_tree *t = &p->pub;
    if (t->dir_names_len + rel_len + 1 > UINT32_MAX) {
        errno = EOVERFLOW;
        return -1;
    }
    if (t->ndirs == p->dirs_cap) {
        size_t cap = p->dirs_cap ? p->dirs_cap * 2 : 64;
        pb_tree_dir *d = realloc(t->dirs, cap * sizeof *d);
        if (!d)
            return -1;
        t->dirs = d;
        p->dirs_cap = cap;
    }
    if (t->dir_names_len + rel_len + 1 > p->dir_names_cap) {
        size_t cap = p->dir_names_cap ? p->dir_names_cap * 2 : 4096;
        while (cap < t->dir_names_len + rel_len + 1)
            cap *= 2;
        char *names = realloc(t->dir_names, cap);
        if (!names)
            return -1;
        t->dir_names = names;
        p->dir_names_cap = cap;
    }
    pb_tree_dir *d = &t->dirs[t->ndirs++];
    d->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    d->ino = (uint64_t)st->st_ino;
    d->path_off = (uint32_t)t->dir_names_len;
    d->path_len = (uint32_t)rel_len;
    memcpy(t->dir_names + t->dir_names_len, rel, rel_len);
    t->dir_names[t->dir_names_len + rel_len] = '\0';
    t->dir_names_len += rel_len + 1;
    return 0;
}

/* ---- the walk ------------------------------------------------------------- */

enum { PB_KIND_FILE, PB_KIND_DIR, PB_KIND_BAD };

typedef struct {
    char *name;
    size_t len;
    int kind;
    int sorts_as_dir; /* a directory, entered or not (one too deep to enter is an error) */
    int status;
    int err;
} pb_child;

typedef struct {
    pb_tree_priv *t;
    char path[PB_PATH_MAX];   /* the directory being read, then each child in turn */
    size_t root_len;          /* path[0..root_len) is the walked directory */
    const char *bound;
    size_t bound_len;
    const char *skip;         /* a directory to leave out, or NULL */
    dev_t dev[PB_MAX_DEPTH];  /* the directories being walked, for loop checks */
    ino_t ino[PB_MAX_DEPTH];
    int depth;
    int failed;               /* out of memory, or the root unreadable: give up */
} pb_walk;

/* Directories sort as if their name ended in '/', so that visiting children
 * in this order lists files sorted by their whole relative path. */
static int pb_child_cmp(const void *pa, const void *pb)
{
    const pb_child *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->name, b->name, n);
    if (c)
        return c;
    unsigned ca = a->len > n ? (unsigned char)a->name[n] : (a->sorts_as_dir ? '/' : 0);
    unsigned cb = b->len > n ? (unsigned char)b->name[n] : (b->sorts_as_dir ? '/' : 0);
    return (int)ca - (int)cb;
}

static int pb_within_bound(const pb_walk *w, const char *real)
{
    if (strncmp(real, w->bound, w->bound_len) != 0)
        return 0;
    if (w->bound_len == 1) /* bound is "/" */
        return 1;
    return real[w->bound_len] == '\0' || real[w->bound_len] == '/';
}

static int pb_on_stack(const pb_walk *w, dev_t dev, ino_t ino)
{
    for (int i = 0; i < w->depth; i++)
        if (w->dev[i] == dev && w->ino[i] == ino)
            return 1;
    return 0;
}

/* Decide what the symlink at w->path is: a file or directory to follow, or an error. */
static void pb_classify_link(pb_walk *w, pb_child *c)
{
    char *real = realpath(w->path, NULL);
    if (!real) {
        c->kind = PB_KIND_BAD;
        c->err = errno;
        c->status = errno == ENOENT || errno == ENOTDIR ? PB_ERR_LINK_DANGLING
                    : errno == ELOOP                    ? PB_ERR_LINK_LOOP
                                                        : PB_ERR_IO;
        return;
    }
    int inside = pb_within_bound(w, real);
    free(real);
    if (!inside) {
        c->kind = PB_KIND_BAD;
        c->status = PB_ERR_LINK_OUTSIDE;
        return;
    }
    struct stat st;
    if (stat(w->path, &st) != 0) {
        c->kind = PB_KIND_BAD;
        c->status = PB_ERR_IO;
        c->err = errno;
    } else if (S_ISDIR(st.st_mode)) {
        if (pb_on_stack(w, st.st_dev, st.st_ino)) {
            c->kind = PB_KIND_BAD;
            c->status = PB_ERR_LINK_LOOP;
        } else {
            c->kind = PB_KIND_DIR;
        }
    } else if (S_ISREG(st.st_mode)) {
        c->kind = PB_KIND_FILE;
    } else {
        c->kind = PB_KIND_BAD;
        c->status = PB_ERR_NOT_REGULAR;
    }
}

static void pb_classify(pb_walk *w, unsigned char d_type, pb_child *c)
{
    if (d_type == DT_UNKNOWN) {
        struct stat st;
        if (lstat(w->path, &st) != 0) {
            c->kind = PB_KIND_BAD;
            c->status = PB_ERR_IO;
            c->err = errno;
            return;
        }
        d_type = S_ISREG(st.st_mode) ? DT_REG : S_ISDIR(st.st_mode) ? DT_DIR
                 : S_ISLNK(st.st_mode) ? DT_LNK : DT_FIFO;
    }
    if (d_type == DT_REG)
        c->kind = PB_KIND_FILE;
    else if (d_type == DT_DIR)
        c->kind = PB_KIND_DIR;
    else if (d_type == DT_LNK)
        pb_classify_link(w, c);
    else {
        c->kind = PB_KIND_BAD;
        c->status = PB_ERR_NOT_REGULAR;
    }
}

/* Record the directory w->path[0..len) (below the root) as an entry that failed. */
static void pb_add_dir_error(pb_walk *w, size_t len, int status, int err)
{
    if (len <= w->root_len) { /* the root itself: the caller reports errno */
        w->failed = 1;
        return;
    }
    const char *rel = w->path + w->root_len + 1;
    if (pb_tree_add(w->t, rel, len - w->root_len - 1, "", 0, status, err) != 0)
        w->failed = 1;
}

/* Record child c of the directory w->path[0..len) as an entry. */
static void pb_add_child(pb_walk *w, size_t len, const pb_child *c)
{
    const char *dir = len > w->root_len ? w->path + w->root_len + 1 : "";
    size_t dir_len = len > w->root_len ? len - w->root_len - 1 : 0;
    if (pb_tree_add(w->t, dir, dir_len, c->name, c->len, c->status, c->err) != 0)
        w->failed = 1;
}

/* Walk the directory whose absolute path is w->path[0..len), len < PB_PATH_MAX. */
static void pb_walk_dir(pb_walk *w, size_t len)
{
    w->path[len] = '\0';
    DIR *d = opendir(w->path);
    if (!d) {
        pb_add_dir_error(w, len, PB_ERR_IO, errno);
        return;
    }
    struct stat dst;
    if (fstat(dirfd(d), &dst) != 0) {
        int err = errno;
        closedir(d);
        pb_add_dir_error(w, len, PB_ERR_IO, err);
        errno = err;
        return;
    }
    if (w->depth >= PB_MAX_DEPTH) { /* cannot happen within PB_PATH_MAX; never overrun */
        closedir(d);
        pb_add_dir_error(w, len, PB_ERR_IO, ENAMETOOLONG);
        errno = ENAMETOOLONG;
        return;
    }
    size_t rel_len = len > w->root_len ? len - w->root_len - 1 : 0;
    if (pb_tree_add_dir(w->t, w->path + len - rel_len, rel_len, &dst) != 0) {
        closedir(d);
        w->failed = 1;
        return;
    }
    w->dev[w->depth] = dst.st_dev;
    w->ino[w->depth] = dst.st_ino;
    w->depth++;

    pb_child *kids = NULL;
    size_t nkids = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
            continue;
        if (nkids == cap) {
            cap = cap ? cap * 2 : 64;
            pb_child *k = realloc(kids, cap * sizeof *k);
            if (!k) {
                w->failed = 1;
                break;
            }
            kids = k;
        }
        pb_child *c = &kids[nkids];
        c->len = strlen(name);
        c->name = strndup(name, c->len);
        if (!c->name) {
            w->failed = 1;
            break;
        }
        nkids++;
        c->status = PB_OK;
        c->err = 0;
        if (len + 1 + c->len >= PB_PATH_MAX) {
            /* its path would not fit: an entry by its whole name, never entered */
            c->kind = PB_KIND_BAD;
            c->sorts_as_dir = de->d_type == DT_DIR;
            c->status = PB_ERR_IO;
            c->err = ENAMETOOLONG;
            continue;
        }
        w->path[len] = '/';
        memcpy(w->path + len + 1, name, c->len + 1);
        pb_classify(w, de->d_type, c);
        c->sorts_as_dir = c->kind == PB_KIND_DIR;
    }
    closedir(d);

    if (!w->failed && nkids > 1) /* qsort may not be given NULL, even for none */
        qsort(kids, nkids, sizeof *kids, pb_child_cmp);
    for (size_t i = 0; i < nkids && !w->failed; i++) {
        pb_child *c = &kids[i];
        if (c->kind != PB_KIND_DIR) {
            pb_add_child(w, len, c);
            continue;
        }
        /* a directory's path was checked to fit when it was classified */
        size_t clen = len + 1 + c->len;
        w->path[len] = '/';
        memcpy(w->path + len + 1, c->name, c->len + 1);
        if (!w->skip || strcmp(w->path, w->skip) != 0)
            pb_walk_dir(w, clen);
    }
    for (size_t i = 0; i < nkids; i++)
        free(kids[i].name);
    free(kids);
    w->depth--;
    w->path[len] = '\0';
}

pb_tree *pb_tree_walk(const char *dir, const char *bound, const char *skip)
{
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    if (dlen >= PB_PATH_MAX) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    pb_walk *w = calloc(1, sizeof *w);
    pb_tree_priv *p = calloc(1, sizeof *p);
    char *root = strndup(dir, dlen);
    if (!w || !p || !root) {
        free(w);
        free(p);
        free(root);
        errno = ENOMEM;
        return NULL;
    }
    p->pub.root = root;
    w->t = p;
    memcpy(w->path, dir, dlen);
    w->root_len = dlen;
    w->bound = bound;
    w->skip = skip;
    w->bound_len = strlen(bound);
    while (w->bound_len > 1 && bound[w->bound_len - 1] == '/')
        w->bound_len--;
    errno = 0;
    pb_walk_dir(w, dlen);
    int failed = w->failed, err = errno ? errno : ENOMEM;
    free(w);
    if (failed) {
        pb_tree_free(&p->pub);
        errno = err;
        return NULL;
    }
    return &p->pub;
}

void pb_tree_free(pb_tree *t)
{
    if (!t)
        return;
    free(t->entries);
    free(t->names);
    free(t->manifest);
    free(t->root);
    free(t->dirs);
    free(t->dir_names);
    free(pb_priv(t));
}

/* ---- hashing a tree against the memo ------------------------------------- */

typedef struct {
    pb_tree *t;
    const char *root;
    size_t root_len;
    const uint8_t **memo;  /* per entry: its snapshot record, or NULL */
} pb_tree_job;

/* Point *dirfd and *name at root '/' rel (rel: rel_len bytes and a NUL): relative
 * to the worker's open directory when it lies in it (reopening it when it is in
 * another one), else w->path holds the absolute path and *dirfd is AT_FDCWD.
 * Returns -1 if the path is too long. */
static int pb_rel_at(const char *root, size_t root_len, const char *rel, size_t rel_len,
                     pb_worker *w, int *dirfd, const char **name)
{
    const char *slash = memrchr(rel, '/', rel_len);
    size_t dlen = slash ? (size_t)(slash - rel) : 0;
    size_t full_dir = root_len + (dlen ? 1 + dlen : 0);
    /* room for root '/' rel and its NUL, and for the directory and its NUL */
    if (root_len + 1 + rel_len >= sizeof w->path || full_dir >= sizeof w->dir)
        return -1;
    if (w->dirfd < 0 || w->dir_len != full_dir || memcmp(w->dir, root, root_len) != 0 ||
        (dlen && memcmp(w->dir + root_len + 1, rel, dlen) != 0)) {
        if (w->dirfd >= 0)
            close(w->dirfd);
        memcpy(w->dir, root, root_len);
        if (dlen) {
            w->dir[root_len] = '/';
            memcpy(w->dir + root_len + 1, rel, dlen);
        }
        w->dir[full_dir] = '\0';
        w->dir_len = full_dir;
        w->dirfd = open(w->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    if (w->dirfd >= 0) {
        *dirfd = w->dirfd;
        *name = slash ? slash + 1 : rel;
        return 0;
    }
    w->dir_len = 0; /* could not open it: use the absolute path this time */
    memcpy(w->path, root, root_len);
    w->path[root_len] = '/';
    memcpy(w->path + root_len + 1, rel, rel_len + 1);
    *dirfd = AT_FDCWD;
    *name = w->path;
    return 0;
}

/* pb_rel_at for entry e; a path too long is e's error. */
static int pb_entry_at(const pb_tree_job *job, pb_entry *e, pb_worker *w, int *dirfd,
                       const char **name)
{
    if (pb_rel_at(job->root, job->root_len, job->t->names + e->path_off, e->path_len, w, dirfd,
                  name) != 0) {
        e->status = PB_ERR_IO;
        e->err = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static void pb_stat_entry(void *ctx, size_t i, pb_worker *w)
{
    pb_tree_job *job = ctx;
    pb_entry *e = &job->t->entries[i];
    int dirfd;
    const char *name;
    if (e->status != PB_OK || pb_entry_at(job, e, w, &dirfd, &name) != 0)
        return;
    struct stat st;
    if (fstatat(dirfd, name, &st, 0) != 0) {
        e->status = PB_ERR_IO;
        e->err = errno;
    } else if (!S_ISREG(st.st_mode)) {
        e->status = PB_ERR_NOT_REGULAR;
    } else {
        e->size = (uint64_t)st.st_size;
        e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        e->ino = (uint64_t)st.st_ino;
        e->mode = (uint32_t)st.st_mode;
    }
}

size_t pb_tree_stat(pb_tree *t, int nthreads)
{
    pb_tree_job job = {t, t->root, strlen(t->root), NULL};
    pb_parallel_for(t->n, nthreads, pb_stat_entry, &job);
    size_t failed = 0;
    for (size_t i = 0; i < t->n; i++)
        failed += t->entries[i].status != PB_OK;
    t->nerrors = failed;
    return failed;
}

static void pb_hash_entry(void *ctx, size_t i, pb_worker *w)
{
    pb_tree_job *job = ctx;
    pb_entry *e = &job->t->entries[i];
    if (e->status != PB_PENDING)
        return;
    e->status = PB_OK;
    e->flags &= ~(uint32_t)PB_FLAG_FROM_MEMO;
    int dirfd;
    const char *name;
    if (pb_entry_at(job, e, w, &dirfd, &name) != 0)
        return;

    const uint8_t *rec = job->memo ? job->memo[i] : NULL;
    if (rec) {
        struct stat st;
        if (fstatat(dirfd, name, &st, 0) == 0 && S_ISREG(st.st_mode)) {
            uint64_t size, ino;
            int64_t mtime;
            memcpy(&size, rec, 8);
            memcpy(&mtime, rec + 8, 8);
            memcpy(&ino, rec + 16, 8);
            int64_t now_mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            if (size == (uint64_t)st.st_size && mtime == now_mtime && ino == (uint64_t)st.st_ino) {
                e->size = size;
                e->mtime_ns = mtime;
                e->ino = ino;
                e->mode = (uint32_t)st.st_mode;
                memcpy(e->digest, rec + 32, PB_DIGEST_LEN);
                e->flags |= PB_FLAG_FROM_MEMO;
                return;
            }
        }
    }
    int err = 0;
    e->status = pb_hash_path(dirfd, name, w, e->digest, &e->size, &e->mtime_ns, &e->ino,
                             &e->mode, &err);
    e->err = err;
}

/* Match walk entries to snapshot records by path (both sorted). Returns a
 * per-entry array of record pointers, or NULL if the snapshot is unusable. */
static const uint8_t **pb_match_memo(const pb_tree *t, const uint8_t *memo, size_t memo_len)
{
    if (!memo || memo_len < PB_SNAP_HEADER || memcmp(memo, PB_SNAP_MAGIC, 8) != 0)
        return NULL;
    uint64_t count, names_len;
    memcpy(&count, memo + 8, 8);
    memcpy(&names_len, memo + 16, 8);
    if (count > (memo_len - PB_SNAP_HEADER) / PB_SNAP_RECORD ||
        PB_SNAP_HEADER + count * PB_SNAP_RECORD + names_len != memo_len)
        return NULL;
    const uint8_t **match = calloc(t->n ? t->n : 1, sizeof *match);
    if (!match)
        return NULL;
    const uint8_t *rec = memo + PB_SNAP_HEADER;
    const char *name = (const char *)rec + count * PB_SNAP_RECORD;
    const char *names_end = name + names_len;
    size_t r = 0, i = 0;
    while (r < count && i < t->n) {
        uint32_t plen;
        memcpy(&plen, rec + r * PB_SNAP_RECORD + 28, 4);
        if ((size_t)(names_end - name) < (size_t)plen + 1 || name[plen] != '\0') {
            free(match);
            return NULL; /* corrupt: ignore the whole snapshot */
        }
        int c = strcmp(t->names + t->entries[i].path_off, name);
        if (c == 0)
            match[i] = rec + r * PB_SNAP_RECORD;
        if (c <= 0)
            i++;
        if (c >= 0) {
            r++;
            name += plen + 1;
        }
    }
    return match;
}

static const char pb_hex[] = "0123456789abcdef";

/* Build the manifest (format: pivotbuild/manifest.py) and hash it. */
static int pb_build_manifest(pb_tree *t)
{
    static const char header[] = "pivotbuild-manifest 1\n";
    size_t cap = sizeof header + t->n * (32 + 1 + 20 + 3) + 2 * t->names_len + 1;
    char *m = malloc(cap);
    if (!m)
        return -1;
    size_t k = sizeof header - 1;
    memcpy(m, header, k);
    for (size_t i = 0; i < t->n; i++) {
        const pb_entry *e = &t->entries[i];
        for (int b = 0; b < PB_DIGEST_LEN; b++) {
            m[k++] = pb_hex[e->digest[b] >> 4];
            m[k++] = pb_hex[e->digest[b] & 15];
        }
        m[k++] = ' ';
        m[k++] = (e->mode & S_IXUSR) ? 'x' : '-';
        m[k++] = ' ';
        char digits[24];
        int nd = 0;
        uint64_t v = e->size;
        do {
            digits[nd++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (nd)
            m[k++] = digits[--nd];
        m[k++] = ' ';
        const char *p = t->names + e->path_off;
        for (uint32_t j = 0; j < e->path_len; j++) {
            if (p[j] == '\\') {
                m[k++] = '\\';
                m[k++] = '\\';
            } else if (p[j] == '\n') {
                m[k++] = '\\';
                m[k++] = 'n';
            } else {
                m[k++] = p[j];
            }
        }
        m[k++] = '\n';
    }
    free(t->manifest);
    t->manifest = m;
    t->manifest_len = k;
    pb_hash_buffer(m, k, t->digest);
    return 0;
}

size_t pb_tree_hash(pb_tree *t, const void *memo, size_t memo_len, int nthreads)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    t->started_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;

    pb_tree_job job = {t, t->root, strlen(t->root), pb_match_memo(t, memo, memo_len)};
    /* The entries to hash are marked; one the pool could not reach (no memory
     * for any worker) must not look hashed. */
    for (size_t i = 0; i < t->n; i++)
        if (t->entries[i].status == PB_OK)
            t->entries[i].status = PB_PENDING;
    pb_parallel_for(t->n, nthreads, pb_hash_entry, &job);
    free(job.memo);

    t->nerrors = 0;
    t->nread = 0;
    t->total_size = 0;
    for (size_t i = 0; i < t->n; i++) {
        pb_entry *e = &t->entries[i];
        if (e->status == PB_PENDING) {
            e->status = PB_ERR_IO;
            e->err = ENOMEM;
        }
        if (e->status != PB_OK) {
            t->nerrors++;
            continue;
        }
        t->total_size += e->size;
        t->nread += !(e->flags & PB_FLAG_FROM_MEMO);
    }
    free(t->manifest);
    t->manifest = NULL;
    t->manifest_len = 0;
    if (t->nerrors == 0 && pb_build_manifest(t) != 0) {
        t->nerrors = t->n ? t->n : 1;
        errno = ENOMEM;
    }
    return t->nerrors;
}

size_t pb_tree_snapshot(const pb_tree *t, int64_t racy_cutoff_ns, void *buf, size_t cap)
{
    uint64_t count = 0, names_len = 0;
    for (size_t i = 0; i < t->n; i++) {
        const pb_entry *e = &t->entries[i];
        if (e->status == PB_OK && e->mtime_ns < racy_cutoff_ns) {
            count++;
            names_len += e->path_len + 1;
        }
    }
    size_t need = PB_SNAP_HEADER + count * PB_SNAP_RECORD + names_len;
    if (!buf || cap < need)
        return need;
    uint8_t *out = buf;
    memcpy(out, PB_SNAP_MAGIC, 8);
    memcpy(out + 8, &count, 8);
    memcpy(out + 16, &names_len, 8);
    uint8_t *rec = out + PB_SNAP_HEADER;
    char *name = (char *)rec + count * PB_SNAP_RECORD;
    for (size_t i = 0; i < t->n; i++) {
        const pb_entry *e = &t->entries[i];
        if (e->status != PB_OK || e->mtime_ns >= racy_cutoff_ns)
            continue;
        memcpy(rec, &e->size, 8);
        memcpy(rec + 8, &e->mtime_ns, 8);
        memcpy(rec + 16, &e->ino, 8);
        memcpy(rec + 24, &e->mode, 4);
        memcpy(rec + 28, &e->path_len, 4);
        memcpy(rec + 32, e->digest, PB_DIGEST_LEN);
        rec += PB_SNAP_RECORD;
        memcpy(name, t->names + e->path_off, e->path_len + 1);
        name += e->path_len + 1;
    }
    return need;
}

/* ---- the no-op check of a tree against its memo ---------------------------- */

typedef struct {
    const char *root;
    size_t root_len;
    const uint8_t *rec;      /* the memo's records */
    const char **names;      /* per record, its path inside the memo */
    size_t count;
    int32_t *file_status;    /* NULL or count statuses */
    pb_dir_stamp *dirs;
    size_t ok;               /* files found PB_OK (atomic): one never reached is not */
} pb_check_job;

static int64_t pb_mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static void pb_check_item(void *ctx, size_t i, pb_worker *w)
{
    pb_check_job *job = ctx;
    struct stat st;
    int dirfd;
    const char *name;
    if (i >= job->count) {
        pb_dir_stamp *d = &job->dirs[i - job->count];
        size_t len = strlen(d->path);
        int rc;
        if (len == 0)
            rc = stat(job->root, &st);
        else if (pb_rel_at(job->root, job->root_len, d->path, len, w, &dirfd, &name) != 0) {
            rc = -1;
            errno = ENAMETOOLONG;
        } else
            rc = fstatat(dirfd, name, &st, 0);
        d->err = 0;
        if (rc != 0) {
            d->status = PB_ERR_IO;
            d->err = errno;
        } else if (!S_ISDIR(st.st_mode) || pb_mtime_ns(&st) != d->mtime_ns ||
                   (uint64_t)st.st_ino != d->ino) {
            d->status = PB_STAT_CHANGED;
        } else {
            d->status = PB_OK;
        }
        return;
    }
    const uint8_t *rec = job->rec + i * PB_SNAP_RECORD;
    uint64_t size, ino;
    int64_t mtime;
    uint32_t mode, plen;
    memcpy(&size, rec, 8);
    memcpy(&mtime, rec + 8, 8);
    memcpy(&ino, rec + 16, 8);
    memcpy(&mode, rec + 24, 4);
    memcpy(&plen, rec + 28, 4);
    int32_t status;
    if (pb_rel_at(job->root, job->root_len, job->names[i], plen, w, &dirfd, &name) != 0 ||
        fstatat(dirfd, name, &st, 0) != 0)
        status = PB_ERR_IO;
    else if (!S_ISREG(st.st_mode))
        status = PB_ERR_NOT_REGULAR;
    else if ((uint64_t)st.st_size != size || pb_mtime_ns(&st) != mtime ||
             (uint64_t)st.st_ino != ino || (uint32_t)st.st_mode != mode)
        status = PB_STAT_CHANGED;
    else
        status = PB_OK;
    if (job->file_status)
        job->file_status[i] = status;
    if (status == PB_OK)
        __atomic_fetch_add(&job->ok, 1, __ATOMIC_RELAXED);
}

size_t pb_tree_check(const char *dir, const void *memo, size_t memo_len, int32_t *file_status,
                     pb_dir_stamp *dirs, size_t ndirs, int nthreads)
{
    const uint8_t *m = memo;
    if (!m || memo_len < PB_SNAP_HEADER || memcmp(m, PB_SNAP_MAGIC, 8) != 0)
        return (size_t)-1;
    uint64_t count, names_len;
    memcpy(&count, m + 8, 8);
    memcpy(&names_len, m + 16, 8);
    if (count > (memo_len - PB_SNAP_HEADER) / PB_SNAP_RECORD ||
        PB_SNAP_HEADER + count * PB_SNAP_RECORD + names_len != memo_len)
        return (size_t)-1;
    const char **names = malloc((count ? count : 1) * sizeof *names);
    if (!names) {
        errno = ENOMEM;
        return (size_t)-1;
    }
    const uint8_t *rec = m + PB_SNAP_HEADER;
    const char *name = (const char *)rec + count * PB_SNAP_RECORD;
    const char *names_end = name + names_len;
    for (uint64_t r = 0; r < count; r++) {
        uint32_t plen;
        memcpy(&plen, rec + r * PB_SNAP_RECORD + 28, 4);
        if ((size_t)(names_end - name) < (size_t)plen + 1 || name[plen] != '\0' ||
            memchr(name, '\0', plen) != NULL) {
            free(names);
            return (size_t)-1; /* corrupt: check nothing */
        }
        names[r] = name;
        name += plen + 1;
    }
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    pb_check_job job = {dir, dlen, rec, names, count, file_status, dirs, 0};
    /* Statuses start as failures: an item no worker reached (no memory for any) fails. */
    if (file_status)
        for (uint64_t r = 0; r < count; r++)
            file_status[r] = PB_ERR_IO;
    for (size_t k = 0; k < ndirs; k++) {
        dirs[k].status = PB_ERR_IO;
        dirs[k].err = ENOMEM;
    }
    pb_parallel_for(count + ndirs, nthreads, pb_check_item, &job);
    free(names);
    if (file_status) {
        size_t failed = 0;
        for (uint64_t r = 0; r < count; r++)
            failed += file_status[r] != PB_OK;
        return failed;
    }
    return count - job.ok;
}
