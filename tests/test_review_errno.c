/* test_review_errno.c: a successful malloc leaves errno alone, also when it
 * succeeds only after the reclaim before ENOMEM (review of 98c06d2: alloc/pool.c
 * smi_pool_take). The refused mapping of a new segment sets errno ENOMEM;
 * smi_pool_reclaim gives back what the heap holds empty, and the next round
 * of smi_pool_take may then find a block without mapping anything (here the
 * empty current block of another small class, which the reclaim's trim puts
 * in the pool): 98c06d2 put errno back only on the path that maps a segment,
 * so such a malloc returned its object with errno ENOMEM. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "slotmalloc.h"
#include "testutil.h"

Test(review_errno, kept_when_the_reclaim_hands_back_an_empty_block, .timeout = 60) {
  /* a small class's current block, empty but for its pin: the reclaim's trim
   * hands it to the pool */
  free(tu_opaque(malloc(tu_hide(80))));
  size_t cap = 4 * MiB, n = 0;
  void **objs = mmap(NULL, cap * sizeof *objs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(objs, MAP_FAILED);
  struct rlimit was;
  cr_assert_eq(getrlimit(RLIMIT_AS, &was), 0);
  size_t lim = tu_vmsize_bytes() + 64 * MiB;
  struct rlimit rl = {lim, was.rlim_max};
  cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
  /* objects of another small class until the address space is full (no
   * assertion in the loop: Criterion's report would need memory) */
  size_t bad_at = 0;
  int bad_errno = 0, last_errno = 0;
  for (;;) {
    errno = 4321;
    void *p = malloc(tu_hide(64));
    int e = errno;
    if (!p) {
      last_errno = e;
      break;
    }
    if (e != 4321 && !bad_at) {
      bad_at = n + 1;
      bad_errno = e;
    }
    if (n == cap) {
      free(p);
      break;
    }
    objs[n++] = p;
  }
  for (size_t i = 0; i < n; i++) free(objs[i]);
  cr_assert_eq(setrlimit(RLIMIT_AS, &was), 0);
  cr_assert_lt(n, cap, "the limit was never reached");
  cr_assert_eq(last_errno, ENOMEM);
  cr_assert_eq(bad_at, 0, "errno %d (%s) after malloc(64) number %zu succeeded (of %zu)", bad_errno,
               strerror(bad_errno), bad_at, n);
  munmap(objs, cap * sizeof *objs);
}
