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
 * With "swing PAUSE_MS", "scatter PAUSE_MS", "checker PAUSE_MS", "collapse", "relay PAUSE_MS":
 * see those functions below. */
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/* Slow calls enough for an upkeep (one every 16): large objects, each one a
 * slow call. */
static void upkeep_now(void) {
  for (int i = 0; i < 40; i++) free(malloc(1 << 20));
}

/* "scatter PAUSE_MS": SLOTS objects of 12 KiB (a medium class: the pages of
 * a free slot past its first make 8 KiB at most), every page written; every
 * other one freed, the last kept (no free slot past the last in use), then
 * two pauses of PAUSE_MS with an upkeep after each, then malloc_trim(0). It
 * prints:
 *   calls  the give-back system calls of the pauses
 *   held   RSS in KiB before malloc_trim
 *   after  RSS in KiB after it */
#define MID (12 << 10)
static int scatter(long pause) {
  static char *p[SLOTS];
  for (int i = 0; i < SLOTS; i++) {
    if (!(p[i] = malloc(MID))) return 1;
    memset(p[i], i + 1, MID);
  }
  for (int i = 0; i < SLOTS - 1; i += 2) free(p[i]);
  size_t before, after;
  calls_now(&before);
  for (int k = 0; k < 2; k++) {
    pause_ms(pause);
    upkeep_now();
  }
  calls_now(&after);
  long held = rss_kib();
  malloc_trim(0);
  printf("calls %zu\nheld %ld\nafter %ld\n", after - before, held, rss_kib());
  for (int i = 1; i < SLOTS; i += 2) free(p[i]);
  return 0;
}

/* "checker PAUSE_MS": 1 KiB objects filling about 32 small blocks (64 KiB,
 * side by side in one segment); the objects of every other block freed (the
 * blocks go to the pool empty), a pause of PAUSE_MS and an upkeep (the pool
 * gives their memory back: one call each, none are neighbours), then the
 * objects of the blocks between them freed, a pause and an upkeep again. It
 * prints:
 *   calls  the give-back system calls of the second upkeep
 *   blocks the blocks freed then */
#define SMALL_OBJS 2000
static int checker(long pause) {
  static char *p[SMALL_OBJS];
  for (int i = 0; i < SMALL_OBJS; i++) {
    if (!(p[i] = malloc(1024))) return 1;
    memset(p[i], 1, 1024);
  }
  /* the blocks in address order, the current one (the last object's) left out */
  uintptr_t last = (uintptr_t)p[SMALL_OBJS - 1] >> 16, first = (uintptr_t)p[0] >> 16;
  for (int i = 0; i < SMALL_OBJS; i++) {
    uintptr_t blk = (uintptr_t)p[i] >> 16;
    if (blk < first) first = blk;
  }
  int freed = 0;
  size_t before, after;
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < SMALL_OBJS; i++) {
      uintptr_t blk = (uintptr_t)p[i] >> 16;
      if (!p[i] || blk == last || (blk - first) % 2 != (uintptr_t)round) continue;
      free(p[i]);
      p[i] = NULL;
      freed++;
    }
    calls_now(&before);
    pause_ms(pause);
    upkeep_now();
    calls_now(&after);
  }
  printf("calls %zu\nobjects %d\n", after - before, freed);
  return 0;
}

/* "collapse": 24 MiB of 1 KiB objects, every byte written; ROUNDS times the
 * newest quarter freed and taken again at once (the pool cools what passes
 * its warm reserve, the blocks are taken back cold: the reserve grows), then
 * all but the first object freed (the heap collapses) and the 24 MiB taken
 * again. Run with a purge delay longer than the program. It prints:
 *   held    RSS in KiB right after the collapse
 *   faults  the minor page faults of taking the 24 MiB again */
