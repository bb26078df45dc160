/* test_handle.c: API tests of slotmalloc's generational handles, through the
 * public header only.
 *
 * sm_halloc/sm_arena_halloc/sm_handle_of/sm_deref/sm_hfree: handles of every
 * kind of object, staleness after free and after slot reuse, and sm_deref on
 * values that name no live object (0, bit flips, random and forged values,
 * values that point at unmapped memory), which must give NULL and never fault.
 *
 * Plain malloc/free here are slotmalloc's: the test is linked with the shared
 * library, which defines the standard names. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <slotmalloc.h>

#include "testutil.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------- */

/* The file's random stream: this state as is (not through tu_rng's seed mixing). */
static tu_rng_t rng = {0x4a4e444cULL};

/* The outcome of sm_deref on a value that should name nothing (or exactly a live object). */
struct probe {
  size_t tried;
  size_t non_null;    /* deref gave an address */
  size_t not_exact;   /* ... which is not a live object whose handle is the value */
  uint64_t first_bad; /* the first value with a non-NULL result */
};

static void probe_value(struct probe *pr, uint64_t v) {
  pr->tried++;
  void *r = sm_deref(v);
  if (r == NULL) return;
  if (pr->non_null++ == 0) pr->first_bad = v;
  if (sm_handle_of(r) != v || sm_arena_of(r) == NULL) pr->not_exact++;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* ---- handles of live objects ------------------------------------------------ */

/* sm_halloc/sm_arena_halloc give handles that deref to writable objects of the size. */
Test(handle, halloc_deref_writable) {
  size_t sizes[TU_MAX_SIZES];
  size_t n = tu_make_sizes(sizes, 8 * MiB);
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_t *root = sm_arena_parent(a);
  sm_handle_t hs[2 * TU_MAX_SIZES];
  for (size_t i = 0; i < n; i++) {
    for (int in_arena = 0; in_arena < 2; in_arena++) {
      size_t s = sizes[i];
      sm_handle_t h = in_arena ? sm_arena_halloc(a, s) : sm_halloc(s);
      cr_assert_neq(h, 0, "%s(%zu) returned 0", in_arena ? "sm_arena_halloc" : "sm_halloc", s);
      unsigned char *p = sm_deref(h);
      cr_assert_not_null(p, "fresh handle of %zu B derefs to NULL", s);
      cr_assert_geq(sm_usable_size(p), s);
      memset(p, (int)(i + 1), s);
      cr_assert_eq(p[0], (unsigned char)(i + 1));
      cr_assert_eq(p[s - 1], (unsigned char)(i + 1));
      cr_assert_eq(sm_handle_of(p), h, "sm_handle_of(sm_deref(h)) != h for %zu B", s);
      cr_assert_eq(sm_deref(h), p, "a second deref gave another address");
      cr_assert_eq(sm_arena_of(p), in_arena ? a : root, "halloc'd object in the wrong arena");
      hs[2 * i + (size_t)in_arena] = h;
    }
  }
  /* All distinct, all still live and holding their bytes. */
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < 2; k++) {
      unsigned char *p = sm_deref(hs[2 * i + (size_t)k]);
      cr_assert_not_null(p);
      cr_assert_eq(p[sizes[i] - 1], (unsigned char)(i + 1), "object of %zu B overwritten", sizes[i]);
    }
  uint64_t sorted[2 * TU_MAX_SIZES];
  memcpy(sorted, hs, 2 * n * sizeof hs[0]);
  qsort(sorted, 2 * n, sizeof sorted[0], cmp_u64);
  for (size_t i = 1; i < 2 * n; i++)
    cr_assert_neq(sorted[i], sorted[i - 1], "two live objects share handle %#llx", (unsigned long long)sorted[i]);
  for (size_t i = 0; i < n; i++) cr_assert_eq(sm_hfree(hs[2 * i]), 0);
  tu_arena_drop(a);
  for (size_t i = 0; i < 2 * n; i++) cr_assert_null(sm_deref(hs[i]));
}

