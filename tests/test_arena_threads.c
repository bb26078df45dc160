/* test_arena_threads.c: arenas and handles across threads, through the public
 * header only.
 *
 * Frees racing a close (through sm_hfree, which never aborts), arenas closed or
 * released by a thread other than their creator, sm_deref from other threads
 * while the owner frees and reuses slots, enter being per thread, and remote
 * frees while the owner allocates.
 *
 * Threads never call Criterion's asserts: they count, the test thread asserts. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <slotmalloc.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------- */

static size_t count_live(const sm_handle_t *hs, size_t n) {
  size_t live = 0;
  for (size_t i = 0; i < n; i++) live += sm_deref(hs[i]) != NULL;
  return live;
}

/* ---- frees racing a close ------------------------------------------------------ */

enum { NFREERS = 4 };

struct freer {
  const sm_handle_t *hs; /* all handles; this thread frees those with i % NFREERS == id */
  size_t n;
  int id;
  atomic_size_t *progress;
  pthread_barrier_t *start;
  size_t ok, stale, other;
  int other_rc;
};

static void *freer_main(void *argp) {
  struct freer *f = argp;
  pthread_barrier_wait(f->start);
  for (size_t i = (size_t)f->id; i < f->n; i += NFREERS) {
    int rc = sm_hfree(f->hs[i]);
    if (rc == 0) f->ok++;
    else if (rc == ESTALE) f->stale++;
    else f->other++, f->other_rc = rc;
    atomic_fetch_add_explicit(f->progress, 1, memory_order_release);
  }
  return NULL;
}

/* 4 threads sm_hfree an arena's objects while the test thread closes it midway: no crash, no
 * abort, each result 0 or ESTALE, frees done before the close succeed, all handles stale after. */
Test(threads, hfree_racing_close) {
  enum { PER = 40000, N = PER * NFREERS, ROUNDS = 5 };
  sm_handle_t *hs = malloc(N * sizeof *hs);
  cr_assert_not_null(hs);
  for (int r = 0; r < ROUNDS; r++) {
    sm_arena_t *a = sm_arena_new(NULL);
    cr_assert_not_null(a);
    tu_rng_t sizes = tu_rng((uint64_t)r);
    for (size_t i = 0; i < N; i++) {
      size_t s = tu_rng_range(&sizes, 16, 1515);
      if (i % 5000 == 17) s = 64 * KiB + i % 4096;
      if (i % 40000 == 4999) s = 4 * MiB + 4096;
      hs[i] = sm_arena_halloc(a, s);
      cr_assert_neq(hs[i], 0, "round %d: halloc %zu failed", r, i);
      memset(sm_deref(hs[i]), (int)i, 16);
    }
    atomic_size_t progress = 0;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NFREERS + 1);
    struct freer f[NFREERS];
    pthread_t t[NFREERS];
    for (int k = 0; k < NFREERS; k++) {
      f[k] = (struct freer){.hs = hs, .n = N, .id = k, .progress = &progress, .start = &start};
      cr_assert_eq(pthread_create(&t[k], NULL, freer_main, &f[k]), 0);
    }
    /* Close after 0%, 20%, ... 80% of the frees (whenever the threads get there). */
    size_t threshold = (size_t)N * (size_t)r / ROUNDS;
    pthread_barrier_wait(&start);
    while (atomic_load_explicit(&progress, memory_order_acquire) < threshold) sched_yield();
    size_t done_before_close = atomic_load_explicit(&progress, memory_order_acquire);
    sm_arena_close(a);
    for (int k = 0; k < NFREERS; k++) pthread_join(t[k], NULL);
    pthread_barrier_destroy(&start);

    size_t ok = 0, stale = 0, other = 0;
    int other_rc = 0;
    for (int k = 0; k < NFREERS; k++) {
      ok += f[k].ok;
      stale += f[k].stale;
      other += f[k].other;
      if (f[k].other) other_rc = f[k].other_rc;
    }
    cr_assert_eq(other, 0, "round %d: %zu sm_hfree results neither 0 nor ESTALE (e.g. %d)", r, other, other_rc);
    cr_assert_eq(ok + stale, N, "round %d: %zu + %zu results for %d frees", r, ok, stale, N);
    cr_assert_geq(ok, done_before_close, "round %d: %zu frees finished before the close, only %zu returned 0", r,
                  done_before_close, ok);
    size_t live = count_live(hs, N);
    cr_assert_eq(live, 0, "round %d: %zu handles still deref after close and join", r, live);
    sm_arena_release(a);
    sm_collect(SIZE_MAX);
    cr_assert_eq(count_live(hs, N), 0, "round %d: handles revived after sm_collect", r);
  }
  free(hs);
  /* The allocator still works for this thread. */
  void *p = malloc(100);
  cr_assert_not_null(p);
  free(p);
}

