/* falseshare: small objects allocated by one thread, handed to the others, freed, and then reallocated and written hard. */
#include "common.h"

/* An allocator that gives a thread back memory that shares a cache line with
 * another thread's objects makes every write below a cache-line transfer. */
typedef struct {
  char *first; /* allocated by the main thread, freed by this one */
  long long rounds;
  long long writes;
  size_t size;
  uint64_t check;
} job_t;

static void *worker(void *arg) {
  job_t *j = arg;
  free(j->first);
  uint64_t check = 0;
  for (long long r = 0; r < j->rounds; r++) {
    volatile char *p = malloc(j->size);
    if (!p) die("malloc");
    for (long long w = 0; w < j->writes; w++)
      for (size_t b = 0; b < j->size; b++) p[b]++;
    check += (unsigned char)p[0];
    free((void *)p);
  }
  j->check = check;
  return NULL;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 2);
  size_t size = a.size ? a.size : 8;
  long long rounds = iters(&a, 5000);
  job_t *jobs = calloc((size_t)a.threads, sizeof *jobs);
  if (!jobs) die("calloc");
  /* allocated back to back by one thread: neighbours in the same cache lines */
  for (int i = 0; i < a.threads; i++) {
    jobs[i].first = xmalloc(size);
    jobs[i].rounds = rounds;
    jobs[i].writes = 5000;
    jobs[i].size = size;
  }
  double t0 = now_sec();
  run_threads(a.threads, worker, jobs, sizeof *jobs);
  double t1 = now_sec();
  uint64_t check = 0;
  for (int i = 0; i < a.threads; i++) check += jobs[i].check;
  char extra[64];
  snprintf(extra, sizeof extra, "size=%zu writes=%lld", size, jobs[0].writes);
  report("falseshare", &a, (unsigned long long)(rounds * a.threads), t1 - t0, check, extra);
  free(jobs);
  return 0;
}
