/* pb_xxh_sse2.c -- XXH3-128 for the x86-64 baseline (or any other CPU). */
#define PB_VARIANT sse2
#define PB_VARIANT_NAME "sse2"
#include "pb_xxh_variant.h"
