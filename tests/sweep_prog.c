/* sweep_prog.c: the child program of test_outside_sweep (helper R6's
 * outside-in sweep): what real programs do that a test process cannot do to
 * itself. Linked with libslotmalloc.so. One scenario per first argument:
 *
 *   title   what setproctitle does (postgres, redis, nginx, sendmail, sshd):
 *           copy environ to the heap, then write a process title over the
 *           argv and environ strings of the initial stack; then allocate,
 *           free and exit. The options were read before, at the first malloc:
 *           a path option (SLOTMALLOC_STATS_FILE, SLOTMALLOC_PROF_FILE) must
 *           not be read from those strings at exit.
 *
 *   atfork  a library's constructor registers a pthread_atfork child
 *           handler before the process's first malloc (so it runs before the
 *           allocator's), and the handler allocates; three threads allocate
 *           and free (every slow path: new blocks, large objects) while the
 *           main thread forks 300 times. Each child must exit: a child that
 *           has not within 10 s is killed and reported ("child N hung").
 *   atfork2 the same with two threads forking 500 times each at once.
 *
 *   threads N K  N threads alive at once, each holding one object of each of
 *           the first K sizes of 8 B, 24 B, ... 128 KiB (one size class each,
 *           15 at most); prints VmRSS and VmSize while they all hold them (a
 *           measurement for README.md, no test: the address space a thread's
 *           current blocks reserve).
 *
 *   noop    a malloc and a free: for the reports at exit.
 *
 * Prints "sweep_prog: ok" on success. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int title(int argc, char **argv) {
  /* the first allocation reads the options from the environment strings */
  void *early = malloc(100);
  char *first = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
  int n = 0;
  while (environ[n]) n++;
  char **copy = malloc((size_t)(n + 1) * sizeof *copy);
  if (!copy) return 1;
  for (int i = 0; i < n; i++) {
    if (environ[i] == end) end += strlen(environ[i]) + 1; /* contiguous on the stack */
    copy[i] = strdup(environ[i]);
    if (!copy[i]) return 1;
  }
  copy[n] = NULL;
  environ = copy;
  /* the title over the old strings; its tail left as NULs, as postgres does */
  memset(first, 0, (size_t)(end - first));
  snprintf(first, (size_t)(end - first), "sweep: worker process");
  for (int i = 0; i < 1000; i++) free(malloc((size_t)i * 7 + 1));
  free(early);
  return 0;
}

/* ---- atfork ---------------------------------------------------------------- */
static void *child_state;
static void child_rebuilds_its_state(void) {
  child_state = malloc(4096);
  if (child_state) memset(child_state, 0, 4096);
  free(malloc(300000));
}
/* before any malloc of the process: registered before the allocator's */
__attribute__((constructor)) static void register_early(void) {
  pthread_atfork(NULL, NULL, child_rebuilds_its_state);
}

static atomic_int churn_stop;
static void *churn(void *arg) {
  unsigned long x = (unsigned long)(uintptr_t)arg;
  void *live[256] = {0};
  while (!atomic_load(&churn_stop)) {
    x = x * 6364136223846793005UL + 1442695040888963407UL;
    int k = (int)((x >> 33) % 256);
    free(live[k]);
    size_t n = (x >> 40) % 64 == 0 ? 100000 + (x >> 20) % 900000 : 1 + (x >> 20) % 5000;
    live[k] = malloc(n);
  }
  for (int k = 0; k < 256; k++) free(live[k]);
  return NULL;
}

/* Forks n times, each child allocating and exiting; waits for each child for
 * 10 s at most (then kills it: "child N hung"). 0 if every child exited 0. */
static int fork_rounds(int n, const char *who) {
  for (int i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      free(malloc(100));
      free(malloc(200000));
      _exit(child_state ? 0 : 3);
    }
    int st = 0;
    struct timespec ms = {0, 1000000};
    int waited = 0;
    while (waitpid(pid, &st, WNOHANG) == 0) {
      if (++waited == 10000) { /* 10 s */
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        printf("%s: child %d hung\n", who, i);
        return 1;
      }
      nanosleep(&ms, NULL);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
      printf("%s: child %d: status %#x\n", who, i, st);
      return 1;
    }
  }
  return 0;
}

static void *forker(void *arg) { return (void *)(intptr_t)fork_rounds(500, (const char *)arg); }

/* threads_forking 1: the main thread forks 300 times; 2: two threads fork 500
 * times each at once (one's parent handler runs while the other is between
 * its prepare handler and its fork). */
static int atfork(int threads_forking) {
  pthread_t t[3], f[2];
  for (long i = 0; i < 3; i++)
    if (pthread_create(&t[i], NULL, churn, (void *)(i + 1))) return 1;
  int rc = 0;
  if (threads_forking == 1) {
    rc = fork_rounds(300, "main");
  } else {
    if (pthread_create(&f[0], NULL, forker, "forker 1") || pthread_create(&f[1], NULL, forker, "forker 2")) return 1;
    for (int i = 0; i < 2; i++) {
      void *r;
      pthread_join(f[i], &r);
      if (r) rc = 1;
    }
  }
  atomic_store(&churn_stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  return rc;
}

/* ---- threads ---------------------------------------------------------------- */
static const size_t held_sizes[] = {8,    24,   40,   72,    136,   264,   520,   1032,
                                    2056, 4104, 8200, 16392, 32776, 65544, 131080};
static int held_kinds;
static atomic_int held_fails;
static pthread_barrier_t held_all;
static void *holder(void *arg) {
  (void)arg;
  void *p[15];
  for (int i = 0; i < held_kinds; i++) {
    p[i] = malloc(held_sizes[i]);
    if (p[i]) memset(p[i], 1, held_sizes[i]);
    else atomic_fetch_add(&held_fails, 1);
  }
  pthread_barrier_wait(&held_all);
  pthread_barrier_wait(&held_all);
  for (int i = 0; i < held_kinds; i++) free(p[i]);
  return NULL;
}
static long status_kib(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, key, strlen(key))) v = atol(line + strlen(key));
  if (f) fclose(f);
  return v;
}
static int threads(int n, int kinds) {
  held_kinds = kinds < 1 ? 1 : kinds > 15 ? 15 : kinds;
  pthread_barrier_init(&held_all, NULL, (unsigned)n + 1);
  pthread_t *t = calloc((size_t)n, sizeof *t);
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setstacksize(&at, 64 << 10);
  for (int i = 0; i < n; i++)
    if (!t || pthread_create(&t[i], &at, holder, NULL)) {
      printf("thread %d not created\n", i + 1);
      return 1; /* (the others wait at the barrier: exit ends them) */
    }
  pthread_barrier_wait(&held_all);
  printf("%d threads, %d sizes each: %d NULL, VmRSS %ld kB, VmSize %ld kB\n", n, held_kinds, atomic_load(&held_fails),
         status_kib("VmRSS:"), status_kib("VmSize:"));
  pthread_barrier_wait(&held_all);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  free(t);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int rc = 2;
  if (!strcmp(argv[1], "title")) rc = title(argc, argv);
  if (!strcmp(argv[1], "atfork")) rc = atfork(1);
  if (!strcmp(argv[1], "atfork2")) rc = atfork(2);
  if (!strcmp(argv[1], "noop")) {
    free(malloc(100));
    rc = 0;
  }
  if (!strcmp(argv[1], "threads") && argc == 4) rc = threads(atoi(argv[2]), atoi(argv[3]));
  if (rc == 0) {
    fputs("sweep_prog: ok\n", stdout);
    fflush(stdout);
  }
  return rc;
}
