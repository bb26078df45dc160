/* test_peers.c: what other allocators' test suites check, rewritten for
 * slotmalloc: glibc's malloc/tst-malloc-thread-exit, tst-malloc-too-large,
 * tst-memalign, tst-posix_memalign, tst-realloc, tst-calloc and
 * tst-malloc-usable, and mimalloc's test/test-stress. Each scenario runs in a
 * forked child under a watchdog (watchdog.h): a deadlock fails with
 * "deadlock/hang in <scenario>". Linked with libslotmalloc.so and run a second
 * time under LD_PRELOAD, like the other API tests.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "testutil.h"
#include "watchdog.h"

/* glibc's tests expect these answers; the compiler must not know the sizes */
#pragma GCC diagnostic ignored "-Walloc-size-larger-than="

/* ==== glibc tst-malloc-thread-exit ================================================ */
/* Outer threads start and join rounds of inner threads at a barrier: half of
 * them allocate before the barrier and free after it, half allocate and free
 * after it, then all exit at once, so heaps are torn down while others are
 * being set up. */
typedef struct {
  pthread_barrier_t *barrier;
  int alloc_first;
  int id;
} inner_t;

static void *inner_thread(void *arg) {
  inner_t *in = arg;
  unsigned char *p = NULL;
  size_t size = 16 + (size_t)(in->id % 7) * 24;
  if (in->alloc_first) {
    p = malloc(size);
    if (!p) return (void *)(intptr_t)wd_fail("thread_exit: malloc(%zu) before the barrier failed", size);
    memset(p, in->id & 0xff, size);
  }
  pthread_barrier_wait(in->barrier);
  if (!in->alloc_first) {
    p = malloc(size);
    if (!p) return (void *)(intptr_t)wd_fail("thread_exit: malloc(%zu) after the barrier failed", size);
    memset(p, in->id & 0xff, size);
  }
  for (size_t i = 0; i < size; i++)
    if (p[i] != (unsigned char)(in->id & 0xff))
      return (void *)(intptr_t)wd_fail("thread_exit: object of thread %d clobbered at offset %zu", in->id, i);
  free(tu_opaque(p));
  return NULL;
}

enum { INNER = 4, OUTER = 2 };
typedef struct {
  double until;
  int max_rounds, min_rounds;
} texit_t;

static void *outer_thread(void *arg) {
  texit_t *t = arg;
  static atomic_int next_id;
  for (int round = 0; round < t->max_rounds && !wd_failed(); round++) {
    if (round >= t->min_rounds && tu_now() > t->until) break;
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, INNER + 1);
    pthread_t th[INNER];
    inner_t in[INNER];
    for (int i = 0; i < INNER; i++) {
      in[i] = (inner_t){.barrier = &barrier, .alloc_first = !(i & 1), .id = atomic_fetch_add(&next_id, 1)};
      if (pthread_create(&th[i], NULL, inner_thread, &in[i]) != 0)
        return (void *)(intptr_t)wd_fail("thread_exit: pthread_create failed in round %d", round);
    }
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < INNER; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    wd_count(0, INNER);
  }
  return NULL;
}

static int thread_exit(void *arg) {
  (void)arg;
  texit_t t = {.until = tu_now() + 4, .max_rounds = 3000, .min_rounds = 100};
  wd_phase("rounds of inner threads: counter 0 = inner threads joined");
  pthread_t th[OUTER];
  for (int i = 0; i < OUTER; i++)
    if (pthread_create(&th[i], NULL, outer_thread, &t) != 0) return wd_fail("pthread_create failed");
  for (int i = 0; i < OUTER; i++) pthread_join(th[i], NULL);
  fprintf(stderr, "glibc_malloc_thread_exit: %ld inner threads\n", wd_get(0));
  return wd_failed();
}

/* glibc tst-malloc-thread-exit: 2 threads each run up to 3000 rounds (at
 * least 100; past that 4 s at most) of 4 inner threads meeting at a barrier,
 * two allocating before it and two after, each checking and freeing its
 * object and exiting. */
Test(peers, glibc_malloc_thread_exit, .timeout = 120) { WD_RUN("glibc_malloc_thread_exit", 20, thread_exit, NULL); }

/* ==== glibc tst-malloc-too-large ================================================== */
typedef struct {
  long failures;
  char first[256];
} tl_t;

