/* test_giveback.c: upkeep gives back the pages of free slots that stay
 * unused, and not those a program takes again a moment later (issue 8: every
 * page given back and taken again costs a system call and a page fault).
 * Counted by the library's own statistics (sm_stats giveback_calls: the
 * madvise and process_madvise calls) and the child's RSS, in a child program
 * (tests/lean_prog.c "swing") run with a purge delay of its own. */
#define _GNU_SOURCE /* pipe2, in testutil.h */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slotmalloc.h"
#include "testutil.h"

#ifdef SM_LEAN_PROG /* (not in the TSan build's single-process runner: it builds no child programs) */

typedef struct {
  long calls, held, after;
} swing_t;

/* lean_prog swing: 64 slots of 48 KiB (a big class), all but the first freed
 * and taken again 16 times with a pause of PAUSE ms between, longer than the
 * quarter purge delay at which upkeep comes: an upkeep comes in every swing,
 * after the first slots are taken again, and finds the rest free past the
 * last slot in use. Then all but the first freed for good, and two pauses of
 * PAUSE ms (each longer than the purge delay) with a few calls after each. */
#define DELAY "SLOTMALLOC_PURGE_DELAY_MS=200"
#define PAUSE "220"
/* lean_prog's output for mode (swing, scatter, checker), after a check that
 * it ran well; the caller frees it. */
static char *run_mode(const char *mode) {
  static const char *const set[] = {DELAY, NULL};
  char *argv[] = {(char *)SM_LEAN_PROG, (char *)mode, (char *)PAUSE, NULL};
  char **env = tu_env_without_options(set);
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 120.0, &r), 0);
  free(env);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "lean_prog %s: %s\n%s", mode, r.out,
            r.err);
  char *out = strdup(r.out);
  tu_proc_free(&r);
  return out;
}

static swing_t run_swing(void) {
  static const char *const set[] = {DELAY, NULL};
  char *argv[] = {(char *)SM_LEAN_PROG, (char *)"swing", (char *)PAUSE, NULL};
  char **env = tu_env_without_options(set);
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 120.0, &r), 0);
  free(env);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "lean_prog swing: %s\n%s", r.out,
            r.err);
  swing_t s;
  cr_assert_eq(sscanf(r.out, "calls %ld\nheld %ld\nafter %ld", &s.calls, &s.held, &s.after), 3, "%s", r.out);
  tu_proc_free(&r);
  return s;
}

/* Each swing frees 63 slots that the next one takes again. Before the upkeep
 * kept the slots freed since the previous upkeep, it gave back those past the
 * last slot in use at every upkeep, one madvise a swing, and the next
 * allocations faulted them in again: 16 calls (measured on e9882cd); now 0. */
Test(giveback, slots_taken_again_soon_are_not_given_back) {
  swing_t s = run_swing();
  cr_assert_leq(s.calls, 2, "%ld give-back system calls in 16 swings (RSS %ld KiB)", s.calls, s.held);
}

/* And the slots that then stay free go back on their own, without
 * malloc_trim, once they have been free for the purge delay: 63 slots of
 * 48 KiB keep a page each (their links), the rest (about 2.9 MiB) goes.
 * Measured: 4.6 MiB resident after the frees, 1.7 MiB after the pauses. */
Test(giveback, slots_that_stay_free_go_back_after_the_purge_delay) {
  swing_t s = run_swing();
  cr_assert_geq(s.held, s.after + 2 * 1024, "RSS %ld KiB after the frees, %ld KiB after the pauses", s.held, s.after);
}

/* A free slot among slots in use whose pages past its first make less than
 * 16 KiB stays resident until its block empties or malloc_trim: each range
 * given back is a system call (and, in a threaded program, an interrupt to
 * every other CPU running it) for a page or two. lean_prog scatter: 32 free
 * slots of 12 KiB between slots in use, free for twice the purge delay, made
 * 32 give-back calls before (c0f16e3), none now; malloc_trim gives them back
 * (measured: 2,408 KiB resident before it, 2,148 after). */
