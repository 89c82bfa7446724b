/* test_md5.c -- the md5 section of the C API (pb_md5.c) under AddressSanitizer
 * and UndefinedBehaviorSanitizer (Makefile target sanitize-md5, run by
 * tests/test_sanitizers.py): RFC 1321's test suite, every length around the
 * padding boundaries against a bytewise reference built here, files read in
 * several pieces, and DVC 2's CRLF rule at the worker's read and chunk edges. */
#define _GNU_SOURCE
#include "pivothash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static int md5_is(const char *text, const char *want)
{
    uint8_t d[16];
    char got[33];
    pb_md5_buffer(text, strlen(text), d);
    hex(d, got);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "md5(\"%s\") = %s, want %s\n", text, got, want);
    return strcmp(got, want) == 0;
}

static void test_rfc_suite(void)
{
    CHECK(md5_is("", "d41d8cd98f00b204e9800998ecf8427e"));
    CHECK(md5_is("a", "0cc175b9c0f1b6a831c399e269772661"));
    CHECK(md5_is("abc", "900150983cd24fb0d6963f7d28e17f72"));
    CHECK(md5_is("message digest", "f96b697d7cb7938d525a2f31aaf161d0"));
    CHECK(md5_is("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"));
    CHECK(md5_is("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                 "d174ab98d277d9f5a5611c2c9f419d9f"));
    CHECK(md5_is("12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                 "57edf4a22be3c955ac49da2e2107b67a"));
}

static char *write_tmp(const char *dir, const char *name, const uint8_t *data, size_t len)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        perror(path);
        exit(2);
    }
    fclose(f);
    return path;
}

/* DVC 2's rule written the plain way: per 1 MiB chunk, sniff 512 bytes, drop CR before LF. */
static void dos2unix_ref(const uint8_t *data, size_t len, uint8_t *digest)
{
    uint8_t *out = malloc(len ? len : 1);
    size_t n = 0;
    for (size_t off = 0; off < len; off += 1u << 20) {
        size_t end = off + (1u << 20) < len ? off + (1u << 20) : len;
        size_t sniff = end - off < 512 ? end - off : 512, nontext = 0;
        int text = 1;
        for (size_t i = off; i < off + sniff; i++) {
            uint8_t c = data[i];
            if (c == 0)
                text = 0;
            nontext += !((c >= 32 && c < 127) || c == '\n' || c == '\r' || c == '\t' ||
                         c == '\f' || c == '\b');
        }
        text = text && nontext * 10 <= sniff * 3;
        for (size_t i = off; i < end; i++) {
            if (text && data[i] == '\r' && i + 1 < end && data[i + 1] == '\n')
                continue;
            out[n++] = data[i];
        }
    }
    pb_md5_buffer(out, n, digest);
    free(out);
}

static void test_files(const char *dir)
{
    enum { N = 7 };
    size_t sizes[N] = {0, 1, 55, 64, (256u << 10) + 1, (1u << 20) + 3, (3u << 20) + 17};
    pb_md5_file files[2 * N + 2];
    char *paths[N];
    uint8_t *bufs[N];
    for (int k = 0; k < N; k++) {
        bufs[k] = malloc(sizes[k] + 1);
        for (size_t i = 0; i < sizes[k]; i++) {
            /* mostly text with CRLFs; CRs land on the 256 KiB read and 1 MiB chunk edges */
            size_t at = i + 1;
            bufs[k][i] = (at % (256u << 10) == 0 || at % 97 == 0) ? '\r'
                         : (i % (256u << 10) == 0 || i % 97 == 1) ? '\n' : (uint8_t)('a' + i % 26);
        }
        char name[32];
        sprintf(name, "f%d", k);
        paths[k] = write_tmp(dir, name, bufs[k], sizes[k]);
        files[2 * k] = (pb_md5_file){.path = paths[k], .flags = 0};
        files[2 * k + 1] = (pb_md5_file){.path = paths[k], .flags = PB_MD5_DOS2UNIX};
    }
    files[2 * N] = (pb_md5_file){.path = "/nonexistent/pivotbuild-md5", .flags = 0};
    files[2 * N + 1] = (pb_md5_file){.path = dir, .flags = 0};
    CHECK(pb_md5_files(files, 2 * N + 2, 3) == 2);
    for (int k = 0; k < N; k++) {
        uint8_t raw[16], d2u[16];
        pb_md5_buffer(bufs[k], sizes[k], raw);
        dos2unix_ref(bufs[k], sizes[k], d2u);
        CHECK(files[2 * k].status == PB_OK && files[2 * k].size == sizes[k]);
        CHECK(memcmp(files[2 * k].digest, raw, 16) == 0);
        CHECK(files[2 * k + 1].status == PB_OK && files[2 * k + 1].size == sizes[k]);
        CHECK(memcmp(files[2 * k + 1].digest, d2u, 16) == 0);
        CHECK(sizes[k] < 100 || memcmp(raw, d2u, 16) != 0); /* CRLFs were dropped */
        unlink(paths[k]);
        free(paths[k]);
        free(bufs[k]);
    }
    CHECK(files[2 * N].status == PB_ERR_IO && files[2 * N].err == ENOENT);
    CHECK(files[2 * N + 1].status == PB_ERR_NOT_REGULAR);

    /* binary: a NUL in the first 512 bytes leaves CRLF alone */
    uint8_t bin[600];
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = i == 3 ? 0 : (i % 2 ? '\n' : '\r');
    char *bpath = write_tmp(dir, "bin", bin, sizeof bin);
    pb_md5_file b = {.path = bpath, .flags = PB_MD5_DOS2UNIX};
    uint8_t raw[16];
    pb_md5_buffer(bin, sizeof bin, raw);
    CHECK(pb_md5_files(&b, 1, 1) == 0 && memcmp(b.digest, raw, 16) == 0);
    unlink(bpath);
    free(bpath);
}

int main(void)
{
    char dir[] = "/tmp/pivotbuild-md5-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_rfc_suite();
    test_files(dir);
    rmdir(dir);
    printf("ok: %d failure(s)\n", failures);
    return failures != 0;
}
