/* test_arena.c: API tests of slotmalloc's arenas, through the public header only.
 *
 * Covers sm_arena_new/parent, the arena malloc family and sm_arena_of, close of
 * a subtree (handles stale when close returns, parent and siblings untouched),
 * sm_collect, free of a closed arena's object (abort) against sm_hfree (ESTALE),
 * retain/release, enter, promote, steal, merge, set_limit and statistics.
 *
 * Plain malloc/free here are slotmalloc's: the test is linked with the shared
 * library, which defines the standard names. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <slotmalloc.h>

#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------- */

/* The file's random stream: this state as is (not through tu_rng's seed mixing). */
static tu_rng_t rng = {0x5107a11cULL};

static uint8_t pattern_byte(uint8_t tag, size_t i) { return (uint8_t)(tag + i * 7u + (i >> 9)); }

static void fill(void *p, size_t n, uint8_t tag) {
  uint8_t *b = p;
  for (size_t i = 0; i < n; i++) b[i] = pattern_byte(tag, i);
}

/* Offset of the first byte that does not hold the pattern, or SIZE_MAX. */
static size_t check(const void *p, size_t n, uint8_t tag) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != pattern_byte(tag, i)) return i;
  return SIZE_MAX;
}

static sm_arena_t *root_arena(void) {
  sm_arena_t *probe = sm_arena_new(NULL);
  cr_assert_not_null(probe, "sm_arena_new(NULL) failed");
  sm_arena_t *root = sm_arena_parent(probe);
  tu_arena_drop(probe);
  return root;
}

/* One object of a test population: where it is, its size, handle and pattern. */
struct obj {
  void *p;
  size_t size;
  sm_handle_t h;
  uint8_t tag;
};

struct bag {
  sm_arena_t *a; /* NULL: plain malloc (the root arena) */
  struct obj *o;
  size_t n;
};

/* n objects in a: mostly small (16 B .. 2 KiB), some medium, two large ones;
 * even ones by sm_arena_malloc + sm_handle_of, odd ones by sm_arena_halloc. */
static void bag_fill(struct bag *b, sm_arena_t *a, size_t n) {
  b->a = a;
  b->n = n;
  b->o = calloc(n, sizeof *b->o);
  cr_assert_not_null(b->o);
  for (size_t i = 0; i < n; i++) {
    size_t size = 16 + tu_rng_next(&rng) % 2033;
    if (i % 100 == 50) size = 16 * KiB + tu_rng_next(&rng) % (100 * KiB);
    if (i == 1) size = 256 * KiB + 16;
    if (i == 2) size = 4 * MiB + 512 * KiB;
    struct obj *o = &b->o[i];
    o->size = size;
    o->tag = (uint8_t)tu_rng_next(&rng);
    if (a == NULL) {
      o->p = malloc(size);
      cr_assert_not_null(o->p, "malloc(%zu) failed", size);
      o->h = sm_handle_of(o->p);
    } else if (i % 2 == 0) {
      o->p = sm_arena_malloc(a, size);
      cr_assert_not_null(o->p, "sm_arena_malloc(%zu) failed", size);
      o->h = sm_handle_of(o->p);
    } else {
      o->h = sm_arena_halloc(a, size);
      cr_assert_neq(o->h, 0, "sm_arena_halloc(%zu) failed", size);
      o->p = sm_deref(o->h);
      cr_assert_not_null(o->p, "sm_deref of a fresh handle is NULL (size %zu)", size);
    }
    cr_assert_neq(o->h, 0, "object %zu (size %zu) has no handle", i, size);
    fill(o->p, size, o->tag);
  }
}

/* Every object of the bag is live, in arena `owner`, and holds its pattern. */
static void bag_assert_intact(const struct bag *b, sm_arena_t *owner, const char *what) {
  size_t bad_deref = 0, bad_of = 0, bad_data = 0, first = SIZE_MAX;
  for (size_t i = 0; i < b->n; i++) {
    const struct obj *o = &b->o[i];
    bool bad = false;
    if (sm_deref(o->h) != o->p) bad_deref++, bad = true;
    if (sm_arena_of(o->p) != owner) bad_of++, bad = true;
    if (check(o->p, o->size, o->tag) != SIZE_MAX) bad_data++, bad = true;
    if (bad && first == SIZE_MAX) first = i;
  }
  cr_assert(bad_deref == 0 && bad_of == 0 && bad_data == 0,
            "%s: of %zu objects, %zu handles do not deref to the object, %zu have a wrong "
            "sm_arena_of, %zu lost their contents (first: #%zu, size %zu)",
            what, b->n, bad_deref, bad_of, bad_data, first, first == SIZE_MAX ? 0 : b->o[first].size);
}

/* Every object of the bag is gone: handle stale, sm_arena_of NULL. */
static void bag_assert_stale(const struct bag *b, const char *what) {
  size_t live_h = 0, live_of = 0, first = SIZE_MAX;
  for (size_t i = 0; i < b->n; i++) {
    const struct obj *o = &b->o[i];
    bool bad = false;
    if (sm_deref(o->h) != NULL) live_h++, bad = true;
    if (sm_arena_of(o->p) != NULL) live_of++, bad = true;
    if (bad && first == SIZE_MAX) first = i;
  }
  cr_assert(live_h == 0 && live_of == 0,
            "%s: of %zu objects, %zu handles still deref and %zu pointers still have an arena "
            "(first: #%zu, size %zu)",
            what, b->n, live_h, live_of, first, first == SIZE_MAX ? 0 : b->o[first].size);
}

static void bag_free(struct bag *b) {
  free(b->o);
  b->o = NULL;
  b->n = 0;
}

/* ---- arenas: creation and the arena malloc family --------------------------- */

/* sm_arena_new(NULL) nests under the thread's non-NULL root arena (whose parent is NULL). */
Test(arena, new_nests_under_thread_root) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_arena_t *root = sm_arena_parent(a);
  cr_assert_not_null(root, "sm_arena_parent(sm_arena_new(NULL)) is NULL, want the root arena");
  cr_assert_neq(root, a);
  cr_assert_null(sm_arena_parent(root), "the root arena has a parent");
  sm_arena_t *b = sm_arena_new(NULL);
  cr_assert_not_null(b);
  cr_assert_neq(b, a);
  cr_assert_eq(sm_arena_parent(b), root, "two arenas of one thread have different roots");
  sm_arena_t *c = sm_arena_new(a);
  cr_assert_not_null(c);
  cr_assert_eq(sm_arena_parent(c), a, "sm_arena_new(a) does not nest under a");
  cr_assert_eq(sm_arena_parent(sm_arena_parent(c)), root);
  tu_arena_drop(c);
  tu_arena_drop(b);
  tu_arena_drop(a);
}

