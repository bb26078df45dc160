/* common.h: what every perf workload shares: argv parsing, a clock, a fast
 * random number generator, the size distributions, threads, and the one
 * result line each workload prints.
 *
 * Workloads use only malloc/free/realloc and pthreads (the slotmalloc-only ones
 * add include/slotmalloc.h), so that one binary runs under every allocator by
 * LD_PRELOAD. They are built with -fno-builtin-malloc (and friends) so that the
 * compiler cannot elide a malloc+free pair.
 *
 * Options understood by every workload (each has its own defaults):
 *   -t N   threads
 *   -s F   scale: multiplies the default amount of work (0.05 = quick mode)
 *   -n N   exact iteration count (overrides -s)
 *   -z N   object size in bytes (where the workload has one)
 *   -o S   a workload-specific mode string (e.g. lifo/fifo)
 *
 * Result line (stdout, one line, key=value separated by spaces):
 *   workload=NAME threads=N ops=N seconds=S malloc=LIB check=HEX [extra...]
 * "seconds" is the timed core of the workload (the harness also measures the
 * whole process); "malloc" names the object that defines the malloc this
 * process calls (libc.so.6, libmimalloc.so.2, ..., or the program itself when
 * an allocator is linked statically), so a preload that silently failed shows.
 */
#ifndef PERF_COMMON_H
#define PERF_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int threads;      /* -t */
  double scale;     /* -s */
  long long n;      /* -n, 0 = use the default times scale */
  size_t size;      /* -z, 0 = workload default */
  const char *mode; /* -o, NULL = workload default */
} args_t;

static inline void usage_die(const char *prog) {
  fprintf(stderr, "usage: %s [-t threads] [-s scale] [-n iterations] [-z size] [-o mode]\n", prog);
  exit(2);
}

static inline args_t parse_args(int argc, char **argv, int default_threads) {
  args_t a = {default_threads, 1.0, 0, 0, NULL};
  int c;
  while ((c = getopt(argc, argv, "t:s:n:z:o:h")) != -1) {
    switch (c) {
      case 't': a.threads = atoi(optarg); break;
      case 's': a.scale = atof(optarg); break;
      case 'n': a.n = atoll(optarg); break;
      case 'z': a.size = (size_t)atoll(optarg); break;
      case 'o': a.mode = optarg; break;
      default: usage_die(argv[0]);
    }
  }
  if (a.threads < 1) a.threads = 1;
  if (a.scale <= 0) a.scale = 1.0;
  return a;
}

/* The iteration count: -n if given, else base * scale (at least 1). */
static inline long long iters(const args_t *a, long long base) {
  if (a->n > 0) return a->n;
  long long n = (long long)((double)base * a->scale);
  return n < 1 ? 1 : n;
}

static inline double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process: unlike the wall clock, not inflated while
 * the process waits for a CPU on a busy machine (single-threaded timings). */
static inline double cpu_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void die(const char *what) {
  fprintf(stderr, "perf workload: %s failed (errno %d: %s)\n", what, errno, strerror(errno));
  exit(1);
}

static inline void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) die("malloc");
  return p;
}

/* Keeps the compiler from dropping a store into, or the allocation of, p. */
static inline void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

/* ---- random numbers: splitmix64 seeds a xorshift64* stream per thread ---- */
static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
typedef struct {
  uint64_t s;
} rng_t;
static inline rng_t rng_seed(uint64_t seed) {
  rng_t r;
  r.s = splitmix64(&seed) | 1;
  return r;
}
static inline uint64_t rng_next(rng_t *r) {
  uint64_t x = r->s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->s = x;
  return x * 0x2545F4914F6CDD1Dull;
}
/* Uniform in [0, n) (n small; the bias is negligible for benchmarking). */
static inline uint64_t rng_below(rng_t *r, uint64_t n) { return (rng_next(r) >> 32) * n >> 32; }

/* ---- sizes ------------------------------------------------------------------
 * Heavy-tailed sizes: a Pareto law with exponent 1 from 16 bytes, capped at
 * 256 KiB: P(size > s) = 16/s. Median 32 B; 6% above 256 B, 0.4% above 4 KiB,
 * 0.02% above 64 KiB; most bytes live in the rare big objects, as in real
 * programs. A few low bits are jittered so sizes do not all fall on class
 * boundaries. Drawn into a table before timing starts (no division in the
 * timed loop). */
