/* test_kernel.c: what the kernel is asked to map for a pattern (issue 8,
 * memory). calloc of a fresh large object leaves the pages the program never
 * touches unmapped (a table used sparsely: under mimalloc and tcmalloc it is
 * resident whole). Counted with mincore. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

/* The pages of [p, p+size) that are resident. */
static size_t resident_pages(void *p, size_t size) {
  size_t page = 4096;
  uintptr_t lo = (uintptr_t)p & ~(uintptr_t)(page - 1),
            hi = ((uintptr_t)p + size + page - 1) & ~(uintptr_t)(page - 1);
  size_t n = (hi - lo) / page, in = 0;
  static unsigned char vec[(64u << 20) / 4096];
  cr_assert(n <= sizeof vec);
  cr_assert_eq(mincore((void *)lo, hi - lo, vec), 0);
  for (size_t i = 0; i < n; i++) in += vec[i] & 1;
  return in;
}

/* A calloc'd table of `size` bytes of which the program writes one byte a
 * MiB and reads a few more: only those pages are mapped. */
static void sparse_calloc_stays_unmapped(size_t size) {
  size_t pages = size / 4096;
  unsigned char *p = sm_calloc(1, size);
  cr_assert(p);
  unsigned sum = 0;
  for (size_t i = 0; i < size; i += (size_t)1 << 20) {
    sum += p[i] + p[size - 1 - i / 2];
    p[i] = 1;
  }
  cr_assert_eq(sum, 0u, "calloc memory not zero");
  size_t in = resident_pages(p, size);
  /* one page a MiB written, one a MiB read (mincore counts the zero page
   * mapped there), the object's first page and the head: a few, not all */
  cr_assert_leq(in, 2 * (size / ((size_t)1 << 20)) + 4, "%zu of %zu pages of a sparse %zu KiB calloc resident", in,
                pages, size >> 10);
  sm_free(p);
}

Test(kernel, a_sparse_calloc_of_512_kib_stays_unmapped) { sparse_calloc_stays_unmapped((size_t)512 << 10); }
Test(kernel, a_sparse_calloc_of_4_mib_stays_unmapped) { sparse_calloc_stays_unmapped((size_t)4 << 20); }
Test(kernel, a_sparse_calloc_of_32_mib_stays_unmapped) { sparse_calloc_stays_unmapped((size_t)32 << 20); }