/* sm_handle_of works for malloc'd objects of every size (and aligned ones); free makes it stale. */
Test(handle, handle_of_malloc_every_size) {
  size_t sizes[TU_MAX_SIZES];
  size_t n = tu_make_sizes(sizes, 8 * MiB);
  for (size_t i = 0; i < n; i++) {
    size_t s = sizes[i];
    void *kinds[3];
    kinds[0] = malloc(s);
    kinds[1] = calloc(1, s);
    kinds[2] = realloc(malloc(s / 2 + 1), s);
    for (int k = 0; k < 3; k++) {
      void *p = kinds[k];
      cr_assert_not_null(p);
      sm_handle_t h = sm_handle_of(p);
      cr_assert_neq(h, 0, "no handle for a %zu B object (kind %d)", s, k);
      cr_assert_eq(sm_deref(h), p, "handle of a %zu B object (kind %d) derefs elsewhere", s, k);
      void *stale = tu_opaque(p);
      free(p);
      cr_assert_null(sm_deref(h), "handle of a freed %zu B object (kind %d) still derefs", s, k);
      cr_assert_eq(sm_handle_of(stale), 0, "a freed %zu B object still has a handle", s);
    }
  }
  for (size_t al = 16; al <= 4 * MiB; al *= 2) {
    size_t asz[] = {16, al, al + al / 2};
    for (int k = 0; k < 3; k++) {
      void *p = aligned_alloc(al, asz[k]);
      void *q = NULL;
      cr_assert_not_null(p);
      cr_assert_eq(posix_memalign(&q, al, asz[k]), 0);
      void *both[2] = {p, q};
      for (int j = 0; j < 2; j++) {
        cr_assert_eq((uintptr_t)both[j] % al, 0);
        sm_handle_t h = sm_handle_of(both[j]);
        cr_assert_neq(h, 0, "no handle for an object aligned to %zu (size %zu)", al, asz[k]);
        cr_assert_eq(sm_deref(h), both[j], "aligned object's handle derefs elsewhere (al %zu)", al);
        free(both[j]);
        cr_assert_null(sm_deref(h), "handle of a freed aligned object still derefs (al %zu)", al);
      }
    }
  }
}

/* sm_handle_of is 0 for NULL, stack, global, interior and foreign addresses. */
static char global_bytes[64];
Test(handle, handle_of_non_objects_is_zero) {
  char stack_bytes[64];
  memset(stack_bytes, 0, sizeof stack_bytes);
  cr_assert_eq(sm_handle_of(NULL), 0);
  cr_assert_eq(sm_handle_of(stack_bytes), 0, "stack address has a handle");
  cr_assert_eq(sm_handle_of(global_bytes), 0, "global address has a handle");
  void *foreign = mmap(NULL, 64 * KiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(foreign, MAP_FAILED);
  cr_assert_eq(sm_handle_of(foreign), 0, "foreign mmap has a handle");
  munmap(foreign, 64 * KiB);
  size_t sizes[] = {32, 100, 4096, 70000, 5 * MiB};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char *p = malloc(sizes[i]);
    cr_assert_not_null(p);
    cr_assert_eq(sm_handle_of(p + 1), 0, "interior p+1 of %zu B has a handle", sizes[i]);
    cr_assert_eq(sm_handle_of(p + 16), 0, "interior p+16 of %zu B has a handle", sizes[i]);
    cr_assert_eq(sm_handle_of(p + sizes[i] - 1), 0, "interior end of %zu B has a handle", sizes[i]);
    free(p);
  }
}

/* sm_deref(0) is NULL and sm_hfree(0) is an error, not an abort. */
Test(handle, zero_is_no_handle) {
  cr_assert_null(sm_deref(0));
  cr_assert_neq(sm_hfree(0), 0, "sm_hfree(0) returned 0");
}