#define SIZE_TABLE_BITS 16
#define SIZE_TABLE_LEN (1u << SIZE_TABLE_BITS)
typedef struct {
  uint32_t s[SIZE_TABLE_LEN];
} size_table_t;

static inline void size_table_heavy(size_table_t *t, uint64_t seed) {
  rng_t r = rng_seed(seed);
  for (unsigned i = 0; i < SIZE_TABLE_LEN; i++) {
    double u = (double)(rng_next(&r) >> 11) * 0x1.0p-53; /* [0, 1) */
    double s = 16.0 / (1.0 - u * (1.0 - 1.0 / 16384.0)); /* 16 .. 256 KiB */
    uint32_t z = (uint32_t)s;
    z -= (uint32_t)(rng_next(&r) & 7);
    t->s[i] = z < 1 ? 1 : z;
  }
}
/* Small sizes, uniform in [8, 256]: the bulk of objects in most programs. */
static inline void size_table_small(size_table_t *t, uint64_t seed) {
  rng_t r = rng_seed(seed);
  for (unsigned i = 0; i < SIZE_TABLE_LEN; i++) t->s[i] = 8 + (uint32_t)rng_below(&r, 249);
}
static inline size_t size_pick(const size_table_t *t, rng_t *r) {
  return t->s[rng_next(r) >> (64 - SIZE_TABLE_BITS)];
}

/* Writes the first and last bytes and up to 64 bytes at the start: an object
 * is used, not just allocated. */
static inline void touch(void *p, size_t n) {
  memset(p, 0x5a, n < 64 ? n : 64);
  ((volatile char *)p)[n - 1] = 1;
}

/* ---- threads ---- */
static inline void run_threads(int n, void *(*fn)(void *), void *arg, size_t arg_stride) {
  pthread_t *t = xmalloc(sizeof(pthread_t) * (size_t)n);
  for (int i = 0; i < n; i++)
    if (pthread_create(&t[i], NULL, fn, (char *)arg + arg_stride * (size_t)i) != 0) die("pthread_create");
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  free(t);
}

/* ---- resident set size, read without allocating ----
 * /proc/self/statm's second field (resident pages) by open/read/close: no
 * stdio, no malloc, so sampling does not disturb what it measures. */
#include <fcntl.h>
static inline long rss_kib(void) {
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  const char *c = buf;
  while (*c && *c != ' ') c++; /* skip the size field */
  long pages = 0;
  while (*c == ' ') c++;
  while (*c >= '0' && *c <= '9') pages = pages * 10 + (*c++ - '0');
  return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

/* An RSS curve: up to SAMPLES_MAX (ops, ms, rss) points in a static array,
 * printed at the end as "sample ops=N ms=T rss_kib=K" lines before the result
 * line (the harness draws them; nothing is printed while measuring). */
#define SAMPLES_MAX 1024
typedef struct {
  long long ops;
  double ms;
  long rss;
} sample_t;
static sample_t samples[SAMPLES_MAX];
static int nsamples;
static inline void sample_rss(long long ops, double ms) {
  if (nsamples < SAMPLES_MAX) samples[nsamples++] = (sample_t){ops, ms, rss_kib()};
}
static inline void print_samples(void) {
  for (int i = 0; i < nsamples; i++)
    printf("sample ops=%lld ms=%.1f rss_kib=%ld\n", samples[i].ops, samples[i].ms, samples[i].rss);
}

/* ---- the result line ---- */
static inline const char *malloc_origin(void) {
  Dl_info info;
  void *(*m)(size_t) = malloc;
  if (!dladdr((void *)m, &info) || !info.dli_fname) return "unknown";
  const char *f = info.dli_fname;
  if (!*f) return "main-program";
  const char *slash = strrchr(f, '/');
  return slash ? slash + 1 : f;
}

static inline void report(const char *name, const args_t *a, unsigned long long ops, double seconds, uint64_t check,
                          const char *extra) {
  printf("workload=%s threads=%d ops=%llu seconds=%.6f malloc=%s check=%llx%s%s\n", name, a->threads, ops, seconds,
         malloc_origin(), (unsigned long long)check, extra && *extra ? " " : "", extra ? extra : "");
  fflush(stdout);
}

#endif
