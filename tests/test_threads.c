/* test_threads.c: slotmalloc under threads: concurrent churn, cross-thread
 * (remote) frees, threads that exit with live objects freed later by others,
 * bounded memory over repeated rounds of that, and fork while threads allocate.
 * No test relies on timing: threads meet through joins, mutexes and condvars.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* No test here needs more than a few hundred MiB: past this RSS a loop stops
 * and the test fails, rather than let a leaking allocator eat the machine. */
#define MEM_GUARD ((size_t)3 << 30)

/* A random size: mostly small, some medium, a few large. */
static size_t rand_size(tu_rng_t *r) {
  unsigned pick = (unsigned)tu_rng_range(r, 0, 999);
  if (pick < 750) return tu_rng_range(r, 1, 256);
  if (pick < 950) return tu_rng_range(r, 257, 16384);
  if (pick < 998) return tu_rng_range(r, 16385, 300000);
  return tu_rng_range(r, 300000, 3 * MiB);
}

/* A checked object (tu_obj_t) from malloc or sm_malloc. */
static void *obj_new(size_t size, uint64_t seed, int use_sm) {
  if (size < sizeof(tu_obj_t)) size = sizeof(tu_obj_t);
  void *p = use_sm ? sm_malloc(size) : malloc(size);
  if (p) tu_obj_init(p, size, seed);
  return p;
}

static size_t committed_bytes(void) {
  sm_stats_t s;
  memset(&s, 0, sizeof s);
  sm_arena_stats(NULL, &s);
  return s.bytes_committed;
}

/* ==== 1. concurrent churn ================================================== */
typedef struct {
  int id;
  int iters;
  char err[256];
} churn_arg_t;

static void *churn_thread(void *arg) {
  churn_arg_t *a = arg;
  enum { LIVE = 400 };
  void *live[LIVE] = {0};
  uint64_t seeds[LIVE] = {0};
  tu_rng_t r = tu_rng(1000 + (uint64_t)a->id);
  int use_sm = a->id & 1;
  for (int it = 0; it < a->iters; it++) {
    size_t i = tu_rng_range(&r, 0, LIVE - 1);
    if (live[i]) {
      size_t off = tu_obj_check(live[i], seeds[i]);
      if (off != SIZE_MAX) {
        snprintf(a->err, sizeof a->err, "thread %d: object %p clobbered at offset %zu", a->id, live[i], off);
        return NULL;
      }
      (use_sm ? sm_free : free)(live[i]);
      live[i] = NULL;
    } else {
      seeds[i] = ((uint64_t)a->id << 40) | (uint64_t)it;
      live[i] = obj_new(rand_size(&r), seeds[i], use_sm);
      if (!live[i]) {
        snprintf(a->err, sizeof a->err, "thread %d: allocation failed (errno %d)", a->id, errno);
        return NULL;
      }
    }
  }
  for (int i = 0; i < LIVE; i++) {
    if (!live[i]) continue;
    if (tu_obj_check(live[i], seeds[i]) != SIZE_MAX) {
      snprintf(a->err, sizeof a->err, "thread %d: object clobbered at the end", a->id);
      return NULL;
    }
    free(live[i]);
  }
  return NULL;
}

/* 8 threads allocate and free random sizes at once (std and sm names); no
 * object is ever clobbered by another thread's allocations. */
Test(threads, concurrent_churn, .timeout = 180) {
  enum { T = 8 };
  pthread_t t[T];
  churn_arg_t a[T];
  for (int i = 0; i < T; i++) {
    a[i] = (churn_arg_t){.id = i, .iters = 60000};
    cr_assert_eq(pthread_create(&t[i], NULL, churn_thread, &a[i]), 0);
  }
  for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < T; i++) cr_assert_eq(a[i].err[0], 0, "%s", a[i].err);
}

/* ==== 2. producer / consumer (remote frees) ================================= */
enum { QCAP = 1024 };
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  void *items[QCAP];
  size_t head, count;
} queue_t;

static void q_init(queue_t *q) {
  memset(q, 0, sizeof *q);
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->not_empty, NULL);
  pthread_cond_init(&q->not_full, NULL);
}
static void q_push(queue_t *q, void *p) {
  pthread_mutex_lock(&q->mu);
  while (q->count == QCAP) pthread_cond_wait(&q->not_full, &q->mu);
  q->items[(q->head + q->count) % QCAP] = p;
  q->count++;
  pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}
