/* segment.c: segments, block formatting and large segments (see segment.h). */
#include "segment.h"

#include <sched.h>
#include <string.h>

#include "counters.h"
#include "generation.h"
#include "harden.h"
#include "lock.h"
#include "os.h"
#include "valgrind.h"

smi_counter_t smi_counters[SMI_COUNTS]; /* counters.h */

/* ---- the segment map and the id table ---------------------------------------------
 * Reserved read-only when the library is loaded (or at the first id taken,
 * if that comes first), each page made writable when first written. Before,
 * or if the OS refuses them, 256 read-only zero bytes stand for each: they
 * cover the lowest 1 GiB of addresses (NULL among them) and the first 8 ids
 * (smi_segtab_mask). A whole page of them (16 GiB, 128 ids) made the
 * library's file, resident whole in every process, a page longer. */
#define ZEROS_LEN 256
static const uint8_t zeros[ZEROS_LEN] __attribute__((aligned(64)));
uint8_t *smi_segmap = (uint8_t *)zeros;
smi_segslot_t *smi_segtab = (smi_segslot_t *)zeros;
uint32_t smi_segtab_mask = ZEROS_LEN / sizeof(smi_segslot_t) - 1; /* the zeros' ids */
_Static_assert((ZEROS_LEN & (ZEROS_LEN - 1)) == 0 && ZEROS_LEN >= 2 * sizeof(smi_segslot_t), "a mask of ids");
#define MAP_BYTES (SMI_SEGMAP_LEN * sizeof(uint8_t))
#define TAB_BYTES (SMI_SEG_IDS * sizeof(smi_segslot_t))
static _Atomic uint64_t map_writable[MAP_BYTES / SMI_OS_PAGE / 64]; /* a bit per page */
static _Atomic uint64_t tab_writable[TAB_BYTES / SMI_OS_PAGE / 64];
static _Atomic bool tables_reserved;           /* both */
static smi_lock_t tables_lock = SMI_LOCK_INIT; /* a reservation under way */

/* The map first, on its own (free reads it for any pointer), then the id
 * table; each stays reserved once it is (a later call tries the other). The
 * id mask widens after the table's pointer changes: a reader that loads it
 * first, with acquire (smi_id_in_reach), never pairs the wide mask with the
 * zeros. */
static bool tables_reserve(void) {
  if (atomic_load_explicit(&tables_reserved, memory_order_acquire)) return true;
  smi_lock(&tables_lock);
  if (!atomic_load_explicit(&tables_reserved, memory_order_relaxed)) {
    uint8_t *map = smi_segmap == zeros ? smi_os_table_reserve(MAP_BYTES) : smi_segmap;
    if (map) __atomic_store_n(&smi_segmap, map, __ATOMIC_RELEASE);
    uint8_t *tab = map ? smi_os_table_reserve(TAB_BYTES) : NULL;
    if (tab) {
      __atomic_store_n(&smi_segtab, (smi_segslot_t *)tab, __ATOMIC_RELEASE);
      __atomic_store_n(&smi_segtab_mask, (uint32_t)(SMI_SEG_IDS - 1), __ATOMIC_RELEASE);
      atomic_store_explicit(&tables_reserved, true, memory_order_release);
    }
  }
  smi_unlock(&tables_lock);
  return atomic_load_explicit(&tables_reserved, memory_order_acquire);
}

__attribute__((constructor)) static void tables_at_load(void) { tables_reserve(); }

bool smi_segmap_ready(void *p, size_t size) {
  uintptr_t first = (uintptr_t)p >> SMI_SEG_SHIFT, last = ((uintptr_t)p + size - 1) >> SMI_SEG_SHIFT;
  return tables_reserve() && last < SMI_SEGMAP_LEN &&
         smi_os_table_write(smi_segmap, map_writable, first, last - first + 1);
}

static smi_lock_t ids_lock = SMI_LOCK_INIT;
static uint32_t ids_next = 1; /* id 0 is never used, so handle 0 is never valid */
static uint32_t ids_free;     /* stack of released ids (large segments) */

/* Ids are taken under ids_lock. An id released by a large segment is reused
 * only by another large segment, under a new epoch (unless its epochs are used
 * up: then it is never reused). A slot segment always
 * takes a fresh id: whether an id names a large object or slot blocks is
 * fixed for the id's life, so a stale large handle can never be read as a
 * handle of a slot, nor the reverse. */
