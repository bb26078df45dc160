/* harden.c (slots/): the block layer's part of the hardened build (see
 * harden.h): per-block keys, the shuffled order of fresh slots, the check of
 * a remote-list slot, the guard pages. Compiled to nothing in the default
 * build. */
#include "harden.h"

#ifdef SMI_HARDENED
#include <stdatomic.h>
#include <string.h>

#include "generation.h"
#include "os.h"

static _Atomic uint64_t stream; /* splitmix64's counter, seeded from the kernel */

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

uint64_t smi_hd_random(void) {
  uint64_t s = atomic_load_explicit(&stream, memory_order_relaxed);
  if (__builtin_expect(!s, 0)) {
    uint64_t seed = 0;
    if (!smi_os_random(&seed, sizeof seed)) seed = (uint64_t)(uintptr_t)&seed ^ smi_now_ms() * 0x9e3779b97f4a7c15u;
    seed |= 1;
    atomic_compare_exchange_strong_explicit(&stream, &s, seed, memory_order_relaxed, memory_order_relaxed);
  }
  return mix(atomic_fetch_add_explicit(&stream, 0x9e3779b97f4a7c15u, memory_order_relaxed));
}

void smi_hd_block_cut(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  memset(h, 0, sizeof *h);
  h->key_next = smi_hd_random() & ~(uint64_t)15; /* the low 4 bits: a remote link's mark reads through */
  h->key_gen = smi_hd_random();
  uint64_t r = smi_hd_random();
  h->rng = r | 1;
  h->canary = (uint32_t)(r >> 32);
}

/* Free slots' heads zeroed, as a freed slot's is (SMI_HD_WIPE bytes): not
 * more, so that the pages of a big slot are not touched before the program
 * touches them. */
static void zero_heads(const smi_block_t *b, uint8_t *first, uint32_t n) {
  size_t len = b->size < SMI_HD_WIPE ? b->size : SMI_HD_WIPE;
  if (len == b->size) memset(first, 0, (size_t)n * b->size);
  else
    for (uint32_t i = 0; i < n; i++) memset(first + (size_t)i * b->size, 0, len);
}

void smi_hd_block_reopen(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  memset(h->ring, 0, sizeof h->ring);
  h->qpos = 0;
  zero_heads(b, b->start, b->bump); /* every slot free, zeroed as a freed one is */
}

static uint64_t next_random(smi_hd_head_t *h) { /* xorshift64 */
  uint64_t x = h->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return h->rng = x;
}

smi_free_t *smi_hd_extend(smi_block_t *b, uint8_t *first, uint32_t take) {
  smi_hd_head_t *h = smi_hd_head(b);
  uint16_t order[4096 / 16]; /* take <= 4096 / 16 (a page worth of slots, at least one) */
  if (take > sizeof order / sizeof *order) take = sizeof order / sizeof *order;
  for (uint32_t i = 0; i < take; i++) order[i] = (uint16_t)i;
  for (uint32_t i = take; i > 1; i--) {                          /* Fisher-Yates */
    uint32_t j = (uint32_t)(((next_random(h) >> 32) * i) >> 32); /* in [0, i), no division */
    uint16_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  zero_heads(b, first, take);
  uintptr_t next = (uintptr_t)b->free;
  for (uint32_t k = take; k-- > 0;) {
    uint32_t i = order[k];
    smi_free_t *f = (smi_free_t *)(first + (size_t)i * b->size);
    f->next = smi_link_enc(b, f, next);
    f->gen = smi_gen_enc(b, &b->gens[b->bump + i]);
    next = (uintptr_t)f;
  }
  return (smi_free_t *)next;
}

bool smi_hd_remote_ok(const smi_block_t *b, const void *slot) {
  size_t i;
  if (smi_slot_at((uintptr_t)slot, b->start, b->magic, b->nslots, &i) && !(b->gens[i] & 1) &&
      (uintptr_t)((const smi_free_t *)slot)->gen == (uintptr_t)smi_gen_enc(b, &b->gens[i]))
    return true;
  smi_hd_report_list(b, slot);
  return false;
}

void smi_hd_guard_segment(smi_segment_t *seg) {
  for (uint32_t i = 0; i < seg->nblocks; i++) {
    smi_block_t *b = &seg->blocks[i];
    smi_os_guard(smi_block_base(b) + smi_block_span(b) - SMI_HD_GUARD, SMI_HD_GUARD);
  }
}
#endif
