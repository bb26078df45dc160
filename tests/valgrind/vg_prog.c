/* vg_prog.c: a program that uses the sm_ API, run under memcheck by memcheck.sh
 * against the valgrind build (-DSLOTMALLOC_VALGRIND=ON) with
 * --soname-synonyms=somalloc=NONE. Each mode does one thing memcheck must see
 * (or must not complain about):
 *   uaf        frees a slot, then reads it               -> "Invalid read"
 *   leak       loses the only pointer to 3 objects       -> "definitely lost"
 *   close      closes an arena, then reads its objects   -> "Invalid read" (small and large)
 *   arena_free free() of sm_arena_malloc objects          -> no error at all
 *   handle     sm_handle_of(malloc(64)) names the object -> no error, exit 0
 *   clean      a bit of everything, all freed            -> no error, no leak
 * Exit status 0 unless a check of the program itself fails (then 1). */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slotmalloc.h"

static void *volatile keep; /* the leak's pointer passes through here, then is lost */
static volatile char sink;

static int fail(const char *what) {
  printf("vg_prog: FAILED: %s\n", what);
  return 1;
}

static int uaf(void) {
  char *p = malloc(64);
  memset(p, 7, 64);
  free(p);
  sink = p[10]; /* use after free */
  return 0;
}

/* Three objects lost: one in the middle of its block, one that is the first
 * slot of a fresh block (the block's descriptor points at it: slotmalloc hides
 * that word from memcheck's leak scan), and a large object (its segment header
 * points at it, hidden too). */
static void *volatile first;

static __attribute__((noinline)) void lose(void) {
  first = malloc(100);
  keep = malloc(100);
  memset(keep, 1, 100);
  keep = malloc(3000); /* class 3072: a block of its own */
  memset(keep, 1, 3000);
  keep = malloc(1 << 20);
  memset(keep, 1, 1 << 20);
  keep = NULL;
}

static int leak(void) {
  lose();
  char *q = malloc(32); /* reuses registers and stack: no copy of the lost pointer stays */
  memset(q, 0, 32);
  free(q);
  free(first);
  return 0;
}

static int close_arena(void) {
  sm_arena_t *a = sm_arena_new(NULL);
  char *small = sm_arena_malloc(a, 48);
  char *large = sm_arena_malloc(a, 1 << 20);
  if (!a || !small || !large) return fail("arena allocation");
  memset(small, 1, 48);
  memset(large, 2, 1 << 20);
  sm_arena_close(a);
  sink = small[0]; /* read after the close: Invalid read */
  sink = large[5]; /* read after the close: Invalid read */
  sm_arena_release(a);
  return 0;
}

static int arena_free(void) {
  sm_arena_t *a = sm_arena_new(NULL);
  char *small = sm_arena_malloc(a, 32);
  char *large = sm_arena_malloc(a, 300 << 10);
  if (!a || !small || !large) return fail("arena allocation");
  memset(small, 1, 32);
  memset(large, 1, 300 << 10);
  free(small); /* plain free of an arena object: no "Invalid free()" */
  free(large);
  sm_arena_release(a);
  return 0;
}

static int handle(void) {
  char *p = malloc(64);
  sm_handle_t h = sm_handle_of(p);
  printf("vg_prog: sm_handle_of(malloc(64)) = %#llx\n", (unsigned long long)h);
  if (!h) return fail("sm_handle_of(malloc(64)) is 0: malloc is not slotmalloc's");
  if (sm_deref(h) != p) return fail("sm_deref");
  free(p);
  if (sm_deref(h) != NULL) return fail("a stale handle dereferences");
  return 0;
}

static void *remote_free(void *arg) {
  free(arg); /* an object of another thread's block */
  return NULL;
}

static int clean(void) {
  /* every size class kind, contents kept across realloc, calloc zero */
  size_t sizes[] = {0, 1, 16, 24, 100, 1000, 5000, 40000, 300000, 3 << 20};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    size_t n = sizes[k];
    unsigned char *p = malloc(n);
    if (!p) return fail("malloc");
    memset(p, 0x5a, n);
    p = realloc(p, n * 2 + 10);
    for (size_t i = 0; i < n; i++)
      if (p[i] != 0x5a) return fail("realloc lost the contents");
    memset(p, 1, n * 2 + 10);
    free(p);
    unsigned char *z = calloc(1, n + 1);
    for (size_t i = 0; i <= n; i++)
      if (z[i]) return fail("calloc memory is not zero");
    free(z);
  }
  /* aligned objects; all of the usable size is the program's */
  void *al = aligned_alloc(64, 200), *pm = NULL;
  if (!al || posix_memalign(&pm, 1 << 21, 300000)) return fail("aligned allocation");
  memset(al, 1, malloc_usable_size(al));
  memset(pm, 1, malloc_usable_size(pm));
  free(al);
  free(pm);
  /* many objects, freed in another order; one freed by another thread */
  void *v[2000];
  for (int i = 0; i < 2000; i++) {
    v[i] = malloc((size_t)(i % 97) * 8 + 1);
    memset(v[i], i, (size_t)(i % 97) * 8 + 1);
  }
  for (int i = 1999; i > 0; i -= 2) free(v[i]);
  pthread_t t;
  if (pthread_create(&t, NULL, remote_free, v[0]) || pthread_join(t, NULL)) return fail("thread");
  for (int i = 2; i < 2000; i += 2) free(v[i]);
  /* arenas: nested, promote, merge, close; handles */
  sm_arena_t *a = sm_arena_new(NULL), *b = sm_arena_new(a), *c = sm_arena_new(NULL);
  char *x = sm_arena_malloc(b, 64), *y = sm_arena_calloc(c, 10, 10);
  memset(x, 3, 64);
  x = sm_arena_promote(x);
  if (!x || x[63] != 3 || y[99]) return fail("promote, calloc");
  if (sm_arena_merge(a, c)) return fail("merge");
  for (int i = 0; i < 500; i++) memset(sm_arena_malloc(b, 200), 0, 200);
  sm_handle_t h = sm_arena_halloc(b, 40);
  memset(sm_deref(h), 0, 40);
  sm_arena_close(a); /* closes b too: their objects die with it, no leak */
  if (sm_deref(h)) return fail("a handle of a closed arena dereferences");
  sm_arena_release(b);
  sm_arena_release(a);
  sm_collect(SIZE_MAX);
  /* after the collect, the dismantled blocks serve again */
  for (int i = 0; i < 1000; i++) v[i] = malloc(64);
  for (int i = 0; i < 1000; i++) free(v[i]);
  sm_free(sm_malloc(10));
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  int rc;
  if (!strcmp(mode, "uaf")) rc = uaf();
  else if (!strcmp(mode, "leak")) rc = leak();
  else if (!strcmp(mode, "close")) rc = close_arena();
  else if (!strcmp(mode, "arena_free")) rc = arena_free();
  else if (!strcmp(mode, "handle")) rc = handle();
  else if (!strcmp(mode, "clean")) rc = clean();
  else {
    fprintf(stderr, "usage: vg_prog uaf|leak|close|arena_free|handle|clean\n");
    return 2;
  }
  if (!rc) printf("vg_prog: %s done\n", mode);
  return rc;
}
