/* pb_xxh_variant.h -- one XXH3-128 implementation compiled for one x86
 * instruction set. Included by pb_xxh_sse2.c, pb_xxh_avx2.c and
 * pb_xxh_avx512.c after they set PB_VARIANT (and the matching GCC target).
 *
 * Why: XXH_INLINE_ALL picks its vector code from the compiler's target flags,
 * so a default build only ever runs SSE2. Compiling the inline xxHash once per
 * instruction set, each in its own translation unit, and choosing at run time
 * (pb_xxh() in pb_hash.c) gives AVX2/AVX-512 where the CPU has them without
 * making the whole extension require them. */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "pb_internal.h"

_Static_assert(sizeof(XXH3_state_t) <= sizeof(pb_xxh_state), "XXH3 state does not fit");

#define PB_CAT2(a, b) a##b
#define PB_CAT(a, b) PB_CAT2(a, b)
#define PB_FN(name) PB_CAT(PB_CAT(pb_xxh_, name), PB_CAT(_, PB_VARIANT))

static void PB_FN(oneshot)(const void *data, size_t len, uint8_t *out)
{
    XXH128_canonicalFromHash((XXH128_canonical_t *)out, XXH3_128bits(data, len));
}

static void PB_FN(reset)(pb_xxh_state *s)
{
    XXH3_128bits_reset((XXH3_state_t *)s);
}

static void PB_FN(update)(pb_xxh_state *s, const void *data, size_t len)
{
    XXH3_128bits_update((XXH3_state_t *)s, data, len);
}

static void PB_FN(digest)(const pb_xxh_state *s, uint8_t *out)
{
    XXH128_canonicalFromHash((XXH128_canonical_t *)out,
                             XXH3_128bits_digest((const XXH3_state_t *)s));
}

const pb_xxh_impl PB_CAT(pb_xxh_, PB_VARIANT) = {
    PB_VARIANT_NAME, PB_FN(oneshot), PB_FN(reset), PB_FN(update), PB_FN(digest),
};
