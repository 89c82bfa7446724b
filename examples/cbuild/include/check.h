/* check.h -- the CHECK macro of the self-test (only selftest.c includes it). */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>

/* Prints "ok   EXPR" or "FAIL EXPR" and counts failures in the caller's `failures`. */
#define CHECK(expr)                                         \
    do {                                                    \
        if (!(expr)) {                                      \
            printf("FAIL %s\n", #expr);                     \
            failures++;                                     \
        } else {                                            \
            printf("ok   %s\n", #expr);                     \
        }                                                   \
    } while (0)

#endif
