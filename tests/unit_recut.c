/* unit_recut.c: a warm block the pool cuts for another class (alloc/pool.c,
 * smi_pool_take) is extended over the slots it handed out before only where
 * the pool's room for ending threads can count them: a recent peak of 16 MiB
 * or more (EXIT_PEAK_MIN). In a small heap the extension wrote the freelist
 * links over pages that tidy may have given back, and faulted them in for
 * nothing (threadlife -t 2: 6384 KiB peak RSS with it, 6156 without). */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/internal.h"
#include "testutil.h"

#define FIRST 1024  /* the class the block is cut for first */
#define SECOND 2048 /* the class it is cut for again: one this thread never used */

static void *recut_in_a_small_heap(void *arg) {
  size_t *out = arg;
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
  out[0] = old_top;
  out[1] = (size_t)b->bump * b->size;
  sm_free(q);
  for (size_t i = 0; i < n; i++)
    if (smi_block_of(objs[i]) != b) sm_free(objs[i]);
  free(objs);
  return NULL;
}

Test(recut, a_small_heap_extends_a_recut_block_as_it_needs) {
  size_t r[2];
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, recut_in_a_small_heap, r), 0);
  pthread_join(t, NULL);
  cr_log_info("handed out %zu bytes as %d, %zu bytes as %d after the recut", r[0], FIRST, r[1], SECOND);
  cr_assert_gt(r[0], (size_t)32 << 10, "the first cut handed out %zu bytes", r[0]);
  cr_assert_leq(r[1], (size_t)8 << 10, "the recut block was extended to %zu bytes at once (old top %zu)", r[1], r[0]);
}
