/* test_stress.c: slotmalloc under stress, each scenario in a forked child
 * under a watchdog (watchdog.h), so a deadlock fails with "deadlock/hang in
 * <scenario>" instead of hanging the suite:
 *
 *   fork_storm                 threads allocate and free (cross-thread too)
 *                              while other threads fork ~2000 times; every
 *                              child checks, frees and allocates
 *   fork_while_stdio           forks while other threads use stdio hard
 *                              (glibc bug 19431's lock order: stdio calls
 *                              malloc with FILE locks held)
 *   fork_in_signal_handler     a SIGUSR1 handler forks while the interrupted
 *                              thread is inside malloc or free
 *   thread_exit_churn          20000 short-lived threads whose objects other
 *                              threads free after they exited; RSS bounded
 *   oom_*                      RLIMIT_AS: allocation fails with ENOMEM, the
 *                              process goes on, memory comes back
 *   long_churn_rss_bounded     millions of random replacements in a live set
 *                              of 20000 objects; RSS bounded
 *
 * Counts are bounded, and so is the time of the fork loops (a loop stops
 * early, past a minimum, when the machine is slow); no assertion is about time.
 * Linked with libslotmalloc.so, which is then the process's malloc: this file
 * is not run a second time under LD_PRELOAD (SM_NOT_PRELOADED).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"
#include "watchdog.h"

/* ---- checked objects ------------------------------------------------------------ */
/* A checked object (tu_obj_t) from malloc. */
typedef tu_obj_t obj_t;

static obj_t *obj_new(size_t size, uint64_t seed) {
  if (size < sizeof(obj_t)) size = sizeof(obj_t);
  obj_t *o = malloc(size);
  if (o) tu_obj_init(o, size, seed);
  return o;
}

/* NULL when intact, else a description in a thread-local buffer. */
static const char *obj_bad(const obj_t *o, uint64_t seed) {
  static __thread char why[160];
  if (o->seed != seed) {
    snprintf(why, sizeof why, "object %p: header seed %#llx, expected %#llx", (const void *)o,
             (unsigned long long)o->seed, (unsigned long long)seed);
    return why;
  }
  size_t off = tu_obj_check(o, seed);
  if (off != SIZE_MAX) {
    snprintf(why, sizeof why, "object %p of %llu bytes clobbered at offset %zu", (const void *)o,
             (unsigned long long)o->size, off);
    return why;
  }
  return NULL;
}

/* Checks o against its own header seed (objects passed between threads). */
static const char *obj_bad_self(const obj_t *o) { return obj_bad(o, o->seed); }

/* Mostly small, some medium, a few large (up to 300 KB). */
static size_t mixed_size(tu_rng_t *r) {
  unsigned pick = (unsigned)tu_rng_range(r, 0, 999);
  if (pick < 800) return tu_rng_range(r, 1, 256);
  if (pick < 985) return tu_rng_range(r, 257, 16384);
  return tu_rng_range(r, 16385, 300000);
}

/* ==== 1. fork storm ================================================================ */
enum { XFER = 256, KEEP = 64, STORM_ALLOCATORS = 3, STORM_FORKERS = 2 };

typedef struct {
  _Atomic(obj_t *) xfer[XFER]; /* objects in transit between threads */
  obj_t *keep[KEEP];           /* made before the threads start, never changed */
  atomic_int stop;
  int max_forks; /* per fork thread */
  int min_forks; /* per fork thread, whatever the time */
  double until;  /* the fork loops stop here (past min_forks) */
} storm_t;

static uint64_t keep_seed(int i) { return 0x5eed0000ULL + (uint64_t)i; }

static void *storm_allocator(void *arg) {
  storm_t *s = arg;
  static atomic_int ids;
  int id = atomic_fetch_add(&ids, 1);
  tu_rng_t r = tu_rng(100 + (uint64_t)id);
  enum { LOCAL = 64 };
  obj_t *local[LOCAL] = {0};
  uint64_t n = 0;
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed) && !wd_failed()) {
    n++;
    uint64_t seed = ((uint64_t)(id + 1) << 48) | n;
    size_t k = tu_rng_range(&r, 0, LOCAL - 1);
    if (tu_rng_range(&r, 0, 3) == 0) {
      /* hand an object to whichever thread takes this slot next; free what was there */
      obj_t *o = obj_new(mixed_size(&r), seed);
      if (!o) return (void *)(intptr_t)wd_fail("fork_storm: allocation failed (errno %d)", errno);
      obj_t *old = atomic_exchange(&s->xfer[tu_rng_range(&r, 0, XFER - 1)], o);
      if (old) {
        const char *bad = obj_bad_self(old);
        if (bad) return (void *)(intptr_t)wd_fail("fork_storm: object from another thread: %s", bad);
        free(old);
      }
    } else {
      if (local[k]) {
        const char *bad = obj_bad_self(local[k]);
        if (bad) return (void *)(intptr_t)wd_fail("fork_storm: own object: %s", bad);
        free(local[k]);
      }
      if ((n & 7) == 3) { /* a calloc'd block, zero up to its first 256 bytes */
        size_t sz = mixed_size(&r);
        void *c = calloc(1, sz);
        if (!c) return (void *)(intptr_t)wd_fail("fork_storm: calloc failed (errno %d)", errno);
        if (!tu_all_zero(c, sz < 256 ? sz : 256)) return (void *)(intptr_t)wd_fail("fork_storm: calloc not zero");
        free(c);
      }
      local[k] = obj_new(mixed_size(&r), seed);
      if (!local[k]) return (void *)(intptr_t)wd_fail("fork_storm: allocation failed (errno %d)", errno);
    }
    if ((n & 1023) == 0) wd_count(2, 1024);
  }
  for (int i = 0; i < LOCAL; i++) free(local[i]);
  return NULL;
}

