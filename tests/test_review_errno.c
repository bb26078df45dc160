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

/* Fills objs[*n..] with malloc(64) until NULL (or cap): no assertion in the
 * loop (Criterion's report would need memory); the first success that changed
 * errno is kept in *bad_at (its number from 1) and *bad_errno. Returns the
 * errno of the NULL. */
static int fill(void **objs, size_t cap, size_t *n, size_t *bad_at, int *bad_errno) {
  for (;;) {
    errno = 4321;
    void *p = malloc(tu_hide(64));
    int e = errno;
    if (!p) return e;
    if (e != 4321 && !*bad_at) {
      *bad_at = *n + 1;
      *bad_errno = e;
    }
    if (*n == cap) {
      free(p);
      return 0;
    }
    objs[(*n)++] = p;
  }
}

#define CAP (4 * MiB)
static void **objs_map(void) {
  void **objs = mmap(NULL, CAP * sizeof *objs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(objs, MAP_FAILED);
  return objs;
}

/* RLIMIT_AS (soft) at 64 MiB past what is mapped now; returns the old one. */
static struct rlimit limit_as(void) {
  struct rlimit was;
  cr_assert_eq(getrlimit(RLIMIT_AS, &was), 0);
  size_t lim = tu_vmsize_bytes() + 64 * MiB;
  struct rlimit rl = {lim, was.rlim_max};
  cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
  return was;
}

Test(review_errno, kept_when_the_reclaim_hands_back_an_empty_block, .timeout = 60) {
  /* a small class's current block, empty but for its pin: the reclaim's trim
   * hands it to the pool */
  free(tu_opaque(malloc(tu_hide(80))));
  void **objs = objs_map();
  struct rlimit was = limit_as();
  /* objects of another small class until the address space is full */
  size_t n = 0, bad_at = 0;
  int bad_errno = 0;
  int last_errno = fill(objs, CAP, &n, &bad_at, &bad_errno);
  for (size_t i = 0; i < n; i++) free(objs[i]);
  cr_assert_eq(setrlimit(RLIMIT_AS, &was), 0);
  cr_assert_lt(n, CAP, "the limit was never reached");
  cr_assert_eq(last_errno, ENOMEM);
  cr_assert_eq(bad_at, 0, "errno %d (%s) after malloc(64) number %zu succeeded (of %zu)", bad_errno,
               strerror(bad_errno), bad_at, n);
  munmap(objs, CAP * sizeof *objs);
}

/* Out of memory, the blocks of the class hold a few free slots each (fewer
 * than 1/32 of theirs): a block switch finds none roomy enough (59e9f89),
 * smi_pool_take finds nothing and the OS refuses a segment (errno ENOMEM),
 * and the switch then takes one of those blocks after all: the malloc
 * succeeds, and must leave errno as it was. */
Test(review_errno, kept_when_a_scant_block_serves_after_the_pool_failed, .timeout = 60) {
  void **objs = objs_map();
  struct rlimit was = limit_as();
  size_t n = 0, bad_at = 0;
  int bad_errno = 0;
  int first = fill(objs, CAP, &n, &bad_at, &bad_errno);
  size_t filled = n;
  /* one object in 64 freed: about 16 free slots in each block of about 1000 */
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (i % 64 == 63) free(objs[i]);
    else objs[kept++] = objs[i];
  }
  n = kept;
  bad_at = 0;
  int second = fill(objs, CAP, &n, &bad_at, &bad_errno);
  size_t refilled = n - kept;
  for (size_t i = 0; i < n; i++) free(objs[i]);
  cr_assert_eq(setrlimit(RLIMIT_AS, &was), 0);
  cr_assert_lt(filled, CAP, "the limit was never reached");
  cr_assert_eq(first, ENOMEM);
  cr_assert_eq(second, ENOMEM);
  cr_assert_geq(refilled, filled / 64 / 2, "only %zu of the %zu freed slots served again", refilled, filled / 64);
  cr_assert_eq(bad_at, 0, "errno %d (%s) after a malloc(64) that succeeded (%zu of %zu in the second fill)",
               bad_errno, strerror(bad_errno), bad_at - kept, refilled);
  munmap(objs, CAP * sizeof *objs);
}
