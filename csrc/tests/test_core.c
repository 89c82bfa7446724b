/* test_core.c -- exercises the whole C API in one process, so that it can run
 * under AddressSanitizer and UndefinedBehaviorSanitizer (see Makefile and
 * tests/test_sanitizers.py). Exit status 0 means every check held. */
#define _GNU_SOURCE
#include "pivothash.h"
#include "pb_pool.h" /* pb_hash_fd and pb_worker, for the shrunken-file check */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static void write_file(const char *path, size_t size, unsigned seed)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    for (size_t i = 0; i < size; i++)
        fputc((int)((i * 2654435761u + seed) >> 7) & 0xff, f);
    fclose(f);
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* ---- the PATH_MAX boundaries ----------------------------------------------
 * A path the kernel takes is at most 4095 bytes (4096 with its NUL), a name
 * at most 255. Directories deeper than that are made one relative step at a
 * time (mkdirat/openat), so no absolute path longer than the kernel takes is
 * ever used to build them. */

#define TEST_ABS (4096 + 1)     /* the deep directories' paths: at most 4096 bytes */
#define TEST_PATH (TEST_ABS + 512) /* a deep directory's path and more */
#define LONG_NAME 255

/* Extend the directory abs[0..base_len) (which exists) by components of
 * `fill` until its path is exactly target bytes; abs gets the whole path.
 * Returns an fd on the new directory, or -1. */
static int make_deep_dir(char *abs, size_t base_len, size_t target, char fill)
{
    abs[base_len] = '\0';
    int fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    size_t len = base_len;
    while (fd >= 0 && len < target) {
        size_t left = target - len; /* '/' and a name: at least 2 */
        size_t k = left - 1 > 200 ? 200 : left - 1;
        if (left - 1 - k == 1)
            k--; /* never leave room for '/' alone */
        char name[LONG_NAME + 1];
        memset(name, fill, k);
        name[k] = '\0';
        abs[len] = '/';
        memcpy(abs + len + 1, name, k + 1);
        len += 1 + k;
        int next = -1;
        if (mkdirat(fd, name, 0755) == 0)
            next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(fd);
        fd = next;
    }
    return fd;
}

static int write_at(int dirfd, const char *name, const char *content)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(content);
    int ok = write(fd, content, len) == (ssize_t)len;
    return close(fd) == 0 && ok ? 0 : -1;
}

/* In the directory fd: a file "f" holding "x", a directory "d" with a file
 * "x", and a file whose name has 255 bytes. */
static int fill_deep_dir(int fd, const char *long_name)
{
    if (write_at(fd, "f", "x") != 0 || write_at(fd, long_name, "long") != 0 ||
        mkdirat(fd, "d", 0755) != 0)
        return -1;
    int d = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = d >= 0 ? write_at(d, "x", "in d") : -1;
    if (d >= 0)
        close(d);
    return rc;
}

static const pb_entry *entry_named(const pb_tree *t, const char *rel)
{
    for (size_t i = 0; i < t->n; i++) {
        const pb_entry *e = &t->entries[i];
        if (e->path_len == strlen(rel) && memcmp(t->names + e->path_off, rel, e->path_len) == 0)
            return e;
    }
    return NULL;
}

static int too_long(const pb_entry *e)
{
    return e != NULL && e->status == PB_ERR_IO && e->err == ENAMETOOLONG;
}

/* rel joined: "a/b" into out */
static const char *join(char *out, const char *a, const char *b)
{
    snprintf(out, TEST_PATH, "%s%s%s", a, *a && *b ? "/" : "", b);
    return out;
}

