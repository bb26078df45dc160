/* test_review_recut.c: a warm block cut again for another class (review of
 * 24e2fa4 and 024fa12, alloc/pool.c smi_pool_take).
 *
 * Since 24e2fa4 the pool, taking a warm empty block cut for another class,
 * cuts it again (a new epoch) and, in the default build, hands out at once
 * the slots that lie over the slots it handed out before (smi_block_extend
 * until the old bump's bytes). Reviewed: the extension stops at the new
 * class's last slot (smi_block_extend's bound), starts from an empty
 * freelist, and runs after the epoch moved, so no handle of the old class
 * names a slot of the new one. This test holds the pool to that: handles of
 * the first class, freed, then their blocks taken warm by a second class
 * (16 <-> 1024 bytes: the generation table of a 16-byte block fills the
 * block's last page, where 1024-byte slots were), must stay stale, and the
 * second class's objects must be distinct and keep what is written to them.
 * Checked: under LD_PRELOAD of a library whose pool.c, after the recut's
 * extension, extends once more twice over (the same page of slots on the
 * freelist twice), small_to_large_slots fails (a crash; the debug build's
 * check: "freelist has a cycle"). The other two pass there: their old bytes
 * reach the new class's last slot, so nothing is left to extend. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "slotmalloc.h"

enum { BYTES = 768 << 10 }; /* under the pool's warm cap (1 MiB at least): the blocks stay warm */

static int by_address(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return x < y ? -1 : x > y;
}

static void first_then_second(size_t first, size_t second) {
  size_t n1 = BYTES / first, n2 = BYTES / second;
  sm_handle_t *h = calloc(n1, sizeof *h);
  void **p = calloc(n2, sizeof *p);
  cr_assert(h && p);
  for (size_t i = 0; i < n1; i++) {
    h[i] = sm_halloc(first);
    cr_assert_neq(h[i], 0);
    memset(sm_deref(h[i]), 0xee, first);
  }
  for (size_t i = 0; i < n1; i++) cr_assert_eq(sm_hfree(h[i]), 0);
  for (size_t i = 0; i < n2; i++) {
    p[i] = sm_malloc(second);
    cr_assert_not_null(p[i]);
    memset(p[i], (int)(i & 0xff), second);
  }
  size_t live = 0, changed = 0, overlaps = 0;
  for (size_t i = 0; i < n1; i++) live += sm_deref(h[i]) != NULL;
  for (size_t i = 0; i < n2; i++) {
    const unsigned char *c = p[i];
    for (size_t k = 0; k < second; k++)
      if (c[k] != (i & 0xff)) {
        changed++;
        break;
      }
  }
  qsort(p, n2, sizeof *p, by_address);
  for (size_t i = 1; i < n2; i++) overlaps += (uintptr_t)p[i] < (uintptr_t)p[i - 1] + second;
  cr_assert_eq(live, 0, "%zu -> %zu bytes: %zu stale handles deref", first, second, live);
  cr_assert_eq(overlaps, 0, "%zu -> %zu bytes: %zu objects overlap", first, second, overlaps);
  cr_assert_eq(changed, 0, "%zu -> %zu bytes: %zu objects changed", first, second, changed);
  for (size_t i = 0; i < n2; i++) sm_free(p[i]);
  free(h);
  free(p);
}

Test(review_recut, small_to_large_slots) { first_then_second(16, 1024); }
Test(review_recut, large_to_small_slots) { first_then_second(1024, 16); }
Test(review_recut, neighbouring_classes) { first_then_second(48, 64); }