/* sm_hfree(h) is 0, then h is stale and a second sm_hfree(h) is ESTALE, even after slot reuse. */
Test(handle, hfree_then_stale_twice) {
  size_t sizes[] = {16, 48, 500, 4096, 70000, 300 * KiB, 5 * MiB};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t s = sizes[i];
    sm_handle_t h = sm_halloc(s);
    cr_assert_neq(h, 0);
    void *p = sm_deref(h);
    cr_assert_not_null(p);
    cr_assert_eq(sm_hfree(h), 0, "first sm_hfree of %zu B failed", s);
    cr_assert_null(sm_deref(h), "handle derefs after sm_hfree (%zu B)", s);
    int rc = sm_hfree(h);
    cr_assert_eq(rc, ESTALE, "second sm_hfree of %zu B: %d, want ESTALE", s, rc);
    cr_assert_eq(sm_hfree(h), ESTALE, "third sm_hfree of %zu B not ESTALE", s);
    /* The slot is reused: the stale handle must neither deref nor free the new object. */
    void *q[8];
    sm_handle_t hq[8];
    for (int k = 0; k < 8; k++) {
      q[k] = malloc(s);
      cr_assert_not_null(q[k]);
      hq[k] = sm_handle_of(q[k]);
      cr_assert_neq(hq[k], h, "a new object got the freed object's handle (%zu B)", s);
    }
    cr_assert_null(sm_deref(h), "stale handle derefs after slot reuse (%zu B)", s);
    cr_assert_eq(sm_hfree(h), ESTALE, "stale sm_hfree after reuse not ESTALE (%zu B)", s);
    for (int k = 0; k < 8; k++) {
      cr_assert_eq(sm_deref(hq[k]), q[k], "a stale sm_hfree freed the slot's new object");
      cr_assert_eq(sm_hfree(hq[k]), 0);
    }
  }
}

/* sm_hfree of a handle of a malloc'd object frees it: free() of it afterwards would be a double free. */
Test(handle, hfree_of_malloc_object) {
  void *p = malloc(200);
  cr_assert_not_null(p);
  sm_handle_t h = sm_handle_of(p);
  cr_assert_neq(h, 0);
  cr_assert_eq(sm_hfree(h), 0);
  cr_assert_null(sm_deref(h));
  cr_assert_null(sm_arena_of(tu_opaque(p)), "object freed by sm_hfree still has an arena");
}

/* ---- values that name nothing ------------------------------------------------- */

/* Every single-bit flip of a valid handle derefs to NULL, for many handles of many sizes. */
Test(handle, single_bit_flips_deref_null) {
  size_t sizes[TU_MAX_SIZES];
  size_t n = tu_make_sizes(sizes, 8 * MiB);
  enum { PER = 6, CAP = TU_MAX_SIZES * PER + 64 };
  static sm_handle_t hs[CAP];
  static void *ps[CAP];
  size_t nh = 0;
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < PER; k++) {
      size_t s = sizes[i];
      if (s >= 1 * MiB && k >= 2) break;
      void *p;
      switch (k % 3) {
        case 0: p = malloc(s); break;
        case 1: p = sm_arena_malloc(a, s); break;
        default: p = sm_deref(sm_halloc(s)); break;
      }
      cr_assert_not_null(p);
      ps[nh] = p;
      hs[nh++] = sm_handle_of(p);
    }
  }
  for (size_t al = 64; al <= 4 * MiB; al *= 4) {
    void *p = aligned_alloc(al, al);
    cr_assert_not_null(p);
    ps[nh] = p;
    hs[nh++] = sm_handle_of(p);
  }
  size_t bad = 0;
  uint64_t bad_h = 0;
  int bad_bit = -1;
  for (size_t i = 0; i < nh; i++) {
    cr_assert_neq(hs[i], 0);
    cr_assert_eq(sm_deref(hs[i]), ps[i]);
    for (int b = 0; b < 64; b++) {
      if (sm_deref(hs[i] ^ ((uint64_t)1 << b)) != NULL) {
        if (bad++ == 0) bad_h = hs[i], bad_bit = b;
      }
    }
  }
  cr_assert_eq(bad, 0, "%zu of %zu single-bit flips deref to non-NULL (first: handle %#llx bit %d)", bad, nh * 64,
               (unsigned long long)bad_h, bad_bit);
  /* The flips did not disturb the originals. */
  for (size_t i = 0; i < nh; i++) cr_assert_eq(sm_deref(hs[i]), ps[i]);
  for (size_t i = 0; i < nh; i++) cr_assert_eq(sm_hfree(hs[i]), 0);
  tu_arena_drop(a);
}

