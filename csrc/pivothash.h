/* pivothash.h -- the whole C API of pivotbuild's core, in three sections:
 *
 *   hash   buffers and batches of files; tuning and counters
 *   tree   walking a directory, hashing it against a memo snapshot, the manifest
 *   store  moving files into and out of content-addressed stores in bulk
 *
 * The cffi build script (pivotbuild/_core_build.py) reads the declarations
 * between the PB_CDEF markers below, so they are written once, here. What the
 * core's .c files share and Python never sees is in pb_internal.h.
 *
 * Rules every function follows:
 *  - the caller owns every buffer it passes in; the only memory the core
 *    allocates is a pb_tree (its size is not known before the walk), which the
 *    caller releases with pb_tree_free;
 *  - per-item failures are reported in the item (status + errno), never by
 *    aborting the batch; a path the system cannot take (PATH_MAX is 4096 bytes
 *    with its NUL, a name 255 bytes) is an item with PB_ERR_IO / ENAMETOOLONG;
 *  - no function touches Python objects, so cffi releases the GIL around all
 *    of them.
 *
 * Digests are XXH3-128 in xxHash's canonical (big-endian) byte order: the hex
 * of the 16 bytes is what `xxhsum -H2` prints.
 */
#ifndef PIVOTHASH_H
#define PIVOTHASH_H

#include <stddef.h>
#include <stdint.h>

/* PB_CDEF_BEGIN */

/* ==== hash: buffers and files ============================================ */

#define PB_DIGEST_LEN 16

/* Status of one item (a file, a tree entry, a store operation). */
#define PB_OK 0
#define PB_ERR_IO 1            /* a system call failed: see err (errno) */
#define PB_ERR_NOT_REGULAR 2   /* a fifo, socket or device */
#define PB_ERR_LINK_OUTSIDE 3  /* a symlink whose target lies outside the bound */
#define PB_ERR_LINK_DANGLING 4 /* a symlink whose target does not exist */
#define PB_ERR_LINK_LOOP 5     /* a symlink that loops, or leads back to a parent */

/* One file of a batch: path in, digest and stat out. */
typedef struct {
    const char *path;
    uint64_t size;       /* bytes hashed */
    int64_t mtime_ns;    /* from fstat of the open file */
    uint64_t ino;
    uint32_t mode;
    int32_t status;      /* PB_OK or PB_ERR_* */
    int32_t err;         /* errno when status is PB_ERR_IO */
    uint8_t digest[16];
} pb_file;

/* Hash a buffer in memory. */
void pb_hash_buffer(const void *data, size_t len, uint8_t *digest_out);

/* Hash n files with up to nthreads threads (<= 0: all cores).
 * Returns the number of files whose status is not PB_OK. */
size_t pb_hash_files(pb_file *files, size_t n, int nthreads);

/* Tuning and introspection, for tests and benchmarks. Files at least the
 * threshold big are hashed 16 MiB at a time, each window from a mapping where
 * the page cache holds it in PMD-size folios (nothing copied) and through
 * read() elsewhere (mapping small folios costs more than copying them): see
 * pb_hash.c. */
#define PB_MAP_AUTO 0      /* map the windows held in PMD-size folios (the default) */
#define PB_MAP_ALWAYS 1    /* map every window of a large file */
void pb_set_mmap_threshold(uint64_t bytes);  /* files at least this big may be mapped */
uint64_t pb_get_mmap_threshold(void);
int pb_set_map_mode(int mode);                /* PB_MAP_*; 0 ok, -1 for another value */
int pb_get_map_mode(void);
int pb_set_simd(const char *name);            /* "sse2", "avx2", "avx512" or "auto"; 0 ok */
const char *pb_simd_name(void);
uint64_t pb_files_read(void);                 /* files opened for reading since load */
uint64_t pb_bytes_mapped(void);               /* bytes hashed from mappings since load */

/* ==== tree: a walked directory, its manifest and memo snapshot =========== */

/* Entry flags. */
#define PB_FLAG_FROM_MEMO 1    /* digest came from the memo snapshot: file not read */

/* One file below a walked directory. */
typedef struct {
    uint64_t size;
    int64_t mtime_ns;
    uint64_t ino;
    uint32_t mode;
    uint32_t path_off;   /* offset of the NUL-terminated relative path in names */
    uint32_t path_len;
    int32_t status;
    int32_t err;
    uint32_t flags;      /* PB_FLAG_* */
    uint8_t digest[16];
} pb_entry;

/* One directory pb_tree_walk listed, stamped (fstat of the open directory)
 * before its entries were read: while its mtime and inode stay the same and
 * the stamp was not racy, it holds the same names (pb_tree_check). */
