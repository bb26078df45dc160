/* test_outside_cancel.c: pthread_cancel and the allocator (helper R2).
 *
 * Deferred cancellation acts only at cancellation points (open, read, write,
 * ...). None of the malloc family, nor glibc's statistics calls (mallinfo,
 * mallinfo2, malloc_trim, malloc_stats: glibc writes the latter with its
 * stream's no-cancel flag), is one: a program may call them with a cancel
 * pending and expect them to return. Inside an allocator a cancellation is
 * worse than an early exit: the thread unwinds from wherever the system call
 * was, with no cleanup of ours, so a lock held there stays held (every other
 * thread then waits for it for ever), an opened descriptor leaks, a flag set
 * for the duration stays set.
 *
 * Each case makes the cancel pending first (pthread_cancel of the calling
 * thread: deferred, so nothing happens until a cancellation point), then
 * makes the call, and checks that it returned; pthread_testcancel then ends
 * the thread as the program meant. A child process (this executable run
 * again, SM_OUTSIDE_CANCEL_CHILD naming the case, before Criterion's main)
 * takes the cases that need options set before the first allocation. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* ---- a call made with a cancel pending ----------------------------------------------- */

typedef void (*call_fn)(void);
static volatile int call_returned;

static void *pending_thread(void *arg) {
  call_fn fn = *(call_fn *)arg;
  pthread_cancel(pthread_self()); /* pending: acted on at the next cancellation point */
  fn();
  call_returned = 1;
  pthread_testcancel();
  return NULL;
}

/* 1 when fn returned with the cancel pending (the thread was then cancelled
 * by pthread_testcancel, as it should be), 0 when it was cancelled inside. */
static int returns_with_a_cancel_pending(call_fn fn) {
  call_returned = 0;
  pthread_t t;
  if (pthread_create(&t, NULL, pending_thread, &fn) != 0) return -1;
  void *rv = NULL;
  pthread_join(t, &rv);
  return rv == PTHREAD_CANCELED && call_returned;
}

/* The lowest free descriptor: a leaked one moves it up. */
static int lowest_free_fd(void) {
  int fd = dup(0);
  if (fd >= 0) close(fd);
  return fd;
}

/* Some empty blocks of many classes, for sm_collect and malloc_trim to give back. */
static void churn_many_classes(void) {
  enum { N = 3000 };
  static void *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = malloc(300 + (size_t)(i % 60) * 64);
    if (p[i]) memset(p[i], 1, 300);
  }
  for (int i = 0; i < N; i++) free(p[i]);
}

/* ---- the child cases (options set in the environment) ------------------------------- */

/* Empty blocks with blocks in use between them (one object in every other
 * class kept), so that the give-back is a batch of separate ranges. */
static void collect_all(void) {
  enum { N = 3000 };
  static void *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = malloc(300 + (size_t)(i % 60) * 64);
    if (p[i]) memset(p[i], 1, 300);
  }
  for (int i = 0; i < N; i++)
    if (i % 61 != 0 || (i / 61) % 2) free(p[i]);
  sm_collect(SIZE_MAX);
}

/* A profile of many stacks (more than the 4 KiB output buffer: written out
 * while the profiler's lock is held), dumped. */
static int prof_dump_result = -1;
static void __attribute__((noinline)) prof_alloc_at(int depth, void **keep) {
  if (depth) {
    prof_alloc_at(depth - 1, keep);
    __asm__ volatile("" ::: "memory"); /* not a tail call: each depth is a stack of its own */
    return;
  }
  *keep = malloc(100);
}
static void prof_dump(void) {
  static void *keep[200];
  for (int i = 0; i < 200; i++) prof_alloc_at(i % 40, &keep[i]);
  char path[64];
  snprintf(path, sizeof path, "/tmp/sm_outside_cancel_prof.%d", (int)getpid());
  prof_dump_result = sm_prof_dump(path);
  unlink(path);
}

static void *exit_pending(void *arg) {
  (void)arg;
  pthread_cancel(pthread_self());
  exit(7);
}

