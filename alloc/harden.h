/* harden.h (alloc/): the arena layer's part of the hardened build
 * (-DSLOTMALLOC_HARDENED=ON, SMI_HARDENED); the block layer's part (encoded
 * links, per-block keys, shuffled fresh slots, guard pages) is
 * slots/harden.h. Included by internal.h where the fast paths are: in the
 * hardened build the two fast paths below replace internal.h's; in the
 * default build every hook here is nothing (SMI_HD_TAIL is 0), so the default
 * code is what it was.
 *
 * What a hardened slot holds (S its size, n the bytes asked):
 *   live   [0, n) the object; [n, n+4) the canary; ... zero ...; [S-4, S)
 *          the size record. Both hold r = n ^ the block's random canary word:
 *          the record says where the canary is, the canary must equal it.
 *          (Mixing the address in as well bought nothing: whoever reads one
 *          object's canary knows its address.) Every request takes a class of
 *          at least n + SMI_HD_TAIL bytes, so there is always a canary.
 *   freed  its first SMI_HD_WIPE (32) bytes zeroed, where a dangling
 *          pointer's writes land most (a struct's header: its links, counts,
 *          vtable pointer); then its gen word (encoded) and, once out of the
 *          quarantine, its link (encoded). Zeroing 256 bytes made lifo and
 *          fifo (perf harness) ×1.6 slower, for bytes no check reads.
 * Checks:
 *   free, realloc  the size record and the canary: "heap overflow past the
 *                  end of 0x... (N bytes asked)";
 *   malloc         the popped link (a free slot start of the block, gen word
 *                  right: "corrupted free list in block 0x... (slot 0x...)")
 *                  and the 16 bytes at offset 16, which a freed slot has
 *                  zero (all of the wiped bytes past the link words):
 *                  "write after free to 0x...";
 *   every free     moves the generation so that of two racing frees one
 *                  always reports the double free: compare-and-swap, or the
 *                  owner's restartable sequence (below).
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
/* Requests past the direct bins' reach (SMI_DIRECT_MAX - SMI_HD_TAIL): those
 * up to SMI_DIRECT_MAX pop their class's current block (1152) out of line,
 * not the whole slow path; the rest go to smi_malloc_generic. */
void *smi_hd_malloc_top(sm_arena_t *a, size_t size);
void smi_hd_stamp_slot(void *p, size_t n);                      /* canary and record of a slot object */
bool smi_hd_unquarantine(smi_block_t *b);                       /* the quarantine onto the freelist */
size_t smi_hd_size_of(const smi_block_t *b, const void *p);     /* bytes asked (canary checked) */
void *smi_hd_restamp(const smi_block_t *b, void *p, size_t n);  /* realloc in place */
void smi_hd_check(const smi_block_t *b, const void *p);         /* at a slow-path free: the canary */
void smi_hd_release_remote(const smi_block_t *b, void *p);      /* a remote free: wiped */
void smi_hd_release_local(smi_block_t *b, void *p, uint8_t *g); /* a local free: wiped, quarantined */
bool smi_hd_gen_step(uint8_t *g, uint8_t from);                 /* from -> smi_gen_freed(from), atomically */

static inline uint32_t smi_hd_load32(const uint8_t *q) {
  uint32_t v;
  memcpy(&v, q, 4);
  return v;
}
/* A live slot's canary and size record intact? Both hold the same word r = n
 * ^ the block's canary (n the bytes asked): the record, at the slot's end,
 * says where the canary is; the canary, right past the object, must match it. */
static inline bool smi_hd_canary_ok(const smi_block_t *b, const smi_hd_head_t *h, uintptr_t u) {
  const uint8_t *q = (const uint8_t *)u;
  size_t size = b->size;
  uint32_t r = smi_hd_load32(q + size - 4), n = r ^ h->canary;
  return n <= size - SMI_HD_TAIL && smi_hd_load32(q + n) == r;
}
static inline void smi_hd_stamp(const smi_block_t *b, const smi_hd_head_t *h, void *p, size_t n) {
  uint8_t *q = p;
  uint32_t r = (uint32_t)n ^ h->canary;
  memcpy(q + n, &r, 4);
  memcpy(q + b->size - 4, &r, 4);
}
/* A freed slot: its first SMI_HD_WIPE (32) bytes zeroed, its gen word written
 * (key_gen passed in: loaded before the stores); three stores (a 16-byte
 * slot has only the two link words). */
static inline void smi_hd_wipe(uint64_t key_gen, size_t size, void *p, uint8_t *g) {
  uint64_t *w = p;
  w[0] = 0;
  w[1] = (uintptr_t)g ^ key_gen;
  if (smi_likely(size > 16)) memset(w + 2, 0, 16); /* one 16-byte store */
}
/* Into the quarantine; the oldest slot there goes onto the freelist (key_next
 * and the freelist's head passed in: loaded before the wipe's stores). The
 * ring is the head's first 32 bytes, its place a byte offset: no index
 * arithmetic. */
static inline void smi_hd_quarantine(smi_block_t *b, smi_hd_head_t *h, smi_free_t *p, uint64_t key_next,
                                     smi_free_t *head) {
  uint32_t k = h->qoff;
  smi_free_t **place = (smi_free_t **)((uint8_t *)h + k);
  smi_free_t *e = *place;
  *place = p;
  h->qoff = (uint8_t)((k + sizeof(void *)) & (SMI_HD_QUARANTINE * sizeof(void *) - 1));
  if (e) {
    e->next = (smi_free_t *)((uintptr_t)head ^ key_next);
    b->free = e;
  }
}

