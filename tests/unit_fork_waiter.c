/* unit_fork_waiter.c: a fork child's repair run by a lock's waiter (slots/lock.h,
 * smi_lock_forks: a child handler registered before the allocator's allocates
 * and finds a lock a vanished thread held) inside an operation that holds
 * another allocator lock of its own thread. The repair leaves that lock to the
 * operation, and so cannot end the vanished threads' heaps then; the
 * allocator's own child handler, which runs after, must do it, else their
 * blocks stay owned by heaps that no thread has, for the child's life.
 *
 * A thread V is held inside its root arena's lock (smi_block_collect, wrapped
 * at link time: tests/CMakeLists.txt). The main thread forks as glibc's fork
 * does with the allocator's handlers (the count of forks under way, then the
 * system call), and the child first asks for the statistics, as an earlier
 * child handler could: the tree lock (its own), then V's arena lock (orphaned). */
#define _GNU_SOURCE /* testutil.h */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "testutil.h"
#include "watchdog.h"

size_t __real_smi_block_collect(smi_block_t *b);

static atomic_int armed, parked, freed;
static pthread_t v;
static void *p, *q; /* V's objects */

size_t __wrap_smi_block_collect(smi_block_t *b) {
  if (atomic_load(&armed) && pthread_equal(pthread_self(), v)) {
    atomic_store(&parked, 1); /* inside V's root arena lock, for good */
    for (;;) pause();
  }
  return __real_smi_block_collect(b);
}

static void *v_thread(void *arg) {
  (void)arg;
  p = sm_malloc(3000);
  q = sm_malloc(3000);
  while (!atomic_load(&freed)) usleep(1000);
  atomic_store(&armed, 1);
  smi_arena_trim(smi_root_arena()); /* its arena's lock, then a collect (p was freed into the block) */
  return NULL;
}

/* In the child: 0 if V's heap ended (its block abandoned, no owner). */
static int child(bool stats_first) {
  smi_block_t *b = smi_block_of(q);
  if (stats_first) {
    sm_stats_t s;
    sm_arena_stats(NULL, &s); /* the waiter's repair, its own tree lock held */
  }
  smi_fork_child(); /* the allocator's child handler */
  if (__atomic_load_n(&b->owner, __ATOMIC_RELAXED) != NULL) return 1;
  sm_free(q); /* the child frees the ended thread's object */
  return 0;
}

/* V parked inside its arena's lock. */
static int park_v(void) {
  if (pthread_create(&v, NULL, v_thread, NULL)) return wd_fail("pthread_create");
  while (!__atomic_load_n(&q, __ATOMIC_ACQUIRE)) usleep(1000);
  sm_free(p); /* a remote free, alone (more than 2 KiB) */
  atomic_store(&freed, 1);
  while (!atomic_load(&parked)) usleep(1000);
  return 0;
}

static int scenario(void *arg) {
  (void)arg;
  if (park_v()) return 1;
  for (int stats_first = 0; stats_first < 2; stats_first++) {
    wd_phase("fork child, %s", stats_first ? "statistics first" : "the handler alone");
    atomic_store(&smi_lock_fork_pid, (int)getpid()); /* the prepare handler */
    atomic_fetch_add(&smi_lock_forks, 1);
    pid_t c = (pid_t)syscall(SYS_fork);
    if (c == 0) _exit(child(stats_first));
    atomic_fetch_sub(&smi_lock_forks, 1); /* the parent handler */
    int st = 0;
    if (c < 0 || waitpid(c, &st, 0) != c) return wd_fail("fork");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      return wd_fail("%s: the vanished thread's heap was not ended in the child (status %#x)",
                     stats_first ? "repair by a waiter holding its own lock" : "repair in the handler", st);
  }
  return 0; /* (V stays parked: the watchdog's process ends with it) */
}

Test(fork_waiter, a_waiters_repair_holding_its_own_lock_leaves_the_heaps_end_to_the_handler, .timeout = 60) {
  WD_RUN("fork_waiter", 20, scenario, NULL);
}

/* A child handler registered before the allocator's forks (its child's own
 * fork: the allocator's prepare and parent handlers run in it) and then
 * allocates: its fork's count and pid must not hide that this child is not
 * repaired yet, or it waits for ever on the lock a vanished thread held. */
static int fork_in_child(void) {
  smi_fork_prepare(); /* the early handler's fork() */
  pid_t g = (pid_t)syscall(SYS_fork);
  if (g == 0) _exit(0);
  smi_fork_parent();
  int st;
  if (g < 0 || waitpid(g, &st, 0) != g) return 2;
  sm_stats_t s;
  sm_arena_stats(NULL, &s); /* V's arena lock, orphaned */
  smi_fork_child();         /* the allocator's child handler */
  return 0;
}

static int scenario_fork_in_child(void *arg) {
  (void)arg;
  if (park_v()) return 1;
  wd_phase("a child that forks before its repair, then takes a lock a vanished thread held");
  atomic_store(&smi_lock_fork_pid, (int)getpid()); /* the prepare handler */
  atomic_fetch_add(&smi_lock_forks, 1);
  pid_t c = (pid_t)syscall(SYS_fork);
  if (c == 0) _exit(fork_in_child());
  atomic_fetch_sub(&smi_lock_forks, 1); /* the parent handler */
  int st = 0;
  if (c < 0 || waitpid(c, &st, 0) != c) return wd_fail("fork");
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return wd_fail("child status %#x", st);
  return 0;
}

Test(fork_waiter, a_child_that_forks_before_its_repair_is_still_repaired_by_a_waiter, .timeout = 60) {
  WD_RUN("fork_waiter_fork_in_child", 10, scenario_fork_in_child, NULL);
}
