/* pb_xxh_avx512.c -- XXH3-128 compiled for AVX-512 (used only where the CPU has it). */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx2")
#endif
#define PB_VARIANT avx512
#define PB_VARIANT_NAME "avx512"
#include "pb_xxh_variant.h"