/* A fork child: 0, or a code that says what went wrong. */
static int storm_child(storm_t *s) {
  alarm(10); /* SIGALRM (default action) ends a child that hangs */
  for (int i = 0; i < KEEP; i++) {
    if (obj_bad(s->keep[i], keep_seed(i))) return 10;
  }
  /* the objects in transit at the fork: made by threads the child does not have */
  for (int i = 0; i < XFER; i++) {
    obj_t *o = atomic_load(&s->xfer[i]);
    if (!o) continue;
    if (obj_bad_self(o)) return 11;
    free(o);
  }
  tu_rng_t r = tu_rng((uint64_t)getpid());
  obj_t *v[32];
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < 32; i++) {
      v[i] = obj_new(mixed_size(&r), (uint64_t)round << 8 | (uint64_t)i);
      if (!v[i]) return 12;
    }
    for (int i = 0; i < 32; i++) {
      if (obj_bad(v[i], (uint64_t)round << 8 | (uint64_t)i)) return 13;
      free(v[i]);
    }
  }
  char *g = NULL;
  for (size_t sz = 8; sz < 200000; sz = sz * 2 + 8) {
    char *h = realloc(g, sz);
    if (!h) return 14;
    h[sz - 1] = 1;
    g = h;
  }
  free(g);
  for (int i = 0; i < KEEP; i++) free(s->keep[i]);
  return 0;
}

static void *storm_forker(void *arg) {
  storm_t *s = arg;
  for (int f = 0; f < s->max_forks && !wd_failed(); f++) {
    if (f >= s->min_forks && tu_now() > s->until) break;
    double t0 = tu_now();
    pid_t pid = fork();
    if (pid < 0) return (void *)(intptr_t)wd_fail("fork_storm: fork failed: %s", strerror(errno));
    if (pid == 0) _exit(storm_child(s));
    double t1 = tu_now();
    int st = 0;
    if (tu_waitpid(pid, &st) < 0) return (void *)(intptr_t)wd_fail("fork_storm: waitpid: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      return (void *)(intptr_t)wd_fail("fork_storm: child %d: %s (10: object made before the threads clobbered, "
                                       "11: object in transit clobbered, 12: allocation failed, 13: child's own "
                                       "object clobbered, 14: realloc failed)",
                                       f, tu_wait_status_str(st));
    wd_count(0, 1);
    wd_count(1, (long)((t1 - t0) * 1e6));
    wd_count(3, (long)((tu_now() - t1) * 1e6));
  }
  return NULL;
}

static int fork_storm(void *arg) {
  (void)arg;
  static storm_t s;
  for (int i = 0; i < KEEP; i++) {
    s.keep[i] = obj_new((size_t)i * 97 + 16, keep_seed(i));
    if (!s.keep[i]) return wd_fail("fork_storm: allocation failed");
  }
  s.max_forks = 1000;
  s.min_forks = 50;
  s.until = tu_now() + 8;
  wd_phase(
      "fork storm: counter 0 = children checked, 1 = us in fork(), 2 = allocations, 3 = us waiting for children");
  pthread_t a[STORM_ALLOCATORS], f[STORM_FORKERS];
  for (int i = 0; i < STORM_ALLOCATORS; i++)
    if (pthread_create(&a[i], NULL, storm_allocator, &s) != 0) return wd_fail("pthread_create failed");
  for (int i = 0; i < STORM_FORKERS; i++)
    if (pthread_create(&f[i], NULL, storm_forker, &s) != 0) return wd_fail("pthread_create failed");
  for (int i = 0; i < STORM_FORKERS; i++) pthread_join(f[i], NULL);
  wd_phase("fork storm: joining the allocating threads");
  atomic_store(&s.stop, 1);
  for (int i = 0; i < STORM_ALLOCATORS; i++) pthread_join(a[i], NULL);
  if (wd_failed()) return 1;
  for (int i = 0; i < KEEP; i++) {
    const char *bad = obj_bad(s.keep[i], keep_seed(i));
    if (bad) return wd_fail("fork_storm: after the forks, in the parent: %s", bad);
    free(s.keep[i]);
  }
  for (int i = 0; i < XFER; i++) {
    obj_t *o = atomic_exchange(&s.xfer[i], NULL);
    if (!o) continue;
    const char *bad = obj_bad_self(o);
    if (bad) return wd_fail("fork_storm: after the forks, in the parent: %s", bad);
    free(o);
  }
  fprintf(stderr, "fork_storm: %ld children checked, %ld allocations, fork us %ld, wait us %ld\n", wd_get(0),
          wd_get(2), wd_get(1), wd_get(3));
  return 0;
}

/* Threads allocate and free (a quarter of the objects go through a shared
 * array and are freed by another thread) while 2 threads fork up to 1000
 * times each (at least 50; past that, for 8 s at most). Every child checks
 * the objects made before the threads started and those in transit (made by
 * threads it does not have), frees them, allocates, checks and frees, grows a
 * block by realloc, and exits 0. */
Test(stress, fork_storm, .timeout = 120) { WD_RUN("fork_storm", 20, fork_storm, NULL); }

/* ==== 2. fork while other threads use stdio ======================================= */
enum { STDIO_READERS = 2, STDIO_WRITERS = 2, STDIO_FORKERS = 2, LONG_LINE = 50000 };

typedef struct {
  char in_path[64];
  char out_path[STDIO_WRITERS][64];
  atomic_int stop;
  int max_forks, min_forks;
  double until;
} stdio_t;

static void *stdio_reader(void *arg) {
  stdio_t *s = arg;
  FILE *f = fopen(s->in_path, "r");
  if (!f) return (void *)(intptr_t)wd_fail("fork_while_stdio: fopen %s: %s", s->in_path, strerror(errno));
  long n = 0;
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed) && !wd_failed()) {
    rewind(f);
    char *line = NULL; /* a fresh buffer each time: getline allocates and grows it */
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, f);
    if (len != LONG_LINE + 1 || line[0] != 'x' || line[LONG_LINE - 1] != 'x' || line[LONG_LINE] != '\n') {
      free(line);
      fclose(f);
      return (void *)(intptr_t)wd_fail("fork_while_stdio: getline returned %zd bytes, or wrong ones", len);
    }
    free(line);
    if (++n % 16 == 0) { /* and reopen now and then: fopen and fclose allocate and free */
      fclose(f);
      f = fopen(s->in_path, "r");
      if (!f) return (void *)(intptr_t)wd_fail("fork_while_stdio: fopen: %s", strerror(errno));
    }
    wd_count(1, 1);
  }
  fclose(f);
  return NULL;
}

