/* test_malloc.c: the malloc family's contract, through the standard names
 * (malloc, calloc, ...) and through the sm_ names of include/slotmalloc.h.
 *
 * Most tests run twice, once per "ops" table: STD (the plain names, which this
 * executable gets from libslotmalloc.so) and SM (sm_malloc & co).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <malloc.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* cfree is gone from glibc's headers (and only a compat symbol there): declared
 * weak here so a missing cfree fails one test instead of the whole build. */
extern void cfree(void *) __attribute__((weak));

#define HUGE_SIZE ((size_t)PTRDIFF_MAX + 1)

/* ---- the two faces of the same allocator -------------------------------------- */
typedef struct {
  const char *name;
  void *(*alloc)(size_t);
  void *(*zalloc)(size_t, size_t);
  void *(*resize)(void *, size_t);
  void *(*resize_array)(void *, size_t, size_t);
  void *(*aligned)(size_t, size_t);
  int (*memalign_posix)(void **, size_t, size_t);
  void (*release)(void *);
  size_t (*usable)(const void *);
} ops_t;

static size_t std_usable(const void *p) { return malloc_usable_size((void *)p); }
static void *std_malloc(size_t n) { return malloc(n); }
static void *std_calloc(size_t c, size_t n) { return calloc(c, n); }
static void *std_realloc(void *p, size_t n) { return realloc(p, n); }
static void *std_reallocarray(void *p, size_t c, size_t n) { return reallocarray(p, c, n); }
static void *std_aligned_alloc(size_t a, size_t n) { return aligned_alloc(a, n); }
static int std_posix_memalign(void **o, size_t a, size_t n) { return posix_memalign(o, a, n); }
static void std_free(void *p) { free(p); }

static const ops_t STD = {
    "std",    std_malloc, std_calloc, std_realloc, std_reallocarray, std_aligned_alloc, std_posix_memalign,
    std_free, std_usable};
static const ops_t SM = {
    "sm",    sm_malloc,     sm_calloc, sm_realloc, sm_reallocarray, sm_aligned_alloc, sm_posix_memalign,
    sm_free, sm_usable_size};
static const ops_t *const OPS[] = {&STD, &SM};
#define FOR_OPS(o) for (const ops_t *const *o##_it = OPS, *o; o##_it < OPS + 2 && (o = *o##_it); o##_it++)

/* Sizes from 1 byte to beyond 1 MiB: every size up to 1024, then each power of
 * two and its neighbours and 1.25x, up to max. Returns the count written. */
static size_t size_list(size_t *out, size_t cap, size_t max) {
  size_t n = 0;
  for (size_t s = 1; s <= 1024 && n < cap; s++) out[n++] = s;
  for (size_t s = 2048; s <= max && n + 4 <= cap; s *= 2) {
    out[n++] = s - 1;
    out[n++] = s;
    out[n++] = s + 1;
    out[n++] = s + s / 4;
  }
  return n;
}

static int is_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* ================================================================================ */

/* malloc(0) returns distinct, non-NULL, freeable pointers. */
Test(malloc, zero_size_distinct) {
  enum { N = 256 };
  FOR_OPS(o) {
    void *p[N];
    for (int i = 0; i < N; i++) {
      p[i] = o->alloc(tu_hide(0));
      cr_assert_not_null(p[i], "[%s] malloc(0) #%d returned NULL", o->name, i);
      for (int j = 0; j < i; j++)
        cr_assert_neq(p[i], p[j], "[%s] malloc(0) returned %p twice (#%d, #%d)", o->name, p[i], j, i);
    }
    /* a malloc(0) object can be grown */
    p[0] = o->resize(p[0], 100);
    cr_assert_not_null(p[0], "[%s] realloc(malloc(0), 100) failed", o->name);
    memset(p[0], 0x5a, 100);
    for (int i = 0; i < N; i++) o->release(p[i]);
  }
}

/* Every result of 16 bytes or more is 16-aligned (1 B .. 64 MiB); smaller
 * results are aligned for any object that fits (8 bytes: 8-aligned, ...). */
Test(malloc, alignment_16, .timeout = 120) {
  static size_t sizes[1200];
  size_t n = size_list(sizes, 1200, 64 * MiB);
  FOR_OPS(o) {
    void **live = calloc(n, sizeof(void *));
    for (size_t i = 0; i < n; i++) {
      size_t s = sizes[i];
      void *p = o->alloc(s);
      cr_assert_not_null(p, "[%s] malloc(%zu) returned NULL", o->name, s);
      if (s >= 16) cr_assert(is_aligned(p, 16), "[%s] malloc(%zu) = %p: not 16-aligned", o->name, s, p);
      else if (s >= 8) cr_assert(is_aligned(p, 8), "[%s] malloc(%zu) = %p: not 8-aligned", o->name, s, p);
      else if (s >= 4) cr_assert(is_aligned(p, 4), "[%s] malloc(%zu) = %p: not 4-aligned", o->name, s, p);
      ((volatile char *)p)[0] = 1;
      ((volatile char *)p)[s - 1] = 1;
      if (s <= MiB) live[i] = p; /* keep small ones live: the allocator must not reuse them */
      else o->release(p);
    }
    for (size_t i = 0; i < n; i++) o->release(live[i]);
    free(live);
    /* calloc and realloc results too */
    for (size_t i = 0; i < n; i += 7) {
      size_t s = sizes[i];
      void *p = o->zalloc(1, s);
      cr_assert_not_null(p, "[%s] calloc(1, %zu) returned NULL", o->name, s);
      if (s >= 16) cr_assert(is_aligned(p, 16), "[%s] calloc(1, %zu) = %p: not 16-aligned", o->name, s, p);
      void *q = o->resize(p, s + 17);
      cr_assert_not_null(q, "[%s] realloc(%zu -> %zu) returned NULL", o->name, s, s + 17);
      cr_assert(is_aligned(q, 16), "[%s] realloc(..., %zu) = %p: not 16-aligned", o->name, s + 17, q);
      o->release(q);
    }
  }
}