static tl_t *tl;

#define TL_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      if (tl->failures++ == 0) snprintf(tl->first, sizeof tl->first, __VA_ARGS__); \
    }                                                                              \
  } while (0)

/* A small successful malloc/free first: a freshly freed block is what an
 * overflowing size computation would hand back. */
static void tl_setup(void) {
  void *volatile p = malloc(16);
  if (!p) {
    TL_CHECK(0, "malloc(16) failed");
  }
  free(p);
  errno = 0;
}

static void tl_plain(size_t size) {
  void *p;
  tl_setup();
  p = malloc(tu_hide(size));
  TL_CHECK(p == NULL && errno == ENOMEM, "malloc(%#zx): %p, errno %d", size, p, errno);

  void *old = malloc(16);
  tl_setup();
  p = realloc(old, tu_hide(size));
  TL_CHECK(p == NULL && errno == ENOMEM, "realloc(p, %#zx): %p, errno %d", size, p, errno);
  free(p ? p : old);

  for (size_t n = 1; n <= 8 && size % n == 0; n *= 2) {
    tl_setup();
    p = calloc(n, tu_hide(size / n));
    TL_CHECK(p == NULL && errno == ENOMEM, "calloc(%zu, %#zx): %p, errno %d", n, size / n, p, errno);
    tl_setup();
    p = calloc(tu_hide(size / n), n);
    TL_CHECK(p == NULL && errno == ENOMEM, "calloc(%#zx, %zu): %p, errno %d", size / n, n, p, errno);
    old = malloc(16);
    tl_setup();
    p = reallocarray(old, n, tu_hide(size / n));
    TL_CHECK(p == NULL && errno == ENOMEM, "reallocarray(p, %zu, %#zx): %p, errno %d", n, size / n, p, errno);
    free(p ? p : old);
    old = malloc(16);
    tl_setup();
    p = reallocarray(old, tu_hide(size / n), n);
    TL_CHECK(p == NULL && errno == ENOMEM, "reallocarray(p, %#zx, %zu): %p, errno %d", size / n, n, p, errno);
    free(p ? p : old);
  }
}

static void tl_aligned(size_t size) {
  /* every power of two an alignment can be, up to 2^63 */
  for (size_t align = 1; align != 0; align <<= 1) {
    void *p;
    tl_setup();
    p = memalign(tu_hide(align), tu_hide(size));
    TL_CHECK(p == NULL && errno == ENOMEM, "memalign(%#zx, %#zx): %p, errno %d (want ENOMEM)", align, size, p, errno);
    if (align % sizeof(void *) == 0) {
      void *out = NULL;
      tl_setup();
      int rc = posix_memalign(&out, tu_hide(align), tu_hide(size));
      TL_CHECK(rc == ENOMEM && out == NULL, "posix_memalign(&p, %#zx, %#zx): %d, p %p (want ENOMEM, p untouched)",
               align, size, rc, out);
    }
    if (size % align == 0) {
      tl_setup();
      p = aligned_alloc(tu_hide(align), tu_hide(size));
      TL_CHECK(p == NULL && errno == ENOMEM, "aligned_alloc(%#zx, %#zx): %p, errno %d", align, size, p, errno);
    }
  }
  void *p;
  tl_setup();
  p = valloc(tu_hide(size));
  TL_CHECK(p == NULL && errno == ENOMEM, "valloc(%#zx): %p, errno %d", size, p, errno);
  tl_setup();
  p = pvalloc(tu_hide(size));
  TL_CHECK(p == NULL && errno == ENOMEM, "pvalloc(%#zx): %p, errno %d", size, p, errno);
}

