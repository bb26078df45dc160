/* sm_hfree of a forged handle (generation and epoch 0) that names the segment
 * id of a freed, cached large object returns 0 instead of ESTALE and frees the
 * dead segment a second time (the compare-exchange of the large tag accepts
 * 0 == 0): the cache then holds it twice (a cycle: the next large malloc of
 * that size loops forever in cache_take; with other sizes two live objects
 * can share memory).
 * Build: cc -Iinclude hfree_forged_large.c build/libslotmalloc.a -lpthread */
#include <stdio.h>
#include <slotmalloc.h>
int main(void) {
  void *p = sm_malloc(1 << 20);
  sm_handle_t h = sm_handle_of(p);
  sm_free(p);                                   /* into the large cache */
  sm_handle_t forged = h >> 44 << 44;           /* same segment id, all else 0 */
  if (!__builtin_parityll(forged)) forged |= 1; /* a valid parity */
  int r = sm_hfree(forged);
  printf("sm_hfree(forged 0x%llx) = %d (expected ESTALE = 116)\n", (unsigned long long)forged, r);
  return r != 116;
}