static void *q_pop(queue_t *q) {
  pthread_mutex_lock(&q->mu);
  while (q->count == 0) pthread_cond_wait(&q->not_empty, &q->mu);
  void *p = q->items[q->head];
  q->head = (q->head + 1) % QCAP;
  q->count--;
  pthread_cond_signal(&q->not_full);
  pthread_mutex_unlock(&q->mu);
  return p;
}

typedef struct {
  queue_t *q;
  int id, n;
  long consumed;
  char err[256];
} pc_arg_t;

static void *producer(void *arg) {
  pc_arg_t *a = arg;
  tu_rng_t r = tu_rng(77 + (uint64_t)a->id);
  for (int i = 0; i < a->n; i++) {
    uint64_t seed = ((uint64_t)(a->id + 1) << 32) | (uint64_t)i;
    void *p = obj_new(rand_size(&r), seed, i & 1);
    if (!p) {
      snprintf(a->err, sizeof a->err, "producer %d: allocation failed", a->id);
      q_push(a->q, NULL); /* keeps the consumer count right: never reached normally */
      return NULL;
    }
    q_push(a->q, p);
  }
  return NULL;
}

static void *consumer(void *arg) {
  pc_arg_t *a = arg;
  tu_rng_t r = tu_rng(999 + (uint64_t)a->id);
  for (;;) {
    tu_obj_t *h = q_pop(a->q);
    if (h == NULL) return NULL; /* end marker */
    uint64_t seed = h->seed;
    size_t off = tu_obj_check(h, seed);
    if (off != SIZE_MAX && !a->err[0])
      snprintf(a->err, sizeof a->err, "consumer %d: object %p (seed %#llx) clobbered at offset %zu", a->id, (void *)h,
               (unsigned long long)seed, off);
    if (tu_rng_range(&r, 0, 7) == 0) {
      /* realloc of an object another thread allocated */
      size_t keep = h->size;
      tu_obj_t *g = realloc(h, keep + tu_rng_range(&r, 1, 5000));
      if (!g) {
        snprintf(a->err, sizeof a->err, "consumer %d: realloc failed", a->id);
        return NULL;
      }
      if (tu_obj_check(g, seed) != SIZE_MAX && !a->err[0])
        snprintf(a->err, sizeof a->err, "consumer %d: realloc of a remote object lost contents", a->id);
      h = g;
    }
    (a->id & 1 ? sm_free : free)(h);
    a->consumed++;
  }
}

/* 3 producers allocate, 3 consumers check and free (some realloc first):
 * every object is freed by a thread that did not allocate it. */
Test(threads, producer_consumer_remote_free, .timeout = 180) {
  enum { P = 3, C = 3, N = 60000 };
  queue_t q;
  q_init(&q);
  pthread_t pt[P], ct[C];
  pc_arg_t pa[P], ca[C];
  for (int i = 0; i < C; i++) {
    ca[i] = (pc_arg_t){.q = &q, .id = i};
    cr_assert_eq(pthread_create(&ct[i], NULL, consumer, &ca[i]), 0);
  }
  for (int i = 0; i < P; i++) {
    pa[i] = (pc_arg_t){.q = &q, .id = i, .n = N};
    cr_assert_eq(pthread_create(&pt[i], NULL, producer, &pa[i]), 0);
  }
  for (int i = 0; i < P; i++) pthread_join(pt[i], NULL);
  for (int i = 0; i < C; i++) q_push(&q, NULL);
  for (int i = 0; i < C; i++) pthread_join(ct[i], NULL);
  long total = 0;
  for (int i = 0; i < P; i++) cr_assert_eq(pa[i].err[0], 0, "%s", pa[i].err);
  for (int i = 0; i < C; i++) {
    cr_assert_eq(ca[i].err[0], 0, "%s", ca[i].err);
    total += ca[i].consumed;
  }
  cr_assert_eq(total, (long)P * N, "consumed %ld objects, produced %ld", total, (long)P * N);
}

/* Frees from a thread that owns nothing wait in its batch of remote frees and
 * reach the owner's blocks at the latest when the thread exits: the owner
 * then reuses the slots, and its memory does not grow. */
