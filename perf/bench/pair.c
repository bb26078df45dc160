/* pair: a hot malloc+free pair of one size (-z, default 16 B): the thread-local fast path. */
#include "common.h"

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  size_t size = a.size ? a.size : 16;
  /* Bigger sizes leave the fast path of some allocators: fewer iterations. */
  long long n = iters(&a, size <= 1024 ? 20000000LL : 5000000LL);
  uint64_t check = 0;
  double t0 = now_sec();
  for (long long i = 0; i < n; i++) {
    char *p = malloc(size);
    if (!p) die("malloc");
    p[0] = (char)i;
    escape(p);
    check += (uintptr_t)p & 0xfff;
    free(p);
  }
  double t1 = now_sec();
  char extra[64];
  snprintf(extra, sizeof extra, "size=%zu", size);
  report("pair", &a, (unsigned long long)n, t1 - t0, check, extra);
  return 0;
}