/* ---- arenas closed or released by another thread ----------------------------- */

struct closer {
  sm_arena_t *a;
  bool release;
};

static void *closer_main(void *argp) {
  struct closer *c = argp;
  sm_arena_close(c->a);
  if (c->release) sm_arena_release(c->a);
  return NULL;
}

enum { XN = 20000 };

static void fill_handles(sm_arena_t *a, sm_handle_t *hs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    size_t s = 16 + (i * 7919) % 2000;
    if (i == 3) s = 5 * MiB;
    hs[i] = sm_arena_halloc(a, s);
    if (hs[i]) memset(sm_deref(hs[i]), 0x5a, 16);
  }
}

static size_t count_zero(const sm_handle_t *hs, size_t n) {
  size_t z = 0;
  for (size_t i = 0; i < n; i++) z += hs[i] == 0;
  return z;
}

/* An arena (with a child) made here is closed and released by another thread: all stale. */
Test(threads, created_here_closed_elsewhere) {
  static sm_handle_t hs[XN], hc[XN];
  sm_arena_t *a = sm_arena_new(NULL);
  sm_arena_t *c = sm_arena_new(a);
  cr_assert(a && c);
  fill_handles(a, hs, XN);
  fill_handles(c, hc, XN);
  cr_assert_eq(count_zero(hs, XN) + count_zero(hc, XN), 0);
  sm_handle_t keep = sm_halloc(64); /* a root object: must survive */
  cr_assert_neq(keep, 0);
  struct closer arg = {a, true};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, closer_main, &arg), 0);
  pthread_join(t, NULL);
  cr_assert_eq(count_live(hs, XN), 0, "objects survive a close from another thread");
  cr_assert_eq(count_live(hc, XN), 0, "child objects survive a close from another thread");
  cr_assert_not_null(sm_deref(keep), "a root object died with a closed arena");
  sm_arena_release(c);
  sm_collect(SIZE_MAX);
  /* This thread allocates on. */
  sm_arena_t *b = sm_arena_new(NULL);
  cr_assert_not_null(b);
  fill_handles(b, hs, XN);
  cr_assert_eq(count_zero(hs, XN), 0);
  cr_assert_eq(count_live(hs, XN), XN);
  tu_arena_drop(b);
  cr_assert_eq(sm_hfree(keep), 0);
}

struct creator {
  sm_arena_t *a;
  sm_handle_t *hs;
  pthread_barrier_t *made, *closed;
  size_t live_after_close; /* seen from the creator */
  size_t zero_handles;
  bool root_ok_after;
};

static void *creator_main(void *argp) {
  struct creator *c = argp;
  c->a = sm_arena_new(NULL);
  if (c->a) fill_handles(c->a, c->hs, XN);
  c->zero_handles = c->a ? count_zero(c->hs, XN) : XN;
  pthread_barrier_wait(c->made);
  pthread_barrier_wait(c->closed);
  c->live_after_close = count_live(c->hs, XN);
  void *p = malloc(1000);
  c->root_ok_after = p != NULL;
  free(p);
  return NULL;
}

