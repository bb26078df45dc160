/* unit_review2.c: checks from the second review of the session's changes.
 *
 * review2::block_at_span_finds_every_address_of_a_slot_segment: free's fast
 * path finds a pointer's block from its span by a multiplication and a
 * scaled load (smi_block_at_span, 1dffb32) instead of the segment's base and
 * the masked page index (smi_block_at). For every 64 KiB page of a segment of
 * each kind (the header page, every block's pages, a medium segment's unused
 * tail) and addresses at the page's first, middle and last bytes, both must
 * name the same entry of the segment's page table. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/internal.h"
#include "slots/os.h"

/* The generic (non-x86) form of smi_block_at_span, as slots/segment.h writes it. */
static smi_block_t *block_at_span_generic(uintptr_t span, uintptr_t u) {
  uintptr_t base = span * (SMI_SEG_SIZE - SMI_PAGES_PER_SEG * sizeof(smi_block_t *));
  return *(smi_block_t *const *)(base + offsetof(smi_segment_t, page_block) +
                                 (u >> SMI_PAGE_SHIFT) * sizeof(smi_block_t *));
}

Test(review2, block_at_span_finds_every_address_of_a_slot_segment) {
  const size_t sizes[] = {64, 16384, 200000}; /* small, medium and big blocks */
  const uintptr_t offsets[] = {0, 8, 4096, SMI_PAGE_SIZE / 2 + 24, SMI_PAGE_SIZE - 1};
  unsigned kinds_seen = 0;
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    void *p = sm_malloc(sizes[k]);
    cr_assert_not_null(p);
    uintptr_t u = (uintptr_t)p;
    cr_assert_eq(smi_map_of(u), SMI_MAP_SLOTS, "%zu B: not in a slot segment", sizes[k]);
    smi_segment_t *seg = smi_segment_at(u);
    kinds_seen |= 1u << seg->kind;
    cr_assert_eq(smi_block_at_span(u >> SMI_SEG_SHIFT, u), smi_block_of(p));
    for (uintptr_t pg = 0; pg < SMI_PAGES_PER_SEG; pg++) {
      for (size_t o = 0; o < sizeof offsets / sizeof *offsets; o++) {
        uintptr_t a = (uintptr_t)seg + pg * SMI_PAGE_SIZE + offsets[o];
        cr_assert_eq(a >> SMI_SEG_SHIFT, u >> SMI_SEG_SHIFT);
        smi_block_t *want = seg->page_block[pg];
        cr_assert_eq(smi_block_at(seg, a), want);
        cr_assert_eq(smi_block_at_span(a >> SMI_SEG_SHIFT, a), want, "kind %u, page %zu, offset %zu", seg->kind,
                     (size_t)pg, (size_t)offsets[o]);
        cr_assert_eq(block_at_span_generic(a >> SMI_SEG_SHIFT, a), want);
      }
    }
    sm_free(p);
  }
  cr_assert_eq(kinds_seen, (1u << SMI_KIND_SMALL) | (1u << SMI_KIND_MEDIUM) | (1u << SMI_KIND_BIG));
}

/* ---- the byte cap: sm_arena_set_limit while an object is being freed -------------
 * A free under a cap (every free takes free_remote then: the owner tag is
 * NULL) makes the slot's generation dead, then reads a->limit and uncharges
 * the slot (smi_arena_uncharge). sm_arena_set_limit recounts the arena's
 * live bytes from the generations (own_bytes) and stores the count. A
 * set_limit that falls between the free's generation and its uncharge counts
 * the object as gone, and the uncharge then takes it off a second time: the
 * count of an arena that held only that object wraps below zero, and every
 * later allocation in the arena fails with ENOMEM, under any cap (before the
 * fix in alloc/tree.c: 2^64 - 1 KiB counted, 100 bytes refused). A new cap
 * over an old one now keeps the count. smi_arena_uncharge is wrapped
 * (tests/CMakeLists.txt) to hold the freeing thread at that point while the
 * owner raises the cap. */
void __real_smi_arena_uncharge(sm_arena_t *a, size_t bytes);
static _Atomic int hold_uncharge; /* 1: the next uncharge waits (2: it is waiting, 3: go on) */
void __wrap_smi_arena_uncharge(sm_arena_t *a, size_t bytes) {
  int one = 1;
  if (atomic_compare_exchange_strong(&hold_uncharge, &one, 2))
    while (atomic_load(&hold_uncharge) != 3) sched_yield();
  __real_smi_arena_uncharge(a, bytes);
}

static void *free_it(void *p) {
  sm_free(p);
  return NULL;
}

Test(review2, set_limit_while_an_object_is_freed_keeps_the_count) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  cr_assert_eq(sm_arena_set_limit(a, 1 << 20), 0);
  void *p = sm_arena_malloc(a, 1000);
  cr_assert_not_null(p);
  atomic_store(&hold_uncharge, 1);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, free_it, p), 0);
  while (atomic_load(&hold_uncharge) != 2) sched_yield(); /* the slot is dead, its uncharge not done */
  cr_assert_eq(sm_arena_set_limit(a, 2 << 20), 0);        /* the owner raises the cap meanwhile */
  atomic_store(&hold_uncharge, 3);
  pthread_join(t, NULL);
  size_t counted = atomic_load(&a->limited_bytes);
  cr_expect_eq(counted, 0, "the empty arena counts %zu bytes", counted);
  void *q = sm_arena_malloc(a, 100);
  cr_expect_not_null(q, "an empty arena under a 2 MiB cap refused 100 bytes (errno %d)", errno);
  if (q) sm_free(q);
  sm_arena_release(a);
}

