/* pb_xxh_avx2.c -- XXH3-128 compiled for AVX2 (used only where the CPU has it). */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2")
#endif
#define PB_VARIANT avx2
#define PB_VARIANT_NAME "avx2"
#include "pb_xxh_variant.h"