/* usable_size(p) >= the size asked, and all usable bytes are writable without
 * touching any other live object (each object filled with its own pattern). */
Test(malloc, usable_size_writable, .timeout = 120) {
  static size_t sizes[1200];
  size_t n = size_list(sizes, 1200, 32 * MiB);
  FOR_OPS(o) {
    cr_assert_eq(o->usable(NULL), 0, "[%s] usable_size(NULL) = %zu, want 0", o->name, o->usable(NULL));
    void **live = calloc(n, sizeof(void *));
    size_t *us = calloc(n, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
      void *p = o->alloc(sizes[i]);
      cr_assert_not_null(p, "[%s] malloc(%zu) returned NULL", o->name, sizes[i]);
      us[i] = o->usable(p);
      cr_assert_geq(us[i], sizes[i], "[%s] usable_size(malloc(%zu)) = %zu < asked", o->name, sizes[i], us[i]);
      tu_fill(p, us[i], i + 1);
      live[i] = p;
    }
    for (size_t i = 0; i < n; i++) {
      size_t bad = tu_check(live[i], us[i], i + 1);
      cr_assert_eq(bad, SIZE_MAX, "[%s] object %zu (size %zu, usable %zu) clobbered at offset %zu", o->name, i,
                   sizes[i], us[i], bad);
      cr_assert_eq(o->usable(live[i]), us[i], "[%s] usable size of a live object changed", o->name);
      o->release(live[i]);
    }
    free(live);
    free(us);
  }
}

/* calloc zeroes: fresh memory, memory reused after dirty frees, large objects,
 * and calloc(0, n) / calloc(n, 0) give freeable pointers. */
Test(malloc, calloc_zeroes, .timeout = 120) {
  static const size_t sizes[] = {1,    8,     16,    24,     48,     100, 128,         256,     1000,
                                 4096, 10000, 65536, 100000, 300000, MiB, 3 * MiB + 5, 16 * MiB};
  enum { N = 64 };
  FOR_OPS(o) {
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      size_t s = sizes[k];
      void *p[N];
      int n = s >= MiB ? 4 : N;
      /* dirty every slot of this size, then free them */
      for (int i = 0; i < n; i++) {
        p[i] = o->alloc(s);
        cr_assert_not_null(p[i], "[%s] malloc(%zu) failed", o->name, s);
        memset(p[i], 0xff, o->usable(p[i]));
      }
      for (int i = 0; i < n; i++) o->release(p[i]);
      /* calloc must hand them back zeroed */
      for (int i = 0; i < n; i++) {
        p[i] = o->zalloc(1, s);
        cr_assert_not_null(p[i], "[%s] calloc(1, %zu) failed", o->name, s);
        cr_assert(tu_all_zero(p[i], s), "[%s] calloc(1, %zu) #%d not zeroed", o->name, s, i);
        memset(p[i], 0xee, s);
      }
      for (int i = 0; i < n; i++) o->release(p[i]);
      /* count * size form */
      void *q = o->zalloc(s, 1);
      cr_assert_not_null(q, "[%s] calloc(%zu, 1) failed", o->name, s);
      cr_assert(tu_all_zero(q, s), "[%s] calloc(%zu, 1) not zeroed", o->name, s);
      o->release(q);
    }
    /* a large calloc, twice after dirtying the same size */
    for (int r = 0; r < 3; r++) {
      size_t s = 64 * MiB;
      void *p = o->zalloc(s / 8, 8);
      cr_assert_not_null(p, "[%s] calloc(64 MiB) failed", o->name);
      cr_assert(tu_all_zero(p, s), "[%s] calloc(64 MiB) round %d not zeroed", o->name, r);
      memset(p, 0x77, s);
      o->release(p);
    }
    void *z1 = o->zalloc(tu_hide(0), 16), *z2 = o->zalloc(16, tu_hide(0));
    cr_assert(z1 && z2 && z1 != z2, "[%s] calloc(0,16)=%p calloc(16,0)=%p: want distinct non-NULL", o->name, z1, z2);
    o->release(z1);
    o->release(z2);
  }
}

/* Sizes past PTRDIFF_MAX, and sizes the OS cannot map (2^60), fail with NULL
 * and errno ENOMEM, through every allocating function. */
