/* test_oom_sweep.c: every memory system call of the allocator refused in turn.
 *
 * oom_prog (tests/oom_prog.c, linked with slots/os.c compiled with
 * SMI_OS_FAULTS) runs a workload with the Nth mmap, mremap, mprotect, madvise
 * or munmap of the library refused as the kernel would refuse it (nothing
 * done; ENOMEM, madvise EAGAIN), counted from the library's first call; or
 * every one from the Nth on (memory gone for good); or each with probability
 * 1/8 (seeded). Also two threads at once (from N on, and 1 in 8), every other
 * mremap while large objects grow, and real limits (ulimit -v). oom_prog
 * checks what the calls returned and what the objects hold, and that once the
 * faults stop every call is served again (see its head); here each run must
 * exit 0 within its deadline (no abort, no signal, no hang).
 *
 * A sweep first counts the calls of a kind that the workload makes (faults
 * off), C, then runs it for N = 1 .. C + 1, once failing call N only and once
 * every call from N on: every N in the debug build (oom_prog says whether its
 * checks are built) up to 90 calls of one kind, about 45 spread over the range
 * for any call and for munmap; about 20 in the others, and 12 seeds of the random cases (and 12 N
 * of the two threads' sweep) where the debug build takes 24 (SM_OOM_FULL=1:
 * every N, 64 seeds, in any build).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdbool.h>

#include "testutil.h"

/* the kinds of slots/os.h (SMI_FAULT_*) */
enum { K_MMAP = 1, K_MREMAP = 2, K_MPROTECT = 4, K_MADVISE = 8, K_MUNMAP = 16, K_ALL = 31 };
enum { M_OFF, M_ONE, M_FROM, M_RANDOM };

typedef struct {
  int ok;
  unsigned long long calls, refused;
  long nulls;
  int debug;
  char what[1200];
} outcome_t;

static const char *kind_name(unsigned mask) {
  switch (mask) {
    case K_MMAP: return "mmap";
    case K_MREMAP: return "mremap";
    case K_MPROTECT: return "mprotect";
    case K_MADVISE: return "madvise";
    case K_MUNMAP: return "munmap";
    default: return "any call";
  }
}

/* Set by a test for the runs it makes: an option for oom_prog (NULL: none),
 * and an address-space limit in MiB (0: none; then oom_prog runs under
 * ulimit -v, where not every call is served after the faults). */
static const char *option;
static int limit_mib;

static outcome_t run(const char *workload, unsigned mask, int mode, unsigned long long nth, unsigned long long seed) {
  outcome_t o;
  memset(&o, 0, sizeof o);
  char faults[96], cmd[512];
  snprintf(faults, sizeof faults, "SMI_OS_FAULTS=%u,%d,%llu,%llu", mask, mode, nth, seed);
  const char *set[4] = {faults, NULL, NULL, NULL}, **add = set + 1;
  if (option) *add++ = option;
  if (limit_mib) *add = "OOM_PROG_LIMITED=1";
  char **env = tu_env_without_options(set);
  snprintf(cmd, sizeof cmd, "ulimit -v %d && exec %s %s", limit_mib * 1024, SM_OOM_PROG, workload);
  char *argv_limited[] = {"/bin/sh", "-c", cmd, NULL};
  char *argv_plain[] = {(char *)SM_OOM_PROG, (char *)workload, NULL};
  char **argv = limit_mib ? argv_limited : argv_plain;
  tu_proc_t r;
  if (tu_run(argv, env, NULL, NULL, 60, &r) != 0) {
    snprintf(o.what, sizeof o.what, "%s: could not run oom_prog", faults);
    free(env);
    return o;
  }
  free(env);
  o.ok = !r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 &&
         sscanf(r.out, "oom_prog: calls %llu refused %llu nulls %ld debug %d", &o.calls, &o.refused, &o.nulls,
                &o.debug) == 4;
  if (!o.ok)
    snprintf(o.what, sizeof o.what, "oom_prog %s with %s %s (%s %s %llu): %s; stderr: %.900s", workload, faults,
             option ? option : "", kind_name(mask),
             mode == M_ONE    ? "refused once at call"
             : mode == M_FROM ? "refused from call"
                              : "1 in",
             nth, tu_status_str(&r), r.err);
  tu_proc_free(&r);
  return o;
}

/* SM_OOM_FULL=1: every N, 64 seeds */
static bool full_sweep(void) {
  const char *e = getenv("SM_OOM_FULL");
  return e && *e == '1';
}

static void sweep(const char *workload, unsigned mask) {
  outcome_t base = run(workload, mask, M_OFF, 0, 0);
  cr_assert(base.ok, "the workload fails without faults: %s", base.what);
  cr_assert_gt(base.calls, 0, "the workload makes no %s call", kind_name(mask));
  /* the debug build: every N up to 90 calls of one kind (mix makes 83 madvise, 77 mmap in the
   * Release build), about 45 of any call or munmap (hundreds); about 20 in the others */
  unsigned long long k = base.calls, points = 20;
  if (full_sweep()) points = k;
  else if (base.debug) points = mask == K_ALL || mask == K_MUNMAP ? 45 : 90;
  unsigned long long stride = k <= points ? 1 : (k + points - 1) / points;
  char msg[4096] = "";
  int bad = 0, runs = 0;
  for (int mode = M_ONE; mode <= M_FROM; mode++) {
    unsigned long long refused = 0;
    long nulls = 0;
    for (unsigned long long n = 1; n <= k + 1; n += stride) {
      outcome_t o = run(workload, mask, mode, n, 0);
      runs++;
      if (!o.ok) {
        if (bad++ < 3) {
          size_t len = strlen(msg);
          snprintf(msg + len, sizeof msg - len, "\n  %s", o.what);
        }
        continue;
      }
      refused += o.refused;
      nulls += o.nulls;
    }
    cr_assert_gt(refused, 0, "no %s call was refused", kind_name(mask));
    cr_log_info("oom_sweep %s, %s, %s: %llu calls, every %llu-th N: %llu refused, %ld allocation calls failed",
                workload, kind_name(mask), mode == M_ONE ? "once" : "from N on", k, stride, refused, nulls);
  }
  cr_assert_eq(bad, 0, "%d of %d runs failed (%s):%s", bad, runs, kind_name(mask), msg);
}

