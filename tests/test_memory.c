/* test_memory.c: memory goes back to the OS without the program making
 * another allocator call: a block emptied by its own thread goes to the pool
 * at once, the pool keeps at most a bounded amount warm, the opt-in
 * background purge gives back the rest after the delay, and malloc_trim also
 * gives back the calling thread's current (empty) blocks. The burst runs in a
 * child program (tests/memory_prog.c) so that its RSS is its own. */
#define _GNU_SOURCE /* pipe2, in testutil.h */
#include <criterion/criterion.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slotmalloc.h"
#include "testutil.h"

#define RUN_TIMEOUT 60.0

typedef struct {
  long peak, after, settled; /* KiB */
} burst_t;

static burst_t run_burst(const char *idle_ms, const char *drop_kib, const char *const *set) {
  char *argv[] = {(char *)SM_MEMORY_PROG, (char *)idle_ms, (char *)drop_kib, NULL};
  char **env = tu_env_without_options(set);
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, RUN_TIMEOUT, &r), 0);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "memory_prog: %s\n%s", r.out, r.err);
  burst_t b = {-1, -1, -1};
  cr_assert_eq(sscanf(r.out, "peak %ld\nafter %ld\nsettled %ld", &b.peak, &b.after, &b.settled), 3, "%s", r.out);
  tu_proc_free(&r);
  return b;
}

Test(memory, burst_freed_goes_back_without_another_call) {
  burst_t b = run_burst("0", "0", NULL);
  /* about 60 MiB at the peak; 1% stays live, and the pool keeps at most
   * 1 MiB warm (or a sixteenth of what the heap holds) */
  cr_assert_gt(b.peak, 40 * 1024, "the burst should take more than 40 MiB: %ld KiB", b.peak);
  cr_assert_lt(b.after, b.peak / 2, "RSS right after the frees: %ld KiB of a %ld KiB peak", b.after, b.peak);
  /* measured: 7.3 MiB (14.4 MiB while the pool kept 8 MiB warm) */
  cr_assert_lt(b.after, 11 * 1024, "RSS right after the frees: %ld KiB", b.after);
}

Test(memory, background_purge_gives_back_the_warm_blocks) {
  static const char *const set[] = {"SLOTMALLOC_BACKGROUND_PURGE=1", "SLOTMALLOC_PURGE_DELAY_MS=50", NULL};
  /* idle for up to 10 s (it stops as soon as RSS fell by 512 KiB): the
   * thread wakes every 12 ms and gives back what stayed empty for 50 ms, the
   * warm blocks the pool kept (at most 1 MiB here) */
  burst_t b = run_burst("10000", "512", set);
  cr_assert_lt(b.after, b.peak / 2, "RSS right after the frees: %ld KiB of a %ld KiB peak", b.after, b.peak);
  cr_assert_leq(b.settled, b.after - 512, "idle RSS %ld KiB, right after the frees %ld KiB", b.settled, b.after);
}

static size_t committed(void) {
  sm_stats_t s;
  sm_arena_stats(NULL, &s);
  return s.bytes_committed;
}

Test(memory, malloc_trim_gives_back_the_current_blocks) {
  malloc_trim(0);
  size_t before = committed();
  /* one object in each of many size classes: each class's current block is
   * committed, and stays the thread's current block once the object is freed */
  void *p[128];
  size_t n = 0;
  for (size_t size = 1024; size <= 60 * 1024 && n < 128; size += size / 4 + 16) {
    p[n] = malloc(size);
    cr_assert_not_null(p[n]);
    memset(p[n], 1, size);
    n++;
  }
  for (size_t i = 0; i < n; i++) free(tu_opaque(p[i]));
  size_t held = committed();
  cr_assert_gt(held, before, "the new classes' blocks are committed: %zu, before %zu", held, before);
  malloc_trim(0);
  size_t after = committed();
  /* what stays: the headers of the segments mapped for the new classes (64 KiB each) */
  cr_assert_leq(after, before + 2 * 65536, "after malloc_trim: %zu bytes committed, before the allocations %zu",
                after, before);
}

/* Address space is reserved 64 MiB at a time, and only what is used counts as
 * committed: a small process's peak stays small. */
Test(memory, reserved_address_space_is_not_committed) {
  void *p = malloc(100);
  cr_assert_not_null(p);
  free(tu_opaque(p));
  sm_stats_t s;
  sm_arena_stats(NULL, &s);
  cr_assert_lt(s.bytes_peak, (size_t)32 << 20, "peak committed %zu bytes in a process that allocated little",
               s.bytes_peak);
}
