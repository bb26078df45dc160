/* static_compat.c: a program linked fully static (cc -static, see
 * tests/CMakeLists.txt) with libslotmalloc.a, calling glibc's malloc
 * introspection: mallinfo2, mallinfo, malloc_stats, malloc_info, mallopt, and
 * the __libc_ names. That it links at all shows libc.a's malloc.o was not
 * pulled in (it would clash: "multiple definition of malloc"). The weak
 * sm_handle_of shows the malloc is slotmalloc's; the figures must move with
 * what the program allocates.
 *
 * Exit 0 and "static_compat: ok" on success; 1 with a message otherwise. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern uint64_t sm_handle_of(const void *p) __attribute__((weak));
extern struct mallinfo2 __libc_mallinfo2(void);
extern int __libc_mallopt(int param, int value);
extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);

static int failures;
#define CHECK(cond, ...)                              \
  do {                                                \
    if (!(cond)) {                                    \
      fprintf(stderr, "static_compat: " __VA_ARGS__); \
      fputc('\n', stderr);                            \
      failures++;                                     \
    }                                                 \
  } while (0)

int main(void) {
  CHECK(sm_handle_of != NULL, "sm_handle_of is not linked in: libslotmalloc.a missing?");
  void *probe = malloc(40);
  CHECK(sm_handle_of && sm_handle_of(probe) != 0, "malloc is not slotmalloc's");

  struct mallinfo2 before = mallinfo2();
  enum { N = 200 };
  static void *objs[N];
  for (int i = 0; i < N; i++) objs[i] = malloc(1000);
  void *big = malloc((size_t)8 << 20);
  struct mallinfo2 after = mallinfo2();
  CHECK(after.uordblks >= before.uordblks + N * 1000, "uordblks %zu -> %zu after %d x 1000 bytes", before.uordblks,
        after.uordblks, N);
  CHECK(after.hblkhd >= before.hblkhd + ((size_t)8 << 20), "hblkhd %zu -> %zu after 8 MiB", before.hblkhd,
        after.hblkhd);
  CHECK(after.hblks == before.hblks + 1, "hblks %zu -> %zu after one large object", before.hblks, after.hblks);
  CHECK(after.arena >= after.uordblks, "arena %zu < uordblks %zu", after.arena, after.uordblks);
  CHECK(after.fordblks == after.arena - after.uordblks, "fordblks %zu != arena - uordblks", after.fordblks);
  struct mallinfo2 same = __libc_mallinfo2();
  CHECK(same.hblkhd == after.hblkhd, "__libc_mallinfo2 differs from mallinfo2");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
  CHECK(old.hblks == (int)after.hblks, "mallinfo().hblks %d != %zu", old.hblks, after.hblks);

  CHECK(mallopt(M_ARENA_MAX, 2) == 1, "mallopt(M_ARENA_MAX) did not return 1");
  CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1, "mallopt(M_MMAP_THRESHOLD) did not return 1");
  CHECK(mallopt(12345, 1) == 0, "mallopt(12345) did not return 0");
  CHECK(__libc_mallopt(M_TRIM_THRESHOLD, 0) == 1, "__libc_mallopt did not return 1");

  char *xml = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&xml, &len);
  CHECK(f != NULL, "open_memstream failed");
  if (f) {
    CHECK(malloc_info(0, f) == 0, "malloc_info returned non-zero");
    fclose(f);
    CHECK(xml && strstr(xml, "<malloc version=\"1\">") && strstr(xml, "</malloc>"), "malloc_info XML: %.200s",
          xml ? xml : "(null)");
    CHECK(xml && strstr(xml, "<total type=\"mmap\" count=\"1\""), "malloc_info: no mmap total of 1: %.400s",
          xml ? xml : "(null)");
    free(xml);
  }
  errno = 0;
  CHECK(malloc_info(1, stdout) == -1 && errno == EINVAL, "malloc_info(1, ...) did not fail with EINVAL");

  /* malloc_stats writes to fd 2: sent to a pipe here and read back. */
  int fds[2];
  CHECK(pipe(fds) == 0, "pipe failed");
  int saved = dup(STDERR_FILENO);
  dup2(fds[1], STDERR_FILENO);
  malloc_stats();
  dup2(saved, STDERR_FILENO);
  close(fds[1]);
  static char text[65536];
  size_t got = 0;
  ssize_t r;
  while (got < sizeof text - 1 && (r = read(fds[0], text + got, sizeof text - 1 - got)) > 0) got += (size_t)r;
  text[got] = 0;
  CHECK(strstr(text, "Arena 0:") && strstr(text, "in use bytes"), "malloc_stats: no glibc lines: %.200s", text);
  CHECK(strstr(text, "slotmalloc stats (process): static_compat"), "malloc_stats: no slotmalloc report: %.200s",
        text);

  void *q = __libc_malloc(24);
  CHECK(q && sm_handle_of && sm_handle_of(q), "__libc_malloc is not slotmalloc's");
  __libc_free(q);
  for (int i = 0; i < N; i++) free(objs[i]);
  free(big);
  free(probe);
  struct mallinfo2 end = mallinfo2();
  CHECK(end.hblks == before.hblks, "hblks %zu after the large object was freed, %zu before", end.hblks, before.hblks);
  if (failures) return 1;
  printf("static_compat: ok\n");
  return 0;
}
