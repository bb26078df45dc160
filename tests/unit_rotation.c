/* unit_rotation.c: the blocks of a class take turns (alloc/arena.c
 * switch_block). A live set replaced at random over a few blocks of a class
 * (larson, a server's cache): every free lands in a random block of the
 * class, every malloc takes from the current one, which runs out every few
 * dozen mallocs and is replaced by the block that gathered the most frees
 * meanwhile. The block given up goes to the tail of the avail list, where
 * its owner's frees into it stay on the fast path; on the full list (as
 * before), the owner's first free into it took free's slow path and the
 * arena's lock at every switch. Linked with the static library, smi_free_slow
 * wrapped (tests/CMakeLists.txt) to count the frees that reach it. */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/internal.h"
#include "testutil.h"

#define SIZE 512
#define STEPS 100000

void __real_smi_free_slow(void *p);
static __thread uint32_t slow_frees; /* the calling thread's frees that reached smi_free_slow */
void __wrap_smi_free_slow(void *p) {
  slow_frees++;
  __real_smi_free_slow(p);
}

static tu_rng_t rng = {88172645463325252u};
static size_t below(size_t n) { return tu_rng_range(&rng, 0, n - 1); }

typedef struct {
  uint32_t slow_frees, slow_mallocs; /* in the replacements */
  size_t per_block;
} result_t;

static void *replace_at_random(void *arg) {
  result_t *r = arg;
  void *probe = sm_malloc(SIZE);
  cr_assert_not_null(probe);
  size_t per_block = smi_block_of(probe)->nslots;
  sm_free(probe);
  size_t live = per_block * 3; /* about 4 blocks' worth of slots in the end, a quarter of them free */
  void **objs = calloc(live, sizeof *objs);
  cr_assert_not_null(objs);
  for (size_t i = 0; i < live; i++) cr_assert_not_null(objs[i] = sm_malloc(SIZE));
  sm_arena_t *a = smi_tls_cur;
  uint32_t mallocs_before = a->slow_calls, frees_before = slow_frees;
  for (size_t s = 0; s < STEPS; s++) {
    size_t i = below(live);
    sm_free(objs[i]);
    cr_assert_not_null(objs[i] = sm_malloc(SIZE));
  }
  *r = (result_t){.slow_frees = slow_frees - frees_before,
                  .slow_mallocs = a->slow_calls - mallocs_before,
                  .per_block = per_block};
  for (size_t i = 0; i < live; i++) sm_free(objs[i]);
  free(objs);
  return NULL;
}

Test(block_rotation, the_owners_frees_into_a_block_it_left_stay_fast, .timeout = 120) {
  pthread_t t; /* a thread of its own: a root arena with nothing of the class yet */
  result_t r;
  cr_assert_eq(pthread_create(&t, NULL, replace_at_random, &r), 0);
  pthread_join(t, NULL);
  cr_log_info("%u slow frees and %u slow mallocs in %d replacements (%zu slots a block)", r.slow_frees,
              r.slow_mallocs, STEPS, r.per_block);
  /* the switches are there (what the test is about) ... */
  cr_assert_gt(r.slow_mallocs, STEPS / 100, "only %u block switches in %d replacements", r.slow_mallocs, STEPS);
  /* ... and the frees do not follow them */
  cr_assert_lt(r.slow_frees, r.slow_mallocs / 16 + 8,
               "%u of %d frees took the slow path, with %u block switches (a block left by a switch went to "
               "the full list, and the owner's first free into it took the lock)",
               r.slow_frees, STEPS, r.slow_mallocs);
}

/* The block a switch gives up is its owner's as before, on the avail list. */
static void *switch_once(void *arg) {
  (void)arg;
  void *first = sm_malloc(SIZE);
  cr_assert_not_null(first);
  smi_block_t *b = smi_block_of(first);
  void *objs[1024];
  size_t n = 0;
  for (;;) { /* until an object opens another block */
    cr_assert_lt(n, 1024);
    cr_assert_not_null(objs[n] = sm_malloc(SIZE));
    if (smi_block_of(objs[n++]) != b) break;
  }
  sm_arena_t *a = smi_tls_cur;
  cr_assert_neq(a->current[b->cls], b);
  cr_assert_eq(b->owner, a, "the block left is tagged %p, not its arena's %p", (void *)b->owner, (void *)a);
  cr_assert(smi_blist_holds(&a->avail[b->cls], b), "the block left is not on its avail list");
  uint32_t before = slow_frees;
  sm_free(first); /* the owner's free into it: the fast path */
  cr_assert_eq(slow_frees, before);
  for (size_t i = 0; i < n; i++) sm_free(objs[i]);
  return NULL;
}

Test(block_rotation, a_block_left_by_a_switch_stays_available) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, switch_once, NULL), 0);
  pthread_join(t, NULL);
}