uint32_t smi_id_take(bool large) {
  uint32_t id = 0;
  if (!tables_reserve()) return 0;
  smi_lock(&ids_lock);
  if (large && ids_free) {
    id = ids_free;
    ids_free = smi_segtab[id].next_free;
  } else if (ids_next < SMI_SEG_IDS &&
             smi_os_table_write(smi_segtab, tab_writable, ids_next * sizeof(smi_segslot_t), sizeof(smi_segslot_t))) {
    id = ids_next++;
  }
  smi_unlock(&ids_lock);
  return id;
}

void smi_id_give_back(uint32_t id) {
  smi_lock(&ids_lock);
  if (smi_segtab[id].epoch < SMI_EPOCH_LIMIT) {
    smi_segtab[id].next_free = ids_free;
    ids_free = id;
  }
  smi_unlock(&ids_lock);
}

uint32_t smi_segment_ids_used(void) { return ids_next; }

/* segment_space: the mapping segments are taken from */
static smi_lock_t reserve_lock = SMI_LOCK_INIT;
static uint8_t *reserve_next; /* the next segment's place in the current mapping */
static size_t reserve_left;   /* segments left there */

static void forget_frees(smi_block_t *b) { atomic_store(&b->inflight, 0); }

void smi_segment_after_fork(bool *mine) {
  /* A reservation of the tables may be half done: the next call finishes it
   * (each table's pointer changes only once it is reserved). */
  smi_lock_orphaned(&tables_lock, mine);
  /* A pop from the free-id stack may be half done: forget the stack (its ids
   * are not reused in the child). */
  if (smi_lock_orphaned(&ids_lock, mine)) ids_free = 0;
  /* A segment taken from the mapping may be half counted: forget the rest of it. */
  if (smi_lock_orphaned(&reserve_lock, mine)) reserve_left = 0;
  /* Frees that were under way on threads the child does not have never end. */
  smi_blocks_each(forget_frees);
}

void smi_blocks_each(void (*fn)(smi_block_t *b)) {
  for (uint32_t id = 1; id < ids_next; id++) {
    smi_segment_t *seg = atomic_load_explicit(&smi_segtab[id].seg, memory_order_relaxed);
    if (!seg || smi_segtab[id].is_large) continue;
    for (uint32_t i = 0; i < seg->nblocks; i++) fn(&seg->blocks[i]);
  }
}

static const struct {
  uint32_t nblocks;
  size_t span;
} kinds[SMI_KINDS_OF_BLOCKS] = {
    [SMI_KIND_SMALL] = {63, SMI_SPAN_SMALL},
    [SMI_KIND_MEDIUM] = {7, SMI_SPAN_MEDIUM},
    [SMI_KIND_BIG] = {1, SMI_SPAN_BIG},
};

/* Every page that is not a block's (the header page, a medium segment's tail)
 * maps to this descriptor: it has no slots, so frees there are invalid. */
static smi_block_t no_block = {.nslots = 0, .magic = 0, .size = 0};

uint8_t *smi_block_base(const smi_block_t *b) {
  smi_segment_t *seg = smi_segment_at((uintptr_t)b);
  return (uint8_t *)seg + SMI_PAGE_SIZE + (size_t)b->index * smi_block_span(b);
}

/* Slot segments are mapped SEGMENTS_PER_MAPPING at a time: one mmap (and at
 * most two munmaps to align it) for 64 MiB of address space instead of for
 * every 4 MiB; untouched, it costs no memory. The hardened build and the NUMA
 * option map each segment on its own (at a random place; on the node of the
 * thread that needs it). An address-space limit too tight for a whole
 * mapping falls back to one segment. */
#ifdef SMI_HARDENED
#define SEGMENTS_PER_MAPPING 1
#else
#define SEGMENTS_PER_MAPPING 16
#endif

static void *segment_space(void) {
  uint8_t *seg = NULL;
  if (SEGMENTS_PER_MAPPING > 1 && !smi_os_numa_local) {
    smi_lock(&reserve_lock);
    if (!reserve_left && (reserve_next = smi_os_reserve_aligned(SEGMENTS_PER_MAPPING * SMI_SEG_SIZE, SMI_SEG_SIZE)))
      reserve_left = SEGMENTS_PER_MAPPING;
    if (reserve_left) {
      seg = reserve_next;
      reserve_next += SMI_SEG_SIZE;
      reserve_left--;
    }
    smi_unlock(&reserve_lock);
  }
  return seg ? seg : smi_os_reserve_aligned(SMI_SEG_SIZE, SMI_SEG_SIZE);
}

