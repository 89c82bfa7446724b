/* calc.h -- the little library the example program is built from. */
#ifndef CALC_H
#define CALC_H

long calc_gcd(long a, long b);
long calc_fib(int n);
int calc_is_prime(long n);
int calc_self_test(void);

#endif
