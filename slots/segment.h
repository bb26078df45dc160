/* segment.h: segments, slot blocks and the maps that find them.
 *
 * A segment is a 4 MiB-aligned span. Its first 64 KiB page holds the segment
 * header with the descriptors of its blocks; the rest is cut into blocks of one
 * kind: 63 small blocks of 64 KiB, 7 medium blocks of 512 KiB, or one big block
 * of 4 MiB - 64 KiB. A block is cut into slots of one size class, and has a
 * generation table, one byte per slot: in the default build the slots start
 * at the block's base and the table lies at its end (smi_block_layout).
 * Objects larger than the largest class get a segment of their own (kind
 * LARGE): one mapping, one slot, its generation in the header.
 *
 * Two static tables find everything in O(1) without locks:
 *   smi_segmap: one byte per 4 MiB of address space: is this address ours?
 *   smi_segtab: segment id -> segment, for handles (ids are 20 bits).
 * Small segments are never unmapped, so their headers can always be read;
 * large segments are, so what a handle of a large object needs is kept in
 * smi_segtab itself. */
#ifndef SMI_SEGMENT_H
#define SMI_SEGMENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "generation.h"
#include "size_class.h"

struct sm_arena_s; /* alloc/'s arena: opaque here (see smi_block_t) */

#define SMI_SEG_SHIFT 22
#define SMI_SEG_SIZE ((size_t)1 << SMI_SEG_SHIFT)
#define SMI_SEG_MASK (SMI_SEG_SIZE - 1)
#define SMI_PAGE_SHIFT 16
#define SMI_PAGE_SIZE ((size_t)1 << SMI_PAGE_SHIFT)
#define SMI_PAGES_PER_SEG (SMI_SEG_SIZE / SMI_PAGE_SIZE)
#define SMI_ADDR_BITS 47
#define SMI_SEGMAP_LEN ((size_t)1 << (SMI_ADDR_BITS - SMI_SEG_SHIFT))
#define SMI_SEG_ID_BITS 20
#define SMI_SEG_IDS ((size_t)1 << SMI_SEG_ID_BITS)
#define SMI_EPOCH_BITS 17
#define SMI_EPOCH_LIMIT (((uint32_t)1 << SMI_EPOCH_BITS) - 1) /* a block reaching it is worn out */

/* What smi_segmap says of a 4 MiB span of addresses. */
enum {
  SMI_MAP_NONE = 0,       /* not ours */
  SMI_MAP_SLOTS = 1,      /* a segment of slot blocks starts here */
  SMI_MAP_LARGE = 2,      /* a large segment's header is here */
  SMI_MAP_LARGE_BACK = 3, /* a large segment's header is one span back (4 MiB-aligned objects) */
  SMI_MAP_INTERIOR = 4,   /* inside a large object: never the start of one */
};

enum { SMI_KIND_SMALL, SMI_KIND_MEDIUM, SMI_KIND_BIG, SMI_KIND_LARGE, SMI_KINDS_OF_BLOCKS = 3 };

enum {                                 /* smi_block_t.flags */
       SMI_BLOCK_FORMATTED = 1,        /* cut into slots of block.cls */
       SMI_BLOCK_WORN_OUT = 2,         /* its epochs are used up: never handed out again */
       SMI_BLOCK_DECOMMITTED = 4,      /* its memory was given back to the OS */
       SMI_BLOCK_CLOSED = 8,           /* its arena closed; waiting to be dismantled */
       SMI_BLOCK_USER = 16,            /* belongs to a user arena, which any thread may close */
       SMI_BLOCK_WAITING = 32,         /* on the pool's empty lists (alloc/pool.c; changed under its lock) */
       SMI_BLOCK_ABANDONED = 64,       /* on the pool's abandoned lists, its remote count biased (below) */
       SMI_BLOCK_ABANDONED_FULL = 128, /* of those, on the abandoned-full list */
};

/* A free slot holds the link to the next one (the in-place freelist), and
 * where its generation is, so that allocation advances it without working
 * out the slot's index. Every class is at least 16 bytes: both fit. */