/* 24 MiB of 1 KB objects: new segments mapped (each reported under
 * SLOTMALLOC_VERBOSE=2), kept until the thread ends. */
static void map_segments(void) {
  enum { N = 24 * 1024 };
  static void *p[N];
  for (int i = 0; i < N; i++) p[i] = malloc(1000);
  for (int i = 0; i < N; i++) free(p[i]);
}
static void double_free(void) {
  void *volatile p = malloc(64);
  free(p);
  free(p);
}

__attribute__((constructor)) static void outside_cancel_child(void) {
  const char *c = getenv("SM_OUTSIDE_CANCEL_CHILD");
  if (!c) return;
  int code = 0;
  if (!strcmp(c, "collect")) {
    /* SLOTMALLOC_BATCH_MADVISE=1: the give-back under the pool's lock */
    if (returns_with_a_cancel_pending(collect_all) != 1) code |= 1;
  } else if (!strcmp(c, "exit")) {
    /* SLOTMALLOC_STATS=1, SLOTMALLOC_STATS_FILE set: the report at exit is
     * written by the thread that calls exit() with a cancel pending */
    pthread_t t;
    if (pthread_create(&t, NULL, exit_pending, NULL) != 0) _exit(98);
    pthread_join(t, NULL); /* returns only if that thread was cancelled inside exit() */
    _exit(3);
  } else if (!strcmp(c, "verbose")) {
    /* SLOTMALLOC_VERBOSE=2: a line for every segment mapped */
    if (returns_with_a_cancel_pending(map_segments) != 1) code |= 1;
  } else if (!strcmp(c, "misuse")) {
    /* SLOTMALLOC_ABORT_ON_ERROR=0: the report of a double free, and free goes on */
    if (returns_with_a_cancel_pending(double_free) != 1) code |= 1;
  } else if (!strcmp(c, "prof")) {
    /* SLOTMALLOC_PROF_SAMPLE=1: every allocation sampled */
    int fd = lowest_free_fd();
    if (returns_with_a_cancel_pending(prof_dump) != 1) code |= 1;
    if (lowest_free_fd() != fd) code |= 2;
    if (prof_dump_result != 0) code |= 8;
  } else {
    code = 99;
  }
  /* the allocator still serves this thread (no lock left held) */
  churn_many_classes();
  malloc_trim(0);
  static const char done[] = "child done\n";
  if (write(1, done, sizeof done - 1) < 0) code |= 4;
  _exit(code);
}

static void run_child(const char *name, const char *const *set, int want_exit) {
  char child_var[64];
  snprintf(child_var, sizeof child_var, "SM_OUTSIDE_CANCEL_CHILD=%s", name);
  const char *vars[8] = {child_var};
  for (int i = 0; set && set[i] && i < 6; i++) vars[i + 1] = set[i];
  char **env = tu_env_make(NULL, vars);
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  cr_assert(n > 0);
  self[n] = 0;
  char *argv[] = {self, NULL};
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 30, &r), 0);
  cr_assert(!r.timed_out,
            "child %s hung (killed after 30 s): a thread cancelled inside the allocator left a lock held", name);
  cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == want_exit, "child %s: %s; stdout: %s; stderr: %s", name,
            tu_wait_status_str(r.status), r.out, r.err);
  tu_proc_free(&r);
  free(env);
}

/* With SLOTMALLOC_BATCH_MADVISE=1 the give-back (os.c discard, called by
 * pool.c cool_flush and arena.c give_flush with the pool's lock held) reads
 * /proc/self/status (seccomp_filtered) before a batch of 4 ranges or more
 * while no filter is found. It read it with open() and read(), cancellation
 * points: a thread whose cancel was pending unwound out of free, sm_collect
 * or malloc_trim with the pool's lock held, and its own exit (heap_done ->
 * smi_pool_abandon) and every other thread's next pool take waited for ever
 * (this child hung, killed after 30 s). Now raw system calls
 * (smi_os_read_file), no cancellation points. */
Test(outside_cancel, batched_give_back_is_not_a_cancellation_point, .timeout = 60) {
  const char *set[] = {"SLOTMALLOC_BATCH_MADVISE=1", "SLOTMALLOC_PURGE_DELAY_MS=0", NULL};
  run_child("collect", set, 0);
}