typedef struct {
    int64_t mtime_ns;
    uint64_t ino;
    uint32_t path_off;   /* offset of the NUL-terminated relative path in dir_names */
    uint32_t path_len;   /* 0: the walked directory itself */
} pb_tree_dir;

/* A walked directory. Entries are sorted by relative path (bytes, '/'-separated).
 * Made by pb_tree_walk only (the core keeps private fields beside it). */
typedef struct {
    char *root;              /* the walked directory, as given */
    pb_entry *entries;
    size_t n;
    char *names;
    size_t names_len;
    char *manifest;          /* after pb_tree_hash: the manifest bytes (see manifest.py) */
    size_t manifest_len;
    uint8_t digest[16];      /* after pb_tree_hash: XXH3-128 of the manifest */
    uint64_t total_size;     /* sum of file sizes */
    size_t nerrors;          /* entries whose status is not PB_OK */
    size_t nread;            /* files read by pb_tree_hash (the rest came from the memo) */
    int64_t started_ns;      /* wall clock when pb_tree_hash began (for the racy check) */
    pb_tree_dir *dirs;       /* every directory the walk listed, in the order it did */
    size_t ndirs;
    char *dir_names;
    size_t dir_names_len;
} pb_tree;

/* List every file below dir. Symlinks are followed when their target lies
 * inside bound (an absolute, symlink-free path); other links are entries with
 * a PB_ERR_LINK_* status. A directory whose path (as walked) equals skip is
 * left out (pivotbuild's own state directory; NULL: none). An entry whose
 * path would not fit in PATH_MAX is listed, by its whole relative path, with
 * PB_ERR_IO / ENAMETOOLONG. Returns NULL with errno set if dir cannot be
 * read. */
pb_tree *pb_tree_walk(const char *dir, const char *bound, const char *skip);

/* Fill size, mtime_ns, ino and mode of every entry of t (following the
 * symlinks the walk accepted), with up to nthreads threads. Returns the number
 * of entries that could not be stat'ed (their status says why). */
size_t pb_tree_stat(pb_tree *t, int nthreads);

/* Stat and hash every entry of t, taking the digest of a file whose size,
 * mtime and inode match its record in the memo snapshot (from
 * pb_tree_snapshot; NULL/0 for none) instead of reading it. Then builds the
 * manifest and its digest. Returns the number of failed entries. */
size_t pb_tree_hash(pb_tree *t, const void *memo, size_t memo_len, int nthreads);

/* Serialise t's good entries whose mtime is before racy_cutoff_ns into buf as
 * a memo snapshot. Returns the size needed; writes only if cap suffices. */
size_t pb_tree_snapshot(const pb_tree *t, int64_t racy_cutoff_ns, void *buf, size_t cap);

void pb_tree_free(pb_tree *t);

/* A directory to compare with its stamp (pb_tree_dir), for pb_tree_check. */
typedef struct {
    const char *path;    /* relative to the checked directory; "" for itself */
    int64_t mtime_ns;
    uint64_t ino;
    int32_t status;      /* out: PB_OK, PB_STAT_CHANGED, or PB_ERR_IO with err */
    int32_t err;
} pb_dir_stamp;

#define PB_STAT_CHANGED 110  /* pb_tree_check: another size, mtime, inode or mode */

/* The no-op check of a directory whose manifest a memo snapshot describes:
 * stat (following symlinks, as the walk does) every file the memo lists and
 * every directory of dirs, relative to dir, with up to nthreads threads, each
 * worker relative to the directory it last opened. A file is PB_OK when it is
 * a regular file whose size, mtime_ns, inode and mode equal its record, else
 * PB_STAT_CHANGED, PB_ERR_NOT_REGULAR or PB_ERR_IO (a directory: PB_OK when it
 * is one with the same mtime_ns and inode). file_status is NULL or has room for
 * one status per memo record, in record order. Returns the number of files
 * whose status is not PB_OK, or (size_t)-1, checking nothing, when the memo
 * does not parse (then no status is written). */
size_t pb_tree_check(const char *dir, const void *memo, size_t memo_len, int32_t *file_status,
                     pb_dir_stamp *dirs, size_t ndirs, int nthreads);

/* ==== store: bulk link, copy, publish and move =========================== */

#define PB_LINK_PRESENT 100  /* dst already existed: nothing was done (or the copy dropped) */

/* One file to hardlink into the cache: src in, status out. */
typedef struct {
    const char *src;     /* the workspace file */
    const char *dst;     /* its object path (the shard directory must exist) */
    uint32_t mode;       /* the object's mode, e.g. 0444 or 0555 */
    int32_t status;      /* out: PB_OK, PB_LINK_PRESENT, or PB_ERR_IO with err */
    int32_t err;
} pb_link;