typedef struct {
  void **objs;
  int n;
} batch_arg_t;
static void *free_all(void *arg) {
  batch_arg_t *a = arg;
  for (int i = 0; i < a->n; i++) free(a->objs[i]);
  return NULL;
}
Test(threads, batched_remote_frees_reach_the_owner, .timeout = 120) {
  /* fewer frees per thread than a batch holds: unless the thread's exit sends
   * them, they never reach the owner, and every round costs new memory */
  enum { N = 40, ROUNDS = 3000 };
  static void *objs[N];
  batch_arg_t a = {objs, N};
  size_t first_committed = 0;
  for (int round = 0; round < ROUNDS; round++) {
    sm_stats_t s0;
    sm_arena_stats(NULL, &s0); /* the test runner's own objects */
    for (int i = 0; i < N; i++) {
      objs[i] = malloc(48);
      cr_assert_not_null(objs[i]);
      memset(objs[i], round, 48);
    }
    sm_stats_t s;
    sm_arena_stats(NULL, &s);
    if (round == 1) first_committed = s.bytes_committed;
    if (round > 1)
      cr_assert_leq(s.bytes_committed, first_committed + 256 * 1024,
                    "round %d: %zu bytes committed, %zu in round 1: the other thread's frees were not reused", round,
                    s.bytes_committed, first_committed);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, free_all, &a), 0);
    pthread_join(t, NULL);
    sm_arena_stats(NULL, &s);
    /* (+16: what pthread_create itself keeps) */
    cr_assert_leq(s.objects_live, s0.objects_live + 16, "round %d: %zu objects live after the frees, %zu before",
                  round, s.objects_live, s0.objects_live);
  }
}

/* ==== 3. owners exit with live objects; others free them ======================= */
typedef struct {
  int id, n;
  void **objs; /* n objects this owner leaves behind */
  uint64_t *seeds;
  char err[256];
} owner_arg_t;

static void *owner_thread(void *arg) {
  owner_arg_t *a = arg;
  tu_rng_t r = tu_rng(5000 + (uint64_t)a->id);
  /* churn a little first, so the thread's blocks hold free and live slots */
  void *tmp[64] = {0};
  for (int i = 0; i < 2000; i++) {
    int k = i % 64;
    free(tmp[k]);
    tmp[k] = malloc(rand_size(&r) % 2048 + 1);
  }
  for (int i = 0; i < a->n; i++) {
    a->seeds[i] = ((uint64_t)a->id << 32) | (uint64_t)i;
    size_t s = (i % 500 == 0) ? MiB + (size_t)i : rand_size(&r) % 4096 + 1;
    a->objs[i] = obj_new(s, a->seeds[i], i & 1);
    if (!a->objs[i]) {
      snprintf(a->err, sizeof a->err, "owner %d: allocation failed", a->id);
      return NULL;
    }
  }
  for (int k = 0; k < 64; k++) free(tmp[k]); /* half the churn objects freed here... */
  return NULL;                               /* ...and the thread exits with a->n objects live */
}

typedef struct {
  owner_arg_t *owners;
  int nowners, part, parts;
  char err[256];
} freer_arg_t;

static void *freer_thread(void *arg) {
  freer_arg_t *f = arg;
  for (int o = 0; o < f->nowners; o++) {
    owner_arg_t *a = &f->owners[o];
    for (int i = f->part; i < a->n; i += f->parts) {
      size_t off = tu_obj_check(a->objs[i], a->seeds[i]);
      if (off != SIZE_MAX && !f->err[0])
        snprintf(f->err, sizeof f->err, "object %d of exited owner %d clobbered at offset %zu", i, o, off);
      free(a->objs[i]);
    }
  }
  return NULL;
}

/* Rounds of: 4 owner threads allocate ~3000 objects each (a few large) and
 * exit; then 2 other threads check and free them all. Memory must not grow
 * round after round: committed bytes and RSS of round 10 (measured both while
 * the objects are live and after they are freed) stay within 3x of round 2's
 * live-objects measure. */