typedef struct smi_free_s {
  struct smi_free_s *next;
  uint8_t *gen;
} smi_free_t;

/* Malloc's fast path: the next free slot (NULL at the list's end: a
 * prefetch never faults) is fetched for writing while the caller uses the
 * slot just taken, so the next malloc of the class finds its link and its
 * generation pointer in the cache (and the program its first bytes). */
static inline void smi_prefetch_slot(const smi_free_t *next) {
#if defined(__x86_64__)
  __asm__("prefetchw (%0)" : : "r"(next)); /* (an address, not an object: next may be NULL) */
#else
  __builtin_prefetch(next, 1);
#endif
}

/* Makes a free slot's generation live: the release store a handle's acquire
 * in sm_deref pairs with. On x86-64 every store is a release, so one or in
 * memory, kept in order by the compiler barrier; elsewhere and under TSan,
 * the atomic form. */
static inline void smi_gen_make_live(uint8_t *g) {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !defined(SMI_TSAN)
  __asm__ volatile("orb $0x80, %0" : "+m"(*g) : : "memory");
#else
  __atomic_store_n(g, smi_gen_allocated(__atomic_load_n(g, __ATOMIC_RELAXED)), __ATOMIC_RELEASE);
#endif
}
/* Free's fast path: adds SMI_GEN_FREE_ADD to the generation in memory, which
 * frees a live slot (not at the wrap) and says so by the signed overflow (see
 * generation.h). Otherwise (a double or invalid free, or the wrap) it returns
 * false with the sum left in the byte, which smi_free_undo puts right before
 * anything else looks at the slot. On x86-64 the add in memory and the
 * branch on its overflow flag are two instructions. */
static inline bool smi_gen_make_free(uint8_t *g) {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !defined(SMI_TSAN)
  bool freed;
  __asm__("addb %2, %0" : "+m"(*g), "=@cco"(freed) : "i"(SMI_GEN_FREE_ADD));
  return freed;
#else
  uint8_t old = __atomic_load_n(g, __ATOMIC_RELAXED);
  __atomic_store_n(g, (uint8_t)(old + SMI_GEN_FREE_ADD), __ATOMIC_RELAXED);
  return smi_gen_frees_plainly(old);
#endif
}

/* A block's descriptor. It holds the arena layer's bookkeeping of the block
 * too (owner, arena, queued, the list links, the USER and CLOSED flags,
 * empty_since), on purpose: the free fast path reads owner beside free, start,
 * magic and gens, all in the descriptor's first 64 bytes, and a side table of
 * the arena layer would cost it a second cache miss; the slow paths' fields
 * share the other half of the 128 bytes, which a handle finds with a shift.
 * This layer only stores and passes those fields (the arena is an opaque
 * struct here); alloc/ gives them meaning. */
typedef struct smi_block_s {
  /* hot: the allocation and free fast paths touch only these */
  smi_free_t *free;         /* slots ready to hand out */
  uint8_t *start;           /* the first slot */
  uint64_t magic;           /* SMI_RECIPROCAL(size), for smi_slot_at */
  uint8_t *gens;            /* one generation per slot (generation.h) */
  struct sm_arena_s *owner; /* the arena whose thread frees here without atomics (or NULL) */
  uint32_t used;            /* live slots, +1 while the block is its bin's current block */
  uint32_t nslots;          /* slots in the block (0 while it is being cut) */
  size_t size;              /* slot size (a full word: the free path multiplies by it in memory) */
  /* warm: slow paths */
  uint32_t bump;                    /* slots below bump have been handed out at least once */
  uint32_t retired;                 /* slots whose generation wrapped: out of service until reset */
  uint8_t cls;                      /* size class */
  uint8_t kind;                     /* SMI_KIND_* of its segment */
  uint8_t flags;                    /* SMI_BLOCK_* */
  uint8_t index;                    /* position in its segment */
  _Atomic uint8_t queued;           /* on its arena's revisit stack */
  _Atomic uint8_t named;            /* a handle of one of its slots was taken since it was cut */
  _Atomic uint8_t wrapped;          /* a slot's generation wrapped since the block was cut */
  _Atomic uint32_t epoch;           /* advanced each time the block is cut anew; every handle carries it */
  _Atomic uint32_t inflight;        /* remote frees under way into a closable block */
  _Atomic(uintptr_t) remote;        /* slots freed by other threads (in-place list): smi_remote_head */
  struct sm_arena_s *arena;         /* the arena the block belongs to */
  struct smi_block_s *next, *prev;  /* links in an arena's bin or in the pool */
  struct smi_block_s *revisit_next; /* link in its arena's revisit stack */
  uint64_t empty_since;             /* in the pool: since when it is empty (ms), for the purge delay;
                                     * out of it: when it left (arena.c's tidy) */
} smi_block_t;
/* block.remote, the list of slots other threads freed, in one word that one
 * exchange takes whole: the first slot (bits 0-46: a user-space address),
 * whether a slot on it retires (bit 47: its own link's bit 0 says which), and
 * how many slots it holds (bits 48-63; at most a block's slots). A list whose
 * count is 0 (pushed by hand, as tests do) is walked to count it. */
