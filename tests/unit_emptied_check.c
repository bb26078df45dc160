/* unit_emptied_check.c: the owner's free on free's slow path that empties
 * its block hands the block to the pool (smi_block_emptied), where another
 * thread can take it and cut it anew at once. The debug build's block check
 * that followed that free read the block afterwards, racing its new owner: it
 * reported corruption that was not there ("used disagrees with the slots",
 * "free slot has a live generation", "generation table is not where the
 * layout puts it"), about one run in 15 of tests/sweep_prog.c atfork2 with
 * SLOTMALLOC_DEBUG=ON, forks or not. The check now runs only while the block
 * is still the thread's.
 *
 * smi_block_emptied is wrapped at link time (tests/CMakeLists.txt): once the
 * real one has given the block to the pool, the wrapper plays the other
 * thread that took it and handed out a slot (its count up, the slot's
 * generation not live yet), so the check, if it still ran, would read that
 * moment every time, not when a race happens to land there. Meaningful in the
 * debug build (the check is compiled out of the others). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdint.h>

#include "alloc/internal.h"

static smi_block_t *watched;
static bool taken; /* the wrapper played the other thread */

void __real_smi_block_emptied(smi_block_t *b);
void __wrap_smi_block_emptied(smi_block_t *b) {
  __real_smi_block_emptied(b);
  if (b != watched || __atomic_load_n(&b->owner, __ATOMIC_ACQUIRE) != NULL) return; /* (not in the pool) */
  b->used = 1; /* another thread's allocation from it, under way */
  taken = true;
}

Test(emptied_check, an_owner_free_that_empties_its_block_does_not_check_it_afterwards) {
  enum { N = 4096 };
  static void *obj[N];
  size_t size = 3000; /* (a class the test runner does not use) */
  obj[0] = sm_malloc(size);
  cr_assert_not_null(obj[0]);
  smi_block_t *first = smi_block_of(obj[0]);
  /* fill the first block, until an object lands in another (first is then full, not current) */
  int n = 1;
  while (n < N && (obj[n] = sm_malloc(size)) != NULL && smi_block_of(obj[n]) == first) n++;
  cr_assert(n < N && obj[n] != NULL, "the first block never filled");
  void *other = obj[n];
  for (int k = 1; k < n; k++) sm_free(obj[k]); /* the first into a full block, then local */
  cr_assert_eq(first->used, 1, "used %u", first->used);
  watched = first;
  smi_free_slow(obj[0]); /* the owner's free on the slow path (a wrapped generation takes it): the last */
  watched = NULL;
  if (!SMI_HD_ON) cr_assert(taken, "the block did not go to the pool");
  if (taken) first->used = 0; /* the other thread is done with it */
  sm_free(other);
}