/* The hardened allocation fast path: the popped slot is checked (inside the
 * block's slots before it is read, then its gen word and generation, then
 * the 16 wiped bytes past the link words); its two link words are cleared,
 * the canary and the size record written. */
static inline void *smi_malloc(size_t size) {
  sm_arena_t *a = smi_tls_cur;
  if (smi_likely(size <= SMI_DIRECT_MAX - SMI_HD_TAIL)) {
    smi_block_t *b = a->direct[(size + SMI_HD_TAIL + 15) >> 4];
    smi_free_t *p = b->free;
    if (smi_likely(p != NULL)) {
      /* p inside the block's slots (so its words can be read), then its gen
       * word: it decodes to the generation g of slot i, the slot p starts
       * (i * size is p's offset), g free; no division. A g past the table
       * passes only with a product that wraps, where g is no canonical
       * address: forging one takes key_gen, and ends in a fault. */
      uintptr_t u = (uintptr_t)p, off = u - (uintptr_t)b->start;
      uint8_t *gens = b->gens;
      smi_hd_head_t *h = (smi_hd_head_t *)(gens - SMI_HD_HEAD);
      if (smi_unlikely(off >= h->span)) return smi_hd_pop_fail(b, p, size);
      uint64_t *w = (uint64_t *)p;
      uint8_t *g = (uint8_t *)(w[1] ^ h->key_gen);
      size_t slot = b->size;
      if (smi_unlikely((uintptr_t)(g - gens) * slot != off || smi_gen_is_live(*g) ||
                       (smi_likely(slot > 16) && (w[2] | w[3]))))
        return smi_hd_pop_fail(b, p, size);
      uint32_t r = (uint32_t)size ^ h->canary;
      b->free = (smi_free_t *)(w[0] ^ h->key_next);
      w[0] = 0;
      w[1] = 0;
      b->used++;
      smi_gen_make_live(g);
      memcpy((uint8_t *)p + size, &r, 4); /* the canary and the size record (smi_hd_stamp) */
      memcpy((uint8_t *)p + slot - 4, &r, 4);
      return p;
    }
    return smi_malloc_generic(a, size, false);
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
 *               to the compare-and-swap; store the generation] — the store
 *               commits it. The kernel restarts the sequence at its abort
 *               handler (the compare-and-swap, from the generation loaded
 *               before) if the thread is preempted, takes a signal, or is hit
 *               by membarrier's rseq restart while inside it.
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
 *   - it committed before M reached O's thread: its store was drained by that
 *     barrier, before M returned, so before R's compare-and-swap, which then
 *     reads a free generation (or, on ABA, a newer object's) and R reports;
 *   - M reached O's thread inside it: restarted, O takes the compare-and-swap,
 *     and of two compare-and-swaps one loses and reports;
 *   - it began after M reached O's thread: its load reads h->shared >= ARMING
 *     (stored before M began) and O takes the compare-and-swap.
 * O's own generation load may come before its sequence: the sequence commits
 * old + 1 only if it was not disturbed, and its abort handler's
 * compare-and-swap expects old, so a generation R moved meanwhile fails it.
 * A thread whose rseq is not registered (cpu_id < 0: glibc did not or could
 * not, valgrind) and a process where membarrier's rseq command is missing
 * (every block then SHARED from its cut) always take the compare-and-swap.
 * The cost: one membarrier per block the first time another thread frees into
 * it; h->shared never goes back (a cut keeps it). */
#if defined(__x86_64__)
#define SMI_HD_RSEQ_SIG "0x53053053" /* glibc's RSEQ_SIG on x86: the 4 bytes before the abort handler */
/* Stores next into *g in the owner's restartable sequence; false: not done
 * (the block is shared, the thread has no rseq, or the sequence was aborted),
 * the caller takes the compare-and-swap. */
static inline bool smi_hd_gen_plain(const smi_hd_head_t *h, uint8_t *g, uint8_t next) {
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
               "movb %[next], %[gen]\n" /* the commit */
               "2:\n\t"
               ".pushsection .text.unlikely, \"ax\"\n\t"
               ".long " SMI_HD_RSEQ_SIG "\n"
               "4:\n\t"
               "jmp %l[cas]\n\t"
               ".popsection"
               : [gen] "+m"(*g)
               : [off] "r"(smi_hd_rseq_off), [shared] "m"(h->shared), [next] "q"(next)
               : "rax", "cc"
               : cas);
  return true;
cas:
  return false;
}
#else
static inline bool smi_hd_gen_plain(const smi_hd_head_t *h, uint8_t *g, uint8_t next) {
  (void)h, (void)g, (void)next;
  return false;
}
#endif

/* The hardened free fast path: the default one's checks, then the canary,
 * then the generation (see above); the slot is wiped and quarantined.
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
        if (smi_likely(smi_gen_frees_plainly(old)) && smi_likely(smi_hd_canary_ok(b, h, u)) &&
            (smi_likely(smi_hd_gen_plain(h, g, smi_gen_freed(old))) ||
             __atomic_compare_exchange_n(g, &old, smi_gen_freed(old), false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))) {
          /* read before the slot's stores, which the compiler cannot tell
           * from stores to the block or its head */
          uint64_t key_gen = h->key_gen, key_next = h->key_next;
          smi_free_t *head = b->free;
          size_t size = b->size;
          smi_hd_wipe(key_gen, size, p, g);
          smi_hd_quarantine(b, h, (smi_free_t *)p, key_next, head);
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
  __atomic_store_n(g, smi_gen_freed(from), __ATOMIC_RELAXED);
  return true;
}
#endif

#endif