/* An arena made by a live thread is closed and released here; the creator sees it stale too. */
Test(threads, created_elsewhere_closed_here) {
  static sm_handle_t hs[XN];
  pthread_barrier_t made, closed;
  pthread_barrier_init(&made, NULL, 2);
  pthread_barrier_init(&closed, NULL, 2);
  struct creator c = {.hs = hs, .made = &made, .closed = &closed};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, creator_main, &c), 0);
  pthread_barrier_wait(&made);
  bool made_ok = c.a != NULL && c.zero_handles == 0;
  size_t live_before = made_ok ? count_live(hs, XN) : 0;
  if (made_ok) tu_arena_drop(c.a);
  size_t live_after = count_live(hs, XN);
  pthread_barrier_wait(&closed);
  pthread_join(t, NULL);
  pthread_barrier_destroy(&made);
  pthread_barrier_destroy(&closed);
  cr_assert(made_ok, "the other thread could not make its arena or objects");
  cr_assert_eq(live_before, XN, "another thread's live objects do not deref here");
  cr_assert_eq(live_after, 0, "%zu objects survive a close from a non-creator thread", live_after);
  cr_assert_eq(c.live_after_close, 0, "the creator still sees %zu live objects", c.live_after_close);
  cr_assert(c.root_ok_after, "the creator cannot malloc after its arena was closed elsewhere");
}

/* An arena whose creator thread has exited keeps its objects until it is closed here. */
Test(threads, creator_exits_then_closed_here) {
  static sm_handle_t hs[XN];
  pthread_barrier_t made, closed;
  pthread_barrier_init(&made, NULL, 1);
  pthread_barrier_init(&closed, NULL, 1);
  struct creator c = {.hs = hs, .made = &made, .closed = &closed};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, creator_main, &c), 0);
  pthread_join(t, NULL);
  pthread_barrier_destroy(&made);
  pthread_barrier_destroy(&closed);
  cr_assert_not_null(c.a);
  cr_assert_eq(c.zero_handles, 0);
  cr_assert_eq(count_live(hs, XN), XN, "objects of an exited thread's arena died with it");
  tu_arena_drop(c.a);
  cr_assert_eq(count_live(hs, XN), 0, "objects survive closing an exited thread's arena");
  sm_collect(SIZE_MAX);
  cr_assert_eq(count_live(hs, XN), 0);
}

struct releaser {
  sm_arena_t *a;
  pthread_barrier_t *retained, *go;
};

static void *releaser_main(void *argp) {
  struct releaser *r = argp;
  sm_arena_retain(r->a);
  pthread_barrier_wait(r->retained);
  pthread_barrier_wait(r->go);
  sm_arena_release(r->a);
  return NULL;
}

/* Retained by another thread, the arena lives on after this thread's release; that thread's
 * release closes it. */
Test(threads, last_release_in_other_thread_closes) {
  static sm_handle_t hs[XN];
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  fill_handles(a, hs, XN);
  cr_assert_eq(count_zero(hs, XN), 0);
  pthread_barrier_t retained, go;
  pthread_barrier_init(&retained, NULL, 2);
  pthread_barrier_init(&go, NULL, 2);
  struct releaser r = {a, &retained, &go};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, releaser_main, &r), 0);
  pthread_barrier_wait(&retained);
  sm_arena_release(a); /* ours; the other thread's reference keeps it */
  size_t live_mid = count_live(hs, XN);
  pthread_barrier_wait(&go);
  pthread_join(t, NULL);
  size_t live_end = count_live(hs, XN);
  pthread_barrier_destroy(&retained);
  pthread_barrier_destroy(&go);
  cr_assert_eq(live_mid, XN, "the arena closed while another thread still held a reference");
  cr_assert_eq(live_end, 0, "the last release (in another thread) did not close the arena");
}

/* ---- sm_deref from other threads while the owner frees and reuses --------------- */

#define MAGIC 0x51075a11c0ffee00ULL
enum { TABLE = 4096, NREADERS = 3, READER_MIN = 300000 };

/* The head of every object: written by the owner before the handle is published. */
struct head {
  uint64_t magic;
  uint64_t self; /* the object's own handle */
};