static int too_large(void *arg) {
  (void)arg;
  static tl_t state;
  tl = &state;
  /* no machine has more than 50 address bits: nothing past that can succeed */
  struct rlimit rl = {.rlim_cur = ((rlim_t)1 << 50) - 1, .rlim_max = ((rlim_t)1 << 50) - 1};
  setrlimit(RLIMIT_AS, &rl);
  const size_t span = ((size_t)1 << 14) - 1;
  wd_phase("sizes SIZE_MAX - i: counter 0 = sizes done");
  for (size_t i = 0; i <= span; i++) {
    tl_plain(SIZE_MAX - i);
    tl_aligned(SIZE_MAX - i);
    wd_count(0, 1);
  }
  wd_phase("sizes PTRDIFF_MAX + i: counter 0 = sizes done");
  for (size_t i = 1; i <= span; i++) {
    tl_plain((size_t)PTRDIFF_MAX + i);
    tl_aligned((size_t)PTRDIFF_MAX + i);
    wd_count(0, 1);
  }
  wd_phase("sizes with the top 14 bits set: counter 0 = sizes done");
  for (size_t top = span; top >= 1; top--) {
    size_t low = ((size_t)1 << 50) - 1;
    tl_plain(top << 50 | low);
    tl_aligned(top << 50 | low);
    tl_plain(top << 50);
    tl_aligned(top << 50);
    wd_count(0, 2);
  }
  if (tl->failures) return wd_fail("%ld calls did not fail with ENOMEM; the first: %s", tl->failures, tl->first);
  return 0;
}

/* glibc tst-malloc-too-large: under RLIMIT_AS 2^50, every size in
 * (SIZE_MAX - 2^14, SIZE_MAX], (PTRDIFF_MAX, PTRDIFF_MAX + 2^14) and k * 2^50
 * (and k * 2^50 + 2^50 - 1) for k < 2^14, after a small malloc/free, fails
 * with ENOMEM in malloc, realloc, calloc and reallocarray (the size split into
 * 1..8 factors), and in memalign, posix_memalign and aligned_alloc with every
 * power-of-two alignment up to 2^63 (an alignment of 2^63 is valid: ENOMEM,
 * not EINVAL; the project's bug 8), valloc and pvalloc. */
Test(peers, glibc_malloc_too_large, .timeout = 120) { WD_RUN("glibc_malloc_too_large", 30, too_large, NULL); }

/* ==== glibc tst-memalign ========================================================= */
static int memalign_case(void *arg) {
  (void)arg;
  size_t page = (size_t)getpagesize();
  void *p;
  errno = 0;
  p = memalign(sizeof(void *), tu_hide(SIZE_MAX));
  if (p || errno != ENOMEM) return wd_fail("memalign(8, SIZE_MAX): %p, errno %d (want NULL, ENOMEM)", p, errno);
  errno = 0;
  p = memalign(page, tu_hide(-page)); /* the size rounded up to the alignment overflows */
  if (p || errno != ENOMEM) return wd_fail("memalign(page, -page): %p, errno %d (want NULL, ENOMEM)", p, errno);
  errno = 0;
  p = memalign(tu_hide(SIZE_MAX), page); /* an impossible alignment */
  if (p || errno != EINVAL) return wd_fail("memalign(SIZE_MAX, page): %p, errno %d (want NULL, EINVAL)", p, errno);
  p = memalign(sizeof(void *), 0);
  if (!p) return wd_fail("memalign(8, 0) failed (glibc gives a unique pointer)");
  free(p);
  p = memalign(256, 10);
  if (!p) return wd_fail("memalign(256, 10) failed");
  if ((uintptr_t)p & 255) return wd_fail("memalign(256, 10) gave %p, not 256-aligned", p);
  memset(p, 1, 10);
  free(p);
  /* and the alignments at the very top (the project's bug 8) */
  errno = 0;
  p = memalign(tu_hide((size_t)1 << 63), 64);
  if (p || errno != ENOMEM)
    return wd_fail("memalign(2^63, 64): %p, errno %d (want NULL, ENOMEM: 2^63 is a valid alignment)", p, errno);
  errno = 0;
  p = memalign(tu_hide(((size_t)1 << 63) + 1), 64);
  if (p || errno != EINVAL) return wd_fail("memalign(2^63 + 1, 64): %p, errno %d (want NULL, EINVAL)", p, errno);
  /* an alignment that is not a power of two is rounded up to one */
  p = memalign(tu_hide(48), 100);
  if (!p || ((uintptr_t)p & 63)) return wd_fail("memalign(48, 100) gave %p, want a 64-aligned block", p);
  free(p);
  return 0;
}

/* glibc tst-memalign: memalign(8, SIZE_MAX) and memalign(page, -page) give
 * ENOMEM, memalign(SIZE_MAX, page) EINVAL, memalign(8, 0) a pointer,
 * memalign(256, 10) a 256-aligned block. Plus: memalign(2^63, 64) is ENOMEM
 * (bug 8), memalign(2^63 + 1, 64) EINVAL, memalign(48, 100) 64-aligned. */