/* link(src, dst) then chmod(dst, mode) for each item, with up to nthreads
 * threads. A link is atomic: the object appears whole or not at all. Returns
 * the number of items whose status is PB_ERR_IO (EXDEV, EPERM, EMLINK, ...
 * tell the caller to copy those instead). */
size_t pb_link_files(pb_link *items, size_t n, int nthreads);

/* One file to copy with its content hashed on the way: the transfer to and
 * from a local-directory remote. */
typedef struct {
    const char *src;
    const char *dst;     /* a new temp name: created with O_EXCL, removed again on any failure;
                            with PB_COPY_UNNAMED the final name, which is not created */
    uint32_t mode;       /* dst's permissions once written */
    uint32_t flags;      /* PB_COPY_* */
    uint8_t expect[16];  /* with PB_COPY_CHECK: the digest the content must have */
    uint64_t size;       /* out: bytes copied */
    uint32_t src_mode;   /* out: src's st_mode */
    int32_t status;      /* out: PB_OK, PB_ERR_IO (err), PB_ERR_NOT_REGULAR, PB_COPY_MISMATCH,
                            PB_COPY_NO_UNNAMED */
    int32_t err;
    int32_t fd;          /* out: with PB_COPY_UNNAMED and PB_OK, the copy, open; else -1 */
    uint8_t digest[16];  /* out: XXH3-128 of the bytes copied */
} pb_copy;

#define PB_COPY_CHECK 1      /* keep dst only if its content hashes to expect */
#define PB_COPY_KEEP_EXEC 2  /* add 0111 to mode when src is executable by its owner */
#define PB_COPY_WRITEBACK 4  /* start writing dst back to disk once written (no wait) */
#define PB_COPY_UNNAMED 8    /* write an unnamed file in dst's directory (O_TMPFILE) and
                                leave it open in fd, for pb_publish_files to name */
#define PB_COPY_DIRECT 16    /* write whole blocks around the page cache (O_DIRECT), where
                                the file system allows: for copies this machine will not read */
#define PB_COPY_MISMATCH 101 /* the content does not hash to expect: dst removed */
#define PB_COPY_NO_UNNAMED 102 /* PB_COPY_UNNAMED: this file system has no unnamed files */

/* Copy each src to dst (read, hash, write: the data passes through memory
 * once), with up to nthreads threads. Returns the number of items whose
 * status is not PB_OK. */
size_t pb_copy_files(pb_copy *items, size_t n, int nthreads);

/* An unnamed copy to give its name. */
typedef struct {
    int32_t fd;          /* from pb_copy: closed by pb_publish_files, whatever happens */
    const char *dst;
    int32_t status;      /* out: PB_OK, PB_LINK_PRESENT (dst existed: the copy is dropped),
                            PB_ERR_IO (err) */
    int32_t err;
} pb_publish;

/* Link each unnamed file to its dst (atomic: dst appears whole or not at all,
 * and never replaces an existing file), then close its fd. Returns the number
 * of PB_ERR_IO items. */
size_t pb_publish_files(pb_publish *items, size_t n, int nthreads);

/* A named temp to rename to its final name. */
typedef struct {
    const char *src;     /* the temp, holding the content dst's name stands for */
    const char *dst;
    int32_t status;      /* out: PB_OK, PB_LINK_PRESENT (dst existed: src removed),
                            PB_ERR_IO (err) */
    int32_t err;
} pb_move;

/* rename(src, dst) for each item unless dst exists, in which case src is
 * removed and the status is PB_LINK_PRESENT. Returns the number of PB_ERR_IO
 * items. */
size_t pb_move_files(pb_move *items, size_t n, int nthreads);

uint64_t pb_files_copied(void);               /* files pb_copy_files began to write */

/* ==== md5: DVC's content hashes (import-dvc; pb_md5.c) ================== */

#define PB_MD5_DOS2UNIX 1    /* DVC 2's md5-dos2unix: CRLF hashed as LF in text chunks */

/* One file of an md5 batch: path and flags in, digest and size out. */
typedef struct {
    const char *path;
    uint32_t flags;      /* PB_MD5_* */
    int32_t status;      /* out: PB_OK, PB_ERR_IO (err) or PB_ERR_NOT_REGULAR */
    int32_t err;
    uint64_t size;       /* out: bytes read */
    uint8_t digest[16];  /* out: the MD5 (RFC 1321) of the file, as DVC records it */
} pb_md5_file;

/* MD5 of a buffer in memory. */
void pb_md5_buffer(const void *data, size_t len, uint8_t *digest_out);

/* MD5 of n files with up to nthreads threads (<= 0: all cores). Returns the
 * number of files whose status is not PB_OK. */
size_t pb_md5_files(pb_md5_file *files, size_t n, int nthreads);

/* PB_CDEF_END */

#endif