smi_segment_t *smi_segment_new(unsigned kind) {
  uint32_t id = smi_id_take(false);
  if (!id) return NULL;
  smi_segment_t *seg = segment_space();
  if (seg && !smi_segmap_ready(seg, SMI_SEG_SIZE)) {
    smi_os_release(seg, SMI_SEG_SIZE); /* (never counted as committed) */
    seg = NULL;
  }
  if (!seg) {
    smi_segtab[id].epoch = SMI_EPOCH_LIMIT; /* not worth keeping */
    return NULL;
  }
  seg->id = id;
  seg->kind = (uint8_t)kind;
  seg->nblocks = (uint8_t)kinds[kind].nblocks;
  seg->map_size = SMI_SEG_SIZE;
  size_t pages = kinds[kind].span / SMI_PAGE_SIZE;
  for (size_t pg = 0; pg < SMI_PAGES_PER_SEG; pg++) seg->page_block[pg] = &no_block;
  for (uint32_t i = 0; i < seg->nblocks; i++) {
    smi_block_t *b = &seg->blocks[i];
    b->index = (uint8_t)i;
    SMI_VG_HIDE(&b->start, sizeof b->start); /* it points at the first slot's object */
    b->kind = (uint8_t)kind;
    /* Never touched, so not resident: it counts as decommitted until it is cut. */
    b->flags = SMI_BLOCK_DECOMMITTED;
    for (size_t pg = 0; pg < pages; pg++) seg->page_block[1 + i * pages + pg] = b;
  }
  /* Only the header page counts as committed: each block counts once it is
   * cut (alloc/pool.c), and a medium segment's tail is never used. */
  smi_os_account_recommit(SMI_PAGE_SIZE);
  atomic_store_explicit(&smi_segtab[id].seg, seg, memory_order_release);
  __atomic_store_n(&smi_segmap[(uintptr_t)seg >> SMI_SEG_SHIFT], SMI_MAP_SLOTS, __ATOMIC_RELEASE);
  smi_hd_guard_segment(seg);
  smi_count(SMI_COUNT_SEGMENTS_MAPPED, 1);
  return seg;
}

/* Where a block's generation table and slots go.
 *
 * Default build: slots from the block's base, the table near its end (its
 * color, below), with an entry for every offset of the block that is a multiple of the slot size
 * (those past the last slot stay 0: never live). So a slot start found by the
 * magic multiplication always has its entry, and free's fast path needs no
 * bound check (smi_slot_gen). It costs the table's entries past the last slot
 * (at most one slot of the block) and its color (below).
 *
 * Hardened build: the table first, then the slots, then the guard page, so
 * that no metadata lies where a linear overflow out of the last slot reaches
 * it (the block's head is in the header page: slots/harden.h). */
/* A table's color, how far below the block's end it ends (hardened build:
 * how far above the block's base it starts, below). At
 * the end itself every block's table lies at the same offset of its 64 KiB,
 * so the tables of all blocks share a few cache sets (L1: the offset mod
 * 4 KiB; L2: mod 128 KiB), and a heap of many blocks evicts its own
 * generations there: every free and every malloc touches one. So the table
 * moves down by a number of cache lines chosen by the block's address.
 * Hardened build: 0 to 15 lines, within the spare bytes (no slot is lost).
 * Default build (table_color_default): within the spare bytes (up to 63
 * lines), and for a table of at most 49 lines (slots of 32 bytes or more)
 * by up to 15 lines even past them, at the cost of the slots there (at most
 * 960 bytes of the block, 480 on average: 0.7% of a small block). With the
 * spare bytes alone (up to 15 lines), build-l3/perf/larson -t 2 -s 0.1 under
 * callgrind's cache model (L1 48 KiB 12-way) missed L1 at a generation byte
 * on 773k of 1.69M frees and 405k of 1.94M mallocs; with this, 559k and
 * 238k; with up to 31 lines, 444k and 178k, for twice the slots lost and
 * the same CPU time (README Figures). A longer table (16-byte slots: 65
 * lines) covers all of L1's sets by itself. */