/* sm_arena_malloc gives writable, 16-aligned, non-overlapping objects of every size in a. */
Test(arena, malloc_every_size_is_in_arena) {
  size_t sizes[TU_MAX_SIZES];
  size_t n = tu_make_sizes(sizes, 8 * MiB);
  void *ps[TU_MAX_SIZES];
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t i = 0; i < n; i++) {
    ps[i] = sm_arena_malloc(a, sizes[i]);
    cr_assert_not_null(ps[i], "sm_arena_malloc(%zu) failed", sizes[i]);
    if (sizes[i] >= 16)
      cr_assert_eq((uintptr_t)ps[i] % 16, 0, "sm_arena_malloc(%zu) = %p not 16-aligned", sizes[i], ps[i]);
    cr_assert_geq(sm_usable_size(ps[i]), sizes[i], "usable size below size %zu", sizes[i]);
    cr_assert_eq(sm_arena_of(ps[i]), a, "sm_arena_of(object of %zu B) is not its arena", sizes[i]);
    fill(ps[i], sizes[i], (uint8_t)i);
  }
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(check(ps[i], sizes[i], (uint8_t)i), SIZE_MAX, "object of %zu B overwritten", sizes[i]);
    cr_assert_eq(sm_arena_of(ps[i]), a);
  }
  for (size_t i = 0; i < n; i++) free(ps[i]);
  tu_arena_drop(a);
}

/* sm_arena_calloc zeroes every size, even over reused dirty memory; overflow is ENOMEM. */
Test(arena, calloc_zeroes_every_size) {
  size_t sizes[TU_MAX_SIZES];
  size_t n = tu_make_sizes(sizes, 8 * MiB);
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t i = 0; i < n; i++) {
    size_t s = sizes[i];
    for (int round = 0; round < 3; round++) {
      void *dirty = sm_arena_malloc(a, s);
      cr_assert_not_null(dirty);
      memset(dirty, 0xa5, s);
      free(dirty);
      unsigned char *z = round == 1 && s % 16 == 0 ? sm_arena_calloc(a, s / 16, 16) : sm_arena_calloc(a, 1, s);
      cr_assert_not_null(z, "sm_arena_calloc(%zu B) failed", s);
      cr_assert_eq(sm_arena_of(z), a, "calloc'd object of %zu B not in its arena", s);
      size_t nz = 0;
      for (size_t k = 0; k < s; k++) nz += z[k] != 0;
      cr_assert_eq(nz, 0, "sm_arena_calloc(%zu B): %zu non-zero bytes", s, nz);
      free(z);
    }
  }
  errno = 0;
  void *over = sm_arena_calloc(a, SIZE_MAX / 2, 3);
  cr_assert_null(over, "sm_arena_calloc with count*size overflow succeeded");
  cr_assert_eq(errno, ENOMEM, "count*size overflow: errno %d, want ENOMEM", errno);
  tu_arena_drop(a);
}

/* sm_arena_aligned_alloc honours every power-of-two alignment up to 4 MiB; others are EINVAL. */
Test(arena, aligned_alloc_honours_alignment) {
  void *ps[4 * 24];
  size_t sz[4 * 24];
  size_t n = 0;
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t al = 1; al <= 4 * MiB; al *= 2) {
    size_t cand[4] = {1, al, al + 16, al + al / 2 + 1};
    for (int k = 0; k < 4; k++) {
      void *p = sm_arena_aligned_alloc(a, al, cand[k]);
      cr_assert_not_null(p, "sm_arena_aligned_alloc(%zu, %zu) failed", al, cand[k]);
      cr_assert_eq((uintptr_t)p % al, 0, "sm_arena_aligned_alloc(%zu, %zu) = %p misaligned", al, cand[k], p);
      cr_assert_eq(sm_arena_of(p), a, "aligned object (%zu, %zu) not in its arena", al, cand[k]);
      cr_assert_geq(sm_usable_size(p), cand[k]);
      fill(p, cand[k], (uint8_t)n);
      ps[n] = p;
      sz[n] = cand[k];
      n++;
    }
  }
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(check(ps[i], sz[i], (uint8_t)i), SIZE_MAX, "aligned object %zu overwritten", i);
  for (size_t i = 0; i < n; i++) free(ps[i]);
  errno = 0;
  cr_assert_null(sm_arena_aligned_alloc(a, 48, 64), "alignment 48 accepted");
  cr_assert_eq(errno, EINVAL, "alignment 48: errno %d, want EINVAL", errno);
  errno = 0;
  cr_assert_null(sm_arena_aligned_alloc(a, 0, 64), "alignment 0 accepted");
  cr_assert_eq(errno, EINVAL, "alignment 0: errno %d, want EINVAL", errno);
  tu_arena_drop(a);
}

/* Objects of plain malloc/calloc/realloc/aligned_alloc/posix_memalign are in the root arena. */
Test(arena, of_plain_malloc_is_root) {
  sm_arena_t *root = root_arena();
  cr_assert_not_null(root);
  size_t sizes[TU_MAX_SIZES];
  size_t n = tu_make_sizes(sizes, 8 * MiB);
  for (size_t i = 0; i < n; i++) {
    void *p = malloc(sizes[i]);
    cr_assert_not_null(p);
    cr_assert_eq(sm_arena_of(p), root, "sm_arena_of(malloc(%zu)) is not the root arena", sizes[i]);
    void *q = calloc(1, sizes[i]);
    cr_assert_not_null(q);
    cr_assert_eq(sm_arena_of(q), root, "sm_arena_of(calloc(1, %zu)) is not the root", sizes[i]);
    void *r = realloc(q, sizes[i] * 2);
    cr_assert_not_null(r);
    cr_assert_eq(sm_arena_of(r), root, "sm_arena_of(realloc to %zu) is not the root", sizes[i] * 2);
    free(r);
    free(p);
  }
  void *al = aligned_alloc(1 * MiB, 64);
  cr_assert_not_null(al);
  cr_assert_eq(sm_arena_of(al), root, "aligned_alloc'd object is not in the root");
  free(al);
  void *pm = NULL;
  cr_assert_eq(posix_memalign(&pm, 4096, 100), 0);
  cr_assert_eq(sm_arena_of(pm), root, "posix_memalign'd object is not in the root");
  free(pm);
}

static char global_bytes[256];

