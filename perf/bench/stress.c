/* stress: the pattern of mimalloc's test-stress, written here from its description: many threads
 * allocate objects of random sizes with random lifetimes, hand some to each other through a shared
 * exchange table, and are retired and started again in rounds while part of what they left survives
 * into the next round.
 *
 *   stress [-t threads] [-z load] [-n rounds] [-s scale] [-o rounds]
 *
 * Defaults: 8 threads, load 200, 50 rounds times the scale: the "8 threads at scale 200".
 * In a round, thread i (0-based) makes 100 * load * (i % 8 + 1) short-lived allocations and half as
 * many long-lived ones, then frees all it still holds and exits. Each step:
 *   - allocates: with 1/2 (always once the long-lived quota is spent) a short-lived object of
 *     8 << (0..4) bytes into its working array, else a long-lived one of 8 << (0..6) bytes kept to
 *     the thread's end;
 *     1 object in 100 is 100 times that size, and of those 1 in 100 is 10,000 times it and 1 in 10
 *     1,000 times (so now and then a few hundred KiB or MiB, which most allocators map directly);
 *   - frees a random slot of its working array with probability 2/3;
 *   - with probability 1/4 swaps a random slot of its working array with a random slot of the shared
 *     exchange table of 1,000 pointers (atomic exchange): objects change threads, and are freed by
 *     a thread other than the one that allocated them, possibly in a later round.
 * Objects come from calloc, are checked to be zero, filled with a pattern and checked again when freed.
 * Between rounds the main thread frees about half of the exchange table (all of it after the last).
 * The threads' working arrays grow by realloc in steps of 100,000 pointers.
 *
 * The time it takes in the kernel is the point (mapping and unmapping of large objects and of
 * emptied memory, page faults of memory given back and touched again): the harness reports user and
 * system time apart. With -o rounds, a line per round on stderr: its minor page faults, system and
 * user time, and the RSS after it. */
#include "common.h"

#include <stdatomic.h>
#include <sys/resource.h>

#define EXCHANGE 1000
#define WORD sizeof(uintptr_t)
static const uintptr_t COOKIE = 0x5bd1e9955bd1e995ull;

static _Atomic(uintptr_t *) exchange_table[EXCHANGE];
static long load_factor = 200;
static _Atomic unsigned long long total_allocs, total_checked;

typedef struct {
  int index;
  uint64_t seed;
} worker_t;

/* An object of `words` words (1 in 100 boosted), zero-checked and filled with a pattern whose first
 * word gives the length back at free. */
static uintptr_t *obj_new(size_t words, rng_t *r) {
  if (rng_below(r, 100) == 0) {
    uint64_t b = rng_below(r, 1000);
    words *= b < 10 ? 10000 : b < 110 ? 1000 : 100;
  }
  uintptr_t *p = calloc(words, WORD);
  if (!p) die("calloc");
  for (size_t i = 0; i < words; i++) {
    if (p[i] != 0) {
      fprintf(stderr, "stress: calloc returned non-zero memory at %p word %zu\n", (void *)p, i);
      abort();
    }
    p[i] = (words - i) ^ COOKIE;
  }
  return p;
}

/* Checks the pattern and frees; returns the words checked. */
static size_t obj_free(uintptr_t *p) {
  if (!p) return 0;
  size_t words = (size_t)(p[0] ^ COOKIE);
  for (size_t i = 0; i < words; i++) {
    if ((p[i] ^ COOKIE) != words - i) {
      fprintf(stderr, "stress: object %p corrupted at word %zu\n", (void *)p, i);
      abort();
    }
  }
  free(p);
  return words;
}

static void *worker(void *arg) {
  worker_t *w = arg;
  rng_t r = rng_seed(w->seed);
  size_t todo = (size_t)(100 * load_factor * (w->index % 8 + 1));
  size_t keep = todo / 2, kept = 0, live = 0, cap = 0;
  uintptr_t **longlived = calloc(keep + 1, sizeof *longlived);
  uintptr_t **work = NULL;
  unsigned long long allocs = 0, checked = 0;
  if (!longlived) die("calloc");
  while (todo > 0 || keep > 0) {
    if (keep == 0 || (todo > 0 && (rng_next(&r) & 1))) {
      if (live == cap) {
        cap += 100000;
        work = realloc(work, cap * sizeof *work);
        if (!work) die("realloc");
      }
      work[live++] = obj_new((size_t)1 << rng_below(&r, 5), &r);
      todo--;
    } else {
      longlived[kept++] = obj_new((size_t)1 << rng_below(&r, 7), &r);
      keep--;
    }
    allocs++;
    if (rng_below(&r, 3) < 2 && live > 0) {
      size_t i = (size_t)rng_below(&r, live);
      checked += obj_free(work[i]);
      work[i] = NULL;
    }
    if (rng_below(&r, 4) == 0 && live > 0) {
      size_t i = (size_t)rng_below(&r, live);
      work[i] = atomic_exchange(&exchange_table[rng_below(&r, EXCHANGE)], work[i]);
    }
  }
  for (size_t i = 0; i < kept; i++) checked += obj_free(longlived[i]);
  for (size_t i = 0; i < live; i++) checked += obj_free(work[i]);
  free(longlived);
  free(work);
  atomic_fetch_add(&total_allocs, allocs);
  atomic_fetch_add(&total_checked, checked);
  return NULL;
}

static double tv_sec(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec * 1e-6; }

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 8);
  int per_round = a.mode && strcmp(a.mode, "rounds") == 0;
  struct rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  if (a.size > 0) load_factor = (long)a.size;
  long long rounds = iters(&a, 50);
  worker_t *ws = xmalloc(sizeof *ws * (size_t)a.threads);
  rng_t main_rng = rng_seed(200);
  unsigned long long checked_main = 0;
  double t0 = now_sec();
  for (long long n = 0; n < rounds; n++) {
    for (int i = 0; i < a.threads; i++) ws[i] = (worker_t){i, (uint64_t)(n * 1000 + i + 1)};
    run_threads(a.threads, worker, ws, sizeof *ws);
    for (int i = 0; i < EXCHANGE; i++) {
      if (n + 1 == rounds || (rng_next(&main_rng) & 1))
        checked_main += obj_free(atomic_exchange(&exchange_table[i], NULL));
    }
    if (per_round) {
      getrusage(RUSAGE_SELF, &after);
      fprintf(stderr, "round %lld minflt=%ld sys=%.3f user=%.3f rss_kib=%ld\n", n + 1,
              after.ru_minflt - before.ru_minflt, tv_sec(after.ru_stime) - tv_sec(before.ru_stime),
              tv_sec(after.ru_utime) - tv_sec(before.ru_utime), rss_kib());
      before = after;
    }
  }
  double t1 = now_sec();
  free(ws);
  char extra[96];
  snprintf(extra, sizeof extra, "rounds=%lld load=%ld", rounds, load_factor);
  report("stress", &a, atomic_load(&total_allocs), t1 - t0, atomic_load(&total_checked) + checked_main, extra);
  return 0;
}
