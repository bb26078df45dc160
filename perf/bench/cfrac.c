/* cfrac: millions of short-lived small bignums (8-200 B digit arrays) made and dropped in arithmetic chains, a small
 * live set, 2 objects left live at exit: the pattern of cfrac (continued-fraction factoring).
 *
 * A number is a malloc'd array of 32-bit digits behind a length word, at most MAXD digits (4 + 4 * 48 = 196 B).
 * Every operation allocates its result and the chain frees its inputs as soon as they are used, as a bignum
 * library without in-place operations does; lengths drift in a random walk, so sizes cover every small class.
 * A factor base of up to 64 numbers is refreshed now and then, and every 32 steps a number joins a list of
 * relations (as cfrac collects partial factorizations), one in four of them dropped again at random: a few
 * long-lived objects among the short-lived ones, in the same size classes. Everything is freed at the end,
 * but the two numbers of the recurrence, left allocated on purpose, as cfrac leaves its own. */
#include "common.h"

#define MAXD 48
#define BASE_MAX 64

typedef struct {
  uint32_t len;
  uint32_t d[];
} num_t;

static num_t *num_new(uint32_t len) {
  if (len < 1) len = 1;
  if (len > MAXD) len = MAXD;
  num_t *n = malloc(sizeof(num_t) + sizeof(uint32_t) * len);
  if (!n) die("malloc");
  n->len = len;
  return n;
}

/* a + b, truncated to MAXD digits */
static num_t *num_add(const num_t *a, const num_t *b) {
  uint32_t len = (a->len > b->len ? a->len : b->len) + 1;
  num_t *r = num_new(len);
  uint64_t carry = 0;
  for (uint32_t i = 0; i < r->len; i++) {
    uint64_t s = carry + (i < a->len ? a->d[i] : 0) + (i < b->len ? b->d[i] : 0);
    r->d[i] = (uint32_t)s;
    carry = s >> 32;
  }
  while (r->len > 1 && r->d[r->len - 1] == 0) r->len--; /* the allocation keeps its size */
  return r;
}

/* a * k + c, truncated to MAXD digits */
static num_t *num_mul_small(const num_t *a, uint32_t k, uint32_t c) {
  num_t *r = num_new(a->len + 1);
  uint64_t carry = c;
  for (uint32_t i = 0; i < r->len; i++) {
    uint64_t s = carry + (uint64_t)(i < a->len ? a->d[i] : 0) * k;
    r->d[i] = (uint32_t)s;
    carry = s >> 32;
  }
  while (r->len > 1 && r->d[r->len - 1] == 0) r->len--;
  return r;
}

/* a * b, schoolbook, truncated to MAXD digits */
static num_t *num_mul(const num_t *a, const num_t *b) {
  num_t *r = num_new(a->len + b->len);
  memset(r->d, 0, sizeof(uint32_t) * r->len);
  for (uint32_t i = 0; i < a->len && i < r->len; i++) {
    uint64_t carry = 0;
    for (uint32_t j = 0; j < b->len && i + j < r->len; j++) {
      uint64_t s = (uint64_t)a->d[i] * b->d[j] + r->d[i + j] + carry;
      r->d[i + j] = (uint32_t)s;
      carry = s >> 32;
    }
  }
  return r;
}

/* the low `len` digits of a: a fresh copy (a "mod" by a power of the base) */
static num_t *num_low(const num_t *a, uint32_t len) {
  if (len > a->len) len = a->len;
  num_t *r = num_new(len);
  memcpy(r->d, a->d, sizeof(uint32_t) * r->len);
  if (r->d[r->len - 1] == 0) r->d[r->len - 1] = 1;
  return r;
}

int main(int argc, char **argv) {
  args_t a = parse_args(argc, argv, 1);
  long long steps = iters(&a, 1500000);
  rng_t r = rng_seed(2718);
  num_t *base[BASE_MAX] = {0};
  num_t *p = num_new(4), *q = num_new(3);
  for (uint32_t i = 0; i < p->len; i++) p->d[i] = (uint32_t)rng_next(&r) | 1;
  for (uint32_t i = 0; i < q->len; i++) q->d[i] = (uint32_t)rng_next(&r) | 1;
  size_t nrel = 0, relcap = (size_t)(steps / 32) + 1;
  num_t **rel = xmalloc(relcap * sizeof *rel); /* the relations found: grows, a few dropped */
  uint32_t target = 8;                         /* the length the chain drifts around */
  uint64_t check = 0;
  unsigned long long allocs = 2;
  double t0 = now_sec();
  for (long long s = 0; s < steps; s++) {
    if ((s & 255) == 0) { /* the random walk of the lengths: 1..MAXD digits */
      uint64_t x = rng_next(&r);
      if ((x & 1) && target < MAXD) target++;
      else if (!(x & 1) && target > 1) target--;
    }
    uint32_t k = (uint32_t)(rng_next(&r) >> 40) | 1;
    /* p' = low(p * k + q), q' = p: three temporaries, each freed right after use */
    num_t *t1 = num_mul_small(p, k, 1);
    num_t *t2 = num_add(t1, q);
    free(t1);
    num_t *t3 = num_low(t2, target + (uint32_t)rng_below(&r, 4));
    free(t2);
    free(q);
    q = p;
    p = t3;
    allocs += 3;
    if ((s & 7) == 0) { /* a product, tested and dropped (a trial division of cfrac) */
      num_t *m = num_mul(p, q);
      num_t *low = num_low(m, 1 + (uint32_t)rng_below(&r, 6));
      check += low->d[0];
      free(m);
      free(low);
      allocs += 2;
    }
    if ((s & 4095) == 0) { /* the factor base: a small live set, refreshed at random */
      unsigned j = (unsigned)rng_below(&r, BASE_MAX);
      free(base[j]);
      base[j] = num_low(p, 1 + (uint32_t)rng_below(&r, MAXD));
      allocs++;
    }
    if ((s & 31) == 0 && nrel < relcap) { /* a relation: kept to the end, or dropped later */
      rel[nrel++] = num_low(p, 1 + (uint32_t)rng_below(&r, 12));
      allocs++;
      if ((rng_next(&r) & 3) == 0) {
        size_t j = (size_t)rng_below(&r, nrel);
        free(rel[j]);
        rel[j] = rel[--nrel];
      }
    }
    check += p->d[0];
  }
  double t1 = now_sec();
  for (unsigned j = 0; j < BASE_MAX; j++) free(base[j]);
  for (size_t j = 0; j < nrel; j++) check += rel[j]->d[0];
  for (size_t j = 0; j < nrel; j++) free(rel[j]);
  free(rel);
  char extra[96];
  snprintf(extra, sizeof extra, "allocs=%llu relations=%zu live_at_exit=2", allocs, nrel);
  report("cfrac", &a, allocs, t1 - t0, check + p->len + q->len, extra);
  return 0; /* p and q stay allocated, as cfrac leaves its last numbers */
}
