/* tests/shim/runner.c: the runner of the Criterion-compatible shim
 * (tests/shim/criterion/criterion.h). Runs every registered test in THIS
 * process, in source order (file, then line), and ends with
 *
 *   N passed, N failed, N skipped
 *
 * exiting 1 when a test failed. Usage:
 *
 *   runner [--list] [--filter GLOB]... [--exclude GLOB]...
 *
 * GLOB (fnmatch) is matched against "suite/name"; the environment variable
 * SM_SHIM_EXCLUDE adds exclusions (space-separated globs), SM_SHIM_TIMEOUT_SCALE
 * multiplies every .timeout (sanitizer builds are slower).
 *
 * A test that hangs past its .timeout, or a crash, ends the whole process: the
 * runner prints which test it was, and the counts so far.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fnmatch.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "criterion/criterion.h"

static struct sm_shim_test *tests_head, **tests_tail = &tests_head;
static size_t ntests;

void sm_shim_register(struct sm_shim_test *t) {
  t->next = NULL;
  *tests_tail = t;
  tests_tail = &t->next;
  ntests++;
}

/* ---- the running test ------------------------------------------------------------ */
static const struct sm_shim_test *current;
static pthread_t runner_thread;
static pid_t runner_pid;
static sigjmp_buf test_jmp;
static atomic_int test_failed; /* set from any thread */
static int test_skipped;
static int npassed, nfailed, nskipped;

enum { END_FAIL = 1, END_SKIP = 2 };

static int in_runner_thread(void) { return getpid() == runner_pid && pthread_equal(pthread_self(), runner_thread); }

static void vreport(const char *tag, const char *file, int line, const char *expr, const char *fmt, va_list ap) {
  char msg[2048];
  int n = snprintf(msg, sizeof msg, "[%s] %s::%s: %s:%d: ", tag, current ? current->suite : "?",
                   current ? current->name : "?", file, line);
  if (n < 0) n = 0;
  if ((size_t)n < sizeof msg && fmt && *fmt) n += vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
  else if ((size_t)n < sizeof msg && expr)
    n += snprintf(msg + n, sizeof msg - (size_t)n, "assertion failed: %s", expr);
  if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
  fprintf(stderr, "%.*s\n", n, msg);
  fflush(stderr);
}

void sm_shim_fail(int fatal, const char *file, int line, const char *expr, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport("FAIL", file, line, expr, fmt, ap);
  va_end(ap);
  if (getpid() != runner_pid) _exit(70); /* a forked child of a test */
  atomic_store(&test_failed, 1);
  if (!fatal) return;
  if (!in_runner_thread()) pthread_exit(NULL);
  siglongjmp(test_jmp, END_FAIL);
}

void sm_shim_skip(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport("SKIP", file, line, NULL, fmt, ap);
  va_end(ap);
  if (getpid() != runner_pid) _exit(0);
  if (!in_runner_thread()) pthread_exit(NULL);
  test_skipped = 1;
  siglongjmp(test_jmp, END_SKIP);
}

void sm_shim_log(const char *level, const char *file, int line, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[----] %s:%d: %s: %s\n", file, line, level, msg);
  fflush(stderr);
}