Test(threads, exited_owner_objects_freed_no_growth, .timeout = 240) {
  enum { ROUNDS = 12, OWNERS = 4, NOBJ = 3000, FREERS = 2 };
  size_t com_live[ROUNDS], com_end[ROUNDS], rss_live[ROUNDS], rss_end[ROUNDS];
  owner_arg_t own[OWNERS];
  for (int i = 0; i < OWNERS; i++) {
    own[i].objs = calloc(NOBJ, sizeof(void *));
    own[i].seeds = calloc(NOBJ, sizeof(uint64_t));
  }
  for (int round = 0; round < ROUNDS; round++) {
    pthread_t t[OWNERS];
    for (int i = 0; i < OWNERS; i++) {
      own[i].id = round * OWNERS + i;
      own[i].n = NOBJ;
      own[i].err[0] = 0;
      cr_assert_eq(pthread_create(&t[i], NULL, owner_thread, &own[i]), 0);
    }
    for (int i = 0; i < OWNERS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < OWNERS; i++) cr_assert_eq(own[i].err[0], 0, "round %d: %s", round, own[i].err);
    com_live[round] = committed_bytes();
    rss_live[round] = tu_rss_bytes();
    cr_assert_leq(rss_live[round], MEM_GUARD, "round %d: RSS passed %zu MiB", round, MEM_GUARD >> 20);
    /* the owners are gone: other threads free their objects */
    pthread_t ft[FREERS];
    freer_arg_t fa[FREERS];
    for (int i = 0; i < FREERS; i++) {
      fa[i] = (freer_arg_t){.owners = own, .nowners = OWNERS, .part = i, .parts = FREERS};
      cr_assert_eq(pthread_create(&ft[i], NULL, freer_thread, &fa[i]), 0);
    }
    for (int i = 0; i < FREERS; i++) pthread_join(ft[i], NULL);
    for (int i = 0; i < FREERS; i++) cr_assert_eq(fa[i].err[0], 0, "round %d: %s", round, fa[i].err);
    /* this thread allocates a little: a chance to reuse what was given back */
    for (int i = 0; i < 1000; i++) free(malloc((size_t)(i % 300) + 1));
    sm_collect(SIZE_MAX);
    com_end[round] = committed_bytes();
    rss_end[round] = tu_rss_bytes();
  }
  cr_log_info("committed (live / end) round 2: %zu / %zu, round 10: %zu / %zu", com_live[2], com_end[2], com_live[10],
              com_end[10]);
  cr_log_info("rss (live / end) round 2: %zu / %zu, round 10: %zu / %zu", rss_live[2], rss_end[2], rss_live[10],
              rss_end[10]);
  cr_assert_gt(com_live[2], 0, "sm_arena_stats(NULL) reports 0 bytes committed with ~20 MiB live");
  cr_assert_leq(com_live[10], 3 * com_live[2], "committed bytes grow: round 2 %zu, round 10 %zu (objects live)",
                com_live[2], com_live[10]);
  cr_assert_leq(com_end[10], 3 * com_live[2], "committed bytes grow: round 2 %zu (live), round 10 %zu (freed)",
                com_live[2], com_end[10]);
  cr_assert_leq(rss_live[10], 3 * rss_live[2], "RSS grows: round 2 %zu, round 10 %zu (objects live)", rss_live[2],
                rss_live[10]);
  cr_assert_leq(rss_end[10], 3 * rss_live[2], "RSS grows: round 2 %zu (live), round 10 %zu (freed)", rss_live[2],
                rss_end[10]);
  for (int i = 0; i < OWNERS; i++) {
    free(own[i].objs);
    free(own[i].seeds);
  }
}

/* ==== 4. many short-lived threads ============================================ */
typedef struct {
  int id;
  void *left[25];
} short_arg_t;

static void *short_thread(void *arg) {
  short_arg_t *a = arg;
  void *mine[50];
  for (int i = 0; i < 50; i++) {
    mine[i] = malloc((size_t)((a->id * 7 + i * 13) % 1500) + 1);
    if (!mine[i]) return (void *)1;
    memset(mine[i], a->id & 0xff, 1);
  }
  for (int i = 0; i < 25; i++) free(mine[2 * i]);
  for (int i = 0; i < 25; i++) a->left[i] = mine[2 * i + 1];
  return NULL;
}

/* 2000 threads (4 at a time) each allocate 50 objects, free 25 and exit with
 * 25 live, which the main thread then frees. Thread set-up and tear-down must
 * not leak: committed bytes after 2000 threads within 3x of after 400. */
