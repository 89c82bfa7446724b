/* pb_md5.c -- MD5 (RFC 1321) of buffers and of batches of files, for checking
 * a DVC workspace against the md5s DVC recorded (pivotbuild import-dvc).
 *
 * MD5 is written here from the RFC: 64-byte blocks of sixteen little-endian
 * words, four rounds of sixteen steps, the message padded with 0x80, zeros
 * and its length in bits (little-endian, 64 bits). T[i] below is
 * floor(2^32 * |sin(i + 1)|), as section 3.4 of the RFC defines it.
 *
 * PB_MD5_DOS2UNIX is DVC 2's "md5-dos2unix": the file is taken in 1 MiB
 * chunks (DVC reads it so); a chunk whose first 512 bytes look like text
 * (empty, or no NUL byte and at most 30% of the bytes outside printable ASCII
 * and \n \r \t \f \b) has every CRLF inside it hashed as LF. A CRLF split
 * across two chunks is hashed as it is, as DVC does. The worker's read
 * buffer is smaller than a chunk, so a CR that ends one read of a text chunk
 * waits to see whether the next read of the same chunk starts with LF. */
#define _GNU_SOURCE
#include "pivothash.h"
#include "pb_internal.h"
#include "pb_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- MD5 ----------------------------------------------------------------- */

typedef struct {
    uint32_t h[4];
    uint64_t len;      /* bytes hashed so far */
    uint8_t block[64]; /* a partial block waiting for more bytes */
    size_t fill;
} pb_md5_ctx;

