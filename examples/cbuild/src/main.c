/* main.c -- `calc --self-test`, or the primes below a bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "calc.h"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--self-test") == 0) {
        int failures = calc_self_test();
        printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
        return failures ? 1 : 0;
    }
    long bound = argc > 1 ? atol(argv[1]) : 30;
    for (long n = 2; n < bound; n++)
        if (calc_is_prime(n))
            printf("%ld\n", n);
    return 0;
}