Test(peers, glibc_memalign, .timeout = 60) { WD_RUN("glibc_memalign", 20, memalign_case, NULL); }

/* ==== glibc tst-posix_memalign ==================================================== */
static int posix_memalign_case(void *arg) {
  (void)arg;
  size_t page = (size_t)getpagesize();
  void *p = NULL;
  int rc = posix_memalign(&p, sizeof(void *), tu_hide(SIZE_MAX));
  if (rc != ENOMEM || p)
    return wd_fail("posix_memalign(&p, 8, SIZE_MAX): %d, p %p (want ENOMEM, p untouched)", rc, p);
  rc = posix_memalign(&p, page, tu_hide(-page));
  if (rc != ENOMEM || p) return wd_fail("posix_memalign(&p, page, -page): %d, p %p (want ENOMEM)", rc, p);
  rc = posix_memalign(&p, tu_hide(SIZE_MAX), page);
  if (rc != EINVAL || p) return wd_fail("posix_memalign(&p, SIZE_MAX, page): %d, p %p (want EINVAL)", rc, p);
  rc = posix_memalign(&p, sizeof(void *), 0);
  if (rc != 0 || !p) return wd_fail("posix_memalign(&p, 8, 0): %d, p %p (want 0 and a pointer)", rc, p);
  free(p);
  void *marker = (void *)0x1234;
  p = marker;
  rc = posix_memalign(&p, tu_hide(0x300), 10);
  if (rc != EINVAL || p != marker) return wd_fail("posix_memalign(&p, 0x300, 10): %d (want EINVAL, p untouched)", rc);
  rc = posix_memalign(&p, tu_hide(0), 10);
  if (rc != EINVAL || p != marker) return wd_fail("posix_memalign(&p, 0, 10): %d (want EINVAL, p untouched)", rc);
  rc = posix_memalign(&p, tu_hide(4), 10); /* a power of two, but not a multiple of sizeof(void *) */
  if (rc != EINVAL || p != marker) return wd_fail("posix_memalign(&p, 4, 10): %d (want EINVAL, p untouched)", rc);
  p = NULL;
  rc = posix_memalign(&p, 256, 10);
  if (rc != 0 || !p) return wd_fail("posix_memalign(&p, 256, 10): %d, p %p", rc, p);
  if ((uintptr_t)p & 255) return wd_fail("posix_memalign(&p, 256, 10) gave %p, not 256-aligned", p);
  memset(p, 1, 10);
  free(p);
  /* errno is not the channel: a success leaves it alone */
  errno = 1234;
  p = NULL;
  rc = posix_memalign(&p, 64, 100);
  if (rc != 0 || errno != 1234) return wd_fail("posix_memalign(&p, 64, 100): %d, errno changed to %d", rc, errno);
  free(p);
  return 0;
}

/* glibc tst-posix_memalign: ENOMEM for SIZE_MAX and -page (p untouched),
 * EINVAL for alignments SIZE_MAX, 0x300, 0 (and 4), a pointer for size 0, a
 * 256-aligned block for (256, 10). */
Test(peers, glibc_posix_memalign, .timeout = 60) { WD_RUN("glibc_posix_memalign", 20, posix_memalign_case, NULL); }