/* 1,000,000 random 64-bit values (fixed seed) all deref to NULL, with a populated heap. */
Test(handle, random_values_deref_null) {
  enum { LIVE = 20000 };
  static void *live[LIVE];
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t i = 0; i < LIVE; i++) {
    size_t s = 16 + tu_rng_next(&rng) % 4000;
    if (i % 1000 == 0) s = 200 * KiB + tu_rng_next(&rng) % (5 * MiB);
    live[i] = i % 2 ? malloc(s) : sm_arena_malloc(a, s);
    cr_assert_not_null(live[i]);
  }
  rng = tu_rng(0x00c0ffee);
  struct probe pr = {0};
  for (size_t i = 0; i < 1000000; i++) probe_value(&pr, tu_rng_next(&rng));
  cr_assert_eq(pr.not_exact, 0, "%zu random values deref to memory that is not the live object they name",
               pr.not_exact);
  cr_assert_eq(pr.non_null, 0, "%zu of %zu random values deref to non-NULL (first: %#llx)", pr.non_null, pr.tried,
               (unsigned long long)pr.first_bad);
  for (size_t i = 0; i < LIVE; i++) free(live[i]);
  tu_arena_drop(a);
}

/* One 64 B slot through several lives: the handles of its earlier lives and of the live one. */
enum { SLOT_LIVES = 64, SLOT_REUSE_TRIES = 4096 };
struct slot_lives {
  void *slot; /* the slot's address, the same in every life */
  sm_handle_t olds[SLOT_LIVES];
  size_t nold;
  sm_handle_t live; /* the handle of the current life; free(slot) ends it */
};

/* Frees the slot's object and allocates 64 B objects until the slot comes back, up to
 * SLOT_LIVES times, keeping the handle of each earlier life. Asserts the slot came back at
 * least once, each time under a new handle. */
static void slot_lives_make(struct slot_lives *sl) {
  static void *held[SLOT_REUSE_TRIES];
  void *cur = malloc(64);
  cr_assert_not_null(cur);
  sl->slot = cur;
  sl->nold = 0;
  sm_handle_t h = sm_handle_of(cur);
  cr_assert_neq(h, 0);
  while (sl->nold < SLOT_LIVES) {
    free(cur);
    void *got = NULL;
    size_t nheld = 0;
    for (size_t t = 0; t < SLOT_REUSE_TRIES; t++) {
      void *q = malloc(64);
      cr_assert_not_null(q);
      if (q == sl->slot) {
        got = q;
        break;
      }
      held[nheld++] = q;
    }
    for (size_t t = 0; t < nheld; t++) free(held[t]);
    if (!got) break;
    sm_handle_t hn = sm_handle_of(got);
    cr_assert_neq(hn, 0);
    cr_assert_neq(hn, h, "the slot's new life has its old handle");
    sl->olds[sl->nold++] = h;
    cur = got;
    h = hn;
  }
  cr_assert_gt(sl->nold, 0, "a freed 64 B slot was not reused within %d allocations", SLOT_REUSE_TRIES);
  sl->live = h;
  cr_assert_eq(sm_deref(sl->live), sl->slot);
}

/* The stale handles of the slot's earlier lives deref to NULL. */
static void assert_earlier_lives_deref_null(const struct slot_lives *sl) {
  for (size_t i = 0; i < sl->nold; i++)
    cr_assert_null(sm_deref(sl->olds[i]), "stale handle of the slot's life %zu derefs", i);
}

/* Probes values that differ from live only in the bits of gmask: random ones, and the
 * generations ahead of and behind the live one, counted from each bit of the mask
 * (whichever is the generation field's low end). */
static void probe_other_generations(struct probe *pr, uint64_t live, uint64_t gmask) {
  rng = tu_rng(0xf0f0);
  for (int i = 0; i < 200000; i++) {
    uint64_t v = (live & ~gmask) | (tu_rng_next(&rng) & gmask);
    if (v != live) probe_value(pr, v);
  }
  for (int lo = 0; lo < 64; lo++) {
    if (!(gmask >> lo & 1)) continue;
    for (uint64_t k = 1; k <= 1024; k++) {
      uint64_t up = (live & ~gmask) | ((live + (k << lo)) & gmask);
      uint64_t down = (live & ~gmask) | ((live - (k << lo)) & gmask);
      if (up != live) probe_value(pr, up);
      if (down != live) probe_value(pr, down);
    }
  }
}

