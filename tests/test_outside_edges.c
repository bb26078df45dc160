/* test_outside_edges.c: the allocator seen from outside, at the edges a
 * program may push it to (helper R2, second round): signals at a high rate and
 * siglongjmp out of handlers, 500 threads at once and in waves handing objects
 * to each other, most of the address space taken by the program, RLIMIT_AS at
 * every stage of a small program's allocations (tests/outside_prog.c), the
 * usable size and malloc_trim on every kind of pointer, the sm_arena_* error
 * cases of include/slotmalloc.h, handles dereferenced while their owner frees
 * or closes, and every option with a bad value. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

static size_t objects_live(void) {
  sm_stats_t s;
  sm_arena_stats(NULL, &s);
  return s.objects_live;
}

/* ---- signals -------------------------------------------------------------------------- */

static atomic_long alarms;
static void on_alarm(int sig) {
  (void)sig;
  atomic_fetch_add(&alarms, 1);
}

static void *signal_churn(void *arg) {
  tu_rng_t r = tu_rng((uint64_t)(uintptr_t)arg);
  enum { LIVE = 512 };
  void *live[LIVE] = {0};
  int fds[2];
  if (pipe(fds) != 0) return (void *)1;
  for (int i = 0; i < 300000; i++) {
    size_t k = tu_rng_range(&r, 0, LIVE - 1);
    free(live[k]);
    size_t n = tu_rng_range(&r, 0, 15) == 0 ? tu_rng_range(&r, 20000, 300000) : tu_rng_range(&r, 1, 2000);
    live[k] = malloc(n);
    if (!live[k]) return (void *)2;
    memset(live[k], (int)k, n < 64 ? n : 64);
    if (i % 5000 == 0) { /* a system call the signal interrupts (EINTR, no SA_RESTART) */
      char c;
      struct timespec ts = {0, 200000};
      nanosleep(&ts, NULL);
      if (write(fds[1], "x", 1) == 1) (void)!read(fds[0], &c, 1);
    }
  }
  for (int k = 0; k < LIVE; k++) free(live[k]);
  close(fds[0]);
  close(fds[1]);
  return NULL;
}

/* SIGALRM every 50 us (no SA_RESTART) while three threads malloc and free
 * 300,000 times each (1 B-300 KB, nanosleep and pipe reads the signals
 * interrupt): no hang, no failure, and every object freed is gone. */
Test(outside_edges, malloc_free_under_signals_at_a_high_rate, .timeout = 120) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  size_t before = objects_live();
  struct itimerval it = {{0, 50}, {0, 50}};
  setitimer(ITIMER_REAL, &it, NULL);
  pthread_t t[3];
  for (int i = 0; i < 3; i++) cr_assert_eq(pthread_create(&t[i], NULL, signal_churn, (void *)(uintptr_t)(i + 1)), 0);
  for (int i = 0; i < 3; i++) {
    void *rv;
    pthread_join(t[i], &rv);
    cr_assert_null(rv, "thread %d: %s", i, rv == (void *)2 ? "malloc failed" : "no pipe");
  }
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  cr_assert_gt(atomic_load(&alarms), 0);
  /* glibc keeps a few objects per ended thread with its cached stack (the DTV) */
  cr_assert(objects_live() <= before + 16, "objects live %zu -> %zu", before, objects_live());
}

static sigjmp_buf jump;
static void on_usr1(int sig) {
  (void)sig;
  siglongjmp(jump, 1);
}

/* siglongjmp out of a signal handler (raised between allocation calls, never
 * inside one), 20,000 times, the handler's frame abandoned with objects of
 * every size live around it: nothing lost, nothing corrupted. */
Test(outside_edges, siglongjmp_out_of_a_handler_between_allocations, .timeout = 60) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  size_t before = objects_live();
  tu_rng_t r = tu_rng(7);
  void *volatile held = NULL;
  volatile int jumps = 0;
  for (int i = 0; i < 20000; i++) {
    size_t n = tu_rng_range(&r, 1, 100000);
    void *p = malloc(n);
    cr_assert_not_null(p);
    tu_fill(p, n < 256 ? n : 256, (uint64_t)i);
    if (sigsetjmp(jump, 1) == 0) {
      held = p;
      raise(SIGUSR1);
      cr_assert_fail("the handler returned");
    }
    jumps++;
    cr_assert_eq(tu_check(held, n < 256 ? n : 256, (uint64_t)i), SIZE_MAX);
    free(held);
  }
  cr_assert_eq(jumps, 20000);
  cr_assert_eq(objects_live(), before);
}

