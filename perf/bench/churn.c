/* churn: each thread (-t) keeps a live set of heavy-tailed objects and replaces random ones, long-running. */
#include "common.h"

typedef struct {
  long long steps;
  size_t live;
  const size_table_t *sizes;
  uint64_t seed, check;
} job_t;

static void *worker(void *arg) {
  job_t *j = arg;
  rng_t r = rng_seed(j->seed);
  void **slot = calloc(j->live, sizeof *slot);
  if (!slot) die("calloc");
  uint64_t check = 0;
  for (size_t i = 0; i < j->live; i++) {
    size_t n = size_pick(j->sizes, &r);
    slot[i] = malloc(n);
    if (!slot[i]) die("malloc");
    touch(slot[i], n);
  }
  for (long long s = 0; s < j->steps; s++) {
    size_t i = rng_below(&r, j->live);
    check += *(unsigned char *)slot[i];
    free(slot[i]);
    size_t n = size_pick(j->sizes, &r);
    slot[i] = malloc(n);
    if (!slot[i]) die("malloc");
    touch(slot[i], n);
  }
  for (size_t i = 0; i < j->live; i++) free(slot[i]);
  free(slot);
  j->check = check;
  return NULL;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  size_t live = a.size ? a.size : 50000; /* -z: live objects per thread */
  long long steps = iters(&a, 3000000);
  size_table_t *sizes = xmalloc(sizeof *sizes);
  size_table_heavy(sizes, 7);
  job_t *jobs = calloc((size_t)a.threads, sizeof *jobs);
  if (!jobs) die("calloc");
  for (int i = 0; i < a.threads; i++) {
    jobs[i].steps = steps;
    jobs[i].live = live;
    jobs[i].sizes = sizes;
    jobs[i].seed = 1000 + (uint64_t)i;
  }
  double t0 = now_sec();
  run_threads(a.threads, worker, jobs, sizeof *jobs);
  double t1 = now_sec();
  uint64_t check = 0;
  for (int i = 0; i < a.threads; i++) check += jobs[i].check;
  char extra[64];
  snprintf(extra, sizeof extra, "live=%zu", live);
  report("churn", &a, (unsigned long long)(steps * a.threads), t1 - t0, check, extra);
  free(jobs);
  free(sizes);
  return 0;
}