Test(threads, many_short_lived_threads, .timeout = 180) {
  enum { TOTAL = 2000, AT_ONCE = 4 };
  size_t com400 = 0;
  short_arg_t a[AT_ONCE];
  for (int base = 0; base < TOTAL; base += AT_ONCE) {
    pthread_t t[AT_ONCE];
    for (int i = 0; i < AT_ONCE; i++) {
      a[i].id = base + i;
      cr_assert_eq(pthread_create(&t[i], NULL, short_thread, &a[i]), 0, "pthread_create failed at thread %d",
                   base + i);
    }
    for (int i = 0; i < AT_ONCE; i++) {
      void *res;
      pthread_join(t[i], &res);
      cr_assert_null(res, "thread %d: allocation failed", base + i);
      for (int k = 0; k < 25; k++) {
        cr_assert_eq(*(unsigned char *)a[i].left[k], (unsigned char)(a[i].id & 0xff),
                     "object of exited thread %d changed", a[i].id);
        free(a[i].left[k]);
      }
    }
    if (base + AT_ONCE == 400) com400 = committed_bytes();
    cr_assert_leq(tu_rss_bytes(), MEM_GUARD, "RSS passed %zu MiB after %d threads", MEM_GUARD >> 20, base + AT_ONCE);
  }
  size_t com_end = committed_bytes();
  cr_log_info("committed after 400 threads %zu, after %d threads %zu", com400, TOTAL, com_end);
  cr_assert_leq(com_end, 3 * com400 + 4 * MiB, "committed bytes grow with dead threads: %zu after 400, %zu after %d",
                com400, com_end, TOTAL);
}

/* ==== 5. closed arenas give their memory back ==================================== */
/* An arena made, filled, closed and released; then all deferred dismantling
 * is finished (so memory cannot pile up here: that is tested elsewhere). */
static int arena_cycle(tu_rng_t *r) {
  sm_arena_t *ar = sm_arena_new(NULL);
  if (!ar) return -1;
  for (int i = 0; i < 40; i++)
    if (!sm_arena_malloc(ar, rand_size(r) % 3000 + 1)) return -1;
  tu_arena_drop(ar);
  sm_collect(SIZE_MAX);
  return 0;
}

typedef struct {
  int id, cycles;
  int failed;
} cyc_arg_t;

static void *arena_cycle_thread(void *arg) {
  cyc_arg_t *a = arg;
  tu_rng_t r = tu_rng(31337 + (uint64_t)a->id);
  for (int c = 0; c < a->cycles; c++) {
    sm_arena_t *ar = sm_arena_new(NULL);
    if (!ar) {
      a->failed = 1;
      return NULL;
    }
    for (int i = 0; i < 40; i++) {
      void *p = sm_arena_malloc(ar, rand_size(&r) % 3000 + 1);
      if (!p) {
        a->failed = 1;
        return NULL;
      }
      memset(p, 1, 1);
    }
    if (c & 1) sm_arena_close(ar); /* close then release, or just the last release */
    sm_arena_release(ar);
    for (int i = 0; i < 8; i++) free(malloc(rand_size(&r))); /* ordinary allocation goes on */
  }
  return NULL;
}

/* The purge delay this process runs with (SLOTMALLOC_PURGE_DELAY_MS, default 100). */
static long purge_delay_ms(void) {
  const char *v = getenv("SLOTMALLOC_PURGE_DELAY_MS");
  return v && *v ? atol(v) : 100;
}

/* Rounds of 2 threads each making 100 arenas of 40 objects and closing /
 * releasing them, with no explicit sm_collect: the deferred dismantling runs at
 * the allocator's own safe points, so committed memory after round 10 stays
 * within 3x of the most after rounds 0-2 (and never passes 768 MiB: the test stops there
 * rather than eat the machine). Those four are read past the purge delay
 * after their round (a pause, then slow calls: an upkeep). Read at once,
 * they read the room the pool keeps warm for the threads that follow
 * (alloc/pool.c, exit_room): open once the recent peak of touched bytes
 * passes 16 MiB, and the blocks it keeps are 4 MiB blocks of big classes of
 * which a few pages were ever written, so they commit 4-10 times what they
 * count. The hardened build's quarantine makes each big class cycle through
 * 5 or more slots (the default build reuses one): its counted peak here is
 * 13-30 MiB (the default build's 4-8), so the room opened after round 2 in
 * about half of its runs: 21-64 MB committed after rounds 0-2, 120-177 MB
 * after round 10 (9 MB resident before, 13-20 after), where 024fa12 turned
 * the room off in that build; the default build with the room opened in
 * every round (EXIT_PEAK_MIN at 2 MiB, an experiment) read 117-181 MB
 * throughout. */