/* ---- many threads ----------------------------------------------------------------------- */

enum { NTHREADS = 500, PER_THREAD = 64 };
static void *handed[NTHREADS][PER_THREAD];
static pthread_barrier_t all_here;

static void *hand_over(void *arg) {
  size_t id = (size_t)(uintptr_t)arg;
  tu_rng_t r = tu_rng(id + 1);
  for (int k = 0; k < PER_THREAD; k++) {
    size_t n = tu_rng_range(&r, 0, 31) == 0 ? tu_rng_range(&r, 20000, 200000) : tu_rng_range(&r, 8, 3000);
    handed[id][k] = malloc(n);
    if (!handed[id][k]) return (void *)1;
    *(size_t *)handed[id][k] = id;
  }
  pthread_barrier_wait(&all_here);   /* all 500 alive at once */
  size_t from = (id + 1) % NTHREADS; /* frees the next thread's objects */
  for (int k = 0; k < PER_THREAD; k++) {
    if (*(size_t *)handed[from][k] != from) return (void *)2;
    free(handed[from][k]);
  }
  return NULL;
}

static void run_500(void) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  pthread_barrier_init(&all_here, NULL, NTHREADS);
  static pthread_t t[NTHREADS];
  for (size_t i = 0; i < NTHREADS; i++)
    cr_assert_eq(pthread_create(&t[i], &attr, hand_over, (void *)(uintptr_t)i), 0, "thread %zu not created", i);
  for (size_t i = 0; i < NTHREADS; i++) {
    void *rv;
    pthread_join(t[i], &rv);
    cr_assert_null(rv, "thread %zu: %s", i, rv == (void *)1 ? "malloc failed" : "an object was overwritten");
  }
  pthread_barrier_destroy(&all_here);
  pthread_attr_destroy(&attr);
}

/* 500 threads alive at once (more than any per-thread structure of a small
 * allocator: ids, heaps), each allocating 64 objects and freeing another
 * thread's; twice. Every object handed over is gone after each round (32,000
 * were live; glibc keeps one object, the DTV, with each thread stack it
 * caches: a few hundred), and the second
 * round runs on the memory of the first: after malloc_trim, the committed
 * memory is no more than after the first round's trim plus 8 MiB. */
Test(outside_edges, five_hundred_threads_at_once_hand_objects_over, .timeout = 120) {
  size_t before = objects_live();
  run_500();
  malloc_trim(0);
  sm_stats_t s1, s2;
  sm_arena_stats(NULL, &s1);
  cr_assert(s1.objects_live <= before + NTHREADS, "objects live %zu -> %zu after 500 threads", before,
            s1.objects_live);
  run_500();
  malloc_trim(0);
  sm_arena_stats(NULL, &s2);
  cr_assert(s2.objects_live <= before + NTHREADS, "objects live %zu -> %zu after 1000 threads", before,
            s2.objects_live);
  cr_assert(s2.bytes_committed <= s1.bytes_committed + (8u << 20), "committed %zu after round 1, %zu after round 2",
            s1.bytes_committed, s2.bytes_committed);
}

static void *wave_objects[2][50][32];
static void *wave_thread(void *arg) {
  size_t v = (size_t)(uintptr_t)arg, wave = v >> 8, id = v & 255;
  void *(*mine)[32] = &wave_objects[wave & 1][id];
  void *(*theirs)[32] = &wave_objects[(wave + 1) & 1][(id + 7) % 50];
  for (int k = 0; k < 32; k++) free((*theirs)[k]); /* the previous wave's objects */
  for (int k = 0; k < 32; k++) {
    (*mine)[k] = malloc(16 + (size_t)k * 97 + id);
    if (!(*mine)[k]) return (void *)1;
  }
  return NULL;
}

/* 20 waves of 50 threads; each thread frees 32 objects a thread of the
 * previous wave allocated (and which has ended) and leaves 32 for the next. */