static void test_path_max(const char *top)
{
    static char abs[4][TEST_ABS], base[TEST_ABS], rel[TEST_PATH], path[TEST_PATH];
    static const size_t lens[4] = {4093, 4094, 4095, 4096};
    char long_name[LONG_NAME + 1];
    memset(long_name, 'z', LONG_NAME);
    long_name[LONG_NAME] = '\0';
    uint8_t hx[16], hlong[16];
    pb_hash_buffer("x", 1, hx);
    pb_hash_buffer("long", 4, hlong);

    snprintf(base, sizeof base, "%s/deep", top);
    CHECK(mkdir(base, 0755) == 0);
    size_t base_len = strlen(base);
    for (int i = 0; i < 4; i++) {
        memcpy(abs[i], base, base_len + 1);
        int fd = make_deep_dir(abs[i], base_len, lens[i], (char)('a' + i));
        CHECK(fd >= 0 && strlen(abs[i]) == lens[i]);
        if (fd < 0)
            return;
        CHECK(fill_deep_dir(fd, long_name) == 0);
        close(fd);
    }

    /* The walked directory itself at 4093, 4094, 4095 bytes: what fits is
     * listed and hashed, the rest are entries by their whole names (the walk
     * of a 4095-byte directory once passed SIZE_MAX to memcpy). */
    for (int i = 0; i < 3; i++) {
        pb_tree *t = pb_tree_walk(abs[i], abs[i], NULL);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK(t->n == 3);
        CHECK(too_long(entry_named(t, long_name)));
        if (lens[i] == 4093) { /* "d" (4095) is entered; "d/x" and "f" are 4097 and 4095 */
            CHECK(t->nerrors == 2 && too_long(entry_named(t, "d/x")));
            CHECK(pb_tree_hash(t, NULL, 0, 2) == 2);
            const pb_entry *f = entry_named(t, "f");
            CHECK(f && f->status == PB_OK && f->size == 1 && memcmp(f->digest, hx, 16) == 0);
        } else {
            CHECK(t->nerrors == 3 && too_long(entry_named(t, "d")));
            CHECK(too_long(entry_named(t, "f")));
            CHECK(pb_tree_hash(t, NULL, 0, 2) == 3 && t->manifest == NULL);
        }
        /* in manifest order: "d" (a directory) or "d/x", then "f", then the long name */
        CHECK(t->names[t->entries[0].path_off] == 'd');
        CHECK(t->entries[1].path_len == 1 && t->names[t->entries[1].path_off] == 'f');
        CHECK(t->entries[2].path_len == LONG_NAME);
        pb_tree_free(t);
    }
    /* a root of 4096 bytes cannot be walked; one slash more than 4095 is stripped */
    errno = 0;
    CHECK(pb_tree_walk(abs[3], abs[3], NULL) == NULL && errno == ENAMETOOLONG);
    snprintf(path, sizeof path, "%s/", abs[2]);
    pb_tree *slashed = pb_tree_walk(path, abs[2], NULL);
    CHECK(slashed && slashed->n == 3 && strcmp(slashed->root, abs[2]) == 0);
    pb_tree_free(slashed);

    /* The same from the top: the deep directories are entered as far as
     * their paths fit; every entry keeps its whole relative path. */
    pb_tree *t = pb_tree_walk(base, base, NULL);
    CHECK(t != NULL);
    if (t) {
        CHECK(t->n == 10 && t->nerrors == 9);
        const char *p[4];
        for (int i = 0; i < 4; i++)
            p[i] = abs[i] + base_len + 1;
        CHECK(too_long(entry_named(t, join(rel, p[0], "d/x"))));
        CHECK(too_long(entry_named(t, join(rel, p[0], long_name))));
        for (int i = 1; i < 3; i++) {
            CHECK(too_long(entry_named(t, join(rel, p[i], "d"))));
            CHECK(too_long(entry_named(t, join(rel, p[i], "f"))));
            CHECK(too_long(entry_named(t, join(rel, p[i], long_name))));
        }
        CHECK(too_long(entry_named(t, p[3]))); /* the 4096-byte directory itself */
        CHECK(pb_tree_stat(t, 2) == 9);
        CHECK(pb_tree_hash(t, NULL, 0, 2) == 9 && t->nread == 1);
        const pb_entry *f = entry_named(t, join(rel, p[0], "f"));
        CHECK(f && f->status == PB_OK && f->size == 1 && memcmp(f->digest, hx, 16) == 0);
        pb_tree_free(t);
    }

    /* Batches of files: 4095 bytes hashed, 4096 and a 256-byte name refused. */
    static char f4095[TEST_PATH], f4096[TEST_PATH], name256[TEST_PATH];
    snprintf(f4095, sizeof f4095, "%s/f", abs[0]);
    snprintf(f4096, sizeof f4096, "%s/f", abs[1]);
    snprintf(name256, sizeof name256, "%s/%sz", top, long_name);
    CHECK(strlen(f4095) == 4095 && strlen(f4096) == 4096);
    pb_file files[3] = {{.path = f4095}, {.path = f4096}, {.path = name256}};
    CHECK(pb_hash_files(files, 3, 2) == 2);
    CHECK(files[0].status == PB_OK && files[0].size == 1 && memcmp(files[0].digest, hx, 16) == 0);
    CHECK(files[1].status == PB_ERR_IO && files[1].err == ENAMETOOLONG);
    CHECK(files[2].status == PB_ERR_IO && files[2].err == ENAMETOOLONG);

    /* A 255-byte name in a shallow tree is an ordinary entry. */
    snprintf(path, sizeof path, "%s/names", top);
    CHECK(mkdir(path, 0755) == 0);
    int nfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(nfd >= 0 && write_at(nfd, long_name, "long") == 0 && write_at(nfd, "e", "") == 0);
    close(nfd);
    t = pb_tree_walk(path, path, NULL);
    CHECK(t && t->n == 2 && pb_tree_hash(t, NULL, 0, 1) == 0);
    if (t) {
        const pb_entry *empty = entry_named(t, "e");
        CHECK(empty && empty->status == PB_OK && empty->size == 0);
        pb_hash_buffer("", 0, hx);
        CHECK(empty && memcmp(empty->digest, hx, 16) == 0);
        pb_hash_buffer("x", 1, hx);
        const pb_entry *e = entry_named(t, long_name);
        CHECK(e && e->status == PB_OK && e->size == 4 && memcmp(e->digest, hlong, 16) == 0);
        CHECK(t->manifest && memmem(t->manifest, t->manifest_len, long_name, LONG_NAME));
        pb_tree_free(t);
    }

    /* The store at the boundary: destinations of 4095 bytes work, 4096 do not. */
    static char dst[6][TEST_PATH];
    const char *dn[6] = {"o", "oo", "p", "pp", "u", "uu"};
    for (int i = 0; i < 6; i++)
        snprintf(dst[i], sizeof dst[i], "%s/%s", abs[0], dn[i]);
    pb_link links[2] = {{.src = f4095, .dst = dst[0], .mode = 0444},
                        {.src = f4095, .dst = dst[1], .mode = 0444}};
    CHECK(pb_link_files(links, 2, 2) == 1 && links[0].status == PB_OK);
    CHECK(links[1].status == PB_ERR_IO && links[1].err == ENAMETOOLONG);
    pb_copy copies[5] = {
        {.src = f4095, .dst = dst[2], .mode = 0444, .flags = PB_COPY_CHECK},
        {.src = f4095, .dst = dst[3], .mode = 0444},
        {.src = f4096, .dst = dst[2], .mode = 0444},
        {.src = f4095, .dst = dst[4], .mode = 0444, .flags = PB_COPY_UNNAMED},
        {.src = f4095, .dst = dst[5], .mode = 0444, .flags = PB_COPY_UNNAMED},
    };
    memcpy(copies[0].expect, hx, 16);
    size_t copy_failures = pb_copy_files(copies, 5, 2);
    CHECK(copy_failures == (copies[3].status == PB_COPY_NO_UNNAMED ? 4u : 2u));
    CHECK(copies[0].status == PB_OK && copies[0].size == 1);
    CHECK(copies[1].status == PB_ERR_IO && copies[1].err == ENAMETOOLONG);
    CHECK(copies[2].status == PB_ERR_IO && copies[2].err == ENAMETOOLONG);
    if (copies[3].status == PB_OK && copies[4].status == PB_OK) {
        pb_publish pubs[2] = {{.fd = copies[3].fd, .dst = dst[4]},
                              {.fd = copies[4].fd, .dst = dst[5]}};
        CHECK(pb_publish_files(pubs, 2, 1) == 1 && pubs[0].status == PB_OK);
        CHECK(pubs[1].status == PB_ERR_IO && pubs[1].err == ENAMETOOLONG);
        pb_file back = {.path = dst[4]};
        CHECK(pb_hash_files(&back, 1, 1) == 0 && memcmp(back.digest, hx, 16) == 0);
    } else {
        CHECK(copies[3].status == PB_COPY_NO_UNNAMED);
    }
    pb_move moves[2] = {{.src = dst[2], .dst = dst[1]}, {.src = dst[2], .dst = dst[3]}};
    CHECK(pb_move_files(moves, 2, 1) == 2);
    CHECK(moves[0].status == PB_ERR_IO && moves[0].err == ENAMETOOLONG);
    CHECK(moves[1].status == PB_ERR_IO && moves[1].err == ENAMETOOLONG);
    CHECK(access(dst[2], F_OK) == 0);

    /* A tree deeper than the old walk's 1,024-level limit is no loop. */
    snprintf(path, sizeof path, "%s/tall", top);
    CHECK(mkdir(path, 0755) == 0);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (int level = 0; level < 1500 && fd >= 0; level++) {
        int next = mkdirat(fd, "a", 0755) == 0 ? openat(fd, "a", O_RDONLY | O_DIRECTORY) : -1;
        close(fd);
        fd = next;
    }
    CHECK(fd >= 0 && write_at(fd, "leaf", "x") == 0);
    if (fd >= 0)
        close(fd);
    t = pb_tree_walk(path, path, NULL);
    CHECK(t && t->n == 1 && t->nerrors == 0 && pb_tree_hash(t, NULL, 0, 1) == 0);
    if (t)
        CHECK(t->entries[0].path_len == 2 * 1500 - 1 + 5);
    pb_tree_free(t);
}

