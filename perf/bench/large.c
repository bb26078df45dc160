/* large: a few blocks of 1-32 MiB replaced at random, each written page by page. */
#include "common.h"

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  size_t live = a.size ? a.size : 8;
  long long steps = iters(&a, 150);
  rng_t r = rng_seed(1234);
  char **slot = calloc(live, sizeof *slot);
  if (!slot) die("calloc");
  uint64_t check = 0;
  unsigned long long bytes = 0;
  double t0 = now_sec();
  for (long long s = 0; s < steps; s++) {
    size_t i = rng_below(&r, live);
    if (slot[i]) {
      check += (unsigned char)slot[i][0];
      free(slot[i]);
    }
    size_t base = (size_t)1 << (20 + rng_below(&r, 5)); /* 1, 2, 4, 8 or 16 MiB */
    size_t n = base + rng_below(&r, base);              /* up to twice that */
    char *p = malloc(n);
    if (!p) die("malloc");
    for (size_t off = 0; off < n; off += 4096) p[off] = (char)s;
    p[n - 1] = 1;
    slot[i] = p;
    bytes += n;
  }
  for (size_t i = 0; i < live; i++) free(slot[i]);
  double t1 = now_sec();
  free(slot);
  char extra[64];
  snprintf(extra, sizeof extra, "live=%zu mib=%llu", live, bytes >> 20);
  report("large", &a, (unsigned long long)steps, t1 - t0, check, extra);
  return 0;
}