Test(outside_edges, waves_of_threads_free_what_ended_threads_left, .timeout = 120) {
  size_t before = objects_live();
  memset(wave_objects, 0, sizeof wave_objects);
  for (size_t wave = 0; wave < 20; wave++) {
    pthread_t t[50];
    for (size_t i = 0; i < 50; i++)
      cr_assert_eq(pthread_create(&t[i], NULL, wave_thread, (void *)(uintptr_t)(wave << 8 | i)), 0);
    for (size_t i = 0; i < 50; i++) {
      void *rv;
      pthread_join(t[i], &rv);
      cr_assert_null(rv);
    }
    memset(wave_objects[(wave + 1) & 1], 0, sizeof wave_objects[0]);
  }
  for (int i = 0; i < 50; i++)
    for (int k = 0; k < 32; k++) free(wave_objects[19 & 1][i][k]);
  cr_assert(objects_live() <= before + 16, "objects live %zu -> %zu", before, objects_live());
}

/* ---- address space --------------------------------------------------------------------------- */

static void run_prog(const char *shell_cmd, tu_proc_t *r) {
  char *argv[] = {"/bin/sh", "-c", (char *)shell_cmd, NULL};
  const char *unset[] = {"LD_PRELOAD", NULL};
  char **env = tu_env_make(unset, NULL);
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 60, r), 0);
  free(env);
}

/* The program maps most of the address space for itself (PROT_NONE,
 * MAP_NORESERVE) before its first allocation: every stage still works. */
Test(outside_edges, most_of_the_address_space_taken_by_the_program, .timeout = 60) {
  tu_proc_t r;
  run_prog("exec " SM_OUTSIDE_PROG " hog", &r);
  cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s\n%s%s", tu_status_str(&r), r.out, r.err);
  cr_assert_null(strstr(r.out, "ENOMEM"), "%s", r.out);
  cr_assert_not_null(strstr(r.out, "done"));
  tu_proc_free(&r);
}

/* RLIMIT_AS from 40 MiB to 120 MiB in steps of 4 MiB: at every limit each
 * stage (a first small object, 1,000 small ones, calloc, an 8 MiB object, a
 * realloc from 1 to 16 MiB, a 1 MiB-aligned object) either works or returns
 * NULL with ENOMEM, the program goes on and exits normally; a failed realloc
 * leaves the object as it was. */
Test(outside_edges, address_space_limit_at_every_stage, .timeout = 120) {
  for (int mib = 40; mib <= 120; mib += 4) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ulimit -v %d && exec " SM_OUTSIDE_PROG " work", mib * 1024);
    tu_proc_t r;
    run_prog(cmd, &r);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "ulimit -v %d MiB: %s\n%s%s", mib, tu_status_str(&r),
              r.out, r.err);
    cr_assert_not_null(strstr(r.out, "done"), "ulimit -v %d MiB: %s", mib, r.out);
    tu_proc_free(&r);
  }
}

/* What README ("The malloc interface") states: slotmalloc reserves about
 * 72 MiB of address space at its first allocation (its two tables and a
 * first segment), so under RLIMIT_AS of 96 MiB a small program allocates and
 * frees normally (every stage), and under 48 MiB malloc returns NULL with
 * ENOMEM at every stage, never a crash (glibc's malloc works with 8 MiB). */
#ifdef SM_SANITIZED
/* a sanitizer's runtime maps address space of its own (UBSan: all stages
 * need 112 MiB) */
#define SM_ALL_STAGES_KIB "131072"
#else
#define SM_ALL_STAGES_KIB "98304"
#endif
Test(outside_edges, smallest_address_space_limit_as_documented, .timeout = 60) {
  tu_proc_t r;
  run_prog("ulimit -v " SM_ALL_STAGES_KIB " && exec " SM_OUTSIDE_PROG " work", &r);
  cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s\n%s%s", tu_status_str(&r), r.out, r.err);
  cr_assert_null(strstr(r.out, "ENOMEM"), "under 96 MiB:\n%s", r.out);
  tu_proc_free(&r);
  run_prog("ulimit -v 49152 && exec " SM_OUTSIDE_PROG " work", &r);
  cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s\n%s%s", tu_status_str(&r), r.out, r.err);
  cr_assert_not_null(strstr(r.out, "first: ENOMEM"), "under 48 MiB:\n%s", r.out);
  cr_assert_null(strstr(r.out, ": ok"), "under 48 MiB:\n%s", r.out);
  tu_proc_free(&r);
}

/* ---- the usable size and malloc_trim on every kind of pointer ---------------------------- */

/* Small, large, aligned (64 B to 2 MiB), calloc'd, realloc shrunk and grown
 * (small <-> large): the usable size is at least what was asked, all of it
 * writable, and the contents survive malloc_trim between each step. */
