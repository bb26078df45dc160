/* harden.h (slots/): the block layer's part of the hardened build
 * (-DSLOTMALLOC_HARDENED=ON, SMI_HARDENED): how a free slot's two words are
 * encoded, the per-block secrets, the order a fresh block hands out its slots,
 * and the guard page that ends every block. In the default build every
 * function here is the identity or nothing and every size is 0, so the
 * default code is what it was. The arena layer's part (canaries, zeroed and
 * checked freed slots, the quarantine, the fast paths) is alloc/harden.h.
 *
 * A hardened block's layout:
 *   [generations][slots ...][guard page, PROT_NONE]
 * and its head (smi_hd_head_t: its secrets and its quarantine) lies in the
 * segment's header page, SMI_HD_HEAD_AT bytes past its descriptor, as the
 * descriptor does. A linear overflow out of a block's last slot meets the
 * guard page before the next block's generations (or the next segment's
 * header): no metadata is in its reach. (At the block's start, as it was,
 * every head sat at an offset 0 mod 64 KiB: all in one set of the L1 cache,
 * which holds 8 to 12 lines; lifo, with 17 classes in use, missed it on a
 * third of its allocations, cachegrind.)
 *
 * A free slot's two words:
 *   next  link ^ key_next   (the block's random key; its low 4 bits 0, so bit
 *                           0 of a remote link, the retire mark, reads the
 *                           same encoded)
 *   zero  0 (smi_gen_enc: the default build's pointer to the generation),
 *         checked when the slot is handed out: a write after free there
 *         is caught (alloc/harden.h).
 * What keeps a write through a dangling pointer from choosing where the next
 * allocation lands is the check: every popped link is checked before it is
 * followed (smi_hd_slot_of, before the slot is read): a slot start of the
 * block, counted over the whole address (a forged link may point anywhere),
 * its generation free, its second word zero; the remote list is checked the
 * same, by the pop once the collect put it on an empty freelist as it is (its
 * links are encoded alike), else slot by slot as the collect walks it
 * (smi_hd_remote_ok). Without the key a bad link is caught at once; with
 * it (a slot whose link ends its list holds the key itself), it can at most
 * name another free slot of the block. (A second key, XORed into a pointer to
 * the generation in the second word, bought nothing the index check does
 * not: the generation's address is predictable.) */
#ifndef SMI_SLOTS_HARDEN_H
#define SMI_SLOTS_HARDEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "segment.h"

#define SMI_HD_QUARANTINE 4 /* a block's newest freed slots, not handed out while it has others */

typedef struct {
  smi_free_t *pending;  /* the quarantine: the owner's freed slots, newest first, linked (encoded) as the
                          freelist; they go onto it when the freelist runs dry, all but the newest
                          SMI_HD_QUARANTINE (alloc/harden.h) */
  uint64_t key_next;    /* XORed into every link (low 4 bits 0) */
  uint64_t span;        /* nslots * size: a popped slot's offset from start is below it (malloc's fast
                          path; set where slots go onto the freelist: extend, reopen) */
  uint32_t canary;      /* the block's canary word (alloc/harden.h) */
  uint16_t shared;      /* SMI_HD_PRIVATE / _ARMING / _SHARED (the owner's free, alloc/harden.h) */
  smi_free_t *short_at; /* the pending list's head when it was found to hold SMI_HD_QUARANTINE or fewer
                           slots (NULL: not known): while it is the head no slot was pushed since, and
                           the quarantine's cut fails without a walk (alloc/harden.c) */
  uint8_t unused[24];
} smi_hd_head_t;
_Static_assert(sizeof(smi_hd_head_t) == 64, "smi_hd_head_t is 64 bytes");

/* h->shared: may a thread other than the owner move the block's generations?
 * Never so far (private: the owner's free stores its generation inside a
 * restartable sequence); one is making it so (arming); it did (shared: the
 * owner's free moves it by compare-and-swap). Only ever grows, cut after cut
 * (alloc/harden.h has the proof this serves). */
enum { SMI_HD_PRIVATE = 0, SMI_HD_ARMING = 1, SMI_HD_SHARED = 2 };

#ifdef SMI_HARDENED
#define SMI_HD_ON 1
#define SMI_HD_GUARD ((size_t)4096) /* the guard page at a block's end */
/* A block's head, this far past its descriptor: in the segment's header page,
 * past the last descriptor (a constant displacement, no load of b->gens).
 * The 64: descriptors lie 128 bytes apart, so their hot first lines all fall
 * in every other L1 set; at 16 KiB alone the heads fell in the same sets
 * (callgrind's cache model, larson -t 2 -s 0.1: free's read misses 3.99M ->
 * 3.81M with the 64, at the head 341k -> 287k, at the descriptor 495k ->
 * 386k). */
#define SMI_HD_HEAD_AT ((size_t)16384 + 64)
_Static_assert(offsetof(smi_segment_t, blocks) + (SMI_PAGES_PER_SEG - 1) * sizeof(smi_block_t) <= SMI_HD_HEAD_AT &&
                   SMI_HD_HEAD_AT + offsetof(smi_segment_t, blocks) + (SMI_PAGES_PER_SEG - 1) * sizeof(smi_block_t) <=
                       SMI_PAGE_SIZE,
               "the heads lie in the header page, past the descriptors");