#ifdef SMI_HARDENED
#define TABLE_COLORS 16
static size_t table_color(const uint8_t *base, size_t spare) {
  size_t colors = spare / 64 + 1;
  if (colors > TABLE_COLORS) colors = TABLE_COLORS;
  uint32_t h = (uint32_t)((uintptr_t)base >> SMI_PAGE_SHIFT) * 0x9E3779B1u; /* neighbours and segments apart */
  return (size_t)(h >> 16) % colors * 64;
}
#else
#define TABLE_SPREAD_LINES 15 /* lines a short table may move down past the spare bytes */
#define TABLE_MOVE_LINES 63   /* the most it moves down (within the spare bytes) */
static size_t table_color_default(const uint8_t *base, size_t table, size_t spare) {
  size_t lines = spare / 64, tl = (table + 63) / 64;
  if (lines > TABLE_MOVE_LINES) lines = TABLE_MOVE_LINES;
  if (tl + TABLE_SPREAD_LINES <= 64 && lines < TABLE_SPREAD_LINES) lines = TABLE_SPREAD_LINES; /* (not 16 B) */
  /* the fraction of (block page) * golden ratio, scaled to the colors: neighbours get colors far apart */
  uint32_t h = (uint32_t)((uintptr_t)base >> SMI_PAGE_SHIFT) * 0x9E3779B1u;
  return (size_t)(((uint64_t)h * (lines + 1)) >> 32) * 64;
}
#endif

smi_layout_t smi_block_layout(const smi_block_t *b, size_t size) {
  uint8_t *base = smi_block_base(b);
  size_t span = smi_block_span(b);
  smi_layout_t l;
#ifdef SMI_HARDENED
  size_t align = size & -size; /* the largest power of two dividing size */
  if (align > SMI_PAGE_SIZE) align = SMI_PAGE_SIZE;
  uint8_t *end = base + span - SMI_HD_GUARD;
  l.gens = base;
  for (l.nslots = ((size_t)(end - l.gens) - 16) / (size + 1);; l.nslots--) {
    l.start = (uint8_t *)(((uintptr_t)l.gens + smi_gens_len(l.nslots) + align - 1) & ~(uintptr_t)(align - 1));
    if (l.start + l.nslots * size <= end) break;
  }
  l.table = smi_gens_len(l.nslots);
  /* The table's color (as the default build's, above): at the block's base
   * every block's table starts at offset 0 mod 4 KiB, all in the same L1
   * sets. It moves up by whole cache lines as far as no slot is lost (the
   * slots move with it only within their alignment's padding and the
   * block's spare bytes). */
  uintptr_t mask = ~(uintptr_t)(align - 1), last = (uintptr_t)end - l.nslots * size; /* the latest start */
  size_t lines = 0;
  while (lines + 1 < TABLE_COLORS && (((uintptr_t)base + (lines + 1) * 64 + l.table + align - 1) & mask) <= last)
    lines++;
  l.gens = base + table_color(base, lines * 64);
  l.start = (uint8_t *)(((uintptr_t)l.gens + l.table + align - 1) & mask);
#else
  l.start = base; /* page-aligned: every slot is aligned to its size's largest power of two */
  /* An entry for every multiple of size in the block, padded to 16. The
   * table takes room from the slots, so it holds more entries than slots:
   * entry nslots is the spare 0 smi_gens_len counts. A 16-byte class's table
   * is one page (4096 bytes, its last); smi_gens_len(4096) made it 4112,
   * over two pages, one of them touched for 16 entries. */
  l.table = ((span + size - 1) / size + 15) & ~(size_t)15;
  size_t color = table_color_default(base, l.table, span - l.table - (span - l.table) / size * size);
  l.nslots = (span - l.table - color) / size;
  l.gens = base + span - l.table - color;
#endif
  return l;
}

size_t smi_block_touched(const smi_block_t *b) {
  uint8_t *start = b->start, *gens = b->gens;         /* the layout as cut (smi_block_layout) */
  size_t below = (size_t)(start - smi_block_base(b)); /* hardened: the table */
  /* the default build's table: near the end (counted with its color, untouched, below the end: no division
   * on the extend path; the pool rounds to pages anyway) */
  size_t table = gens > start ? (size_t)(smi_block_end(b) - gens) : 0;
  return below + (size_t)b->bump * b->size + table;
}

