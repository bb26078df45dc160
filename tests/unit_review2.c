/* unit_review2.c: checks from the second review of the session's changes.
 *
 * review2::block_at_span_finds_every_address_of_a_slot_segment: free's fast
 * path finds a pointer's block from its span by a multiplication and a
 * scaled load (smi_block_at_span, 1dffb32) instead of the segment's base and
 * the masked page index (smi_block_at). For every 64 KiB page of a segment of
 * each kind (the header page, every block's pages, a medium segment's unused
 * tail) and addresses at the page's first, middle and last bytes, both must
 * name the same entry of the segment's page table. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/internal.h"

/* The generic (non-x86) form of smi_block_at_span, as slots/segment.h writes it. */
static smi_block_t *block_at_span_generic(uintptr_t span, uintptr_t u) {
  uintptr_t base = span * (SMI_SEG_SIZE - SMI_PAGES_PER_SEG * sizeof(smi_block_t *));
  return *(smi_block_t *const *)(base + offsetof(smi_segment_t, page_block) +
                                 (u >> SMI_PAGE_SHIFT) * sizeof(smi_block_t *));
}

Test(review2, block_at_span_finds_every_address_of_a_slot_segment) {
  const size_t sizes[] = {64, 16384, 200000}; /* small, medium and big blocks */
  const uintptr_t offsets[] = {0, 8, 4096, SMI_PAGE_SIZE / 2 + 24, SMI_PAGE_SIZE - 1};
  unsigned kinds_seen = 0;
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    void *p = sm_malloc(sizes[k]);
    cr_assert_not_null(p);
    uintptr_t u = (uintptr_t)p;
    cr_assert_eq(smi_map_of(u), SMI_MAP_SLOTS, "%zu B: not in a slot segment", sizes[k]);
    smi_segment_t *seg = smi_segment_at(u);
    kinds_seen |= 1u << seg->kind;
    cr_assert_eq(smi_block_at_span(u >> SMI_SEG_SHIFT, u), smi_block_of(p));
    for (uintptr_t pg = 0; pg < SMI_PAGES_PER_SEG; pg++) {
      for (size_t o = 0; o < sizeof offsets / sizeof *offsets; o++) {
        uintptr_t a = (uintptr_t)seg + pg * SMI_PAGE_SIZE + offsets[o];
        cr_assert_eq(a >> SMI_SEG_SHIFT, u >> SMI_SEG_SHIFT);
        smi_block_t *want = seg->page_block[pg];
        cr_assert_eq(smi_block_at(seg, a), want);
        cr_assert_eq(smi_block_at_span(a >> SMI_SEG_SHIFT, a), want, "kind %u, page %zu, offset %zu", seg->kind,
                     (size_t)pg, (size_t)offsets[o]);
        cr_assert_eq(block_at_span_generic(a >> SMI_SEG_SHIFT, a), want);
      }
    }
    sm_free(p);
  }
  cr_assert_eq(kinds_seen, (1u << SMI_KIND_SMALL) | (1u << SMI_KIND_MEDIUM) | (1u << SMI_KIND_BIG));
}
