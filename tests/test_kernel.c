/* test_kernel.c: what the kernel is asked to do for a pattern (issue 8, item
 * 4: kernel time). calloc of a fresh large object maps its pages writable at
 * once (alloc/large.c, smi_os_populate): a program that reads such memory
 * before it writes it would otherwise fault each page twice, the second time
 * with a TLB shoot-down of every other CPU running the process. Counted with
 * the process's own minor faults (getrusage) and mincore. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "slotmalloc.h"
#include "testutil.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static long minflt(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

/* Whether this kernel knows MADV_POPULATE_WRITE (Linux 5.14 and later). */
static bool kernel_populates(void) {
  void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert(m != MAP_FAILED);
  bool ok = madvise(m, 4096, MADV_POPULATE_WRITE) == 0;
  munmap(m, 4096);
  return ok;
}

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

Test(kernel, calloc_of_a_fresh_large_object_is_read_then_written_without_faults) {
  if (!kernel_populates()) cr_skip_test("MADV_POPULATE_WRITE unknown to this kernel");
  size_t size = (size_t)4 << 20, pages = size / 4096;
  volatile unsigned char *p = sm_calloc(1, size);
  cr_assert(p);
  cr_assert_geq(resident_pages((void *)p, size), pages - 1, "calloc left pages unmapped");
  /* read, then write, each page (as a check for zeros, or a lookup, does) */
  long before = minflt();
  unsigned sum = 0;
  for (size_t i = 0; i < size; i += 4096) {
    sum += p[i] + p[i + 4095];
    p[i] = 1;
  }
  long faults = minflt() - before;
  cr_assert_eq(sum, 0u, "calloc memory not zero");
  /* before (without populate): two faults a page, 2,048 */
  cr_assert_lt(faults, (long)pages / 8, "%ld faults for %zu pages read then written", faults, pages);
  sm_free((void *)p);
}

Test(kernel, calloc_past_the_populate_bound_leaves_its_pages_unmapped) {
  /* 32 MiB, of which a program may use a few pages (a sparse table): what
   * it does not touch stays unmapped */
  size_t size = (size_t)32 << 20;
  unsigned char *p = sm_calloc(1, size);
  cr_assert(p);
  cr_assert_lt(resident_pages(p, size), size / 4096 / 16, "a 32 MiB calloc was mapped in");
  cr_assert_eq(p[size / 2], 0);
  sm_free(p);
}
