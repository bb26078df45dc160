/* unit_medium.c: malloc of sizes past the direct bins (1 KiB < size <= 256
 * KiB: alloc/arena.c smi_malloc_miss). Their class has no direct bin, so
 * smi_malloc misses on every one of them; the miss pops the class's current
 * block as smi_malloc pops a direct bin's, and only an empty freelist (or a
 * cap, profiling, a closed arena, and every 16th, for the upkeep's cadence)
 * takes the whole slow path (smi_malloc_generic, counted in
 * SMI_COUNT_SLOW_CALLS). Before, every such malloc took it. Linked with the
 * static library: the count is read directly. */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/internal.h"
#include "testutil.h"
#include "slots/counters.h"

#define LIVE 512
#define STEPS 40000

static tu_rng_t rng = {88172645463325252u};
static size_t below(size_t n) { return tu_rng_range(&rng, 0, n - 1); }

/* the sizes of alloctest past 1 KiB: mostly 1-2 KiB, a few up to 32 KiB */
static size_t medium_size(void) { return below(8) ? 1025 + below(1024) : 2048 + below(30 * 1024); }

typedef struct {
  uint32_t slow; /* mallocs of the replacements that took the whole slow path */
  bool skipped;  /* the valgrind build: every malloc takes the slow path */
} result_t;

static void fill(unsigned char *p, size_t n, unsigned char v) {
  p[0] = v;
  p[n / 2] = v;
  p[n - 1] = v;
}
static bool holds(const unsigned char *p, size_t n, unsigned char v) {
  return p[0] == v && p[n / 2] == v && p[n - 1] == v;
}

static void *replace_at_random(void *arg) {
  result_t *r = arg;
  static __thread void *objs[LIVE];
  static __thread size_t sizes[LIVE];
  for (size_t i = 0; i < LIVE; i++) {
    sizes[i] = medium_size();
    cr_assert_not_null(objs[i] = sm_malloc(sizes[i]));
    fill(objs[i], sizes[i], (unsigned char)i);
  }
  sm_arena_t *a = smi_tls_cur;
  if (a->limit) { /* the valgrind build caps every arena (alloc/arena.c smi_arena_init) */
    r->skipped = true;
    for (size_t i = 0; i < LIVE; i++) sm_free(objs[i]);
    return NULL;
  }
  smi_slow_calls_flush(); /* (this thread's pending count: no other thread allocates meanwhile) */
  size_t slow_before = smi_count_read(SMI_COUNT_SLOW_CALLS);
  for (size_t s = 0; s < STEPS; s++) {
    size_t i = below(LIVE);
    /* every object still holds what was written into it: no slot was handed out twice */
    cr_assert(holds(objs[i], sizes[i], (unsigned char)i), "object %zu (%zu B) was overwritten", i, sizes[i]);
    sm_free(objs[i]);
    sizes[i] = medium_size();
    cr_assert_not_null(objs[i] = sm_malloc(sizes[i]));
    cr_assert_geq(sm_usable_size(objs[i]), sizes[i]);
    cr_assert_eq((uintptr_t)objs[i] % 16, 0);
    fill(objs[i], sizes[i], (unsigned char)i);
  }
  smi_slow_calls_flush();
  r->slow = (uint32_t)(smi_count_read(SMI_COUNT_SLOW_CALLS) - slow_before);
  for (size_t i = 0; i < LIVE; i++) {
    cr_assert(holds(objs[i], sizes[i], (unsigned char)i));
    sm_free(objs[i]);
  }
  return NULL;
}

Test(medium_path, mallocs_past_1k_pop_the_current_block_without_the_slow_path, .timeout = 120) {
  if (SMI_HD_ON) cr_skip_test("the hardened build's malloc has a path of its own (smi_hd_malloc_top)");
  pthread_t t; /* a thread of its own: a root arena of its own */
  result_t r = {0};
  cr_assert_eq(pthread_create(&t, NULL, replace_at_random, &r), 0);
  pthread_join(t, NULL);
  if (r.skipped) cr_skip_test("this build takes the slow path for every malloc (valgrind build)");
  cr_log_info("%u slow calls in %d medium mallocs", r.slow, STEPS);
  /* every 16th (the upkeep's cadence), and the refills: a block's freelist
   * run out (extend cuts a page of slots, one slot of 4 KiB or more), a block
   * switch */
  cr_assert_lt(r.slow, STEPS / 4, "%u of %d mallocs past 1 KiB took the whole allocation slow path", r.slow, STEPS);
}

/* The pop keeps the direct bins' conditions: a capped arena counts every
 * malloc against its cap, also when its current block has free slots. */
Test(medium_path, a_capped_arena_counts_every_medium_malloc) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_t *prev = sm_arena_enter(a);
  void *warm = sm_malloc(2000); /* the class of 2 KiB gets a current block with free slots */
  cr_assert_not_null(warm);
  sm_free(warm);
  cr_assert_eq(sm_arena_set_limit(a, 2 * 2048), 0);
  void *p = sm_malloc(2000), *q = sm_malloc(2000);
  cr_assert_not_null(p);
  cr_assert_not_null(q);
  errno = 0;
  void *over = sm_malloc(2000); /* a third slot of 2 KiB passes the cap */
  int err = errno;
  sm_arena_enter(prev);
  cr_assert_null(over, "a malloc past the cap of a capped arena succeeded");
  cr_assert_eq(err, ENOMEM);
  sm_free(p);
  sm_free(q);
  sm_arena_release(a);
}

/* A closed arena's current blocks are none: plain malloc on a thread that had
 * entered it goes on in the thread's root arena. */
Test(medium_path, after_the_entered_arena_closes_malloc_goes_on_in_the_root) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_t *prev = sm_arena_enter(a);
  void *p = sm_malloc(3000);
  cr_assert_not_null(p);
  cr_assert_eq(sm_arena_of(p), a);
  sm_arena_close(a);
  void *q = sm_malloc(3000);
  cr_assert_not_null(q);
  cr_assert_neq(sm_arena_of(q), a);
  sm_free(q);
  sm_arena_enter(prev);
  sm_arena_release(a);
}