Test(threads, closed_arenas_memory_bounded, .timeout = 240) {
  enum { ROUNDS = 11, T = 2, CYCLES = 100 };
  const size_t cap = (size_t)768 << 20;
  long delay = purge_delay_ms();
  if (delay > 2000) cr_skip_test("a purge delay of %ld ms", delay);
  size_t com[ROUNDS];
  for (int round = 0; round < ROUNDS; round++) {
    pthread_t t[T];
    cyc_arg_t a[T];
    for (int i = 0; i < T; i++) {
      a[i] = (cyc_arg_t){.id = round * T + i, .cycles = CYCLES};
      cr_assert_eq(pthread_create(&t[i], NULL, arena_cycle_thread, &a[i]), 0);
    }
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < T; i++) cr_assert_eq(a[i].failed, 0, "round %d: an arena allocation failed", round);
    com[round] = committed_bytes();
    cr_assert_leq(tu_rss_bytes(), MEM_GUARD, "round %d: RSS passed %zu MiB", round, MEM_GUARD >> 20);
    cr_assert_leq(com[round], cap,
                  "after %d closed arenas %zu bytes are committed (round 0: %zu): closed arenas' "
                  "memory is not given back without sm_collect",
                  (round + 1) * T * CYCLES, com[round], com[0]);
    if (round > 2 && round < ROUNDS - 1) continue;
    struct timespec ts = {0, (2 * delay + 20) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    for (int i = 0; i < 40; i++) free(tu_opaque(malloc(MiB)));
    com[round] = committed_bytes();
  }
  /* against the most of the first three rounds: when the dismantling runs
   * depends on the clock, so one early round can read low (round 2 read 43 MB
   * once on a busy machine, 67-142 MB otherwise) */
  size_t early = com[0] > com[1] ? com[0] : com[1];
  if (com[2] > early) early = com[2];
  cr_log_info("committed after rounds 0-2: at most %zu, after round 10: %zu", early, com[10]);
  cr_assert_leq(com[10], 3 * early, "committed bytes grow with closed arenas: rounds 0-2 at most %zu, round 10 %zu",
                early, com[10]);
}

/* ==== 6. live objects of exited threads survive other threads' sm_collect ========= */
typedef struct {
  int id;
  pthread_barrier_t *start;
  void *keep[64];
  int clobbered_before_exit;
} keep_arg_t;

static uint64_t keep_seed(int id, int i) { return ((uint64_t)(id + 1) << 24) | (uint64_t)i; }

static void *keep_thread(void *arg) {
  keep_arg_t *a = arg;
  tu_rng_t r = tu_rng(808 + (uint64_t)a->id);
  for (int i = 0; i < 64; i++) a->keep[i] = obj_new(rand_size(&r) % 3000 + 16, keep_seed(a->id, i), 0);
  pthread_barrier_wait(a->start);
  void *tmp[128] = {0};
  for (int it = 1; it <= 6000 + 1000 * a->id; it++) {
    int k = it % 128;
    free(tmp[k]);
    tmp[k] = malloc(rand_size(&r) % 3000 + 1);
    if (it % 64 == 0) arena_cycle(&r); /* ends with sm_collect(SIZE_MAX) */
  }
  for (int i = 0; i < 128; i++) free(tmp[i]);
  for (int i = 0; i < 64; i++)
    if (!a->keep[i] || tu_obj_check(a->keep[i], keep_seed(a->id, i)) != SIZE_MAX) a->clobbered_before_exit++;
  return NULL; /* exits with its 64 objects live, while the others still collect */
}

/* 4 threads churn and cycle arenas, each ending with sm_collect(SIZE_MAX),
 * and exit one after another with 64 objects live: those objects stay intact
 * after their owner exited, while the other threads go on collecting. */
