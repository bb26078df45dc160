/* testutil.h: small helpers shared by the slotmalloc tests (header only).
 *
 *   KiB / MiB            size units (size_t)
 *   tu_hide / tu_opaque  values the compiler cannot see through (no folding,
 *                        no malloc/free pair elision, no size warnings)
 *   tu_rng_*             a tiny deterministic PRNG (xorshift64*)
 *   tu_make_sizes        the sizes 1 B .. max around every power of two
 *   tu_fill / tu_check   a per-object 64-bit pattern written over a whole object
 *   tu_obj_*             an object that carries its own seed and size: {seed,
 *                        size} then the pattern of seed
 *   tu_arena_drop        close and release an arena
 *   tu_waitpid           waitpid that retries after EINTR
 *   tu_wait_status_str   a waitpid status in words
 *   tu_rss_bytes / tu_vmsize_bytes  this process's resident and mapped sizes
 *   tu_run               fork + exec a program with its own environment, capture
 *                        stdout and stderr through pipes, kill it after a deadline
 *   tu_env_make          a copy of environ with variables removed and added
 *   tu_stage_*           a stage number threads wait for (a test's steps in order)
 */
#ifndef SLOTMALLOC_TESTUTIL_H
#define SLOTMALLOC_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slotmalloc.h>

extern char **environ;

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* ---- values the optimiser cannot see through -------------------------------- */
static inline size_t tu_hide(size_t x) {
  __asm__ volatile("" : "+r"(x));
  return x;
}
static inline void *tu_opaque(void *p) {
  __asm__ volatile("" : "+r"(p) : : "memory");
  return p;
}

/* ---- deterministic PRNG ------------------------------------------------------ */
typedef struct {
  uint64_t s;
} tu_rng_t;
static inline uint64_t tu_rng_next(tu_rng_t *r) {
  uint64_t x = r->s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->s = x;
  return x * 0x2545F4914F6CDD1DULL;
}
static inline tu_rng_t tu_rng(uint64_t seed) {
  tu_rng_t r = {seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL};
  if (r.s == 0) r.s = 1;
  return r;
}
/* uniform in [lo, hi] */
static inline size_t tu_rng_range(tu_rng_t *r, size_t lo, size_t hi) {
  return lo + (size_t)(tu_rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* ---- size tables ------------------------------------------------------------- */
/* Sizes 1 B .. max: 1, 8, then around every power of two from 16 on (s - 1, s,
 * s + 1, 1.5 s). Returns the count written; out needs TU_MAX_SIZES entries for
 * any max up to 2^40. */
#define TU_MAX_SIZES 128
static inline size_t tu_make_sizes(size_t *out, size_t max) {
  size_t n = 0;
  out[n++] = 1;
  out[n++] = 8;
  for (size_t s = 16; s <= max; s *= 2) {
    if (s > 16) out[n++] = s - 1;
    out[n++] = s;
    if (s + 1 <= max) out[n++] = s + 1;
    if (s + s / 2 <= max) out[n++] = s + s / 2;
  }
  return n;
}

/* ---- patterns ------------------------------------------------------------------ */
/* The 64-bit word at word index k of the object with this seed. */
static inline uint64_t tu_pattern_word(uint64_t seed, size_t k) {
  uint64_t x = seed ^ ((uint64_t)k * 0x9E3779B97F4A7C15ULL);
  x ^= x >> 29;
  return x;
}
/* Fills n bytes at p with the pattern of seed. */
static inline void tu_fill(void *p, size_t n, uint64_t seed) {
  unsigned char *b = (unsigned char *)p;
  size_t k = 0;
  for (; (k + 1) * 8 <= n; k++) {
    uint64_t w = tu_pattern_word(seed, k);
    memcpy(b + k * 8, &w, 8);
  }
  uint64_t w = tu_pattern_word(seed, k);
  memcpy(b + k * 8, &w, n - k * 8);
}
/* Returns the offset of the first byte of p[0..n) that differs from the pattern
 * of seed, or SIZE_MAX when all match. */
static inline size_t tu_check(const void *p, size_t n, uint64_t seed) {
  const unsigned char *b = (const unsigned char *)p;
  size_t k = 0;
  for (; (k + 1) * 8 <= n; k++) {
    uint64_t w = tu_pattern_word(seed, k), got;
    memcpy(&got, b + k * 8, 8);
    if (got != w) {
      for (size_t i = 0; i < 8; i++)
        if (((const unsigned char *)&got)[i] != ((const unsigned char *)&w)[i]) return k * 8 + i;
    }
  }
  uint64_t w = tu_pattern_word(seed, k);
  for (size_t i = 0; k * 8 + i < n; i++)
    if (b[k * 8 + i] != ((const unsigned char *)&w)[i]) return k * 8 + i;
  return SIZE_MAX;
}
/* 1 when all n bytes at p are zero. */
static inline int tu_all_zero(const void *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    if (w) return 0;
  }
  for (; i < n; i++)
    if (b[i]) return 0;
  return 1;
}

/* ---- checked objects ----------------------------------------------------------- */
/* An object that says who made it: {seed, size}, then the pattern of seed. */
typedef struct {
  uint64_t seed;
  uint64_t size;
} tu_obj_t;

/* Writes the header and the pattern over the size bytes at p (size at least
 * sizeof(tu_obj_t)). */
static inline void tu_obj_init(void *p, size_t size, uint64_t seed) {
  tu_obj_t *o = (tu_obj_t *)p;
  o->seed = seed;
  o->size = size;
  tu_fill(o + 1, size - sizeof *o, seed);
}
/* SIZE_MAX when the object at p still holds what tu_obj_init wrote with seed,
 * else the offset of the first bad byte from p (0: the header's seed differs). */
static inline size_t tu_obj_check(const void *p, uint64_t seed) {
  const tu_obj_t *o = (const tu_obj_t *)p;
  if (o->seed != seed) return 0;
  size_t off = tu_check(o + 1, o->size - sizeof *o, seed);
  return off == SIZE_MAX ? SIZE_MAX : off + sizeof *o;
}

/* ---- arenas ----------------------------------------------------------------------- */
/* Closes a (its objects die) and drops this reference. */
static inline void tu_arena_drop(sm_arena_t *a) {
  sm_arena_close(a);
  sm_arena_release(a);
}

/* ---- processes ---------------------------------------------------------------------- */
/* waitpid(pid, status, 0), retried after EINTR. */
static inline pid_t tu_waitpid(pid_t pid, int *status) {
  pid_t rc;
  while ((rc = waitpid(pid, status, 0)) < 0 && errno == EINTR) {
  }
  return rc;
}

/* Resident set size in bytes (/proc/self/statm; 0 if unreadable). */
/* A stage number that threads set and wait for, to run a test's steps in
 * order (TU_STAGE_INIT: stage 0). */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int n;
} tu_stage_t;
#define TU_STAGE_INIT \
  { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }
