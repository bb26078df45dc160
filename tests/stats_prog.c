/* stats_prog.c: the child program of test_options and test_stats, linked with
 * libslotmalloc.so. It prints its pid on stdout ("pid N"), then does what
 * argv[1] says, and exits 0 (the statistics at exit, warnings about options
 * and misuse reports go to stderr, which the tests read):
 *
 *   touch      one malloc and free (the options are read)
 *   pattern    keeps live: 37 objects of 7000 bytes (slot size 7168), 1000 of
 *              100 bytes (slot 112), 3 large objects of 1 MiB
 *   freeall    the pattern, then everything freed
 *   closefd2   the pattern, then closes fd 2 before exiting (as sort and ls do)
 *   clobber F  the pattern, then closes fd 2 and makes every descriptor from 3
 *              to 255 a duplicate of file F (opened for appending): a report
 *              must not land in F (stats.c keeps fd 2 on a high descriptor only
 *              while it is still the same file)
 *   remote     another thread frees 2000 objects of 48 bytes that main
 *              allocated; main then allocates 4000 more (collecting the frees)
 *   purge      the pattern freed, then malloc_trim(0) (blocks go back to the OS)
 *   doublefree frees an object twice (aborts unless SLOTMALLOC_ABORT_ON_ERROR=0)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *keep[2048];
static size_t nkeep;

static void *must(void *p) {
  if (!p) {
    fprintf(stderr, "stats_prog: out of memory\n");
    exit(2);
  }
  return p;
}

static void pattern(void) {
  for (int i = 0; i < 37; i++) keep[nkeep++] = must(malloc(7000));
  for (int i = 0; i < 1000; i++) keep[nkeep++] = must(malloc(100));
  for (int i = 0; i < 3; i++) keep[nkeep++] = must(malloc((size_t)1 << 20));
}

static void free_all(void) {
  while (nkeep) free(keep[--nkeep]);
}

static void *remote_free(void *arg) {
  void **objs = arg;
  for (int i = 0; i < 2000; i++) free(objs[i]);
  return NULL;
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "touch";
  char line[64];
  int n = snprintf(line, sizeof line, "pid %ld\n", (long)getpid());
  if (write(STDOUT_FILENO, line, (size_t)n) != n) return 3;
  if (!strcmp(what, "touch")) {
    free(must(malloc(10)));
  } else if (!strcmp(what, "pattern")) {
    pattern();
  } else if (!strcmp(what, "freeall")) {
    pattern();
    free_all();
  } else if (!strcmp(what, "closefd2")) {
    pattern();
    close(STDERR_FILENO);
  } else if (!strcmp(what, "clobber") && argc > 2) {
    pattern();
    int f = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (f < 0) return 5;
    close(STDERR_FILENO);
    for (int fd = 3; fd < 256; fd++)
      if (fd != f) dup2(f, fd);
  } else if (!strcmp(what, "remote")) {
    static void *objs[2000];
    for (int i = 0; i < 2000; i++) objs[i] = must(malloc(48));
    pthread_t t;
    if (pthread_create(&t, NULL, remote_free, objs) != 0 || pthread_join(t, NULL) != 0) return 4;
    for (int i = 0; i < 4000; i++) objs[i % 2000] = must(malloc(48));
  } else if (!strcmp(what, "purge")) {
    pattern();
    free_all();
    malloc_trim(0);
  } else if (!strcmp(what, "doublefree")) {
    void *p = must(malloc(64));
    free(p);
    free(p);
  } else {
    fprintf(stderr, "stats_prog: unknown mode %s\n", what);
    return 1;
  }
  return 0;
}
