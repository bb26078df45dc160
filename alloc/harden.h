/* harden.h (alloc/): the arena layer's part of the hardened build
 * (-DSLOTMALLOC_HARDENED=ON, SMI_HARDENED); the block layer's part (encoded
 * links, the per-block key, shuffled fresh slots, guard pages) is
 * slots/harden.h. Included by internal.h where the fast paths are: in the
 * hardened build the two fast paths below replace internal.h's; in the
 * default build every hook here is nothing (SMI_HD_TAIL is 0), so the default
 * code is what it was.
 *
 * What a hardened slot holds (S its size, n the bytes asked):
 *   live   [0, n) the object; [n, n+4) the canary; ... zero ...; [S-4, S)
 *          the size record. Both hold r = (n + SMI_HD_TAIL) ^ the block's
 *          random canary word: the record says where the canary is (n + 8
 *          is at most the slot's size: one comparison bounds it), the
 *          canary must equal it.
 *          (Mixing the address in as well bought nothing: whoever reads one
 *          object's canary knows its address.) Every request takes a class of
 *          at least n + SMI_HD_TAIL bytes, so there is always a canary.
 *   freed  its first 16 bytes overwritten, where a dangling pointer's
 *          writes land most (a struct's header: its links, counts, vtable
 *          pointer): its link (encoded) and a zero word (slots/harden.h).
 *          Zeroing 32 bytes and checking 16 past these two cost free a
 *          vector store and both paths a branch on the class; zeroing 256
 *          made lifo and fifo (perf harness) ×1.6 slower.
 * Checks:
 *   free, realloc  the size record and the canary: "heap overflow past the
 *                  end of 0x... (N bytes asked)";
 *   malloc         the popped link (a free slot start of the block:
 *                  "corrupted free list in block 0x... (slot 0x...)") and
 *                  its zero word: "write after free to 0x...";
 *   every free     moves the generation so that of two racing frees one
 *                  always reports the double free: compare-and-swap, or the
 *                  owner's restartable sequence (below).
 * The quarantine: the owner's frees go onto a second list of the block, its
 * pending list (slots/harden.h), not onto the freelist; when the freelist
 * runs dry, the slow path moves the pending slots onto it but the newest
 * SMI_HD_QUARANTINE (smi_hd_unquarantine_old), before it cuts fresh slots
 * (once the block handed out 8 KiB and 32 of them, or 128 KiB: recycles()
 * in alloc/harden.c). So a freed slot is handed out
 * again only after its block's freelist ran dry and at least
 * SMI_HD_QUARANTINE later frees into the block,
 * unless the block has nothing else to give (smi_hd_unquarantine: all of
 * them). A push is two stores, as the default build's free. */
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
/* Requests past the direct bins' reach (SMI_DIRECT_MAX - SMI_HD_TAIL): those
 * up to SMI_DIRECT_MAX pop their class's current block (1152) out of line,
 * not the whole slow path; the rest go to smi_malloc_generic. */
void *smi_hd_malloc_top(sm_arena_t *a, size_t size);
void smi_hd_stamp_slot(void *p, size_t n); /* canary and record of a slot object */
/* Freed slots in b's quarantine (the slow paths' "has room": a block whose
 * freelist is empty serves them, smi_hd_unquarantine). */
static inline bool smi_hd_pending(const smi_block_t *b) { return smi_hd_head(b)->pending != NULL; }
/* A direct bin's block whose freelist ran dry: its pending slots but the
 * newest SMI_HD_QUARANTINE onto it (smi_hd_unquarantine_old), and the pop,
 * without the whole slow path (smi_malloc_generic) unless that fails. */
__attribute__((noinline)) void *smi_hd_malloc_refill(sm_arena_t *a, smi_block_t *b, size_t size);
bool smi_hd_unquarantine(smi_block_t *b);                      /* freelist empty: all the pending slots onto it */
bool smi_hd_unquarantine_old(smi_block_t *b);                  /* freelist empty: the pending ones but the newest 4 */
void smi_hd_unquarantine_tidy(smi_block_t *b);                 /* upkeep's tidy: the same, in front of the freelist */
size_t smi_hd_size_of(const smi_block_t *b, const void *p);    /* bytes asked (canary checked) */
void *smi_hd_restamp(const smi_block_t *b, void *p, size_t n); /* realloc in place */
void smi_hd_check(const smi_block_t *b, const void *p);        /* at a slow-path free: the canary */
/* a remote free: nothing (the caller writes both words, the link and the zero word) */
static inline void smi_hd_release_remote(const smi_block_t *b, void *p) { (void)b, (void)p; }
void smi_hd_release_local(smi_block_t *b, void *p, uint8_t *g); /* a local free: onto the pending list */
bool smi_hd_gen_step(uint8_t *g, uint8_t from);                 /* from -> smi_gen_freed(from), atomically */