#define SMI_REMOTE_HEAD (((uintptr_t)1 << SMI_ADDR_BITS) - 1)
#define SMI_REMOTE_MARKED ((uintptr_t)1 << SMI_ADDR_BITS)
#define SMI_REMOTE_COUNT_SHIFT 48
static inline smi_free_t *smi_remote_head(uintptr_t w) { return (smi_free_t *)(w & SMI_REMOTE_HEAD); }
static inline uint32_t smi_remote_count(uintptr_t w) { return (uint32_t)(w >> SMI_REMOTE_COUNT_SHIFT); }
/* An abandoned block's count starts at minus its live objects (modulo 2^16,
 * by adding this to the word): the push that frees its last object is the
 * one that brings the count to 0, which an unbiased count never reads after a
 * push (alloc/pool.c, smi_pool_drained). */
static inline uintptr_t smi_remote_bias(uint32_t used) {
  return (uintptr_t)(-(uint64_t)used) << SMI_REMOTE_COUNT_SHIFT;
}
/* The word after a chain of n slots (first .. its last) went on top of w;
 * marked: a slot of the chain retires. */
static inline uintptr_t smi_remote_push_word(uintptr_t w, const void *first, uint32_t n, bool marked) {
  return (uintptr_t)first | (w & SMI_REMOTE_MARKED) | (marked ? SMI_REMOTE_MARKED : 0) |
         (((w >> SMI_REMOTE_COUNT_SHIFT) + n) << SMI_REMOTE_COUNT_SHIFT);
}

/* A power of two, so a handle finds its block with a shift. The header page
 * holds 63 of them whatever the kind, zeroed when unused: a handle naming a
 * block past nblocks reads nslots 0 there. */
_Static_assert(sizeof(smi_block_t) == 128, "smi_block_t is 128 bytes");

typedef struct smi_segment_s {
  uint32_t id;  /* index in smi_segtab */
  uint8_t kind; /* SMI_KIND_* */
  uint8_t nblocks;
  uint8_t large_gen;  /* LARGE: 1 while the object is live, else 2 */
  uint8_t pooled;     /* slot segments: blocks waiting empty in the pool (alloc/pool.c) */
  uint64_t waiting;   /* slot segments: which of its blocks wait in the pool (bit = index), under the pool's lock:
                     * alloc/pool.c finds a block's waiting neighbours here, never by reading the flags of a
                     * block another thread may be cutting at that moment */
  size_t map_size;    /* bytes mapped from the segment start */
  size_t large_size;  /* LARGE: usable bytes of the object */
  uint8_t *large_obj; /* LARGE: the object */
  size_t large_align; /* LARGE: the alignment it was mapped with */
  struct sm_arena_s *large_arena;                /* LARGE: its arena */
  struct smi_segment_s *large_next, *large_prev; /* LARGE: links in its arena */
  smi_block_t *page_block[SMI_PAGES_PER_SEG];    /* 64 KiB page -> its block */
  smi_block_t blocks[];                          /* SMALL 63, MEDIUM 7, BIG 1 */
} smi_segment_t;