Test(malloc, huge_sizes_enomem) {
  const size_t huge[] = {HUGE_SIZE,          SIZE_MAX,        SIZE_MAX - 1,   SIZE_MAX - 4095,
                         SIZE_MAX - 4 * MiB, (size_t)1 << 63, (size_t)1 << 60};
  FOR_OPS(o) {
    for (size_t k = 0; k < sizeof huge / sizeof *huge; k++) {
      size_t s = tu_hide(huge[k]);
      errno = 0;
      void *p = o->alloc(s);
      cr_assert_null(p, "[%s] malloc(%#zx) = %p, want NULL", o->name, s, p);
      cr_assert_eq(errno, ENOMEM, "[%s] malloc(%#zx): errno %d, want ENOMEM", o->name, s, errno);
      errno = 0;
      p = o->zalloc(1, s);
      cr_assert_null(p, "[%s] calloc(1, %#zx) = %p, want NULL", o->name, s, p);
      cr_assert_eq(errno, ENOMEM, "[%s] calloc(1, %#zx): errno %d, want ENOMEM", o->name, s, errno);
      errno = 0;
      p = o->resize(NULL, s);
      cr_assert_null(p, "[%s] realloc(NULL, %#zx) = %p, want NULL", o->name, s, p);
      cr_assert_eq(errno, ENOMEM, "[%s] realloc(NULL, %#zx): errno %d, want ENOMEM", o->name, s, errno);
      errno = 0;
      p = o->aligned(64, s);
      cr_assert_null(p, "[%s] aligned_alloc(64, %#zx) = %p, want NULL", o->name, s, p);
      cr_assert_eq(errno, ENOMEM, "[%s] aligned_alloc(64, %#zx): errno %d, want ENOMEM", o->name, s, errno);
      void *out = (void *)0x1234;
      int rc = o->memalign_posix(&out, 4096, s);
      cr_assert_eq(rc, ENOMEM, "[%s] posix_memalign(4096, %#zx) = %d, want ENOMEM", o->name, s, rc);
    }
  }
  /* the standard-only functions */
  for (size_t k = 0; k < sizeof huge / sizeof *huge; k++) {
    size_t s = tu_hide(huge[k]);
    errno = 0;
    void *p = memalign(64, s);
    cr_assert(p == NULL && errno == ENOMEM, "memalign(64, %#zx) = %p errno %d, want NULL/ENOMEM", s, p, errno);
    errno = 0;
    p = valloc(s);
    cr_assert(p == NULL && errno == ENOMEM, "valloc(%#zx) = %p errno %d, want NULL/ENOMEM", s, p, errno);
    errno = 0;
    p = pvalloc(s); /* rounding up to a page must not wrap around */
    cr_assert(p == NULL && errno == ENOMEM, "pvalloc(%#zx) = %p errno %d, want NULL/ENOMEM", s, p, errno);
  }
}

/* calloc and reallocarray detect count*size overflow: NULL, errno ENOMEM, and
 * reallocarray leaves the old block intact. */
Test(malloc, multiply_overflow_enomem) {
  const size_t pairs[][2] = {{SIZE_MAX / 2 + 1, 2},
                             {2, SIZE_MAX / 2 + 1},
                             {(size_t)1 << 32, (size_t)1 << 32},
                             {SIZE_MAX, SIZE_MAX},
                             {SIZE_MAX, 2},
                             {3, SIZE_MAX / 3 + 1},
                             {(size_t)1 << 33, (size_t)1 << 31},
                             {PTRDIFF_MAX / 16 + 1, 16} /* no wrap, > PTRDIFF_MAX */};
  FOR_OPS(o) {
    void *keep = o->alloc(200);
    tu_fill(keep, 200, 77);
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
      size_t c = tu_hide(pairs[k][0]), s = tu_hide(pairs[k][1]);
      errno = 0;
      void *p = o->zalloc(c, s);
      cr_assert_null(p, "[%s] calloc(%#zx, %#zx) = %p, want NULL", o->name, c, s, p);
      cr_assert_eq(errno, ENOMEM, "[%s] calloc(%#zx, %#zx): errno %d, want ENOMEM", o->name, c, s, errno);
      errno = 0;
      p = o->resize_array(NULL, c, s);
      cr_assert_null(p, "[%s] reallocarray(NULL, %#zx, %#zx) = %p, want NULL", o->name, c, s, p);
      cr_assert_eq(errno, ENOMEM, "[%s] reallocarray(NULL, %#zx, %#zx): errno %d", o->name, c, s, errno);
      errno = 0;
      p = o->resize_array(keep, c, s);
      cr_assert_null(p, "[%s] reallocarray(p, %#zx, %#zx) = %p, want NULL", o->name, c, s, p);
      cr_assert_eq(errno, ENOMEM, "[%s] reallocarray(p, %#zx, %#zx): errno %d", o->name, c, s, errno);
      cr_assert_eq(tu_check(keep, 200, 77), SIZE_MAX, "[%s] failed reallocarray changed the old block", o->name);
    }
    o->release(keep);
  }
}

/* A failed realloc (huge size) returns NULL with ENOMEM and leaves the old
 * block as it was: same contents, same usable size, still freeable/growable. */