static inline void tu_stage_set(tu_stage_t *s, int n) {
  pthread_mutex_lock(&s->lock);
  s->n = n;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
}
static inline void tu_stage_wait(tu_stage_t *s, int n) {
  pthread_mutex_lock(&s->lock);
  while (s->n < n) pthread_cond_wait(&s->cond, &s->lock);
  pthread_mutex_unlock(&s->lock);
}

static inline size_t tu_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
  }
  return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* Address-space size in bytes (/proc/self/statm; 0 if unreadable). */
static inline size_t tu_vmsize_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0;
  if (f) {
    if (fscanf(f, "%lu", &size) != 1) size = 0;
    fclose(f);
  }
  return (size_t)size * (size_t)sysconf(_SC_PAGESIZE);
}

/* ---- environment ---------------------------------------------------------------- */
/* A malloc'd copy of environ without the variables named in unset (NULL-ended,
 * may be NULL) and with the "NAME=VALUE" strings of set (NULL-ended, may be NULL)
 * added (replacing any variable of that name). Leaks by design (tests are short). */
static inline char **tu_env_make(const char *const *unset, const char *const *set) {
  size_t n = 0, m = 0;
  while (environ[n]) n++;
  while (set && set[m]) m++;
  char **env = (char **)calloc(n + m + 1, sizeof(char *));
  size_t out = 0;
  for (size_t i = 0; i < n; i++) {
    const char *e = environ[i];
    const char *eq = strchr(e, '=');
    size_t len = eq ? (size_t)(eq - e) : strlen(e);
    int drop = 0;
    for (size_t u = 0; unset && unset[u] && !drop; u++)
      drop = strlen(unset[u]) == len && memcmp(unset[u], e, len) == 0;
    for (size_t s = 0; s < m && !drop; s++) {
      const char *seq = strchr(set[s], '=');
      drop = seq && (size_t)(seq - set[s]) == len && memcmp(set[s], e, len) == 0;
    }
    if (!drop) env[out++] = (char *)e;
  }
  for (size_t s = 0; s < m; s++) env[out++] = (char *)set[s];
  env[out] = NULL;
  return env;
}