/* The heap profile (sm_prof_dump): it opened the file, wrote the profile
 * (part of it under the profiler's lock) and read /proc/self/maps with
 * cancellation points, and kept prof_busy set meanwhile. */
Test(outside_cancel, prof_dump_is_not_a_cancellation_point, .timeout = 60) {
  const char *set[] = {"SLOTMALLOC_PROF_SAMPLE=1", NULL};
  run_child("prof", set, 0);
}

/* The statistics at exit (SLOTMALLOC_STATS=1 to SLOTMALLOC_STATS_FILE), written
 * by a thread that calls exit() with a cancel pending: the report's open()
 * and write() are cancellation points, and the thread was cancelled inside
 * exit()'s handlers (the process went on: exit status 3 here, no report). Now
 * with cancellation off around the report: the process exits with 7 and the
 * file holds the report. */
Test(outside_cancel, report_at_exit_is_not_a_cancellation_point, .timeout = 60) {
  char path[64], var[96];
  snprintf(path, sizeof path, "/tmp/sm_outside_cancel_stats.%d", (int)getpid());
  snprintf(var, sizeof var, "SLOTMALLOC_STATS_FILE=%s", path);
  unlink(path);
  const char *set[] = {"SLOTMALLOC_STATS=1", var, NULL};
  run_child("exit", set, 7);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "no report at exit");
  char line[256] = "";
  cr_assert_not_null(fgets(line, sizeof line, f));
  fclose(f);
  unlink(path);
  cr_assert_not_null(strstr(line, "slotmalloc stats"), "%s", line);
}

/* SLOTMALLOC_VERBOSE=2 writes a line for every segment mapped, from inside
 * malloc (pool.c smi_pool_take -> error.c smi_message). It wrote with write(),
 * a cancellation point: a thread with a cancel pending was cancelled inside
 * malloc, after the segment was mapped and before its blocks reached the pool
 * (the child exited 1). Now a raw system call (out.c smi_out_write). */
Test(outside_cancel, verbose_lines_are_not_a_cancellation_point, .timeout = 60) {
  const char *set[] = {"SLOTMALLOC_VERBOSE=2", NULL};
  run_child("verbose", set, 0);
}

/* With SLOTMALLOC_ABORT_ON_ERROR=0 the report of a double free is written
 * from inside free (error.c smi_report) and free returns: with write() a
 * thread with a cancel pending was cancelled inside free (exit 1); now
 * smi_out_write, as above. */
Test(outside_cancel, misuse_report_is_not_a_cancellation_point, .timeout = 60) {
  const char *set[] = {"SLOTMALLOC_ABORT_ON_ERROR=0", NULL};
  run_child("misuse", set, 0);
}

/* The same without the option: passes (madvise is not a cancellation point). */
Test(outside_cancel, give_back_is_not_a_cancellation_point, .timeout = 60) {
  const char *set[] = {"SLOTMALLOC_BATCH_MADVISE=0", "SLOTMALLOC_PURGE_DELAY_MS=0", NULL};
  run_child("collect", set, 0);
}

/* ---- threads cancelled at their own cancellation points while they allocate ----------- */

static int devnull_fd = -1;
static atomic_int cleanups;

static void cleanup_free(void *arg) {
  void *volatile *held = arg;
  free(*held);
  *held = NULL;
  atomic_fetch_add(&cleanups, 1);
}

static void *allocating_worker(void *arg) {
  uint64_t r = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
  void *volatile held = NULL;
  pthread_cleanup_push(cleanup_free, (void *)&held);
  for (;;) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    size_t n = (r >> 8) % 4 == 0 ? 40000 + r % 300000 : 1 + r % 3000;
    void *p = malloc(n);
    if (p) memset(p, 0x5a, n < 256 ? n : 256);
    void *old = held;
    held = p;
    free(old);
    if (write(devnull_fd, "x", 1) < 0) abort(); /* the thread's own cancellation point */
  }
  pthread_cleanup_pop(1);
  return NULL;
}