Test(malloc, failed_realloc_keeps_block) {
  const size_t init[] = {1, 24, 3000, 200000, 5 * MiB};
  const size_t bad[] = {HUGE_SIZE, SIZE_MAX, SIZE_MAX - 8, (size_t)1 << 60};
  FOR_OPS(o) {
    for (size_t k = 0; k < sizeof init / sizeof *init; k++) {
      size_t s = init[k];
      char *p = o->alloc(s);
      cr_assert_not_null(p);
      size_t u = o->usable(p);
      tu_fill(p, s, s);
      for (size_t b = 0; b < sizeof bad / sizeof *bad; b++) {
        errno = 0;
        void *q = o->resize(p, tu_hide(bad[b]));
        cr_assert_null(q, "[%s] realloc(%zu-byte block, %#zx) = %p, want NULL", o->name, s, bad[b], q);
        cr_assert_eq(errno, ENOMEM, "[%s] realloc(.., %#zx): errno %d, want ENOMEM", o->name, bad[b], errno);
        size_t off = tu_check(p, s, s);
        cr_assert_eq(off, SIZE_MAX, "[%s] failed realloc(%#zx) changed the %zu-byte block at offset %zu", o->name,
                     bad[b], s, off);
        cr_assert_eq(o->usable(p), u, "[%s] failed realloc changed the usable size", o->name);
      }
      char *q = o->resize(p, 2 * s + 100);
      cr_assert_not_null(q, "[%s] realloc after a failed realloc failed", o->name);
      cr_assert_eq(tu_check(q, s, s), SIZE_MAX, "[%s] realloc after a failed realloc lost contents", o->name);
      o->release(q);
    }
  }
}

/* realloc keeps the common prefix when growing and shrinking across size
 * classes, into and out of large sizes. */
Test(malloc, realloc_preserves_contents, .timeout = 120) {
  static const size_t steps[] = {1,       7,       8,       15,       16,     17,   31,          48,      100,
                                 128,     255,     512,     1000,     1024,   2047, 4096,        5000,    10000,
                                 32768,   65536,   100000,  262144,   300000, MiB,  3 * MiB + 1, 8 * MiB, 40 * MiB,
                                 8 * MiB, 3 * MiB, MiB + 3, 300000,   70000,  4096, 1000,        100,     33,
                                 16,      9,       1,       64 * MiB, 2};
  FOR_OPS(o) {
    char *p = NULL;
    size_t cur = 0;
    uint64_t seed = 1;
    for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
      size_t s = steps[k];
      char *q = o->resize(p, s);
      cr_assert_not_null(q, "[%s] realloc(%zu -> %zu) failed", o->name, cur, s);
      size_t keep = cur < s ? cur : s;
      size_t off = tu_check(q, keep, seed);
      cr_assert_eq(off, SIZE_MAX, "[%s] realloc(%zu -> %zu) lost byte %zu of the kept prefix", o->name, cur, s, off);
      cr_assert_geq(o->usable(q), s, "[%s] realloc(.., %zu): usable size %zu too small", o->name, s, o->usable(q));
      seed++;
      tu_fill(q, s, seed);
      p = q;
      cur = s;
    }
    o->release(p);
    /* one-byte growth steps walk through every small size class */
    p = NULL;
    for (size_t s = 1; s <= 5000; s++) {
      char *q = o->resize(p, s);
      cr_assert_not_null(q);
      if (s > 1)
        cr_assert_eq(tu_check(q, s - 1, 99), SIZE_MAX, "[%s] realloc(%zu -> %zu) lost contents", o->name, s - 1, s);
      tu_fill(q, s, 99);
      p = q;
    }
    o->release(p);
  }
}

/* realloc(NULL, n) behaves as malloc(n) (also n = 0), and the result is ours. */
Test(malloc, realloc_null_is_malloc) {
  const size_t sizes[] = {0, 1, 16, 100, 5000, 70000, 2 * MiB};
  FOR_OPS(o) {
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      void *p = o->resize(NULL, sizes[k]);
      cr_assert_not_null(p, "[%s] realloc(NULL, %zu) returned NULL", o->name, sizes[k]);
      cr_assert_geq(o->usable(p), sizes[k]);
      cr_assert_neq(sm_handle_of(p), 0, "[%s] realloc(NULL, %zu) = %p is not a live slotmalloc object", o->name,
                    sizes[k], p);
      memset(p, 1, sizes[k]);
      o->release(p);
    }
  }
}

/* realloc(p, 0) frees p (it is no longer a live object) and returns NULL. */
Test(malloc, realloc_zero_frees) {
  const size_t sizes[] = {1, 64, 4000, 100000, 4 * MiB};
  FOR_OPS(o) {
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      void *p = o->alloc(sizes[k]);
      cr_assert_not_null(p);
      cr_assert_neq(sm_handle_of(p), 0, "[%s] malloc(%zu) result has no handle", o->name, sizes[k]);
      void *q = o->resize(p, tu_hide(0));
      cr_assert_null(q, "[%s] realloc(p, 0) = %p, want NULL", o->name, q);
      cr_assert_eq(sm_handle_of(p), 0, "[%s] after realloc(p, 0) the %zu-byte object %p is still live", o->name,
                   sizes[k], p);
    }
  }
}