/* ---- large files ----------------------------------------------------------
 * Files at least the threshold big are hashed 16 MiB window by window, each
 * window from a mapping or through read() (pb_hash.c). Every choice must give
 * the digest of the bytes, across window boundaries and in copies; a window
 * held in 4 KiB folios is read, never mapped, in the default mode; and a file
 * shorter than the size it was opened with is EIO whichever way the window is
 * taken (a mapped page past the end raises SIGBUS; a read meets EOF). */

static uint8_t *write_big(const char *path, size_t size, unsigned seed)
{
    uint8_t *data = malloc(size ? size : 1);
    if (!data)
        exit(2);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || fsync(fd) != 0 || close(fd) != 0) {
        perror(path);
        exit(2);
    }
    return data;
}

/* Drop path from the page cache, then read it back without readahead: every
 * page in its own 4 KiB folio, which no PMD entry can map. */
static int reread_small(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    static uint8_t buf[1 << 16];
    int ok = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0 &&
             posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM) == 0;
    while (ok && read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    return ok ? 0 : -1;
}

static pb_worker *new_worker(void)
{
    pb_worker *w = NULL;
    if (posix_memalign((void **)&w, 64, sizeof *w) != 0)
        return NULL;
    memset(w, 0, sizeof *w);
    w->dirfd = -1;
    w->cap = 256u << 10;
    if (posix_memalign((void **)&w->buf, PB_DIRECT_ALIGN, w->cap) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

static void test_large_files(const char *top)
{
    enum { N = 4 };
    const size_t sizes[N] = {(2u << 20) + 1, 16u << 20, (16u << 20) + 4097, (40u << 20) + 7};
    char names[N][4096];
    uint8_t expect[N][16];
    pb_file files[N];
    uint64_t total = 0;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "%s/big%d", top, i);
        uint8_t *data = write_big(names[i], sizes[i], (unsigned)i + 100);
        pb_hash_buffer(data, sizes[i], expect[i]);
        free(data);
        memset(&files[i], 0, sizeof files[i]);
        files[i].path = names[i];
        total += sizes[i];
    }
    const uint64_t saved = pb_get_mmap_threshold();
    const struct {
        uint64_t threshold;
        int mode;
    } runs[] = {{saved, PB_MAP_AUTO}, {saved, PB_MAP_ALWAYS}, {1, PB_MAP_AUTO},
                {1, PB_MAP_ALWAYS}, {UINT64_MAX, PB_MAP_ALWAYS}};
    CHECK(pb_set_map_mode(7) == -1 && pb_get_map_mode() == PB_MAP_AUTO);
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        pb_set_mmap_threshold(runs[r].threshold);
        CHECK(pb_set_map_mode(runs[r].mode) == 0 && pb_get_map_mode() == runs[r].mode);
        uint64_t mapped = pb_bytes_mapped();
        CHECK(pb_hash_files(files, N, 2) == 0);
        mapped = pb_bytes_mapped() - mapped;
        for (int i = 0; i < N; i++)
            CHECK(files[i].status == PB_OK && files[i].size == sizes[i] &&
                  memcmp(files[i].digest, expect[i], 16) == 0);
        if (runs[r].threshold == UINT64_MAX)
            CHECK(mapped == 0); /* below the threshold nothing is mapped */
        else if (runs[r].mode == PB_MAP_ALWAYS)
            CHECK(mapped == total);

        /* copies take the same windows (odd ones written around the page cache) */
        pb_copy copies[N];
        char copy_names[N][4096 + 8];
        for (int i = 0; i < N; i++) {
            snprintf(copy_names[i], sizeof copy_names[i], "%s.copy", names[i]);
            copies[i] = (pb_copy){.src = names[i], .dst = copy_names[i], .mode = 0444,
                                  .flags = PB_COPY_CHECK | (i % 2 ? PB_COPY_DIRECT : 0)};
            memcpy(copies[i].expect, expect[i], 16);
        }
        CHECK(pb_copy_files(copies, N, 2) == 0);
        for (int i = 0; i < N; i++) {
            CHECK(copies[i].status == PB_OK && copies[i].size == sizes[i]);
            pb_file back = {.path = copy_names[i]};
            CHECK(pb_hash_files(&back, 1, 1) == 0 && memcmp(back.digest, expect[i], 16) == 0);
            unlink(copy_names[i]);
        }
    }
    pb_set_mmap_threshold(saved);
    CHECK(pb_set_map_mode(PB_MAP_AUTO) == 0);

    /* 4 KiB folios: read, not mapped */
    CHECK(reread_small(names[3]) == 0);
    uint64_t mapped = pb_bytes_mapped();
    CHECK(pb_hash_files(&files[3], 1, 1) == 0 && memcmp(files[3].digest, expect[3], 16) == 0);
    CHECK(pb_bytes_mapped() == mapped);

    /* shorter than its size says */
    pb_worker *w = new_worker();
    CHECK(w != NULL);
    char small[4096];
    snprintf(small, sizeof small, "%s/short", top);
    free(write_big(small, 1u << 20, 9));
    const struct {
        const char *path;
        uint64_t claim;
        uint64_t threshold;
    } shrunk[] = {
        {names[0], sizes[0] + (3u << 20), saved}, /* a window with a whole 2 MiB block */
        {small, (3u << 20) / 2, 1},               /* one without: read unless forced */
    };
    for (size_t k = 0; w && k < sizeof shrunk / sizeof shrunk[0]; k++) {
        for (int mode = PB_MAP_AUTO; mode <= PB_MAP_ALWAYS; mode++) {
            pb_set_mmap_threshold(shrunk[k].threshold);
            pb_set_map_mode(mode);
            int fd = open(shrunk[k].path, O_RDONLY | O_CLOEXEC);
            uint8_t d[16];
            uint64_t hashed = 0;
            CHECK(fd >= 0 && pb_hash_fd(fd, shrunk[k].claim, w, d, &hashed, NULL) == EIO);
            if (fd >= 0)
                close(fd);
        }
    }
    pb_set_mmap_threshold(saved);
    pb_set_map_mode(PB_MAP_AUTO);
    if (w) {
        free(w->buf);
        free(w);
    }
    unlink(small);
    for (int i = 0; i < N; i++)
        unlink(names[i]);
}

