/* prodcons: producer/consumer thread pairs (-t threads, in pairs); every object is freed by the other thread. */
#include "common.h"
#include <sched.h>
#include <stdatomic.h>

#define RING 1024 /* a power of two */

typedef struct {
  _Alignas(64) _Atomic size_t head; /* next slot to read (consumer) */
  _Alignas(64) _Atomic size_t tail; /* next slot to write (producer) */
  _Alignas(64) void *slot[RING];
  long long count;
  uint64_t seed, check;
  const size_table_t *sizes;
} pair_t;

static inline void spin(unsigned *k) {
  if (++*k < 64) __builtin_ia32_pause();
  else {
    *k = 0;
    sched_yield();
  }
}

/* Indices are published in batches of BATCH, so that the ring's own cache
 * lines move between the threads once per batch, not once per object: what
 * is left is the objects themselves and the allocator's cross-thread frees. */
#define BATCH 32

static void *producer(void *arg) {
  pair_t *q = arg;
  rng_t r = rng_seed(q->seed);
  size_t tail = 0, head = 0;
  for (long long i = 0; i < q->count; i++) {
    size_t n = size_pick(q->sizes, &r);
    char *p = malloc(n);
    if (!p) die("malloc");
    touch(p, n);
    unsigned k = 0;
    while (tail - head >= RING) {
      head = atomic_load_explicit(&q->head, memory_order_acquire);
      if (tail - head >= RING) spin(&k);
    }
    q->slot[tail & (RING - 1)] = p;
    tail++;
    if ((tail & (BATCH - 1)) == 0 || i + 1 == q->count) atomic_store_explicit(&q->tail, tail, memory_order_release);
  }
  return NULL;
}

static void *consumer(void *arg) {
  pair_t *q = arg;
  size_t head = 0, tail = 0;
  uint64_t check = 0;
  for (long long i = 0; i < q->count; i++) {
    unsigned k = 0;
    while (head == tail) {
      tail = atomic_load_explicit(&q->tail, memory_order_acquire);
      if (head == tail) spin(&k);
    }
    char *p = q->slot[head & (RING - 1)];
    head++;
    if ((head & (BATCH - 1)) == 0 || i + 1 == q->count) atomic_store_explicit(&q->head, head, memory_order_release);
    check += (unsigned char)p[0];
    free(p);
  }
  q->check = check;
  return NULL;
}

static void *role(void *arg) {
  /* even thread index: producer of pair i/2; odd: its consumer */
  void **pa = arg;
  return ((uintptr_t)pa[1] & 1) ? consumer(pa[0]) : producer(pa[0]);
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 2);
  int pairs = a.threads / 2 < 1 ? 1 : a.threads / 2;
  a.threads = pairs * 2;
  long long count = iters(&a, 1000000) / pairs; /* objects per pair; total fixed */
  size_table_t *sizes = xmalloc(sizeof *sizes);
  size_table_small(sizes, 3);
  pair_t *q = aligned_alloc(64, sizeof(pair_t) * (size_t)pairs);
  if (!q) die("aligned_alloc");
  memset(q, 0, sizeof(pair_t) * (size_t)pairs);
  void *(*args)[2] = xmalloc(sizeof(*args) * (size_t)a.threads);
  for (int i = 0; i < pairs; i++) {
    q[i].count = count;
    q[i].seed = 77 + (uint64_t)i;
    q[i].sizes = sizes;
  }
  for (int t = 0; t < a.threads; t++) {
    args[t][0] = &q[t / 2];
    args[t][1] = (void *)(uintptr_t)t;
  }
  double t0 = now_sec();
  run_threads(a.threads, role, args, sizeof *args);
  double t1 = now_sec();
  uint64_t check = 0;
  for (int i = 0; i < pairs; i++) check += q[i].check;
  char extra[64];
  snprintf(extra, sizeof extra, "pairs=%d", pairs);
  report("prodcons", &a, (unsigned long long)(count * pairs), t1 - t0, check, extra);
  free(args);
  free(q);
  free(sizes);
  return 0;
}