TestSuite(oom_sweep, .timeout = 280);

Test(oom_sweep, mmap) { sweep("mix", K_MMAP); }
Test(oom_sweep, mremap) { sweep("mix", K_MREMAP); }
Test(oom_sweep, mprotect) { sweep("mix", K_MPROTECT); }
Test(oom_sweep, madvise) { sweep("mix", K_MADVISE); }
Test(oom_sweep, munmap) { sweep("mix", K_MUNMAP); }
Test(oom_sweep, any) { sweep("mix", K_ALL); }
Test(oom_sweep, grow_any) { sweep("grow", K_ALL); }

/* Calls of mask refused 1 in p (seeds 1..S). */
static void random_faults(const char *workload, unsigned mask, unsigned long long p) {
  outcome_t base = run(workload, mask, M_OFF, 0, 0);
  cr_assert(base.ok, "the workload fails without faults: %s", base.what);
  int seeds = full_sweep() ? 64 : base.debug ? 24 : 12, bad = 0;
  char msg[4096] = "";
  for (int s = 1; s <= seeds; s++) {
    outcome_t o = run(workload, mask, M_RANDOM, p, (unsigned long long)s);
    if (!o.ok && bad++ < 3) {
      size_t len = strlen(msg);
      snprintf(msg + len, sizeof msg - len, "\n  %s", o.what);
    }
  }
  cr_assert_eq(bad, 0, "%d of %d seeds failed:%s", bad, seeds, msg);
}

/* Every call from N on refused (memory gone for good) while two threads
 * allocate: 12 values of N spread over the workload's calls (debug 24). */
Test(oom_sweep, two_threads_from_n) {
  outcome_t base = run("twin", K_ALL, M_OFF, 0, 0);
  cr_assert(base.ok, "the workload fails without faults: %s", base.what);
  unsigned long long points = full_sweep() ? base.calls + 1 : base.debug ? 24 : 12;
  unsigned long long stride = (base.calls + points - 1) / points;
  if (!stride) stride = 1;
  char msg[4096] = "";
  int bad = 0, runs = 0;
  for (unsigned long long n = 1; n <= base.calls + 1; n += stride, runs++) {
    outcome_t o = run("twin", K_ALL, M_FROM, n, 0);
    if (!o.ok && bad++ < 3) {
      size_t len = strlen(msg);
      snprintf(msg + len, sizeof msg - len, "\n  %s", o.what);
    }
  }
  cr_assert_eq(bad, 0, "%d of %d runs failed:%s", bad, runs, msg);
}

/* Any call refused 1 in 8 while two threads allocate at once. */
Test(oom_sweep, random_two_threads) { random_faults("twin", K_ALL, 8); }
/* The same with every allocation sampled by the heap profiler (its tables),
 * and with the background purge thread giving memory back all along. */
Test(oom_sweep, random_two_threads_profiled) {
  option = "SLOTMALLOC_PROF_SAMPLE=1";
  random_faults("twin", K_ALL, 8);
}
Test(oom_sweep, random_two_threads_background_purge) {
  option = "SLOTMALLOC_BACKGROUND_PURGE=1";
  random_faults("twin", K_ALL, 8);
}

/* Real refusals: oom_prog's workloads under RLIMIT_AS (ulimit -v) from 64 to
 * 128 MiB, around slotmalloc's smallest (README: about 72 MiB; two threads at
 * once in twin); every failed call NULL with ENOMEM, every object intact, a
 * normal exit. (Not in the sanitizer builds, whose runtimes map address space
 * of their own.) */
Test(oom_sweep, address_space_limits) {
#ifdef SM_SANITIZED
  cr_skip_test("sanitizer build");
#endif
  char msg[4096] = "";
  int bad = 0, runs = 0;
  const char *workloads[] = {"twin", "mix", "grow"};
  for (limit_mib = 64; limit_mib <= 128; limit_mib += 8)
    for (int w = 0; w < 3; w++, runs++) {
      outcome_t o = run(workloads[w], 0, M_OFF, 0, 0);
      if (!o.ok && bad++ < 3) {
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof msg - len, "\n  ulimit -v %d MiB: %s", limit_mib, o.what);
      }
    }
  limit_mib = 0;
  cr_assert_eq(bad, 0, "%d of %d runs failed:%s", bad, runs, msg);
}
/* Every other mremap refused while large objects grow: the hardened build's
 * move of a guarded object (slots/os.c, smi_os_grow_guarded) aborted when the
 * move of its head and then the move of its body back were refused (every
 * seed, before). */
Test(oom_sweep, random_grow_mremap) { random_faults("grow", K_MREMAP, 2); }

/* A large object reused from the cache until its id's epochs are used up,
 * when the OS refuses the page of the id table a fresh id needs: it came back
 * under its last life's tag, whose stale handle then named the new object
 * (slots/large_segment.c, smi_large_revive). oom_prog arms its own faults. */
Test(oom_sweep, epochs) {
  outcome_t o = run("epochs", 0, M_OFF, 0, 0);
  cr_assert(o.ok, "%s", o.what);
}
