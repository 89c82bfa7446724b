/* selftest.c -- checks every function against known answers. */
#include "calc.h"
#include "check.h"

int calc_self_test(void)
{
    int failures = 0;
    CHECK(calc_gcd(12, 18) == 6);
    CHECK(calc_gcd(17, 5) == 1);
    CHECK(calc_fib(10) == 55);
    CHECK(calc_fib(50) == 12586269025L);
    CHECK(calc_is_prime(97));
    CHECK(!calc_is_prime(91));
    return failures;
}