struct table {
  _Atomic uint64_t h[TABLE];
  atomic_bool done;
};

struct reader {
  struct table *tb;
  tu_rng_t rng;
  size_t iters, validated, bad_content, bad_other_address, stale_live;
  uint64_t bad_h;
};

static void *reader_main(void *argp) {
  struct reader *r = argp;
  uint64_t *seen = calloc(TABLE, sizeof *seen);
  if (!seen) return NULL;
  while (!atomic_load_explicit(&r->tb->done, memory_order_acquire) || r->iters < READER_MIN) {
    r->iters++;
    size_t i = tu_rng_range(&r->rng, 0, TABLE - 1);
    uint64_t h = atomic_load_explicit(&r->tb->h[i], memory_order_acquire);
    /* The owner freed seen[i] before publishing h: it must be stale now. */
    if (seen[i] != 0 && seen[i] != h && sm_deref(seen[i]) != NULL) r->stale_live++;
    seen[i] = h;
    struct head *p = sm_deref(h);
    if (p == NULL) continue;
    uint64_t m = __atomic_load_n(&p->magic, __ATOMIC_RELAXED);
    uint64_t s = __atomic_load_n(&p->self, __ATOMIC_RELAXED);
    void *again = sm_deref(h);
    if (again == p) {
      /* h was live before and after the reads, so it was live during them (a stale
       * handle never becomes valid again): the bytes read are the object's. */
      r->validated++;
      if (m != MAGIC || s != h) {
        if (r->bad_content++ == 0) r->bad_h = h;
      }
    } else if (again != NULL) {
      r->bad_other_address++;
    }
  }
  free(seen);
  return NULL;
}

static void *owner_alloc(sm_arena_t *a, size_t size) { return a ? sm_arena_malloc(a, size) : malloc(size); }

/* The owner's side of the table: the objects behind it and the random stream. */
struct owner {
  sm_arena_t *a; /* NULL: plain malloc */
  struct table *tb;
  void **ptr; /* ptr[i]: the object whose handle is in tb->h[i] */
  tu_rng_t rng;
};

/* Allocates an object of 16 .. 160 bytes, writes its head and publishes its handle in
 * slot i. Returns the object, or NULL if the allocation failed. */
static struct head *owner_publish(struct owner *o, size_t i) {
  size_t s = sizeof(struct head) + tu_rng_range(&o->rng, 0, 3) * 48;
  struct head *p = owner_alloc(o->a, s);
  if (!p) return NULL;
  uint64_t h = sm_handle_of(p);
  __atomic_store_n(&p->magic, MAGIC, __ATOMIC_RELAXED);
  __atomic_store_n(&p->self, h, __ATOMIC_RELAXED);
  o->ptr[i] = p;
  atomic_store_explicit(&o->tb->h[i], h, memory_order_release);
  return p;
}

/* iters times: frees a random slot's object (by free or sm_hfree, in turn), checks its
 * handle is stale at once, publishes a new object there. Counts into *stale_live the
 * freed handles that still deref'd, into *fail the frees and allocations that failed. */
static void owner_replace_objects(struct owner *o, size_t iters, size_t *stale_live, size_t *fail) {
  for (size_t it = 0; it < iters; it++) {
    size_t i = tu_rng_range(&o->rng, 0, TABLE - 1);
    uint64_t old = atomic_load_explicit(&o->tb->h[i], memory_order_relaxed);
    if (it % 2) free(o->ptr[i]);
    else if (sm_hfree(old) != 0) (*fail)++;
    if (sm_deref(old) != NULL) (*stale_live)++;
    if (!owner_publish(o, i)) {
      (*fail)++;
      break;
    }
  }
}

