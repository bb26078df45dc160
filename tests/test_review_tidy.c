/* test_review_tidy.c: upkeep's tidy (alloc/arena.c: may_go, the time and
 * mark it writes into free slots, bump brought down over free slots, the
 * pages of free slots given back) never touches a live object, never hands
 * out a slot twice, and a slot it dropped past bump serves again with its
 * handles stale. Medium and big slots (4.5 KiB and more, the ones tidy
 * looks at), swung between a low and a high live set on the default purge
 * delay (100 ms: an upkeep every 26 ms or so, and one at each new peak), with
 * malloc_trim between rounds, frees from another thread, and handles.
 * Each test runs for about half a second. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>

#include "slotmalloc.h"
#include "testutil.h"

#define SLOTS 384
#define RUN_S 0.5

/* sizes of several medium and big classes (4.6 to 60 KiB) */
static size_t tidy_size(tu_rng_t *r) {
  static const size_t sizes[] = {4700, 6000, 9000, 12000, 20000, 33000, 48000, 60000};
  return sizes[tu_rng_next(r) % (sizeof sizes / sizeof sizes[0])];
}

static void pause_ms(long ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct {
  void *p;
  uint64_t seed;
} obj_t;

static void check_and_free(obj_t *o) {
  size_t bad = tu_obj_check(o->p, o->seed);
  cr_assert_eq(bad, SIZE_MAX, "object %p (seed %llu) changed at byte %zu while live", o->p,
               (unsigned long long)o->seed, bad);
  free(o->p);
  o->p = NULL;
}

/* The live set swings between a few and SLOTS objects; every object holds
 * its pattern until it is freed, every calloc'd one reads zero. */
Test(review_tidy, live_objects_keep_their_bytes_across_upkeeps) {
  static obj_t o[SLOTS];
  sm_stats_t before, after;
  sm_arena_stats(NULL, &before);
  tu_rng_t r = tu_rng(7);
  uint64_t seed = 1;
  double end = tu_now() + RUN_S;
  for (unsigned round = 0; tu_now() < end || round < 4; round++) {
    size_t high = SLOTS / 4 + tu_rng_range(&r, 0, SLOTS * 3 / 4);
    for (size_t i = 0; i < high; i++) {
      if (o[i].p) continue;
      size_t n = tidy_size(&r);
      bool zero = tu_rng_next(&r) % 4 == 0;
      o[i].p = zero ? calloc(1, n) : malloc(n);
      cr_assert_not_null(o[i].p);
      if (zero) cr_assert(tu_all_zero(o[i].p, n), "calloc(1, %zu) = %p not zero", n, o[i].p);
      o[i].seed = seed++;
      tu_obj_init(o[i].p, n, o[i].seed);
    }
    pause_ms((long)tu_rng_range(&r, 0, 40)); /* a timed upkeep now and then */
    /* free most: from the top (bump comes down), or scattered (slots inside) */
    bool top = round & 1;
    for (size_t i = 0; i < SLOTS; i++) {
      size_t k = top ? SLOTS - 1 - i : i;
      if (o[k].p && (top ? k > SLOTS / 8 : tu_rng_next(&r) % 8 != 0)) check_and_free(&o[k]);
    }
    if (round % 5 == 4) malloc_trim(0);
    for (size_t i = 0; i < SLOTS; i++)
      if (o[i].p) cr_assert_eq(tu_obj_check(o[i].p, o[i].seed), SIZE_MAX, "object %p changed", o[i].p);
  }
  for (size_t i = 0; i < SLOTS; i++)
    if (o[i].p) check_and_free(&o[i]);
  sm_arena_stats(NULL, &after);
  cr_assert_gt(after.giveback_calls, before.giveback_calls, "no page went back: tidy was not exercised");
}

/* Another thread frees (remote frees) half the objects while the owner
 * allocates and its upkeeps tidy the same blocks. */
#define RING 64
static struct {
  pthread_mutex_t lock;
  obj_t ring[RING];
  unsigned head, tail;
  bool done;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *remote_freer(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&q.lock);
    if (q.head == q.tail) {
      bool done = q.done;
      pthread_mutex_unlock(&q.lock);
      if (done) return NULL;
      pause_ms(1);
      continue;
    }
    obj_t o = q.ring[q.tail++ % RING];
    pthread_mutex_unlock(&q.lock);
    if (tu_obj_check(o.p, o.seed) != SIZE_MAX) return o.p; /* changed while live */
    free(o.p);
  }
}