/* sm_arena_of is NULL for stack, global, foreign mmap, interior and freed addresses. */
Test(arena, of_non_objects_is_null) {
  char stack_bytes[256];
  memset(stack_bytes, 1, sizeof stack_bytes);
  cr_assert_null(sm_arena_of(NULL));
  cr_assert_null(sm_arena_of(stack_bytes), "stack address has an arena");
  cr_assert_null(sm_arena_of(stack_bytes + 128), "stack address has an arena");
  cr_assert_null(sm_arena_of(global_bytes), "global address has an arena");
  cr_assert_null(sm_arena_of("a string literal"), "string literal has an arena");
  void *foreign = mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(foreign, MAP_FAILED);
  cr_assert_null(sm_arena_of(foreign), "foreign mmap has an arena");
  cr_assert_null(sm_arena_of((char *)foreign + 4096), "foreign mmap has an arena");
  munmap(foreign, 1 * MiB);
  cr_assert_null(sm_arena_of(foreign), "unmapped address has an arena");

  size_t sizes[TU_MAX_SIZES];
  size_t n = tu_make_sizes(sizes, 8 * MiB);
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t i = 0; i < n; i++) {
    size_t s = sizes[i];
    if (s < 32) continue;
    for (int plain = 0; plain < 2; plain++) {
      char *p = plain ? malloc(s) : sm_arena_malloc(a, s);
      cr_assert_not_null(p);
      size_t offs[] = {1, 8, 16, (s / 2) & ~(size_t)15, s - 1, 4096, s / 2 + 4096};
      for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        if (offs[k] == 0 || offs[k] >= s) continue;
        cr_assert_null(sm_arena_of(p + offs[k]), "interior pointer p+%zu of a %zu B object (%s)", offs[k], s,
                       plain ? "malloc" : "arena");
      }
      void *stale = tu_opaque(p);
      free(p);
      cr_assert_null(sm_arena_of(stale), "freed %zu B object (%s) still has an arena", s, plain ? "malloc" : "arena");
    }
  }
  tu_arena_drop(a);
}

/* ---- close -------------------------------------------------------------------- */

/* Closing a 3-level subtree makes all its handles stale at return; parent, siblings untouched. */
Test(close, subtree_stale_at_return_others_untouched) {
  enum { N = 2000 };
  sm_arena_t *P = sm_arena_new(NULL);
  sm_arena_t *A = sm_arena_new(P);
  sm_arena_t *A1 = sm_arena_new(A);
  sm_arena_t *A2 = sm_arena_new(A);
  sm_arena_t *A11 = sm_arena_new(A1);
  sm_arena_t *A12 = sm_arena_new(A1);
  sm_arena_t *A21 = sm_arena_new(A2);
  sm_arena_t *S = sm_arena_new(P);
  sm_arena_t *S1 = sm_arena_new(S);
  sm_arena_t *all[] = {P, A, A1, A2, A11, A12, A21, S, S1};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) cr_assert_not_null(all[i]);
  sm_arena_t *root = sm_arena_parent(P);

  struct bag doomed[6], kept[4];
  sm_arena_t *doomed_a[6] = {A, A1, A2, A11, A12, A21};
  sm_arena_t *kept_a[4] = {P, S, S1, NULL};
  /* Interleave allocation so the arenas' blocks interleave in memory too. */
  for (int i = 0; i < 6; i++) bag_fill(&doomed[i], doomed_a[i], N);
  for (int i = 0; i < 4; i++) bag_fill(&kept[i], kept_a[i], i == 3 ? 200 : N);

  sm_arena_close(A);
  /* Right at return, before any other allocator call. */
  for (int i = 0; i < 6; i++) bag_assert_stale(&doomed[i], "closed subtree");
  for (int i = 0; i < 3; i++) bag_assert_intact(&kept[i], kept_a[i], "parent/sibling after close");
  bag_assert_intact(&kept[3], root, "root objects after close");

  /* Closing again, and closing an already closed descendant, does nothing. */
  sm_arena_close(A);
  sm_arena_close(A11);
  sm_arena_close(A2);
  for (int i = 0; i < 3; i++) bag_assert_intact(&kept[i], kept_a[i], "parent/sibling after closing twice");

  /* Dismantling the closed subtree must not touch the others either. */
  sm_collect(SIZE_MAX);
  for (int i = 0; i < 6; i++) bag_assert_stale(&doomed[i], "closed subtree after sm_collect");
  for (int i = 0; i < 3; i++) bag_assert_intact(&kept[i], kept_a[i], "parent/sibling after sm_collect");
  bag_assert_intact(&kept[3], root, "root objects after sm_collect");

  /* The parent still allocates, and its new objects do not land on the others. */
  struct bag more;
  bag_fill(&more, P, N);
  for (int i = 0; i < 3; i++) bag_assert_intact(&kept[i], kept_a[i], "parent/sibling after new allocations");
  bag_assert_intact(&more, P, "new objects of the parent");

  for (size_t i = 0; i < kept[3].n; i++) free(kept[3].o[i].p);
  for (int i = 0; i < 6; i++) bag_free(&doomed[i]);
  for (int i = 0; i < 4; i++) bag_free(&kept[i]);
  bag_free(&more);
  for (int i = (int)(sizeof all / sizeof all[0]) - 1; i >= 0; i--) tu_arena_drop(all[i]);
}

/* Closing twice (and closing children of a closed arena) is harmless; the thread goes on. */
Test(close, twice_is_harmless) {
  sm_arena_t *a = sm_arena_new(NULL);
  sm_arena_t *c = sm_arena_new(a);
  cr_assert_not_null(a);
  cr_assert_not_null(c);
  sm_handle_t ha = sm_arena_halloc(a, 100), hc = sm_arena_halloc(c, 100);
  cr_assert(ha != 0 && hc != 0);
  sm_arena_close(c);
  cr_assert_null(sm_deref(hc));
  cr_assert_not_null(sm_deref(ha), "closing a child closed its parent's object");
  sm_arena_close(c);
  sm_arena_close(a);
  sm_arena_close(a);
  sm_arena_close(c);
  cr_assert_null(sm_deref(ha));
  cr_assert_null(sm_deref(hc));
  sm_collect(SIZE_MAX);
  sm_arena_close(a);
  sm_arena_release(c);
  sm_arena_release(a);
  sm_arena_t *b = sm_arena_new(NULL);
  cr_assert_not_null(b, "no new arena after closing twice");
  void *p = sm_arena_malloc(b, 64);
  cr_assert_not_null(p);
  cr_assert_eq(sm_arena_of(p), b);
  cr_assert_null(sm_deref(ha), "stale handle came back after new allocations");
  tu_arena_drop(b);
}

/* Build/close/collect rounds of 100k objects do not grow committed memory (last <= 2x second). */
Test(close, rounds_do_not_grow_committed) {
  enum { ROUNDS = 20, OBJS = 100000 };
  size_t committed[ROUNDS];
  void **ps = malloc(OBJS * sizeof *ps);
  cr_assert_not_null(ps);
  for (int r = 0; r < ROUNDS; r++) {
    rng = tu_rng(42); /* the same workload every round */
    sm_arena_t *a = sm_arena_new(NULL);
    cr_assert_not_null(a);
    for (size_t i = 0; i < OBJS; i++) {
      size_t s = 16 + tu_rng_next(&rng) % 497;
      ps[i] = sm_arena_malloc(a, s);
      cr_assert_not_null(ps[i], "round %d: allocation %zu failed", r, i);
      memset(ps[i], (int)i, 16);
      if (i % 7 == 3) { /* some frees, so freelists get used too */
        free(ps[i - 1]);
        ps[i - 1] = NULL;
      }
    }
    sm_stats_t st;
    sm_arena_stats(NULL, &st);
    committed[r] = st.bytes_committed;
    tu_arena_drop(a);
    sm_collect(SIZE_MAX);
  }
  free(ps);
  cr_assert_gt(committed[1], 0, "bytes_committed is 0 with 100k live objects");
  cr_assert_leq(committed[ROUNDS - 1], 2 * committed[1],
                "committed bytes grew over rounds: round 2 %zu, round %d %zu", committed[1], ROUNDS,
                committed[ROUNDS - 1]);
}