Test(outside_edges, usable_size_and_trim_on_every_kind_of_pointer, .timeout = 60) {
  enum { N = 15 };
  void *p[N];
  size_t want[N];
  int k = 0;
  size_t smalls[] = {1, 24, 1000, 60000};
  for (int i = 0; i < 4; i++) p[k] = malloc(want[k] = smalls[i]), k++;
  p[k] = malloc(want[k] = 3u << 20), k++;
  size_t aligns[] = {64, 4096, 65536, 1u << 21};
  for (int i = 0; i < 4; i++) p[k] = aligned_alloc(aligns[i], want[k] = aligns[i] * 3), k++;
  p[k] = calloc(want[k] = 5000, 1), k++;
  p[k] = realloc(malloc(100000), want[k] = 50), k++;         /* large -> small */
  p[k] = realloc(malloc(50), want[k] = 500000), k++;         /* small -> large */
  p[k] = realloc(malloc(4u << 20), want[k] = 1u << 20), k++; /* large shrunk */
  p[k] = realloc(malloc(1u << 20), want[k] = 6u << 20), k++; /* large grown */
  p[k] = memalign(256, want[k] = 700), k++;
  cr_assert_eq(k, N);
  for (int i = 0; i < N; i++) {
    cr_assert_not_null(p[i], "pointer %d", i);
    size_t u = malloc_usable_size(p[i]);
    cr_assert_geq(u, want[i], "pointer %d: usable %zu < %zu", i, u, want[i]);
    tu_fill(p[i], u, (uint64_t)i);
  }
  for (int i = 0; i < N; i++) {
    malloc_trim(0);
    for (int j = 0; j < N; j++)
      cr_assert_eq(tu_check(p[j], malloc_usable_size(p[j]), (uint64_t)j), SIZE_MAX, "pointer %d changed", j);
    free(p[i]);
    p[i] = NULL;
  }
  cr_assert_eq(malloc_usable_size(NULL), 0);
}

/* ---- the sm_arena_* error cases --------------------------------------------------------- */

static sm_arena_t *other_root;
static pthread_barrier_t root_taken, root_checked;
static void *take_root(void *arg) {
  (void)arg;
  void *p = malloc(16); /* this thread's root arena */
  other_root = sm_arena_of(p);
  pthread_barrier_wait(&root_taken);
  pthread_barrier_wait(&root_checked); /* alive while the main thread tries it */
  free(p);
  return NULL;
}