/* ---- timeouts and crashes ---------------------------------------------------------- */
static void write_str(const char *s) {
  size_t n = strlen(s);
  while (n) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static void summary_from_handler(const char *what, int sig) {
  char buf[512];
  snprintf(buf, sizeof buf, "[%s] %s::%s%s%s\n%d passed, %d failed, %d skipped (the run stopped here)\n", what,
           current ? current->suite : "?", current ? current->name : "?", sig ? ": " : "", sig ? strsignal(sig) : "",
           npassed, nfailed + 1, nskipped);
  write_str(buf);
}

static void on_alarm(int sig) {
  (void)sig;
  summary_from_handler("TIMEOUT", 0);
  _exit(1);
}

static void on_crash(int sig) {
  if (getpid() == runner_pid) {
    summary_from_handler("CRASH", sig);
    _exit(128 + sig); /* no signal() here: under TSan a crash inside its runtime would deadlock it */
  }
  signal(sig, SIG_DFL); /* a test's own child: die by the signal, as its parent expects */
  raise(sig);
}

/* ---- main ---------------------------------------------------------------------------- */
static int cmp_tests(const void *a, const void *b) {
  const struct sm_shim_test *x = *(const struct sm_shim_test *const *)a, *y = *(const struct sm_shim_test *const *)b;
  int c = strcmp(x->file, y->file);
  if (c) return c;
  return (x->line > y->line) - (x->line < y->line);
}

static int matches_any(const char *full, char **globs, int n) {
  for (int i = 0; i < n; i++)
    if (fnmatch(globs[i], full, 0) == 0) return 1;
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs one test (in its own frame: nothing of main's lives across the longjmp).
 * Returns 0 when it failed. */
static int run_test(const struct sm_shim_test *t, double scale) {
  fprintf(stderr, "[RUN ] %s::%s\n", t->suite, t->name);
  fflush(stderr);
  atomic_store(&test_failed, 0);
  test_skipped = 0;
  const double t0 = now();
  if (t->timeout > 0) alarm((unsigned)ceil(t->timeout * scale));
  if (sigsetjmp(test_jmp, 1) == 0) {
    if (t->init) t->init();
    t->fn();
  }
  /* .fini runs after a failure or skip too; its own failure is the test's */
  if (sigsetjmp(test_jmp, 1) == 0) {
    if (t->fini) t->fini();
  }
  alarm(0);
  double dt = now() - t0;
  int ok = 1;
  if (atomic_load(&test_failed)) {
    nfailed++;
    ok = 0;
    fprintf(stderr, "[FAIL] %s::%s (%.2f s)\n", t->suite, t->name, dt);
  } else if (test_skipped) {
    nskipped++;
  } else {
    npassed++;
    fprintf(stderr, "[PASS] %s::%s (%.2f s)\n", t->suite, t->name, dt);
  }
  fflush(stderr);
  return ok;
}

int main(int argc, char **argv) {
  char *filters[64], *excludes[128];
  int nfilters = 0, nexcludes = 0, list = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--list") == 0) {
      list = 1;
    } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc && nfilters < 64) {
      filters[nfilters++] = argv[++i];
    } else if (strcmp(argv[i], "--exclude") == 0 && i + 1 < argc && nexcludes < 64) {
      excludes[nexcludes++] = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--list] [--filter GLOB]... [--exclude GLOB]...\n", argv[0]);
      return 2;
    }
  }
  static char exclude_env[4096];
  const char *e = getenv("SM_SHIM_EXCLUDE");
  if (e) {
    snprintf(exclude_env, sizeof exclude_env, "%s", e);
    for (char *save = NULL, *tok = strtok_r(exclude_env, " \t", &save); tok && nexcludes < 128;
         tok = strtok_r(NULL, " \t", &save))
      excludes[nexcludes++] = tok;
  }
  double scale = 1;
  const char *s = getenv("SM_SHIM_TIMEOUT_SCALE");
  if (s && atof(s) > 0) scale = atof(s);

  /* source order, whatever order the constructors ran in */
  static struct sm_shim_test *sorted[4096];
  size_t n = 0;
  for (struct sm_shim_test *t = tests_head; t && n < 4096; t = t->next) sorted[n++] = t;
  qsort(sorted, n, sizeof *sorted, cmp_tests);

  runner_pid = getpid();
  runner_thread = pthread_self();
  signal(SIGALRM, on_alarm);
  int crash_sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
  for (size_t i = 0; i < sizeof crash_sigs / sizeof *crash_sigs; i++) signal(crash_sigs[i], on_crash);

  char failed_names[8192] = "";
  double t_all = now();
  for (size_t i = 0; i < n; i++) {
    struct sm_shim_test *t = sorted[i];
    char full[256];
    snprintf(full, sizeof full, "%s/%s", t->suite, t->name);
    if (nfilters && !matches_any(full, filters, nfilters)) continue;
    if (list) {
      printf("%s\n", full);
      continue;
    }
    current = t;
    if (matches_any(full, excludes, nexcludes)) {
      fprintf(stderr, "[SKIP] %s::%s: excluded\n", t->suite, t->name);
      nskipped++;
      continue;
    }
    if (t->disabled) {
      fprintf(stderr, "[SKIP] %s::%s: disabled\n", t->suite, t->name);
      nskipped++;
      continue;
    }
    if (t->signal || t->exit_code) {
      fprintf(stderr, "[SKIP] %s::%s: expects its process to die (needs Criterion's fork per test)\n", t->suite,
              t->name);
      nskipped++;
      continue;
    }
    if (!run_test(t, scale)) {
      size_t len = strlen(failed_names);
      snprintf(failed_names + len, sizeof failed_names - len, "  %s\n", full);
    }
  }
  current = NULL;
  if (list) return 0;
  if (nfailed) fprintf(stderr, "failed:\n%s", failed_names);
  fprintf(stderr, "%d passed, %d failed, %d skipped (%.1f s, one process)\n", npassed, nfailed, nskipped,
          now() - t_all);
  return nfailed ? 1 : 0;
}