static void *stdio_writer(void *arg) {
  stdio_t *s = arg;
  static atomic_int ids;
  int id = atomic_fetch_add(&ids, 1);
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed) && !wd_failed()) {
    FILE *f = fopen(s->out_path[id], "w");
    if (!f) return (void *)(intptr_t)wd_fail("fork_while_stdio: fopen for writing: %s", strerror(errno));
    for (int i = 0; i < 200; i++) fprintf(f, "line %d of writer %d: %s\n", i, id, "some text to fill the buffer");
    if (fclose(f) != 0) return (void *)(intptr_t)wd_fail("fork_while_stdio: fclose: %s", strerror(errno));
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return (void *)(intptr_t)wd_fail("fork_while_stdio: open_memstream: %s", strerror(errno));
    for (int i = 0; i < 500; i++) fprintf(m, "%d,", i);
    if (fclose(m) != 0 || !buf || strncmp(buf, "0,1,2,", 6) != 0)
      return (void *)(intptr_t)wd_fail("fork_while_stdio: open_memstream produced the wrong text");
    free(buf);
    wd_count(2, 1);
  }
  return NULL;
}

static void *stdio_flusher(void *arg) {
  stdio_t *s = arg;
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed) && !wd_failed()) {
    if (fflush(NULL) != 0) return (void *)(intptr_t)wd_fail("fork_while_stdio: fflush(NULL): %s", strerror(errno));
    sched_yield();
  }
  return NULL;
}

static int stdio_child(void) {
  alarm(10);
  tu_rng_t r = tu_rng((uint64_t)getpid());
  obj_t *v[16];
  for (int i = 0; i < 16; i++)
    if (!(v[i] = obj_new(mixed_size(&r), (uint64_t)i))) return 12;
  for (int i = 0; i < 16; i++) {
    if (obj_bad(v[i], (uint64_t)i)) return 13;
    free(v[i]);
  }
  /* stdio in the child: glibc reset its locks; it allocates through us */
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  if (!m) return 14;
  for (int i = 0; i < 100; i++) fprintf(m, "%d ", i);
  if (fclose(m) != 0 || strncmp(buf, "0 1 2 ", 6) != 0) return 15;
  free(buf);
  return 0;
}

