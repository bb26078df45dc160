/* alloctest: random sizes (8 B to 2 KiB mostly, 1 in 50 up to 32 KiB, 1 in 1000 up to 256 KiB) in a rolling window
 * of live objects whose length swells and shrinks, in -t threads each with its own window: the pattern of
 * alloc-test (1 and 2 threads).
 *
 * Each step allocates the newest object at the head of the window; the window's target length moves between a
 * quarter and all of WINDOW in a slow triangle wave, and the tail frees the oldest objects while the window is
 * longer than its target (at most two a step), with an occasional free of a random object inside the window (not only the oldest). */
#include "common.h"

#define WINDOW 16384 /* a power of two */

typedef struct {
  long long steps;
  uint64_t seed, check;
} job_t;

static size_t pick_size(rng_t *r) {
  uint64_t x = rng_next(r);
  unsigned u = (unsigned)(x & 1023);
  if (u == 0) return 32768 + (size_t)rng_below(r, 229377); /* 32 KiB .. 256 KiB */
  if (u < 21) return 2048 + (size_t)rng_below(r, 30721);   /* 2 .. 32 KiB */
  /* 8 B .. 2 KiB, log-uniform: as many 8-16 B objects as 1-2 KiB ones */
  unsigned shift = 3 + (unsigned)rng_below(r, 8);
  return ((size_t)1 << shift) + (size_t)rng_below(r, (uint64_t)1 << shift);
}

static void *worker(void *arg) {
  job_t *j = arg;
  rng_t r = rng_seed(j->seed);
  void **win = calloc(WINDOW, sizeof *win);
  if (!win) die("calloc");
  size_t head = 0, tail = 0; /* live objects: win[tail .. head), modulo WINDOW */
  uint64_t check = 0;
  long long period = j->steps / 4 > 1000 ? j->steps / 4 : 1000;
  for (long long s = 0; s < j->steps; s++) {
    long long ph = s % period; /* a triangle wave of the window's target length */
    long long tri = ph < period / 2 ? ph : period - ph;
    size_t target = WINDOW / 4 + (size_t)((double)tri / (double)(period / 2) * (3 * WINDOW / 4 - 1));
    if (target > WINDOW - 1) target = WINDOW - 1;
    for (int k = 0; k < 2 && head - tail > target; k++, tail++) { /* at most 2 frees a step: it shrinks slowly */
      void *p = win[tail & (WINDOW - 1)];
      if (p) {
        check += *(unsigned char *)p;
        free(p);
      }
    }
    if ((rng_next(&r) & 15) == 0 && head > tail) { /* a free from inside the window */
      size_t i = (tail + (size_t)rng_below(&r, head - tail)) & (WINDOW - 1);
      if (win[i]) {
        check += *(unsigned char *)win[i];
        free(win[i]);
        win[i] = NULL;
      }
    }
    size_t n = pick_size(&r);
    char *p = malloc(n);
    if (!p) die("malloc");
    touch(p, n);
    win[head & (WINDOW - 1)] = p;
    head++;
  }
  for (; tail < head; tail++) free(win[tail & (WINDOW - 1)]);
  free(win);
  j->check = check;
  return NULL;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  long long steps = iters(&a, 2000000);
  job_t *jobs = calloc((size_t)a.threads, sizeof *jobs);
  if (!jobs) die("calloc");
  for (int i = 0; i < a.threads; i++) {
    jobs[i].steps = steps;
    jobs[i].seed = 4200 + (uint64_t)i;
  }
  double t0 = now_sec();
  run_threads(a.threads, worker, jobs, sizeof *jobs);
  double t1 = now_sec();
  uint64_t check = 0;
  for (int i = 0; i < a.threads; i++) check += jobs[i].check;
  report("alloctest", &a, (unsigned long long)(steps * a.threads), t1 - t0, check, "");
  free(jobs);
  return 0;
}