Test(review_tidy, remote_frees_during_tidy) {
  static obj_t o[SLOTS];
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, remote_freer, NULL), 0);
  tu_rng_t r = tu_rng(11);
  uint64_t seed = 1;
  double end = tu_now() + RUN_S;
  while (tu_now() < end) {
    size_t i = tu_rng_range(&r, 0, SLOTS - 1);
    if (!o[i].p) {
      size_t n = tidy_size(&r);
      o[i].p = malloc(n);
      cr_assert_not_null(o[i].p);
      o[i].seed = seed++;
      tu_obj_init(o[i].p, n, o[i].seed);
      continue;
    }
    if (tu_rng_next(&r) & 1) {
      check_and_free(&o[i]);
      continue;
    }
    for (;;) { /* to the other thread */
      pthread_mutex_lock(&q.lock);
      bool room = q.head - q.tail < RING;
      if (room) q.ring[q.head++ % RING] = o[i];
      pthread_mutex_unlock(&q.lock);
      if (room) break;
      pause_ms(1);
    }
    o[i].p = NULL;
    if (seed % 512 == 0) pause_ms(30); /* a timed upkeep */
  }
  pthread_mutex_lock(&q.lock);
  q.done = true;
  pthread_mutex_unlock(&q.lock);
  void *bad = NULL;
  pthread_join(t, &bad);
  cr_assert_null(bad, "object %p changed while live (freed by the other thread)", bad);
  for (size_t i = 0; i < SLOTS; i++)
    if (o[i].p) check_and_free(&o[i]);
}

/* Handles of objects in slots that tidy drops past bump (and extend cuts
 * again) or purges stay stale: sm_deref NULL, sm_hfree ESTALE; the live
 * ones give their object. */
#define HN 64
Test(review_tidy, handles_stay_stale_across_dropped_slots) {
  static sm_handle_t h[HN], old[HN * 40];
  size_t nold = 0;
  static uint64_t seeds[HN];
  tu_rng_t r = tu_rng(5);
  uint64_t seed = 1;
  for (unsigned round = 0; round < 40; round++) {
    size_t n = round & 1 ? 48000 : 20000;
    for (size_t i = 0; i < HN; i++) {
      h[i] = sm_halloc(n);
      void *p = sm_deref(h[i]);
      cr_assert_not_null(p);
      seeds[i] = seed++;
      tu_obj_init(p, n, seeds[i]);
    }
    /* all but the first few go: the ones past the last in use are dropped */
    for (size_t i = HN / 8; i < HN; i++) {
      cr_assert_eq(sm_hfree(h[i]), 0);
      old[nold++] = h[i];
    }
    pause_ms(round % 4 == 0 ? 120 : (long)tu_rng_range(&r, 0, 30));
    if (round % 7 == 6) malloc_trim(0);
    for (size_t k = 0; k < nold; k++) {
      cr_assert_null(sm_deref(old[k]), "handle %zu of round %zu names an object again", k, k / (HN - HN / 8));
      cr_assert_eq(sm_hfree(old[k]), ESTALE);
    }
    for (size_t i = 0; i < HN / 8; i++) {
      void *p = sm_deref(h[i]);
      cr_assert_not_null(p);
      cr_assert_eq(tu_obj_check(p, seeds[i]), SIZE_MAX);
      cr_assert_eq(sm_hfree(h[i]), 0);
      old[nold++] = h[i];
    }
  }
}
