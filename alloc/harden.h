/* harden.h (alloc/): the arena layer's part of the hardened build
 * (-DSLOTMALLOC_HARDENED=ON, SMI_HARDENED); the block layer's part (encoded
 * links, per-block keys, shuffled fresh slots, guard pages) is
 * slots/harden.h. Included by internal.h where the fast paths are: in the
 * hardened build the two fast paths below replace internal.h's; in the
 * default build every hook here is nothing (SMI_HD_TAIL is 0), so the default
 * code is what it was.
 *
 * What a hardened slot holds (S its size, n the bytes asked):
 *   live   [0, n) the object; [n, n+4) the canary (the block's canary word
 *          mixed with the address); ... zero ...; [S-4, S) the size record
 *          (n mixed with the canary word). Every request takes a class of at
 *          least n + SMI_HD_TAIL bytes, so there is always a canary.
 *   freed  zeroed (its first SMI_HD_WIPE bytes: all of a slot of 256 bytes
 *          or less, the head of a bigger one, where a dangling pointer's
 *          fields most often are), then its gen word (encoded) and,
 *          once out of the quarantine, its link (encoded).
 * Checks:
 *   free, realloc  the size record and the canary: "heap overflow past the
 *                  end of 0x... (N bytes asked)";
 *   malloc         the popped link (a free slot start of the block, gen word
 *                  right: "corrupted free list in block 0x... (slot 0x...)")
 *                  and the sample word at offset 16, which a freed slot has
 *                  zero: "write after free to 0x...";
 *   every free     moves the generation by compare-and-swap (on the owner's
 *                  thread too): of two racing frees one loses and reports
 *                  the double free.
 * The quarantine: a block holds its last SMI_HD_QUARANTINE locally freed slots
 * back (a ring in its head, slots/harden.h); each free puts the oldest on the
 * freelist. A block with nothing else to give takes them back at once. */
#ifndef SMI_ALLOC_HARDEN_H
#define SMI_ALLOC_HARDEN_H

#include <string.h>

#include "slots/harden.h"

#ifdef SMI_HARDENED
#define SMI_HD_TAIL ((size_t)8) /* bytes past every request: canary and size record */

/* ---- slow parts (harden.c) ---- */
SMI_COLD void *smi_hd_pop_fail(smi_block_t *b, smi_free_t *p, size_t size);
SMI_COLD void smi_hd_overflow(const smi_block_t *b, const void *p); /* reports the overflow found */
void *smi_hd_pop(smi_block_t *b);                                   /* the slow paths' pop: NULL (reported) if bad */
void smi_hd_stamp_slot(void *p, size_t n);                          /* canary and record of a slot object */
bool smi_hd_unquarantine(smi_block_t *b);                           /* the quarantine onto the freelist */
size_t smi_hd_size_of(const smi_block_t *b, const void *p);         /* bytes asked (canary checked) */
void *smi_hd_restamp(const smi_block_t *b, void *p, size_t n);      /* realloc in place */
void smi_hd_check(const smi_block_t *b, const void *p);             /* at a slow-path free: the canary */
void smi_hd_release_remote(const smi_block_t *b, void *p);          /* a remote free: wiped */
void smi_hd_release_local(smi_block_t *b, void *p, uint8_t *g);     /* a local free: wiped, quarantined */
bool smi_hd_gen_step(uint8_t *g, uint8_t from);                     /* from -> from + 1, atomically */

static inline uint32_t smi_hd_canary_at(const smi_hd_head_t *h, uintptr_t u) {
  return h->canary ^ (uint32_t)(u >> 4);
}
static inline uint32_t smi_hd_load32(const uint8_t *q) {
  uint32_t v;
  memcpy(&v, q, 4);
  return v;
}
/* A live slot's canary and size record intact? */
static inline bool smi_hd_canary_ok(const smi_block_t *b, const smi_hd_head_t *h, uintptr_t u) {
  const uint8_t *q = (const uint8_t *)u;
  uint32_t n = smi_hd_load32(q + b->size - 4) ^ h->canary;
  return n <= b->size - SMI_HD_TAIL && smi_hd_load32(q + n) == smi_hd_canary_at(h, u);
}
static inline void smi_hd_stamp(const smi_block_t *b, const smi_hd_head_t *h, void *p, size_t n) {
  uint8_t *q = p;
  uint32_t c = smi_hd_canary_at(h, (uintptr_t)p), r = (uint32_t)n ^ h->canary;
  memcpy(q + n, &c, 4);
  memcpy(q + b->size - 4, &r, 4);
}
void smi_hd_zero(void *p, size_t len); /* memset, called (never expanded inline) */
/* A freed slot: zeroed (its first SMI_HD_WIPE bytes), its gen word written;
 * by 16-byte stores in line (the compiler's memset, rep stos, costs more than
 * the rest of the free). */