typedef struct smi_segslot_s {
  _Atomic(smi_segment_t *) seg;
  _Atomic uint64_t large_tag;   /* LARGE: (epoch << 8 | gen) while the object is live, else 0 */
  _Atomic(uint8_t *) large_obj; /* LARGE: the object */
  uint32_t epoch;               /* LARGE: advanced each time the id names a new large object */
  uint32_t next_free : 24;      /* free-id list */
  uint32_t is_large : 8;        /* the id belongs to large segments (fixed once taken) */
} smi_segslot_t;
_Static_assert(sizeof(smi_segslot_t) == 32, "smi_segslot_t is 32 bytes");

/* Both tables are reserved read-only at load (smi_os_table_reserve: a page
 * is made writable when a segment first needs it), so that they count toward
 * no data-size or commit limit; until then, and if the OS refuses them, each
 * points at 256 zero bytes (nothing is ours; segment.c). */
extern uint8_t *smi_segmap __attribute__((visibility("hidden"))); /* one load, not through the GOT */
extern smi_segslot_t *smi_segtab __attribute__((visibility("hidden")));
/* The ids the id table reaches: all, once it is reserved; before (or if the
 * OS refuses it), the zeros' 8, where no id was ever taken. */
extern uint32_t smi_segtab_mask __attribute__((visibility("hidden")));
/* An id a handle carries, which may be forged, made one the table reaches
 * (past the zeros: one of their empty slots); smi_segtab is read after it. */
static inline uint32_t smi_id_in_reach(uint32_t id) {
  return id & __atomic_load_n(&smi_segtab_mask, __ATOMIC_ACQUIRE);
}
/* Makes the map's entries of [p, p+size) writable (smi_os_ready_fn); false
 * if the OS refuses. Every mapping of ours is ready before it is used. */
bool smi_segmap_ready(void *p, size_t size);

static inline unsigned smi_map_of(uintptr_t u) {
  return u < ((uintptr_t)1 << SMI_ADDR_BITS) ? smi_segmap[u >> SMI_SEG_SHIFT] : SMI_MAP_NONE;
}
/* The fast-path form: no range check. An address past the user address space
 * makes it read outside the map, which faults (it never returns a segment). */
static inline unsigned smi_map_of_unchecked(uintptr_t u) { return smi_segmap[u >> SMI_SEG_SHIFT]; }
static inline smi_segment_t *smi_segment_at(uintptr_t u) { return (smi_segment_t *)(u & ~(uintptr_t)SMI_SEG_MASK); }
/* Each kind's block span (the header page comes first in every segment). */
#define SMI_SPAN_SMALL SMI_PAGE_SIZE
#define SMI_SPAN_MEDIUM (8 * SMI_PAGE_SIZE)
#define SMI_SPAN_BIG (63 * SMI_PAGE_SIZE)
/* A block's span, from its kind. */
static inline size_t smi_block_span(const smi_block_t *b) {
  return b->kind == SMI_KIND_SMALL ? SMI_SPAN_SMALL : b->kind == SMI_KIND_MEDIUM ? SMI_SPAN_MEDIUM : SMI_SPAN_BIG;
}
/* Where a block's span ends. */
static inline uint8_t *smi_block_end(const smi_block_t *b) {
  return (uint8_t *)smi_segment_at((uintptr_t)b) + SMI_PAGE_SIZE + ((size_t)b->index + 1) * smi_block_span(b);
}
/* Slot i's generation, for a reader that holds no lock and may race a re-cut
 * (handles, reports): NULL if i lies past the table it loaded. A re-cut
 * changes nslots and the table's place (in the default build it depends on
 * the class) apart, so an i checked against the old nslots is checked against
 * the table too, and the read stays inside the block whatever it reads (the
 * epoch, read after it, tells the reader the slot is another one). */
