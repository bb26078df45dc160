/* server: worker threads (-t) replace random objects of their own live set and hand one in 8 to another thread. */
#include "common.h"
#include <stdatomic.h>

/* A mailbox is a lock-free stack threaded through the objects themselves
 * (every object is at least 16 bytes); the owner takes all of it at once. */
typedef struct {
  _Alignas(64) _Atomic(void *) top;
  long long steps;
  size_t live;
  uint64_t seed, check;
  unsigned long long sent, received;
} worker_t;

static worker_t *workers;
static int nworkers;
static const size_table_t *sizes;
static pthread_barrier_t done_sending;

static void post(worker_t *w, void *p) {
  void *old = atomic_load_explicit(&w->top, memory_order_relaxed);
  do *(void **)p = old;
  while (!atomic_compare_exchange_weak_explicit(&w->top, &old, p, memory_order_release, memory_order_relaxed));
}

static void *new_object(rng_t *r) {
  size_t n = size_pick(sizes, r);
  if (n < 16) n = 16;
  void *p = malloc(n);
  if (!p) die("malloc");
  touch(p, n);
  return p;
}

static void *worker(void *arg) {
  worker_t *w = arg;
  int self = (int)(w - workers);
  rng_t r = rng_seed(w->seed);
  void **slot = xmalloc(w->live * sizeof *slot);
  uint64_t check = 0;
  for (size_t i = 0; i < w->live; i++) slot[i] = new_object(&r);
  for (long long s = 0; s < w->steps; s++) {
    size_t i = rng_below(&r, w->live);
    void *old = slot[i];
    slot[i] = new_object(&r);
    if ((rng_next(&r) & 7) == 0) { /* hand the old object to another worker */
      int to = (self + 1 + (int)rng_below(&r, (uint64_t)nworkers - 1)) % nworkers;
      post(&workers[to], old);
      w->sent++;
    } else {
      check += ((unsigned char *)old)[8];
      free(old);
    }
    if ((s & 63) == 63) { /* take the mail: each object received replaces one of ours */
      void *p = atomic_exchange_explicit(&w->top, NULL, memory_order_acquire);
      while (p) {
        void *next = *(void **)p;
        size_t j = rng_below(&r, w->live);
        check += ((unsigned char *)slot[j])[8];
        free(slot[j]);
        slot[j] = p;
        w->received++;
        p = next;
      }
    }
  }
  pthread_barrier_wait(&done_sending);
  void *p = atomic_exchange_explicit(&w->top, NULL, memory_order_acquire);
  while (p) {
    void *next = *(void **)p;
    free(p);
    w->received++;
    p = next;
  }
  for (size_t i = 0; i < w->live; i++) free(slot[i]);
  free(slot);
  w->check = check;
  return NULL;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 2);
  if (a.threads < 2) a.threads = 2;
  nworkers = a.threads;
  size_t live = a.size ? a.size : 20000;
  long long steps = iters(&a, 2000000);
  size_table_t *st = xmalloc(sizeof *st);
  size_table_heavy(st, 11);
  sizes = st;
  workers = aligned_alloc(64, sizeof(worker_t) * (size_t)nworkers);
  if (!workers) die("aligned_alloc");
  memset(workers, 0, sizeof(worker_t) * (size_t)nworkers);
  for (int i = 0; i < nworkers; i++) {
    workers[i].steps = steps;
    workers[i].live = live;
    workers[i].seed = 500 + (uint64_t)i;
  }
  pthread_barrier_init(&done_sending, NULL, (unsigned)nworkers);
  double t0 = now_sec();
  run_threads(nworkers, worker, workers, sizeof *workers);
  double t1 = now_sec();
  uint64_t check = 0;
  unsigned long long sent = 0, received = 0;
  for (int i = 0; i < nworkers; i++) {
    check += workers[i].check;
    sent += workers[i].sent;
    received += workers[i].received;
  }
  if (sent != received) {
    fprintf(stderr, "server: sent %llu received %llu\n", sent, received);
    return 1;
  }
  char extra[64];
  snprintf(extra, sizeof extra, "live=%zu handed=%llu", live, sent);
  report("server", &a, (unsigned long long)(steps * nworkers), t1 - t0, check, extra);
  pthread_barrier_destroy(&done_sending);
  free(workers);
  free(st);
  return 0;
}