/* The same for a large object under the first cap: its free (alloc/large.c
 * dispose) took it off its arena's list under the arena's lock, let go of
 * the lock, and only then read a->limit and took its size off the count. A
 * first cap set between the two counts the arena without it (it is on no
 * list), and the free then takes it off the count again: the count of an
 * arena that held only that object wraps below zero, and the arena refuses
 * every allocation. The freeing thread is held right after its unlock
 * (smi_lock_wake wrapped: a thread that slept on a lock takes it marked
 * parked, so its unlock calls the wake). Fixed: dispose reads a->limit and
 * uncharges before the unlock, as set_limit recounts under that lock (and
 * smi_large_malloc charges under the lock that adds the object). */
void __real_smi_lock_wake(smi_lock_t *l);
static __thread bool hold_after_unlock; /* this thread's next wake waits for hold_wake == 3 */
static _Atomic int hold_wake;           /* 1: armed, 2: the freeing thread is held, 3: go on */
void __wrap_smi_lock_wake(smi_lock_t *l) {
  __real_smi_lock_wake(l);
  int one = 1;
  if (hold_after_unlock && atomic_compare_exchange_strong(&hold_wake, &one, 2))
    while (atomic_load(&hold_wake) != 3) sched_yield();
}

static void *free_held_after_unlock(void *p) {
  hold_after_unlock = true;
  sm_free(p);
  return NULL;
}

Test(review2, first_cap_while_a_large_object_is_freed_keeps_the_count) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  void *p = sm_arena_malloc(a, 1 << 20);
  cr_assert_not_null(p);
  cr_assert_eq(smi_map_of((uintptr_t)p), SMI_MAP_LARGE);
  atomic_store(&hold_wake, 1);
  smi_lock(&a->lock); /* the free waits for it, asleep */
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, free_held_after_unlock, p), 0);
  while (!(atomic_load(&a->lock.holder) & SMI_LOCK_PARKED)) sched_yield();
  smi_unlock(&a->lock);
  while (atomic_load(&hold_wake) != 2) sched_yield(); /* off the list, the lock let go, the count not yet */
  cr_assert_eq(sm_arena_set_limit(a, 64 << 20), 0);
  atomic_store(&hold_wake, 3);
  pthread_join(t, NULL);
  size_t counted = atomic_load(&a->limited_bytes);
  cr_expect_eq(counted, 0, "the empty arena counts %zu bytes", counted);
  void *q = sm_arena_malloc(a, 100);
  cr_expect_not_null(q, "an empty arena under a 64 MiB cap refused 100 bytes (errno %d)", errno);
  if (q) sm_free(q);
  sm_arena_release(a);
}

/* ---- a released segment keeps its generation tables' pages ------------------------
 * smi_segment_release unmaps every block but the pages where any cut of it
 * keeps its generation table (slots/segment.c block_tail: the default build
 * keeps the last two pages, the hardened build the first one), since a stale
 * handle's sm_deref still reads the table and must never fault. The tables'
 * colors (the default build's moves it down from the block's end by up to 63
 * cache lines, ee9114b; the hardened build's, 1facd97, up from its base) must keep
 * every table of every class inside those pages, for every block's address. */
Test(review2, every_table_lies_in_the_pages_a_release_keeps) {
  size_t checked = 0;
  for (unsigned kind = 0; kind < SMI_KINDS_OF_BLOCKS; kind++) {
    smi_segment_t *seg = smi_segment_new(kind);
    cr_assert_not_null(seg);
    for (unsigned cls = 0; cls < SMI_CLASSES; cls++) {
      if (smi_kind_of_class(cls) != kind) continue;
      for (uint32_t i = 0; i < seg->nblocks; i++) {
        smi_block_t *b = &seg->blocks[i];
        uint8_t *base = smi_block_base(b), *end = base + smi_block_span(b);
        smi_layout_t l = smi_block_layout(b, smi_class_size[cls]);
        cr_assert_geq(l.gens, base);
        cr_assert_leq(l.gens + l.table, end);
#ifdef SMI_HARDENED
        cr_assert_leq(l.gens + l.table, base + SMI_OS_PAGE,
                      "class %u (%zu B), block %u: table [%zu, %zu) of the block", cls, (size_t)smi_class_size[cls],
                      i, (size_t)(l.gens - base), (size_t)(l.gens + l.table - base));
#else
        cr_assert_geq(l.gens, end - 2 * SMI_OS_PAGE, "class %u (%zu B), block %u: table [%zu, %zu) of the block", cls,
                      (size_t)smi_class_size[cls], i, (size_t)(l.gens - base), (size_t)(l.gens + l.table - base));
#endif
        checked++;
      }
    }
  }
  cr_assert_gt(checked, 96);
}
