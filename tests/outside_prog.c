/* outside_prog.c: the child program of test_outside_edges (helper R2), linked
 * with the shared library. One mode per run (argv[1]):
 *   work   the allocation calls of a small program, stage by stage (a small
 *          object, 1,000 of 1 B-1 KB, calloc, an 8 MiB object, realloc grown
 *          1 MiB -> 16 MiB, a 1 MiB-aligned object); one line per stage,
 *          "ok" or "ENOMEM". Run under RLIMIT_AS (ulimit -v) to see each
 *          stage refused cleanly; exit 1 if a call fails with another errno or
 *          returns memory that does not hold what was written.
 *   smallstack  every allocation, statistics, trim and profile call on a
 *          thread of PTHREAD_STACK_MIN stack; argv[2]: sm_prof_dump's path
 *   hog    first maps most of the address space (PROT_NONE, MAP_NORESERVE)
 *          for itself, then does what work does. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "slotmalloc.h"

static int bad;

/* A call's result: ok, or NULL with ENOMEM; anything else is wrong. */
static int outcome(const char *stage, void *p, int err) {
  if (p) {
    printf("%s: ok\n", stage);
    return 1;
  }
  if (err != ENOMEM) {
    printf("%s: NULL with errno %d\n", stage, err);
    bad = 1;
  } else {
    printf("%s: ENOMEM\n", stage);
  }
  return 0;
}

static void fill_check(unsigned char *p, size_t n, unsigned char v) {
  memset(p, v, n);
  for (size_t i = 0; i < n; i += 4093)
    if (p[i] != v) bad = 1;
}

static void work(void) {
  errno = 0;
  void *first = malloc(100);
  if (outcome("first", first, errno)) fill_check(first, 100, 1);

  static void *many[1000];
  int got = 0;
  for (int i = 0; i < 1000; i++) {
    errno = 0;
    many[i] = malloc((size_t)i + 1);
    if (!many[i]) {
      if (errno != ENOMEM) bad = 1;
      break;
    }
    fill_check(many[i], (size_t)i + 1, (unsigned char)i);
    got++;
  }
  outcome("many", got == 1000 ? many : NULL, ENOMEM);
  for (int i = 0; i < got; i++) free(many[i]);

  errno = 0;
  unsigned char *z = calloc(1000, 100);
  if (outcome("calloc", z, errno)) {
    for (size_t i = 0; i < 100000; i++)
      if (z[i]) bad = 1;
  }
  free(z);

  errno = 0;
  void *big = malloc(8u << 20);
  if (outcome("large", big, errno)) fill_check(big, 8u << 20, 2);
  free(big);

  errno = 0;
  unsigned char *r = malloc(1u << 20);
  if (outcome("realloc-start", r, errno)) {
    fill_check(r, 1u << 20, 3);
    errno = 0;
    unsigned char *r2 = realloc(r, 16u << 20);
    if (outcome("realloc-grow", r2, errno)) {
      for (size_t i = 0; i < (1u << 20); i += 4093)
        if (r2[i] != 3) bad = 1;
      r = r2;
    } else {
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif
      if (r[0] != 3) bad = 1; /* a failed realloc leaves the object as it was */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
    }
  }
  free(r);

  errno = 0;
  void *al = aligned_alloc(1u << 20, 3u << 20);
  if (outcome("aligned", al, errno)) {
    if ((uintptr_t)al & ((1u << 20) - 1)) bad = 1;
    fill_check(al, 3u << 20, 4);
  }
  free(al);
  free(first);
}

/* Every call a program may make, on a thread with the smallest stack there
 * is (PTHREAD_STACK_MIN, 16 KiB): glibc's malloc serves all of them there. */
static void *small_stack_calls(void *arg) {
  const char *prof_path = arg;
  static void *p[300];
  for (int i = 0; i < 300; i++) p[i] = malloc((size_t)i * 997 + 1);
  void *big = malloc(5u << 20);
  free(realloc(big, 9u << 20));
  for (int i = 0; i < 300; i++) free(p[i]);
  struct mallinfo2 m = mallinfo2();
  printf("mallinfo2 %s\n", m.arena ? "ok" : "empty");
  malloc_trim(0);
  malloc_stats(); /* on stderr */
  char text[128];
  sm_stats_text(NULL, text, sizeof text);
  sm_stats_json(NULL, text, sizeof text);
  sm_arena_t *a = sm_arena_new(NULL);
  for (int i = 0; i < 100; i++) sm_free(sm_arena_malloc(a, (size_t)i * 50 + 1));
  sm_arena_close(a);
  sm_arena_release(a);
  sm_collect(SIZE_MAX);
  int err = sm_prof_dump(prof_path);
  printf("sm_prof_dump %s\n", err == 0 ? "written" : err == EINVAL ? "off" : "failed");
  return NULL;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!strcmp(mode, "work")) {
    work();
  } else if (!strcmp(mode, "smallstack")) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_t t;
    if (pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN) != 0 ||
        pthread_create(&t, &attr, small_stack_calls, argc > 2 ? argv[2] : NULL) != 0)
      return 3;
    pthread_join(t, NULL);
  } else if (!strcmp(mode, "hog")) {
    /* the largest PROT_NONE reservation the kernel gives: from 127 TiB down */
    size_t size = (size_t)127 << 40;
    void *hog = MAP_FAILED;
    while (size >= ((size_t)1 << 30)) {
      hog = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (hog != MAP_FAILED) break;
      size -= size / 16;
    }
    printf("hog: %s\n", hog != MAP_FAILED && size >= ((size_t)64 << 40) ? "most of the address space" : "less");
    work();
    work();
  } else {
    return 2;
  }
  printf("done\n");
  return bad;
}
