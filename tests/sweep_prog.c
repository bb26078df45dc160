/* sweep_prog.c: the child program of test_outside_sweep (helper R6's
 * outside-in sweep): what real programs do that a test process cannot do to
 * itself. Linked with libslotmalloc.so. One scenario per first argument:
 *
 *   title   what setproctitle does (postgres, redis, nginx, sendmail, sshd):
 *           copy environ to the heap, then write a process title over the
 *           argv and environ strings of the initial stack; then allocate,
 *           free and exit. The options were read before, at the first malloc:
 *           a path option (SLOTMALLOC_STATS_FILE, SLOTMALLOC_PROF_FILE) must
 *           not be read from those strings at exit.
 *
 * Prints "sweep_prog: ok" on success. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static int title(int argc, char **argv) {
  /* the first allocation reads the options from the environment strings */
  void *early = malloc(100);
  char *first = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
  int n = 0;
  while (environ[n]) n++;
  char **copy = malloc((size_t)(n + 1) * sizeof *copy);
  if (!copy) return 1;
  for (int i = 0; i < n; i++) {
    if (environ[i] == end) end += strlen(environ[i]) + 1; /* contiguous on the stack */
    copy[i] = strdup(environ[i]);
    if (!copy[i]) return 1;
  }
  copy[n] = NULL;
  environ = copy;
  /* the title over the old strings; its tail left as NULs, as postgres does */
  memset(first, 0, (size_t)(end - first));
  snprintf(first, (size_t)(end - first), "sweep: worker process");
  for (int i = 0; i < 1000; i++) free(malloc((size_t)i * 7 + 1));
  free(early);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int rc = 2;
  if (!strcmp(argv[1], "title")) rc = title(argc, argv);
  if (rc == 0) {
    fputs("sweep_prog: ok\n", stdout);
    fflush(stdout);
  }
  return rc;
}