/* Values that differ from the live handle only in the bits that change between lives of
 * its slot (generation and checks) name the slot at another generation: none is live, so
 * all deref to NULL. */
static void assert_other_generations_deref_null(const struct slot_lives *sl) {
  uint64_t gmask = 0;
  for (size_t i = 0; i < sl->nold; i++) gmask |= sl->olds[i] ^ sl->live;
  cr_assert_neq(gmask, 0);
  struct probe strict = {0};
  probe_other_generations(&strict, sl->live, gmask);
  cr_assert_eq(strict.non_null, 0,
               "%zu of %zu values forged from a live handle's generation bits deref (first %#llx, "
               "live %#llx, mask %#llx)",
               strict.non_null, strict.tried, (unsigned long long)strict.first_bad, (unsigned long long)sl->live,
               (unsigned long long)gmask);
}

/* Small additions to the live handle at every bit position (any field): NULL, or exactly
 * a live object. */
static void assert_small_offsets_deref_exact_or_null(const struct slot_lives *sl) {
  struct probe loose = {0};
  for (int b = 0; b < 64; b++)
    for (uint64_t k = 1; k <= 64; k++) {
      probe_value(&loose, sl->live + (k << b));
      probe_value(&loose, sl->live - (k << b));
    }
  cr_assert_eq(loose.not_exact, 0, "%zu forged values deref to memory they do not name", loose.not_exact);
}

/* Values forged from a valid handle by changing its generation bits deref to NULL. */
Test(handle, forged_generations_deref_null) {
  struct slot_lives sl;
  slot_lives_make(&sl);
  assert_earlier_lives_deref_null(&sl);
  assert_other_generations_deref_null(&sl);
  assert_small_offsets_deref_exact_or_null(&sl);
  cr_assert_eq(sm_deref(sl.live), sl.slot, "the live handle stopped working");
  free(sl.slot);
}

/* Handles of a closed, collected arena's recycled blocks stay stale; forged mixes deref NULL. */
Test(handle, recycled_block_handles_stale) {
  enum { N = 20000 };
  static sm_handle_t first[N], second[N];
  sm_arena_t *a1 = sm_arena_new(NULL);
  cr_assert_not_null(a1);
  for (size_t i = 0; i < N; i++) {
    first[i] = sm_arena_halloc(a1, 48);
    cr_assert_neq(first[i], 0);
  }
  tu_arena_drop(a1);
  sm_collect(SIZE_MAX);
  sm_arena_t *a2 = sm_arena_new(NULL);
  cr_assert_not_null(a2);
  for (size_t i = 0; i < N; i++) {
    second[i] = sm_arena_halloc(a2, 48);
    cr_assert_neq(second[i], 0);
  }
  size_t live_old = 0;
  for (size_t i = 0; i < N; i++) live_old += sm_deref(first[i]) != NULL;
  cr_assert_eq(live_old, 0, "%zu handles of a closed arena deref after its blocks were reused", live_old);
  /* Mixes of an old and a new handle's differing bits: NULL, or exactly a live object. */
  struct probe pr = {0};
  for (size_t i = 0; i < N; i++) {
    uint64_t d = first[i] ^ second[i];
    for (int k = 0; k < 8; k++) {
      uint64_t v = second[i] ^ (tu_rng_next(&rng) & d);
      if (v != second[i]) probe_value(&pr, v);
    }
  }
  cr_assert_eq(pr.not_exact, 0, "%zu mixed values deref to memory they do not name", pr.not_exact);
  tu_arena_drop(a2);
  for (size_t i = 0; i < N; i++) cr_assert_null(sm_deref(second[i]));
}