static void *stdio_forker(void *arg) {
  stdio_t *s = arg;
  for (int f = 0; f < s->max_forks && !wd_failed(); f++) {
    if (f >= s->min_forks && tu_now() > s->until) break;
    pid_t pid = fork();
    if (pid < 0) return (void *)(intptr_t)wd_fail("fork_while_stdio: fork failed: %s", strerror(errno));
    if (pid == 0) _exit(stdio_child());
    int st = 0;
    if (tu_waitpid(pid, &st) < 0) return (void *)(intptr_t)wd_fail("fork_while_stdio: waitpid: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      return (void *)(intptr_t)wd_fail("fork_while_stdio: child %d: %s (12: allocation failed, 13: object "
                                       "clobbered, 14/15: open_memstream failed in the child)",
                                       f, tu_wait_status_str(st));
    wd_count(0, 1);
  }
  return NULL;
}

static int fork_while_stdio(void *arg) {
  stdio_t *s = arg;
  s->max_forks = 500;
  s->min_forks = 30;
  s->until = tu_now() + 6;
  wd_phase("fork with stdio: counter 0 = children checked, 1 = getlines, 2 = writer rounds");
  pthread_t rd[STDIO_READERS], wr[STDIO_WRITERS], fl, fk[STDIO_FORKERS];
  for (int i = 0; i < STDIO_READERS; i++)
    if (pthread_create(&rd[i], NULL, stdio_reader, s) != 0) return wd_fail("pthread_create failed");
  for (int i = 0; i < STDIO_WRITERS; i++)
    if (pthread_create(&wr[i], NULL, stdio_writer, s) != 0) return wd_fail("pthread_create failed");
  if (pthread_create(&fl, NULL, stdio_flusher, s) != 0) return wd_fail("pthread_create failed");
  for (int i = 0; i < STDIO_FORKERS; i++)
    if (pthread_create(&fk[i], NULL, stdio_forker, s) != 0) return wd_fail("pthread_create failed");
  for (int i = 0; i < STDIO_FORKERS; i++) pthread_join(fk[i], NULL);
  wd_phase("fork with stdio: joining the stdio threads");
  atomic_store(&s->stop, 1);
  for (int i = 0; i < STDIO_READERS; i++) pthread_join(rd[i], NULL);
  for (int i = 0; i < STDIO_WRITERS; i++) pthread_join(wr[i], NULL);
  pthread_join(fl, NULL);
  fprintf(stderr, "fork_while_stdio: %ld children, %ld getlines, %ld writer rounds\n", wd_get(0), wd_get(1),
          wd_get(2));
  return wd_failed();
}

/* The project's bug 4 (glibc bug 19431's situation): 2 threads fork up to 500
 * times each (at least 30; past that for 6 s at most) while 2 threads read a
 * 50000-byte line with getline (fopen/rewind/fclose), 2 threads write files
 * with fprintf and build strings with open_memstream, and 1 thread calls
 * fflush(NULL) in a loop. stdio calls malloc with FILE locks held, and fork
 * takes the stdio list lock: allocator locks taken before that (in a
 * pthread_atfork prepare handler) deadlock. Every child allocates, checks and
 * frees, and uses open_memstream. */
Test(stress, fork_while_stdio, .timeout = 120) {
  static stdio_t s;
  snprintf(s.in_path, sizeof s.in_path, "/tmp/sm_stress_in_XXXXXX");
  int fd = mkstemp(s.in_path);
  cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
  FILE *f = fdopen(fd, "w");
  cr_assert_not_null(f);
  for (int i = 0; i < LONG_LINE; i++) fputc('x', f);
  fputc('\n', f);
  fputs("a second, short line\n", f);
  cr_assert_eq(fclose(f), 0);
  for (int i = 0; i < STDIO_WRITERS; i++) {
    snprintf(s.out_path[i], sizeof s.out_path[i], "/tmp/sm_stress_out_XXXXXX");
    int o = mkstemp(s.out_path[i]);
    cr_assert_geq(o, 0);
    close(o);
  }
  char msg[1600];
  int rc = wd_run("fork_while_stdio", 20, fork_while_stdio, &s, msg, sizeof msg);
  unlink(s.in_path);
  for (int i = 0; i < STDIO_WRITERS; i++) unlink(s.out_path[i]);
  cr_assert_eq(rc, 0, "%s", msg);
}

/* ==== 3. fork from a signal handler ================================================ */
typedef struct {
  atomic_int armed; /* set by the main loop: the sender may send one signal */
  atomic_int quit;
} sigshare_t;

static sigshare_t *sig_sh;
static volatile sig_atomic_t in_alloc; /* the main loop is inside free + malloc */
static volatile sig_atomic_t handled, handled_in_alloc, handler_error;
static volatile int handler_status;

static void fork_handler(int signo) {
  (void)signo;
  int saved = errno;
  handled++;
  if (in_alloc) handled_in_alloc++;
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  if (pid < 0) {
    handler_error = 1;
  } else {
    int st = 0;
    pid_t w = tu_waitpid(pid, &st);
    if (w != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      handler_error = 2;
      handler_status = st;
    }
  }
  errno = saved;
}

static int fork_in_signal_handler(void *arg) {
  (void)arg;
  sig_sh = mmap(NULL, sizeof *sig_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sig_sh == MAP_FAILED) return wd_fail("mmap failed");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fork_handler;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, NULL) != 0) return wd_fail("sigaction failed");
  pid_t me = getpid();
  pid_t sender = fork();
  if (sender < 0) return wd_fail("fork of the sender failed");
  if (sender == 0) {
    /* sends SIGUSR1 as fast as the main loop lets it: one per arming */
    while (!atomic_load(&sig_sh->quit) && getppid() == me) {
      if (atomic_exchange(&sig_sh->armed, 0)) kill(me, SIGUSR1);
      else sched_yield();
    }
    _exit(0);
  }
  wd_phase("malloc/free loop with SIGUSR1 forking: counter 0 = signals handled, 1 = inside malloc/free, "
           "2 = iterations");
  enum { OBJS = 1009, MAX_SIZE = 70000, WANT_IN_ALLOC = 1500 };
  static unsigned char *objs[OBJS];
  static size_t sizes[OBJS];
  tu_rng_t r = tu_rng(2);
  double until = tu_now() + 8;
  long it = 0;
  int err = 0;
  while (handled_in_alloc < WANT_IN_ALLOC && !handler_error) {
    if ((it & 255) == 0) {
      wd_count(0, handled - wd_get(0));
      wd_count(1, handled_in_alloc - wd_get(1));
      wd_count(2, 256);
      if (handled_in_alloc >= 100 && tu_now() > until) break;
    }
    it++;
    size_t k = tu_rng_range(&r, 0, OBJS - 1);
    size_t sz = tu_rng_range(&r, 0, MAX_SIZE);
    if (objs[k] && sizes[k] >= 2 &&
        (objs[k][0] != (unsigned char)k || objs[k][sizes[k] - 1] != (unsigned char)(sizes[k] * 7))) {
      err = 1;
      break;
    }
    atomic_store_explicit(&sig_sh->armed, 1, memory_order_relaxed);
    in_alloc = 1;
    free(objs[k]);
    objs[k] = malloc(sz);
    in_alloc = 0;
    if (!objs[k]) {
      err = 2;
      break;
    }
    sizes[k] = sz;
    if (sz >= 2) {
      objs[k][0] = (unsigned char)k;
      objs[k][sz - 1] = (unsigned char)(sz * 7);
    }
  }
  signal(SIGUSR1, SIG_IGN);
  atomic_store(&sig_sh->quit, 1);
  kill(sender, SIGKILL);
  int st;
  tu_waitpid(sender, &st);
  for (int i = 0; i < OBJS; i++) free(objs[i]);
  fprintf(stderr, "fork_in_signal_handler: %d signals handled, %d of them inside malloc/free, %ld iterations\n",
          (int)handled, (int)handled_in_alloc, it);
  if (err == 1) return wd_fail("fork_in_signal_handler: an object was clobbered");
  if (err == 2) return wd_fail("fork_in_signal_handler: malloc failed (errno %d)", errno);
  if (handler_error == 1) return wd_fail("fork_in_signal_handler: fork in the handler failed");
  if (handler_error == 2)
    return wd_fail("fork_in_signal_handler: the handler's child ended with %s", tu_wait_status_str(handler_status));
  if (handled_in_alloc == 0) return wd_fail("fork_in_signal_handler: no signal arrived inside malloc/free");
  return 0;
}

