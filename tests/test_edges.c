/* test_edges.c: regressions for correct programs that slotmalloc once aborted
 * or answered wrongly, at the edges of the malloc interface and the handle and
 * arena APIs. Each test names the fault it would have caught. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "slotmalloc.h"
#include "testutil.h"

static void assert_handle_works(void *p, const char *what) {
  sm_handle_t h = sm_handle_of(p);
  cr_assert_neq(h, 0, "%s: no handle for a live object", what);
  cr_assert_eq(sm_deref(h), p, "%s: the handle of a live object does not dereference to it", what);
  cr_assert_eq(sm_handle_of(sm_deref(h)), h, "%s", what);
}

/* A large object unmapped on free released its segment id; a slot segment
 * mapped later took that id, whose table entry still said "large", and every
 * handle of the new segment was rejected (sm_deref NULL, sm_hfree ESTALE). */
Test(edges, slot_segment_after_unmapped_large_keeps_handles, .timeout = 120) {
  static const size_t sizes[] = {100000, 20000, 1000, 48};
  for (int round = 0; round < 3; round++) {
    void *big = malloc(40 * MiB); /* beyond the large cache: unmapped on free */
    cr_assert_not_null(big);
    free(big);
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
      /* enough objects to need a new segment of each kind */
      size_t n = 5 * MiB / sizes[s] + 2;
      if (n > 4000) n = 4000;
      void **objs = calloc(n, sizeof *objs);
      sm_handle_t *hs = calloc(n, sizeof *hs);
      for (size_t i = 0; i < n; i++) {
        objs[i] = malloc(sizes[s]);
        cr_assert_not_null(objs[i]);
        assert_handle_works(objs[i], "object in a new slot segment");
        hs[i] = sm_handle_of(objs[i]);
      }
      for (size_t i = 0; i < n; i++) cr_assert_eq(sm_hfree(hs[i]), 0, "sm_hfree of a live object failed");
      for (size_t i = 0; i < n; i++) cr_assert_null(sm_deref(hs[i]));
      free(objs);
      free(hs);
    }
  }
}

/* posix_memalign with a large alignment and size 0 put the object one past the
 * end of its mapping: free called it an invalid free and aborted, and
 * malloc_usable_size and sm_handle_of gave 0. */
Test(edges, zero_size_with_large_alignment, .timeout = 60) {
  static const size_t aligns[] = {128 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 8 * MiB};
  for (int round = 0; round < 2; round++) { /* the second round meets the large cache */
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
      void *p = NULL;
      cr_assert_eq(posix_memalign(&p, aligns[i], 0), 0);
      cr_assert_eq((uintptr_t)tu_opaque(p) % aligns[i], 0);
      cr_assert_gt(malloc_usable_size(p), 0, "usable size of a size-0 object aligned to %zu", aligns[i]);
      assert_handle_works(p, "size-0 aligned object");
      free(p);
      void *q = aligned_alloc(aligns[i], 0);
      cr_assert_not_null(q);
      assert_handle_works(q, "size-0 aligned_alloc");
      free(q);
    }
    /* a cached segment of an aligned object, then size 0 at that alignment */
    void *r = aligned_alloc(256 * KiB, 300 * KiB);
    cr_assert_not_null(r);
    free(r);
    void *z = aligned_alloc(256 * KiB, 0);
    cr_assert_not_null(z);
    assert_handle_works(z, "size-0 object from the large cache");
    free(z);
  }
}

/* A cached large segment reused for a bigger request and moved by the resize
 * kept the alignment it was first mapped with (4 MiB), not the one asked for. */
Test(edges, large_alignment_survives_cache_and_resize, .timeout = 120) {
  /* The exact case: a cached 4 MiB-aligned object that happens to be 8 MiB
   * aligned, a foreign page right after its mapping so that growing it in
   * place fails, then an 8 MiB-aligned request it is reused (and moved) for. */
  int forced = 0;
  for (int i = 0; i < 64; i++) {
    (void)tu_opaque(aligned_alloc(4 * MiB, 1 * MiB)); /* held: the next one lands elsewhere */
    char *a = tu_opaque(aligned_alloc(4 * MiB, 1 * MiB));
    cr_assert_not_null(a);
    bool at8 = (uintptr_t)a % (8 * MiB) == 0;
    free(a); /* into the large cache */
    void *guard = MAP_FAILED;
    if (at8) guard = mmap(a + 1 * MiB, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    forced += guard != MAP_FAILED;
    char *b = tu_opaque(aligned_alloc(8 * MiB, 6 * MiB)); /* opaque: the compiler trusts alloc_align */
    cr_assert_not_null(b);
    cr_assert_eq((uintptr_t)b % (8 * MiB), 0, "aligned_alloc(8 MiB, 6 MiB) gave %p", (void *)b);
    memset(b, 1, 6 * MiB);
    free(b);
    if (guard != MAP_FAILED) munmap(guard, 4096);
  }
  cr_assert_gt(forced, 0, "the case was never set up");
  /* and mixed, without forcing anything */
  for (int i = 0; i < 24; i++) {
    void *a = aligned_alloc(4 * MiB, 1 * MiB);
    void *block = malloc(64 * KiB); /* other mappings around, so growth moves */
    cr_assert_not_null(a);
    free(a);
    void *b = tu_opaque(aligned_alloc(8 * MiB, 6 * MiB));
    cr_assert_not_null(b);
    cr_assert_eq((uintptr_t)b % (8 * MiB), 0, "aligned_alloc(8 MiB, 6 MiB) gave %p", b);
    memset(b, 1, 6 * MiB);
    void *c = tu_opaque(aligned_alloc(16 * MiB, 3 * MiB));
    cr_assert_eq((uintptr_t)c % (16 * MiB), 0);
    free(b);
    free(c);
    free(block);
  }
}

/* sm_arena_promote copied the object into a new one aligned to 16 only. */
Test(edges, promote_keeps_alignment, .timeout = 60) {
  static const size_t aligns[] = {64, 4 * KiB, 64 * KiB, 128 * KiB, 1 * MiB, 8 * MiB};
  static const size_t sizes[] = {16, 5000, 300 * KiB};
  sm_arena_t *parent = sm_arena_new(NULL);
  for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
      sm_arena_t *child = sm_arena_new(parent);
      char *p = tu_opaque(sm_arena_aligned_alloc(child, aligns[i], sizes[s]));
      cr_assert_not_null(p);
      tu_fill(p, sizes[s], i * 7 + s);
      char *q = tu_opaque(sm_arena_promote(p));
      cr_assert_not_null(q);
      cr_assert_eq((uintptr_t)q % aligns[i], 0, "promote of an object aligned to %zu gave %p", aligns[i], (void *)q);
      cr_assert_eq(tu_check(q, sizes[s], i * 7 + s), SIZE_MAX);
      cr_assert_eq(sm_arena_of(q), parent);
      sm_arena_release(child);
      free(q);
    }
  }
  sm_arena_release(parent);
}