/* free(NULL) and sm_free(NULL) do nothing (and keep errno). */
Test(malloc, free_null) {
  errno = 4321;
  free(NULL);
  sm_free(NULL);
  cfree ? cfree(NULL) : (void)0;
  cr_assert_eq(errno, 4321, "free(NULL) changed errno to %d", errno);
}

/* Keeps errno across one free; fails with the name of the case. */
static void free_check_errno(const ops_t *o, void *p, const char *what) {
  errno = 1234;
  o->release(p);
  cr_assert_eq(errno, 1234, "[%s] free of %s changed errno to %d", o->name, what, errno);
}

static void *remote_free_errno(void *arg) {
  void **ps = arg;
  for (int i = 0; ps[i]; i++) {
    errno = 1234;
    free(ps[i]);
    if (errno != 1234) return (void *)(intptr_t)errno;
  }
  return NULL;
}

/* free never changes errno: small, large, aligned, calloc'd, realloc'd objects,
 * frees that return whole blocks to the OS, and frees from another thread. */
Test(malloc, free_keeps_errno, .timeout = 120) {
  FOR_OPS(o) {
    free_check_errno(o, NULL, "NULL");
    free_check_errno(o, o->alloc(0), "malloc(0)");
    free_check_errno(o, o->alloc(24), "a small object");
    free_check_errno(o, o->alloc(40000), "a medium object");
    free_check_errno(o, o->alloc(32 * MiB), "a 32 MiB object");
    free_check_errno(o, o->zalloc(1000, 1000), "a calloc'd object");
    free_check_errno(o, o->resize(o->alloc(10), 100000), "a realloc'd object");
    free_check_errno(o, o->aligned(4 * MiB, 100), "a 4 MiB-aligned object");
    void *a = NULL;
    cr_assert_eq(o->memalign_posix(&a, 65536, 1000), 0);
    free_check_errno(o, a, "a posix_memalign'd object");
    /* many objects: whole blocks become empty, may be purged */
    enum { N = 50000 };
    void **v = malloc(N * sizeof *v);
    for (int i = 0; i < N; i++) v[i] = o->alloc(16 + (i % 7) * 48);
    for (int i = 0; i < N; i++) free_check_errno(o, v[i], "one of many objects");
    for (int i = 0; i < 64; i++) v[i] = o->alloc(MiB + (size_t)i * 4096);
    for (int i = 0; i < 64; i++) free_check_errno(o, v[i], "one of many large objects");
    free(v);
  }
  /* remote frees */
  void *ps[1001];
  for (int i = 0; i < 1000; i++) ps[i] = malloc(i % 3 == 0 ? 100000 : 32 + (size_t)i);
  ps[1000] = NULL;
  pthread_t t;
  void *res;
  cr_assert_eq(pthread_create(&t, NULL, remote_free_errno, ps), 0);
  pthread_join(t, &res);
  cr_assert_null(res, "a free from another thread changed errno to %d", (int)(intptr_t)res);
}

/* posix_memalign with an alignment that is not a power-of-two multiple of
 * sizeof(void *) returns EINVAL and leaves *memptr untouched. */
Test(malloc, posix_memalign_einval) {
  const size_t bad[] = {0,
                        1,
                        2,
                        3,
                        4,
                        12,
                        24,
                        40,
                        48,
                        96,
                        1000,
                        4097,
                        (MiB + 8),
                        3 * MiB,
                        SIZE_MAX,
                        SIZE_MAX - 7,
                        ((size_t)1 << 63) + 8};
  FOR_OPS(o) {
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
      void *out = (void *)0xdeadbeef;
      int rc = o->memalign_posix(&out, tu_hide(bad[k]), 100);
      cr_assert_eq(rc, EINVAL, "[%s] posix_memalign(align %#zx) = %d, want EINVAL", o->name, bad[k], rc);
      cr_assert_eq(out, (void *)0xdeadbeef, "[%s] posix_memalign(align %#zx) changed *memptr to %p", o->name, bad[k],
                   out);
    }
  }
}

/* aligned_alloc with an alignment that is not a power of two gives NULL and
 * errno EINVAL; powers of two below sizeof(void *) are accepted. */
Test(malloc, aligned_alloc_einval) {
  const size_t bad[] = {0, 3, 5, 6, 12, 24, 48, 100, 4097, 3 * MiB, SIZE_MAX, ((size_t)1 << 63) + 1};
  FOR_OPS(o) {
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
      errno = 0;
      void *p = o->aligned(tu_hide(bad[k]), 64);
      cr_assert_null(p, "[%s] aligned_alloc(%#zx, 64) = %p, want NULL", o->name, bad[k], p);
      cr_assert_eq(errno, EINVAL, "[%s] aligned_alloc(%#zx, 64): errno %d, want EINVAL", o->name, bad[k], errno);
    }
    for (size_t a = 1; a < sizeof(void *); a *= 2) {
      void *p = o->aligned(a, 10);
      cr_assert_not_null(p, "[%s] aligned_alloc(%zu, 10) failed", o->name, a);
      o->release(p);
    }
  }
}