/* The project's bug 5 (glibc's tst-mallocfork2 situation): a single thread
 * frees and mallocs random sizes up to 70000 bytes while another process
 * sends SIGUSR1 as fast as the loop lets it; the handler forks, the child
 * _exits(0), the handler waits for it. Runs until 1500 signals arrived inside
 * free/malloc (or, past 100, 8 s). fork must not wait for a lock that the
 * interrupted malloc holds. */
Test(stress, fork_in_signal_handler, .timeout = 120) {
  WD_RUN("fork_in_signal_handler", 20, fork_in_signal_handler, NULL);
}

/* ==== 4. thread-exit churn ========================================================= */
enum { TE_AT_ONCE = 4, TE_OBJS = 12, TE_TOTAL = 20000, TE_WARM = 4000 };

typedef struct {
  int id;
  obj_t *give[TE_OBJS]; /* made by this thread, freed by another after it exited */
  obj_t **take;         /* objects of an exited thread of the previous batch */
  int fail;
} te_arg_t;

static uint64_t te_seed(int id, int i) { return ((uint64_t)(id + 1) << 16) | (uint64_t)i; }

static void *te_thread(void *arg) {
  te_arg_t *a = arg;
  if (a->take) {
    for (int i = 0; i < TE_OBJS; i += 2) { /* half here; the main thread frees the other half */
      if (obj_bad_self(a->take[i])) {
        a->fail = 1;
        return NULL;
      }
      free(a->take[i]);
      a->take[i] = NULL;
    }
  }
  tu_rng_t r = tu_rng((uint64_t)a->id);
  for (int i = 0; i < TE_OBJS; i++) {
    size_t sz = (i == 0 && a->id % 16 == 0) ? tu_rng_range(&r, 16 * KiB, 64 * KiB) : tu_rng_range(&r, 8, 2000);
    a->give[i] = obj_new(sz, te_seed(a->id, i));
    if (!a->give[i]) {
      a->fail = 2;
      return NULL;
    }
  }
  void *tmp = malloc(100); /* and a little churn that dies with the thread */
  free(tmp);
  return NULL;
}

static int thread_exit_churn(void *arg) {
  (void)arg;
  static te_arg_t args[2][TE_AT_ONCE];
  static obj_t *prev[TE_AT_ONCE][TE_OBJS];
  size_t rss_warm = 0;
  int cur = 0;
  wd_phase("thread-exit churn: counter 0 = threads joined");
  for (int base = 0; base < TE_TOTAL; base += TE_AT_ONCE) {
    pthread_t t[TE_AT_ONCE];
    for (int i = 0; i < TE_AT_ONCE; i++) {
      te_arg_t *a = &args[cur][i];
      memset(a, 0, sizeof *a);
      a->id = base + i;
      /* thread i takes the objects that thread i+1 of the previous batch left */
      a->take = base ? prev[(i + 1) % TE_AT_ONCE] : NULL;
      if (pthread_create(&t[i], NULL, te_thread, a) != 0)
        return wd_fail("thread_exit_churn: pthread_create failed at thread %d", base + i);
    }
    for (int i = 0; i < TE_AT_ONCE; i++) pthread_join(t[i], NULL);
    wd_count(0, TE_AT_ONCE);
    for (int i = 0; i < TE_AT_ONCE; i++) {
      te_arg_t *a = &args[cur][i];
      if (a->fail == 1)
        return wd_fail("thread_exit_churn: thread %d found an object of exited thread %d clobbered", a->id,
                       a->id - TE_AT_ONCE + 1);
      if (a->fail == 2) return wd_fail("thread_exit_churn: thread %d: allocation failed", a->id);
    }
    /* the main thread frees the other half of the previous batch's objects */
    if (base)
      for (int i = 0; i < TE_AT_ONCE; i++)
        for (int k = 1; k < TE_OBJS; k += 2) {
          const char *bad = obj_bad_self(prev[i][k]);
          if (bad) return wd_fail("thread_exit_churn: object of an exited thread: %s", bad);
          free(prev[i][k]);
        }
    for (int i = 0; i < TE_AT_ONCE; i++) memcpy(prev[i], args[cur][i].give, sizeof prev[i]);
    cur ^= 1;
    if (base + TE_AT_ONCE == TE_WARM) rss_warm = tu_rss_bytes();
    if (tu_rss_bytes() > ((size_t)2 << 30))
      return wd_fail("thread_exit_churn: RSS passed 2 GiB after %d threads", base);
  }
  for (int i = 0; i < TE_AT_ONCE; i++)
    for (int k = 0; k < TE_OBJS; k++) free(prev[i][k]);
  size_t rss_end = tu_rss_bytes();
  fprintf(stderr, "thread_exit_churn: RSS after %d threads %zu KiB, after %d threads %zu KiB\n", TE_WARM,
          rss_warm >> 10, TE_TOTAL, rss_end >> 10);
  if (rss_end > 2 * rss_warm + 16 * MiB)
    return wd_fail("thread_exit_churn: RSS grows with dead threads: %zu KiB after %d threads, %zu KiB after %d",
                   rss_warm >> 10, TE_WARM, rss_end >> 10, TE_TOTAL);
  return 0;
}