static inline _Atomic uint8_t *smi_gen_at(const smi_block_t *b, size_t i) {
  uint8_t *gens = __atomic_load_n(&b->gens, __ATOMIC_RELAXED);
  if (i >= (size_t)(smi_block_end(b) - gens)) return NULL;
  return (_Atomic uint8_t *)(gens + i);
}
static inline smi_block_t *smi_block_at(smi_segment_t *seg, uintptr_t u) {
  return seg->page_block[(u >> SMI_PAGE_SHIFT) & (SMI_PAGES_PER_SEG - 1)];
}
/* Free's fast path: smi_block_at from u's span (u >> SMI_SEG_SHIFT) in one
 * instruction fewer. u >> SMI_PAGE_SHIFT is span * 64 + the page's index, so
 * its entry lies at span * (SMI_SEG_SIZE - 64 * 8) + offsetof(page_block) +
 * 8 * (u >> SMI_PAGE_SHIFT): a multiplication by a constant and a load with a
 * scaled index, where the segment and the masked index took a shift, a mask
 * and a shift. */
static inline smi_block_t *smi_block_at_span(uintptr_t span, uintptr_t u) {
  uintptr_t base;
#if defined(__x86_64__)
  /* (written out: compilers turn the multiplication into two shifts and a subtraction) */
  __asm__("imulq %[k], %[span], %[base]"
          : [base] "=r"(base)
          : [span] "r"(span), [k] "i"(SMI_SEG_SIZE - SMI_PAGES_PER_SEG * sizeof(smi_block_t *)));
#else
  base = span * (SMI_SEG_SIZE - SMI_PAGES_PER_SEG * sizeof(smi_block_t *));
#endif
  return *(smi_block_t *const *)(base + offsetof(smi_segment_t, page_block) +
                                 (u >> SMI_PAGE_SHIFT) * sizeof(smi_block_t *));
}
/* ceil(2^64 / size), for every size but 1 */
#define SMI_RECIPROCAL(size) (UINT64_MAX / (uint64_t)(size) + 1)
/* Is u the start of a slot of b, and which (*i)? One multiplication by the
 * block's magic (SMI_RECIPROCAL of its slot size) gives both the quotient, in
 * its high half, and the remainder test, in its low half: exact for 32-bit
 * offsets (Lemire, Kaser and Kurz, "Faster remainder by direct computation",
 * 2019). An address below start wraps to a 32-bit offset past every slot,
 * which the bound rejects. The block's geometry is passed in, so that a reader
 * racing a re-cut can pass what it loaded atomically. */
static inline bool smi_slot_at(uintptr_t u, const uint8_t *start, uint64_t magic, uint32_t nslots, size_t *i) {
  uint32_t off = (uint32_t)u - (uint32_t)(uintptr_t)start;
  unsigned __int128 m = (unsigned __int128)off * magic;
  *i = (size_t)(m >> 64);
  return (uint64_t)m < magic && *i < nslots;
}
/* Free's fast paths: u's 32-bit offset in b times b's magic, whose high half
 * is the index of the slot u lies in and whose low half is below the magic
 * when u starts it (smi_slot_at). On x86-64 written out: compilers copy the
 * low half once more before comparing it, or load start's low half into a
 * register first; the magic stays in memory for the multiplication and the
 * caller's comparison. */
static inline void smi_slot_product(const smi_block_t *b, uintptr_t u, uint64_t *low, uint64_t *high) {
#if defined(__x86_64__)
  __asm__("subl %[start], %k[low]\n\tmulq %[magic]"
          : [low] "=a"(*low), "=d"(*high)
          : "0"((uint64_t)(uint32_t)u), [start] "m"(b->start), [magic] "m"(b->magic)
          : "cc");
#else
  unsigned __int128 m = (unsigned __int128)(uint32_t)(u - (uintptr_t)b->start) * b->magic;
  *low = (uint64_t)m;
  *high = (uint64_t)(m >> 64);
#endif
}
#ifndef SMI_HARDENED
/* Free's fast path: does u start a slot of b, and where is its generation?
 * No bound check: u lies in b (found by its page), b's slots start at its base
 * and its table has an entry for every multiple of the slot size in the block,
 * 0 (never live) past the last slot (smi_block_format). */