typedef enum { AL_POSIX, AL_ALIGNED_ALLOC, AL_MEMALIGN, AL_SM_ALIGNED, AL_SM_POSIX, AL_COUNT } al_fn_t;
static const char *const AL_NAMES[] = {"posix_memalign", "aligned_alloc", "memalign", "sm_aligned_alloc",
                                       "sm_posix_memalign"};
static void *al_call(al_fn_t f, size_t a, size_t s) {
  void *p = NULL;
  switch (f) {
    case AL_POSIX: return posix_memalign(&p, a, s) == 0 ? p : NULL;
    case AL_ALIGNED_ALLOC: return aligned_alloc(a, s);
    case AL_MEMALIGN: return memalign(a, s);
    case AL_SM_ALIGNED: return sm_aligned_alloc(a, s);
    case AL_SM_POSIX: return sm_posix_memalign(&p, a, s) == 0 ? p : NULL;
    default: return NULL;
  }
}

/* Alignments 8 B .. 8 MiB are honoured by posix_memalign, aligned_alloc,
 * memalign, sm_aligned_alloc and sm_posix_memalign, with usable size >= asked,
 * all usable bytes writable, several objects live at once not overlapping. */
Test(malloc, big_alignments, .timeout = 120) {
  for (int f = 0; f < AL_COUNT; f++) {
    for (size_t a = 8; a <= 8 * MiB; a *= 2) {
      const size_t sizes[] = {1, 100, a - 1, a, a + 1, 3 * a + 7};
      void *live[6];
      size_t us[6];
      for (int k = 0; k < 6; k++) {
        size_t s = sizes[k];
        void *p = al_call(f, a, s);
        cr_assert_not_null(p, "%s(align %zu, size %zu) failed", AL_NAMES[f], a, s);
        cr_assert(is_aligned(p, a), "%s(align %zu, size %zu) = %p: misaligned", AL_NAMES[f], a, s, p);
        us[k] = sm_usable_size(p);
        cr_assert_geq(us[k], s, "%s(align %zu, size %zu): usable size %zu", AL_NAMES[f], a, s, us[k]);
        cr_assert_eq(malloc_usable_size(p), us[k], "malloc_usable_size and sm_usable_size differ");
        if (us[k] <= 4 * MiB) tu_fill(p, us[k], (uint64_t)f * 1000 + k);
        else {
          tu_fill(p, 4096, (uint64_t)f * 1000 + k);
          memset((char *)p + us[k] - 4096, 0x11, 4096);
        }
        live[k] = p;
      }
      for (int k = 0; k < 6; k++) {
        size_t n = us[k] <= 4 * MiB ? us[k] : 4096;
        size_t off = tu_check(live[k], n, (uint64_t)f * 1000 + k);
        cr_assert_eq(off, SIZE_MAX, "%s(align %zu, size %zu): object clobbered at offset %zu", AL_NAMES[f], a,
                     sizes[k], off);
        free(live[k]);
      }
    }
  }
}

/* valloc is page-aligned; pvalloc is page-aligned and its usable size is the
 * size rounded up to a whole page. */
Test(malloc, valloc_pvalloc) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t sizes[] = {1, 100, page - 1, page, page + 1, 10 * page + 5, 100000, 3 * MiB + 1};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    size_t s = sizes[k];
    void *v = valloc(s);
    cr_assert_not_null(v, "valloc(%zu) failed", s);
    cr_assert(is_aligned(v, page), "valloc(%zu) = %p: not page-aligned", s, v);
    cr_assert_geq(malloc_usable_size(v), s);
    memset(v, 0x3c, malloc_usable_size(v));
    void *p = pvalloc(s);
    size_t want = (s + page - 1) / page * page;
    cr_assert_not_null(p, "pvalloc(%zu) failed", s);
    cr_assert(is_aligned(p, page), "pvalloc(%zu) = %p: not page-aligned", s, p);
    cr_assert_geq(malloc_usable_size(p), want, "pvalloc(%zu): usable size %zu, want >= %zu (whole pages)", s,
                  malloc_usable_size(p), want);
    memset(p, 0x3d, malloc_usable_size(p));
    free(v);
    free(p);
  }
}

/* reallocarray allocates, grows and shrinks count*size bytes keeping contents. */
Test(malloc, reallocarray_basic) {
  FOR_OPS(o) {
    uint32_t *a = o->resize_array(NULL, 10, sizeof(uint32_t));
    cr_assert_not_null(a);
    for (uint32_t i = 0; i < 10; i++) a[i] = i * 3u;
    for (size_t n = 20; n <= 2000000; n *= 3) {
      uint32_t *b = o->resize_array(a, n, sizeof(uint32_t));
      cr_assert_not_null(b, "[%s] reallocarray(%zu x 4) failed", o->name, n);
      cr_assert_geq(o->usable(b), n * 4);
      for (uint32_t i = 0; i < 10; i++) cr_assert_eq(b[i], i * 3u, "[%s] reallocarray lost element %u", o->name, i);
      memset(b + 10, 0, (n - 10) * 4);
      a = b;
    }
    a = o->resize_array(a, 5, sizeof(uint32_t));
    cr_assert_not_null(a);
    for (uint32_t i = 0; i < 5; i++) cr_assert_eq(a[i], i * 3u);
    o->release(a);
  }
}