/* 20000 threads, 4 at a time, each freeing half the objects an exited thread
 * of the previous batch left (the main thread frees the other half) and
 * leaving 12 objects of its own (every 16th thread one of 16-64 KiB).
 * Contents are checked; RSS after 20000 threads stays within 2x (+16 MiB) of
 * RSS after 4000. */
Test(stress, thread_exit_churn, .timeout = 120) { WD_RUN("thread_exit_churn", 30, thread_exit_churn, NULL); }

/* ==== 5. out of memory under RLIMIT_AS ============================================= */
#define OOM_HEADROOM ((size_t)256 << 20)
#define OOM_CAP ((size_t)2 << 30) /* a limit that does not work: stop here */

static int limit_as(void) {
  struct rlimit rl;
  rl.rlim_cur = rl.rlim_max = tu_vmsize_bytes() + OOM_HEADROOM;
  if (setrlimit(RLIMIT_AS, &rl) != 0) return wd_fail("setrlimit(RLIMIT_AS): %s", strerror(errno));
  return 0;
}

/* A chain of objects linked through their first word, each tagged. */
typedef struct link {
  struct link *next;
  uint64_t tag;
} link_t;

/* Allocates objects of size bytes (calloc when zeroed) until allocation
 * fails; the chain is returned in *head, the count in *n. Fails unless the
 * last call gave NULL with errno ENOMEM (and calloc memory was zero). */
static int fill_until_null(size_t size, int zeroed, link_t **head, size_t *n, const char *what) {
  link_t *h = NULL;
  size_t count = 0;
  for (;;) {
    errno = 0;
    link_t *l = zeroed ? calloc(1, size) : malloc(size);
    if (!l) {
      if (errno != ENOMEM)
        return wd_fail("%s: allocation %zu of %zu bytes gave NULL with errno %d (%s), not ENOMEM", what, count, size,
                       errno, strerror(errno));
      break;
    }
    if (zeroed) {
      size_t check = size < 4096 ? size : 4096; /* the first page and the last bytes */
      if (!tu_all_zero(l, check) || !tu_all_zero((char *)l + size - (size < 64 ? size : 64), size < 64 ? size : 64))
        return wd_fail("%s: calloc(1, %zu) number %zu is not zero", what, size, count);
      if (size > 4096) memset((char *)l + size - 64, 0xa5, 64); /* dirty: a later calloc must zero it again */
    }
    l->next = h;
    l->tag = (uint64_t)size ^ (count * 0x9E3779B97F4A7C15ULL);
    h = l;
    count++;
    if (count * size > OOM_CAP)
      return wd_fail("%s: %zu objects of %zu bytes and no failure under RLIMIT_AS of %zu MiB headroom", what, count,
                     size, OOM_HEADROOM >> 20);
  }
  *head = h;
  *n = count;
  return 0;
}

static int free_chain(link_t *h, size_t n, size_t size, const char *what) {
  size_t i = n;
  while (h) {
    link_t *next = h->next;
    i--;
    if (h->tag != ((uint64_t)size ^ (i * 0x9E3779B97F4A7C15ULL)))
      return wd_fail("%s: object %zu of %zu bytes (%p) clobbered", what, i, size, (void *)h);
    free(h);
    h = next;
  }
  return 0;
}

static int oom_malloc(void *arg) {
  (void)arg;
  if (limit_as()) return 1;
  static const size_t sizes[] = {64, 3000, 100000, 1 * MiB, 16 * MiB};
  for (int round = 0; round < 2; round++)
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
      wd_phase("malloc(%zu) until NULL, round %d", sizes[s], round);
      link_t *h = NULL;
      size_t n = 0;
      if (fill_until_null(sizes[s], 0, &h, &n, "oom_malloc")) return 1;
      if (n == 0)
        return wd_fail("oom_malloc: round %d: not one malloc(%zu) succeeded after everything before was "
                       "freed",
                       round, sizes[s]);
      /* out of memory, and the process goes on: small requests may fail too, but must say so */
      errno = 0;
      void *p = malloc(16);
      if (!p && errno != ENOMEM) return wd_fail("oom_malloc: malloc(16) at the limit: NULL with errno %d", errno);
      free(p);
      if (free_chain(h, n, sizes[s], "oom_malloc")) return 1;
      fprintf(stderr, "oom_malloc: round %d: %zu objects of %zu bytes\n", round, n, sizes[s]);
    }
  return 0;
}

/* In a child with RLIMIT_AS = its address space + 256 MiB: malloc of 64 B,
 * 3000 B, 100 KB, 1 MiB and 16 MiB objects, each until NULL (errno ENOMEM,
 * no crash), all checked and freed before the next size; twice. Every size
 * gets at least one object after the previous size's memory was freed. */
Test(stress, oom_malloc_until_null, .timeout = 120) { WD_RUN("oom_malloc_until_null", 30, oom_malloc, NULL); }