/* ==== glibc tst-realloc ========================================================== */
static int realloc_case(void *arg) {
  (void)arg;
  errno = 0;
  void *p = realloc(NULL, tu_hide(SIZE_MAX));
  if (p || errno != ENOMEM) return wd_fail("realloc(NULL, SIZE_MAX): %p, errno %d (want NULL, ENOMEM)", p, errno);
  p = realloc(NULL, 10);
  if (!p) return wd_fail("realloc(NULL, 10) failed");
  free(p);
  unsigned char *c = calloc(20, 1);
  if (!c) return wd_fail("calloc(20, 1) failed");
  c = realloc(c, 200);
  if (!c) return wd_fail("realloc(p, 200) failed");
  if (!tu_all_zero(c, 20)) return wd_fail("realloc(calloc(20, 1), 200): the first 20 bytes are not zero any more");
  free(c);
  c = realloc(NULL, 100);
  if (!c) return wd_fail("realloc(NULL, 100) failed");
  memset(c, 0xff, 100);
  c = realloc(c, 16);
  if (!c) return wd_fail("realloc(p, 16) failed");
  for (int i = 0; i < 16; i++)
    if (c[i] != 0xff) return wd_fail("realloc(p, 16) from 100 bytes: byte %d changed", i);
  errno = 0;
  unsigned char *d = realloc(c, tu_hide(SIZE_MAX));
  if (d) return wd_fail("realloc(p, SIZE_MAX) succeeded");
  if (errno != ENOMEM) return wd_fail("realloc(p, SIZE_MAX): errno %d, want ENOMEM", errno);
  for (int i = 0; i < 16; i++)
    if (c[i] != 0xff) return wd_fail("a failed realloc changed byte %d of the old block", i);
  p = realloc(c, 0); /* frees c and gives NULL, as glibc does */
  if (p) return wd_fail("realloc(p, 0) gave %p, glibc gives NULL", p);
  p = realloc(NULL, 0); /* malloc(0) */
  if (!p) return wd_fail("realloc(NULL, 0) gave NULL");
  free(p);
  /* growth and shrinking through every size range, contents kept */
  static const size_t steps[] = {1, 17, 100, 1000, 5000, 70000, 300000, 5 * MiB, 100, 40000, 3};
  unsigned char *g = NULL;
  size_t have = 0;
  for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
    unsigned char *h = realloc(g, steps[s]);
    if (!h) return wd_fail("realloc to %zu failed", steps[s]);
    size_t keep = have < steps[s] ? have : steps[s];
    size_t off = tu_check(h, keep, 77);
    if (off != SIZE_MAX) return wd_fail("realloc %zu -> %zu lost byte %zu", have, steps[s], off);
    tu_fill(h, steps[s], 77);
    g = h;
    have = steps[s];
  }
  free(g);
  return 0;
}

/* glibc tst-realloc: realloc(NULL, SIZE_MAX) is ENOMEM; realloc(NULL, n) is
 * malloc; growing a calloc'd block keeps its zeros; shrinking keeps the
 * prefix; a failed realloc leaves the block untouched; realloc(p, 0) frees
 * and gives NULL; realloc(NULL, 0) gives a pointer. Plus a walk through the
 * size ranges, up and down, contents kept. */
Test(peers, glibc_realloc, .timeout = 60) { WD_RUN("glibc_realloc", 20, realloc_case, NULL); }

/* ==== glibc tst-calloc =========================================================== */
enum { CALLOC_N = 50000 };

static int calloc_fixed(size_t size) {
  static char *ptrs[CALLOC_N];
  int n = 0;
  for (; n < CALLOC_N; n++) {
    ptrs[n] = calloc(1, size);
    if (!ptrs[n]) return wd_fail("calloc(1, %zu) number %d failed", size, n);
    for (size_t j = 0; j < size; j++)
      if (ptrs[n][j] != 0) return wd_fail("calloc(1, %zu) number %d: byte %zu is not zero", size, n, j);
    memset(ptrs[n], 0xff, size); /* dirty: the next calloc of this memory must clear it again */
  }
  while (n-- > 0) free(ptrs[n]);
  return 0;
}

static int calloc_case(void *arg) {
  (void)arg;
  static const size_t fixed[] = {15, 5, 17, 6, 31, 96};
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
    wd_phase("calloc(1, %zu) x %d", fixed[i], CALLOC_N);
    if (calloc_fixed(fixed[i])) return 1;
  }
  wd_phase("calloc of random sizes");
  static char *ptrs[CALLOC_N];
  tu_rng_t r = tu_rng(19);
  for (int round = 0; round < 2; round++) {
    int n = 0;
    for (; n < CALLOC_N; n++) {
      size_t count = tu_rng_range(&r, 1, 10), elem = tu_rng_range(&r, 1, 100);
      ptrs[n] = calloc(count, elem);
      if (!ptrs[n]) return wd_fail("calloc(%zu, %zu) failed", count, elem);
      if (!tu_all_zero(ptrs[n], count * elem)) return wd_fail("calloc(%zu, %zu) is not zero", count, elem);
      memset(ptrs[n], 0xff, count * elem);
    }
    while (n-- > 0) free(ptrs[n]);
  }
  /* zero sizes: implementation-defined results, which must be freeable */
  free(calloc(0, 0));
  free(calloc(0, UINT_MAX));
  free(calloc(UINT_MAX, 0));
  free(calloc(0, tu_hide(SIZE_MAX)));
  free(calloc(tu_hide(SIZE_MAX), 0));
  /* an overflowing product is ENOMEM */
  errno = 0;
  void *p = calloc(tu_hide((SIZE_MAX >> 1) + 2), 2);
  if (p || errno != ENOMEM) return wd_fail("calloc(SIZE_MAX/2 + 2, 2): %p, errno %d (want NULL, ENOMEM)", p, errno);
  return 0;
}