/* memalign(2^63, n) is a valid alignment that cannot be satisfied: ENOMEM, as
 * glibc answers (EINVAL only above SIZE_MAX/2+1, which memalign rounds up). */
Test(edges, memalign_huge_alignment_enomem) {
  errno = 0;
  cr_assert_null(memalign((size_t)1 << 63, 16));
  cr_assert_eq(errno, ENOMEM);
  errno = 0;
  cr_assert_null(memalign(((size_t)1 << 63) + 1, 16));
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(memalign(SIZE_MAX, 16));
  cr_assert_eq(errno, EINVAL);
  void *p = (void *)1;
  cr_assert_eq(posix_memalign(&p, (size_t)1 << 63, 16), ENOMEM);
  cr_assert_eq(p, (void *)1, "posix_memalign changed *memptr on failure");
  errno = 0;
  cr_assert_null(aligned_alloc((size_t)1 << 63, 16));
  cr_assert_eq(errno, ENOMEM);
  for (int shift = 47; shift < 63; shift += 3) {
    errno = 0;
    cr_assert_null(memalign((size_t)1 << shift, 16), "memalign(2^%d) cannot succeed in 47 bits", shift);
    cr_assert_eq(errno, ENOMEM);
  }
}

/* The byte cap counted requested bytes in places where an object takes more
 * (a large object's whole mapping), so the arena could hold more than its cap. */
Test(edges, arena_limit_counts_what_objects_occupy, .timeout = 60) {
  static const struct {
    size_t align, size;
  } reqs[] = {
      {16, 16}, {16, 100}, {4096, 16}, {128 * KiB, 16}, {1 * MiB, 10}, {16, 300 * KiB}, {64 * KiB, 1},
  };
  for (size_t r = 0; r < sizeof reqs / sizeof *reqs; r++) {
    for (size_t cap = 1000; cap <= 4 * MiB; cap *= 4) {
      sm_arena_t *a = sm_arena_new(NULL);
      cr_assert_eq(sm_arena_set_limit(a, cap), 0);
      size_t held = 0, n = 0;
      void *objs[4096];
      while (n < 4096) {
        void *p = sm_arena_aligned_alloc(a, reqs[r].align, reqs[r].size);
        if (!p) {
          cr_assert_eq(errno, ENOMEM);
          break;
        }
        objs[n++] = p;
        held += malloc_usable_size(p);
        cr_assert_leq(held, cap, "cap %zu exceeded: %zu objects of %zu bytes (align %zu) hold %zu bytes", cap, n,
                      reqs[r].size, reqs[r].align, held);
      }
      for (size_t i = 0; i < n; i++) free(objs[i]);
      /* freed bytes are counted back: the same fits again */
      void *again = sm_arena_aligned_alloc(a, reqs[r].align, reqs[r].size);
      if (n) cr_assert_not_null(again, "a capped arena emptied by free cannot allocate again");
      free(again);
      sm_arena_release(a);
    }
  }
}

/* sm_hfree of a forged handle whose generation and epoch are 0, naming the
 * segment id of a freed (cached) large object, matched the dead object's tag
 * (0) and freed the segment a second time: the cache then held it twice and
 * two live objects shared memory. */
Test(edges, hfree_forged_handle_of_dead_large_object) {
  for (int round = 0; round < 4; round++) {
    void *p = sm_malloc(1 * MiB);
    sm_handle_t h = sm_handle_of(p);
    cr_assert_neq(h, 0);
    sm_free(p);                         /* into the large cache */
    sm_handle_t forged = h >> 44 << 44; /* the same segment id, every other field 0 */
    if (!__builtin_parityll(forged)) forged |= 1;
    cr_assert_eq(sm_hfree(forged), ESTALE, "a forged handle freed a dead large object");
    cr_assert_null(sm_deref(forged));
    char *a = sm_malloc(1 * MiB), *b = sm_malloc(1 * MiB);
    cr_assert(a && b && a != b, "two live objects share memory: %p %p", (void *)a, (void *)b);
    memset(a, 1, 1 * MiB);
    memset(b, 2, 1 * MiB);
    cr_assert_eq(a[1 * MiB - 1], 1);
    sm_free(a);
    sm_free(b);
  }
}