static int oom_realloc(void *arg) {
  (void)arg;
  if (limit_as()) return 1;
  static const size_t starts[] = {24, 5000, 300000};
  for (size_t s = 0; s < sizeof starts / sizeof *starts; s++) {
    wd_phase("realloc growth from %zu bytes until NULL", starts[s]);
    uint64_t seed = 0xabc0 + s;
    size_t size = starts[s];
    unsigned char *p = malloc(size);
    if (!p) return wd_fail("oom_realloc: malloc(%zu) failed", size);
    tu_fill(p, size, seed);
    for (;;) {
      size_t grow = size < 64 * KiB ? size * 2 : size + size / 2;
      errno = 0;
      unsigned char *q = realloc(p, grow);
      if (!q) {
        if (errno != ENOMEM) return wd_fail("oom_realloc: realloc to %zu gave NULL with errno %d", grow, errno);
        size_t off = tu_check(p, size, seed);
        if (off != SIZE_MAX)
          return wd_fail("oom_realloc: a failed realloc (%zu -> %zu bytes) changed the old block at offset %zu", size,
                         grow, off);
        break;
      }
      size_t off = tu_check(q, size, seed);
      if (off != SIZE_MAX)
        return wd_fail("oom_realloc: realloc %zu -> %zu bytes lost the contents at offset %zu", size, grow, off);
      tu_fill(q + size, grow - size, seed ^ grow); /* the new part */
      tu_fill(q, grow, seed);                      /* and all of it, for the next check */
      p = q;
      size = grow;
      if (size > OOM_CAP) return wd_fail("oom_realloc: realloc grew to %zu bytes under RLIMIT_AS", size);
    }
    /* the old block is still live and usable: shrink it, then free it */
    unsigned char *q = realloc(p, starts[s]);
    if (!q) return wd_fail("oom_realloc: shrinking realloc to %zu failed at the limit", starts[s]);
    if (tu_check(q, starts[s], seed) != SIZE_MAX) return wd_fail("oom_realloc: shrinking lost the contents");
    free(q);
    void *again = malloc(size / 2);
    if (!again) return wd_fail("oom_realloc: after freeing a %zu-byte block, malloc(%zu) failed", size, size / 2);
    free(again);
    fprintf(stderr, "oom_realloc: from %zu bytes, grew to %zu\n", starts[s], size);
  }
  return 0;
}

/* In a child with RLIMIT_AS = its address space + 256 MiB: a block grown by
 * realloc (x2 below 64 KiB, then x1.5) from 24 B, 5000 B and 300 KB until
 * realloc fails: NULL with ENOMEM, the old block intact (contents checked at
 * every step); it can still be shrunk and freed, and half its size malloc'd. */
Test(stress, oom_realloc_growth, .timeout = 120) { WD_RUN("oom_realloc_growth", 30, oom_realloc, NULL); }

static int oom_calloc(void *arg) {
  (void)arg;
  if (limit_as()) return 1;
  static const size_t sizes[] = {72, 40000, 256 * KiB, 4 * MiB};
  for (int round = 0; round < 2; round++)
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
      wd_phase("calloc(1, %zu) until NULL, round %d", sizes[s], round);
      link_t *h = NULL;
      size_t n = 0;
      if (fill_until_null(sizes[s], 1, &h, &n, "oom_calloc")) return 1;
      if (n == 0) return wd_fail("oom_calloc: round %d: not one calloc(1, %zu) succeeded", round, sizes[s]);
      if (free_chain(h, n, sizes[s], "oom_calloc")) return 1;
    }
  /* overflow: ENOMEM, whatever the limit */
  errno = 0;
  if (calloc(tu_hide(SIZE_MAX / 2), 3) != NULL || errno != ENOMEM)
    return wd_fail("oom_calloc: calloc overflow not ENOMEM");
  return 0;
}

/* In a child with RLIMIT_AS = its address space + 256 MiB: calloc(1, n) for
 * n = 72, 40000, 256 KiB and 4 MiB until NULL (ENOMEM); every block is zero
 * (first page and last bytes checked), and is dirtied before it is freed, so
 * the second round sees calloc zero reused memory. */
Test(stress, oom_calloc_until_null, .timeout = 120) { WD_RUN("oom_calloc_until_null", 30, oom_calloc, NULL); }

/* The project's bug 6: fill the address space with 64-byte objects until
 * malloc fails, free them all (then malloc_trim(0) when trim), and larger
 * requests must succeed again. */
static int small_fill_then_larger(int trim) {
  if (limit_as()) return 1;
  link_t *h = NULL;
  size_t n = 0;
  wd_phase("malloc(64) until NULL");
  if (fill_until_null(64, 0, &h, &n, "oom_small_fill")) return 1;
  wd_phase("freeing %zu objects of 64 bytes", n);
  if (free_chain(h, n, 64, "oom_small_fill")) return 1;
  if (trim) {
    wd_phase("malloc_trim(0)");
    malloc_trim(0);
  }
  static const size_t sizes[] = {1000, 20000, 100000, 8 * MiB};
  void *p[4] = {0};
  char failed[256] = "";
  size_t len = 0;
  for (int i = 0; i < 4; i++) {
    wd_phase("malloc(%zu) after freeing %zu objects of 64 bytes", sizes[i], n);
    errno = 0;
    p[i] = malloc(sizes[i]);
    if (!p[i]) len += (size_t)snprintf(failed + len, sizeof failed - len, " malloc(%zu) (errno %d)", sizes[i], errno);
    else memset(p[i], 1, sizes[i]);
  }
  for (int i = 0; i < 4; i++) free(p[i]);
  fprintf(stderr, "oom_small_fill%s: %zu objects of 64 bytes\n", trim ? "_trim" : "", n);
  if (failed[0])
    return wd_fail("after %zu malloc(64) up to the RLIMIT_AS limit, all freed%s, these failed:%s", n,
                   trim ? " and malloc_trim(0)" : "", failed);
  return 0;
}
static int small_fill_no_trim(void *arg) {
  (void)arg;
  return small_fill_then_larger(0);
}
static int small_fill_trim(void *arg) {
  (void)arg;
  return small_fill_then_larger(1);
}