/* glibc tst-calloc: 50000 calloc(1, n) for n = 15, 5, 17, 6, 31, 96, each
 * all zero (then dirtied, before all are freed: reuse must be cleared again);
 * 2 x 50000 calloc(1..10, 1..100), zero; calloc with a zero count or size
 * (with the other SIZE_MAX) does not crash and can be freed. Plus: an
 * overflowing product is ENOMEM. */
Test(peers, glibc_calloc, .timeout = 60) { WD_RUN("glibc_calloc", 20, calloc_case, NULL); }

/* ==== glibc tst-malloc-usable ==================================================== */
static int usable_case(void *arg) {
  (void)arg;
  unsigned char *p = malloc(7);
  if (!p) return wd_fail("malloc(7) failed");
  size_t u = malloc_usable_size(p);
  if (u < 7) return wd_fail("malloc_usable_size(malloc(7)) = %zu", u);
  memset(p, 0, u); /* all of it is writable */
  free(p);
  if (malloc_usable_size(NULL) != 0) return wd_fail("malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));
  /* every size range: at least what was asked, all writable, and it stays the same for the object's life */
  for (size_t s = 0; s < 3 * MiB; s = s < 64 ? s + 1 : s + s / 3) {
    p = malloc(s);
    if (!p) return wd_fail("malloc(%zu) failed", s);
    u = malloc_usable_size(p);
    if (u < s) return wd_fail("malloc_usable_size(malloc(%zu)) = %zu", s, u);
    memset(p, 0xab, u);
    if (malloc_usable_size(p) != u) return wd_fail("malloc_usable_size of one object changed after writing it");
    free(p);
  }
  return 0;
}

/* glibc tst-malloc-usable: malloc_usable_size(malloc(7)) is at least 7 (glibc
 * gives exactly 7 only with MALLOC_CHECK_) and all of it writable;
 * malloc_usable_size(NULL) is 0. Plus: the same for sizes up to 3 MiB. */
Test(peers, glibc_malloc_usable, .timeout = 60) { WD_RUN("glibc_malloc_usable", 20, usable_case, NULL); }

/* ==== mimalloc test-stress ======================================================== */
/* Threads allocate objects of 2^k words (1% 100x larger, 0.1% 1000x, 0.01%
 * 10000x), keep some, free some, and swap some with a shared transfer array,
 * so objects are freed by other threads, and by threads of later rounds after
 * their maker exited. Every object holds the pattern (n - i) ^ cookie in word i
 * (word 0 gives n back), checked when it is freed. */
enum { MS_THREADS = 6, MS_SCALE = 40, MS_ROUNDS = 20, MS_TRANSFERS = 1000 };
static const uintptr_t ms_cookie = 0xbf58476d1ce4e5b9ULL;
static _Atomic(uintptr_t *) ms_transfer[MS_TRANSFERS];

static uint64_t ms_pick(uint64_t *r) { /* splitmix64's finaliser, as a step */
  uint64_t x = *r += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
static int ms_chance(unsigned percent, uint64_t *r) { return ms_pick(r) % 100 < percent; }

static uintptr_t *ms_alloc(size_t words, uint64_t *r) {
  if (ms_chance(1, r)) {
    if (ms_chance(1, r)) words *= 10000;
    else if (ms_chance(10, r)) words *= 1000;
    else words *= 100;
  }
  uintptr_t *p = calloc(words, sizeof(uintptr_t));
  if (!p) return NULL;
  for (size_t i = 0; i < words; i++) p[i] = (words - i) ^ ms_cookie;
  return p;
}

static int ms_free(uintptr_t *p) {
  if (!p) return 0;
  uintptr_t words = p[0] ^ ms_cookie;
  if (words == 0 || words > 16 * 10000 * 4)
    return wd_fail("mimalloc_stress: object %p: its first word is clobbered (%#llx)", (void *)p,
                   (unsigned long long)p[0]);
  for (uintptr_t i = 0; i < words; i++)
    if ((p[i] ^ ms_cookie) != words - i)
      return wd_fail("mimalloc_stress: object %p of %llu words clobbered at word %llu", (void *)p,
                     (unsigned long long)words, (unsigned long long)i);
  free(p);
  return 0;
}

static void *ms_thread(void *arg) {
  intptr_t tid = (intptr_t)arg;
  uint64_t r = (uint64_t)tid * 43 + 1;
  size_t allocs = 100 * (size_t)MS_SCALE * (size_t)(tid % 8 + 1), retain = allocs / 2;
  size_t data_cap = 0, data_top = 0, kept_top = 0;
  uintptr_t **data = NULL;
  uintptr_t **kept = calloc(retain, sizeof *kept);
  if (!kept) return (void *)(intptr_t)wd_fail("mimalloc_stress: calloc failed");
  while ((allocs > 0 || retain > 0) && !wd_failed()) {
    if (retain == 0 || (ms_chance(50, &r) && allocs > 0)) {
      allocs--;
      if (data_top == data_cap) {
        data_cap += 1000;
        uintptr_t **d = realloc(data, data_cap * sizeof *data);
        if (!d) return (void *)(intptr_t)wd_fail("mimalloc_stress: realloc of the pointer array failed");
        data = d;
      }
      data[data_top] = ms_alloc((size_t)1 << (ms_pick(&r) % 5), &r);
      if (!data[data_top]) return (void *)(intptr_t)wd_fail("mimalloc_stress: allocation failed");
      data_top++;
    } else {
      kept[kept_top] = ms_alloc((size_t)1 << (ms_pick(&r) % 7), &r);
      if (!kept[kept_top]) return (void *)(intptr_t)wd_fail("mimalloc_stress: allocation failed");
      kept_top++;
      retain--;
    }
    if (ms_chance(66, &r) && data_top > 0) {
      size_t i = ms_pick(&r) % data_top;
      if (ms_free(data[i])) return NULL;
      data[i] = NULL;
    }
    if (ms_chance(25, &r) && data_top > 0) {
      size_t i = ms_pick(&r) % data_top;
      data[i] = atomic_exchange(&ms_transfer[ms_pick(&r) % MS_TRANSFERS], data[i]);
    }
  }
  for (size_t i = 0; i < kept_top; i++)
    if (ms_free(kept[i])) return NULL;
  for (size_t i = 0; i < data_top; i++)
    if (ms_free(data[i])) return NULL;
  free(kept);
  free(data);
  return NULL;
}

static int mimalloc_stress(void *arg) {
  (void)arg;
  uint64_t r = 0x7feb352d;
  wd_phase("mimalloc test-stress: counter 0 = rounds");
  for (int round = 0; round < MS_ROUNDS && !wd_failed(); round++) {
    pthread_t th[MS_THREADS];
    for (intptr_t i = 0; i < MS_THREADS; i++)
      if (pthread_create(&th[i], NULL, ms_thread, (void *)i) != 0) return wd_fail("pthread_create failed");
    for (int i = 0; i < MS_THREADS; i++) pthread_join(th[i], NULL);
    /* half the objects in transit survive into the next round, none the last */
    for (int i = 0; i < MS_TRANSFERS && !wd_failed(); i++)
      if (round + 1 == MS_ROUNDS || ms_chance(50, &r)) ms_free(atomic_exchange(&ms_transfer[i], NULL));
    wd_count(0, 1);
  }
  return wd_failed();
}

/* mimalloc test/test-stress: 20 rounds of 6 threads (4000-32000 allocations
 * each, half as many kept to the end), objects swapped through a shared array
 * of 1000 so other threads (and threads of later rounds) free them; contents
 * checked at every free. */
Test(peers, mimalloc_stress, .timeout = 120) { WD_RUN("mimalloc_stress", 30, mimalloc_stress, NULL); }
