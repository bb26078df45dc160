/* lean_prog.c: the child program of test_lean and test_giveback, linked with
 * libslotmalloc.so. RSS in KiB is read from /proc/self/statm with open/read,
 * no allocation.
 *
 * Without arguments: BUFFERS buffers grown together by realloc from 8 KiB to
 * 240 KiB, an eighth at a time, every byte written: each step moves them all
 * to a larger class and leaves the slots of the one before free, a heap that
 * grows as fast as the machine runs. It prints:
 *   peak   the highest RSS seen after a step
 *   live   the bytes of the buffers at the end, in KiB
 *
 * With "swing PAUSE_MS": see swing() below. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rss_now.h"
#include "slotmalloc.h"

#define BUFFERS 64
#define FIRST (8 << 10)
#define LAST (240 << 10)

static int grow(void) {
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

/* "swing PAUSE_MS": SLOTS objects of a big class (48 KiB: blocks of 83
 * slots), every page written; SWINGS times all but the first freed, a pause,
 * and all allocated again: a program that takes back what it freed a moment
 * ago (an upkeep comes while it does: the slots still free are past the last
 * in use). Then all but the first freed for good, and two pauses of PAUSE_MS with
 * a few calls after each (an upkeep each: the first sees the slots free, the
 * second finds them free for longer than the purge delay if PAUSE_MS is). It
 * prints:
 *   calls  the give-back system calls of the swings (sm_stats giveback_calls)
 *   held   RSS in KiB right after the last free
 *   after  RSS in KiB after the pauses */
#define SLOTS 64
#define BIG (48 << 10)
#define SWINGS 16

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, ms % 1000 * 1000000};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static int fill(char **p, size_t from) {
  for (size_t i = from; i < SLOTS; i++) {
    if (!(p[i] = malloc(BIG))) return 1;
    memset(p[i], (int)i, BIG);
  }
  return 0;
}

static void calls_now(size_t *calls) {
  sm_stats_t s;
  sm_arena_stats(NULL, &s);
  *calls = s.giveback_calls;
}

static int swing(long pause) {
  static char *p[SLOTS];
  size_t before, after;
  if (fill(p, 0)) return 1;
  calls_now(&before);
  for (int k = 0; k < SWINGS; k++) {
    for (size_t i = SLOTS; --i > 0;) free(p[i]); /* the lowest slots are taken again first */
    pause_ms(pause);
    if (fill(p, 1)) return 1;
  }
  calls_now(&after);
  for (size_t i = 1; i < SLOTS; i++) free(p[i]);
  long held = rss_kib();
  for (int k = 0; k < 2; k++) {
    pause_ms(pause);
    for (int i = 0; i < 20; i++) free(malloc(BIG)); /* slow calls: an upkeep */
  }
  printf("calls %zu\nheld %ld\nafter %ld\n", after - before, held, rss_kib());
  free(p[0]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 2 && strcmp(argv[1], "swing") == 0) return swing(atol(argv[2]));
  return grow();
}
