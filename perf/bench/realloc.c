/* realloc: many buffers grown step by step, strings by small appends and vectors by doubling, then dropped. */
#include "common.h"

typedef struct {
  char *p;
  size_t len, cap, limit;
} buf_t;

static size_t new_limit(rng_t *r) {
  /* heavy-tailed final sizes: 256 B .. 256 KiB, most of them small */
  return (size_t)256 << rng_below(r, 11) >> rng_below(r, 3);
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  size_t nbuf = a.size ? a.size : 1000;
  long long steps = iters(&a, 1500000);
  rng_t r = rng_seed(99);
  buf_t *b = calloc(nbuf, sizeof *b);
  if (!b) die("calloc");
  unsigned long long reallocs = 0;
  uint64_t check = 0;
  double t0 = now_sec();
  for (long long s = 0; s < steps; s++) {
    size_t i = rng_below(&r, nbuf);
    buf_t *x = &b[i];
    if (!x->p) {
      x->cap = 16;
      x->p = malloc(x->cap);
      if (!x->p) die("malloc");
      x->len = 0;
      x->limit = new_limit(&r);
    }
    size_t add = 1 + rng_below(&r, 64);
    if (x->len + add > x->cap) {
      /* even buffers are strings (exact growth), odd ones vectors (doubling) */
      size_t cap = (i & 1) ? (x->cap * 2 >= x->len + add ? x->cap * 2 : x->len + add) : x->len + add;
      char *q = realloc(x->p, cap);
      if (!q) die("realloc");
      x->p = q;
      x->cap = cap;
      reallocs++;
    }
    memset(x->p + x->len, (int)s, add);
    x->len += add;
    if (x->len >= x->limit) {
      check += (unsigned char)x->p[x->len / 2];
      free(x->p);
      x->p = NULL;
    }
  }
  for (size_t i = 0; i < nbuf; i++) free(b[i].p);
  double t1 = now_sec();
  free(b);
  char extra[64];
  snprintf(extra, sizeof extra, "buffers=%zu reallocs=%llu", nbuf, reallocs);
  report("realloc", &a, (unsigned long long)steps, t1 - t0, check, extra);
  return 0;
}