/* Closing and collecting an arena of 100k objects lowers the process's live objects, and
 * sm_collect(SIZE_MAX) gives its memory back (blocks and bytes_committed go down). */
Test(close, collect_returns_memory) {
  enum { OBJS = 100000 };
  sm_stats_t before, live, closed, after;
  sm_arena_stats(NULL, &before);
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (size_t i = 0; i < OBJS; i++) {
    void *p = sm_arena_malloc(a, 16 + (i * 37) % 1000);
    cr_assert_not_null(p);
    memset(p, 1, 16);
  }
  sm_arena_stats(NULL, &live);
  cr_assert_geq(live.objects_live, before.objects_live + OBJS, "process objects_live %zu -> %zu after %d allocations",
                before.objects_live, live.objects_live, OBJS);
  sm_arena_close(a);
  sm_arena_stats(NULL, &closed);
  cr_assert_leq(closed.objects_live + OBJS, live.objects_live,
                "process objects_live %zu with the arena, %zu right after close", live.objects_live,
                closed.objects_live);
  sm_arena_release(a);
  sm_collect(SIZE_MAX);
  sm_arena_stats(NULL, &after);
  cr_assert_leq(after.objects_live + OBJS, live.objects_live,
                "process objects_live %zu with the arena, %zu after close + collect", live.objects_live,
                after.objects_live);
  cr_assert_lt(after.blocks, live.blocks, "process blocks %zu with the arena, %zu after close + sm_collect(SIZE_MAX)",
               live.blocks, after.blocks);
  /* 100k objects of 16..1015 B hold ~50 MB; at least half of that must go back. */
  cr_assert_lt(after.bytes_committed + (live.bytes_committed - before.bytes_committed) / 2, live.bytes_committed,
               "bytes_committed %zu before, %zu with the arena, %zu after close + "
               "sm_collect(SIZE_MAX)",
               before.bytes_committed, live.bytes_committed, after.bytes_committed);
}

/* ---- freeing objects of a closed arena ---------------------------------------- */

struct child_out {
  int status;
  char err[8192];
};

/* Runs fn(arg) in a forked child whose stderr goes into out->err. */
static void run_child(void (*fn)(void *), void *arg, struct child_out *out) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  cr_assert_geq(pid, 0, "fork failed");
  if (pid == 0) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(SIGABRT, SIG_DFL);
    close(fds[0]);
    dup2(fds[1], 2);
    close(fds[1]);
    fn(arg);
    _exit(0);
  }
  close(fds[1]);
  size_t len = 0;
  for (;;) {
    ssize_t got = read(fds[0], out->err + len, sizeof out->err - 1 - len);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    len += (size_t)got;
    if (len == sizeof out->err - 1) break;
  }
  out->err[len] = 0;
  close(fds[0]);
  tu_waitpid(pid, &out->status);
}

/* The address in the line starting with prefix, or 0 if there is no such line. */
static uintptr_t line_address(const char *text, const char *prefix) {
  size_t plen = strlen(prefix);
  for (const char *line = text; *line;) {
    if (strncmp(line, prefix, plen) == 0)
      return (uintptr_t)strtoull(line + plen - 2, NULL, 16); /* prefix ends in "0x" */
    const char *nl = strchr(line, '\n');
    if (!nl) break;
    line = nl + 1;
  }
  return 0;
}

struct closed_free_arg {
  sm_arena_t *a;
  void *p;
};

static void close_then_free(void *argp) {
  struct closed_free_arg *arg = argp;
  sm_arena_close(arg->a);
  free(arg->p);
}

static void assert_free_after_close_aborts(size_t size) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  void *p = sm_arena_malloc(a, size);
  cr_assert_not_null(p);
  memset(p, 3, size);
  struct closed_free_arg arg = {a, p};
  struct child_out out;
  run_child(close_then_free, &arg, &out);
  cr_assert(WIFSIGNALED(out.status) && WTERMSIG(out.status) == SIGABRT,
            "free of a closed arena's %zu B object: child %s %d, want SIGABRT; stderr: %s", size,
            WIFSIGNALED(out.status) ? "killed by signal" : "exited with",
            WIFSIGNALED(out.status) ? WTERMSIG(out.status) : WEXITSTATUS(out.status), out.err);
  const char *prefix = "slotmalloc: double free of 0x";
  uintptr_t addr = line_address(out.err, prefix);
  cr_assert_neq(addr, 0, "no stderr line beginning \"%s\" (size %zu); stderr was: %s", prefix, size, out.err);
  cr_assert_eq(addr, (uintptr_t)p, "reported address %#lx, freed %p (size %zu)", (unsigned long)addr, p, size);
  tu_arena_drop(a);
}

/* free() of a small object of a closed arena aborts with "slotmalloc: double free of 0x...". */
Test(close_free, free_small_object_of_closed_arena_aborts) {
  assert_free_after_close_aborts(48);
  assert_free_after_close_aborts(1000);
}

/* free() of a large object of a closed arena (not yet collected) aborts the same way. */
Test(close_free, free_large_object_of_closed_arena_aborts) { assert_free_after_close_aborts(5 * MiB); }

/* sm_hfree of objects of a closed arena returns ESTALE and never aborts. */
Test(close_free, hfree_of_closed_arena_is_estale) {
  sm_arena_t *a = sm_arena_new(NULL);
  sm_arena_t *c = sm_arena_new(a);
  cr_assert(a && c);
  size_t sizes[] = {16, 48, 1000, 70000, 5 * MiB};
  sm_handle_t hs[2 * 5];
  for (int i = 0; i < 5; i++) {
    hs[i] = sm_arena_halloc(a, sizes[i]);
    void *p = sm_arena_malloc(c, sizes[i]);
    cr_assert(hs[i] != 0 && p != NULL);
    hs[5 + i] = sm_handle_of(p);
    cr_assert_neq(hs[5 + i], 0);
  }
  sm_arena_close(a);
  for (int i = 0; i < 10; i++) {
    int rc = sm_hfree(hs[i]);
    cr_assert_eq(rc, ESTALE, "sm_hfree of a closed arena's object (size %zu): %d, want ESTALE", sizes[i % 5], rc);
  }
  sm_collect(SIZE_MAX);
  for (int i = 0; i < 10; i++) cr_assert_eq(sm_hfree(hs[i]), ESTALE, "after sm_collect: sm_hfree not ESTALE");
  sm_arena_release(c);
  sm_arena_release(a);
}

/* ---- retain / release ---------------------------------------------------------- */