/* Live, not at the wrap -> freed, by compare-and-swap (false: not done). */
static inline bool smi_hd_gen_cas(uint8_t *g) {
  uint8_t old = __atomic_load_n(g, __ATOMIC_RELAXED);
  return smi_gen_frees_plainly(old) &&
         __atomic_compare_exchange_n(g, &old, smi_gen_freed(old), false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

static inline uint32_t smi_hd_load32(const uint8_t *q) {
  uint32_t v;
  memcpy(&v, q, 4);
  return v;
}
/* What the canary and the size record of an object of n bytes hold. */
static inline uint32_t smi_hd_tag(const smi_hd_head_t *h, size_t n) {
  return (uint32_t)(n + SMI_HD_TAIL) ^ h->canary;
}
/* A live slot's canary and size record intact? Both hold the same word r =
 * smi_hd_tag (n the bytes asked): the record, at the slot's end, says where
 * the canary is; the canary, right past the object, must match it. (A bad
 * record's e below SMI_HD_TAIL reads up to 8 bytes before the slot, still in
 * the block: the generation table precedes the first slot.) */
static inline bool smi_hd_canary_ok(const smi_block_t *b, const smi_hd_head_t *h, uintptr_t u) {
  const uint8_t *q = (const uint8_t *)u;
  size_t size = b->size;
  uint32_t r = smi_hd_load32(q + size - 4), e = r ^ h->canary; /* e: n + SMI_HD_TAIL */
  return e <= size && smi_hd_load32(q + e - SMI_HD_TAIL) == r;
}
static inline void smi_hd_stamp(const smi_block_t *b, const smi_hd_head_t *h, void *p, size_t n) {
  uint8_t *q = p;
  uint32_t r = smi_hd_tag(h, n);
  memcpy(q + n, &r, 4);
  memcpy(q + b->size - 4, &r, 4);
}
/* Onto the pending list (the quarantine): the slot's link and zero word
 * (the list's head and key passed in: loaded before the slot's stores, which
 * the compiler cannot tell from stores to the head). */
static inline void smi_hd_pend(smi_hd_head_t *h, void *p, smi_free_t *pending, uint64_t key_next) {
  uint64_t *w = p;
  w[0] = (uintptr_t)pending ^ key_next;
  w[1] = 0;
  h->pending = p;
}

/* The hardened allocation fast path's pop (smi_malloc's, and
 * smi_hd_malloc_top's for the requests past the direct bins): p, b's first
 * free slot, is checked (a free slot start of the block before it is read,
 * then its zero word); its link word is cleared, the canary and the size
 * record of an object of size bytes written. */
static inline void *smi_hd_take(smi_block_t *b, smi_free_t *p, size_t size) {
  /* smi_hd_slot_of, bounded by the slots' span, not by nslots: two
   * instructions fewer */
  uintptr_t off = (uintptr_t)p - (uintptr_t)b->start;
  smi_hd_head_t *h = smi_hd_head(b);
  if (smi_unlikely(off >= h->span)) return smi_hd_pop_fail(b, p, size);
  uint64_t low, i, *w = (uint64_t *)p;
#if defined(__x86_64__) /* (the magic from memory, for the multiplication and the comparison) */
  __asm__("mulq %[magic]" : "=a"(low), "=d"(i) : "0"(off), [magic] "m"(b->magic) : "cc");
#else
  unsigned __int128 m = (unsigned __int128)off * b->magic;
  low = (uint64_t)m, i = (uint64_t)(m >> 64);
#endif
  uint8_t *g = b->gens + i; /* (its table read after the multiplication: no register held across it) */
  if (smi_unlikely(low >= b->magic || smi_gen_is_live(*g) || w[1])) return smi_hd_pop_fail(b, p, size);
  size_t slot = b->size;
  uint32_t r = smi_hd_tag(h, size);
  b->free = (smi_free_t *)(w[0] ^ h->key_next);
  w[0] = 0;
  b->used++;
  smi_gen_make_live(g);
  memcpy((uint8_t *)p + size, &r, 4); /* the canary and the size record (smi_hd_stamp) */
  memcpy((uint8_t *)p + slot - 4, &r, 4);
  return p;
}

static inline void *smi_malloc(size_t size) {
  sm_arena_t *a = smi_tls_cur;
  if (smi_likely(size <= SMI_DIRECT_MAX - SMI_HD_TAIL)) {
    smi_block_t *b = a->direct[(size + SMI_HD_TAIL + 15) >> 4];
    smi_free_t *p = b->free;
    if (smi_likely(p != NULL)) return smi_hd_take(b, p, size);
    return smi_hd_malloc_refill(a, b, size);
  }
  return smi_hd_malloc_top(a, size);
}

/* ---- the owner's free without a locked instruction ---------------------------
 * The promise: when two threads free one live object at once, one of them
 * reports the double free. Threads other than the block's owner move a
 * generation by compare-and-swap (free.c), so two of them cannot both win.
 * The owner would need a locked instruction too (a plain load and store can
 * straddle another thread's compare-and-swap, and both frees then "win"),
 * which costs more than the rest of the free. So, per block, h->shared:
 *
 *   the owner   if h->shared != PRIVATE: compare-and-swap, as the others.
 *               else, inside a restartable sequence (rseq, registered by
 *               glibc for each thread): [load h->shared, != PRIVATE: abort
 *               to the compare-and-swap; add SMI_GEN_FREE_ADD to the
 *               generation in memory, as the default build's free] — the
 *               add commits it (one instruction: the kernel stops a thread
 *               before or after it). The kernel restarts the sequence at its
 *               abort handler (the compare-and-swap) if the thread is
 *               preempted, takes a signal, or is hit by membarrier's rseq
 *               restart while inside it.
 *   the others  before their compare-and-swap, if h->shared != SHARED (once a
 *               block, smi_hd_share): h->shared >= ARMING (an atomic store),
 *               then membarrier(PRIVATE_EXPEDITED_RSEQ), then h->shared =
 *               SHARED (release); the compare-and-swap comes after.
 *
 * Proof that an owner free O and another thread's free R of one live object,
 * at once, cannot both succeed. R's compare-and-swap runs after a membarrier M
 * that began after h->shared >= ARMING was visible (R's own, or that of the
 * thread that stored SHARED, which R read with acquire). M interrupts every
 * CPU running a thread of the process, with a full barrier there, and
 * restarts a sequence it interrupts; a thread not running passes a barrier
 * (and a restart, if inside the sequence) when it runs again. Take O's
 * sequence, which runs on one CPU:
 *   - it committed before M reached O's thread: its add (its load and its
 *     store) was done and drained by that barrier, before M returned, so
 *     before R's compare-and-swap, which then reads a free generation (or,
 *     on ABA, a newer object's) and R reports;
 *   - M reached O's thread inside it: restarted, O takes the compare-and-swap,
 *     and of two compare-and-swaps one loses and reports;
 *   - it began after M reached O's thread: its load reads h->shared >= ARMING
 *     (stored before M began) and O takes the compare-and-swap.
 * An add that did not free (the slot was free: R won, or a plain double free;
 * or the wrap) leaves its sum, which smi_free_undo takes back by
 * compare-and-swap (as the default build's smi_free_undo).
 * A thread whose rseq is not registered (cpu_id < 0: glibc did not or could
 * not, valgrind) and a process where membarrier's rseq command is missing
 * (every block then SHARED from its cut) always take the compare-and-swap.
 * The cost: one membarrier per block the first time another thread frees into
 * it; h->shared never goes back (a cut keeps it). */
#if defined(__x86_64__)
#define SMI_HD_RSEQ_SIG "0x53053053" /* glibc's RSEQ_SIG on x86: the 4 bytes before the abort handler */
/* Free's smi_slot_at: u (inside b, found by its page) starts slot *i. The
 * quotient of a 32-bit offset is below 2^32: nslots compared in memory, as
 * the magic (the default build's smi_slot_gen has no bound: its table covers
 * the block; here the head and the table come first). */
static inline bool smi_hd_slot_at(const smi_block_t *b, uintptr_t u, size_t *i) {
  uint64_t low, high;
  smi_slot_product(b, u, &low, &high);
  *i = high;
  return low < b->magic && (uint32_t)high < b->nslots;
}

/* Adds SMI_GEN_FREE_ADD to *g in the owner's restartable sequence: 1 freed;
 * 0 not done (the block is shared, the thread has no rseq, or the sequence
 * was aborted): the caller takes the compare-and-swap; -1 the add did not
 * free (see smi_free_undo). */
static inline int smi_hd_gen_add(const smi_hd_head_t *h, uint8_t *g) {
  __asm__ goto(".pushsection __rseq_cs, \"aw\"\n\t"
               ".balign 32\n"
               "3:\n\t"
               ".long 0, 0\n\t"            /* version, flags */
               ".quad 1f, 2f - 1f, 4f\n\t" /* start, post-commit offset, abort */
               ".popsection\n\t"
               "cmpl $0, %%fs:4(%[off])\n\t" /* cpu_id < 0: not registered */
               "js %l[cas]\n\t"
               "leaq 3b(%%rip), %%rax\n\t"
               "movq %%rax, %%fs:8(%[off])\n" /* rseq_cs: the sequence starts */
               "1:\n\t"
               "cmpw $0, %[shared]\n\t"
               "jne %l[cas]\n\t"
               "addb %[add], %[gen]\n" /* the commit */
               "2:\n\t"
               "jno %l[undo]\n\t" /* (after the sequence) no signed overflow: not freed */
               ".pushsection .text.unlikely, \"ax\"\n\t"
               ".long " SMI_HD_RSEQ_SIG "\n"
               "4:\n\t"
               "jmp %l[cas]\n\t"
               ".popsection"
               : [gen] "+m"(*g)
               : [off] "r"(smi_hd_rseq_off), [shared] "m"(h->shared), [add] "i"(SMI_GEN_FREE_ADD)
               : "rax", "cc"
               : cas, undo);
  return 1;
cas:
  return 0;
undo:
  return -1;
}
#else
static inline int smi_hd_gen_add(const smi_hd_head_t *h, uint8_t *g) {
  (void)h, (void)g;
  return 0;
}
#endif

/* The hardened free fast path: the default one's checks, then the canary,
 * then the generation (see above); the slot goes onto the pending list.
 * Anything else falls to smi_free_slow, which reports. */
static inline void smi_free(void *p) {
  uintptr_t u = (uintptr_t)p, span = u >> SMI_SEG_SHIFT;
  if (smi_likely(smi_segmap[span] == SMI_MAP_SLOTS)) {
    smi_block_t *b = smi_block_at_span(span, u); /* (as internal.h's smi_free) */
    /* (acquire: another thread's reclaim wrote the block's free list and count,
     * then handed the block back with a release store of owner; on x86 a plain
     * load still) */
    if (smi_likely(__atomic_load_n(&b->owner, __ATOMIC_ACQUIRE) == smi_tls_cur)) {
      size_t i;
      if (smi_likely(smi_hd_slot_at(b, u, &i))) {
        uint8_t *g = &b->gens[i];
        smi_hd_head_t *h = smi_hd_head(b);
        /* (a free slot's record and canary may read right: its generation
         * is what tells, next; all reads stay inside the slot) */
        if (smi_likely(smi_hd_canary_ok(b, h, u))) {
          int freed = smi_hd_gen_add(h, g);
          if (smi_likely(freed > 0) || (freed == 0 && smi_hd_gen_cas(g))) {
            smi_hd_pend(h, p, h->pending, h->key_next);
            if (smi_unlikely(--b->used == 0)) smi_block_emptied(b); /* never the current block: pinned */
            return;
          }
          if (freed < 0) {
            smi_free_undo(p, g);
            return;
          }
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
static inline bool smi_hd_unquarantine_old(smi_block_t *b) {
  (void)b;
  return false;
}
static inline bool smi_hd_pending(const smi_block_t *b) {
  (void)b;
  return false;
}
static inline void smi_hd_unquarantine_tidy(smi_block_t *b) { (void)b; }
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
  __atomic_store_n(g, smi_gen_freed(from), __ATOMIC_RELAXED);
  return true;
}
#endif

#endif