/* cfree exists and frees. */
Test(malloc, cfree_exists) {
  cr_assert_not_null((void *)cfree, "cfree is not defined by slotmalloc");
  for (int i = 0; i < 100; i++) {
    void *p = malloc((size_t)i * 40);
    cr_assert_not_null(p);
    cfree(p);
    cr_assert_eq(sm_handle_of(p), 0, "cfree(%p) did not free it", p);
  }
}

/* Every standard allocating function hands out slotmalloc objects (the names
 * are overridden, not glibc's), and objects cross between the two faces. */
Test(malloc, standard_names_are_ours) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (int big = 0; big < 2; big++) {
    size_t s = big ? 5 * MiB : 40;
    void *p[12] = {0};
    const char *what[12] = {"malloc",   "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
                            "memalign", "valloc", "pvalloc", "strdup",       "sm_malloc",      "realloc(grow)"};
    p[0] = malloc(s);
    p[1] = calloc(1, s);
    p[2] = realloc(NULL, s);
    p[3] = reallocarray(NULL, 1, s);
    cr_assert_eq(posix_memalign(&p[4], 64, s), 0);
    p[5] = aligned_alloc(256, s);
    p[6] = memalign(1024, s);
    p[7] = valloc(s);
    p[8] = pvalloc(s);
    p[9] = strdup(big ? "a longer string for strdup" : "x");
    p[10] = sm_malloc(s);
    p[11] = realloc(malloc(16), s);
    for (int i = 0; i < 12; i++) {
      cr_assert_not_null(p[i], "%s(%zu) failed", what[i], s);
      cr_assert_neq(sm_handle_of(p[i]), 0, "%s(%zu) = %p is not a slotmalloc object (glibc's?)", what[i], s, p[i]);
      cr_assert_not_null(sm_arena_of(p[i]), "%s(%zu) = %p has no arena", what[i], s, p[i]);
      cr_assert_eq(malloc_usable_size(p[i]), sm_usable_size(p[i]));
    }
    (void)page;
    /* cross frees: plain free of sm_ objects and sm_free of plain objects */
    for (int i = 0; i < 12; i++) (i % 2 ? sm_free : free)(p[i]);
  }
}

/* ---- pattern test ---------------------------------------------------------------- */
/* N objects of one ops_t, each filled (all usable bytes) with the pattern of its own seed. */
typedef struct {
  const ops_t *o;
  tu_rng_t r;
  size_t count;
  void **p;  /* NULL: slot empty */
  size_t *n; /* usable size */
  uint64_t *seed;
  uint64_t next_seed;
} patterned_t;

/* A random size: mostly small (up to 256, 0 included), some medium, a few up to 2 MiB. */
static size_t pattern_rand_size(tu_rng_t *r) {
  unsigned pick = (unsigned)tu_rng_range(r, 0, 999);
  if (pick < 700) return tu_rng_range(r, 0, 256);
  if (pick < 920) return tu_rng_range(r, 257, 8192);
  if (pick < 990) return tu_rng_range(r, 8193, 256 * 1024);
  return tu_rng_range(r, 256 * 1024, 2 * MiB);
}

/* q becomes object i, filled over its usable size with a fresh seed's pattern. */
static void pattern_take(patterned_t *t, size_t i, void *q) {
  t->p[i] = q;
  t->n[i] = t->o->usable(q);
  t->seed[i] = t->next_seed++;
  tu_fill(q, t->n[i], t->seed[i]);
}

/* All objects live at once, then freed in random order, each pattern checked just before
 * its free. */
static void pattern_all_live_then_freed_in_random_order(patterned_t *t) {
  const ops_t *o = t->o;
  size_t *order = calloc(t->count, sizeof *order);
  cr_assert_not_null(order);
  for (size_t i = 0; i < t->count; i++) {
    size_t s = pattern_rand_size(&t->r);
    void *q = o->alloc(s);
    cr_assert_not_null(q, "[%s] malloc(%zu) failed", o->name, s);
    pattern_take(t, i, q);
    cr_assert_geq(t->n[i], s);
    order[i] = i;
  }
  for (size_t i = t->count - 1; i > 0; i--) {
    size_t j = tu_rng_range(&t->r, 0, i), k = order[i];
    order[i] = order[j];
    order[j] = k;
  }
  for (size_t k = 0; k < t->count; k++) {
    size_t i = order[k];
    size_t off = tu_check(t->p[i], t->n[i], t->seed[i]);
    cr_assert_eq(off, SIZE_MAX, "[%s] object %zu (%p, usable %zu) clobbered at offset %zu before its free", o->name,
                 i, t->p[i], t->n[i], off);
    o->release(t->p[i]);
    t->p[i] = NULL;
  }
  free(order);
}

/* steps random operations on random slots: a live object is checked, then grown or shrunk
 * by realloc (which must keep the bytes both sizes hold) or freed; an empty slot gets a new
 * object from malloc or calloc. Then every live object is checked and freed. */
