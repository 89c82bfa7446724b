/* pb_internal.h -- what the core's .c files share and Python never sees:
 * the per-instruction-set XXH3 entry points and the dispatch table. */
#ifndef PB_INTERNAL_H
#define PB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Room for an XXH3_state_t (576 bytes, 64-byte aligned in xxHash 0.8). Each
 * variant file checks at compile time that its state fits. */
typedef struct {
    _Alignas(64) unsigned char bytes[640];
} pb_xxh_state;

typedef struct {
    const char *name;
    void (*oneshot)(const void *data, size_t len, uint8_t *out);
    void (*reset)(pb_xxh_state *s);
    void (*update)(pb_xxh_state *s, const void *data, size_t len);
    void (*digest)(const pb_xxh_state *s, uint8_t *out);
} pb_xxh_impl;

extern const pb_xxh_impl pb_xxh_sse2;
extern const pb_xxh_impl pb_xxh_avx2;
extern const pb_xxh_impl pb_xxh_avx512;

/* The implementation chosen for this CPU (or forced by pb_set_simd). */
const pb_xxh_impl *pb_xxh(void);

#endif
