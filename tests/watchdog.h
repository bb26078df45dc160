/* watchdog.h: run a test scenario in a forked child under a deadline (header
 * only; used by test_stress.c and test_peers.c).
 *
 *   wd_run(name, timeout_s, fn, arg, msg, cap)
 *       forks; the child leads a process group of its own and runs fn(arg),
 *       then _exits with its result (0: passed). The parent polls the child;
 *       at the deadline it kills the whole group (the child and anything it
 *       forked) and reports "deadlock/hang in <name>". A crash and a non-zero
 *       result are reported too. Returns 0 when the scenario passed, else -1
 *       with a one-line description in msg.
 *   WD_RUN(name, timeout_s, fn, arg)
 *       the same as a Criterion assertion.
 *
 * Inside the scenario (and its threads, and processes it forks: the state is a
 * shared mapping):
 *   wd_fail(fmt, ...)   records the first failure message (thread-safe);
 *                       returns 1, so `return wd_fail(...)` reads well
 *   wd_failed()         1 once a failure was recorded
 *   wd_phase(fmt, ...)  what the scenario is doing now (shown on a hang; call
 *                       it from one thread)
 *   wd_count(i, d)      adds d to progress counter i (0..3, shown on a hang)
 */
#ifndef SLOTMALLOC_WATCHDOG_H
#define SLOTMALLOC_WATCHDOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "testutil.h"

typedef struct {
  atomic_int failed;
  atomic_int msg_done;
  char msg[1024];
  char phase[256];
  atomic_long count[4];
} wd_state_t;

static wd_state_t *wd_st;

static inline int wd_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int wd_fail(const char *fmt, ...) {
  if (!wd_st) return 1;
  if (atomic_exchange(&wd_st->failed, 1) == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wd_st->msg, sizeof wd_st->msg, fmt, ap);
    va_end(ap);
    atomic_store(&wd_st->msg_done, 1);
  }
  return 1;
}

static inline int wd_failed(void) { return wd_st && atomic_load_explicit(&wd_st->failed, memory_order_relaxed); }

static inline void wd_phase(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void wd_phase(const char *fmt, ...) {
  if (!wd_st) return;
  char buf[sizeof wd_st->phase];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  memcpy(wd_st->phase, buf, sizeof buf);
}

static inline void wd_count(int i, long d) {
  if (wd_st) atomic_fetch_add_explicit(&wd_st->count[i], d, memory_order_relaxed);
}

static inline long wd_get(int i) { return wd_st ? atomic_load(&wd_st->count[i]) : 0; }

static inline int wd_run(const char *name, double timeout_s, int (*fn)(void *), void *arg, char *msg, size_t cap) {
  msg[0] = 0;
  wd_state_t *st =
      (wd_state_t *)mmap(NULL, sizeof(wd_state_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (st == MAP_FAILED) {
    snprintf(msg, cap, "%s: mmap of the watchdog state failed: %s", name, strerror(errno));
    return -1;
  }
  memset(st, 0, sizeof *st);
  snprintf(st->phase, sizeof st->phase, "starting");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(msg, cap, "%s: fork failed: %s", name, strerror(errno));
    munmap(st, sizeof *st);
    return -1;
  }
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the test runner died: go too */
    signal(SIGALRM, SIG_DFL);
    wd_st = st;
    int rc = fn(arg);
    if (rc != 0 && !atomic_load(&st->failed)) wd_fail("scenario returned %d", rc);
    _exit(atomic_load(&st->failed) ? 1 : 0);
  }
  setpgid(pid, pid);
  double start = tu_now(), deadline = start + timeout_s;
  int status = 0, timed_out = 0;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      snprintf(msg, cap, "%s: waitpid failed: %s", name, strerror(errno));
      kill(-pid, SIGKILL);
      munmap(st, sizeof *st);
      return -1;
    }
    if (tu_now() > deadline) {
      timed_out = 1;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      tu_waitpid(pid, &status);
      break;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  kill(-pid, SIGKILL); /* whatever the scenario forked and left behind */
  char phase[sizeof st->phase];
  memcpy(phase, st->phase, sizeof phase);
  phase[sizeof phase - 1] = 0;
  char counts[160];
  snprintf(counts, sizeof counts, "counters %ld %ld %ld %ld", atomic_load(&st->count[0]), atomic_load(&st->count[1]),
           atomic_load(&st->count[2]), atomic_load(&st->count[3]));
  int rc = 0;
  if (timed_out) {
    snprintf(msg, cap, "deadlock/hang in %s: not finished after %.0f s (phase: %s; %s)%s%s", name, timeout_s, phase,
             counts, atomic_load(&st->msg_done) ? "; earlier failure: " : "",
             atomic_load(&st->msg_done) ? st->msg : "");
    rc = -1;
  } else if (WIFSIGNALED(status)) {
    snprintf(msg, cap, "crash in %s: killed by signal %d (%s) (phase: %s; %s)%s%s", name, WTERMSIG(status),
             strsignal(WTERMSIG(status)), phase, counts, atomic_load(&st->msg_done) ? "; failure: " : "",
             atomic_load(&st->msg_done) ? st->msg : "");
    rc = -1;
  } else if (atomic_load(&st->failed) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    snprintf(msg, cap, "failure in %s: %s (phase: %s; exit %d)", name,
             atomic_load(&st->msg_done) ? st->msg : "(no message)", phase,
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    rc = -1;
  }
  munmap(st, sizeof *st);
  return rc;
}

#define WD_RUN(name, timeout_s, fn, arg)                                            \
  do {                                                                              \
    char wd_msg_[1600];                                                             \
    int wd_rc_ = wd_run((name), (timeout_s), (fn), (arg), wd_msg_, sizeof wd_msg_); \
    cr_assert_eq(wd_rc_, 0, "%s", wd_msg_);                                         \
  } while (0)

#endif /* SLOTMALLOC_WATCHDOG_H */
