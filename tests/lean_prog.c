/* lean_prog.c: the child program of test_lean, linked with libslotmalloc.so.
 * BUFFERS buffers grown together by realloc from 8 KiB to 240 KiB, an eighth
 * at a time, every byte written: each step moves them all to a larger class
 * and leaves the slots of the one before free, a heap that grows as fast as
 * the machine runs. It prints, RSS in KiB (read from /proc/self/statm with
 * open/read, no allocation):
 *   peak   the highest RSS seen after a step
 *   live   the bytes of the buffers at the end, in KiB */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rss_now.h"

#define BUFFERS 64
#define FIRST (8 << 10)
#define LAST (240 << 10)

int main(void) {
  static char *buffers[BUFFERS];
  long peak = 0;
  size_t size = FIRST;
  for (;; size += size / 8) {
    if (size > LAST) size = LAST;
    for (int i = 0; i < BUFFERS; i++) {
      char *p = realloc(buffers[i], size);
      if (!p) return 1;
      memset(p, i + 1, size);
      buffers[i] = p;
    }
    long rss = rss_kib();
    if (rss > peak) peak = rss;
    if (size == LAST) break;
  }
  printf("peak %ld\nlive %ld\n", peak, (long)(BUFFERS * size >> 10));
  for (int i = 0; i < BUFFERS; i++) free(buffers[i]);
  return 0;
}