/* Bug 6: after 64-byte objects filled memory up to RLIMIT_AS and were all
 * freed, malloc(1000), malloc(20000), malloc(100000) and malloc(8 MiB) all
 * succeed (the freed memory is usable by other sizes). */
Test(stress, oom_small_fill_then_larger, .timeout = 120) {
  WD_RUN("oom_small_fill_then_larger", 30, small_fill_no_trim, NULL);
}

/* The same, with malloc_trim(0) after the frees. */
Test(stress, oom_small_fill_then_larger_after_trim, .timeout = 120) {
  WD_RUN("oom_small_fill_then_larger_after_trim", 30, small_fill_trim, NULL);
}

/* ==== 6. long random churn, RSS bounded ============================================ */
static size_t churn_size(tu_rng_t *r) {
  if (tu_rng_range(r, 0, 31) == 0) return tu_rng_range(r, 1 * KiB, 9 * KiB);
  return tu_rng_range(r, 8, 264);
}

static int long_churn(void *arg) {
  (void)arg;
  enum { LIVE = 20000 };
  const long OPS = 4000000, WARM = 500000;
  static obj_t *live[LIVE];
  static uint64_t seeds[LIVE];
  tu_rng_t r = tu_rng(6);
  size_t live_bytes = 0, rss_warm = 0, rss_warm_raw = 0, live_warm = 0;
  size_t rss_base = tu_rss_bytes();
  wd_phase("long churn: counter 0 = operations");
  for (int i = 0; i < LIVE; i++) {
    seeds[i] = (uint64_t)i;
    live[i] = obj_new(churn_size(&r), seeds[i]);
    if (!live[i]) return wd_fail("long_churn: allocation failed");
    live_bytes += live[i]->size;
  }
  for (long op = 1; op <= OPS; op++) {
    size_t k = tu_rng_range(&r, 0, LIVE - 1);
    if ((op & 15) == 0) { /* check one object in 16 fully before it goes */
      const char *bad = obj_bad(live[k], seeds[k]);
      if (bad) return wd_fail("long_churn: operation %ld: %s", op, bad);
    } else if (live[k]->seed != seeds[k]) {
      return wd_fail("long_churn: operation %ld: header of object %p clobbered", op, (void *)live[k]);
    }
    live_bytes -= live[k]->size;
    free(live[k]);
    seeds[k] = (uint64_t)op << 16 | k;
    live[k] = obj_new(churn_size(&r), seeds[k]);
    if (!live[k]) return wd_fail("long_churn: allocation failed at operation %ld (errno %d)", op, errno);
    live_bytes += live[k]->size;
    if (op % 65536 == 0) wd_count(0, 65536);
    if (op == WARM) {
      rss_warm_raw = tu_rss_bytes();
      malloc_trim(0);
      rss_warm = tu_rss_bytes();
      live_warm = live_bytes;
    }
  }
  size_t rss_end_raw = tu_rss_bytes();
  malloc_trim(0);
  size_t rss_end = tu_rss_bytes();
  for (int i = 0; i < LIVE; i++) {
    const char *bad = obj_bad(live[i], seeds[i]);
    if (bad) return wd_fail("long_churn: at the end: %s", bad);
  }
  fprintf(stderr,
          "long_churn: RSS before %zu KiB; after %ld operations %zu KiB, %zu KiB trimmed (live %zu KiB); "
          "after %ld: %zu KiB, %zu KiB trimmed (live %zu KiB)\n",
          rss_base >> 10, WARM, rss_warm_raw >> 10, rss_warm >> 10, live_warm >> 10, OPS, rss_end_raw >> 10,
          rss_end >> 10, live_bytes >> 10);
  for (int i = 0; i < LIVE; i++) free(live[i]);
  if (rss_end > rss_warm + rss_warm / 2)
    return wd_fail("long_churn: RSS grows with a constant live set: %zu KiB after %ld operations, %zu KiB after "
                   "%ld (both after malloc_trim(0)): more than 1.5x",
                   rss_warm >> 10, WARM, rss_end >> 10, OPS);
  if (rss_end_raw > rss_base + 3 * live_bytes + 4 * MiB)
    return wd_fail("long_churn: RSS %zu KiB for %zu KiB live (it was %zu KiB before the test): more than 3x the "
                   "live bytes + 4 MiB",
                   rss_end_raw >> 10, live_bytes >> 10, rss_base >> 10);
  return 0;
}

/* A live set of 20000 objects (8-264 bytes, one in 32 of 1-9 KiB) in which 4
 * million random replacements are made, contents checked. RSS after
 * malloc_trim(0) at the end is at most 1.5x RSS after malloc_trim(0) at
 * 500000 replacements (trimmed, so the purge delay's timing does not count);
 * RSS at the end, untrimmed, grew by at most 3x the live bytes + 4 MiB over
 * RSS before the test. */
Test(stress, long_churn_rss_bounded, .timeout = 120) { WD_RUN("long_churn_rss_bounded", 30, long_churn, NULL); }