Test(threads, exited_thread_objects_survive_collect, .timeout = 180) {
  enum { T = 4, ROUNDS = 3 };
  for (int round = 0; round < ROUNDS; round++) {
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, T);
    keep_arg_t a[T];
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
      a[i] = (keep_arg_t){.id = i, .start = &start};
      cr_assert_eq(pthread_create(&t[i], NULL, keep_thread, &a[i]), 0);
    }
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < T; i++) {
      cr_assert_eq(a[i].clobbered_before_exit, 0, "round %d: thread %d saw %d of its own live objects clobbered",
                   round, i, a[i].clobbered_before_exit);
      int bad = 0, first = -1;
      for (int k = 0; k < 64; k++)
        if (tu_obj_check(a[i].keep[k], keep_seed(i, k)) != SIZE_MAX && bad++ == 0) first = k;
      cr_assert_eq(bad, 0,
                   "round %d: %d of 64 live objects of exited thread %d clobbered (first: #%d at %p, now "
                   "reads size %llu)",
                   round, bad, i, first, first >= 0 ? a[i].keep[first] : NULL,
                   first >= 0 ? (unsigned long long)((tu_obj_t *)a[i].keep[first])->size : 0ULL);
      for (int k = 0; k < 64; k++) free(a[i].keep[k]);
    }
  }
}

/* ==== 7. fork while other threads allocate ====================================== */
enum { BG = 4, PERSIST = 64 };
typedef struct {
  int id;
  atomic_int *stop;
  int ran_away;           /* 1: the thread stopped early because RSS passed MEM_GUARD */
  void *persist[PERSIST]; /* objects made before the forks, never changed after */
  pthread_barrier_t *ready;
} bg_arg_t;

static uint64_t persist_seed(int thread, int i) { return ((uint64_t)(thread + 100) << 20) | (uint64_t)i; }

static void *bg_thread(void *arg) {
  bg_arg_t *a = arg;
  tu_rng_t r = tu_rng(42 + (uint64_t)a->id);
  for (int i = 0; i < PERSIST; i++) a->persist[i] = obj_new(rand_size(&r) % 5000 + 16, persist_seed(a->id, i), 0);
  pthread_barrier_wait(a->ready);
  void *tmp[128] = {0};
  unsigned k = 0, it = 0;
  while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
    k = (k + 1) % 128;
    free(tmp[k]);
    tmp[k] = (k & 3) == 1   ? realloc(malloc(24), rand_size(&r))
             : (k & 3) == 2 ? aligned_alloc(256, rand_size(&r))
                            : malloc(rand_size(&r));
    if (++it % 64 == 0) {
      arena_cycle(&r);                  /* arena locks and dismantling are in flight at fork too */
      if (tu_rss_bytes() > MEM_GUARD) { /* never eat the machine, whatever the allocator does */
        a->ran_away = 1;
        break;
      }
    }
  }
  for (int i = 0; i < 128; i++) free(tmp[i]);
  return NULL;
}

static void *child_thread(void *arg) {
  tu_rng_t r = tu_rng((uint64_t)(uintptr_t)arg);
  void *v[256] = {0};
  for (int i = 0; i < 20000; i++) {
    int k = (int)tu_rng_range(&r, 0, 255);
    free(v[k]);
    v[k] = malloc(rand_size(&r));
    if (!v[k]) return (void *)1;
  }
  return v[0]; /* freed by the child's main thread: a cross-thread free in the child */
}

/* The child's body: exit code 0 when everything worked. */
static int fork_child(bg_arg_t *bg, void **mine, int nmine) {
  /* objects made before the fork, by this thread and by threads that do not
   * exist in the child: intact and freeable */
  for (int i = 0; i < nmine; i++) {
    if (tu_obj_check(mine[i], persist_seed(-1, i)) != SIZE_MAX) return 10;
    free(mine[i]);
  }
  for (int t = 0; t < BG; t++)
    for (int i = 0; i < PERSIST; i++) {
      if (tu_obj_check(bg[t].persist[i], persist_seed(t, i)) != SIZE_MAX) return 11;
      free(bg[t].persist[i]);
    }
  /* plain churn */
  tu_rng_t r = tu_rng(getpid());
  void *v[512] = {0};
  for (int i = 0; i < 30000; i++) {
    int k = (int)tu_rng_range(&r, 0, 511);
    free(v[k]);
    v[k] = (i & 1) ? sm_malloc(rand_size(&r)) : calloc(1, rand_size(&r));
    if (!v[k]) return 12;
  }
  for (int i = 0; i < 512; i++) free(v[i]);
  /* arenas in the child */
  for (int i = 0; i < 20; i++)
    if (arena_cycle(&r) != 0) return 15;
  sm_collect(SIZE_MAX);
  /* threads in the child */
  pthread_t t[2];
  for (int i = 0; i < 2; i++)
    if (pthread_create(&t[i], NULL, child_thread, (void *)(uintptr_t)(i + 1)) != 0) return 13;
  for (int i = 0; i < 2; i++) {
    void *res;
    pthread_join(t[i], &res);
    if (res == (void *)1) return 14;
    free(res);
  }
  return 0;
}