Test(giveback, small_ranges_of_free_slots_wait_for_their_block_or_malloc_trim) {
  char *out = run_mode("scatter");
  long calls, held, after;
  cr_assert_eq(sscanf(out, "calls %ld\nheld %ld\nafter %ld", &calls, &held, &after), 3, "%s", out);
  free(out);
  cr_assert_leq(calls, 2, "%ld give-back calls for 32 free slots of 12 KiB", calls);
  cr_assert_geq(held, after + 32 * 4, "RSS %ld KiB before malloc_trim, %ld KiB after", held, after);
}

/* Empty blocks the pool gives back together make one range when only blocks
 * it gave back before lie between them. lean_prog checker: every other block
 * of about 32 small ones emptied and given back, then the others: 15 calls
 * for the second half before (c0f16e3), 1 now. */
Test(giveback, blocks_between_cold_blocks_go_back_in_one_call) {
  char *out = run_mode("checker");
  long calls, objects;
  cr_assert_eq(sscanf(out, "calls %ld\nobjects %ld", &calls, &objects), 2, "%s", out);
  free(out);
  cr_assert_geq(objects, 1500, "%s", "the blocks were not freed");
  cr_assert_leq(calls, 3, "%ld give-back calls for about 16 blocks with cold blocks between", calls);
}

/* The pool's warm reserve, grown by blocks taken back cold, survives a
 * collapse of the heap (threads that end together, a program that frees
 * nearly all it holds and takes it again): lean_prog collapse, 24 MiB of
 * 1 KiB objects whose newest quarter is freed and taken again 12 times, then
 * all freed and taken again: 5,891 page faults for that before (cc3d7ad's
 * parent: the reserve was bounded by a quarter of what the heap held at the
 * moment, nothing after the collapse), 4,211 now (6.6 MiB more resident
 * right after the collapse). */
Test(giveback, the_warm_reserve_survives_a_collapse_of_the_heap) {
  static const char *const set[] = {"SLOTMALLOC_PURGE_DELAY_MS=10000", NULL};
  char *argv[] = {(char *)SM_LEAN_PROG, (char *)"collapse", NULL};
  char **env = tu_env_without_options(set);
  tu_proc_t r;
  cr_assert_eq(tu_run(argv, env, NULL, NULL, 120.0, &r), 0);
  free(env);
  cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "lean_prog collapse: %s\n%s", r.out,
            r.err);
  long held, faults;
  cr_assert_eq(sscanf(r.out, "held %ld\nfaults %ld", &held, &faults), 2, "%s", r.out);
  tu_proc_free(&r);
  cr_assert_leq(faults, (24 << 10) / 4 - 1000, "%ld page faults taking 24 MiB again (RSS %ld KiB after the collapse)",
                faults, held);
}

/* Threads that end leave their empty blocks to the pool, and the threads
 * that follow take them warm (alloc/pool.c, what threads leave at their
 * exit): lean_prog relay, 6 rounds of 4 threads that allocate 6 MiB each,
 * free it and end. Before (e66175f) the pool cooled what they left down to
 * its cap, and every round faulted it in again: 6,304-6,373 page faults in
 * the worst later round against 6,882-6,887 in the first; now 564-633.
 * What the last round left goes back with the first upkeep after the purge
 * delay: RSS 31.3-31.8 MiB right after the rounds, 2.6-2.7 MiB after it
 * (10.4-11.8 and 2.5-2.7 before). The hardened build the same (024fa12 to
 * 3386bec kept no room warm there: 6,384-6,511 faults in a later round,
 * 7,051-7,055 in the first; now 486-673). */
Test(giveback, threads_that_follow_take_warm_what_ended_threads_left) {
  char *out = run_mode("relay");
  long first, later, held, after;
  cr_assert_eq(sscanf(out, "first %ld\nlater %ld\nheld %ld\nafter %ld", &first, &later, &held, &after), 4, "%s", out);
  free(out);
  cr_assert_leq(later, first / 4, "%ld page faults in a later round, %ld in the first", later, first);
  cr_assert_leq(after + 1024, held, "RSS %ld KiB after the rounds, %ld KiB after the purge delay", held, after);
}

#endif