bool smi_block_format(smi_block_t *b, unsigned cls) {
  uint32_t epoch = atomic_load_explicit(&b->epoch, memory_order_relaxed);
  if ((b->flags & SMI_BLOCK_FORMATTED) && epoch + 1 >= SMI_EPOCH_LIMIT) {
    b->flags |= SMI_BLOCK_WORN_OUT; /* its epochs are used up: it stays as it is */
    return false;
  }
  /* Hide the slots (nslots 0), then wait for frees that started before: a
   * handle validated by one of them must still name this epoch. */
  uint32_t old_n = b->nslots;
  /* (magic 0: free's fast path, which has no bound check, sees no slot start
   * either; it can only run here on this thread, from a signal handler) */
  __atomic_store_n(&b->magic, 0, __ATOMIC_RELAXED);
  atomic_store_explicit((_Atomic uint32_t *)&b->nslots, 0, memory_order_seq_cst);
  smi_block_wait_frees(b);
  if (b->flags & SMI_BLOCK_FORMATTED) {
    /* Slots were handed out before: a new epoch makes old handles stale. */
    /* Zero the old table before the epoch moves, so no reader ever pairs the
     * new epoch with an old generation. */
    smi_gens_clear(b->gens, smi_gens_len(old_n));
    atomic_store_explicit(&b->epoch, epoch + 1, memory_order_release);
  }
  uint32_t size = smi_class_size[cls];
  smi_layout_t l = smi_block_layout(b, size);
  uint8_t *gens = l.gens, *start = l.start;
  size_t n = l.nslots, table = l.table;
  /* The geometry, then nslots last (still 0 until then). A lock-free reader
   * (sm_deref) that checked nslots before it went to 0 reads the geometry
   * as a sequence lock: relaxed loads, then its acquire fence and a second
   * look at the epoch, which this release fence orders before the stores. */
  atomic_thread_fence(memory_order_release);
  SMI_VG_NOACCESS(start, n * size); /* slots: not cut yet */
  SMI_VG_DEFINED(gens, table);      /* the generations */
  /* The new table is written before it is published: a reader racing the
   * cut (it read the old nslots) reads none of the old slots' bytes there as
   * a generation. */
  smi_gens_fresh(gens, smi_gens_len(n));
  memset(gens + smi_gens_len(n), 0, table - smi_gens_len(n)); /* offsets past the last slot: never live */
  __atomic_store_n(&b->gens, gens, __ATOMIC_RELAXED);
  __atomic_store_n(&b->start, start, __ATOMIC_RELAXED);
  __atomic_store_n(&b->size, (size_t)size, __ATOMIC_RELAXED);
  b->cls = (uint8_t)cls;
  b->free = NULL;
  b->bump = 0;
  b->used = 0;
  b->retired = 0;
  atomic_store_explicit(&b->named, 0, memory_order_relaxed); /* handles of earlier epochs are stale by epoch */
  atomic_store_explicit(&b->wrapped, 0, memory_order_relaxed);
  atomic_store_explicit(&b->remote, 0, memory_order_relaxed);
  b->flags = (uint8_t)((b->flags & ~(SMI_BLOCK_DECOMMITTED | SMI_BLOCK_CLOSED)) | SMI_BLOCK_FORMATTED);
  smi_hd_block_cut(b);
  __atomic_store_n(&b->magic, SMI_RECIPROCAL(size), __ATOMIC_RELAXED); /* free's fast path: a slot start again */
  atomic_store_explicit((_Atomic uint32_t *)&b->nslots, (uint32_t)n, memory_order_release);
  return true;
}