/* One slot reused 1,000,000 times: a handle of its first life stays NULL on every iteration. */
Test(handle, slot_reuse_million_times) {
  void *p = malloc(48);
  cr_assert_not_null(p);
  void *slot = p;
  sm_handle_t first = sm_handle_of(p);
  cr_assert_neq(first, 0);
  free(p);
  size_t reused = 0, revived = 0, same_handle = 0;
  size_t first_revived = SIZE_MAX;
  sm_handle_t prev = 0;
  for (size_t i = 0; i < 1000000; i++) {
    void *q = malloc(48);
    if (!q) cr_assert_fail("malloc(48) failed at iteration %zu", i);
    reused += q == slot;
    sm_handle_t hq = sm_handle_of(q);
    same_handle += hq == first || hq == prev;
    if (sm_deref(first) != NULL && revived++ == 0) first_revived = i;
    free(q);
    if (sm_deref(first) != NULL && revived++ == 0) first_revived = i;
    if (sm_deref(hq) != NULL && revived++ == 0) first_revived = i;
    prev = hq;
  }
  cr_assert_eq(revived, 0, "a stale handle derefs %zu times (first at iteration %zu)", revived, first_revived);
  cr_assert_eq(same_handle, 0, "%zu reallocations repeated an earlier handle", same_handle);
  cr_assert_gt(reused, 0, "the slot was never reused; the test did not test reuse");
}

/* The same through sm_halloc/sm_hfree, with stale handles of every life checked afterwards. */
Test(handle, slot_reuse_halloc_hfree) {
  enum { ITER = 200000, KEEP = 4096 };
  static sm_handle_t kept[KEEP];
  sm_handle_t first = sm_halloc(32);
  cr_assert_neq(first, 0);
  cr_assert_eq(sm_hfree(first), 0);
  size_t revived = 0, bad_free = 0;
  for (size_t i = 0; i < ITER; i++) {
    sm_handle_t h = sm_halloc(32);
    cr_assert_neq(h, 0);
    if (sm_deref(first) != NULL) revived++;
    if (sm_hfree(first) != ESTALE) bad_free++;
    if (sm_hfree(h) != 0) bad_free++;
    kept[i % KEEP] = h;
  }
  cr_assert_eq(revived, 0, "the first handle revived %zu times", revived);
  cr_assert_eq(bad_free, 0, "%zu sm_hfree results were wrong", bad_free);
  for (size_t i = 0; i < KEEP; i++) {
    cr_assert_null(sm_deref(kept[i]), "a stale handle of a later life derefs");
    cr_assert_eq(sm_hfree(kept[i]), ESTALE);
  }
}

