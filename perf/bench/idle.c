/* idle: a burst of small and medium objects (200 MB at scale 1), almost all freed (1% kept, in runs of 256
 * consecutive objects, as a server keeps a few sessions), then an idle
 * phase of -o milliseconds (default 3000) with only a few fast-path malloc/free calls, while the RSS is sampled
 * every 50 ms: does the allocator give the memory back when the program goes idle?
 *
 * Prints the RSS curve as "sample ops=... ms=... rss_kib=..." lines (ops: the objects live; ms since the idle
 * phase began, negative during the burst and the frees, which are sampled 20 times each) and, on the result line, rss_burst_kib (after the burst), rss_freed_kib (right after
 * the frees), rss_idle_1s_kib (the first sample at least 1 s into the idle phase) and rss_idle_end_kib. */
#include "common.h"

#define STEP_MS 50

static size_t pick_size(rng_t *r) {
  uint64_t x = rng_next(r);
  if ((x & 7) == 0) return 512 + (size_t)rng_below(r, 16 * 1024 - 512 + 1); /* medium: 512 B .. 16 KiB */
  return 16 + (size_t)rng_below(r, 497);                                    /* small: 16 .. 512 B */
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  long idle_ms = a.mode ? atol(a.mode) : 3000;
  if (idle_ms < STEP_MS) idle_ms = STEP_MS;
  size_t burst = (size_t)(200e6 * a.scale);
  if (a.n > 0) burst = (size_t)a.n; /* -n: burst bytes */
  rng_t r = rng_seed(404);
  size_t cap = burst / 16 + 16, count = 0, bytes = 0;
  void **obj = xmalloc(cap * sizeof *obj);
  double t0 = now_sec();
  size_t next_sample = 0; /* the burst and the frees are sampled too, 20 times each */
  while (bytes < burst && count < cap) {
    if (bytes >= next_sample) {
      sample_rss((long long)count, (now_sec() - t0) * 1e3);
      next_sample += burst / 20;
    }
    size_t n = pick_size(&r);
    char *p = malloc(n);
    if (!p) die("malloc");
    memset(p, (int)(count & 255), n); /* every page of it resident */
    obj[count++] = p;
    bytes += n;
  }
  long rss_burst = rss_kib();
  uint64_t check = 0;
  size_t kept = 0;
  for (size_t i = 0; i < count; i++) { /* keep 1% in runs of 256 consecutive objects, 1 run in 100 */
    if ((i / 256) % 100 == 0) {
      obj[kept++] = obj[i];
      continue;
    }
    check += *(unsigned char *)obj[i];
    free(obj[i]);
    if (i % (count / 20 + 1) == 0) sample_rss((long long)(count - i), (now_sec() - t0) * 1e3);
  }
  long rss_freed = rss_kib();
  double t1 = now_sec();
  double idle0 = now_sec();
  for (int i = 0; i < nsamples; i++) samples[i].ms -= (idle0 - t0) * 1e3; /* the burst's times are negative */
  sample_rss(kept, 0);
  long rss_1s = -1;
  for (long ms = STEP_MS; ms <= idle_ms; ms += STEP_MS) {
    double due = idle0 + (double)ms * 1e-3, left = due - now_sec();
    if (left > 0) sleep_ms((long)(left * 1e3));
    for (int k = 0; k < 16; k++) { /* a few fast-path calls, as an idle server's timer would make */
      static const size_t sz[4] = {16, 48, 200, 1000};
      char *p = malloc(sz[k & 3]);
      if (!p) die("malloc");
      p[0] = (char)k;
      check += (unsigned char)p[0];
      free(p);
    }
    double at = (now_sec() - idle0) * 1e3;
    sample_rss(kept, at);
    if (rss_1s < 0 && at >= 1000) rss_1s = samples[nsamples - 1].rss;
  }
  for (size_t i = 0; i < kept; i++) free(obj[i]);
  free(obj);
  print_samples();
  char extra[192];
  snprintf(extra, sizeof extra,
           "burst_mb=%.0f kept=%zu rss_burst_kib=%ld rss_freed_kib=%ld rss_idle_1s_kib=%ld "
           "rss_idle_end_kib=%ld idle_ms=%ld",
           (double)bytes / 1e6, kept, rss_burst, rss_freed, rss_1s, samples[nsamples - 1].rss, idle_ms);
  report("idle", &a, (unsigned long long)count, t1 - t0, check, extra);
  return 0;
}