/* Joins the readers and checks what they saw: only live objects with their own bytes. */
static void join_readers_assert_no_stale_reads(struct reader *rd, pthread_t *t) {
  size_t iters = 0, validated = 0, bad_content = 0, bad_addr = 0, stale_live = 0;
  uint64_t bad_h = 0;
  for (int k = 0; k < NREADERS; k++) {
    pthread_join(t[k], NULL);
    iters += rd[k].iters;
    validated += rd[k].validated;
    bad_content += rd[k].bad_content;
    bad_addr += rd[k].bad_other_address;
    stale_live += rd[k].stale_live;
    if (rd[k].bad_content) bad_h = rd[k].bad_h;
  }
  cr_assert_geq(iters, (size_t)NREADERS * READER_MIN, "readers did not run");
  cr_assert_gt(validated, 0, "no reader ever saw a live object");
  cr_assert_eq(bad_content, 0, "%zu of %zu validated reads saw another object's bytes (e.g. handle %#llx)",
               bad_content, validated, (unsigned long long)bad_h);
  cr_assert_eq(bad_addr, 0, "one handle deref'd to two different addresses %zu times", bad_addr);
  cr_assert_eq(stale_live, 0, "%zu handles deref'd after the owner freed them and published a new one", stale_live);
}

/* The owner (this thread) replaces random objects: free, allocate (often the same slot),
 * write the head, publish the handle. Readers must never see a stale or reused slot. */
static void deref_while_owner_frees(bool in_arena) {
  enum { OWNER_ITERS = 300000 };
  static struct table tb;
  static void *ptr[TABLE];
  struct owner o = {.a = in_arena ? sm_arena_new(NULL) : NULL, .tb = &tb, .ptr = ptr, .rng = tu_rng(12345)};
  if (in_arena) cr_assert_not_null(o.a);
  for (size_t i = 0; i < TABLE; i++) {
    struct head *p = owner_publish(&o, i);
    cr_assert_not_null(p);
    cr_assert_neq(atomic_load(&tb.h[i]), 0);
  }
  atomic_store(&tb.done, false);
  struct reader rd[NREADERS];
  pthread_t t[NREADERS];
  for (int k = 0; k < NREADERS; k++) {
    rd[k] = (struct reader){.tb = &tb, .rng = tu_rng(1000 + (uint64_t)k)};
    cr_assert_eq(pthread_create(&t[k], NULL, reader_main, &rd[k]), 0);
  }
  size_t owner_stale_live = 0, owner_fail = 0;
  owner_replace_objects(&o, OWNER_ITERS, &owner_stale_live, &owner_fail);
  atomic_store_explicit(&tb.done, true, memory_order_release);
  join_readers_assert_no_stale_reads(rd, t);
  cr_assert_eq(owner_fail, 0, "the owner's own free/alloc failed %zu times", owner_fail);
  cr_assert_eq(owner_stale_live, 0, "a freed object's handle derefs in its owner (%zu times)", owner_stale_live);
  for (size_t i = 0; i < TABLE; i++) {
    uint64_t h = atomic_load(&tb.h[i]);
    cr_assert_eq(sm_deref(h), ptr[i]);
  }
  if (in_arena) {
    tu_arena_drop(o.a);
    size_t live = 0;
    for (size_t i = 0; i < TABLE; i++) live += sm_deref(atomic_load(&tb.h[i])) != NULL;
    cr_assert_eq(live, 0);
  } else {
    for (size_t i = 0; i < TABLE; i++) free(ptr[i]);
  }
}

/* Readers sm_deref arena objects while the owner frees and reallocates them: object or NULL. */
Test(threads, deref_while_owner_frees_arena) { deref_while_owner_frees(true); }

/* The same with plain malloc/free objects of the owner's root arena. */
Test(threads, deref_while_owner_frees_malloc) { deref_while_owner_frees(false); }

/* ---- enter is per thread, and remote frees ---------------------------------------- */

struct peek {
  sm_arena_t *of_malloc, *root, *entered_before;
};

static void *peek_main(void *argp) {
  struct peek *pk = argp;
  pk->entered_before = sm_arena_enter(NULL);
  sm_arena_t *probe = sm_arena_new(NULL);
  pk->root = probe ? sm_arena_parent(probe) : NULL;
  if (probe) tu_arena_drop(probe);
  void *p = malloc(32);
  pk->of_malloc = sm_arena_of(p);
  free(p);
  return NULL;
}

