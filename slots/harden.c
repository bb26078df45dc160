/* harden.c (slots/): the block layer's part of the hardened build (see
 * harden.h): per-block keys, the shuffled order of fresh slots, the check of
 * a remote-list slot, the guard pages. Compiled to nothing in the default
 * build. */
#include "harden.h"

#ifdef SMI_HARDENED
#include <linux/membarrier.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/* ---- the owner's restartable sequence (see alloc/harden.h) ---- */

/* glibc's (2.35 on): where each thread's struct rseq is, from the thread
 * pointer; weak, so that an older glibc leaves it unset. */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));
/* A thread-local stand-in with the layout of struct rseq's first fields: its
 * cpu_id reads -1 ("not registered"), so the owner's free takes the
 * compare-and-swap; the sequence's descriptor store lands here, harmless. */
static __thread struct {
  uint32_t cpu_id_start, cpu_id;
  uint64_t rseq_cs;
} fake_rseq = {0, UINT32_MAX, 0};
intptr_t smi_hd_rseq_off;
static _Atomic int rseq_state; /* 0: not yet looked at, 1: usable, 2: not */

static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

/* Once, before the first block is cut: restartable sequences are usable if
 * glibc registered its rseq area and the kernel lets this process ask for
 * membarrier's rseq restart (registered here; a fork child inherits it). */
static bool rseq_usable(void) {
  int st = atomic_load_explicit(&rseq_state, memory_order_acquire);
  if (__builtin_expect(st != 0, 1)) return st == 1;
  bool ok = &__rseq_offset != NULL && &__rseq_size != NULL && __rseq_size >= 20 &&
            membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ) == 0;
  smi_hd_rseq_off =
      ok ? (intptr_t)__rseq_offset : (intptr_t)((char *)&fake_rseq - (char *)__builtin_thread_pointer());
  atomic_store_explicit(&rseq_state, ok ? 1 : 2, memory_order_release);
  return ok;
}

void smi_hd_share_slow(smi_hd_head_t *h) {
  uint16_t none = SMI_HD_PRIVATE;
  __atomic_compare_exchange_n(&h->shared, &none, SMI_HD_ARMING, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
  /* Every thread that sees the block not yet shared waits for its own barrier
   * (none waits for another's: a signal handler's free may interrupt the
   * arming thread). Registered at start-up: cannot fail (if it did, a block is
   * shared from its cut, rseq_usable false). */
  if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) != 0) {
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ);
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ);
  }
  __atomic_store_n(&h->shared, SMI_HD_SHARED, __ATOMIC_RELEASE);
}

void smi_hd_block_cut(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  /* shared only grows: a free under way from before the cut stays covered */
  uint16_t shared = rseq_usable() ? __atomic_load_n(&h->shared, __ATOMIC_RELAXED) : SMI_HD_SHARED;
  memset(h, 0, sizeof *h);
  h->shared = shared;
  h->key_next = smi_hd_random() & ~(uint64_t)15; /* the low 4 bits: a remote link's mark reads through */
  h->canary = (uint32_t)smi_hd_random();
}

/* (segment.c then puts every slot below bump on the freelist, both words
 * written) */
void smi_hd_block_reopen(smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  h->pending = h->short_at = NULL;
  h->span = (uint64_t)b->nslots * b->size;
}

static uint32_t next_random(uint32_t *state) { /* xorshift32 */
  uint32_t x = *state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *state = x;
}

smi_free_t *smi_hd_extend(smi_block_t *b, uint8_t *first, uint32_t take) {
  smi_hd_head(b)->span = (uint64_t)b->nslots * b->size; /* (nslots is not set yet when the block is cut) */
  uint16_t order[4096 / 16];                            /* take <= 4096 / 16 (a page worth of slots, at least one) */
  uint32_t state = (uint32_t)smi_hd_random() | 1;
  if (take > sizeof order / sizeof *order) take = sizeof order / sizeof *order;
  for (uint32_t i = 0; i < take; i++) order[i] = (uint16_t)i;
  for (uint32_t i = take; i > 1; i--) {                                 /* Fisher-Yates */
    uint32_t j = (uint32_t)(((uint64_t)next_random(&state) * i) >> 32); /* in [0, i), no division */
    uint16_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
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

void smi_hd_guard_segment(smi_segment_t *seg) {
  for (uint32_t i = 0; i < seg->nblocks; i++) {
    smi_block_t *b = &seg->blocks[i];
    smi_os_guard(smi_block_base(b) + smi_block_span(b) - SMI_HD_GUARD, SMI_HD_GUARD);
  }
}
#endif