/* The main thread forks 16 times while 4 threads allocate, free and cycle
 * arenas (new, fill, close, release, sm_collect); each child
 * (under a 30 s alarm, so a deadlock fails instead of hanging) frees objects
 * made before the fork by every thread, allocates freely, uses arenas, runs
 * threads of its own and exits 0. The parent's threads keep working. */
Test(threads, fork_while_threads_allocate, .timeout = 240) {
  enum { FORKS = 16, MINE = 100 };
  atomic_int stop = 0;
  pthread_barrier_t ready;
  pthread_barrier_init(&ready, NULL, BG + 1);
  bg_arg_t bg[BG];
  pthread_t t[BG];
  for (int i = 0; i < BG; i++) {
    bg[i] = (bg_arg_t){.id = i, .stop = &stop, .ready = &ready};
    cr_assert_eq(pthread_create(&t[i], NULL, bg_thread, &bg[i]), 0);
  }
  void *mine[MINE];
  for (int i = 0; i < MINE; i++) mine[i] = obj_new((size_t)i * 37 + 16, persist_seed(-1, i), i & 1);
  pthread_barrier_wait(&ready);
  for (int f = 0; f < FORKS; f++) {
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork failed: %s", strerror(errno));
    if (pid == 0) {
      signal(SIGALRM, SIG_DFL);
      alarm(30);
      _exit(fork_child(bg, mine, MINE));
    }
    int st = 0;
    tu_waitpid(pid, &st);
    cr_assert(!(WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM), "fork %d: child deadlocked (alarm after 30 s)", f);
    cr_assert(WIFEXITED(st), "fork %d: child killed by signal %d (%s)", f, WTERMSIG(st), strsignal(WTERMSIG(st)));
    cr_assert_eq(WEXITSTATUS(st), 0,
                 "fork %d: child failed with code %d (10/11: pre-fork object clobbered, "
                 "12: allocation failed, 13/14: threads in the child failed, 15: arenas failed)",
                 f, WEXITSTATUS(st));
  }
  /* the parent's objects, while their threads still run */
  for (int b = 0; b < BG; b++)
    for (int i = 0; i < PERSIST; i++) {
      size_t off = tu_obj_check(bg[b].persist[i], persist_seed(b, i));
      cr_assert_eq(off, SIZE_MAX,
                   "after the forks, object %d (%p) of running parent thread %d is clobbered at "
                   "offset %zu",
                   i, bg[b].persist[i], b, off);
    }
  atomic_store(&stop, 1);
  for (int i = 0; i < BG; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < BG; i++)
    cr_assert_eq(bg[i].ran_away, 0, "thread %d stopped: RSS passed %zu MiB while allocating in a bounded loop", i,
                 MEM_GUARD >> 20);
  for (int i = 0; i < MINE; i++) {
    size_t off = tu_obj_check(mine[i], persist_seed(-1, i));
    cr_assert_eq(off, SIZE_MAX, "after the forks, main thread object %d (%p) clobbered at offset %zu", i, mine[i],
                 off);
    free(mine[i]);
  }
  for (int b = 0; b < BG; b++)
    for (int i = 0; i < PERSIST; i++) {
      size_t off = tu_obj_check(bg[b].persist[i], persist_seed(b, i));
      cr_assert_eq(off, SIZE_MAX,
                   "object %d (%p, now reads %llu bytes) of parent thread %d is clobbered at "
                   "offset %zu after that thread exited (see exited_thread_objects_survive_collect)",
                   i, bg[b].persist[i], (unsigned long long)((tu_obj_t *)bg[b].persist[i])->size, b, off);
      free(bg[b].persist[i]);
    }
}