/* retain + 2 releases: the arena lives after the first release, closes at the second. */
Test(refcount, retain_then_release_twice) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  struct bag b;
  bag_fill(&b, a, 500);
  sm_arena_retain(a);
  sm_arena_release(a);
  bag_assert_intact(&b, a, "after the first of two releases");
  void *p = sm_arena_malloc(a, 64);
  cr_assert_not_null(p, "the arena no longer allocates after the first release");
  sm_handle_t hp = sm_handle_of(p);
  cr_assert_neq(hp, 0);
  sm_arena_release(a);
  bag_assert_stale(&b, "after the last release");
  cr_assert_null(sm_deref(hp));
  bag_free(&b);
}

/* ---- enter ---------------------------------------------------------------------- */

/* enter(a) returns the root (NULL), plain malloc then allocates in a; nesting returns the previous. */
Test(enter, plain_malloc_follows_entered_arena) {
  sm_arena_t *root = root_arena();
  sm_arena_t *a = sm_arena_new(NULL);
  sm_arena_t *b = sm_arena_new(a);
  cr_assert(a && b);
  /* Record everything first, assert after leaving: the asserts may allocate. */
  sm_arena_t *prev1 = sm_arena_enter(a);
  void *pa = malloc(32);
  void *ca = calloc(4, 8);
  sm_arena_t *of_pa = sm_arena_of(pa), *of_ca = sm_arena_of(ca);
  sm_arena_t *prev2 = sm_arena_enter(b);
  void *pb = malloc(32);
  sm_arena_t *of_pb = sm_arena_of(pb);
  sm_arena_t *prev3 = sm_arena_enter(NULL);
  void *pr = malloc(32);
  sm_arena_t *of_pr = sm_arena_of(pr);
  sm_arena_t *prev4 = sm_arena_enter(a);
  sm_arena_t *prev5 = sm_arena_enter(NULL);

  cr_assert_null(prev1, "first enter returned %p, want NULL (the root)", (void *)prev1);
  cr_assert_eq(of_pa, a, "malloc inside enter(a) is not in a");
  cr_assert_eq(of_ca, a, "calloc inside enter(a) is not in a");
  cr_assert_eq(prev2, a, "nested enter did not return the previous arena");
  cr_assert_eq(of_pb, b, "malloc inside enter(b) is not in b");
  cr_assert_eq(prev3, b, "enter(NULL) did not return the previous arena");
  cr_assert_eq(of_pr, root, "malloc after enter(NULL) is not in the root");
  cr_assert_null(prev4, "enter after going back to the root did not return NULL");
  cr_assert_eq(prev5, a);

  sm_handle_t ha = sm_handle_of(pa), hb = sm_handle_of(pb);
  cr_assert(ha && hb);
  tu_arena_drop(b);
  cr_assert_null(sm_deref(hb), "object malloc'd in entered b survived closing b");
  cr_assert_eq(sm_deref(ha), pa);
  tu_arena_drop(a);
  cr_assert_null(sm_deref(ha), "object malloc'd in entered a survived closing a");
  cr_assert_eq(sm_arena_of(pr), root);
  free(pr);
}

/* ---- promote -------------------------------------------------------------------- */

/* promote moves an object of child c into parent p: same contents, old handle stale, survives c. */
Test(promote, moves_object_to_parent) {
  size_t sizes[] = {16, 24, 100, 1000, 4096, 70000, 300 * KiB, 5 * MiB};
  enum { NS = sizeof sizes / sizeof sizes[0] };
  sm_arena_t *P = sm_arena_new(NULL);
  sm_arena_t *C = sm_arena_new(P);
  sm_arena_t *G = sm_arena_new(C);
  cr_assert(P && C && G);
  void *moved[NS], *twice;
  for (size_t i = 0; i < NS; i++) {
    void *o = sm_arena_malloc(C, sizes[i]);
    cr_assert_not_null(o);
    fill(o, sizes[i], (uint8_t)(i + 1));
    sm_handle_t h = sm_handle_of(o);
    cr_assert_neq(h, 0);
    void *n = sm_arena_promote(o);
    cr_assert_not_null(n, "promote of a %zu B object failed", sizes[i]);
    cr_assert_eq(check(n, sizes[i], (uint8_t)(i + 1)), SIZE_MAX, "promoted %zu B object lost its contents", sizes[i]);
    cr_assert_eq(sm_arena_of(n), P, "promoted %zu B object is not in the parent", sizes[i]);
    cr_assert_null(sm_deref(h), "old handle of a promoted %zu B object still derefs", sizes[i]);
    sm_handle_t hn = sm_handle_of(n);
    cr_assert_neq(hn, 0);
    cr_assert_eq(sm_deref(hn), n);
    moved[i] = n;
  }
  /* Two steps: grandchild -> child -> parent. */
  void *g = sm_arena_malloc(G, 200);
  cr_assert_not_null(g);
  fill(g, 200, 99);
  void *g1 = sm_arena_promote(g);
  cr_assert_not_null(g1);
  cr_assert_eq(sm_arena_of(g1), C);
  twice = sm_arena_promote(g1);
  cr_assert_not_null(twice);
  cr_assert_eq(sm_arena_of(twice), P);

  tu_arena_drop(G);
  tu_arena_drop(C);
  for (size_t i = 0; i < NS; i++) {
    cr_assert_eq(sm_arena_of(moved[i]), P, "promoted %zu B object died with its old arena", sizes[i]);
    cr_assert_eq(sm_deref(sm_handle_of(moved[i])), moved[i]);
    cr_assert_eq(check(moved[i], sizes[i], (uint8_t)(i + 1)), SIZE_MAX,
                 "promoted %zu B object changed when its old arena closed", sizes[i]);
  }
  cr_assert_eq(check(twice, 200, 99), SIZE_MAX);
  sm_handle_t ht = sm_handle_of(twice);
  tu_arena_drop(P);
  cr_assert_null(sm_deref(ht), "promoted object outlived the parent");
}

/* promote of a root object returns it in place; promote of a freed object is NULL with errno. */
Test(promote, root_object_stays_freed_object_fails) {
  sm_arena_t *root = root_arena();
  void *p = malloc(64);
  cr_assert_not_null(p);
  cr_assert_eq(sm_arena_promote(p), p, "promote of a root object moved it");
  cr_assert_eq(sm_arena_of(p), root);
  free(p);
  sm_arena_t *a = sm_arena_new(NULL);
  void *q = sm_arena_malloc(a, 64);
  cr_assert_not_null(q);
  void *stale = tu_opaque(q);
  free(q);
  errno = 0;
  cr_assert_null(sm_arena_promote(stale), "promote of a freed object succeeded");
  cr_assert_neq(errno, 0, "promote of a freed object left errno 0");
  tu_arena_drop(a);
}

/* ---- steal ---------------------------------------------------------------------- */

