/* memory_prog.c: the child program of test_memory, linked with
 * libslotmalloc.so. A burst of small objects (about 60 MiB in 16 to 216
 * bytes), then everything freed but the first 1%, in allocation order, by
 * the thread that allocated it: every free is a fast-path free. Then no more
 * allocator call at all: it prints what it saw, one "name value" per line,
 * RSS in KiB:
 *   peak      RSS after the burst
 *   after     RSS right after the frees
 *   settled   the lowest RSS seen while idle for up to argv[1] ms (default 0),
 *             polled every 20 ms; it stops early once RSS fell argv[2] KiB
 *             below "after"
 * RSS is read from /proc/self/statm with open/read: no allocation. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rss_now.h"

#define OBJECTS 400000
static void *objects[OBJECTS];

int main(int argc, char **argv) {
  long idle_ms = argc > 1 ? atol(argv[1]) : 0;
  long drop = argc > 2 ? atol(argv[2]) : 0;
  for (size_t i = 0; i < OBJECTS; i++) {
    size_t size = 16 + (i * 7919) % 201;
    objects[i] = malloc(size);
    if (!objects[i]) return 2;
    memset(objects[i], (int)i, size);
  }
  long peak = rss_kib();
  for (size_t i = OBJECTS / 100; i < OBJECTS; i++) free(objects[i]);
  long after = rss_kib(), settled = after;
  for (long waited = 0; waited < idle_ms && settled > after - drop; waited += 20) {
    struct timespec t = {0, 20 * 1000000L};
    nanosleep(&t, NULL);
    long now = rss_kib();
    if (now < settled) settled = now;
  }
  char out[128];
  int n = snprintf(out, sizeof out, "peak %ld\nafter %ld\nsettled %ld\n", peak, after, settled);
  if (write(1, out, (size_t)n) != n) return 3;
  return 0;
}
