/* longrun: a long-running process that replaces a live set of 20,000 objects at random for 20M operations (8-264 B,
 * one in 32 between 1 and 9 KiB) while its size mix shifts, and records its RSS over time.
 *
 * The small sizes are drawn from a 64-byte-wide band whose start moves from 8 B up to 200 B and back over the run,
 * so the classes in use change and the blocks of the ones left behind empty slowly. The RSS is sampled from
 * /proc/self/statm every steps/200 operations and printed as "sample ..." lines at the end. */
#include "common.h"

#define NSAMPLES 200

static size_t pick_size(rng_t *r, long long s, long long steps) {
  uint64_t x = rng_next(r);
  if ((x & 31) == 0) return 1024 + (size_t)rng_below(r, 8 * 1024 + 1); /* 1 .. 9 KiB */
  /* the band's start: a triangle from 8 to 200 and back over the run */
  double f = (double)s / (double)steps;
  double tri = f < 0.5 ? 2 * f : 2 - 2 * f;
  size_t lo = 8 + (size_t)(tri * 192);
  return lo + (size_t)rng_below(r, 65); /* 8 .. 264 B */
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  size_t live = a.size ? a.size : 20000; /* -z: live objects */
  long long steps = iters(&a, 20000000);
  long long every = steps / NSAMPLES > 0 ? steps / NSAMPLES : 1;
  rng_t r = rng_seed(9001);
  void **slot = xmalloc(live * sizeof *slot);
  uint64_t check = 0;
  double t0 = now_sec();
  for (size_t i = 0; i < live; i++) {
    size_t n = pick_size(&r, 0, steps);
    slot[i] = malloc(n);
    if (!slot[i]) die("malloc");
    touch(slot[i], n);
  }
  sample_rss(0, 0);
  for (long long s = 0; s < steps; s++) {
    size_t i = rng_below(&r, live);
    check += *(unsigned char *)slot[i];
    free(slot[i]);
    size_t n = pick_size(&r, s, steps);
    slot[i] = malloc(n);
    if (!slot[i]) die("malloc");
    touch(slot[i], n);
    if ((s + 1) % every == 0) sample_rss(s + 1, (now_sec() - t0) * 1e3);
  }
  double t1 = now_sec();
  long peak_live = 0;
  for (int i = 0; i < nsamples; i++)
    if (samples[i].rss > peak_live) peak_live = samples[i].rss;
  for (size_t i = 0; i < live; i++) free(slot[i]);
  free(slot);
  print_samples();
  char extra[96];
  snprintf(extra, sizeof extra, "live=%zu rss_end_kib=%ld rss_max_sampled_kib=%ld", live, samples[nsamples - 1].rss,
           peak_live);
  report("longrun", &a, (unsigned long long)steps, t1 - t0, check, extra);
  return 0;
}
