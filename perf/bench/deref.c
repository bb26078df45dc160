/* deref: sm_deref of a handle against a plain pointer load; -o hot: 8 objects, -o miss: 1,000,000 visited in random order.
 * Timed by the process's CPU clock: costs per operation, not inflated by waiting for a CPU. */
#include "common.h"
#include "slotmalloc.h"

#define barrier() __asm__ volatile("" : : : "memory")

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  const char *mode = a.mode ? a.mode : "hot";
  int hot = strcmp(mode, "hot") == 0;
  if (!hot && strcmp(mode, "miss") != 0) usage_die(argv[0]);
  size_t count = hot ? 8 : (a.size ? a.size : 1000000);
  long long visits = hot ? iters(&a, 100000000LL) : iters(&a, 4) * (long long)count; /* miss: -n/-s count passes */
  sm_handle_t *h = xmalloc(count * sizeof *h);
  uint64_t **p = xmalloc(count * sizeof *p);
  for (size_t i = 0; i < count; i++) {
    h[i] = sm_halloc(32);
    if (!h[i]) die("sm_halloc");
    p[i] = sm_deref(h[i]);
    if (!p[i]) die("sm_deref of a fresh handle");
    *p[i] = i;
  }
  uint32_t *order = NULL;
  if (!hot) { /* a random permutation (Fisher-Yates) */
    rng_t r = rng_seed(31337);
    order = xmalloc(count * sizeof *order);
    for (size_t i = 0; i < count; i++) order[i] = (uint32_t)i;
    for (size_t i = count - 1; i > 0; i--) {
      size_t j = rng_below(&r, i + 1);
      uint32_t t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
  }
  uint64_t sum_h = 0, sum_p = 0;
  double th = 0, tp = 0;
  /* Rounds alternate the two loops so that drift hits both alike.
   * hot: 4 rounds of visits/4; miss: one pass over all objects per round. */
  int rounds = hot ? 4 : (int)(visits / (long long)count);
  long long per_round = hot ? visits / 4 : (long long)count;
  for (int round = 0; round < rounds; round++) {
    double t0 = cpu_sec();
    if (hot) {
      for (long long i = 0; i < per_round; i++) {
        sum_h += *(uint64_t *)sm_deref(h[i & 7]);
        barrier();
      }
    } else {
      for (long long i = 0; i < per_round; i++) {
        sum_h += *(uint64_t *)sm_deref(h[order[i]]);
        barrier();
      }
    }
    double t1 = cpu_sec();
    if (hot) {
      for (long long i = 0; i < per_round; i++) {
        sum_p += *p[i & 7];
        barrier();
      }
    } else {
      for (long long i = 0; i < per_round; i++) {
        sum_p += *p[order[i]];
        barrier();
      }
    }
    double t2 = cpu_sec();
    th += t1 - t0;
    tp += t2 - t1;
  }
  if (sum_h != sum_p) {
    fprintf(stderr, "deref: sums differ (%llu vs %llu)\n", (unsigned long long)sum_h, (unsigned long long)sum_p);
    return 1;
  }
  long long done = per_round * rounds;
  for (size_t i = 0; i < count; i++)
    if (sm_hfree(h[i]) != 0) die("sm_hfree");
  int stale_ok = sm_deref(h[0]) == NULL;
  free(order);
  free(p);
  free(h);
  char extra[160];
  snprintf(extra, sizeof extra, "mode=%s objects=%zu ns_handle=%.3f ns_pointer=%.3f stale_ok=%d", mode, count,
           th / (double)done * 1e9, tp / (double)done * 1e9, stale_ok);
  report(hot ? "deref-hot" : "deref-miss", &a, (unsigned long long)done, th + tp, sum_h, extra);
  return 0;
}
