/* pb_internal.h -- what the core's .c files share and Python never sees:
 * path limits and the per-instruction-set XXH3 entry points (the dispatch
 * between them is in pb_hash.c). The thread pool's part is pb_pool.h. */
#ifndef PB_INTERNAL_H
#define PB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Linux's limits: a path the kernel takes is at most PB_PATH_MAX bytes with
 * its NUL (so 4095 without), one name at most PB_NAME_MAX bytes. */
#define PB_PATH_MAX 4096
#define PB_NAME_MAX 255

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
