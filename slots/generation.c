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
    if (g & 1) {
      __atomic_store_n(&gens[i], (uint8_t)(g + 1), __ATOMIC_RELAXED);
      live++;
    }
  }
  return live;
}

size_t smi_gens_count_live(const uint8_t *gens, size_t n) {
  size_t live = 0;
  for (size_t i = 0; i < n; i++) live += __atomic_load_n(&gens[i], __ATOMIC_RELAXED) & 1;
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

static const v16u8 ones = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

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
      v16u8 odd = v[i] & ones; /* 1 where live */
      v[i] += odd;             /* live -> the next generation: even, free, stale */
      acc += odd;
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
    for (; i < stop; i++) acc += v[i] & ones;
    live += lanes_sum(acc);
  }
  return live;
}

void smi_gens_fresh(uint8_t *gens, size_t n) {
  v16u8 *v = (v16u8 *)__builtin_assume_aligned(gens, 16);
  const v16u8 low = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const v16u8 high = low + 32;
  for (size_t i = 0; i < n / 16; i++) v[i] = i & 1 ? high : low;
}

void smi_gens_clear(uint8_t *gens, size_t n) {
  v16u8 *v = (v16u8 *)__builtin_assume_aligned(gens, 16);
  for (size_t i = 0; i < n / 16; i++) v[i] = (v16u8){0};
}

#endif