static inline void smi_hd_wipe(const smi_block_t *b, void *p, uint8_t *g) {
  typedef uint64_t v2 __attribute__((vector_size(16), aligned(16)));
  size_t n = (b->size < SMI_HD_WIPE ? b->size : SMI_HD_WIPE) / 16; /* sizes are multiples of 16 */
  v2 *q = p;
  for (; n >= 4; n -= 4, q += 4) {
    q[0] = q[1] = q[2] = q[3] = (v2){0, 0};
    __asm__("" : "+r"(q)); /* not turned back into memset (rep stos costs more) */
  }
  for (; n; n--, q++) {
    *q = (v2){0, 0};
    __asm__("" : "+r"(q));
  }
  ((smi_free_t *)p)->gen = smi_gen_enc(b, g);
}
/* Into the quarantine; the oldest slot there goes onto the freelist. */
static inline void smi_hd_quarantine(smi_block_t *b, smi_hd_head_t *h, smi_free_t *p) {
  uint32_t k = h->qpos;
  smi_free_t *e = h->ring[k];
  h->ring[k] = p;
  h->qpos = (k + 1) & (SMI_HD_QUARANTINE - 1);
  if (e) {
    e->next = smi_link_enc(b, e, (uintptr_t)b->free);
    b->free = e;
  }
}

/* The hardened allocation fast path: the popped slot is checked before it is
 * read (a slot start of the block), then its gen word and generation, then
 * the sample word; its two link words are cleared, the canary and the size
 * record written. */
static inline void *smi_malloc(size_t size) {
  sm_arena_t *a = smi_tls_cur;
  if (smi_likely(size <= SMI_DIRECT_MAX - SMI_HD_TAIL)) {
    smi_block_t *b = a->direct[(size + SMI_HD_TAIL + 15) >> 4];
    smi_free_t *p = b->free;
    if (smi_likely(p != NULL)) {
      uintptr_t u = (uintptr_t)p;
      size_t i;
      if (smi_unlikely(!smi_slot_at(u, b->start, b->magic, b->nslots, &i))) return smi_hd_pop_fail(b, p, size);
      smi_hd_head_t *h = smi_hd_head(b);
      uint8_t *g = &b->gens[i];
      uint64_t *w = (uint64_t *)p;
      if (smi_unlikely((w[1] ^ h->key_gen) != (uintptr_t)g || (*g & 1) || (b->size > 16 && w[2])))
        return smi_hd_pop_fail(b, p, size);
      b->free = (smi_free_t *)(w[0] ^ h->key_next ^ u);
      w[0] = 0;
      w[1] = 0;
      b->used++;
      smi_gen_make_live(g);
      smi_hd_stamp(b, h, p, size);
      return p;
    }
  }
  return smi_malloc_generic(a, size, false);
}

/* The hardened free fast path: the default one's checks, then the canary,
 * then the generation by compare-and-swap; the slot is wiped and quarantined.
 * Anything else falls to smi_free_slow, which reports. */
static inline void smi_free(void *p) {
  uintptr_t u = (uintptr_t)p, span = u >> SMI_SEG_SHIFT;
  if (smi_likely(smi_segmap[span] == SMI_MAP_SLOTS)) {
    smi_block_t *b = smi_block_at((smi_segment_t *)(span << SMI_SEG_SHIFT), u);
    if (smi_likely(__atomic_load_n(&b->owner, __ATOMIC_RELAXED) == smi_tls_cur)) {
      size_t i;
      if (smi_likely(smi_slot_at(u, b->start, b->magic, b->nslots, &i))) {
        uint8_t *g = &b->gens[i];
        uint8_t old = __atomic_load_n(g, __ATOMIC_RELAXED);
        smi_hd_head_t *h = smi_hd_head(b);
        if (smi_likely(!(((unsigned)old + 1) & 0x101)) && smi_likely(smi_hd_canary_ok(b, h, u)) &&
            smi_likely(__atomic_compare_exchange_n(g, &old, (uint8_t)(old + 1), false, __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED))) {
          smi_hd_wipe(b, p, g);
          smi_hd_quarantine(b, h, (smi_free_t *)p);
          if (smi_unlikely(--b->used == 0)) smi_block_emptied(b); /* never the current block: pinned */
          return;
        }
      }
    }
  }
  smi_free_slow(p);
}

/* The alignment slot object p has by its class (for sm_arena_promote, which
 * asks for the request's size, not the slot's). */
static inline size_t smi_hd_slot_align(const void *p) {
  smi_block_t *b = smi_block_of(p);
  size_t align = b ? b->size & -b->size : 16;
  return align > SMI_PAGE_SIZE ? SMI_PAGE_SIZE : align;
}

#else /* the default build: nothing */
static inline size_t smi_hd_slot_align(const void *p) {
  (void)p;
  return 16; /* the slot's size is asked for: its class */
}
#define SMI_HD_TAIL ((size_t)0)
static inline void *smi_hd_pop(smi_block_t *b) {
  (void)b;
  return NULL;
}
static inline void smi_hd_stamp_slot(void *p, size_t n) { (void)p, (void)n; }
static inline bool smi_hd_unquarantine(smi_block_t *b) {
  (void)b;
  return false;
}
static inline size_t smi_hd_size_of(const smi_block_t *b, const void *p) {
  (void)p;
  return b->size;
}
static inline void *smi_hd_restamp(const smi_block_t *b, void *p, size_t n) {
  (void)b, (void)n;
  return p;
}
static inline void smi_hd_check(const smi_block_t *b, const void *p) { (void)b, (void)p; }
static inline void smi_hd_release_remote(const smi_block_t *b, void *p) { (void)b, (void)p; }
static inline void smi_hd_release_local(smi_block_t *b, void *p, uint8_t *g) { (void)b, (void)p, (void)g; }
static inline bool smi_hd_gen_step(uint8_t *g, uint8_t from) {
  __atomic_store_n(g, (uint8_t)(from + 1), __ATOMIC_RELAXED);
  return true;
}
#endif

#endif