/* Each error case returns what include/slotmalloc.h says. */
Test(outside_edges, sm_arena_error_cases_return_what_the_header_says) {
  sm_arena_t *a = sm_arena_new(NULL), *b = sm_arena_new(a), *c = sm_arena_new(NULL);
  cr_assert(a && b && c);
  void *x = malloc(16);
  sm_arena_t *root = sm_arena_of(x);
  cr_assert_not_null(root);
  cr_assert_null(sm_arena_parent(root), "a root arena has no parent");
  cr_assert_eq(sm_arena_parent(b), a);

  /* allocation: NULL with EINVAL for NULL, a closed arena, another thread's root */
  errno = 0;
  cr_assert_null(sm_arena_malloc(NULL, 8));
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(sm_arena_halloc(NULL, 8), 0);
  pthread_barrier_init(&root_taken, NULL, 2);
  pthread_barrier_init(&root_checked, NULL, 2);
  pthread_t t;
  pthread_create(&t, NULL, take_root, NULL);
  pthread_barrier_wait(&root_taken);
  cr_assert_not_null(other_root);
  errno = 0;
  cr_assert_null(sm_arena_malloc(other_root, 8), "another thread's root arena allocated");
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(sm_arena_calloc(other_root, 1, 8));
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(sm_arena_halloc(other_root, 8), 0);
  cr_assert_eq(sm_arena_steal(other_root, a), EINVAL);
  sm_arena_t *under_other = sm_arena_new(other_root); /* a child of another thread's root: allowed */
  cr_assert_not_null(under_other);
  void *o = sm_arena_malloc(under_other, 100);
  cr_assert_not_null(o);
  sm_arena_release(under_other);
  pthread_barrier_wait(&root_checked);
  pthread_join(t, NULL);
  sm_arena_t *closed = sm_arena_new(NULL);
  sm_arena_t *closed_child = sm_arena_new(closed);
  sm_arena_close(closed);
  sm_arena_close(closed); /* closing a closed arena does nothing */
  errno = 0;
  cr_assert_null(sm_arena_malloc(closed, 8));
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(sm_arena_calloc(closed_child, 2, 8), "a closed arena's child is closed too");
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(sm_arena_aligned_alloc(closed, 64, 64));
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(sm_arena_halloc(closed, 8), 0);
  errno = 0;
  cr_assert_null(sm_arena_new(closed), "a child of a closed arena");
  cr_assert_eq(errno, EINVAL);

  /* steal: EINVAL for a cycle, a closed arena, a root arena */
  cr_assert_eq(sm_arena_steal(a, b), EINVAL);
  cr_assert_eq(sm_arena_steal(closed, c), EINVAL);
  cr_assert_eq(sm_arena_steal(c, closed), EINVAL, "stealing under a closed arena was accepted");
  cr_assert_eq(sm_arena_steal(root, c), EINVAL);
  cr_assert_eq(sm_arena_steal(b, c), 0);
  cr_assert_eq(sm_arena_parent(b), c);

  /* merge: EINVAL for itself, a root as src, a closed arena */
  cr_assert_eq(sm_arena_merge(a, a), EINVAL);
  cr_assert_eq(sm_arena_merge(a, root), EINVAL);
  cr_assert_eq(sm_arena_merge(closed, a), EINVAL, "merging into a closed arena was accepted");
  cr_assert_eq(sm_arena_merge(a, closed), EINVAL, "merging a closed arena was accepted");

  /* promote: NULL with errno set for what is not live */
  void *dead = sm_arena_malloc(a, 32);
  sm_free(dead);
  errno = 0;
  cr_assert_null(sm_arena_promote(dead));
  cr_assert_neq(errno, 0);
  errno = 0;
  int local;
  cr_assert_null(sm_arena_promote(&local));
  cr_assert_neq(errno, 0);
  cr_assert_eq(sm_arena_promote(x), x, "an object of a root arena stays where it is");

  /* set_limit: 0 or EINVAL; 0 removes the cap */
  cr_assert_eq(sm_arena_set_limit(a, 1000), 0);
  void *under = sm_arena_malloc(a, 500);
  cr_assert_not_null(under);
  errno = 0;
  cr_assert_null(sm_arena_malloc(a, 4000));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(sm_arena_set_limit(a, 0), 0);
  void *over = sm_arena_malloc(a, 4000);
  cr_assert_not_null(over);

  /* a root arena cannot be closed; sm_arena_of of what is not ours is NULL */
  sm_arena_close(root);
  void *y = malloc(16);
  cr_assert_not_null(y);
  cr_assert_eq(sm_arena_of(y), root);
  cr_assert_null(sm_arena_of(&local));
  cr_assert_null(sm_arena_of(NULL));
  cr_assert_null(sm_arena_of((char *)y + 1));
  cr_assert_eq(sm_hfree(0), ESTALE);
  cr_assert_eq(sm_hfree(0x123456789abcdefull), ESTALE);
  cr_assert_null(sm_deref(0x123456789abcdefull));
  free(y);
  free(x);
  sm_arena_release(closed_child);
  sm_arena_release(closed);
  sm_arena_release(b);
  sm_arena_release(a);
  sm_arena_release(c);
}

/* ---- handles dereferenced in one thread while another frees or closes ----------------------- */

static _Atomic sm_handle_t shared_handle;
static atomic_int owner_done;
static void *deref_loop(void *arg) {
  (void)arg;
  long seen = 0;
  while (!atomic_load(&owner_done)) {
    void *p = sm_deref(atomic_load(&shared_handle));
    if (p) seen++;
  }
  /* the owner has freed or closed everything: every handle is stale now */
  return (void *)(uintptr_t)(sm_deref(atomic_load(&shared_handle)) != NULL);
}

/* Handles taken in one thread, dereferenced in two others while the owner
 * frees them one by one or closes their arena: sm_deref never faults, and
 * once the free or close has returned, the handle is stale for every thread. */