/* sm_deref never faults on values that point at, or are built from, unmapped memory. */
Test(handle, deref_never_faults_on_unmapped) {
  /* Addresses that were mapped and no longer are. */
  enum { NA = 16 };
  uint64_t holes[NA];
  for (int i = 0; i < NA; i++) {
    size_t len = (size_t)(i + 1) * 64 * KiB;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    munmap(m, len);
    holes[i] = (uint64_t)(uintptr_t)m;
  }
  /* Large objects, freed (so unmapped or decommitted), and a closed, collected arena. */
  enum { NL = 8 };
  sm_handle_t large_h[NL];
  void *large_p[NL];
  for (int i = 0; i < NL; i++) {
    large_h[i] = sm_halloc(4 * MiB + (size_t)i * 1 * MiB);
    cr_assert_neq(large_h[i], 0);
    large_p[i] = sm_deref(large_h[i]);
    cr_assert_not_null(large_p[i]);
    memset(large_p[i], 1, 4096);
  }
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  enum { NS = 50000 };
  static sm_handle_t small_h[NS];
  for (int i = 0; i < NS; i++) {
    small_h[i] = sm_arena_halloc(a, 16 + (size_t)(i % 64) * 16);
    cr_assert_neq(small_h[i], 0);
  }
  sm_handle_t keep = sm_halloc(64); /* a live handle to forge from */
  void *keep_p = sm_deref(keep);
  cr_assert_not_null(keep_p);
  for (int i = 0; i < NL; i++) cr_assert_eq(sm_hfree(large_h[i]), 0);
  tu_arena_drop(a);
  sm_collect(SIZE_MAX);

  size_t live = 0;
  for (int i = 0; i < NL; i++) live += sm_deref(large_h[i]) != NULL;
  for (int i = 0; i < NS; i++) live += sm_deref(small_h[i]) != NULL;
  cr_assert_eq(live, 0, "%zu handles of freed large objects / a collected arena deref", live);

  struct probe pr = {0};
  uint64_t addrs[NA + NL];
  for (int i = 0; i < NA; i++) addrs[i] = holes[i];
  for (int i = 0; i < NL; i++) addrs[NA + i] = (uint64_t)(uintptr_t)large_p[i];
  uint64_t kp = (uint64_t)(uintptr_t)keep_p;
  for (int i = 0; i < NA + NL; i++) {
    for (uint64_t off = 0; off < 64 * KiB; off += 4 * KiB) {
      uint64_t u = addrs[i] + off;
      probe_value(&pr, u);
      probe_value(&pr, u | 1);
      probe_value(&pr, u | ((uint64_t)0xffff << 48));
      probe_value(&pr, (keep & ~(((uint64_t)1 << 48) - 1)) | (u & (((uint64_t)1 << 48) - 1)));
      /* Replace the live handle's address-derived bits, at several scales, by the hole's. */
      static const int shifts[] = {0, 3, 4, 6, 12, 16, 20, 21, 22};
      for (size_t s = 0; s < sizeof shifts / sizeof shifts[0]; s++) {
        probe_value(&pr, keep ^ ((kp ^ u) >> shifts[s]));
        probe_value(&pr, keep ^ ((kp ^ u) << shifts[s]));
      }
    }
  }
  /* Stale small handles with their address-like bits moved into the holes. */
  for (int i = 0; i < NS; i += 97)
    for (int j = 0; j < NA; j++) probe_value(&pr, small_h[i] ^ ((kp ^ holes[j]) >> 4));
  cr_assert_eq(pr.not_exact, 0, "%zu values deref to memory they do not name", pr.not_exact);
  cr_assert_eq(pr.non_null, 0, "%zu of %zu unmapped-memory values deref (first: %#llx)", pr.non_null, pr.tried,
               (unsigned long long)pr.first_bad);
  cr_assert_eq(sm_deref(keep), keep_p);
  cr_assert_eq(sm_hfree(keep), 0);
}

/* A slot that no handle ever named wraps its generation freely: a plain
 * malloc/free program reuses it forever instead of retiring it every 128
 * reuses (which made blocks drain and the heap grow under steady reuse).
 * The hardened build holds freed slots back (its quarantine, README
 * "Hardened mode"): the pair then cycles through the slots of the block's
 * first two pages (128 of them), each reused about 800 times, and none may
 * retire either (retired slots would be replaced by fresh ones: hundreds). */
#ifndef SM_HARDENED
#define CYCLE 1
#else
#define CYCLE 256 /* at most this many distinct slots */
#endif
Test(handle, unnamed_slot_wraps_freely) {
  sm_arena_t *a = sm_arena_new(NULL);
  sm_arena_t *prev = sm_arena_enter(a); /* its thread: frees are local, the slot comes back first */
  void *cycle[CYCLE] = {0};
  int seen = 0;
  for (int i = 0; i < 100000; i++) {
    void *p = sm_arena_malloc(a, 48);
    cr_assert_not_null(p);
    int k = 0;
    while (k < seen && cycle[k] != p) k++;
    if (k == seen) {
      cr_assert_lt(seen, CYCLE, "reuse %d got %p, a slot not seen before: a slot retired", i, p);
      cycle[seen++] = p;
    }
    sm_free(p);
  }
  sm_stats_t st;
  sm_arena_stats(a, &st);
  cr_assert_eq(st.blocks, 1, "steady reuse of one slot took %zu blocks", st.blocks);
  /* once a handle names the block, a wrapped slot retires: the handle stays stale */
  void *p = sm_arena_malloc(a, 48);
  sm_handle_t h = sm_handle_of(p);
  sm_free(p);
  for (int i = 0; i < 1000; i++) {
    void *q = sm_arena_malloc(a, 48);
    cr_assert_null(sm_deref(h), "a stale handle dereferences after %d reuses", i);
    sm_free(q);
  }
  sm_arena_enter(prev);
  tu_arena_drop(a);
}
#undef CYCLE