/* enter(a) in one thread does not change where another thread's malloc goes. */
Test(threads, enter_is_per_thread) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_t *my_root = sm_arena_parent(a);
  sm_arena_t *prev = sm_arena_enter(a);
  struct peek pk = {0};
  pthread_t t;
  int rc = pthread_create(&t, NULL, peek_main, &pk);
  if (rc == 0) pthread_join(t, NULL);
  void *mine = malloc(32);
  sm_arena_t *of_mine = sm_arena_of(mine);
  sm_arena_enter(prev);
  cr_assert_eq(rc, 0);
  cr_assert_eq(of_mine, a);
  cr_assert_null(pk.entered_before, "a new thread starts entered in another thread's arena");
  cr_assert_not_null(pk.root);
  cr_assert_neq(pk.root, my_root, "two threads share a root arena");
  cr_assert_eq(pk.of_malloc, pk.root, "another thread's malloc went to %p, not its root %p", (void *)pk.of_malloc,
               (void *)pk.root);
  free(mine);
  tu_arena_drop(a);
}

struct remote {
  void **ps;
  size_t n;
  int id;
  pthread_barrier_t *start;
};

static void *remote_main(void *argp) {
  struct remote *r = argp;
  pthread_barrier_wait(r->start);
  for (size_t i = (size_t)r->id; i < r->n; i += NFREERS) free(r->ps[i]);
  return NULL;
}

/* Threads free() an arena's objects while its owner keeps allocating in it: no crash, the
 * freed handles are stale, the owner's new objects intact; closing then kills the rest. */
Test(threads, remote_frees_while_owner_allocates) {
  enum { N = 100000, M = 50000 };
  void **ps = malloc(N * sizeof *ps);
  sm_handle_t *hs = malloc(N * sizeof *hs);
  void **qs = malloc(M * sizeof *qs);
  sm_handle_t *hq = malloc(M * sizeof *hq);
  cr_assert(ps && hs && qs && hq);
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t i = 0; i < N; i++) {
    ps[i] = sm_arena_malloc(a, 16 + i % 500);
    cr_assert_not_null(ps[i]);
    hs[i] = sm_handle_of(ps[i]);
  }
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, NFREERS + 1);
  struct remote r[NFREERS];
  pthread_t t[NFREERS];
  for (int k = 0; k < NFREERS; k++) {
    r[k] = (struct remote){ps, N, k, &start};
    cr_assert_eq(pthread_create(&t[k], NULL, remote_main, &r[k]), 0);
  }
  pthread_barrier_wait(&start);
  size_t fail = 0;
  for (size_t i = 0; i < M; i++) {
    size_t s = 16 + i % 500;
    qs[i] = sm_arena_malloc(a, s);
    if (!qs[i]) {
      fail++;
      hq[i] = 0;
      continue;
    }
    memset(qs[i], (int)(i & 0xff), s);
    hq[i] = sm_handle_of(qs[i]);
  }
  for (int k = 0; k < NFREERS; k++) pthread_join(t[k], NULL);
  pthread_barrier_destroy(&start);
  cr_assert_eq(fail, 0, "%zu owner allocations failed during remote frees", fail);
  cr_assert_eq(count_live(hs, N), 0, "remotely freed objects still deref");
  size_t bad = 0;
  for (size_t i = 0; i < M; i++) {
    unsigned char *q = sm_deref(hq[i]);
    size_t s = 16 + i % 500;
    if (q != qs[i] || q[0] != (unsigned char)(i & 0xff) || q[s - 1] != (unsigned char)(i & 0xff)) bad++;
  }
  cr_assert_eq(bad, 0, "%zu of the owner's new objects are wrong after remote frees", bad);
  /* The slots freed remotely are reusable by the owner. */
  for (size_t i = 0; i < N; i++) cr_assert_not_null(sm_arena_malloc(a, 16 + i % 500));
  sm_stats_t st;
  sm_arena_stats(a, &st);
  cr_assert_geq(st.objects_live, M + N);
  tu_arena_drop(a);
  cr_assert_eq(count_live(hq, M), 0, "objects survive the close");
  free(ps);
  free(hs);
  free(qs);
  free(hq);
}

