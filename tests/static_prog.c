/* static_prog.c: an ordinary program, linked with libslotmalloc.a (see
 * tests/CMakeLists.txt). Its source knows nothing of slotmalloc: it calls the
 * standard names. The only slotmalloc name is the weak sm_handle_of used for
 * the check that its malloc, and the malloc glibc uses internally (strdup,
 * getline, asprintf, realpath, open_memstream), is slotmalloc's: that function
 * returns a non-zero handle only for a live object of slotmalloc's.
 *
 * Exit 0 and "static_prog: ok" on success; 1 with a message otherwise.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern uint64_t sm_handle_of(const void *p) __attribute__((weak));

static int failures;

static void check(const char *what, void *p) {
  if (p == NULL) {
    fprintf(stderr, "static_prog: %s returned NULL\n", what);
    failures++;
  } else if (sm_handle_of(p) == 0) {
    fprintf(stderr, "static_prog: %s = %p is not a slotmalloc object\n", what, p);
    failures++;
  }
}

int main(void) {
  if (!sm_handle_of) {
    fprintf(stderr, "static_prog: sm_handle_of is not linked in: libslotmalloc.a missing?\n");
    return 1;
  }
  /* the program's own calls */
  void *small = malloc(10);
  check("malloc(10)", small);
  void *big = malloc(8u << 20);
  check("malloc(8 MiB)", big);
  void *z = calloc(100, 100);
  check("calloc", z);
  void *r = realloc(malloc(16), 100000);
  check("realloc", r);
  void *al = NULL;
  if (posix_memalign(&al, 4096, 5000) != 0) al = NULL;
  check("posix_memalign", al);
  void *aa = aligned_alloc(64, 640);
  check("aligned_alloc", aa);

  /* glibc's own allocations, through the PLT into the executable's malloc */
  char *dup = strdup("hello, static world");
  check("strdup", dup);
  char *ndup = strndup("abcdefgh", 4);
  check("strndup", ndup);
  char *fmt = NULL;
  if (asprintf(&fmt, "%d-%s", 42, "x") < 0) fmt = NULL;
  check("asprintf", fmt);
  char *rp = realpath("/", NULL);
  check("realpath", rp);
  char *line = NULL;
  size_t cap = 0;
  FILE *f = fmemopen("one line\n", 9, "r");
  if (f && getline(&line, &cap, f) > 0) check("getline buffer", line);
  else {
    fprintf(stderr, "static_prog: getline failed\n");
    failures++;
  }
  if (f) fclose(f);
  char *ms = NULL;
  size_t mslen = 0;
  FILE *m = open_memstream(&ms, &mslen);
  if (m) {
    for (int i = 0; i < 1000; i++) fprintf(m, "%d,", i);
    fclose(m);
    check("open_memstream buffer", ms);
  }

  /* use the memory, then free everything with the plain names */
  memset(small, 1, 10);
  memset(big, 2, 8u << 20);
  if (strcmp(dup, "hello, static world") != 0 || strcmp(ndup, "abcd") != 0 || strcmp(fmt, "42-x") != 0) {
    fprintf(stderr, "static_prog: string contents wrong\n");
    failures++;
  }
  free(small);
  free(big);
  free(z);
  free(r);
  free(al);
  free(aa);
  free(dup);
  free(ndup);
  free(fmt);
  free(rp);
  free(line);
  free(ms);
  /* a freed object is no longer one of slotmalloc's live objects */
  if (sm_handle_of(small) != 0) {
    fprintf(stderr, "static_prog: freed object still live\n");
    failures++;
  }
  if (failures) return 1;
  printf("static_prog: ok\n");
  return 0;
}