static void pattern_churn_keeps_contents(patterned_t *t, size_t steps) {
  const ops_t *o = t->o;
  for (size_t step = 0; step < steps; step++) {
    size_t i = tu_rng_range(&t->r, 0, t->count - 1);
    if (!t->p[i]) {
      size_t s = pattern_rand_size(&t->r);
      void *q = tu_rng_range(&t->r, 0, 4) == 0 ? o->zalloc(1, s) : o->alloc(s);
      cr_assert_not_null(q, "[%s] allocation of %zu failed", o->name, s);
      pattern_take(t, i, q);
      continue;
    }
    size_t off = tu_check(t->p[i], t->n[i], t->seed[i]);
    cr_assert_eq(off, SIZE_MAX, "[%s] churn step %zu: object %zu (%p, usable %zu) clobbered at offset %zu", o->name,
                 step, i, t->p[i], t->n[i], off);
    if (tu_rng_range(&t->r, 0, 2) == 0) {
      size_t s = pattern_rand_size(&t->r) + 1; /* realloc(p, 0) would free */
      void *q = o->resize(t->p[i], s);
      cr_assert_not_null(q, "[%s] realloc(%zu) failed", o->name, s);
      size_t keep = s < t->n[i] ? s : t->n[i];
      off = tu_check(q, keep, t->seed[i]);
      cr_assert_eq(off, SIZE_MAX, "[%s] realloc to %zu lost byte %zu", o->name, s, off);
      pattern_take(t, i, q);
    } else {
      o->release(t->p[i]);
      t->p[i] = NULL;
    }
  }
  for (size_t i = 0; i < t->count; i++) {
    if (!t->p[i]) continue;
    size_t off = tu_check(t->p[i], t->n[i], t->seed[i]);
    cr_assert_eq(off, SIZE_MAX, "[%s] final check: object %zu clobbered at offset %zu", o->name, i, off);
    o->release(t->p[i]);
  }
}

/* Pattern test: thousands of random sizes are allocated and each filled (all
 * usable bytes) with its own pattern; then freed in random order with a check
 * before each free; then a random churn of malloc/realloc/free. A clobbered
 * pattern means two live objects overlapped (or the allocator wrote into one). */
Test(malloc, random_pattern_no_overlap, .timeout = 180) {
  enum { N = 6000, CHURN = 40000 };
  FOR_OPS(o) {
    patterned_t t = {.o = o, .r = tu_rng(o == &SM ? 7 : 3), .count = N, .next_seed = 1};
    t.p = calloc(N, sizeof *t.p);
    t.n = calloc(N, sizeof *t.n);
    t.seed = calloc(N, sizeof *t.seed);
    cr_assert(t.p && t.n && t.seed);
    pattern_all_live_then_freed_in_random_order(&t);
    pattern_churn_keeps_contents(&t, CHURN);
    free(t.p);
    free(t.n);
    free(t.seed);
  }
}

/* glibc's internal entry points, which some programs and libraries call
 * directly, are slotmalloc's too (else such objects would be glibc's and a
 * plain free of them would be an invalid free). */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);
Test(malloc, libc_internal_names_are_ours) {
  void *p[4];
  const char *what[4] = {"__libc_malloc", "__libc_calloc", "__libc_realloc", "__libc_memalign"};
  p[0] = __libc_malloc(100);
  p[1] = __libc_calloc(10, 10);
  p[2] = __libc_realloc(NULL, 100);
  p[3] = __libc_memalign(256, 100);
  for (int i = 0; i < 4; i++) {
    cr_assert_not_null(p[i], "%s failed", what[i]);
    cr_assert_neq(sm_handle_of(p[i]), 0, "%s(100) = %p is not a slotmalloc object (glibc's?)", what[i], p[i]);
  }
  cr_assert(is_aligned(p[3], 256), "__libc_memalign(256, 100) = %p misaligned", p[3]);
  cr_assert(tu_all_zero(p[1], 100), "__libc_calloc did not zero");
  p[2] = __libc_realloc(p[2], 5000);
  cr_assert_not_null(p[2]);
  for (int i = 0; i < 4; i++) (i % 2 ? free : __libc_free)(p[i]);
}

/* malloc_trim gives memory back at once: after 20,000 objects and a large one
 * are freed, it reports a release and the committed bytes go down. */
Test(malloc, malloc_trim_releases_memory) {
  enum { N = 20000 };
  static void *v[N];
  for (int i = 0; i < N; i++) {
    v[i] = malloc(200);
    cr_assert_not_null(v[i]);
    memset(v[i], 1, 200);
  }
  void *big = malloc((size_t)6 << 20);
  cr_assert_not_null(big);
  memset(big, 1, (size_t)6 << 20);
  for (int i = 0; i < N; i++) free(v[i]);
  free(big);
  sm_stats_t before, after;
  sm_arena_stats(NULL, &before);
  cr_assert_eq(malloc_trim(0), 1, "malloc_trim released nothing");
  sm_arena_stats(NULL, &after);
  cr_assert_lt(after.bytes_committed + ((size_t)4 << 20), before.bytes_committed,
               "committed %zu before malloc_trim, %zu after", before.bytes_committed, after.bytes_committed);
}