/* A malloc'd copy of environ without any SLOTMALLOC_* variable, with the
 * "NAME=VALUE" strings of set (NULL-ended, may be NULL) added: a child that
 * sees only the options a test gives it. */
static inline char **tu_env_without_options(const char *const *set) {
  size_t n = 0, m = 0;
  while (environ[n]) n++;
  while (set && set[m]) m++;
  char **env = (char **)calloc(n + m + 1, sizeof(char *));
  if (!env) abort();
  size_t out = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "SLOTMALLOC_", 11) != 0) env[out++] = environ[i];
  for (size_t i = 0; i < m; i++) env[out++] = (char *)set[i];
  env[out] = NULL;
  return env;
}

/* ---- running a program -------------------------------------------------------------- */
typedef struct {
  int status;    /* waitpid status (valid when !timed_out) */
  int timed_out; /* 1: killed at the deadline */
  char *out;     /* stdout, NUL-terminated */
  size_t out_len;
  char *err; /* stderr, NUL-terminated */
  size_t err_len;
} tu_proc_t;

static inline void tu_proc_free(tu_proc_t *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}

static inline void tu_append(char **buf, size_t *len, size_t *cap, const char *src, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t c = *cap ? *cap : 4096;
    while (*len + n + 1 > c) c *= 2;
    *buf = (char *)realloc(*buf, c);
    *cap = c;
  }
  memcpy(*buf + *len, src, n);
  *len += n;
  (*buf)[*len] = 0;
}

static inline double tu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs argv[0] (a path) with argv and envp (NULL: environ) in cwd (NULL: here),
 * stdin from stdin_path (NULL: /dev/null). The child leads its own process group,
 * which is killed whole after timeout_s seconds. Returns 0, or -1 if the fork or
 * the pipes failed (an exec failure shows as exit status 127). */
static inline int tu_run(char *const argv[], char *const envp[], const char *cwd, const char *stdin_path,
                         double timeout_s, tu_proc_t *r) {
  memset(r, 0, sizeof *r);
  int po[2], pe[2];
  if (pipe2(po, O_CLOEXEC) != 0) return -1;
  if (pipe2(pe, O_CLOEXEC) != 0) return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setpgid(0, 0);
    int in = open(stdin_path ? stdin_path : "/dev/null", O_RDONLY);
    if (in < 0) _exit(126);
    dup2(in, 0);
    dup2(po[1], 1);
    dup2(pe[1], 2);
    if (cwd && chdir(cwd) != 0) _exit(126);
    execve(argv[0], argv, envp ? envp : environ);
    _exit(127);
  }
  setpgid(pid, pid); /* also here, so the group exists before any kill */
  close(po[1]);
  close(pe[1]);
  size_t cap_o = 0, cap_e = 0;
  tu_append(&r->out, &r->out_len, &cap_o, "", 0);
  tu_append(&r->err, &r->err_len, &cap_e, "", 0);
  struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
  int open_fds = 2;
  double deadline = tu_now() + timeout_s;
  char buf[65536];
  while (open_fds > 0) {
    double left = deadline - tu_now();
    if (left <= 0) {
      r->timed_out = 1;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      break;
    }
    int rc = poll(fds, 2, (int)(left * 1000) + 1);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (i == 0) tu_append(&r->out, &r->out_len, &cap_o, buf, (size_t)n);
        else tu_append(&r->err, &r->err_len, &cap_e, buf, (size_t)n);
      } else if (n == 0 || (n < 0 && errno != EINTR)) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      }
    }
  }
  for (int i = 0; i < 2; i++)
    if (fds[i].fd >= 0) close(fds[i].fd);
  tu_waitpid(pid, &r->status);
  return 0;
}

/* A human-readable description of a waitpid status, in a thread-local buffer.
 * SIGALRM is the alarm a child sets against its own hang. */
static inline const char *tu_wait_status_str(int status) {
  static __thread char s[96];
  if (WIFEXITED(status)) snprintf(s, sizeof s, "exit %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(s, sizeof s, "signal %d (%s)%s", WTERMSIG(status), strsignal(WTERMSIG(status)),
             WTERMSIG(status) == SIGALRM ? ": the child hung (alarm)" : "");
  else snprintf(s, sizeof s, "status %#x", status);
  return s;
}

/* The same for a program run by tu_run, which may also have been killed at its deadline. */
static inline const char *tu_status_str(const tu_proc_t *r) {
  return r->timed_out ? "timed out (killed)" : tu_wait_status_str(r->status);
}

#endif /* SLOTMALLOC_TESTUTIL_H */
