/* unit_drained.c: the blocks a thread leaves with live objects when it ends
 * (abandoned) go back to the pool as soon as other threads have freed their
 * last objects, on the free that does it (alloc/pool.c, smi_pool_drained: the
 * remote count of an abandoned block starts at minus its live objects), not
 * at the next upkeep, which a program that afterwards makes only fast-path
 * calls never reaches. Before, a thread that allocated 500 MiB and ended, all
 * of it freed by the main thread, left 491 MiB resident for good. */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "alloc/internal.h"
#include "testutil.h"

#define OBJECTS 100000 /* of 256 bytes: about 25 MiB in small blocks */
#define SIZE 256
#define DELAY_MS 50 /* the purge delay the tests set */

static void *objs[OBJECTS];

static void *fill(void *arg) {
  (void)arg;
  for (size_t i = 0; i < OBJECTS; i++) cr_assert_not_null(objs[i] = sm_malloc(SIZE));
  return NULL;
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0) {
  }
}

static sm_stats_t stats(void) {
  sm_stats_t s;
  sm_arena_stats(NULL, &s);
  return s;
}

/* A thread fills objs and ends; then the pool's window for threads that
 * follow (the purge delay after a thread's exit, which keeps empty blocks
 * warm for them) passes. */
static void end_filler(void) {
  smi_opt.purge_delay_ms = DELAY_MS;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, fill, NULL), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  sleep_ms(3 * DELAY_MS);
}

typedef struct {
  size_t from, step;
} share_t;

static void *free_share(void *arg) {
  const share_t *s = arg;
  for (size_t i = s->from; i < OBJECTS; i += s->step) sm_free(objs[i]);
  return NULL;
}

Test(drained, an_ended_threads_blocks_go_back_when_their_last_objects_are_freed) {
  end_filler();
  sm_stats_t held = stats();
  cr_assert_gt(held.bytes_committed, (size_t)30 << 20, "committed %zu", held.bytes_committed);
  share_t all = {0, 1};
  free_share(&all);
  sm_stats_t after = stats();
  /* no allocation slow path ran (no upkeep): the frees did it */
  cr_assert_eq(after.slow_calls, held.slow_calls);
  /* What stays: the pool's warm reserve (at most 1.5 times a quarter of
   * the heap's recent peak: alloc/pool.c, keep_warm_bytes_bounded), the main
   * thread's blocks, and those whose frees wait in its remote batches (at
   * most 4 MiB of blocks). Measured: 36 MiB held, 16 after the frees, 13
   * once the batches went out; 36 and 36 without smi_pool_drained. */
  cr_assert_lt(after.bytes_committed, held.bytes_committed * 5 / 8, "committed %zu MiB of %zu after the frees",
               after.bytes_committed >> 20, held.bytes_committed >> 20);
  smi_remote_flush();
  sm_stats_t flushed = stats();
  cr_assert_lt(flushed.bytes_committed, held.bytes_committed / 2,
               "committed %zu MiB of %zu after the batches went out", flushed.bytes_committed >> 20,
               held.bytes_committed >> 20);
}

/* Two threads free the ended thread's objects at once, alternately: each
 * block goes back exactly once (the count reaches 0 on one push), the pool's
 * lists stay whole (the debug build checks them at every upkeep), and the
 * blocks serve again. */
Test(drained, two_threads_freeing_an_ended_threads_objects_give_each_block_back_once) {
  end_filler();
  sm_stats_t held = stats();
  pthread_t t[2];
  share_t s[2] = {{0, 2}, {1, 2}};
  for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&t[i], NULL, free_share, &s[i]), 0);
  for (int i = 0; i < 2; i++) cr_assert_eq(pthread_join(t[i], NULL), 0);
  smi_remote_flush();
  sm_stats_t after = stats();
  /* (the freeing threads' cached stacks may keep glibc's thread vectors) */
  cr_assert_leq(after.objects_live, held.objects_live - OBJECTS + 2, "live %zu -> %zu", held.objects_live,
                after.objects_live);
  /* (their starts and ends opened the pool's window for threads that
   * follow: the blocks wait warm; an upkeep's checks walk the lists in the
   * debug build) */
  smi_pool_upkeep(true);
  /* the blocks serve again: a new thread's objects land in them, distinct */
  pthread_t again;
  cr_assert_eq(pthread_create(&again, NULL, fill, NULL), 0);
  cr_assert_eq(pthread_join(again, NULL), 0);
  for (size_t i = 0; i < OBJECTS; i++) ((uint32_t *)objs[i])[0] = (uint32_t)i;
  for (size_t i = 0; i < OBJECTS; i++) cr_assert_eq(((uint32_t *)objs[i])[0], (uint32_t)i);
  for (size_t i = 0; i < OBJECTS; i++) sm_free(objs[i]);
}

/* A handle taken to an ended thread's object is stale once the object is
 * freed and its block went back, and stays so when the block serves again. */
Test(drained, a_handle_to_an_ended_threads_object_stays_stale_after_its_block_went_back) {
  end_filler();
  sm_handle_t h = sm_handle_of(objs[7]);
  cr_assert_eq(sm_deref(h), objs[7]);
  share_t all = {0, 1};
  free_share(&all);
  smi_remote_flush();
  cr_assert_null(sm_deref(h));
  pthread_t again;
  cr_assert_eq(pthread_create(&again, NULL, fill, NULL), 0);
  cr_assert_eq(pthread_join(again, NULL), 0);
  cr_assert_null(sm_deref(h));
}