/* Handles taken by another thread while the owner frees and reallocates the
 * same slots again and again, through many generation wraps: no handle taken
 * ever dereferences again once its object is freed. (A slot of a block that a
 * handle named retires when its generation wraps; a handle taken while the
 * wrap happens either names the new cycle or makes the wrap retire.) */
/* On a slow machine the rounds stop early, once NAMED_MIN_ROUNDS (16 wraps of a
 * slot's 7-bit generation) are done, NAMED_MIN_TAKEN handles taken and
 * NAMED_BUDGET_S seconds spent: with 20 yields a round, the TSan build at load
 * 20 was at round 20,689 after minutes, and the file took 463 s of ctest's 600
 * (100 s at load 8). */
enum { NAMED_ROUNDS = 40000, NAMED_KEEP = 8192, NAMED_MIN_ROUNDS = 2048, NAMED_MIN_TAKEN = 400, NAMED_BUDGET_S = 20 };
static _Atomic(void *) named_cur;
static atomic_bool named_done;
static sm_handle_t named_seen[NAMED_KEEP];
static size_t named_count;
static atomic_size_t named_taken; /* named_count, for the owner's loop */
static atomic_ulong named_looks;  /* the taker's loads of named_cur */

static void *named_taker(void *arg) {
  (void)arg;
  sm_handle_t last = 0;
  while (!atomic_load(&named_done)) {
    void *p = atomic_load(&named_cur);
    atomic_fetch_add_explicit(&named_looks, 1, memory_order_relaxed);
    sm_handle_t h = p ? sm_handle_of(p) : 0;
    if (h && h != last && named_count < NAMED_KEEP) {
      named_seen[named_count++] = h;
      atomic_store_explicit(&named_taken, named_count, memory_order_relaxed);
    }
    if (h) last = h;
  }
  return NULL;
}

static size_t named_revived(void *live) {
  size_t n = 0;
  sm_handle_t now = live ? sm_handle_of(live) : 0;
  for (size_t k = 0; k < named_count; k++) {
    void *q = sm_deref(named_seen[k]);
    if (q && named_seen[k] != now) n++;
  }
  return n;
}

Test(threads, handles_from_another_thread_never_revive, .timeout = 300) {
  sm_arena_t *a = sm_arena_new(NULL);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, named_taker, NULL), 0);
  double stop_after = tu_now() + NAMED_BUDGET_S;
  for (int r = 0; r < NAMED_ROUNDS; r++) {
    void *p = sm_arena_malloc(a, 48);
    cr_assert_not_null(p);
    atomic_store(&named_cur, p);
    /* until the taker looked twice, at most 20 yields (each may cost a time
     * slice when the machine is loaded) */
    unsigned long looks = atomic_load(&named_looks);
    for (int spin = 0; spin < 20 && atomic_load(&named_looks) - looks < 2; spin++) sched_yield();
    atomic_store(&named_cur, NULL);
    sm_free(p);
    if (r >= NAMED_MIN_ROUNDS && atomic_load(&named_taken) >= NAMED_MIN_TAKEN && tu_now() > stop_after) break;
  }
  atomic_store(&named_done, true);
  pthread_join(t, NULL);
  cr_assert_gt(named_count, 100, "the other thread took too few handles (%zu) to test anything", named_count);
  cr_assert_eq(named_revived(NULL), 0, "a handle of a freed object dereferences");
  /* the same slots, reallocated many more times: still none revives */
  for (int r = 0; r < 70000; r++) {
    void *p = sm_arena_malloc(a, 48);
    size_t bad = r % 64 ? 0 : named_revived(p);
    sm_free(p);
    cr_assert_eq(bad, 0, "after %d more reallocations %zu stale handles dereference", r, bad);
  }
  tu_arena_drop(a);
}