/* steal(c, other): c's parent is other; closing the old parent spares c; closing other closes c. */
Test(steal, moves_subtree_to_new_parent) {
  sm_arena_t *old = sm_arena_new(NULL);
  sm_arena_t *other = sm_arena_new(NULL);
  sm_arena_t *c = sm_arena_new(old);
  sm_arena_t *gc = sm_arena_new(c);
  cr_assert(old && other && c && gc);
  struct bag bc, bgc, bold;
  bag_fill(&bc, c, 500);
  bag_fill(&bgc, gc, 500);
  bag_fill(&bold, old, 200);
  cr_assert_eq(sm_arena_steal(c, other), 0, "sm_arena_steal failed");
  cr_assert_eq(sm_arena_parent(c), other, "after steal, the parent is not the new one");
  cr_assert_eq(sm_arena_parent(gc), c, "steal changed the grandchild's parent");
  tu_arena_drop(old);
  bag_assert_stale(&bold, "the old parent's own objects");
  bag_assert_intact(&bc, c, "stolen arena after its old parent closed");
  bag_assert_intact(&bgc, gc, "stolen arena's child after the old parent closed");
  tu_arena_drop(other);
  bag_assert_stale(&bc, "stolen arena after its new parent closed");
  bag_assert_stale(&bgc, "stolen arena's child after its new parent closed");
  sm_arena_release(gc);
  sm_arena_release(c);
  bag_free(&bc);
  bag_free(&bgc);
  bag_free(&bold);
}

/* steal into itself or its own descendant (a cycle), of a root, or of a closed arena is EINVAL. */
Test(steal, cycle_root_closed_are_einval) {
  sm_arena_t *a = sm_arena_new(NULL);
  sm_arena_t *b = sm_arena_new(a);
  sm_arena_t *c = sm_arena_new(b);
  sm_arena_t *x = sm_arena_new(NULL);
  cr_assert(a && b && c && x);
  sm_arena_t *root = sm_arena_parent(a);
  cr_assert_eq(sm_arena_steal(a, c), EINVAL, "stealing a into its grandchild was accepted");
  cr_assert_eq(sm_arena_steal(a, b), EINVAL, "stealing a into its child was accepted");
  cr_assert_eq(sm_arena_steal(a, a), EINVAL, "stealing a into itself was accepted");
  cr_assert_eq(sm_arena_parent(a), root, "a failed steal changed the parent");
  cr_assert_eq(sm_arena_parent(c), b);
  cr_assert_eq(sm_arena_steal(root, x), EINVAL, "stealing the root arena was accepted");
  cr_assert_null(sm_arena_parent(root));
  sm_arena_close(x);
  cr_assert_eq(sm_arena_steal(x, a), EINVAL, "stealing a closed arena was accepted");
  sm_arena_release(x);
  /* A legal move still works afterwards. */
  cr_assert_eq(sm_arena_steal(c, a), 0);
  cr_assert_eq(sm_arena_parent(c), a);
  sm_arena_release(c);
  sm_arena_release(b);
  tu_arena_drop(a);
}

/* ---- merge ---------------------------------------------------------------------- */

/* merge(dst, src): src's objects are in dst, live, with contents; they die when dst closes. */
Test(merge, src_objects_join_dst) {
  sm_arena_t *P = sm_arena_new(NULL);
  sm_arena_t *dst = sm_arena_new(P);
  sm_arena_t *src = sm_arena_new(P);
  sm_arena_t *sc = sm_arena_new(src);
  cr_assert(P && dst && src && sc);
  struct bag bd, bs, bsc;
  bag_fill(&bd, dst, 500);
  bag_fill(&bs, src, 1000);
  bag_fill(&bsc, sc, 300);
  cr_assert_eq(sm_arena_merge(dst, src), 0, "sm_arena_merge failed");
  /* src is gone: do not touch it again. */
  bag_assert_intact(&bs, dst, "src's objects after merge");
  bag_assert_intact(&bd, dst, "dst's objects after merge");
  bag_assert_intact(&bsc, sc, "src's child's objects after merge");
  cr_assert_eq(sm_arena_parent(sc), dst, "src's child did not move under dst");
  /* dst keeps allocating next to the merged objects. */
  struct bag more;
  bag_fill(&more, dst, 300);
  bag_assert_intact(&bs, dst, "merged objects after new allocations in dst");
  tu_arena_drop(dst);
  bag_assert_stale(&bs, "merged objects after dst closed");
  bag_assert_stale(&bd, "dst's objects after dst closed");
  bag_assert_stale(&bsc, "src's child's objects after dst closed");
  bag_assert_stale(&more, "dst's new objects after dst closed");
  sm_arena_release(sc);
  tu_arena_drop(P);
  bag_free(&bd);
  bag_free(&bs);
  bag_free(&bsc);
  bag_free(&more);
}

/* merge of a child into its own parent keeps the objects live until the parent closes. */
Test(merge, child_into_parent) {
  sm_arena_t *P = sm_arena_new(NULL);
  sm_arena_t *c = sm_arena_new(P);
  cr_assert(P && c);
  struct bag b;
  bag_fill(&b, c, 800);
  cr_assert_eq(sm_arena_merge(P, c), 0);
  bag_assert_intact(&b, P, "child's objects merged into the parent");
  sm_stats_t st;
  sm_arena_stats(P, &st);
  cr_assert_geq(st.objects_live, b.n, "parent stats miss merged objects");
  tu_arena_drop(P);
  bag_assert_stale(&b, "merged objects after the parent closed");
  bag_free(&b);
}

/* merge of an arena with itself, or of a root arena as src, is EINVAL. */
Test(merge, invalid_is_einval) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  sm_handle_t h = sm_arena_halloc(a, 64);
  cr_assert_eq(sm_arena_merge(a, a), EINVAL, "merging an arena into itself was accepted");
  cr_assert_eq(sm_arena_merge(a, sm_arena_parent(a)), EINVAL, "merging a root away was accepted");
  cr_assert_not_null(sm_deref(h), "a failed merge killed an object");
  tu_arena_drop(a);
}

/* ---- set_limit ------------------------------------------------------------------ */

/* The bytes a new object counts for in the statistics and against a byte cap,
 * read off a's statistics around the allocation (a and its subtree must see no
 * other allocation meanwhile): its usable size; in the hardened build its
 * whole slot, which holds the canary and size record past the request that
 * sm_usable_size does not count (it answers the bytes asked: README "Hardened
 * mode"); a large object counts its usable size in both builds. */
static void *malloc_counted(sm_arena_t *a, size_t size, size_t *counted) {
  sm_stats_t st0, st1;
  sm_arena_stats(a, &st0);
  void *p = sm_arena_malloc(a, size);
  cr_assert_not_null(p);
  sm_arena_stats(a, &st1);
  size_t d = st1.bytes_live - st0.bytes_live, u = sm_usable_size(p);
#ifdef SM_HARDENED
  bool large = size > 256 * KiB;
  cr_assert_geq(d, u + (large ? 0 : 8), "an object of %zu bytes counts %zu bytes: no room for its canary", size, d);
  cr_assert_leq(d, u + (large ? 4 * KiB : u / 4 + 64), "an object of %zu bytes counts %zu bytes", size, d);
#else
  cr_assert_eq(d, u, "an object of usable size %zu counts %zu bytes", u, d);
#endif
  *counted = d;
  return p;
}

