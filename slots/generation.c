/* generation.c: vectorized generation sweeps (GCC vector extensions: SSE2 on x86-64).
 *
 * Other threads read generations without a lock (sm_deref, sm_handle_of) while
 * a sweep rewrites them, and the owner thread writes single generations while
 * statistics count them. That is by design: a 16-byte vector access reads or
 * writes each byte whole, so a racing reader sees a byte's old value or its
 * new one, and both answers are right for it. C11 has no atomic vector access
 * to say so; under ThreadSanitizer the sweeps are per-byte relaxed atomic
 * accesses instead, which say the same thing one byte at a time. */
#include "generation.h"

#if defined(__SANITIZE_THREAD__)
#define SMI_GENS_BYTEWISE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SMI_GENS_BYTEWISE 1
#endif
#endif

#ifdef SMI_GENS_BYTEWISE

size_t smi_gens_close(uint8_t *gens, size_t n) {
  size_t live = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t g = __atomic_load_n(&gens[i], __ATOMIC_RELAXED);
    if (smi_gen_is_live(g)) {
      __atomic_store_n(&gens[i], smi_gen_freed(g), __ATOMIC_RELAXED);
      live++;
    }
  }
  return live;
}

size_t smi_gens_count_live(const uint8_t *gens, size_t n) {
  size_t live = 0;
  for (size_t i = 0; i < n; i++) live += smi_gen_is_live(__atomic_load_n(&gens[i], __ATOMIC_RELAXED));
  return live;
}

void smi_gens_fresh(uint8_t *gens, size_t n) {
  for (size_t i = 0; i < n; i++) __atomic_store_n(&gens[i], smi_gen_fresh(i), __ATOMIC_RELAXED);
}

void smi_gens_clear(uint8_t *gens, size_t n) {
  for (size_t i = 0; i < n; i++) __atomic_store_n(&gens[i], 0, __ATOMIC_RELAXED);
}

#else

typedef uint8_t v16u8 __attribute__((vector_size(16), aligned(16)));

static size_t lanes_sum(v16u8 acc) {
  size_t s = 0;
  for (int i = 0; i < 16; i++) s += acc[i];
  return s;
}

size_t smi_gens_close(uint8_t *gens, size_t n) {
  v16u8 *v = (v16u8 *)__builtin_assume_aligned(gens, 16);
  size_t live = 0, chunks = n / 16;
  for (size_t i = 0; i < chunks;) {
    v16u8 acc = {0};
    size_t stop = i + 255 < chunks ? i + 255 : chunks; /* a lane counts to 255 at most */
    for (; i < stop; i++) {
      v16u8 live = v[i] >> 7;              /* 1 where live */
      v[i] = (v[i] + live) & ~(live << 7); /* live -> free, the count advanced: stale */
      acc += live;
    }
    live += lanes_sum(acc);
  }
  return live;
}

size_t smi_gens_count_live(const uint8_t *gens, size_t n) {
  const v16u8 *v = (const v16u8 *)__builtin_assume_aligned(gens, 16);
  size_t live = 0, chunks = n / 16;
  for (size_t i = 0; i < chunks;) {
    v16u8 acc = {0};
    size_t stop = i + 255 < chunks ? i + 255 : chunks;
    for (; i < stop; i++) acc += v[i] >> 7;
    live += lanes_sum(acc);
  }
  return live;
}

void smi_gens_fresh(uint8_t *gens, size_t n) {
  v16u8 *v = (v16u8 *)__builtin_assume_aligned(gens, 16);
  const v16u8 low = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}; /* smi_gen_fresh */
  const v16u8 high = low + 16;
  for (size_t i = 0; i < n / 16; i++) v[i] = i & 1 ? high : low;
}

void smi_gens_clear(uint8_t *gens, size_t n) {
  v16u8 *v = (v16u8 *)__builtin_assume_aligned(gens, 16);
  for (size_t i = 0; i < n / 16; i++) v[i] = (v16u8){0};
}

#endif