static const uint32_t pb_md5_t[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu,
    0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau,
    0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu,
    0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u,
    0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u,
    0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

#define PB_ROTL(x, s) (((x) << (s)) | ((x) >> (32 - (s))))
#define PB_F(b, c, d) (((b) & (c)) | (~(b) & (d)))
#define PB_G(b, c, d) (((b) & (d)) | ((c) & ~(d)))
#define PB_H(b, c, d) ((b) ^ (c) ^ (d))
#define PB_I(b, c, d) ((c) ^ ((b) | ~(d)))
/* One step: a = b + ((a + fn(b, c, d) + X[k] + T[i]) <<< s). */
#define PB_STEP(fn, a, b, c, d, k, i, s)                                     \
    do {                                                                     \
        (a) += fn((b), (c), (d)) + x[(k)] + pb_md5_t[(i)];                   \
        (a) = (b) + PB_ROTL((a), (s));                                       \
    } while (0)

static inline uint32_t pb_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void pb_md5_block(uint32_t h[4], const uint8_t *p)
{
    uint32_t x[16];
    for (int k = 0; k < 16; k++)
        x[k] = pb_le32(p + 4 * k);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];

    /* round 1: X[i], shifts 7 12 17 22 */
    PB_STEP(PB_F, a, b, c, d, 0, 0, 7);   PB_STEP(PB_F, d, a, b, c, 1, 1, 12);
    PB_STEP(PB_F, c, d, a, b, 2, 2, 17);  PB_STEP(PB_F, b, c, d, a, 3, 3, 22);
    PB_STEP(PB_F, a, b, c, d, 4, 4, 7);   PB_STEP(PB_F, d, a, b, c, 5, 5, 12);
    PB_STEP(PB_F, c, d, a, b, 6, 6, 17);  PB_STEP(PB_F, b, c, d, a, 7, 7, 22);
    PB_STEP(PB_F, a, b, c, d, 8, 8, 7);   PB_STEP(PB_F, d, a, b, c, 9, 9, 12);
    PB_STEP(PB_F, c, d, a, b, 10, 10, 17); PB_STEP(PB_F, b, c, d, a, 11, 11, 22);
    PB_STEP(PB_F, a, b, c, d, 12, 12, 7);  PB_STEP(PB_F, d, a, b, c, 13, 13, 12);
    PB_STEP(PB_F, c, d, a, b, 14, 14, 17); PB_STEP(PB_F, b, c, d, a, 15, 15, 22);
    /* round 2: X[(5i + 1) mod 16], shifts 5 9 14 20 */
    PB_STEP(PB_G, a, b, c, d, 1, 16, 5);   PB_STEP(PB_G, d, a, b, c, 6, 17, 9);
    PB_STEP(PB_G, c, d, a, b, 11, 18, 14); PB_STEP(PB_G, b, c, d, a, 0, 19, 20);
    PB_STEP(PB_G, a, b, c, d, 5, 20, 5);   PB_STEP(PB_G, d, a, b, c, 10, 21, 9);
    PB_STEP(PB_G, c, d, a, b, 15, 22, 14); PB_STEP(PB_G, b, c, d, a, 4, 23, 20);
    PB_STEP(PB_G, a, b, c, d, 9, 24, 5);   PB_STEP(PB_G, d, a, b, c, 14, 25, 9);
    PB_STEP(PB_G, c, d, a, b, 3, 26, 14);  PB_STEP(PB_G, b, c, d, a, 8, 27, 20);
    PB_STEP(PB_G, a, b, c, d, 13, 28, 5);  PB_STEP(PB_G, d, a, b, c, 2, 29, 9);
    PB_STEP(PB_G, c, d, a, b, 7, 30, 14);  PB_STEP(PB_G, b, c, d, a, 12, 31, 20);
    /* round 3: X[(3i + 5) mod 16], shifts 4 11 16 23 */
    PB_STEP(PB_H, a, b, c, d, 5, 32, 4);   PB_STEP(PB_H, d, a, b, c, 8, 33, 11);
    PB_STEP(PB_H, c, d, a, b, 11, 34, 16); PB_STEP(PB_H, b, c, d, a, 14, 35, 23);
    PB_STEP(PB_H, a, b, c, d, 1, 36, 4);   PB_STEP(PB_H, d, a, b, c, 4, 37, 11);
    PB_STEP(PB_H, c, d, a, b, 7, 38, 16);  PB_STEP(PB_H, b, c, d, a, 10, 39, 23);
    PB_STEP(PB_H, a, b, c, d, 13, 40, 4);  PB_STEP(PB_H, d, a, b, c, 0, 41, 11);
    PB_STEP(PB_H, c, d, a, b, 3, 42, 16);  PB_STEP(PB_H, b, c, d, a, 6, 43, 23);
    PB_STEP(PB_H, a, b, c, d, 9, 44, 4);   PB_STEP(PB_H, d, a, b, c, 12, 45, 11);
    PB_STEP(PB_H, c, d, a, b, 15, 46, 16); PB_STEP(PB_H, b, c, d, a, 2, 47, 23);
    /* round 4: X[7i mod 16], shifts 6 10 15 21 */
    PB_STEP(PB_I, a, b, c, d, 0, 48, 6);   PB_STEP(PB_I, d, a, b, c, 7, 49, 10);
    PB_STEP(PB_I, c, d, a, b, 14, 50, 15); PB_STEP(PB_I, b, c, d, a, 5, 51, 21);
    PB_STEP(PB_I, a, b, c, d, 12, 52, 6);  PB_STEP(PB_I, d, a, b, c, 3, 53, 10);
    PB_STEP(PB_I, c, d, a, b, 10, 54, 15); PB_STEP(PB_I, b, c, d, a, 1, 55, 21);
    PB_STEP(PB_I, a, b, c, d, 8, 56, 6);   PB_STEP(PB_I, d, a, b, c, 15, 57, 10);
    PB_STEP(PB_I, c, d, a, b, 6, 58, 15);  PB_STEP(PB_I, b, c, d, a, 13, 59, 21);
    PB_STEP(PB_I, a, b, c, d, 4, 60, 6);   PB_STEP(PB_I, d, a, b, c, 11, 61, 10);
    PB_STEP(PB_I, c, d, a, b, 2, 62, 15);  PB_STEP(PB_I, b, c, d, a, 9, 63, 21);

    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

static void pb_md5_init(pb_md5_ctx *m)
{
    m->h[0] = 0x67452301u;
    m->h[1] = 0xefcdab89u;
    m->h[2] = 0x98badcfeu;
    m->h[3] = 0x10325476u;
    m->len = 0;
    m->fill = 0;
}

static void pb_md5_update(pb_md5_ctx *m, const uint8_t *p, size_t n)
{
    m->len += n;
    if (m->fill) {
        size_t take = 64 - m->fill < n ? 64 - m->fill : n;
        memcpy(m->block + m->fill, p, take);
        m->fill += take;
        p += take;
        n -= take;
        if (m->fill < 64)
            return;
        pb_md5_block(m->h, m->block);
        m->fill = 0;
    }
    for (; n >= 64; p += 64, n -= 64)
        pb_md5_block(m->h, p);
    if (n) {
        memcpy(m->block, p, n);
        m->fill = n;
    }
}

static void pb_md5_final(pb_md5_ctx *m, uint8_t out[16])
{
    uint64_t bits = m->len * 8;
    uint8_t pad[72] = {0x80};
    /* pad to 56 bytes mod 64, then the length: 1 to 64 bytes of padding */
    size_t padlen = (m->fill < 56 ? 56 : 120) - m->fill;
    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (uint8_t)(bits >> (8 * i));
    uint64_t len = m->len;
    pb_md5_update(m, pad, padlen + 8);
    m->len = len;
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (uint8_t)m->h[i];
        out[4 * i + 1] = (uint8_t)(m->h[i] >> 8);
        out[4 * i + 2] = (uint8_t)(m->h[i] >> 16);
        out[4 * i + 3] = (uint8_t)(m->h[i] >> 24);
    }
}