static inline bool smi_slot_gen(const smi_block_t *b, uintptr_t u, uint8_t **g) {
  uint64_t low, high;
  smi_slot_product(b, u, &low, &high);
  *g = b->gens + high;
  return low < b->magic;
}
#endif
/* The index of the slot that u lies in (u inside the block's slots). */
static inline uint32_t smi_slot_index(const smi_block_t *b, uintptr_t u) {
  uint32_t off = (uint32_t)u - (uint32_t)(uintptr_t)b->start;
  return (uint32_t)(((unsigned __int128)off * b->magic) >> 64);
}
static inline uint8_t *smi_slot_addr(const smi_block_t *b, uint32_t i) { return b->start + (size_t)i * b->size; }
/* The kind of block that holds slots of a class. */
static inline unsigned smi_kind_of_class(unsigned cls) {
  uint32_t s = smi_class_size[cls];
  return s <= 4096 ? SMI_KIND_SMALL : s <= 32768 ? SMI_KIND_MEDIUM : SMI_KIND_BIG;
}
/* The slot block that holds u, NULL if u is not inside a slot block of ours. */
static inline smi_block_t *smi_block_of(const void *p) {
  uintptr_t u = (uintptr_t)p;
  if (smi_map_of(u) != SMI_MAP_SLOTS) return NULL;
  return smi_block_at(smi_segment_at(u), u);
}

/* A fresh segment of slot blocks of one kind, zeroed, registered in both maps;
 * its blocks are unformatted. NULL if the OS refuses memory or ids run out. */
smi_segment_t *smi_segment_new(unsigned kind);
/* In a fork child (alloc/fork.c): repairs the id stack if a thread the child
 * does not have held its lock, and forgets the frees under way on such threads. */
void smi_segment_after_fork(bool *mine);
/* Calls fn on every block descriptor of every segment of slot blocks, cut or
 * not; for a fork child, where no other thread runs. */
void smi_blocks_each(void (*fn)(smi_block_t *b));
/* Ids handed out so far (every segment's id is below it). */
uint32_t smi_segment_ids_used(void);
/* A segment id (0 if they ran out); large: an id a large segment gave back
 * may be reused (under a new epoch), else a fresh one. */
uint32_t smi_id_take(bool large);
void smi_id_give_back(uint32_t id); /* a large segment's id, when it is unmapped */
/* Where a block's memory starts (its span: smi_block_span). */
uint8_t *smi_block_base(const smi_block_t *b);
/* Where a block cut for slots of `size` puts its generation table and its
 * slots, and how many it holds. Default build: slots from the block's base,
 * then the table at its end, with an entry for every multiple of size in the
 * block (0, never live, past the last slot), so that free's fast path needs
 * no bound check (smi_slot_gen); it costs at most one slot. Hardened build:
 * the head and the table first, then the slots, then the guard page, so that
 * no metadata lies where a linear overflow out of the last slot reaches. */
typedef struct {
  uint8_t *gens, *start;
  size_t nslots, table; /* table: the generation table's bytes */
} smi_layout_t;
smi_layout_t smi_block_layout(const smi_block_t *b, size_t size);
/* Bytes of a cut block ever written: its table (and head), and the slots
 * below bump. */
size_t smi_block_touched(const smi_block_t *b);
/* Cuts the block into slots of class cls, generations zero, nothing handed out.
 * Advances the block's epoch when it held slots before. false if the block's
 * epochs are used up (it is then marked worn out). */
bool smi_block_format(smi_block_t *b, unsigned cls);
/* Makes a block of a closed arena serve its class again without a new
 * epoch (so closing arenas does not use up epochs): the close sweep left
 * every generation free, and they go on from there; a slot handed out before
 * whose generation reads SMI_GEN_WRAPPED wrapped, and retires in a named
 * block, or restarts at SMI_GEN_RESTART. */