#define COLLAPSE_OBJS (24 << 10)
#define ROUNDS 12
static long minor_faults(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}
static int take(char **p, size_t from, size_t to) {
  for (size_t i = from; i < to; i++) {
    if (!(p[i] = malloc(1024))) return 1;
    memset(p[i], 1, 1024);
  }
  return 0;
}
static int collapse(void) {
  static char *p[COLLAPSE_OBJS];
  if (take(p, 0, COLLAPSE_OBJS)) return 1;
  for (int k = 0; k < ROUNDS; k++) {
    for (size_t i = COLLAPSE_OBJS * 3 / 4; i < COLLAPSE_OBJS; i++) free(p[i]);
    if (take(p, COLLAPSE_OBJS * 3 / 4, COLLAPSE_OBJS)) return 1;
  }
  for (size_t i = COLLAPSE_OBJS; --i > 0;) free(p[i]);
  long held = rss_kib(), before = minor_faults();
  if (take(p, 1, COLLAPSE_OBJS)) return 1;
  printf("held %ld\nfaults %ld\n", held, minor_faults() - before);
  for (size_t i = 0; i < COLLAPSE_OBJS; i++) free(p[i]);
  return 0;
}

/* "relay PAUSE_MS": RELAY_ROUNDS rounds of RELAY_THREADS threads, each
 * allocating RELAY_BYTES in objects of 32 to 480 bytes, every byte written,
 * then (once all have: a peak of 24 MiB whatever the scheduling) freeing
 * them all and ending; the next round starts when all have ended (the
 * stress pattern's workers, retired and started again). Then a
 * pause of PAUSE_MS and slow calls enough for an upkeep. It prints:
 *   first  the minor page faults of the first round
 *   later  the most of any later round
 *   held   RSS in KiB right after the last round
 *   after  RSS in KiB after the pause and the upkeep */
#define RELAY_ROUNDS 6
#define RELAY_THREADS 4
#define RELAY_BYTES (6 << 20) /* (a peak past 16 MiB: alloc/pool.c, EXIT_PEAK_MIN) */
#define RELAY_OBJS (RELAY_BYTES / 128)
static pthread_barrier_t relay_all;
static void *relay_worker(void *arg) {
  char **p = arg;
  size_t bytes = 0, n = 0;
  for (unsigned r = 7; bytes < RELAY_BYTES && n < RELAY_OBJS; n++) {
    r = r * 1103515245u + 12345u;
    size_t size = 32 + (r >> 8) % 449;
    if (!(p[n] = malloc(size))) abort();
    memset(p[n], 0x5a, size);
    bytes += size;
  }
  pthread_barrier_wait(&relay_all);
  for (size_t i = 0; i < n; i++) free(p[i]);
  return NULL;
}
static int relay(long pause) {
  static char *p[RELAY_THREADS][RELAY_OBJS];
  long first = 0, later = 0;
  if (pthread_barrier_init(&relay_all, NULL, RELAY_THREADS) != 0) return 1;
  for (int round = 0; round < RELAY_ROUNDS; round++) {
    long before = minor_faults();
    pthread_t t[RELAY_THREADS];
    for (int i = 0; i < RELAY_THREADS; i++)
      if (pthread_create(&t[i], NULL, relay_worker, p[i]) != 0) return 1;
    for (int i = 0; i < RELAY_THREADS; i++) pthread_join(t[i], NULL);
    long faults = minor_faults() - before;
    if (round == 0) first = faults;
    else if (faults > later) later = faults;
  }
  long held = rss_kib();
  pause_ms(pause);
  upkeep_now();
  printf("first %ld\nlater %ld\nheld %ld\nafter %ld\n", first, later, held, rss_kib());
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 2 && strcmp(argv[1], "relay") == 0) return relay(atol(argv[2]));
  if (argc > 1 && strcmp(argv[1], "collapse") == 0) return collapse();
  if (argc > 2 && strcmp(argv[1], "swing") == 0) return swing(atol(argv[2]));
  if (argc > 2 && strcmp(argv[1], "scatter") == 0) return scatter(atol(argv[2]));
  if (argc > 2 && strcmp(argv[1], "checker") == 0) return checker(atol(argv[2]));
  return grow();
}