/* With a 64 KiB limit, 1 KiB allocations succeed up to the cap, then fail with ENOMEM. */
Test(limit, caps_live_bytes) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  cr_assert_eq(sm_arena_set_limit(a, 64 * KiB), 0);
  void *ps[200];
  size_t n = 0;
  int err = 0;
  for (; n < 200; n++) {
    errno = 0;
    ps[n] = sm_arena_malloc(a, 1 * KiB);
    if (!ps[n]) {
      err = errno;
      break;
    }
    memset(ps[n], 1, 1 * KiB);
  }
  cr_assert_lt(n, 200, "the 64 KiB limit never refused an allocation");
  cr_assert_eq(err, ENOMEM, "refused allocation: errno %d, want ENOMEM", err);
  size_t u; /* what one counts against the cap (a fresh arena of no cap: its statistics) */
  sm_arena_t *t = sm_arena_new(NULL);
  cr_assert_not_null(t);
  malloc_counted(t, 1 * KiB, &u);
  tu_arena_drop(t);
  cr_assert_eq(n, 64 * KiB / u, "%zu objects counting %zu bytes fit under 64 KiB, want %zu", n, u, 64 * KiB / u);
  sm_stats_t st;
  sm_arena_stats(a, &st);
  cr_assert_leq(st.bytes_live, 64 * KiB, "bytes_live %zu past the limit", st.bytes_live);

  /* Other entry points respect it too. */
  errno = 0;
  cr_assert_null(sm_arena_calloc(a, 1, 1 * KiB), "calloc passed the limit");
  cr_assert_eq(errno, ENOMEM);
  errno = 0;
  cr_assert_null(sm_arena_aligned_alloc(a, 64, 1 * KiB), "aligned_alloc passed the limit");
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(sm_arena_halloc(a, 1 * KiB), 0, "halloc passed the limit");

  /* Freeing makes room again, for exactly one more. */
  free(ps[n / 2]);
  ps[n / 2] = sm_arena_malloc(a, 1 * KiB);
  cr_assert_not_null(ps[n / 2], "no room after a free under the limit");
  errno = 0;
  cr_assert_null(sm_arena_malloc(a, 1 * KiB), "one free made room for two");
  cr_assert_eq(errno, ENOMEM);

  /* The cap is the arena's own: a child is not limited by it. */
  sm_arena_t *c = sm_arena_new(a);
  cr_assert_not_null(c);
  void *cbig = sm_arena_malloc(c, 256 * KiB);
  cr_assert_not_null(cbig, "a child is capped by its parent's limit");

  /* 0 removes the cap. */
  cr_assert_eq(sm_arena_set_limit(a, 0), 0);
  void *big = sm_arena_malloc(a, 1 * MiB);
  cr_assert_not_null(big, "1 MiB refused after removing the limit");
  for (int i = 0; i < 500; i++)
    cr_assert_not_null(sm_arena_malloc(a, 1 * KiB), "allocation %d refused with no limit", i);
  tu_arena_drop(c);
  tu_arena_drop(a);
}

/* A single allocation bigger than the limit fails at once; a fitting one succeeds. */
Test(limit, single_allocation_past_limit) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  cr_assert_eq(sm_arena_set_limit(a, 64 * KiB), 0);
  errno = 0;
  cr_assert_null(sm_arena_malloc(a, 100 * KiB), "100 KiB passed a 64 KiB limit");
  cr_assert_eq(errno, ENOMEM);
  errno = 0;
  cr_assert_null(sm_arena_malloc(a, 5 * MiB), "5 MiB passed a 64 KiB limit");
  cr_assert_eq(errno, ENOMEM);
  cr_assert_not_null(sm_arena_malloc(a, 32 * KiB), "32 KiB refused under a 64 KiB limit");
  tu_arena_drop(a);
}

/* Under a byte cap, realloc of a large object counts what it ends as, not the
 * old and the new object at once: 500 KiB grows to 900 KiB under a 1 MiB cap
 * (it was ENOMEM: the object was moved), a growth past the cap is ENOMEM with
 * the object untouched, and a shrink gives its bytes back to the cap. */
Test(limit, large_realloc_counts_what_it_ends_as) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  cr_assert_eq(sm_arena_set_limit(a, 1 * MiB), 0);
  sm_arena_t *was = sm_arena_enter(a);
  unsigned char *p = malloc(500 * KiB);
  cr_assert_not_null(p);
  memset(p, 0x5a, 500 * KiB);
  unsigned char *q = realloc(p, 900 * KiB);
  cr_assert_not_null(q, "500 KiB -> 900 KiB refused under a 1 MiB cap (errno %d)", errno);
  for (size_t i = 0; i < 500 * KiB; i += 4096) cr_assert_eq(q[i], 0x5a, "byte %zu lost in the growth", i);
  memset(q, 0x6b, 900 * KiB);
  sm_stats_t st;
  sm_arena_stats(a, &st);
  cr_assert_leq(st.bytes_live, 1 * MiB, "bytes_live %zu past the cap", st.bytes_live);
  cr_assert_geq(st.bytes_live, 900 * KiB);

  errno = 0;
  cr_assert_null(realloc(q, 1100 * KiB), "1100 KiB passed a 1 MiB cap");
  cr_assert_eq(errno, ENOMEM);
  for (size_t i = 0; i < 900 * KiB; i += 4096) cr_assert_eq(q[i], 0x6b, "byte %zu changed by the refused growth", i);

  q = realloc(q, 300 * KiB); /* a shrink gives the cap its bytes back */
  cr_assert_not_null(q);
  unsigned char *r = malloc(600 * KiB);
  cr_assert_not_null(r, "no room for 600 KiB beside 300 KiB under a 1 MiB cap after the shrink");
  sm_arena_stats(a, &st);
  cr_assert_leq(st.bytes_live, 1 * MiB, "bytes_live %zu past the cap", st.bytes_live);
  free(r);
  free(q);
  sm_arena_stats(a, &st);
  cr_assert_eq(st.bytes_live, 0, "bytes_live %zu with nothing live", st.bytes_live);
  cr_assert_not_null(p = malloc(1000 * KiB), "the cap lost count: 1000 KiB refused in an empty arena");
  free(p);
  sm_arena_enter(was);
  tu_arena_drop(a);
}

/* ---- statistics ----------------------------------------------------------------- */