void smi_block_reopen(smi_block_t *b);
/* The owner takes the slots other threads freed (the remote list) onto the
 * freelist (a slot marked wrapped retires instead); returns how many. */
size_t smi_block_collect(smi_block_t *b);
/* The same for a block whose count is biased by minus its used slots
 * (smi_remote_bias: an abandoned block's). */
size_t smi_block_collect_biased(smi_block_t *b);
/* Waits until no free announced in b->inflight (frees into user arenas'
 * blocks, sm_hfree) is under way: they all started before the caller's last
 * change of the block, so they saw it or finished before it mattered. */
void smi_block_wait_frees(smi_block_t *b);
/* Ends a free announced in b->inflight. Never below 0: a fork child zeroes
 * every block's count (the frees under way on threads it does not have never
 * end), and a free of its own thread that a signal handler interrupted to
 * fork then ends in the child; a count wrapped below 0 would keep every wait
 * for the block's frees (a close, a re-cut, a thread's exit) spinning. */
static inline void smi_block_free_done(smi_block_t *b) {
  uint32_t n = atomic_load_explicit(&b->inflight, memory_order_relaxed);
  while (n && !atomic_compare_exchange_weak_explicit(&b->inflight, &n, n - 1, memory_order_release,
                                                     memory_order_relaxed)) {
  }
}
/* A slot whose generation g just wrapped to SMI_GEN_WRAPPED (stored before
 * the call): true if it must retire, because a handle of this block may name
 * it (the block was named); false if it can serve again, and then its
 * generation goes on from SMI_GEN_RESTART (count 0 is never live: see
 * generation.h). With smi_block_name, exact: the fence here and the one there
 * order each side's store before its load, so either the wrap sees the name,
 * or the handle taken sees the wrapped generation (and names the new cycle). */
static inline bool smi_block_wrap_retires(smi_block_t *b, _Atomic uint8_t *g) {
  atomic_store_explicit(&b->wrapped, 1, memory_order_relaxed); /* its generations no longer tell "never used" */
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&b->named, memory_order_relaxed)) return true;
  atomic_store_explicit(g, SMI_GEN_RESTART, memory_order_relaxed);
  return false;
}
/* Before a handle of one of b's slots is made from the slot's generation. */
static inline void smi_block_name(smi_block_t *b) {
  if (atomic_load_explicit(&b->named, memory_order_acquire)) return;
  atomic_store_explicit(&b->named, 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_seq_cst);
}
/* Moves up to a page worth of never-used slots onto the freelist; false if none are left. */
bool smi_block_extend(smi_block_t *b);
/* Moves the never-used slots below n onto the freelist at once, the lowest
 * first (as tidy sorts a freelist: alloc/arena.c), for the pool's recut of a
 * warm block (alloc/pool.c). Extended a step at a time instead, each step in
 * front of the last, the highest came first: a growing heap filled the
 * block from its top, its free slots stayed below the last in use, and tidy
 * could not bring bump down over them (tests/lean_prog.c's growing heap). */
void smi_block_extend_to(smi_block_t *b, uint32_t n);
/* Gives the block's slot memory back to the OS (the generation table too). */
void smi_block_decommit(smi_block_t *b);
/* The same for n neighbouring blocks of one segment, none decommitted yet,
 * with one system call. */
void smi_blocks_decommit(smi_block_t *first, uint32_t n);
/* Gives a segment whose blocks are all empty and out of use back to the OS,
 * all but its header and the pages where any cut of a block keeps its
 * generation table (its last two pages; the hardened build: its first), so
 * that a stale handle still reads them, as zero: the address space goes
 * back too, which an address-space limit needs. Its blocks hold no slots
 * (nslots 0) until smi_segment_reacquire; their epochs go on. */
void smi_segment_release(smi_segment_t *seg);
/* Maps a released segment's blocks again; false if another mapping took part
 * of the range meanwhile (the segment then stays released). */
bool smi_segment_reacquire(smi_segment_t *seg);

#endif
