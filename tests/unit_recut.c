/* unit_recut.c: a warm block the pool cuts for another class (alloc/pool.c,
 * smi_pool_take) is extended over the slots it handed out before only where
 * the pool's room for ending threads can count them: a recent peak of 16 MiB
 * or more (EXIT_PEAK_MIN). In a small heap the extension wrote the freelist
 * links over pages that tidy may have given back, and faulted them in for
 * nothing (threadlife -t 2: 6384 KiB peak RSS with it, 6156 without). In a
 * big heap it hands the lowest of those slots out first
 * (smi_block_extend_to); in a small heap a medium or big block gives their
 * pages back (drop_old_slots). */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "testutil.h"

#define FIRST 1024  /* the class the block is cut for first */
#define SECOND 2048 /* the class it is cut for again: one this thread never used */

typedef struct {
  int big;         /* hold BIG_HEAP of large objects live meanwhile: a recent peak past 16 MiB */
  size_t old_top;  /* the bytes the block handed out as FIRST */
  size_t new_top;  /* the bytes it handed out as SECOND right after the recut */
  size_t first_at; /* where in the block the first SECOND object lies (from its first slot) */
} recut_t;
#define BIG_HEAP 20 /* MiB */

static void *recut(void *arg) {
  recut_t *out = arg;
  void *big[BIG_HEAP] = {0};
  for (int i = 0; out->big && i < BIG_HEAP; i++) cr_assert_not_null(big[i] = sm_malloc(MiB));
  /* fill one block of FIRST and go on into the next: the first is not current */
  void **objs = calloc(4096, sizeof *objs);
  cr_assert_not_null(objs);
  size_t n = 0;
  cr_assert_not_null(objs[n] = sm_malloc(FIRST));
  smi_block_t *b = smi_block_of(objs[n++]);
  cr_assert_eq(smi_kind_of_class(smi_class_of(FIRST)), smi_kind_of_class(smi_class_of(SECOND)),
               "the two classes must share a kind of block");
  for (;;) {
    cr_assert_lt(n, 4096);
    cr_assert_not_null(objs[n] = sm_malloc(FIRST));
    if (smi_block_of(objs[n++]) != b) break;
  }
  size_t old_top = (size_t)b->bump * b->size;
  /* empty it: it goes to the pool at once, warm */
  for (size_t i = 0; i < n; i++)
    if (smi_block_of(objs[i]) == b) sm_free(objs[i]);
  void *q = sm_malloc(SECOND);
  cr_assert_not_null(q);
  cr_assert_eq(smi_block_of(q), b, "the warm block should be the one cut for the new class");
  out->old_top = old_top;
  out->new_top = (size_t)b->bump * b->size;
  out->first_at = (size_t)((uint8_t *)q - b->start);
  sm_free(q);
  for (size_t i = 0; i < n; i++)
    if (smi_block_of(objs[i]) != b) sm_free(objs[i]);
  free(objs);
  for (int i = 0; i < BIG_HEAP; i++) sm_free(big[i]);
  return NULL;
}

static recut_t run_recut(int big) {
  recut_t r = {.big = big};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, recut, &r), 0);
  pthread_join(t, NULL);
  cr_log_info("handed out %zu bytes as %d, %zu bytes as %d after the recut, the first at %zu", r.old_top, FIRST,
              r.new_top, SECOND, r.first_at);
  cr_assert_gt(r.old_top, (size_t)32 << 10, "the first cut handed out %zu bytes", r.old_top);
  return r;
}

Test(recut, a_small_heap_extends_a_recut_block_as_it_needs) {
  recut_t r = run_recut(0);
  cr_assert_leq(r.new_top, (size_t)8 << 10, "the recut block was extended to %zu bytes at once (old top %zu)",
                r.new_top, r.old_top);
}

/* Extended a page at a time, each page's slots in front of the last's, the
 * recut block handed out its highest old slot first (at 61440 of 63488),
 * and a growing heap filled it from the top: its free slots stayed below
 * the last in use, where tidy cannot bring bump down over them. Lowest first
 * (the hardened build shuffles a page's slots: within the first page). */