/* ---- the no-op check: the walk's directory stamps and pb_tree_check ---------- */

static void set_old_mtime(const char *path)
{
    struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
    CHECK(utimensat(AT_FDCWD, path, old, AT_SYMLINK_NOFOLLOW) == 0);
}

static void test_tree_check(const char *top)
{
    char base[4096], path[4200];
    snprintf(base, sizeof base, "%s/chk", top);
    const char *dirs_made[] = {"", "/empty", "/sub", "/sub/deep"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s%s", base, dirs_made[i]);
        CHECK(mkdir(path, 0755) == 0);
    }
    const char *files_made[] = {"/a", "/sub/b", "/sub/deep/c"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", base, files_made[i]);
        write_file(path, 100 + (size_t)i, (unsigned)i);
    }
    for (int i = 3; i >= 0; i--) { /* stamps that a later change is sure to move */
        snprintf(path, sizeof path, "%s%s", base, dirs_made[i]);
        set_old_mtime(path);
    }
    pb_tree *t = pb_tree_walk(base, base, NULL);
    CHECK(t != NULL);
    if (!t)
        return;
    /* the walk stamped every directory it listed, the walked one first */
    const char *want[] = {"", "empty", "sub", "sub/deep"};
    CHECK(t->ndirs == 4);
    pb_dir_stamp stamps[5];
    for (size_t i = 0; i < t->ndirs && i < 4; i++) {
        const pb_tree_dir *d = &t->dirs[i];
        CHECK(strcmp(t->dir_names + d->path_off, want[i]) == 0);
        CHECK(d->path_len == strlen(want[i]) && d->mtime_ns == 1000000000LL * 1000000000LL);
        stamps[i] = (pb_dir_stamp){.path = t->dir_names + d->path_off, .mtime_ns = d->mtime_ns,
                                   .ino = d->ino};
    }
    CHECK(pb_tree_hash(t, NULL, 0, 2) == 0);
    size_t need = pb_tree_snapshot(t, INT64_MAX, NULL, 0);
    uint8_t *snap = malloc(need);
    CHECK(snap && pb_tree_snapshot(t, INT64_MAX, snap, need) == need);
    int32_t status[3];

    /* nothing changed: every file and directory is as stamped */
    CHECK(pb_tree_check(base, snap, need, status, stamps, 4, 2) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(stamps[i].status == PB_OK);
    CHECK(status[0] == PB_OK && status[1] == PB_OK && status[2] == PB_OK);
    CHECK(pb_tree_check(base, snap, need, NULL, stamps, 4, 1) == 0);

    /* a file rewritten, a name added to a directory, a directory gone, a path too long */
    snprintf(path, sizeof path, "%s/sub/b", base);
    write_file(path, 7, 9);
    snprintf(path, sizeof path, "%s/empty/new", base);
    write_file(path, 1, 1);
    static char too_long_path[PB_PATH_MAX + 10];
    memset(too_long_path, 'y', sizeof too_long_path - 1);
    stamps[4] = (pb_dir_stamp){.path = too_long_path};
    CHECK(pb_tree_check(base, snap, need, status, stamps, 5, 2) == 1);
    CHECK(status[0] == PB_OK && status[1] == PB_STAT_CHANGED && status[2] == PB_OK);
    CHECK(stamps[0].status == PB_OK && stamps[1].status == PB_STAT_CHANGED);
    CHECK(stamps[2].status == PB_OK && stamps[3].status == PB_OK);
    CHECK(stamps[4].status == PB_ERR_IO && stamps[4].err == ENAMETOOLONG);
    snprintf(path, sizeof path, "%s/sub/deep/c", base);
    CHECK(unlink(path) == 0);
    CHECK(pb_tree_check(base, snap, need, NULL, stamps, 4, 2) == 2);
    CHECK(stamps[3].status == PB_STAT_CHANGED);
    snprintf(path, sizeof path, "%s/sub/deep", base);
    CHECK(rmdir(path) == 0);
    CHECK(pb_tree_check(base, snap, need, status, stamps, 4, 2) == 2);
    CHECK(status[2] == PB_ERR_IO && stamps[3].status == PB_ERR_IO && stamps[3].err == ENOENT);

    /* a memo that does not parse checks nothing and writes no status */
    stamps[0].status = 77;
    snap[need - 1] = 'z'; /* a path no longer ends in NUL */
    CHECK(pb_tree_check(base, snap, need, status, stamps, 1, 2) == (size_t)-1);
    CHECK(pb_tree_check(base, snap, 8, status, stamps, 1, 2) == (size_t)-1);
    CHECK(pb_tree_check(base, NULL, 0, NULL, stamps, 1, 2) == (size_t)-1);
    CHECK(stamps[0].status == 77);
    free(snap);
    pb_tree_free(t);
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/pbcoreXXXXXX";
    if (!mkdtemp(dir))
        return 2;
    char path[4096];

    /* known answers */
    uint8_t d[16];
    char h[33];
    pb_hash_buffer("", 0, d);
    hex(d, h);
    CHECK(strcmp(h, "99aa06d3014798d86001c324468d497f") == 0);
    pb_hash_buffer("a", 1, d);
    hex(d, h);
    CHECK(strcmp(h, "a96faf705af16834e6c632b61e964e1f") == 0);

    /* every SIMD variant agrees */
    static uint8_t big[300000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    uint8_t ref[16], got[16];
    CHECK(pb_set_simd("sse2") == 0);
    pb_hash_buffer(big, sizeof big, ref);
    const char *variants[] = {"avx2", "avx512", "auto"};
    for (int v = 0; v < 3; v++) {
        if (pb_set_simd(variants[v]) != 0)
            continue;
        pb_hash_buffer(big, sizeof big, got);
        CHECK(memcmp(ref, got, 16) == 0);
    }

    /* a tree: files of many sizes, a subdirectory, a symlink in and one out */
    size_t sizes[] = {0, 1, 17, 241, 4096, 262144, 262145, 3u << 20};
    snprintf(path, sizeof path, "%s/t/sub", dir);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", path);
    CHECK(system(cmd) == 0);
    pb_file files[8];
    char names[8][4096];
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "%s/t/%s%d", dir, i % 2 ? "sub/" : "", i);
        write_file(names[i], sizes[i], (unsigned)i);
        memset(&files[i], 0, sizeof files[i]);
        files[i].path = names[i];
    }
    for (int mmap_all = 0; mmap_all < 2; mmap_all++) {
        pb_set_mmap_threshold(mmap_all ? 1 : (2u << 20));
        CHECK(pb_hash_files(files, 8, 3) == 0);
        for (int i = 0; i < 8; i++)
            CHECK(files[i].size == sizes[i] && files[i].status == PB_OK);
    }
    pb_file missing = {.path = "/nonexistent/file"};
    CHECK(pb_hash_files(&missing, 1, 1) == 1 && missing.status == PB_ERR_IO &&
          missing.err == ENOENT);

    snprintf(path, sizeof path, "%s/t/sub/link", dir);
    CHECK(symlink("../0", path) == 0);
    snprintf(path, sizeof path, "%s/t", dir);
    pb_tree *t = pb_tree_walk(path, dir, NULL);
    CHECK(t != NULL);
    if (t) {
        CHECK(t->n == 9 && t->nerrors == 0);
        CHECK(pb_tree_stat(t, 2) == 0);
        CHECK(pb_tree_hash(t, NULL, 0, 2) == 0);
        CHECK(t->manifest_len > 0 && t->nread == 9);
        uint8_t first[16];
        memcpy(first, t->digest, 16);
        size_t need = pb_tree_snapshot(t, INT64_MAX, NULL, 0);
        uint8_t *snap = malloc(need);
        CHECK(pb_tree_snapshot(t, INT64_MAX, snap, need) == need);
        pb_tree *again = pb_tree_walk(path, dir, NULL);
        CHECK(again && pb_tree_hash(again, snap, need, 2) == 0);
        if (again) {
            CHECK(again->nread == 0 && memcmp(again->digest, first, 16) == 0);
            pb_tree_free(again);
        }
        /* a corrupted snapshot is ignored, never trusted */
        for (size_t i = 0; i < need; i += 7)
            snap[i] ^= 0x5a;
        pb_tree *third = pb_tree_walk(path, dir, NULL);
        CHECK(third && pb_tree_hash(third, snap, need, 1) == 0);
        if (third) {
            CHECK(memcmp(third->digest, first, 16) == 0);
            pb_tree_free(third);
        }
        free(snap);
        pb_tree_free(t);
    }

    /* a link out of the bound is an error entry, the walk goes on */
    snprintf(path, sizeof path, "%s/t/sub/out", dir);
    CHECK(symlink("/etc", path) == 0);
    snprintf(path, sizeof path, "%s/t", dir);
    t = pb_tree_walk(path, path, NULL);
    CHECK(t != NULL);
    if (t) {
        CHECK(t->nerrors == 1);
        CHECK(pb_tree_hash(t, NULL, 0, 2) == 1);
        pb_tree_free(t);
    }
    CHECK(pb_tree_walk("/nonexistent/dir", "/", NULL) == NULL && errno == ENOENT);

    /* bulk hardlinks into a "cache": linked, then present, then an error */
    char obj[4096], missing_src[4096];
    snprintf(obj, sizeof obj, "%s/object", dir);
    snprintf(missing_src, sizeof missing_src, "%s/nothing-here", dir);
    pb_link links[3] = {
        {.src = names[2], .dst = obj, .mode = 0444},
        {.src = names[3], .dst = obj, .mode = 0444},
        {.src = missing_src, .dst = names[5], .mode = 0444},
    };
    CHECK(pb_link_files(links, 3, 2) == 1);
    CHECK(links[0].status == PB_OK && links[1].status == PB_LINK_PRESENT);
    CHECK(links[2].status == PB_ERR_IO && links[2].err == ENOENT);
    struct stat a, b;
    CHECK(stat(obj, &a) == 0 && stat(names[2], &b) == 0 && a.st_ino == b.st_ino);
    CHECK((a.st_mode & 0777) == 0444);

    /* copies with the content hashed on the way: every size of the tree (small,
     * one buffer, more than one buffer), checked against pb_hash_files; then a
     * wrong expected digest, a missing source, a taken destination */
    pb_copy copies[8 + 3];
    char copy_names[8 + 3][4096];
    memset(copies, 0, sizeof copies);
    for (int i = 0; i < 8; i++) {
        snprintf(copy_names[i], sizeof copy_names[i], "%s/copy%d", dir, i);
        copies[i] = (pb_copy){.src = names[i], .dst = copy_names[i], .mode = 0444,
                              .flags = PB_COPY_CHECK | PB_COPY_KEEP_EXEC};
        memcpy(copies[i].expect, files[i].digest, 16);
    }
    CHECK(chmod(names[7], 0755) == 0);
    snprintf(copy_names[8], sizeof copy_names[8], "%s/copy-bad", dir);
    copies[8] = (pb_copy){.src = names[6], .dst = copy_names[8], .mode = 0444,
                          .flags = PB_COPY_CHECK};
    memcpy(copies[8].expect, files[5].digest, 16);
    snprintf(copy_names[9], sizeof copy_names[9], "%s/copy-missing", dir);
    copies[9] = (pb_copy){.src = missing_src, .dst = copy_names[9], .mode = 0444};
    copies[10] = (pb_copy){.src = names[1], .dst = copy_names[0], .mode = 0444};
    uint64_t copied_before = pb_files_copied();
    CHECK(pb_copy_files(copies, 11, 2) == 3);
    CHECK(pb_files_copied() - copied_before == 9);
    for (int i = 0; i < 8; i++) {
        CHECK(copies[i].status == PB_OK && copies[i].size == sizes[i]);
        CHECK(memcmp(copies[i].digest, files[i].digest, 16) == 0);
        pb_file back = {.path = copy_names[i]};
        CHECK(pb_hash_files(&back, 1, 1) == 0 && memcmp(back.digest, files[i].digest, 16) == 0);
        struct stat cs;
        CHECK(stat(copy_names[i], &cs) == 0 && (cs.st_mode & 0777) == (i == 7 ? 0555 : 0444));
    }
    CHECK(copies[8].status == PB_COPY_MISMATCH && access(copy_names[8], F_OK) != 0);
    CHECK(copies[9].status == PB_ERR_IO && copies[9].err == ENOENT);
    CHECK(copies[10].status == PB_ERR_IO && copies[10].err == EEXIST);

    /* renames into place: moved, then refused over an existing name (the temp
     * removed), then an error */
    char moved[4096];
    snprintf(moved, sizeof moved, "%s/moved", dir);
    pb_move moves[3] = {
        {.src = copy_names[1], .dst = moved},
        {.src = copy_names[2], .dst = moved},
        {.src = missing_src, .dst = copy_names[3]},
    };
    CHECK(pb_move_files(moves, 3, 1) == 1);
    CHECK(moves[0].status == PB_OK && moves[1].status == PB_LINK_PRESENT);
    CHECK(access(copy_names[1], F_OK) != 0 && access(copy_names[2], F_OK) != 0);
    CHECK(moves[2].status == PB_ERR_IO && moves[2].err == ENOENT);
    struct stat ms;
    CHECK(stat(moved, &ms) == 0 && ms.st_size == (off_t)sizes[1]);

    /* unnamed copies, written around the page cache where the file system
     * allows (every size: under a block, whole blocks, a buffer and a byte, a
     * mapped file), named only by pb_publish_files; a wrong digest leaves
     * nothing behind; a name already taken keeps its content */
    char pub[4096], taken_content[] = "taken";
    snprintf(pub, sizeof pub, "%s/pub", dir);
    CHECK(mkdir(pub, 0755) == 0);
    pb_copy anon[9];
    char anon_names[9][4096 + 16];
    for (int i = 0; i < 9; i++) {
        snprintf(anon_names[i], sizeof anon_names[i], "%s/obj%d", pub, i);
        anon[i] = (pb_copy){.src = names[i < 8 ? i : 6], .dst = anon_names[i], .mode = 0444,
                            .flags = PB_COPY_CHECK | PB_COPY_KEEP_EXEC | PB_COPY_UNNAMED |
                                     PB_COPY_DIRECT};
        memcpy(anon[i].expect, files[i < 8 ? i : 5].digest, 16);
    }
    CHECK(pb_copy_files(anon, 9, 2) == 1);
    if (anon[0].status == PB_COPY_NO_UNNAMED) {
        fprintf(stderr, "note: %s has no unnamed files (O_TMPFILE); not tested\n", pub);
    } else {
        CHECK(anon[8].status == PB_COPY_MISMATCH && anon[8].fd == -1);
        CHECK(count_entries(pub) == 0);
        FILE *f = fopen(anon_names[3], "w");
        CHECK(f && fputs(taken_content, f) >= 0 && fclose(f) == 0);
        pb_publish pubs[8];
        for (int i = 0; i < 8; i++) {
            CHECK(anon[i].status == PB_OK && anon[i].fd >= 0 && anon[i].size == sizes[i]);
            pubs[i] = (pb_publish){.fd = anon[i].fd, .dst = anon_names[i]};
        }
        CHECK(pb_publish_files(pubs, 8, 2) == 0);
        for (int i = 0; i < 8; i++) {
            CHECK(pubs[i].status == (i == 3 ? PB_LINK_PRESENT : PB_OK));
            CHECK(fcntl(pubs[i].fd, F_GETFD) == -1 && errno == EBADF);
            struct stat ps;
            CHECK(stat(anon_names[i], &ps) == 0);
            if (i == 3) {
                CHECK(ps.st_size == (off_t)strlen(taken_content));
                continue;
            }
            pb_file back = {.path = anon_names[i]};
            CHECK(pb_hash_files(&back, 1, 1) == 0 && memcmp(back.digest, files[i].digest, 16) == 0);
            CHECK((ps.st_mode & 0777) == (i == 7 ? 0555 : 0444) && ps.st_nlink == 1);
        }
        CHECK(count_entries(pub) == 8);
    }

    test_path_max(dir);
    test_large_files(dir);
    test_tree_check(dir);

    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    (void)argc;
    (void)argv;
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "ok", failures);
    return failures ? 1 : 0;
}