/* 100 waves of 4 threads, each cancelled while it allocates, frees and writes;
 * the cleanup handler frees what the thread holds. Afterwards: every cleanup
 * ran, the objects live are those of before (nothing lost inside the
 * allocator), no descriptor leaked, and the allocator still serves. */
Test(outside_cancel, threads_cancelled_while_they_allocate, .timeout = 120) {
  devnull_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  cr_assert(devnull_fd >= 0);
  int fd_before = lowest_free_fd();
  sm_stats_t before, after;
  sm_arena_stats(NULL, &before);
  int cancelled = 0;
  for (int wave = 0; wave < 100; wave++) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      cr_assert_eq(pthread_create(&t[i], NULL, allocating_worker, (void *)(uintptr_t)(wave * 4 + i)), 0);
    usleep(200);
    for (int i = 0; i < 4; i++) pthread_cancel(t[i]);
    for (int i = 0; i < 4; i++) {
      void *rv;
      pthread_join(t[i], &rv);
      cancelled += rv == PTHREAD_CANCELED;
    }
  }
  cr_assert_eq(cancelled, 400);
  cr_assert_eq(atomic_load(&cleanups), 400);
  sm_arena_stats(NULL, &after);
  /* glibc's own per-thread objects (the DTV) come and go with the threads'
   * cached stacks: a few dozen at most */
  cr_assert(after.objects_live <= before.objects_live + 64, "objects live %zu -> %zu", before.objects_live,
            after.objects_live);
  cr_assert_eq(lowest_free_fd(), fd_before, "a descriptor leaked");
  void *p = malloc(100000);
  cr_assert_not_null(p);
  free(p);
  close(devnull_fd);
}

/* ---- the statistics calls with a cancel pending --------------------------------------- */

static void call_mallinfo2(void) {
  struct mallinfo2 mi = mallinfo2();
  __asm__ volatile("" ::"r"(mi.arena));
}
static void call_mallinfo(void) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  struct mallinfo mi = mallinfo();
#pragma GCC diagnostic pop
  __asm__ volatile("" ::"r"(mi.arena));
}
static void call_arena_stats(void) {
  sm_stats_t s;
  sm_arena_stats(NULL, &s);
}
static void call_stats_text(void) {
  char buf[256];
  sm_stats_text(NULL, buf, sizeof buf);
  sm_stats_json(NULL, buf, sizeof buf);
}
static void call_malloc_trim(void) {
  churn_many_classes();
  malloc_trim(0);
}
static void call_malloc_stats(void) { malloc_stats(); }

/* Each call returns with a cancel pending, leaks no descriptor, and the
 * allocator serves afterwards. They read /proc/self/statm (the resident set)
 * with open() and read(): a cancel acted there (the descriptor leaked when it
 * was at read); malloc_stats writes its report with write(). */
static void check_call(call_fn fn, const char *name) {
  int fd = lowest_free_fd();
  cr_assert_eq(returns_with_a_cancel_pending(fn), 1, "%s: the thread was cancelled inside it", name);
  cr_assert_eq(lowest_free_fd(), fd, "%s: a descriptor leaked", name);
  churn_many_classes();
  malloc_trim(0);
}

Test(outside_cancel, mallinfo_is_not_a_cancellation_point) {
  check_call(call_mallinfo2, "mallinfo2");
  check_call(call_mallinfo, "mallinfo");
}

Test(outside_cancel, sm_stats_are_not_a_cancellation_point) {
  check_call(call_arena_stats, "sm_arena_stats");
  check_call(call_stats_text, "sm_stats_text/json");
}

Test(outside_cancel, malloc_trim_is_not_a_cancellation_point) { check_call(call_malloc_trim, "malloc_trim"); }

Test(outside_cancel, malloc_stats_is_not_a_cancellation_point) {
  int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  cr_assert(null >= 0);
  int saved = dup(2);
  dup2(null, 2); /* the report goes to /dev/null */
  close(null);
  check_call(call_malloc_stats, "malloc_stats");
  dup2(saved, 2);
  close(saved);
}
