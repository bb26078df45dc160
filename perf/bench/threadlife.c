/* threadlife: short-lived threads (-t at a time) allocate objects; half outlive their thread and are freed by a later one. */
#include "common.h"

#define PER_THREAD 2000

typedef struct {
  void **keep; /* this thread's share of the survivors: freed and refilled */
  const size_table_t *sizes;
  uint64_t seed, check;
} job_t;

static void *worker(void *arg) {
  job_t *j = arg;
  rng_t r = rng_seed(j->seed);
  void *mine[PER_THREAD / 2];
  uint64_t check = 0;
  for (int i = 0; i < PER_THREAD / 2; i++) {
    size_t n = size_pick(j->sizes, &r);
    mine[i] = malloc(n);
    if (!mine[i]) die("malloc");
    touch(mine[i], n);
    /* a survivor: frees what an earlier (now exited) thread left here */
    n = size_pick(j->sizes, &r);
    void *p = malloc(n);
    if (!p) die("malloc");
    touch(p, n);
    if (j->keep[i]) {
      check += *(unsigned char *)j->keep[i];
      free(j->keep[i]);
    }
    j->keep[i] = p;
  }
  for (int i = 0; i < PER_THREAD / 2; i++) free(mine[i]);
  j->check += check;
  return NULL;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 2);
  long long rounds = iters(&a, 500);
  size_table_t *sizes = xmalloc(sizeof *sizes);
  size_table_heavy(sizes, 5);
  int slots = a.threads * 2; /* survivors are picked up by a thread of a later round, not the same index */
  void ***keep = xmalloc(sizeof(void **) * (size_t)slots);
  for (int i = 0; i < slots; i++) keep[i] = calloc(PER_THREAD / 2, sizeof(void *));
  job_t *jobs = calloc((size_t)a.threads, sizeof *jobs);
  if (!jobs) die("calloc");
  double t0 = now_sec();
  for (long long r = 0; r < rounds; r++) {
    for (int i = 0; i < a.threads; i++) {
      jobs[i].keep = keep[(i + (int)r) % slots];
      jobs[i].sizes = sizes;
      jobs[i].seed = (uint64_t)r * 1000 + (uint64_t)i;
    }
    run_threads(a.threads, worker, jobs, sizeof *jobs);
  }
  for (int i = 0; i < slots; i++) {
    for (int k = 0; k < PER_THREAD / 2; k++) free(keep[i][k]);
    free(keep[i]);
  }
  double t1 = now_sec();
  uint64_t check = 0;
  for (int i = 0; i < a.threads; i++) check += jobs[i].check;
  char extra[64];
  snprintf(extra, sizeof extra, "rounds=%lld per_thread=%d", rounds, PER_THREAD);
  report("threadlife", &a, (unsigned long long)(rounds * a.threads * PER_THREAD), t1 - t0, check, extra);
  free(keep);
  free(jobs);
  free(sizes);
  return 0;
}
