/* replace: each thread (-t) keeps a live set of objects of one size (-z, default 128 bytes; -o N live
 * objects, default 40,000) and replaces random ones: it reads the object, frees it and allocates one of
 * the same size, which it writes. Every free lands on a random slot of many blocks of one class, and
 * every malloc reuses a slot freed long ago: the pattern of a cache of fixed-size records. */
#include "common.h"

typedef struct {
  long long steps;
  size_t live, size;
  uint64_t seed, check;
} job_t;

static void *worker(void *arg) {
  job_t *j = arg;
  rng_t r = rng_seed(j->seed);
  void **slot = calloc(j->live, sizeof *slot);
  if (!slot) die("calloc");
  uint64_t check = 0;
  for (size_t i = 0; i < j->live; i++) {
    slot[i] = malloc(j->size);
    if (!slot[i]) die("malloc");
    *(unsigned char *)slot[i] = (unsigned char)i;
  }
  for (long long s = 0; s < j->steps; s++) {
    size_t i = rng_below(&r, j->live);
    check += *(volatile unsigned char *)slot[i];
    free(slot[i]);
    slot[i] = malloc(j->size);
    if (!slot[i]) die("malloc");
    *(unsigned char *)slot[i] = (unsigned char)s;
  }
  for (size_t i = 0; i < j->live; i++) free(slot[i]);
  free(slot);
  j->check = check;
  return NULL;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  size_t size = a.size ? a.size : 128;
  size_t live = a.mode ? (size_t)atoll(a.mode) : 40000;
  if (live < 1) live = 1;
  long long steps = iters(&a, 10000000);
  job_t *jobs = calloc((size_t)a.threads, sizeof *jobs);
  if (!jobs) die("calloc");
  for (int i = 0; i < a.threads; i++) {
    jobs[i].steps = steps;
    jobs[i].live = live;
    jobs[i].size = size;
    jobs[i].seed = 2000 + (uint64_t)i;
  }
  double t0 = now_sec();
  run_threads(a.threads, worker, jobs, sizeof *jobs);
  double t1 = now_sec();
  uint64_t check = 0;
  for (int i = 0; i < a.threads; i++) check += jobs[i].check;
  char extra[64];
  snprintf(extra, sizeof extra, "size=%zu live=%zu", size, live);
  report("replace", &a, (unsigned long long)(steps * a.threads), t1 - t0, check, extra);
  free(jobs);
  return 0;
}