void pb_md5_buffer(const void *data, size_t len, uint8_t *digest_out)
{
    pb_md5_ctx m;
    pb_md5_init(&m);
    pb_md5_update(&m, (const uint8_t *)data, len);
    pb_md5_final(&m, digest_out);
}

/* ---- DVC 2's text heuristic ---------------------------------------------- */

#define PB_DVC_CHUNK (1u << 20) /* DVC reads (and normalises) files this much at a time */
#define PB_DVC_SNIFF 512u       /* the first bytes of a chunk that decide if it is text */

static int pb_looks_like_text(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 1;
    size_t nontext = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == 0)
            return 0;
        int text = (c >= 32 && c < 127) || c == '\n' || c == '\r' || c == '\t' || c == '\f' ||
                   c == '\b';
        nontext += !text;
    }
    /* nontext / n <= 0.30, exactly (n is at most 512: no overflow) */
    return nontext * 10 <= n * 3;
}

/* Drop every CR that is followed by LF in p[0..n); returns the new length. */
static size_t pb_crlf_to_lf(uint8_t *p, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
            continue;
        p[out++] = p[i];
    }
    return out;
}

/* ---- batch of files -------------------------------------------------------- */

/* Read until buf holds want bytes or EOF: bytes read, or -1 with errno set. */
static ssize_t pb_md5_read(int fd, uint8_t *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
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

/* Hash the open file fd; 0 or an errno value. */
static int pb_md5_fd(int fd, uint32_t flags, pb_worker *w, uint8_t *digest, uint64_t *size)
{
    pb_md5_ctx m;
    pb_md5_init(&m);
    int dos2unix = (flags & PB_MD5_DOS2UNIX) != 0;
    size_t chunk_off = 0; /* position inside DVC's current 1 MiB chunk */
    int text = 0;         /* the current chunk looks like text */
    int held_cr = 0;      /* a text chunk's read ended with CR: is LF next? */
    uint64_t total = 0;
    for (;;) {
        size_t want = w->cap;
        if (dos2unix && want > PB_DVC_CHUNK - chunk_off)
            want = PB_DVC_CHUNK - chunk_off; /* never read across a chunk's end */
        ssize_t got = pb_md5_read(fd, w->buf, want);
        if (got < 0)
            return errno;
        size_t n = (size_t)got;
        total += n;
        if (dos2unix && n > 0) {
            if (chunk_off == 0)
                text = pb_looks_like_text(w->buf, n < PB_DVC_SNIFF ? n : PB_DVC_SNIFF);
            if (text) {
                if (held_cr && w->buf[0] != '\n') {
                    static const uint8_t cr = '\r';
                    pb_md5_update(&m, &cr, 1); /* a lone CR; before an LF it is dropped */
                }
                held_cr = 0;
                int ends_cr = w->buf[n - 1] == '\r';
                int chunk_ends = chunk_off + n == PB_DVC_CHUNK || n < want;
                size_t keep = pb_crlf_to_lf(w->buf, n);
                if (ends_cr && !chunk_ends) {
                    keep--; /* hold the CR until the next read of this chunk */
                    held_cr = 1;
                }
                pb_md5_update(&m, w->buf, keep);
            } else {
                pb_md5_update(&m, w->buf, n);
            }
            chunk_off += n;
            if (chunk_off == PB_DVC_CHUNK)
                chunk_off = 0;
        } else if (n > 0) {
            pb_md5_update(&m, w->buf, n);
        }
        if ((size_t)got < want)
            break;
    }
    if (held_cr) { /* only reached if the file ended right after a held CR */
        static const uint8_t cr = '\r';
        pb_md5_update(&m, &cr, 1);
    }
    pb_md5_final(&m, digest);
    *size = total;
    return 0;
}

static void pb_md5_one_file(void *ctx, size_t i, pb_worker *w)
{
    pb_md5_file *f = (pb_md5_file *)ctx + i;
    f->err = 0;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        f->status = PB_ERR_IO;
        f->err = errno;
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        f->status = PB_ERR_IO;
        f->err = errno;
    } else if (!S_ISREG(st.st_mode)) {
        f->status = PB_ERR_NOT_REGULAR;
    } else {
        int rc = pb_md5_fd(fd, f->flags, w, f->digest, &f->size);
        f->status = rc ? PB_ERR_IO : PB_OK;
        f->err = rc;
    }
    close(fd);
}

size_t pb_md5_files(pb_md5_file *files, size_t n, int nthreads)
{
    for (size_t i = 0; i < n; i++) { /* what the pool could not reach stays an error */
        files[i].status = PB_ERR_IO;
        files[i].err = ENOMEM;
    }
    pb_parallel_for(n, nthreads, pb_md5_one_file, files);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += files[i].status != PB_OK;
    return failed;
}
