/* test_review_tables.c: the segment map and the id table when the OS refuses
 * their reservation (review of e74a7de, slots/segment.c).
 *
 * Since e74a7de the two tables (32 MiB each) are reserved at load
 * (tables_at_load), and until they are, smi_segmap and smi_segtab point at
 * zeros (a page then: 128 ids, the lowest 16 GiB of addresses; 256 bytes
 * now: 8 ids, the lowest 1 GiB). Under an
 * address-space limit (ulimit -v) that leaves less than 64 MiB free at load,
 * the reservation fails and they stay there: malloc is NULL/ENOMEM, as it
 * should be, but sm_deref and sm_hfree index smi_segtab by the handle's id
 * with no bound (alloc/handle.c), read past the zero page and fault, where
 * the header says "sm_deref never faults ... any 64-bit value that does not
 * name a live object" (NULL; sm_hfree: ESTALE). (free's fast path likewise
 * indexes smi_segmap past the page for an address above 16 GiB.)
 * Measured: a program linked with the library, run under prlimit --as of
 * 20, 40 or 60 MiB: malloc NULL (ENOMEM), then sm_deref of a forged handle
 * with id >= 128: SIGSEGV; at 80 MiB (tables reserved): NULL, exit 0.
 *
 * The test runs this executable again under sh's ulimit -v at rising limits;
 * the child (SM_REVIEW_TABLES_CHILD set) does its work in a constructor,
 * before Criterion's main: at the limit where malloc fails it derefs and
 * frees forged handles of every id range. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

__attribute__((constructor)) static void review_tables_child(void) {
  if (!getenv("SM_REVIEW_TABLES_CHILD")) return;
  void *p = malloc(100);
  if (p) { /* the tables were reserved: the limit is too loose to tell */
    free(p);
    _exit(3);
  }
  static const char msg[] = "checking\n";
  if (write(1, msg, sizeof msg - 1) < 0) _exit(4);
  unsigned named = 0;
  for (uint64_t id = 1; id < (1u << 20); id += 997)
    for (int s = 0; s < 44; s += 7) {
      sm_handle_t h = (id << 44) | ((uint64_t)1 << s) | 1;
      if (!__builtin_parityll(h)) h ^= 2;
      if (sm_deref(h)) named++;
      if (sm_hfree(h) != ESTALE) named++;
    }
  _exit(named ? 5 : 0);
}

/* Failed before the ids were masked (smi_id_in_reach): the child died of
 * SIGSEGV in sm_deref. */
Test(review_tables, forged_handles_when_the_tables_could_not_be_reserved) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  cr_assert_gt(n, 0);
  self[n] = 0;
  static const char *const set[] = {"SM_REVIEW_TABLES_CHILD=1", NULL};
  char **env = tu_env_without_options(set);
  bool checked = false;
  for (long kib = 16 * 1024; kib <= 512 * 1024 && !checked; kib += 8 * 1024) {
    char script[128];
    snprintf(script, sizeof script, "ulimit -v %ld && exec \"$0\"", kib);
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", script, self, NULL};
    tu_proc_t r;
    cr_assert_eq(tu_run(argv, env, NULL, NULL, 60.0, &r), 0);
    if (strstr(r.out, "checking")) { /* malloc failed: the tables are the zero page */
      checked = true;
      cr_assert(!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                "under ulimit -v %ld (tables not reserved): %s (exit 5: a forged handle named an object)", kib,
                tu_status_str(&r));
    }
    bool loose = !r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 3;
    tu_proc_free(&r);
    if (loose) break; /* the tables fit: past the limits that tell */
  }
  free(env);
  if (!checked) cr_log_warn("no limit where the program loads and the tables do not: not checked");
}