Test(recut, a_big_heap_hands_a_recut_blocks_old_slots_out_lowest_first) {
  recut_t r = run_recut(1);
  cr_assert_geq(r.new_top + SECOND, r.old_top, "the recut block was extended to %zu bytes (old top %zu)", r.new_top,
                r.old_top);
  cr_assert_lt(r.first_at, (size_t)4096, "the first object after the recut lies at %zu of %zu", r.first_at,
               r.new_top);
}

/* A small heap: a warm medium block recut for another class gives the pages
 * of its old slots back at once, past the new cut's first page and below its
 * generation table (alloc/pool.c, drop_old_slots). Kept, they stayed
 * resident, uncounted, under a class that used a slot of them (threadlife:
 * blocks of one live object with 40-260 KiB resident). */
#define MED_FIRST (8 << 10)
typedef struct {
  smi_block_t *b;
  unsigned cls;
} filled_t;
static void *fill_medium(void *arg) {
  filled_t *out = arg;
  cr_assert_eq(smi_kind_of_class(smi_class_of(MED_FIRST)), SMI_KIND_MEDIUM);
  void **objs = calloc(1024, sizeof *objs);
  cr_assert_not_null(objs);
  size_t n = 0;
  cr_assert_not_null(objs[n] = sm_malloc(MED_FIRST));
  smi_block_t *b = smi_block_of(objs[n++]);
  while (b->bump < b->nslots || b->free) { /* every slot of it handed out, every page written */
    cr_assert_lt(n, 1024);
    cr_assert_not_null(objs[n++] = sm_malloc(MED_FIRST));
  }
  for (size_t i = 0; i < n; i++)
    if (smi_block_of(objs[i]) == b) memset(objs[i], 1, MED_FIRST);
  for (size_t i = 0; i < n; i++) sm_free(objs[i]);
  free(objs);
  out->b = b;
  out->cls = b->cls; /* (the hardened build's class is one up: its canary) */
  return NULL;       /* its empty blocks go to the pool, warm */
}

Test(recut, a_small_heap_gives_a_recut_medium_blocks_old_pages_back) {
  filled_t f;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, fill_medium, &f), 0);
  pthread_join(t, NULL);
  smi_block_t *b = f.b;
  cr_assert(b->cls == f.cls && b->bump == b->nslots, "the block was cut again already");
  uint8_t *old_top = b->start + (size_t)b->bump * b->size;
  /* classes this thread never used, until the pool cuts that block for one
   * (it takes the cold blocks of its segment first) */
  void *q = NULL;
  for (size_t size = MED_FIRST + 4096; size <= (64 << 10) && !q; size += 4096) {
    cr_assert_not_null(q = sm_malloc(size));
    if (smi_block_of(q) != b) q = NULL; /* (left live: its class keeps its block) */
  }
  cr_assert_not_null(q, "the pool never cut the warm block for another class");
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t)b->start + pg) & ~(pg - 1), hi = (uintptr_t)old_top & ~(pg - 1);
  if (b->gens > b->start && hi > ((uintptr_t)b->gens & ~(pg - 1))) hi = (uintptr_t)b->gens & ~(pg - 1);
  cr_assert_gt(hi, lo + 64 * pg, "old slots up to %p, the new cut from %p", (void *)old_top, (void *)b->start);
  unsigned char vec[1024];
  cr_assert_eq(mincore((void *)lo, hi - lo, vec), 0);
  size_t resident = 0, pages = (hi - lo) / pg;
  for (size_t i = 0; i < pages; i++) resident += vec[i] & 1;
  cr_log_info("%zu of the %zu pages of the old slots resident after the cut for %zu-byte slots", resident, pages,
              b->size);
  /* (a slot of the new class: its first page and, hardened, the canary's at its end) */
  cr_assert_leq(resident, 2, "%zu of the %zu pages of the old slots stayed resident after the recut", resident,
                pages);
}