void smi_block_reopen(smi_block_t *b) {
  b->free = NULL;
  b->used = 0;
  b->retired = 0;
  atomic_store_explicit(&b->remote, 0, memory_order_relaxed);
  smi_hd_block_reopen(b);
  /* Slots below bump, in descending order so that allocation ascends; a slot
   * whose generation reads SMI_GEN_WRAPPED wrapped: it retires in a named block. */
  bool named = atomic_load_explicit(&b->named, memory_order_relaxed);
  SMI_VG_UNDEFINED(b->start, (size_t)b->bump * b->size); /* all dead: written as free slots */
  for (uint32_t i = b->bump; i-- > 0;) {
    if (b->gens[i] == SMI_GEN_WRAPPED) {
      /* the close sweep wrapped it: the block's generations no longer tell
       * "never handed out" (report_not_live) */
      atomic_store_explicit(&b->wrapped, 1, memory_order_relaxed);
      if (named) {
        b->retired++;
        continue;
      }
      b->gens[i] = SMI_GEN_RESTART; /* count 0 is never live (generation.h) */
    }
    smi_free_t *f = (smi_free_t *)smi_slot_addr(b, i);
    f->next = smi_link_enc(b, f, (uintptr_t)b->free);
    f->gen = smi_gen_enc(b, &b->gens[i]);
    b->free = f;
  }
  SMI_VG_NOACCESS(b->start, (size_t)b->bump * b->size);
  b->flags &= (uint8_t)~SMI_BLOCK_CLOSED;
}

static size_t collect(smi_block_t *b, uint32_t bias_undo) {
  uintptr_t w = atomic_exchange_explicit(&b->remote, 0, memory_order_acquire);
  smi_free_t *p = smi_remote_head(w);
  /* An empty freelist takes the remote list as it is (its links are the
   * freelist's in the default build): no walk, whose every step was a cache
   * miss on a slot another thread wrote; malloc's pops reach those slots
   * one at a time, each with the next one prefetched. Walked when a slot on
   * it retires, when the list must go in front of other free slots, and in
   * the valgrind build (slots marked). (The hardened build's remote links are
   * encoded as its freelist's, and its pop checks every slot before it reads
   * it, as the walk would: prodcons, every free remote, walked before.) */
  uint32_t count = (smi_remote_count(w) + bias_undo) & 0xFFFF; /* (the count's 16 bits) */
  if (!SMI_VG_ON && p && count && !(w & SMI_REMOTE_MARKED) && !b->free) {
    b->free = p;
    b->used -= count;
    smi_count(SMI_COUNT_REMOTE_FREES, count);
    return count;
  }
  size_t n = 0;
  while (p) {
    if (!smi_hd_remote_ok(b, p)) break; /* hardened build: checked before it is read */
    SMI_VG_LINK_OPEN(p);
    uintptr_t link = smi_link_dec(b, p, p->next);
    smi_free_t *next = (smi_free_t *)(link & ~(uintptr_t)1);
    if (link & 1) b->retired++; /* its generation wrapped: out of service */
    else {
      p->next = smi_link_enc(b, p, (uintptr_t)b->free);
      b->free = p;
    }
    SMI_VG_LINK_CLOSE(p);
    b->used--;
    n++;
    p = next;
  }
  if (n) smi_count(SMI_COUNT_REMOTE_FREES, n);
  return n;
}

size_t smi_block_collect(smi_block_t *b) { return collect(b, 0); }
size_t smi_block_collect_biased(smi_block_t *b) { return collect(b, b->used); }

void smi_block_wait_frees(smi_block_t *b) {
  while (atomic_load_explicit(&b->inflight, memory_order_seq_cst)) sched_yield();
}

/* A step of extension: slots of a page (at least one). */
static uint32_t extend_step(const smi_block_t *b) {
  uint32_t take = (uint32_t)(4096 / b->size);
  return take ? take : 1;
}
/* The take slots from b->bump linked in front of b->free; returns the new
 * head (b is not changed). */
static smi_free_t *link_slots(smi_block_t *b, uint32_t take) {
  uint8_t *first = smi_slot_addr(b, b->bump);
  smi_free_t *head = (smi_free_t *)first;
  SMI_VG_UNDEFINED(first, (size_t)take * b->size);
  if (SMI_HD_ON) {
    head = smi_hd_extend(b, first, take); /* shuffled, encoded */
  } else {
    uint8_t *p = first, *g = &b->gens[b->bump];
    for (uint32_t i = 1; i < take; i++, p += b->size, g++) {
      ((smi_free_t *)p)->next = (smi_free_t *)(p + b->size);
      ((smi_free_t *)p)->gen = g;
    }
    ((smi_free_t *)p)->next = b->free;
    ((smi_free_t *)p)->gen = g;
  }
  SMI_VG_NOACCESS(first, (size_t)take * b->size);
  return head;
}