Test(outside_edges, handles_dereferenced_while_the_owner_frees_or_closes, .timeout = 60) {
  pthread_t t[2];
  atomic_store(&owner_done, 0);
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, deref_loop, NULL);
  for (int round = 0; round < 2000; round++) {
    sm_arena_t *a = sm_arena_new(NULL);
    sm_handle_t h[8];
    for (int k = 0; k < 8; k++) h[k] = sm_arena_halloc(a, 16 + (size_t)k * 300);
    atomic_store(&shared_handle, h[round % 8]);
    if (round % 2) {
      for (int k = 0; k < 8; k++) cr_assert_eq(sm_hfree(h[k]), 0);
    } else {
      sm_arena_close(a);
    }
    for (int k = 0; k < 8; k++) cr_assert_null(sm_deref(h[k]), "round %d: handle %d live after its end", round, k);
    sm_arena_release(a);
  }
  atomic_store(&owner_done, 1);
  for (int i = 0; i < 2; i++) {
    void *rv;
    pthread_join(t[i], &rv);
    cr_assert_null(rv, "a stale handle dereferenced live in another thread");
  }
}

/* ---- every option with a bad value ------------------------------------------------------------ */

/* Every option of README's table with values it does not take: the program
 * runs as with the defaults (exit 0, every stage ok) and stderr has a message
 * naming the variable (an unwritable SLOTMALLOC_*_FILE: the report goes to
 * stderr, or a line says it could not be written). */
Test(outside_edges, every_option_with_a_bad_value, .timeout = 120) {
  static const char *const names[] = {"SLOTMALLOC_ABORT_ON_ERROR",
                                      "SLOTMALLOC_STATS",
                                      "SLOTMALLOC_STATS_FILE",
                                      "SLOTMALLOC_VERBOSE",
                                      "SLOTMALLOC_PURGE_DELAY_MS",
                                      "SLOTMALLOC_LARGE_CACHE_MB",
                                      "SLOTMALLOC_NUMA",
                                      "SLOTMALLOC_PROF_SAMPLE",
                                      "SLOTMALLOC_PROF_FILE",
                                      "SLOTMALLOC_LEAKS",
                                      "SLOTMALLOC_BACKGROUND_PURGE",
                                      "SLOTMALLOC_BATCH_MADVISE"};
  static const char *const values[] = {"bogus", "-1", "99999999999999999999999", "1x", " 1", "0x10"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    for (size_t v = 0; v < sizeof values / sizeof *values; v++) {
      if (strstr(names[i], "FILE") && v) continue; /* a path: any string is a path */
      char cmd[512];
      snprintf(cmd, sizeof cmd, "%s='%s' exec " SM_OUTSIDE_PROG " work", names[i], values[v]);
      if (strstr(names[i], "FILE")) /* an unwritable path */
        snprintf(cmd, sizeof cmd,
                 "%s=/nonexistent/dir/f SLOTMALLOC_STATS=1 SLOTMALLOC_PROF_SAMPLE=4096 exec " SM_OUTSIDE_PROG " work",
                 names[i]);
      tu_proc_t r;
      run_prog(cmd, &r);
      cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s: %s\n%s%s", cmd, tu_status_str(&r), r.out,
                r.err);
      cr_assert_null(strstr(r.out, "ENOMEM"), "%s:\n%s", cmd, r.out);
      /* the message names the variable (options.c: "... is not a number; using the default") */
      cr_assert_not_null(strstr(r.err, names[i]), "%s: no message naming the variable; stderr: %s", cmd, r.err);
      tu_proc_free(&r);
    }
  }
}

/* ---- a thread with the smallest stack ----------------------------------------------------- */

/* Every allocation, statistics, trim and profile call on a thread of
 * PTHREAD_STACK_MIN (16 KiB) stack, as glibc's malloc serves them there; also
 * with every allocation sampled by the heap profiler. malloc_stats (10.5 KiB
 * of frames: two 4 KiB output buffers' worth) and sm_prof_dump (12.4 KiB)
 * overflowed it (SIGSEGV). */
Test(outside_edges, every_call_on_the_smallest_thread_stack, .timeout = 60) {
  static const char *const cmds[] = {
      "exec " SM_OUTSIDE_PROG " smallstack /dev/null 2>/dev/null",
      "SLOTMALLOC_PROF_SAMPLE=1 exec " SM_OUTSIDE_PROG " smallstack /dev/null 2>/dev/null",
  };
  for (int i = 0; i < 2; i++) {
    tu_proc_t r;
    run_prog(cmds[i], &r);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "%s: %s\n%s", cmds[i], tu_status_str(&r), r.out);
    cr_assert_not_null(strstr(r.out, "sm_prof_dump"), "%s:\n%s", cmds[i], r.out);
    tu_proc_free(&r);
  }
}
