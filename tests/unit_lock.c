/* unit_lock.c: unit tests of the slots/ lock (slots/lock.h): mutual exclusion
 * with more threads than cores, waiters that sleep instead of holding the CPU,
 * errno kept across a wait, and the fork child's view of a lock with sleeping
 * waiters. Linked with the static library (smi_lock_wait is internal). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "slots/lock.h"

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) && errno == EINTR) {
  }
}

static bool parked(smi_lock_t *l) { return atomic_load_explicit(&l->holder, memory_order_relaxed) & SMI_LOCK_PARKED; }

/* Waits (at most 10 s) until a waiter sleeps on l. */
static bool wait_parked(smi_lock_t *l) {
  for (int i = 0; i < 10000 && !parked(l); i++) sleep_ms(1);
  return parked(l);
}

/* ---- mutual exclusion ------------------------------------------------------- */

#define EX_THREADS 8
#define EX_ROUNDS 20000
static smi_lock_t ex_lock = SMI_LOCK_INIT;
static volatile long ex_count; /* plain: only the lock orders it */
static volatile int ex_inside;
static _Atomic int ex_overlaps;

static void *ex_worker(void *arg) {
  (void)arg;
  for (int i = 0; i < EX_ROUNDS; i++) {
    smi_lock(&ex_lock);
    if (ex_inside++) atomic_fetch_add(&ex_overlaps, 1);
    ex_count = ex_count + 1;
    if (i % 512 == 0) sched_yield(); /* now and then a holder leaves the CPU: waiters park */
    ex_inside--;
    smi_unlock(&ex_lock);
  }
  return NULL;
}

/* 8 threads on 2 cores: holders are preempted, waiters spin, park and are
 * woken; no increment is lost and no two threads are ever inside together. */
Test(lock, excludes_with_more_threads_than_cores) {
  pthread_t t[EX_THREADS];
  for (int i = 0; i < EX_THREADS; i++) cr_assert_eq(pthread_create(&t[i], NULL, ex_worker, NULL), 0);
  for (int i = 0; i < EX_THREADS; i++) pthread_join(t[i], NULL);
  cr_assert_eq(ex_count, (long)EX_THREADS * EX_ROUNDS);
  cr_assert_eq(atomic_load(&ex_overlaps), 0);
  cr_assert_eq(atomic_load(&ex_lock.holder), 0, "the lock is free at the end");
}

/* ---- a waiter sleeps ----------------------------------------------------------- */

static smi_lock_t sl_lock = SMI_LOCK_INIT;
static _Atomic long sl_cpu_ns = -1;
static _Atomic int sl_errno = -1;

static long thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *sl_waiter(void *arg) {
  (void)arg;
  long before = thread_cpu_ns();
  errno = 4321;
  smi_lock(&sl_lock);
  atomic_store(&sl_errno, errno);
  atomic_store(&sl_cpu_ns, thread_cpu_ns() - before);
  smi_unlock(&sl_lock);
  return NULL;
}

/* A waiter whose holder stays away (here 300 ms) marks the lock parked and
 * sleeps: it burns a few spins' worth of CPU, not the wait (a spin or
 * sched_yield loop burns the whole wait whenever a core is free). Its errno
 * is as before the wait (the futex calls fail with EAGAIN at times). */
Test(lock, a_waiter_sleeps_until_the_unlock) {
  smi_lock(&sl_lock);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, sl_waiter, NULL), 0);
  cr_assert(wait_parked(&sl_lock), "the waiter never marked the lock parked");
  sleep_ms(300);
  smi_unlock(&sl_lock);
  pthread_join(t, NULL);
  long cpu = atomic_load(&sl_cpu_ns);
  cr_assert_geq(cpu, 0);
  cr_assert_lt(cpu, 50 * 1000000L, "the waiter used %ld us of CPU in a 300 ms wait", cpu / 1000);
  cr_assert_eq(atomic_load(&sl_errno), 4321);
  cr_assert_eq(atomic_load(&sl_lock.holder), 0);
}

/* ---- fork --------------------------------------------------------------------- */

static smi_lock_t fk_mine = SMI_LOCK_INIT, fk_theirs = SMI_LOCK_INIT;
static _Atomic int fk_release;

static void *fk_waiter(void *arg) { /* sleeps on the lock given */
  smi_lock_t *l = arg;
  smi_lock(l);
  smi_unlock(l);
  return NULL;
}

static void *fk_holder(void *arg) { /* holds fk_theirs until told */
  (void)arg;
  smi_lock(&fk_theirs);
  while (!atomic_load(&fk_release)) sleep_ms(1);
  smi_unlock(&fk_theirs);
  return NULL;
}

/* In a fork child, a lock the forking thread holds while another thread sleeps
 * on it is the child's own (mine, left held: its unlock finds no one to wake);
 * a lock another thread held, with a sleeper, is orphaned: free again, and
 * the child takes and drops it without waiting. */
Test(lock, fork_child_tells_its_own_parked_lock_from_an_orphan) {
  pthread_t holder, w1, w2;
  smi_lock(&fk_mine);
  cr_assert_eq(pthread_create(&holder, NULL, fk_holder, NULL), 0);
  while (!atomic_load(&fk_theirs.holder)) sleep_ms(1);
  cr_assert_eq(pthread_create(&w1, NULL, fk_waiter, &fk_mine), 0);
  cr_assert_eq(pthread_create(&w2, NULL, fk_waiter, &fk_theirs), 0);
  cr_assert(wait_parked(&fk_mine));
  cr_assert(wait_parked(&fk_theirs));
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    bool mine = false;
    int bad = 0;
    if (smi_lock_orphaned(&fk_mine, &mine) || !mine) bad |= 1;
    smi_unlock(&fk_mine);
    mine = false;
    if (!smi_lock_orphaned(&fk_theirs, &mine) || mine) bad |= 2;
    if (atomic_load(&fk_theirs.holder)) bad |= 4;
    smi_lock(&fk_theirs);
    smi_unlock(&fk_theirs);
    _exit(bad);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  cr_assert(WIFEXITED(status), "the child did not exit (status %d)", status);
  cr_assert_eq(WEXITSTATUS(status), 0, "child checks failed: %d", WEXITSTATUS(status));
  smi_unlock(&fk_mine);
  atomic_store(&fk_release, 1);
  pthread_join(holder, NULL);
  pthread_join(w1, NULL);
  pthread_join(w2, NULL);
}