static inline smi_hd_head_t *smi_hd_head(const smi_block_t *b) {
  return (smi_hd_head_t *)((char *)b + SMI_HD_HEAD_AT);
}
static inline smi_free_t *smi_link_enc(const smi_block_t *b, const void *slot, uintptr_t next) {
  (void)slot;
  return (smi_free_t *)(next ^ smi_hd_head(b)->key_next);
}
static inline uintptr_t smi_link_dec(const smi_block_t *b, const void *slot, const smi_free_t *word) {
  (void)slot;
  return (uintptr_t)word ^ smi_hd_head(b)->key_next;
}
/* A free slot's second word: zero, checked at reuse (the default build's
 * pointer to the generation: the hardened fast path counts the index). */
static inline uint8_t *smi_gen_enc(const smi_block_t *b, uint8_t *g) {
  (void)b, (void)g;
  return NULL;
}
/* Is p a slot start of b, and which (*i)? Over the whole address, unlike
 * smi_slot_at (a popped link may hold any address): an offset past the slots,
 * or below start (it wraps), gives a quotient past nslots; within them the
 * remainder test is exact (smi_slot_at). */
static inline bool smi_hd_slot_of(const smi_block_t *b, const void *p, size_t *i) {
  uint64_t off = (uintptr_t)p - (uintptr_t)b->start, magic = b->magic;
  unsigned __int128 m = (unsigned __int128)off * magic;
  *i = (size_t)(m >> 64);
  return (uint64_t)m < magic && *i < b->nslots;
}

/* segment.c's hooks (harden.c) */
void smi_hd_block_cut(smi_block_t *b);         /* after format: new keys, empty quarantine */
void smi_hd_block_reopen(smi_block_t *b);      /* empty quarantine */
void smi_hd_guard_segment(smi_segment_t *seg); /* the guard page of each block */
/* Links the take slots of b from first on in a shuffled order in
 * front of b->free, for smi_block_extend; returns the new head. */
smi_free_t *smi_hd_extend(smi_block_t *b, uint8_t *first, uint32_t take);
/* Before a thread moves a generation of b by compare-and-swap without owning
 * b (a remote free, sm_hfree): b marked shared, with the membarrier the proof
 * in alloc/harden.h needs the first time. */
void smi_hd_share_slow(smi_hd_head_t *h);
static inline void smi_hd_share(const smi_block_t *b) {
  smi_hd_head_t *h = smi_hd_head(b);
  if (__builtin_expect(__atomic_load_n(&h->shared, __ATOMIC_ACQUIRE) != SMI_HD_SHARED, 0)) smi_hd_share_slow(h);
}
/* The owner's restartable sequence (alloc/harden.h): the offset of the
 * thread's struct rseq from the thread pointer (glibc's __rseq_offset, or a
 * thread-local stand-in whose cpu_id reads -1 when the process cannot use
 * restartable sequences), and its descriptor. */
extern intptr_t smi_hd_rseq_off __attribute__((visibility("hidden"))); /* one load, not through the GOT */
/* A 64-bit random number from the process's secret stream (slots/harden.c). */
uint64_t smi_hd_random(void);
/* The one-line report of a bad link "slotmalloc: corrupted free list in block
 * 0x... (slot 0x...)", then the abort (unless ABORT_ON_ERROR=0): the arena
 * layer's, alloc/harden.c, as every report is (declared here for the remote
 * list's check above). */
void smi_hd_report_list(const smi_block_t *b, const void *slot);
/* A slot on b's remote list (or its freelist, for upkeep's tidy), checked
 * before it is read: a slot start of b, its generation not live, its second
 * word zero; false (reported) if not: the rest of the list is dropped, never
 * followed. Inline: the collect calls it for every slot. */
static inline bool smi_hd_remote_ok(const smi_block_t *b, const void *slot) {
  size_t i;
  if (__builtin_expect(
          smi_hd_slot_of(b, slot, &i) && !smi_gen_is_live(b->gens[i]) && ((const smi_free_t *)slot)->gen == NULL, 1))
    return true;
  smi_hd_report_list(b, slot);
  return false;
}
#else
#define SMI_HD_ON 0
#define SMI_HD_GUARD ((size_t)0)
static inline smi_free_t *smi_link_enc(const smi_block_t *b, const void *slot, uintptr_t next) {
  (void)b, (void)slot;
  return (smi_free_t *)next;
}
static inline uintptr_t smi_link_dec(const smi_block_t *b, const void *slot, const smi_free_t *word) {
  (void)b, (void)slot;
  return (uintptr_t)word;
}
static inline uint8_t *smi_gen_enc(const smi_block_t *b, uint8_t *g) {
  (void)b;
  return g;
}
static inline void smi_hd_block_cut(smi_block_t *b) { (void)b; }
static inline void smi_hd_block_reopen(smi_block_t *b) { (void)b; }
static inline void smi_hd_guard_segment(smi_segment_t *seg) { (void)seg; }
static inline smi_free_t *smi_hd_extend(smi_block_t *b, uint8_t *first, uint32_t take) {
  (void)b, (void)take;
  return (smi_free_t *)first;
}
static inline bool smi_hd_remote_ok(const smi_block_t *b, const void *slot) {
  (void)b, (void)slot;
  return true;
}
static inline void smi_hd_share(const smi_block_t *b) { (void)b; }
#endif

#endif