/* sm_arena_stats counts a's live objects and bytes (usable sizes), rolled up over children. */
Test(stats, counts_and_rolls_up) {
  sm_arena_t *a = sm_arena_new(NULL);
  sm_arena_t *c1 = sm_arena_new(a);
  sm_arena_t *c2 = sm_arena_new(a);
  sm_arena_t *g = sm_arena_new(c1);
  cr_assert(a && c1 && c2 && g);
  sm_arena_t *arenas[4] = {a, c1, c2, g};
  size_t counts[4] = {300, 200, 100, 50};
  size_t bytes[4] = {0};
  void **ps[4];
  size_t *counted[4];           /* each object's bytes (malloc_counted: its usable size but in the hardened build) */
  for (int k = 0; k < 4; k++) { /* (arena k's children allocate later: its stats see only its own) */
    ps[k] = malloc(counts[k] * sizeof(void *));
    counted[k] = malloc(counts[k] * sizeof(size_t));
    cr_assert(ps[k] && counted[k]);
    for (size_t i = 0; i < counts[k]; i++) {
      size_t s = 16 + (i * 131 + (size_t)k * 17) % 3000;
      if (i == 7) s = 300 * KiB;
      ps[k][i] = malloc_counted(arenas[k], s, &counted[k][i]);
      bytes[k] += counted[k][i];
    }
  }
  sm_stats_t st;
  sm_arena_stats(g, &st);
  cr_assert_eq(st.objects_live, counts[3], "leaf objects_live %zu, want %zu", st.objects_live, counts[3]);
  cr_assert_eq(st.bytes_live, bytes[3], "leaf bytes_live %zu, want %zu", st.bytes_live, bytes[3]);
  cr_assert_eq(st.arenas, 1, "leaf arenas %zu, want 1", st.arenas);
  sm_arena_stats(c2, &st);
  cr_assert_eq(st.objects_live, counts[2]);
  cr_assert_eq(st.bytes_live, bytes[2]);
  sm_arena_stats(c1, &st);
  cr_assert_eq(st.objects_live, counts[1] + counts[3], "c1 does not include its child: %zu", st.objects_live);
  cr_assert_eq(st.bytes_live, bytes[1] + bytes[3]);
  cr_assert_eq(st.arenas, 2);
  sm_arena_stats(a, &st);
  size_t all_o = counts[0] + counts[1] + counts[2] + counts[3];
  size_t all_b = bytes[0] + bytes[1] + bytes[2] + bytes[3];
  cr_assert_eq(st.objects_live, all_o, "rolled-up objects_live %zu, want %zu", st.objects_live, all_o);
  cr_assert_eq(st.bytes_live, all_b, "rolled-up bytes_live %zu, want %zu", st.bytes_live, all_b);
  cr_assert_eq(st.arenas, 4, "rolled-up arenas %zu, want 4", st.arenas);
  cr_assert_gt(st.blocks, 0);

  sm_stats_t r, proc;
  sm_arena_stats(sm_arena_parent(a), &r);
  cr_assert_geq(r.objects_live, all_o, "the root's stats miss its children's objects");
  sm_arena_stats(NULL, &proc);
  cr_assert_geq(proc.objects_live, all_o);
  cr_assert_geq(proc.bytes_live, all_b);
  cr_assert_gt(proc.bytes_committed, 0);
  cr_assert_geq(proc.bytes_peak, proc.bytes_committed);

  /* Frees (from the owner thread) show at once. */
  size_t fb = 0;
  for (size_t i = 0; i < 20; i++) {
    fb += counted[3][i];
    free(ps[3][i]);
  }
  sm_arena_stats(g, &st);
  cr_assert_eq(st.objects_live, counts[3] - 20, "after 20 frees: %zu", st.objects_live);
  cr_assert_eq(st.bytes_live, bytes[3] - fb, "after 20 frees: bytes_live %zu, want %zu", st.bytes_live,
               bytes[3] - fb);
  sm_arena_stats(a, &st);
  cr_assert_eq(st.objects_live, all_o - 20);

  /* A closed child leaves the parent's roll-up. */
  sm_arena_close(c2);
  sm_arena_stats(a, &st);
  cr_assert_eq(st.objects_live, all_o - 20 - counts[2], "closed child still counted: %zu", st.objects_live);
  for (int k = 0; k < 4; k++) {
    free(ps[k]);
    free(counted[k]);
  }
  tu_arena_drop(g);
  tu_arena_drop(c2);
  tu_arena_drop(c1);
  tu_arena_drop(a);
}

/* sm_stats_text and sm_stats_json write non-empty text; the JSON is an object with bytes_live. */
Test(stats, text_and_json) {
  sm_arena_t *a = sm_arena_new(NULL);
  cr_assert_not_null(a);
  for (int i = 0; i < 100; i++) cr_assert_not_null(sm_arena_malloc(a, 100));
  static char buf[65536];
  sm_arena_t *which[2] = {a, NULL};
  for (int w = 0; w < 2; w++) {
    memset(buf, 0x7f, sizeof buf);
    size_t n = sm_stats_text(which[w], buf, sizeof buf);
    cr_assert_gt(n, 0, "sm_stats_text returned 0");
    cr_assert_lt(n, sizeof buf);
    cr_assert_eq(strlen(buf), n, "sm_stats_text: strlen %zu, returned %zu", strlen(buf), n);

    memset(buf, 0x7f, sizeof buf);
    n = sm_stats_json(which[w], buf, sizeof buf);
    cr_assert_gt(n, 0, "sm_stats_json returned 0");
    cr_assert_lt(n, sizeof buf);
    cr_assert_eq(strlen(buf), n);
    const char *s = buf;
    while (*s == ' ' || *s == '\n' || *s == '\t') s++;
    cr_assert_eq(*s, '{', "JSON does not start with '{': %.60s", buf);
    cr_assert_not_null(strstr(buf, "\"bytes_live\""), "JSON has no \"bytes_live\": %.200s", buf);
    const char *e = buf + n;
    while (e > buf && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\t')) e--;
    cr_assert_eq(e[-1], '}', "JSON does not end with '}'");

    /* A small buffer is truncated and NUL-terminated; the return says what was needed. */
    char small[8];
    memset(small, 0x7f, sizeof small);
    size_t need = sm_stats_json(which[w], small, sizeof small);
    cr_assert_geq(need, sizeof small, "needed length %zu for a truncated write", need);
    cr_assert_lt(strlen(small), sizeof small, "truncated output not NUL-terminated");
  }
  tu_arena_drop(a);
}

/* Arenas closed and made again 300 times reuse the same blocks (reopened
 * without a new epoch): no handle of any earlier round ever derefs again. */
Test(close, reused_blocks_keep_old_handles_stale) {
  enum { ROUNDS = 300, PER = 64 };
  static sm_handle_t old[ROUNDS * PER];
  size_t n = 0;
  for (int r = 0; r < ROUNDS; r++) {
    sm_arena_t *a = sm_arena_new(NULL);
    cr_assert_not_null(a);
    for (int i = 0; i < PER; i++) {
      sm_handle_t h = sm_arena_halloc(a, 32);
      cr_assert_neq(h, 0);
      old[n++] = h;
    }
    tu_arena_drop(a);
    sm_collect(SIZE_MAX);
    for (size_t k = 0; k < n; k++)
      cr_assert_null(sm_deref(old[k]), "round %d: handle %zu of an earlier round derefs again", r, k);
  }
}