bool smi_block_extend(smi_block_t *b) {
  uint32_t left = b->nslots - b->bump;
  if (!left) return false;
  uint32_t take = extend_step(b);
  if (take > left) take = left;
  smi_free_t *head = link_slots(b, take);
  /* bump first: a fork (or a signal) between the two stores then leaves a few
   * slots unused, never the same slots both on the freelist and past bump */
  b->bump += take;
  atomic_signal_fence(memory_order_seq_cst);
  b->free = head;
  return true;
}

/* The steps are linked from the top down, each in front of the one above,
 * so the freelist runs up from the lowest. (The block is in no arena and on
 * no list of the pool while the pool cuts it: bump and free may be lowered
 * and set step by step.) */
void smi_block_extend_to(smi_block_t *b, uint32_t n) {
  uint32_t from = b->bump, step = extend_step(b);
  if (n > b->nslots) n = b->nslots;
  if (n <= from) return;
  smi_free_t *head = b->free;
  for (uint32_t at = from + (n - from - 1) / step * step;; at -= step) {
    b->bump = at;
    b->free = head;
    head = link_slots(b, n - at < step ? n - at : step);
    if (at == from) break;
  }
  b->bump = n;
  atomic_signal_fence(memory_order_seq_cst);
  b->free = head;
}

void smi_block_decommit(smi_block_t *b) {
  if (b->flags & SMI_BLOCK_DECOMMITTED) return;
  smi_blocks_decommit(b, 1);
}

void smi_blocks_decommit(smi_block_t *first, uint32_t n) {
  /* The generation tables go too: they read as zero afterwards, which is what
   * a fresh format wants; the epochs (in the header) survive. */
  smi_os_decommit(smi_block_base(first), (size_t)n * smi_block_span(first));
  for (uint32_t i = 0; i < n; i++)
    __atomic_store_n(&first[i].flags, (uint8_t)(first[i].flags | SMI_BLOCK_DECOMMITTED), __ATOMIC_RELAXED);
  smi_count(SMI_COUNT_BLOCKS_PURGED, n);
}

/* What a release unmaps of a block: all but the pages where any cut of it
 * keeps its generation table, which a stale handle may still read. Default
 * build: the table lies in the block's last 4096 bytes (16-byte slots in a
 * small block) plus its color (at most 4032), so the last two pages stay; hardened build: it
 * lies at the start, so the first page stays. */
#ifdef SMI_HARDENED
#define TABLE_PAGES 1
static uint8_t *block_tail(const smi_block_t *b) { return smi_block_base(b) + TABLE_PAGES * SMI_OS_PAGE; }
#else
#define TABLE_PAGES 2
_Static_assert(((SMI_SPAN_SMALL / 16 + 15) & ~15) + TABLE_MOVE_LINES * 64 <= TABLE_PAGES * SMI_OS_PAGE,
               "a table, moved down by its color, fits the kept pages");
static uint8_t *block_tail(const smi_block_t *b) { return smi_block_base(b); }
#endif
static size_t block_tail_len(const smi_block_t *b) { return smi_block_span(b) - TABLE_PAGES * SMI_OS_PAGE; }

void smi_segment_release(smi_segment_t *seg) {
  for (uint32_t i = 0; i < seg->nblocks; i++) {
    smi_block_t *b = &seg->blocks[i];
    atomic_store_explicit((_Atomic uint32_t *)&b->nslots, 0, memory_order_seq_cst);
    smi_block_wait_frees(b);
    smi_block_decommit(b);
    smi_os_release(block_tail(b), block_tail_len(b));
  }
  /* a medium segment's tail past its last block is never used */
  uint8_t *end = smi_block_base(&seg->blocks[seg->nblocks - 1]) + smi_block_span(&seg->blocks[0]);
  smi_os_release(end, (size_t)((uint8_t *)seg + SMI_SEG_SIZE - end));
}

bool smi_segment_reacquire(smi_segment_t *seg) {
  for (uint32_t i = 0; i < seg->nblocks; i++) {
    if (smi_os_reacquire(block_tail(&seg->blocks[i]), block_tail_len(&seg->blocks[i]))) continue;
    while (i-- > 0) smi_os_release(block_tail(&seg->blocks[i]), block_tail_len(&seg->blocks[i]));
    return false;
  }
  smi_hd_guard_segment(seg); /* the guard pages were unmapped with the rest */
  return true;
}
